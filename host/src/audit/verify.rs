//! Checking an audit log: the hash chain, the numbering of each run, and
//! lines torn by a host that was killed while writing.

use super::{Event, GENESIS, Kind, line_hash_hex};
use crate::policy::Verdict;
use serde::de::IgnoredAny;
use std::borrow::Cow;
use std::io::{self, BufRead, Read};

/// A record as `verify` reads it: every field of [`super::Record`] checked
/// for its type, but `data` skipped unbuilt (its bytes are in the line's
/// hash), so a line of many small values costs no more memory than its
/// text. Strings are borrowed from the line where they hold no escape.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // read for their types only
struct Checked<'a> {
    seq: u64,
    #[serde(default, borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    run: Cow<'a, str>,
    kind: Kind,
    event: Event,
    #[serde(borrow)]
    subject: Cow<'a, str>,
    decision: Verdict,
    #[serde(borrow)]
    rule: Cow<'a, str>,
    #[serde(borrow)]
    detail: Cow<'a, str>,
    #[serde(default)]
    outcome: Option<super::Outcome>,
    #[serde(default)]
    data: Option<IgnoredAny>,
}

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records that parsed.
    pub records: usize,
    /// Runs, in order: id, records, and whether the run's end is recorded.
    pub runs: Vec<(String, usize, bool)>,
    /// The hash of the last record: compare with the head `warden run`
    /// printed to detect a cut or edited end.
    pub head: String,
    /// Breaks of the chain or numbering: the log was changed. The first
    /// [`MAX_LISTED`]; `more_problems` counts the rest.
    pub problems: Vec<Problem>,
    /// Problems found past the first [`MAX_LISTED`].
    pub more_problems: usize,
    /// Lines torn by a host killed mid-write (1-based line numbers): not
    /// tampering, but those records are lost. The first [`MAX_LISTED`];
    /// `more_torn` counts the rest.
    pub torn: Vec<usize>,
    /// Torn lines past the first [`MAX_LISTED`].
    pub more_torn: usize,
}

/// Most problems (and torn lines) a report lists: a log edited on every
/// line would otherwise cost more memory than its own size.
pub const MAX_LISTED: usize = 1000;

impl VerifyReport {
    /// Whether the chain holds.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty() && self.more_problems == 0
    }

    fn problem(&mut self, line: usize, message: String) {
        if self.problems.len() < MAX_LISTED {
            self.problems.push(Problem { line, message });
        } else {
            self.more_problems += 1;
        }
    }

    fn torn_at(&mut self, line: usize) {
        if self.torn.len() < MAX_LISTED {
            self.torn.push(line);
        } else {
            self.more_torn += 1;
        }
    }
}

/// A place where the log is not what warden wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, for people.
    pub message: String,
}

/// Longest line `verify` reads into memory; a longer one is a problem (no
/// record warden writes comes near it) and is skipped without being held.
pub const MAX_LINE: usize = 256 << 20;

/// Check a whole log, a line at a time: memory stays bounded by the
/// longest line, however long the log.
///
/// A line that is not a record is a crash only where a crash can leave
/// one: as the log's last line, or closed by the next run's start (a new
/// run whose first record continues the chain from the line before it,
/// as [`super::JsonlFile::open`] does after a crash). Anywhere else it is
/// a problem: the log was changed.
pub fn verify(reader: impl Read) -> io::Result<VerifyReport> {
    let mut reader = io::BufReader::with_capacity(64 << 10, reader);
    let mut report = VerifyReport {
        head: GENESIS.to_string(),
        ..VerifyReport::default()
    };
    let mut expected = GENESIS.to_string();
    let mut last_line = 0usize;
    let mut current: Option<(String, u64)> = None;
    // A line that did not parse, waiting to see what follows it.
    let mut unparsed: Option<(usize, bool, String)> = None;
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_LINE {
            // Skip the rest of the line without holding it.
            let mut skipped = [0u8; 1];
            while reader.read(&mut skipped)? == 1 && skipped[0] != b'\n' {}
            report.problem(
                number,
                format!("line {number} is longer than {MAX_LINE} bytes: not an audit record"),
            );
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let record: Checked<'_> = match serde_json::from_slice(&line) {
            Ok(record) => record,
            Err(error) => {
                if let Some((at, _, message)) = unparsed.take() {
                    report.problem(at, message);
                }
                // What a crash leaves: the start of a record of a run that
                // has not ended.
                let could_be_torn = line.starts_with(b"{\"seq\":")
                    && report.runs.last().is_none_or(|(_, _, ended)| !ended);
                unparsed = Some((
                    number,
                    could_be_torn,
                    format!(
                        "line {number} is not an audit record ({error}), and the log goes on after it: it was inserted or edited"
                    ),
                ));
                continue;
            }
        };
        if let Some((at, could_be_torn, message)) = unparsed.take() {
            // Torn by a crash only if the next run starts right after it and
            // continues the chain from the line before it.
            if could_be_torn && record.seq == 1 && record.prev == expected {
                report.torn_at(at);
            } else {
                report.problem(at, message);
            }
        }
        report.records += 1;
        let at = || format!("line {number} (run {}, seq {})", record.run, record.seq);
        if record.prev != expected {
            let at = at();
            let message = if last_line == 0 {
                format!(
                    "{at}: `prev` should be the start of the log; records before it were removed"
                )
            } else {
                format!(
                    "{at}: `prev` does not match line {last_line}: line {last_line} was edited, or records between them were deleted, inserted or moved"
                )
            };
            report.problem(number, message);
        }
        match &mut current {
            Some((run, seq)) if *run == record.run => {
                if record.seq != *seq + 1 {
                    report.problem(
                        number,
                        format!(
                            "{}: the run's numbering jumps from {seq} to {}",
                            at(),
                            record.seq
                        ),
                    );
                }
                *seq = record.seq;
            }
            _ => {
                if record.seq != 1 {
                    report.problem(
                        number,
                        format!(
                            "{}: the run starts at seq {}: its first records are missing",
                            at(),
                            record.seq
                        ),
                    );
                }
                report.runs.push((record.run.to_string(), 0, false));
                current = Some((record.run.to_string(), record.seq));
            }
        }
        if let Some(run) = report.runs.last_mut() {
            run.1 += 1;
            if record.kind == Kind::Run && record.event == Event::Outcome {
                run.2 = true;
            }
        }
        expected.clear();
        expected.extend(line_hash_hex(&line).map(char::from));
        last_line = number;
    }
    // The log's last line may be torn: the host stopped while writing it.
    if let Some((at, could_be_torn, _)) = unparsed {
        if could_be_torn {
            report.torn_at(at);
        } else {
            report.problem(at, format!(
                    "line {at} is not an audit record, and not what a crash leaves (the start of a record of a run that has not ended)"
                ));
        }
    }
    report.head = expected;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Entry, JsonlFile, Outcome};
    use crate::policy::Verdict;

    fn entry(kind: Kind, event: Event, detail: &str) -> Entry {
        Entry {
            kind,
            event,
            subject: "calc".into(),
            decision: Verdict::Allow,
            rule: "tools.calc".into(),
            detail: detail.into(),
            outcome: (event == Event::Outcome).then_some(Outcome::Ok),
            data: None,
        }
    }

    /// A log of two runs, five records each, as text.
    fn log() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut head = String::new();
        for run in ["r-1", "r-2"] {
            let file = JsonlFile::open(&path).unwrap();
            let start = file.head().to_string();
            let log = AuditLog::new(run).with_head(&start).with_sink(file);
            log.write(entry(Kind::Run, Event::Decision, "start"))
                .unwrap();
            for i in 0..3 {
                log.write(entry(Kind::Tool, Event::Decision, &format!("call {i}")))
                    .unwrap();
            }
            log.write(entry(Kind::Run, Event::Outcome, "end")).unwrap();
            head = log.head();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        (dir, text, head)
    }

    fn check(text: &str) -> VerifyReport {
        verify(text.as_bytes()).unwrap()
    }

    #[test]
    fn an_untouched_log_verifies_across_runs() {
        let (_dir, text, head) = log();
        let report = check(&text);
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.records, 10);
        assert_eq!(report.head, head);
        assert_eq!(
            report.runs,
            vec![("r-1".into(), 5, true), ("r-2".into(), 5, true)]
        );
    }

    /// A log broken on every line (here 5,000 lines that are not records)
    /// is reported with its first problems listed and the rest counted:
    /// the report does not grow with the log.
    #[test]
    fn a_log_broken_everywhere_lists_a_bounded_number_of_problems() {
        let text = "not a record\n".repeat(MAX_LISTED * 5);
        let report = check(&text);
        assert!(!report.is_intact());
        assert_eq!(report.problems.len(), MAX_LISTED);
        assert_eq!(report.more_problems, MAX_LISTED * 4);
        assert_eq!(report.problems[0].line, 1);
    }

    #[test]
    fn edits_deletions_reorders_and_insertions_are_found() {
        let (_dir, text, _) = log();
        let lines: Vec<&str> = text.lines().collect();
        let join = |lines: &[String]| lines.join("\n") + "\n";
        let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

        let mut edited = owned.clone();
        edited[2] = edited[2].replace("call 1", "call 9");
        let report = check(&join(&edited));
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert_eq!(report.problems[0].line, 4);
        assert!(report.problems[0].message.contains("line 3 was edited"));

        let mut deleted = owned.clone();
        deleted.remove(2);
        let report = check(&join(&deleted));
        assert!(
            report.problems.iter().any(|p| p.line == 3),
            "{:?}",
            report.problems
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.message.contains("jumps from 2 to 4"))
        );

        let mut reordered = owned.clone();
        reordered.swap(1, 2);
        assert!(!check(&join(&reordered)).is_intact());

        // A record forged with the right numbering but no valid `prev`.
        let mut inserted = owned.clone();
        let forged = owned[9].replace("\"seq\":5", "\"seq\":6");
        inserted.push(forged);
        let report = check(&join(&inserted));
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].line, 11);

        // The first records of the file removed.
        let report = check(&join(&owned[5..]));
        assert!(
            report.problems[0]
                .message
                .contains("records before it were removed")
        );
    }

    #[test]
    fn a_line_inserted_mid_run_is_tampering_not_a_crash() {
        let (_dir, text, _) = log();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        // A half record in the middle of run 1 (as a crash would leave at
        // the end), followed by the rest of the run.
        lines.insert(3, lines[3][..30].to_string());
        let report = check(&(lines.join("\n") + "\n"));
        assert!(!report.is_intact());
        assert_eq!(report.problems[0].line, 4, "{:?}", report.problems);
        assert!(report.problems[0].message.contains("inserted or edited"));
        assert!(report.torn.is_empty());
        // A half record between two runs, after the first one's end: no
        // crash writes after a run's end record.
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.insert(5, lines[6][..30].to_string());
        let report = check(&(lines.join("\n") + "\n"));
        assert!(!report.is_intact(), "{report:?}");
        assert!(report.torn.is_empty());
    }

    #[test]
    fn verify_works_on_a_reader_that_returns_one_byte_at_a_time() {
        let (_dir, text, head) = log();
        // A reader that hands out one byte at a time: verify never needs
        // the whole log at once.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((first, rest)) = self.0.split_first() else {
                    return Ok(0);
                };
                buf[0] = *first;
                self.0 = rest;
                Ok(1)
            }
        }
        let report = verify(Trickle(text.as_bytes())).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.head, head);
    }

    #[test]
    fn a_torn_last_line_is_a_crash_not_tampering() {
        let (dir, text, _) = log();
        let cut = &text[..text.len() - 20];
        let report = check(cut);
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.torn, vec![10]);
        assert_eq!(report.runs[1], ("r-2".into(), 4, false));
        // A new run appended after the crash continues the chain.
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, cut).unwrap();
        let file = JsonlFile::open(&path).unwrap();
        let head = file.head().to_string();
        let log = AuditLog::new("r-3").with_head(&head).with_sink(file);
        log.write(entry(Kind::Run, Event::Decision, "start"))
            .unwrap();
        let report = verify(std::fs::File::open(&path).unwrap()).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.torn, vec![10]);
        assert_eq!(report.runs.len(), 3);
    }
}
