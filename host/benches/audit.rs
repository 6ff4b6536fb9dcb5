//! Audit throughput: records per second through `AuditLog` with the hash
//! chain, one `write` per record to a JSONL file (no fsync per record;
//! the run's end syncs), for a typical tool-call record. A mediated tool
//! call writes two records. `cargo bench -p warden --bench audit`.

use std::time::Instant;
use warden::audit::{AuditLog, Entry, Event, JsonlFile, Kind, MemorySink, Outcome, new_run_id};
use warden::policy::Verdict;

fn entry(i: u64) -> Entry {
    Entry {
        kind: Kind::Tool,
        event: if i.is_multiple_of(2) {
            Event::Decision
        } else {
            Event::Outcome
        },
        subject: "calc".into(),
        decision: Verdict::Allow,
        rule: "tools.calc".into(),
        detail: "395".into(),
        outcome: (!i.is_multiple_of(2)).then_some(Outcome::Ok),
        data: Some(serde_json::json!({
            "arguments": { "expression": "(17 * 23) + 4" },
            "result": "395",
            "labels_added": [],
        })),
    }
}

fn rate(name: &str, log: &AuditLog, n: u64) {
    let started = Instant::now();
    for i in 0..n {
        log.write(entry(i)).unwrap();
    }
    let elapsed = started.elapsed();
    let per = elapsed / n as u32;
    println!(
        "  {name:<34} {:>9.0} records/s  ({per:.2?} per record)",
        n as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 1_000 } else { 200_000 };
    let dir = tempfile::tempdir().unwrap();
    println!("audit log, {n} tool-call records each:");
    let memory = AuditLog::new(new_run_id()).with_sink(MemorySink::default());
    rate("chain + serialize, in memory", &memory, n);
    let file = AuditLog::new(new_run_id())
        .with_sink(JsonlFile::open(&dir.path().join("a.jsonl")).unwrap());
    rate("chain + one write(2) per record", &file, n);
    let started = Instant::now();
    file.sync().unwrap();
    println!("  fsync at the end of the run: {:.2?}", started.elapsed());
    let text = std::fs::read(dir.path().join("a.jsonl")).unwrap();
    let started = Instant::now();
    let report = warden::audit::verify(&text[..]).unwrap();
    assert!(report.is_intact());
    println!(
        "  warden audit verify: {:.0} records/s",
        report.records as f64 / started.elapsed().as_secs_f64()
    );
}
