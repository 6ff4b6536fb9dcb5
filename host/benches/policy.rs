//! The policy engine alone: one decision on a realistic policy, and loading
//! a large one. Run with `make bench` or
//! `cargo bench -p warden --bench policy`.
//!
//! - `decide/tool_call`: a policy of 20 tools and 52 rules; the call has 3
//!   argument rules (a regex, a length, a provenance check) and the session
//!   carries 2 labels the tool's label rules look at.
//! - `decide/model_call`: the model entry with deny patterns and budgets.
//! - `load/500_rules`: parse and compile a policy of 500 rules.
//! - `observe/statement_plain` and `observe/statement_by_path`: index a
//!   statement of 2,000 entries (245 KB of JSON) into a fresh
//!   session, labelled whole, then by two label paths (a parse and a walk
//!   besides the tokens).
//! - `flow/call`: the labels a call's arguments carry, looked up in that
//!   index.
//! - `scale/decide/N` (N = 10, 100, 1,000, 10,000 rules): the same call of
//!   `send_email` in policies of N argument rules spread over other tools,
//!   and `scale/decide_own/N`: the called tool itself has N rules (each a
//!   field the call does not carry, so every rule is looked at and none
//!   decides).
//! - `load/10000_rules`: parse and compile a policy of 10,000 rules.
//! - `along/{fresh,10MB}/N` (N = 1, 1,000, 10,000): the per-call work of
//!   a mediated call through the public `Gate` (`check` of a tool with a
//!   provenance rule, which records where each value came from;
//!   `flow_into_call`; `observe_tool_call`) at the N-th call of one
//!   session, on a session that was given a small statement and page
//!   (`fresh`), and on one that was given 10 MB of tool results besides
//!   (`10MB`). Each session makes N - 1 calls of distinct values first;
//!   the bench then repeats the N-th call, whose values are indexed after
//!   its first time, so the session stays at call N.
//! - `along/sources/{fresh,10MB}`: the `data.sources` lookup alone (where
//!   each argument value came from), which every allowed call's decision
//!   record makes under the gate's lock.
//! - The index's memory per MB indexed, charged and allocated, is
//!   printed (`index:` lines).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use warden::audit::AuditLog;
use warden::chat::{Message, Role};
use warden::gate::Gate;
use warden::policy::{Policy, Request, Session, Verdict};

/// `tools` tools, each with `rules_per_tool` argument rules, plus the
/// `send_email` tool the benchmark calls.
fn policy_text(tools: usize, rules_per_tool: usize) -> String {
    let mut text = String::from(
        r#"
[limits]
max_steps = 500

[model]
allow = ["claude-*", "gpt-4o-mini"]
max_calls = 100
max_tokens = 1000000
deny = ['(?i)ignore (all )?previous instructions', '(?i)BEGIN PRIVATE KEY']
redact = ['sk-[A-Za-z0-9]{20,}']

[tools.fetch]
component = "fetch.wasm"
labels = ["untrusted"]

[tools.read_inbox]
component = "mail.wasm"
labels = ["mail"]

[tools.send_email]
component = "mail.wasm"
max_calls = 20
rate = 10
deny_when_labeled = ["secret"]
ask_when_labeled = ["quarantine"]
args.to = [{ matches = '[^@\s]+@example\.com' }, { from = ["task", "unlabeled", "tool:read_inbox"], decision = "ask" }]
args.subject = { max_len = 200 }
"#,
    );
    for t in 0..tools {
        text.push_str(&format!(
            "\n[tools.tool_{t}]\ncomponent = \"t.wasm\"\nmax_calls = 50\n"
        ));
        for r in 0..rules_per_tool {
            match r % 3 {
                0 => text.push_str(&format!(
                    "args.field_{r} = {{ matches = 'value-[0-9]+-{t}' }}\n"
                )),
                1 => text.push_str(&format!(
                    "args.field_{r} = {{ min = 0, max = {} }}\n",
                    1000 + t
                )),
                _ => text.push_str(&format!(
                    "args.field_{r} = {{ one_of = [\"a\", \"b\", \"c{t}\"] }}\n"
                )),
            }
        }
    }
    text
}

fn benches(c: &mut Criterion) {
    // 17 tools x 2 rules + send_email's 3 + its 2 label rules, 2 budgets,
    // the model's 2 deny patterns, 3 budgets and more: about 50 rules.
    let policy = Policy::parse("bench.toml", &policy_text(17, 2)).unwrap();
    let mut session = Session::default();
    session.observe_task("Reply to bob@example.com about the Q3 report, and cc ann@example.com.");
    session.observe_tool_result(
        &policy,
        "read_inbox",
        &"From: carol@example.com\nSubject: minutes\n".repeat(50),
        &[],
    );
    session.observe_tool_result(
        &policy,
        "fetch",
        &"lorem ipsum dolor sit amet ".repeat(400),
        &[],
    );
    session.add_labels(&["mail".to_string(), "untrusted".to_string()]);
    assert_eq!(session.labels.len(), 2);
    let args =
        json!({"to": "bob@example.com", "subject": "Re: Q3 report", "body": "See attached."});
    let request = Request::Tool {
        name: "send_email",
        arguments: &args,
        schema: None,
    };
    assert_eq!(policy.decide(&request, &session).verdict(), Verdict::Allow);

    c.bench_function("decide/tool_call", |b| {
        b.iter(|| black_box(policy.decide(black_box(&request), black_box(&session))))
    });

    let messages = vec![
        Message {
            role: Role::System,
            content: "You are a careful assistant.".repeat(20),
            tool_calls: vec![],
            tool_call_id: None,
        },
        Message {
            role: Role::User,
            content: "Summarise the inbox for me, please.".repeat(10),
            tool_calls: vec![],
            tool_call_id: None,
        },
    ];
    let model = Request::Model {
        model: "claude-sonnet-4-5",
        messages: &messages,
        estimated_tokens: 2000,
    };
    assert_eq!(policy.decide(&model, &session).verdict(), Verdict::Allow);
    c.bench_function("decide/model_call", |b| {
        b.iter(|| black_box(policy.decide(black_box(&model), black_box(&session))))
    });

    // 166 tools x 3 rules + send_email's: about 500 rules.
    let large = policy_text(166, 3);
    let loaded = Policy::parse("large.toml", &large).unwrap();
    let rules: usize = loaded.tools.values().map(|t| t.args.len() + 1).sum();
    assert!(rules >= 500, "{rules}");
    c.bench_function("load/500_rules", |b| {
        b.iter(|| black_box(Policy::parse("large.toml", black_box(&large)).unwrap()))
    });
}

fn labels(c: &mut Criterion) {
    let entries: Vec<serde_json::Value> = (0..2000)
        .map(|i| {
            json!({
                "account": format!("DE89-3704-{i:04}"),
                "amount": i,
                "subject": format!("Invoice {i}: pay within 30 days, see https://shop{i}.example/terms"),
            })
        })
        .collect();
    let statement = json!({ "owner": "Jan Novak", "entries": entries }).to_string();
    let plain = Policy::parse(
        "plain.toml",
        "[tools.bank]\ncomponent = \"b.wasm\"\nlabels = [\"untrusted\"]\n[tools.pay]\ncomponent = \"p.wasm\"\n",
    )
    .unwrap();
    let by_path = Policy::parse(
        "paths.toml",
        "[tools.bank]\ncomponent = \"b.wasm\"\nlabels = { \"/entries/*/subject\" = [\"untrusted\"], \"/**/note\" = [\"untrusted\"] }\n[tools.pay]\ncomponent = \"p.wasm\"\n",
    )
    .unwrap();
    for (name, policy) in [
        ("observe/statement_plain", &plain),
        ("observe/statement_by_path", &by_path),
    ] {
        c.bench_function(name, |b| {
            b.iter_batched(
                Session::default,
                |mut session| {
                    session.observe_tool_result(policy, "bank", black_box(&statement), &[]);
                    session
                },
                BatchSize::LargeInput,
            )
        });
    }
    let mut session = Session::default();
    session.observe_tool_result(&by_path, "bank", &statement, &[]);
    let args = json!({"account": "DE89-3704-1999", "amount": 12, "memo": "Invoice 1999: pay within 30 days"});
    c.bench_function("flow/call", |b| {
        b.iter(|| black_box(session.labels_of_arguments(black_box(&args))))
    });
}

/// Decision time as a policy grows, and loading a large one.
fn scale(c: &mut Criterion) {
    let args =
        json!({"to": "bob@example.com", "subject": "Re: Q3 report", "body": "See attached."});
    let request = Request::Tool {
        name: "send_email",
        arguments: &args,
        schema: None,
    };
    let mut session = Session::default();
    session.observe_task("Reply to bob@example.com about the Q3 report.");
    for rules in [10usize, 100, 1_000, 10_000] {
        // Spread over other tools, 10 rules each.
        let policy = Policy::parse("scale.toml", &policy_text(rules / 10, 10)).unwrap();
        assert_eq!(policy.decide(&request, &session).verdict(), Verdict::Allow);
        c.bench_function(&format!("scale/decide/{rules}"), |b| {
            b.iter(|| black_box(policy.decide(black_box(&request), black_box(&session))))
        });
        // On the called tool itself: optional fields the call lacks.
        let extra: String = (0..rules)
            .map(|r| format!("args.extra_{r} = {{ max_len = 10 }}\n"))
            .collect();
        let text = policy_text(0, 0).replacen(
            "args.subject = { max_len = 200 }\n",
            &format!("args.subject = {{ max_len = 200 }}\n{extra}"),
            1,
        );
        let own = Policy::parse("own.toml", &text).unwrap();
        assert!(own.tools["send_email"].args.len() >= rules);
        assert_eq!(own.decide(&request, &session).verdict(), Verdict::Allow);
        c.bench_function(&format!("scale/decide_own/{rules}"), |b| {
            b.iter(|| black_box(own.decide(black_box(&request), black_box(&session))))
        });
    }
    let large = policy_text(1_000, 10);
    c.bench_function("load/10000_rules", |b| {
        b.iter(|| black_box(Policy::parse("large.toml", black_box(&large)).unwrap()))
    });
}

/// A run's policy: `pay` takes an account that must come from the task or
/// the bank's results; the web's results are untrusted. The index may hold
/// all of 10 MB whatever the data (the default 16 MiB holds about 11 MB of
/// these results, less of text that is mostly numbers).
const ALONG_POLICY: &str = r#"
[limits]
max_steps = 4000000000
index = "512MiB"

[tools.bank]
component = "bank.wasm"

[tools.web]
component = "web.wasm"
labels = ["untrusted"]

[tools.pay]
component = "bank.wasm"
args.to = { from = ["task", "tool:bank"] }
args.amount = { min = 0, max = 100000 }
args.memo = { max_len = 200 }
"#;

/// The accounts of the small statement every session is given.
fn account(i: usize) -> String {
    format!("DE89-3704-{:04}-{:04}", i % 20, 7 * (i % 20))
}

/// A bank statement of `entries` entries, from `first` on (JSON).
fn statement(first: usize, entries: usize) -> String {
    let entries: Vec<serde_json::Value> = (first..first + entries)
        .map(|i| {
            json!({
                "account": format!("DE{:02}-{:04}-{:04}-{:04}", i % 97, i % 9973, i / 7, i % 13),
                "amount": i % 100_000,
                "payee": format!("payee{} GmbH", i % 50_000),
                "subject": format!("Invoice {i}: pay within 30 days, see https://shop{}.example/terms", i % 40_000),
            })
        })
        .collect();
    json!({ "owner": "Jan Novak", "entries": entries }).to_string()
}

/// A web page of `words` words of prose from a vocabulary of 20,000 (of
/// letters, as words are), with a link every 50 words.
fn page(seed: u64, words: usize) -> String {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut text = String::with_capacity(words * 8);
    for w in 0..words {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut word = (state >> 33) % 20_000;
        if w % 50 == 49 {
            text.push_str(&format!(
                "https://news{word}.example/story/{} ",
                state >> 50
            ));
            continue;
        }
        loop {
            text.push(char::from(b'a' + (word % 26) as u8));
            word /= 26;
            if word == 0 {
                break;
            }
        }
        text.push(' ');
    }
    text
}

/// The arguments of the `call`-th call (from 1).
fn call_args(call: usize) -> serde_json::Value {
    json!({ "to": account(call), "amount": call % 1000, "memo": format!("Invoice {call} settled") })
}

/// A gate on a session given the task, a small statement and a small
/// page, and `extra` bytes of results besides (half statements, half
/// pages, 100 KB each).
fn along_gate(extra: usize) -> Gate {
    let policy = Arc::new(Policy::parse("along.toml", ALONG_POLICY).unwrap());
    let gate = Gate::new(policy, AuditLog::new("r-along"));
    gate.observe_task("Pay this month's invoices from the bank statement.")
        .unwrap();
    let accounts: Vec<String> = (0..20).map(account).collect();
    gate.observe_tool_result("bank", &json!({ "accounts": accounts }).to_string(), &[])
        .unwrap();
    gate.observe_tool_result("web", &page(0, 2_000), &[])
        .unwrap();
    let (mut given, mut n) = (0, 0);
    while given < extra {
        let text = if n % 2 == 0 {
            statement(n * 1_000, 700)
        } else {
            page(n as u64, 12_500)
        };
        given += text.len();
        if n % 2 == 0 {
            gate.observe_tool_result("bank", &text, &[]).unwrap();
        } else {
            gate.observe_tool_result("web", &text, &[]).unwrap();
        }
        n += 1;
    }
    gate
}

/// The per-call work of one mediated call of `pay` besides the tool's
/// instance: decide and record (with where each value came from), the
/// labels that flow in, and indexing the arguments as the model's.
fn mediated_call(gate: &Gate, args: &serde_json::Value) {
    let request = Request::Tool {
        name: "pay",
        arguments: args,
        schema: None,
    };
    let permit = gate.check_now("pay", &request, None).unwrap();
    assert!(permit.is_ok(), "{permit:?}");
    black_box(gate.flow_into_call("pay", args));
    gate.observe_tool_call(args).unwrap();
}

/// Bytes the allocator holds (glibc).
fn allocated() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

/// Per-call cost along a run, on a fresh session and one that has indexed
/// 10 MB of tool results; the index's memory; the `data.sources` lookup.
fn along(c: &mut Criterion) {
    const TEN_MB: usize = 10 << 20;
    let before = allocated();
    let big = along_gate(TEN_MB);
    let grew = allocated().saturating_sub(before);
    let fresh = along_gate(0);
    {
        let index = &big.session().provenance;
        let small = &fresh.session().provenance;
        let mb = (TEN_MB as f64) / f64::from(1 << 20);
        eprintln!(
            "index: 10 MB of results: {} distinct tokens, {} bytes charged ({:.0} per MB), {} bytes allocated ({:.0} per MB); the small session's: {} tokens, {} bytes charged",
            index.len(),
            index.used(),
            (index.used() - small.used()) as f64 / mb,
            grew,
            grew as f64 / mb,
            small.len(),
            small.used(),
        );
        assert!(!index.is_full());
    }
    let mut done = 0;
    let mut group = c.benchmark_group("along");
    for call in [1usize, 1_000, 10_000] {
        for n in done + 1..call {
            mediated_call(&big, &call_args(n));
            mediated_call(&fresh, &call_args(n));
        }
        done = call;
        let args = call_args(call);
        for (name, gate) in [("fresh", &fresh), ("10MB", &big)] {
            group.bench_function(format!("{name}/{call}"), |b| {
                b.iter(|| mediated_call(gate, black_box(&args)))
            });
        }
    }
    let args = call_args(10_000);
    for (name, gate) in [("fresh", &fresh), ("10MB", &big)] {
        let session = gate.session();
        group.bench_function(format!("sources/{name}"), |b| {
            b.iter(|| {
                black_box(warden::policy::explain::argument_sources(
                    &session.provenance,
                    black_box(&args),
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(policy, benches, labels, scale, along);
criterion_main!(policy);
