//! `warden policy`: tools for policy authors.

use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warden::load::PolicyFile;

use super::{EXIT_NO_ANSWER, bad_input, print_all, print_json};

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Run a file of test cases (requests and the decisions they must get)
    /// against a policy. Exit 0 when all pass, 1 otherwise.
    #[command(after_help = "Examples:
  warden policy test policies/demo.toml policies/tests/demo.toml
  warden policy test policy.toml cases.toml --json | jq '.results[] | select(.pass | not)'")]
    Test {
        /// The policy file.
        policy: PathBuf,
        /// The cases file (TOML, `[[case]]` tables).
        cases: PathBuf,
        /// Print one JSON object: each case with whether it passed and
        /// why not, and the counts (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Propose the least-privilege policy that allows what the runs in
    /// these audit logs did (run them under a permissive policy, in a
    /// sandbox, and keep the logs of runs you consider good). Prints TOML
    /// with a comment on every line saying why; review it before use.
    #[command(after_help = "Examples:
  warden run builtin:react -p permissive.toml -t \"Summarize README.md\" --audit good-1.jsonl
  warden policy learn good-1.jsonl good-2.jsonl > policy.toml
  warden check --strict policy.toml
  warden replay good-1.jsonl --policy policy.toml --trust-log")]
    Learn {
        /// Audit logs (JSON Lines, as `warden run --audit` writes them).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Learn from a log whose hash chain is broken (it may have been
        /// edited: what it says was allowed may not have been).
        #[arg(long)]
        force: bool,
    },
    /// Say what NEW allows that OLD does not, and the other way round,
    /// comparing the compiled policies (includes applied), not their text.
    /// Exit 0 when they allow the same, 1 when they differ.
    #[command(after_help = "Examples:
  warden policy diff policies/demo.toml learned.toml
  warden policy diff old.toml new.toml --json | jq -r '.differences[] | select(.direction == \"widens\") | .text'")]
    Diff {
        /// The policy before.
        old: PathBuf,
        /// The policy after.
        new: PathBuf,
        /// Print one JSON object: every difference with its direction
        /// (`widens`, `narrows`, `changes`), key and text (docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of policy files (for editors).
    #[command(after_help = "Examples:
  warden policy schema > policy.schema.json
  # then, in a policy file, for editors with a TOML language server:
  #:schema ./policy.schema.json")]
    Schema,
}

fn policy_test(policy: &Path, cases: &Path, json: bool) -> ExitCode {
    let file = match PolicyFile::read(policy) {
        Ok(file) => file,
        Err(error) => return bad_input(error),
    };
    let name = cases.display().to_string();
    let text = match warden::load::read_text(cases, warden::load::MAX_SCRIPT_FILE) {
        Ok(text) => text,
        Err(error) => return bad_input(format!("error: cannot read {name}: {error}")),
    };
    let results = match warden::check::run_cases(&file.policy, &name, &text) {
        Ok(results) => results,
        Err(error) => return bad_input(error),
    };
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    if results.is_empty() {
        return bad_input(format!("error: {name} has no `[[case]]`"));
    }
    let code = match failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_NO_ANSWER),
    };
    if json {
        let value = serde_json::json!({
            "exit": if failed == 0 { 0 } else { EXIT_NO_ANSWER },
            "policy": file.name,
            "cases": name,
            "passed": results.len() - failed,
            "failed": failed,
            "results": results.iter().map(|r| serde_json::json!({
                "name": r.name,
                "pass": r.failure.is_none(),
                "failure": r.failure,
            })).collect::<Vec<_>>(),
        });
        return print_json(&value, code);
    }
    for result in &results {
        match &result.failure {
            None => println!("PASS {}", result.name),
            Some(why) => println!("FAIL {}\n  {why}", result.name),
        }
    }
    println!(
        "\n{}: {} passed, {failed} failed",
        name,
        results.len() - failed
    );
    code
}

pub(crate) fn run(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Test {
            policy,
            cases,
            json,
        } => policy_test(&policy, &cases, json),
        PolicyCommand::Learn { logs, force } => policy_learn(&logs, force),
        PolicyCommand::Diff { old, new, json } => policy_diff(&old, &new, json),
        PolicyCommand::Schema => {
            let schema = warden::policy::Policy::json_schema();
            print_all(&format!(
                "{}\n",
                serde_json::to_string_pretty(&schema).expect("a schema serializes")
            ))
        }
    }
}

/// Longest audit line `policy learn` holds: far above any record warden
/// writes with the largest `audit_field`, so a longer one is not a record.
const MAX_LEARN_LINE: usize = 64 << 20;

fn policy_learn(logs: &[PathBuf], force: bool) -> ExitCode {
    let mut learner = warden::policy::learn::Learner::new();
    for path in logs {
        let name = path.display().to_string();
        let open = || warden::load::open_regular(path);
        let file = match open() {
            Ok(file) => file,
            Err(error) => {
                return bad_input(format!("error: cannot read the audit log {name}: {error}"));
            }
        };
        // With --force the chain is not checked at all: nothing to report.
        let checked = if force {
            Ok(None)
        } else {
            warden::audit::verify::verify(std::io::BufReader::new(file)).map(Some)
        };
        match checked {
            Ok(Some(report)) if !report.is_intact() => {
                let first = report
                    .problems
                    .first()
                    .map(|p| format!("line {}: {}", p.line, p.message))
                    .unwrap_or_default();
                return bad_input(format!(
                    "error: the audit log {name} is not intact ({first}): what it says was allowed may not have been\n  = help: check it with `warden audit verify {name}`; learn from it anyway with --force"
                ));
            }
            Ok(_) => {}
            Err(error) => {
                return bad_input(format!("error: cannot read the audit log {name}: {error}"));
            }
        }
        let file = match open() {
            Ok(file) => file,
            Err(error) => {
                return bad_input(format!("error: cannot read the audit log {name}: {error}"));
            }
        };
        match learn_from(&mut learner, file) {
            Ok((0, _)) => {
                return bad_input(format!(
                    "error: {name} holds no audit records\n  = help: give the file `warden run --audit FILE` wrote"
                ));
            }
            Ok((_, skipped)) if skipped > 0 => {
                eprintln!(
                    "warning: {name}: {skipped} line(s) are not audit records and were skipped"
                );
            }
            Ok(_) => {}
            Err(error) => {
                return bad_input(format!("error: cannot read the audit log {name}: {error}"));
            }
        }
    }
    let names: Vec<String> = logs.iter().map(|p| p.display().to_string()).collect();
    print_all(&learner.policy(&names.join(", ")))
}

/// Feed every record of `file` to `learner`, a line at a time (memory
/// bounded by [`MAX_LEARN_LINE`] whatever the log's size): records read,
/// and lines skipped.
fn learn_from(
    learner: &mut warden::policy::learn::Learner,
    file: std::fs::File,
) -> std::io::Result<(u64, u64)> {
    use std::io::{BufRead as _, Read as _};
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    let (mut read, mut skipped) = (0u64, 0u64);
    loop {
        line.clear();
        if (&mut reader)
            .take(MAX_LEARN_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?
            == 0
        {
            return Ok((read, skipped));
        }
        if line.len() > MAX_LEARN_LINE && line.last() != Some(&b'\n') {
            let mut byte = [0u8; 1];
            while reader.read(&mut byte)? == 1 && byte[0] != b'\n' {}
            skipped += 1;
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<warden::audit::Record>(&line) {
            Ok(record) => {
                read += 1;
                learner.observe(&record);
            }
            Err(_) => skipped += 1,
        }
    }
}

fn policy_diff(old: &Path, new: &Path, json: bool) -> ExitCode {
    let read = |path: &Path| PolicyFile::read(path);
    let (old_file, new_file) = match (read(old), read(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(error), _) | (_, Err(error)) => return bad_input(error),
    };
    let differences = warden::policy::diff::diff(&old_file.policy, &new_file.policy);
    let code = if differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NO_ANSWER)
    };
    if json {
        let value = serde_json::json!({
            "exit": if differences.is_empty() { 0 } else { EXIT_NO_ANSWER },
            "old": old_file.name,
            "new": new_file.name,
            "differences": differences,
        });
        return print_json(&value, code);
    }
    use warden::policy::diff::Direction;
    let mut out = String::new();
    if differences.is_empty() {
        out.push_str(&format!(
            "{} and {} allow the same\n",
            old_file.name, new_file.name
        ));
    }
    for (direction, heading) in [
        (
            Direction::Widens,
            format!("{} allows what {} does not:", new_file.name, old_file.name),
        ),
        (
            Direction::Narrows,
            format!("{} allows what {} does not:", old_file.name, new_file.name),
        ),
        (Direction::Changes, "Other changes:".to_string()),
    ] {
        let these: Vec<_> = differences
            .iter()
            .filter(|d| d.direction == direction)
            .collect();
        if these.is_empty() {
            continue;
        }
        out.push_str(&heading);
        out.push('\n');
        for d in these {
            out.push_str(&warden::transcript::field(
                &format!("  {}:", d.key),
                &d.text,
            ));
            out.push('\n');
        }
    }
    let _ = print_all(&out);
    code
}
