//! `warden check`.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use warden::load::PolicyFile;

use super::{EXIT_NO_ANSWER, print_all, print_json, print_warnings, start_runtime};

#[derive(Args)]
#[command(after_help = "Examples:
  warden check policies/demo.toml
  warden check --strict policy.toml        # warnings fail too (exit 1)
  warden check --no-load policy.toml       # the file alone, no component read
  warden check --json policy.toml | jq '.errors[] | \"\\(.file):\\(.line): \\(.message)\"'")]
pub(crate) struct CheckArgs {
    /// The policy file.
    pub(crate) policy: PathBuf,
    /// Treat warnings (risky grants, rules that never apply) as failures.
    #[arg(long)]
    strict: bool,
    /// Check the policy file alone: do not read, download or load the
    /// components it names.
    #[arg(long)]
    no_load: bool,
    /// Where compiled components are kept [default:
    /// $XDG_CACHE_HOME/warden/components or ~/.cache/warden/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
    /// Print one JSON object instead of the description: valid or not,
    /// errors and warnings with file, line and column, tools, components
    /// (docs/cli.md).
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: CheckArgs) -> ExitCode {
    let CheckArgs {
        policy: path,
        strict,
        no_load,
        cache_dir,
        no_cache,
        json,
    } = args;
    let path = path.as_path();
    let load = (!no_load).then_some((cache_dir, no_cache));
    let file = match PolicyFile::read(path) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("{error}");
            if json {
                let value = serde_json::json!({
                    "exit": EXIT_NO_ANSWER,
                    "policy": path.display().to_string(),
                    "valid": false,
                    "errors": super::error_json(&error),
                });
                return print_json(&value, ExitCode::from(EXIT_NO_ANSWER));
            }
            return ExitCode::from(1);
        }
    };
    print_warnings(&file);
    let components = match load {
        None => None,
        Some((cache_dir, no_cache)) => {
            let runtime = match start_runtime(cache_dir, no_cache) {
                Ok(runtime) => runtime,
                // Printed; the check could not be done (bad input, 2).
                Err(code) => return code,
            };
            match warden::check::load_tools(&runtime, &file).await {
                Ok(tools) => Some(tools),
                Err(error) => {
                    eprintln!("{error}");
                    if json {
                        let mut value = check_json(&file, None, strict);
                        value["exit"] = EXIT_NO_ANSWER.into();
                        value["valid"] = false.into();
                        value["errors"] =
                            serde_json::json!([{ "severity": "error", "message": error }]);
                        return print_json(&value, ExitCode::from(EXIT_NO_ANSWER));
                    }
                    return ExitCode::from(1);
                }
            }
        }
    };
    if json {
        let loaded = components.as_ref().map(|tools| tools.components());
        let value = check_json(&file, loaded.as_deref(), strict);
        let code = match strict && !file.policy.warnings.is_empty() {
            true => ExitCode::from(EXIT_NO_ANSWER),
            false => ExitCode::SUCCESS,
        };
        return print_json(&value, code);
    }
    // A reader that went away (`| head`) is not an error.
    let loaded = components.as_ref().map(|tools| tools.components());
    let declared = components
        .as_ref()
        .map(|tools| warden::check::describe_declared(&file.policy, tools))
        .unwrap_or_default();
    let printed = print_all(&format!(
        "{}{declared}{}",
        warden::check::describe(&file),
        warden::check::describe_components(loaded.as_deref())
    ));
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    if strict && !file.policy.warnings.is_empty() {
        eprintln!("\n--strict: {} warning(s)", file.policy.warnings.len());
        return ExitCode::from(EXIT_NO_ANSWER);
    }
    ExitCode::SUCCESS
}

/// `check --json`'s object (docs/cli.md).
/// One tool in `check --json`: its name, component and decision, and
/// where it says more than the default about labels, its label paths,
/// `third_party_labels` and `labels_flow`.
fn tool_json(tool: &warden::policy::ToolPolicy) -> serde_json::Value {
    let mut value = serde_json::json!({
        "name": tool.name,
        "component": tool.component.as_ref().map(|c| c.text.as_str()),
        "decision": tool.decision.as_str(),
    });
    if !tool.path_labels.is_empty() {
        value["label_paths"] = tool
            .path_labels
            .iter()
            .map(|(path, labels)| (path.text.clone(), serde_json::json!(labels)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    if !tool.third_party_labels.is_empty() {
        value["third_party_labels"] = serde_json::json!(tool.third_party_labels);
    }
    if !tool.labels_flow {
        value["labels_flow"] = false.into();
    }
    if tool.instance == warden::policy::Instance::PerRun {
        value["instance"] = "per-run".into();
    }
    value
}

fn check_json(
    file: &PolicyFile,
    components: Option<&[std::sync::Arc<warden::registry::ToolComponent>]>,
    strict: bool,
) -> serde_json::Value {
    let policy = &file.policy;
    let failed = strict && !policy.warnings.is_empty();
    serde_json::json!({
        "exit": if failed { EXIT_NO_ANSWER } else { 0 },
        "policy": file.name,
        "valid": true,
        "sha256": file.sha256,
        "files": file.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        "errors": [],
        "warnings": super::diagnostics_json(&file.files, &policy.warnings),
        "tools": policy.tools.values().map(tool_json).collect::<Vec<_>>(),
        "components": components.map(|components| components.iter().map(|c| serde_json::json!({
            "source": c.source,
            "sha256": c.sha256,
            "cache_hit": c.cache_hit,
        })).collect::<Vec<_>>()),
    })
}
