//! `warden audit`: verify and show audit logs.

use super::{EXIT_NO_ANSWER, bad_input, print_json};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check an audit log's hash chain and numbering. Exit 0 when intact,
    /// 1 when a record was edited, deleted, reordered or inserted.
    #[command(after_help = "Examples:
  warden audit verify ~/.local/state/warden/runs/r-XXXX.jsonl
  warden audit verify run.jsonl --head 3f2a9c0d1e4b5a67   # the head `warden run` printed
  warden audit verify run.jsonl --json | jq .intact")]
    Verify {
        /// The log (JSON Lines).
        file: PathBuf,
        /// The head `warden run` printed (a prefix is enough): also detects
        /// records cut from, or edited at, the end.
        #[arg(long)]
        head: Option<String>,
        /// Print one JSON object: intact or not, each problem with its
        /// line, the runs, the head (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Show an audit log as a readable timeline.
    #[command(after_help = "Examples:
  warden audit show run.jsonl
  warden audit show run.jsonl --decision deny
  warden audit show run.jsonl --kind tool --tool send_email
  warden audit show run.jsonl --follow          # while the run is going
  warden audit show run.jsonl --json --kind model | jq .data.usage")]
    Show {
        /// The log (JSON Lines).
        file: PathBuf,
        /// Only records of this kind.
        #[arg(long, value_parser = ["run", "model", "tool", "http", "log", "limit", "stdio", "plan"])]
        kind: Option<String>,
        /// Only records with this decision.
        #[arg(long, value_parser = ["allow", "ask", "deny"])]
        decision: Option<String>,
        /// Only records about this tool (or other subject).
        #[arg(long)]
        tool: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<String>,
        /// Keep reading as records arrive (a running agent); stops at the
        /// end of the run.
        #[arg(long, short)]
        follow: bool,
        /// Print the records kept, one JSON object a line (JSON Lines), as
        /// the log holds them (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
}

fn audit_verify(path: &Path, head: Option<&str>, json: bool) -> ExitCode {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", path.display())),
    };
    let report = match warden::audit::verify(file) {
        Ok(report) => report,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", path.display())),
    };
    let name = path.display();
    // The head given, checked against the last record's hash: `None` when
    // none was given.
    let head_matches = head.map(|expected| {
        let expected = expected.trim().to_ascii_lowercase();
        expected.len() >= 8 && report.head.starts_with(&expected)
    });
    if json {
        let intact = report.is_intact() && head_matches != Some(false);
        let value = serde_json::json!({
            "exit": if intact { 0 } else { EXIT_NO_ANSWER },
            "file": name.to_string(),
            "intact": intact,
            "records": report.records,
            "head": report.head,
            "head_matches": head_matches,
            "problems": report.problems.iter().map(|p| serde_json::json!({
                "line": p.line,
                "message": p.message,
            })).collect::<Vec<_>>(),
            "more_problems": report.more_problems,
            "torn": report.torn,
            "more_torn": report.more_torn,
            "runs": report.runs.iter().map(|(run, records, finished)| serde_json::json!({
                "run_id": run,
                "records": records,
                "finished": finished,
            })).collect::<Vec<_>>(),
        });
        let code = match intact {
            true => ExitCode::SUCCESS,
            false => ExitCode::from(EXIT_NO_ANSWER),
        };
        return print_json(&value, code);
    }
    for problem in &report.problems {
        println!("BROKEN {name}:{}: {}", problem.line, problem.message);
    }
    if report.more_problems > 0 {
        println!(
            "BROKEN {name}: ... and {} more problems (the first {} are listed)",
            report.more_problems,
            report.problems.len()
        );
    }
    for line in &report.torn {
        println!(
            "note: {name}:{line}: an incomplete record (the host was stopped while writing it); it is lost, the chain continues"
        );
    }
    if report.more_torn > 0 {
        println!(
            "note: {name}: ... and {} more incomplete records",
            report.more_torn
        );
    }
    for (run, records, finished) in &report.runs {
        if !finished {
            println!(
                "note: run {run} ({records} records) has no end record: the host was stopped, or the log was cut"
            );
        }
    }
    let mut intact = report.is_intact();
    if let Some(expected) = head {
        let expected = expected.trim().to_ascii_lowercase();
        if head_matches == Some(false) {
            println!(
                "BROKEN {name}: the last record's hash is {}, not the head you gave ({expected}): records were cut from or edited at the end",
                report.head
            );
            intact = false;
        }
    }
    if intact {
        println!(
            "OK {name}: {} records in {} run(s), chain intact; head {}",
            report.records,
            report.runs.len(),
            report.head
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What `warden audit show` keeps.
struct Filter {
    kind: Option<String>,
    decision: Option<String>,
    tool: Option<String>,
    run: Option<String>,
}

impl Filter {
    fn keeps(&self, record: &warden::audit::Record) -> bool {
        self.kind.as_ref().is_none_or(|k| record.kind.as_str() == k)
            && self
                .decision
                .as_ref()
                .is_none_or(|d| record.decision.as_str() == d)
            && self.tool.as_ref().is_none_or(|t| record.subject == *t)
            && self.run.as_ref().is_none_or(|r| record.run == *r)
    }
}

fn audit_show(path: &Path, filter: &Filter, follow: bool, json: bool) -> ExitCode {
    use std::io::Read;
    use warden::audit::{AuditSink, Event, Kind, Record};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", path.display())),
    };
    let mut transcript = super::stdout_transcript();
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut line_number = 0usize;
    let mut open_run = false;
    loop {
        let read = match file.read(&mut chunk) {
            Ok(n) => n,
            Err(error) => {
                return bad_input(format!("error: cannot read {}: {error}", path.display()));
            }
        };
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            line_number += 1;
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue;
            }
            let record: Record = match serde_json::from_slice(line) {
                Ok(record) => record,
                Err(error) => {
                    eprintln!(
                        "{}:{line_number}: not an audit record ({error})",
                        path.display()
                    );
                    continue;
                }
            };
            if record.kind == Kind::Run {
                open_run = record.event != Event::Outcome;
            }
            if !filter.keeps(&record) {
                continue;
            }
            let shown = if json {
                json_record(&record)
            } else {
                transcript.write(&record)
            };
            if shown.is_err() {
                // stdout closed (a pager quit): stop quietly.
                return ExitCode::SUCCESS;
            }
        }
        if read == 0 {
            if !follow || (!open_run && line_number > 0) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    ExitCode::SUCCESS
}

pub(crate) fn run(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { file, head, json } => audit_verify(&file, head.as_deref(), json),
        AuditCommand::Show {
            file,
            kind,
            decision,
            tool,
            run,
            follow,
            json,
        } => audit_show(
            &file,
            &Filter {
                kind,
                decision,
                tool,
                run,
            },
            follow,
            json,
        ),
    }
}

/// One record as a line of JSON on stdout, its fields as the log holds
/// them (text escaped by [`warden::transcript::json_line`]).
fn json_record(record: &warden::audit::Record) -> std::io::Result<()> {
    use std::io::Write as _;
    let value = serde_json::to_value(record).map_err(std::io::Error::other)?;
    let mut line = warden::transcript::json_line(&value);
    line.push('\n');
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}
