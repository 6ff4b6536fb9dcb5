//! One ledger for resources: nothing a guest asks for, however often or
//! however large, makes the audit log or the host's memory grow past the
//! run's bounds. Each test measures what the attack leaves behind (record
//! counts and bytes), not time.

use crate::harness::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warden::audit::{Event, Kind, Record};
use warden::policy::Verdict;

fn limits(extra: &str) -> String {
    format!("[limits]\ncpu = \"5s\"\nwall = \"60s\"\n{extra}\n")
}

async fn attack(task: &str, policy: &str) -> Ran {
    run_agent(guests::ATTACKER, policy, no_model(), task).await
}

/// Bytes of a record as the log stores it (one JSON line).
fn line_len(record: &Record) -> usize {
    serde_json::to_vec(record).unwrap().len()
}

fn audit_bytes(ran: &Ran) -> usize {
    ran.records.iter().map(line_len).sum()
}

/// What the attack left behind, printed for the record of the measurement.
fn measure(name: &str, ran: &Ran) {
    let largest = ran.records.iter().map(line_len).max().unwrap_or(0);
    eprintln!(
        "{name}: {} records, {} bytes, largest {largest} bytes",
        ran.records.len(),
        audit_bytes(ran)
    );
}

fn end_ledger(ran: &Ran) -> Value {
    let end = ran
        .records
        .iter()
        .rfind(|r| r.kind == Kind::Run && r.event == Event::Outcome)
        .unwrap();
    end.data.as_ref().unwrap()["ledger"].clone()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn refused_calls_are_charged_and_recorded_at_most_max_refusals_times() {
    // 300 calls of a tool that is not granted, each with 256 KiB of
    // arguments: before the ledger, 600 records holding 75 MiB.
    let task = r#"calls:[{"tool": "nope", "pad": 262144, "repeat": 300}]"#;
    let ran = attack(task, &limits("max_refusals = 10\noutput = \"1MiB\"")).await;
    measure("refusals", &ran);
    let report = calls_report(&ran);
    assert_eq!(report.len(), 300);
    for (i, answer) in report.iter().enumerate() {
        let (kind, reason) = (
            answer["error"]["kind"].as_str().unwrap(),
            answer["error"]["reason"].as_str().unwrap(),
        );
        if i < 10 {
            assert_eq!(kind, "denied", "{answer}");
            assert!(reason.ends_with("(rule: default)"), "{reason}");
        } else {
            assert_eq!(kind, "budget-exhausted", "{i}: {answer}");
            assert!(reason.ends_with("(rule: limits.max_refusals)"), "{reason}");
        }
    }
    let decisions: Vec<&str> = ran
        .find("tool", "decision")
        .iter()
        .map(|r| r.rule.as_str())
        .collect();
    let mut expected = vec!["default"; 10];
    expected.push("limits.max_refusals");
    assert_eq!(decisions, expected);
    let total = audit_bytes(&ran);
    assert!(total < 512 << 10, "the audit log grew to {total} bytes");
    let largest = ran.records.iter().map(line_len).max().unwrap();
    assert!(largest < 20 << 10, "a record of {largest} bytes");
    let ledger = end_ledger(&ran);
    assert_eq!(ledger["refusals"], 300, "{ledger}");
    assert_eq!(ledger["refusals_unrecorded"], 289, "{ledger}");
    assert_eq!(ledger["steps"], 300, "{ledger}");
}

#[tokio::test]
async fn refused_calls_count_toward_max_steps() {
    let policy = format!(
        "{}[tools.counter]\ncomponent = {:?}\n",
        limits("max_steps = 3"),
        guests::ATTACKER_TOOL
    );
    let task = r#"calls:[{"tool": "nope", "repeat": 3}, {"tool": "counter", "args": "{}"}]"#;
    let ran = attack(task, &policy).await;
    let report = calls_report(&ran);
    assert_eq!(report[3]["error"]["kind"], "budget-exhausted", "{report:?}");
    assert!(
        report[3]["error"]["reason"]
            .as_str()
            .unwrap()
            .ends_with("(rule: limits.max_steps)"),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_huge_call_leaves_bounded_records_that_keep_size_and_hash() {
    // 4 MiB of arguments and a 1 MiB result: before the bound, both landed
    // whole in the records (and the answer, holding the result, again).
    let policy = format!(
        "{}[tools.flood]\ncomponent = {:?}\n",
        limits("output = \"2MiB\""),
        guests::ATTACKER_TOOL
    );
    let task = r#"calls:[{"tool": "flood", "args": "{\"bytes\": 1048576}", "pad": 4194304}]"#;
    let ran = attack(task, &policy).await;
    measure("huge call", &ran);
    let report = calls_report(&ran);
    // The agent gets the whole result; only the record is bounded.
    assert_eq!(report[0]["ok"].as_str().unwrap().len(), 1 << 20);

    let largest = ran.records.iter().map(line_len).max().unwrap();
    assert!(largest < 40 << 10, "a record of {largest} bytes");
    let total = audit_bytes(&ran);
    assert!(total < 128 << 10, "the audit log grew to {total} bytes");

    let decision = ran.find("tool", "decision")[0];
    let data = decision.data.as_ref().unwrap();
    let arguments =
        serde_json::to_vec(&json!({ "bytes": 1 << 20, "pad": "p".repeat(4 << 20) })).unwrap();
    assert_eq!(data["arguments"]["truncated"], true, "{data}");
    assert_eq!(data["arguments"]["bytes"], arguments.len());
    assert_eq!(data["arguments"]["sha256"], sha256(&arguments));
    assert_eq!(data["truncated_fields"], json!(["arguments"]));

    let outcome = ran.find("tool", "outcome")[0];
    let data = outcome.data.as_ref().unwrap();
    assert_eq!(data["result"]["bytes"], 1 << 20, "{data}");
    assert_eq!(
        data["result"]["sha256"],
        sha256("f".repeat(1 << 20).as_bytes())
    );
    assert!(data["result"]["head"].as_str().unwrap().starts_with("fff"));
    assert_eq!(data["truncated_fields"], json!(["result"]));
}

#[tokio::test]
async fn captured_stdio_is_bounded_across_every_instance_of_a_run() {
    // 20 tool calls each printing 70 KB to stdout and to stderr: before the
    // run-wide budget, 40 records of 64 KiB each.
    let policy = format!(
        "{}[tools.print]\ncomponent = {:?}\n",
        limits("stdio = \"256KiB\""),
        guests::ATTACKER_TOOL
    );
    let task = r#"calls:[{"tool": "print", "args": "{\"bytes\": 70000}", "repeat": 20}]"#;
    let ran = attack(task, &policy).await;
    measure("stdio", &ran);
    assert!(calls_report(&ran).iter().all(|r| r["ok"] == "printed"));
    let stdio: Vec<&Record> = ran
        .records
        .iter()
        .filter(|r| r.kind == Kind::Stdio)
        .collect();
    let recorded: usize = stdio.iter().map(|r| r.detail.len()).sum();
    assert!(
        recorded <= (256 << 10) + 40 * 64,
        "{recorded} bytes of stdio recorded"
    );
    let spent: Vec<&&Record> = stdio.iter().filter(|r| r.rule == "limits.stdio").collect();
    assert_eq!(spent.len(), 1, "{stdio:#?}");
    assert_eq!(spent[0].decision, Verdict::Deny);
    let total = audit_bytes(&ran);
    assert!(total < 512 << 10, "the audit log grew to {total} bytes");
    let ledger = end_ledger(&ran);
    let (kept, counted) = (
        ledger["stdio_recorded"].as_u64().unwrap(),
        ledger["stdio_unrecorded"].as_u64().unwrap(),
    );
    assert!(kept <= 256 << 10, "{ledger}");
    assert_eq!(kept + counted, 20 * 2 * 70_000, "{ledger}");
}

#[tokio::test]
async fn a_full_provenance_index_only_makes_from_rules_stricter() {
    // The task holds 5,000 distinct tokens between two addresses: the index
    // (64 KiB, about 750 tokens) fills before it reaches the second one.
    let policy = format!(
        "{}[tools.reverse]\ncomponent = {:?}\nargs.to = {{ from = [\"task\"] }}\n",
        limits("index = \"64KiB\""),
        guests::ATTACKER_TOOL
    );
    let junk: String = (0..5000).map(|i| format!("w{i} ")).collect();
    let task = format!(
        r#"calls:[{{"tool": "reverse", "args": "{{\"to\": \"alice@example.com\"}}"}}, {{"list": true, "junk": "{junk}"}}, {{"tool": "reverse", "args": "{{\"to\": \"bob@example.com\"}}"}}]"#
    );
    let ran = attack(&task, &policy).await;
    measure("index", &ran);
    let report = calls_report(&ran);
    assert!(report[0].get("ok").is_some(), "{:?}", report[0]);
    assert_eq!(report[2]["error"]["kind"], "denied", "{:?}", report[2]);
    assert!(
        report[2]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("tools.reverse.args.to"),
        "{:?}",
        report[2]
    );
    let full: Vec<&Record> = ran
        .records
        .iter()
        .filter(|r| r.rule == "limits.index")
        .collect();
    assert_eq!(full.len(), 1);
    assert!(
        full[0].detail.contains("fails `from` rules"),
        "{}",
        full[0].detail
    );
    let ledger = end_ledger(&ran);
    assert_eq!(ledger["index_full"], true, "{ledger}");
    assert!(
        ledger["index_bytes"].as_u64().unwrap() <= 64 << 10,
        "{ledger}"
    );
}
