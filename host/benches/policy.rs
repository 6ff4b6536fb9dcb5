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

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use warden::chat::{Message, Role};
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

criterion_group!(policy, benches, labels, scale);
criterion_main!(policy);
