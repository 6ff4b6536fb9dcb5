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
        PolicyCommand::Schema => {
            let schema = warden::policy::Policy::json_schema();
            print_all(&format!(
                "{}\n",
                serde_json::to_string_pretty(&schema).expect("a schema serializes")
            ))
        }
    }
}
