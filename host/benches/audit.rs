//! Audit throughput: records per second through `AuditLog` with the hash
//! chain, one `write` per record to a JSONL file (no fsync per record;
//! the run's end syncs), for a typical tool-call record. A mediated tool
//! call writes two records. `cargo bench -p warden --bench audit`.
//!
//! Then the cost of one record, stage by stage, for three records a run
//! writes (a small one, a tool call's decision with its arguments and
//! their sources, a tool call's outcome with a 1 KB result): serializing
//! the line; serializing and hashing it (the chain); and the whole
//! `AuditLog::write` to a file (one `write(2)`). Each stage is timed in
//! batches, the variants interleaved batch by batch so that a loaded
//! machine slows them alike; medians and p90 of the per-record time.

use serde_json::{Value, json};
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use warden::audit::{
    AuditLog, AuditSink, Entry, Event, GENESIS, JsonlFile, Kind, MemorySink, Outcome, Record,
    line_hash, line_hash_hex, new_run_id,
};
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

/// A tool call's decision record as the gate writes it: the arguments
/// (about 100 bytes) and where each value came from.
fn decision() -> Entry {
    Entry {
        kind: Kind::Tool,
        event: Event::Decision,
        subject: "fetch".into(),
        decision: Verdict::Allow,
        rule: "tools.fetch".into(),
        detail: String::new(),
        outcome: None,
        data: Some(json!({
            "arguments": {
                "url": "https://api.github.com/repos/bytecodealliance/wasmtime/issues?state=open",
                "method": "GET",
            },
            "sources": [
                { "field": "url", "sources": ["task", "model"] },
                { "field": "method", "sources": ["model"] },
            ],
        })),
    }
}

/// A tool call's outcome record: a 1 KB JSON result (quotes to escape),
/// its start as the detail, the labels it added.
fn outcome() -> Entry {
    let items: Vec<Value> = (0..12)
        .map(|i| json!({ "number": 1000 + i, "title": format!("issue \"{i}\" title"), "state": "open" }))
        .collect();
    let result = serde_json::to_string(&items).unwrap();
    Entry {
        kind: Kind::Tool,
        event: Event::Outcome,
        subject: "fetch".into(),
        decision: Verdict::Allow,
        rule: "tools.fetch".into(),
        detail: result.chars().take(200).collect(),
        outcome: Some(Outcome::Ok),
        data: Some(json!({
            "result": result,
            "labels_added": ["untrusted"],
            "labels_inherited": [],
            "secrets_redacted": {},
        })),
    }
}

fn small() -> Entry {
    Entry {
        kind: Kind::Log,
        event: Event::Decision,
        subject: "agent".into(),
        decision: Verdict::Allow,
        rule: "log".into(),
        detail: "planning".into(),
        outcome: None,
        data: None,
    }
}

/// The record `AuditLog::write` makes of `entry` (its `prev`, `ts` and
/// `run` as a run's would be).
fn record(entry: Entry) -> Record {
    Record {
        seq: 12,
        prev: GENESIS.to_string(),
        ts: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        run: new_run_id(),
        kind: entry.kind,
        event: entry.event,
        subject: entry.subject,
        decision: entry.decision,
        rule: entry.rule,
        detail: entry.detail,
        outcome: entry.outcome,
        data: entry.data,
    }
}

/// `AuditLog::write` as it was before the record writer (serde_json for
/// the whole line, a `Record` with cloned `prev` and `run`, humantime for
/// the stamp, a hex `String` for the hash), rebuilt from public parts so
/// that the before and the after run side by side.
struct SerdeLog {
    run: String,
    inner: Mutex<(u64, String, JsonlFile)>,
}

impl SerdeLog {
    fn write(&self, entry: Entry) -> io::Result<u64> {
        let mut inner = self.inner.lock().unwrap();
        let (seq, head, file) = &mut *inner;
        *seq += 1;
        let record = Record {
            seq: *seq,
            prev: head.clone(),
            ts: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            run: self.run.clone(),
            kind: entry.kind,
            event: entry.event,
            subject: entry.subject,
            decision: entry.decision,
            rule: entry.rule,
            detail: entry.detail,
            outcome: entry.outcome,
            data: entry.data,
        };
        let line = serde_json::to_vec(&record)?;
        file.write_line(&record, &line)?;
        *head = line_hash(&line);
        Ok(*seq)
    }
}

/// Records per timed batch.
const BATCH: usize = 50;

/// One stage of one variant: the per-record time of each batch.
struct Samples {
    name: String,
    per_record: Vec<Duration>,
}

impl Samples {
    fn new(name: impl Into<String>) -> Self {
        Samples {
            name: name.into(),
            per_record: Vec::new(),
        }
    }

    fn time(&mut self, batch: impl FnOnce()) {
        let started = Instant::now();
        batch();
        self.per_record.push(started.elapsed() / BATCH as u32);
    }

    fn print(&mut self) {
        self.per_record.sort();
        let at = |q: f64| self.per_record[((self.per_record.len() - 1) as f64 * q) as usize];
        println!(
            "    {:<44} median {:>8.2?}  p90 {:>8.2?}",
            self.name,
            at(0.5),
            at(0.9)
        );
    }
}

/// A record to measure: its name and how to make one.
type Shape = (&'static str, fn() -> Entry);

fn stages(rounds: usize, dir: &std::path::Path) {
    let shapes: [Shape; 3] = [
        ("small record (log line, no data)", small),
        ("tool decision (arguments + sources)", decision),
        ("tool outcome (1 KB result)", outcome),
    ];
    for (name, make) in shapes {
        let rec = record(make());
        let bytes = serde_json::to_vec(&rec).unwrap().len();
        let mut serialize = Samples::new("serialize: serde_json::to_vec (before)");
        let mut serialize_now = Samples::new("serialize: Record::write_json (now)");
        let mut chain = Samples::new("serialize + hash: to_vec + line_hash (before)");
        let mut chain_now = Samples::new("serialize + hash: write_json + line_hash_hex (now)");
        let mut file_before = Samples::new("+ write(2): as before (serde_json, Record)");
        let mut file_now = Samples::new("+ write(2): AuditLog::write (now)");
        let mut line = Vec::with_capacity(1024);
        let path = |what: &str| dir.join(format!("{}-{what}.jsonl", bytes));
        let before = SerdeLog {
            run: new_run_id(),
            inner: Mutex::new((
                0,
                GENESIS.to_string(),
                JsonlFile::open(&path("before")).unwrap(),
            )),
        };
        let now = AuditLog::new(new_run_id()).with_sink(JsonlFile::open(&path("now")).unwrap());
        for _ in 0..rounds {
            serialize.time(|| {
                for _ in 0..BATCH {
                    std::hint::black_box(serde_json::to_vec(std::hint::black_box(&rec)).unwrap());
                }
            });
            serialize_now.time(|| {
                for _ in 0..BATCH {
                    line.clear();
                    std::hint::black_box(&rec).write_json(&mut line).unwrap();
                    std::hint::black_box(&line);
                }
            });
            chain.time(|| {
                for _ in 0..BATCH {
                    let line = serde_json::to_vec(std::hint::black_box(&rec)).unwrap();
                    std::hint::black_box(line_hash(&line));
                }
            });
            chain_now.time(|| {
                for _ in 0..BATCH {
                    line.clear();
                    std::hint::black_box(&rec).write_json(&mut line).unwrap();
                    std::hint::black_box(line_hash_hex(&line));
                }
            });
            let entries: Vec<Entry> = (0..BATCH).map(|_| make()).collect();
            file_before.time(|| {
                for e in entries {
                    before.write(e).unwrap();
                }
            });
            let entries: Vec<Entry> = (0..BATCH).map(|_| make()).collect();
            file_now.time(|| {
                for e in entries {
                    now.write(e).unwrap();
                }
            });
        }
        println!("  {name}, {bytes} bytes a line:");
        assert_eq!(line, serde_json::to_vec(&rec).unwrap());
        for s in [
            &mut serialize,
            &mut serialize_now,
            &mut chain,
            &mut chain_now,
            &mut file_before,
            &mut file_now,
        ] {
            s.print();
        }
        for p in ["before", "now"] {
            let report = warden::audit::verify(std::fs::File::open(path(p)).unwrap()).unwrap();
            assert!(report.is_intact(), "{p}: {:?}", report.problems);
        }
    }
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
    let rounds = if quick { 40 } else { 1_000 };
    println!("per record, {rounds} batches of {BATCH}, interleaved:");
    stages(rounds, dir.path());
}
