//! The audit trail: one JSON object per line, in decision order.
//!
//! Only the gate writes here. Each record says what was asked (`kind`,
//! `subject`), what the policy answered (`decision`, `rule`), and, for
//! outcome records, what happened. A record that cannot be written stops the
//! run (the capability traps): warden never acts without a record.

use crate::policy::Verdict;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The run itself: its start (decision) and end (outcome).
    Run,
    /// A model call.
    Model,
    /// A tool call.
    Tool,
    /// A log line from a guest.
    Log,
    /// An outgoing HTTP request from a guest.
    Http,
    /// A limit that stopped a guest.
    Limit,
    /// What a guest wrote to stdout or stderr (captured, never shown raw).
    Stdio,
}

/// Whether a record is the decision on a request or what came of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The policy's answer, before any effect.
    Decision,
    /// What happened, after the effect (or the refusal).
    Outcome,
}

/// What came of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The effect happened and succeeded.
    Ok,
    /// The policy refused it.
    Denied,
    /// A budget refused it.
    BudgetExhausted,
    /// The request was malformed.
    Invalid,
    /// The effect failed (tool error, provider error).
    Failed,
    /// A guest trapped or hit a limit.
    Trap,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the run, from 1.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC).
    pub ts: String,
    /// The run's id.
    pub run: String,
    /// What it is about.
    pub kind: Kind,
    /// Decision or outcome.
    pub event: Event,
    /// The tool, model, guest or limit concerned.
    pub subject: String,
    /// The policy's answer.
    pub decision: Verdict,
    /// The policy entry that gave it.
    pub rule: String,
    /// One line for people.
    pub detail: String,
    /// What came of it (outcome records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The data of the exchange: arguments, results, messages, usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// A record before the log numbers and stamps it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What it is about.
    pub kind: Kind,
    /// Decision or outcome.
    pub event: Event,
    /// The tool, model, guest or limit concerned.
    pub subject: String,
    /// The policy's answer.
    pub decision: Verdict,
    /// The policy entry that gave it.
    pub rule: String,
    /// One line for people.
    pub detail: String,
    /// What came of it.
    pub outcome: Option<Outcome>,
    /// The data of the exchange.
    pub data: Option<serde_json::Value>,
}

/// Where records go.
pub trait AuditSink: Send {
    /// Take one record; an error stops the run.
    fn write(&mut self, record: &Record) -> io::Result<()>;
}

/// Appends JSON Lines to a file, one `write` per record.
pub struct JsonlFile {
    file: File,
    line: Vec<u8>,
}

impl JsonlFile {
    /// Open (creating, appending) the file at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlFile {
            file,
            line: Vec::with_capacity(512),
        })
    }
}

impl AuditSink for JsonlFile {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        // One write per line: a reader never sees half a record from us.
        self.file.write_all(&self.line)
    }
}

/// Keeps records in memory; for tests and embedders.
#[derive(Clone, Default)]
pub struct MemorySink(Arc<Mutex<Vec<Record>>>);

impl MemorySink {
    /// A copy of the records so far.
    pub fn records(&self) -> Vec<Record> {
        self.0.lock().expect("audit memory sink poisoned").clone()
    }
}

impl AuditSink for MemorySink {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        self.0
            .lock()
            .expect("audit memory sink poisoned")
            .push(record.clone());
        Ok(())
    }
}

/// The run's audit log: numbers, stamps and fans records out to its sinks.
pub struct AuditLog {
    run: String,
    inner: Mutex<Inner>,
}

struct Inner {
    seq: u64,
    sinks: Vec<Box<dyn AuditSink>>,
    /// Set by the first failed write: a log with a gap takes no more records.
    failed: Option<String>,
}

impl AuditLog {
    /// A log for the run `run` with no sinks yet.
    pub fn new(run: impl Into<String>) -> Self {
        AuditLog {
            run: run.into(),
            inner: Mutex::new(Inner {
                seq: 0,
                sinks: Vec::new(),
                failed: None,
            }),
        }
    }

    /// Add a sink.
    pub fn with_sink(self, sink: impl AuditSink + 'static) -> Self {
        self.inner
            .lock()
            .expect("audit log poisoned")
            .sinks
            .push(Box::new(sink));
        self
    }

    /// The run's id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Write one record to every sink; returns its sequence number. After
    /// one failure every later write fails too: the caller must stop.
    pub fn write(&self, entry: Entry) -> io::Result<u64> {
        let mut inner = self.inner.lock().expect("audit log poisoned");
        if let Some(error) = &inner.failed {
            return Err(io::Error::other(format!(
                "the audit log failed earlier: {error}"
            )));
        }
        inner.seq += 1;
        let record = Record {
            seq: inner.seq,
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
        let mut result = Ok(());
        for sink in &mut inner.sinks {
            result = result.and(sink.write(&record));
        }
        if let Err(error) = result {
            inner.failed = Some(error.to_string());
            return Err(error);
        }
        Ok(record.seq)
    }
}

/// A fresh run id: `r-` and 16 random hex digits.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("r-{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(detail: &str) -> Entry {
        Entry {
            kind: Kind::Tool,
            event: Event::Decision,
            subject: "calc".into(),
            decision: Verdict::Allow,
            rule: "tools.calc".into(),
            detail: detail.into(),
            outcome: None,
            data: None,
        }
    }

    #[test]
    fn jsonl_lines_parse_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/audit.jsonl");
        let log = AuditLog::new("r-1").with_sink(JsonlFile::open(&path).unwrap());
        assert_eq!(log.write(entry("one")).unwrap(), 1);
        assert_eq!(log.write(entry("two\nlines")).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].seq, 2);
        assert_eq!(records[1].detail, "two\nlines");
        assert_eq!(records[0].rule, "tools.calc");
        let raw: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in [
            "seq", "ts", "run", "kind", "subject", "decision", "rule", "detail",
        ] {
            assert!(raw.get(key).is_some(), "missing {key}");
        }
    }

    struct Failing;
    impl AuditSink for Failing {
        fn write(&mut self, _: &Record) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    #[test]
    fn a_failed_log_refuses_later_records() {
        let sink = MemorySink::default();
        let log = AuditLog::new("r-1")
            .with_sink(sink.clone())
            .with_sink(Failing);
        assert_eq!(
            log.write(entry("one")).unwrap_err().to_string(),
            "disk full"
        );
        let later = log.write(entry("two")).unwrap_err();
        assert_eq!(later.to_string(), "the audit log failed earlier: disk full");
        assert_eq!(sink.records().len(), 1, "the second record reached no sink");
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(new_run_id(), new_run_id());
        assert_eq!(new_run_id().len(), 18);
    }
}
