//! Checking an audit log: the hash chain, the numbering of each run, and
//! lines torn by a host that was killed while writing.

use super::{Event, GENESIS, Kind, Record, line_hash};
use std::io::{self, Read};

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
    /// Breaks of the chain or numbering: the log was changed.
    pub problems: Vec<Problem>,
    /// Lines torn by a host killed mid-write (1-based line numbers): not
    /// tampering, but those records are lost.
    pub torn: Vec<usize>,
}

impl VerifyReport {
    /// Whether the chain holds.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
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

/// Check a whole log.
pub fn verify(mut reader: impl Read) -> io::Result<VerifyReport> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    let mut report = VerifyReport {
        head: GENESIS.to_string(),
        ..VerifyReport::default()
    };
    let ends_torn = !bytes.is_empty() && bytes.last() != Some(&b'\n');
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let count = if bytes.last() == Some(&b'\n') {
        lines.len() - 1
    } else {
        lines.len()
    };
    let mut expected = GENESIS.to_string();
    let mut last_line = 0usize;
    let mut current: Option<(String, u64)> = None;
    for (index, line) in lines.iter().take(count).enumerate() {
        let number = index + 1;
        if line.is_empty() {
            continue;
        }
        let record: Record = match serde_json::from_slice(line) {
            Ok(record) => record,
            Err(error) => {
                // A record cut short ends in the middle of its JSON: the
                // host stopped while writing it.
                let cut_short = error.is_eof() && line.starts_with(b"{\"seq\":");
                if cut_short || (ends_torn && number == count) {
                    report.torn.push(number);
                } else {
                    report.problems.push(Problem {
                        line: number,
                        message: format!("line {number} is not an audit record ({error})"),
                    });
                }
                continue;
            }
        };
        report.records += 1;
        let at = format!("line {number} (run {}, seq {})", record.run, record.seq);
        if record.prev != expected {
            let message = if last_line == 0 {
                format!(
                    "{at}: `prev` should be the start of the log; records before it were removed"
                )
            } else {
                format!(
                    "{at}: `prev` does not match line {last_line}: line {last_line} was edited, or records between them were deleted, inserted or moved"
                )
            };
            report.problems.push(Problem {
                line: number,
                message,
            });
        }
        match &mut current {
            Some((run, seq)) if *run == record.run => {
                if record.seq != *seq + 1 {
                    report.problems.push(Problem {
                        line: number,
                        message: format!(
                            "{at}: the run's numbering jumps from {seq} to {}",
                            record.seq
                        ),
                    });
                }
                *seq = record.seq;
            }
            _ => {
                if record.seq != 1 {
                    report.problems.push(Problem {
                        line: number,
                        message: format!(
                            "{at}: the run starts at seq {}: its first records are missing",
                            record.seq
                        ),
                    });
                }
                report.runs.push((record.run.clone(), 0, false));
                current = Some((record.run.clone(), record.seq));
            }
        }
        if let Some(run) = report.runs.last_mut() {
            run.1 += 1;
            if record.kind == Kind::Run && record.event == Event::Outcome {
                run.2 = true;
            }
        }
        expected = line_hash(line);
        last_line = number;
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
