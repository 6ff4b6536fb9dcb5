//! The audit trail: one JSON object per line, in decision order.
//!
//! Only the gate writes here. Each record says what was asked (`kind`,
//! `subject`), what the policy answered (`decision`, `rule`), and, for
//! outcome records, what happened. A record that cannot be written stops the
//! run (the capability traps): warden never acts without a record.
//!
//! Records are hash-chained: each carries `prev`, the SHA-256 of the
//! previous line's bytes (64 zeros for the first line of a file), so an
//! edited, deleted, reordered or inserted record breaks the chain at the
//! next line ([`verify`]). A log file shared by several runs is one chain.
//! Each record is one `write` of a whole line, straight to the kernel: a
//! host killed at any moment loses at most the record it was writing, and
//! [`verify`] reports such a torn last line as incomplete, not tampered.

pub mod bound;
mod line;
pub mod verify;

pub use verify::{VerifyReport, verify};

use crate::policy::Verdict;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// The agent's plan: the tools with effects it declared it will use.
    Plan,
    /// A log line from a guest.
    Log,
    /// An outgoing HTTP request from a guest.
    Http,
    /// A limit that stopped a guest.
    Limit,
    /// What a guest wrote to stdout or stderr (captured, never shown raw).
    Stdio,
}

impl Kind {
    /// The name records carry (`tool`, `http`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Model => "model",
            Kind::Tool => "tool",
            Kind::Plan => "plan",
            Kind::Log => "log",
            Kind::Http => "http",
            Kind::Limit => "limit",
            Kind::Stdio => "stdio",
        }
    }
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
    /// SHA-256 (hex) of the previous line of the log file; 64 zeros for
    /// the first.
    #[serde(default)]
    pub prev: String,
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

    /// Take one record and its serialized line (no newline), whose hash the
    /// next record's `prev` carries. Sinks that store lines use `line`.
    fn write_line(&mut self, record: &Record, line: &[u8]) -> io::Result<()> {
        let _ = line;
        self.write(record)
    }

    /// Make everything written so far durable (end of a run).
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `prev` of the first line of a file.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 of a line's bytes (without its newline), hex.
pub fn line_hash(line: &[u8]) -> String {
    line_hash_hex(line).map(char::from).iter().collect()
}

/// [`line_hash`] as ASCII digits on the stack, with no allocation.
pub fn line_hash_hex(line: &[u8]) -> [u8; 64] {
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 digits.
    let _ = hex::encode_to_slice(Sha256::digest(line), &mut hex);
    hex
}

/// Appends JSON Lines to a file, one `write` per record.
pub struct JsonlFile {
    file: File,
    line: Vec<u8>,
    head: String,
}

impl JsonlFile {
    /// Open (creating, appending) the file at `path`. If it already holds
    /// records, the chain continues from its last complete line; a torn last
    /// line (a host killed mid-write) is closed with a newline first, so it
    /// stays visible to `verify` and the new records start on a line of
    /// their own.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let (head, torn) = last_complete_line_hash(&mut file)?;
        if torn {
            file.write_all(b"\n")?;
        }
        Ok(JsonlFile {
            file,
            line: Vec::with_capacity(512),
            head,
        })
    }

    /// The hash of the file's last complete line when it was opened: the
    /// `prev` its next record must carry ([`AuditLog::with_head`]).
    pub fn head(&self) -> &str {
        &self.head
    }
}

/// The hash of the last complete line of `file` (or [`GENESIS`]), and
/// whether the file ends in a torn line. Reads only the tail.
fn last_complete_line_hash(file: &mut File) -> io::Result<(String, bool)> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((GENESIS.to_string(), false));
    }
    // Grow the window until it holds a whole last line.
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.take(len - start).read_to_end(&mut tail)?;
        let torn = tail.last() != Some(&b'\n');
        let body = if torn {
            // Drop the torn part: the complete lines end at the last newline.
            match tail.iter().rposition(|b| *b == b'\n') {
                Some(i) => &tail[..=i],
                None if start == 0 => return Ok((GENESIS.to_string(), true)),
                None => {
                    window *= 4;
                    continue;
                }
            }
        } else {
            &tail[..]
        };
        let body = &body[..body.len() - 1];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => return Ok((line_hash(&body[i + 1..]), torn)),
            None if start == 0 => return Ok((line_hash(body), torn)),
            None => window *= 4,
        }
    }
}

impl AuditSink for JsonlFile {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let line = serde_json::to_vec(record)?;
        self.write_line(record, &line)
    }

    fn write_line(&mut self, _record: &Record, line: &[u8]) -> io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(line);
        self.line.push(b'\n');
        // One write per line, no user-space buffer: once `write` returns,
        // the line is the kernel's and survives the process being killed.
        self.file.write_all(&self.line)
    }

    fn sync(&mut self) -> io::Result<()> {
        // A pipe or /dev/null cannot be synced, and need not be.
        if !self.file.metadata()?.is_file() {
            return Ok(());
        }
        self.file.sync_data()
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
    /// The hash of the last line written: the next record's `prev`.
    head: String,
    sinks: Vec<Box<dyn AuditSink>>,
    /// Set by the first failed write: a log with a gap takes no more records.
    failed: Option<String>,
    /// The line being written, kept for the next record's.
    line: Vec<u8>,
    /// The run's id and the last stamp: each record borrows them, and
    /// gives them back for the next, so a record costs no allocation of
    /// its own.
    run: String,
    ts: String,
}

impl AuditLog {
    /// A log for the run `run` with no sinks yet.
    pub fn new(run: impl Into<String>) -> Self {
        let run = run.into();
        AuditLog {
            inner: Mutex::new(Inner {
                seq: 0,
                head: GENESIS.to_string(),
                sinks: Vec::new(),
                failed: None,
                line: Vec::with_capacity(1024),
                run: run.clone(),
                ts: String::with_capacity(line::TS_LEN),
            }),
            run,
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

    /// Continue the chain of a file that already holds records (see
    /// [`JsonlFile::head`]).
    pub fn with_head(self, head: &str) -> Self {
        self.inner.lock().expect("audit log poisoned").head = head.to_string();
        self
    }

    /// Number the next record `seq + 1`: a later attempt of a run whose
    /// first `seq` records are already kept elsewhere (`warden worker`
    /// resuming a run another worker left unfinished), so the run's
    /// numbering and chain go on as one (with [`AuditLog::with_head`]).
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .seq = seq;
        self
    }

    /// The run's id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Make every sink durable (fsync for files): at the end of a run.
    pub fn sync(&self) -> io::Result<()> {
        let mut inner = self.inner.lock().expect("audit log poisoned");
        for sink in &mut inner.sinks {
            sink.sync()?;
        }
        Ok(())
    }

    /// The hash of the last record written: publish it to anchor the log
    /// (`warden audit verify --head`).
    pub fn head(&self) -> String {
        self.inner.lock().expect("audit log poisoned").head.clone()
    }

    /// Write one record to every sink; returns its sequence number. After
    /// one failure every later write fails too: the caller must stop.
    pub fn write(&self, entry: Entry) -> io::Result<u64> {
        let mut inner = self.inner.lock().expect("audit log poisoned");
        let inner = &mut *inner;
        if let Some(error) = &inner.failed {
            return Err(io::Error::other(format!(
                "the audit log failed earlier: {error}"
            )));
        }
        inner.seq += 1;
        let mut ts = std::mem::take(&mut inner.ts);
        ts.clear();
        ts.extend(line::rfc3339_micros(SystemTime::now()).map(char::from));
        let record = Record {
            seq: inner.seq,
            prev: std::mem::take(&mut inner.head),
            ts,
            run: std::mem::take(&mut inner.run),
            kind: entry.kind,
            event: entry.event,
            subject: entry.subject,
            decision: entry.decision,
            rule: entry.rule,
            detail: entry.detail,
            outcome: entry.outcome,
            data: entry.data,
        };
        inner.line.clear();
        let mut result = record.write_json(&mut inner.line);
        if result.is_ok() {
            for sink in &mut inner.sinks {
                result = result.and(sink.write_line(&record, &inner.line));
            }
        }
        let Record {
            seq,
            mut prev,
            ts,
            run,
            ..
        } = record;
        inner.ts = ts;
        inner.run = run;
        if let Err(error) = result {
            // The chain's head stays the last line written.
            inner.head = prev;
            inner.failed = Some(error.to_string());
            return Err(error);
        }
        prev.clear();
        prev.extend(line_hash_hex(&inner.line).map(char::from));
        inner.head = prev;
        Ok(seq)
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
