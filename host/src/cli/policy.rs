//! `warden policy`: tools for policy authors.

use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warden::load::PolicyFile;

use super::{EXIT_NO_ANSWER, bad_input, print_all};

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Run a file of test cases (requests and the decisions they must get)
    /// against a policy. Exit 0 when all pass, 1 otherwise.
    Test {
        /// The policy file.
        policy: PathBuf,
        /// The cases file (TOML, `[[case]]` tables).
        cases: PathBuf,
    },
    /// Print the JSON Schema of policy files (for editors).
    Schema,
}

fn policy_test(policy: &Path, cases: &Path) -> ExitCode {
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
    if results.is_empty() {
        return bad_input(format!("error: {name} has no `[[case]]`"));
    }
    if failed > 0 {
        return ExitCode::from(EXIT_NO_ANSWER);
    }
    ExitCode::SUCCESS
}

pub(crate) fn run(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Test { policy, cases } => policy_test(&policy, &cases),
        PolicyCommand::Schema => {
            let schema = warden::policy::Policy::json_schema();
            print_all(&format!(
                "{}\n",
                serde_json::to_string_pretty(&schema).expect("a schema serializes")
            ))
        }
    }
}
