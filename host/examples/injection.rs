//! warden's prompt-injection benchmark (`bench/injection/`): per scenario,
//! benign tasks decided without a person, asks, and the attack success rate
//! with no human and with every ask approved, through the real run path.
//! Run with `make bench-injection` or
//! `cargo run -p warden --example injection -- [--json] [--scenario NAME]...
//! [--permissive | --without-plan]`; `--permissive` drops every rule of
//! the scenarios' tool entries and their plans (grants kept), to show what
//! the attacks do unopposed; `--without-plan` drops only `[plan]`, to show
//! what the plan adds.
//! An example, not a criterion bench: its numbers are decisions, not
//! timings, so a debug build (the one the tests use) gives the same ones.

use std::path::Path;
use warden::runtime::{Runtime, RuntimeConfig};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

#[path = "../../bench/injection/runner.rs"]
mod runner;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let permissive = args.iter().any(|a| a == "--permissive");
    let without_plan = args.iter().any(|a| a == "--without-plan");
    let only: Vec<&str> = args
        .windows(2)
        .filter(|w| w[0] == "--scenario")
        .map(|w| w[1].as_str())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/injection");
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|tokio| {
            tokio.block_on(async {
                let runtime = Runtime::new(RuntimeConfig::default()).map_err(|e| e.to_string())?;
                let bench = runner::Bench {
                    runtime: &runtime,
                    component: guests::INJECTION_TOOL.into(),
                    root,
                    permissive,
                    without_plan,
                };
                let mut results = Vec::new();
                for name in runner::SCENARIOS {
                    if only.is_empty() || only.contains(name) {
                        eprintln!("running {name}");
                        results.push(bench.run_scenario(name).await?);
                    }
                }
                Ok::<_, String>(results)
            })
        });
    match result {
        Ok(results) if json => {
            let all: Vec<_> = results
                .iter()
                .map(runner::ScenarioResult::to_json)
                .collect();
            println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        }
        Ok(results) => print!("{}", runner::table(&results)),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
