//! `warden call`: call one tool of a component, with no agent, as an
//! agent's call would be decided, run and recorded.

use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use warden::call::{CallReport, CallSpec, error_kind, policy_for};
use warden::capability::strict_json;
use warden::diagnostic::SourceError;
use warden::gate::Approver;
use warden::load::PolicyFile;
use warden::run::RunError;
use warden::transcript::{Transcript, clean_line, field, quote};

use super::run::TerminalApprover;
use super::{EXIT_NO_ANSWER, bad_input, open_audit, print_all, print_warnings, start_runtime};

#[derive(Args)]
pub(crate) struct CallArgs {
    /// The tool component: a .wasm file or `builtin:NAME`.
    component: String,
    /// The tool to call (one of those the component describes; `warden
    /// tools inspect` lists them).
    tool: String,
    /// The arguments, a JSON object (quote it for the shell).
    #[arg(default_value = "{}")]
    arguments: String,
    /// Decide, limit and audit the call by this policy's `[tools.TOOL]`
    /// entry (its rules, grants, limits and pin; the component given here
    /// replaces its `component`). Without it the tool is granted nothing:
    /// no HTTP, no files, no environment, no secrets.
    #[arg(long, short)]
    policy: Option<PathBuf>,
    /// Approve in advance what the rule RULE asks about (e.g.
    /// `tools.send_email`); repeatable.
    #[arg(long, value_name = "RULE")]
    approve: Vec<String>,
    /// Print one JSON object: `result` or `error` (with `kind`), and the
    /// `decision` and `rule` of the policy.
    #[arg(long)]
    json: bool,
    /// Show every decision and outcome on stderr as it happens.
    #[arg(long, short)]
    verbose: bool,
    /// Write the audit log (JSON Lines) here [default: a new file under
    /// $XDG_STATE_HOME/warden/runs/].
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Keep compiled components here [default: $WARDEN_CACHE_DIR/components,
    /// or ~/.cache/warden/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile the component afresh; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
}

pub(crate) async fn run(args: CallArgs) -> ExitCode {
    let arguments = match strict_json::parse(&args.arguments) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        Ok(other) => {
            return bad_input(format!(
                "error: ARGUMENTS (the third argument) must be a JSON object, like '{{\"text\": \"hi\"}}' or '{{}}'; got {}",
                json_kind(&other)
            ));
        }
        Err(error) => {
            return bad_input(format!(
                "error: ARGUMENTS (the third argument) is not valid JSON: {error}\n\
                 help: pass one JSON object, quoted for the shell: '{{\"text\": \"hi\"}}'"
            ));
        }
    };
    let component = match component_path(&args.component) {
        Ok(path) => path,
        Err(message) => return bad_input(message),
    };
    let given = match &args.policy {
        Some(path) => match PolicyFile::read(path) {
            Ok(policy) => {
                print_warnings(&policy);
                Some(policy)
            }
            Err(error) => return bad_input(error),
        },
        None => None,
    };
    let policy = match policy_for(given, &component, &args.tool) {
        Ok(policy) => policy,
        Err(error) => return bad_input(synthetic_error(&error, args.policy.is_none())),
    };
    let runtime = match start_runtime(args.cache_dir, args.no_cache) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let (audit_path, mut log) = match open_audit(args.audit) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    if args.verbose {
        log = log.with_sink(Transcript::new(std::io::stderr()));
    }
    let approver: Option<Arc<dyn Approver>> =
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            Some(Arc::new(TerminalApprover))
        } else {
            None
        };
    let spec = CallSpec {
        policy,
        tool: args.tool.clone(),
        arguments,
        approver,
        approve: args.approve,
    };
    let report = match warden::call::call(&runtime, spec, log).await {
        Ok(report) => report,
        Err(RunError::Audit(error)) => {
            eprintln!(
                "error: the audit log {} could not be written, so the call was stopped: {error}",
                audit_path.display()
            );
            return ExitCode::from(EXIT_NO_ANSWER);
        }
        Err(RunError::Policy(error)) => {
            return bad_input(synthetic_error(&error, args.policy.is_none()));
        }
        Err(error) => return bad_input(field("error:", &error.to_string())),
    };
    if args.json {
        print_json(&args.tool, &report, &audit_path)
    } else {
        print_text(&args.tool, &report, &audit_path, args.policy.is_none())
    }
}

/// The component as the policy will name it: `builtin:NAME`, or the file
/// made absolute (a policy's own paths are relative to the policy file,
/// this one to the current directory).
fn component_path(text: &str) -> Result<PathBuf, String> {
    if text.starts_with("builtin:") {
        return Ok(PathBuf::from(text));
    }
    if warden::remote::is_url(text) {
        return Err(format!(
            "error: `{}` is a URL; warden call runs a local component\n\
             help: download it and check it with `warden tools inspect FILE`, or name it in a policy with a `sha256` pin and use `warden mcp`",
            warden::transcript::clean_line(text)
        ));
    }
    std::path::absolute(Path::new(text))
        .map_err(|e| format!("error: cannot resolve the path {text}: {e}"))
}

/// A policy error; for the policy made up when none is given, only its
/// messages (its text is warden's, not the user's, and not worth showing).
/// They may hold what a component described (its tools' names): each line
/// is cleaned, and lines after the first are indented.
fn synthetic_error(error: &SourceError, synthetic: bool) -> String {
    if !synthetic {
        return error.to_string();
    }
    let mut text = String::new();
    for diagnostic in &error.diagnostics {
        let lines = std::iter::once(("error:", diagnostic.message.as_str()))
            .chain(diagnostic.help.as_deref().map(|help| ("help:", help)));
        for (lead, message) in lines {
            for (i, line) in message.lines().enumerate() {
                let lead = if i == 0 { lead } else { "   " };
                text.push_str(&format!("{lead} {}\n", clean_line(line)));
            }
        }
    }
    text.trim_end().to_string()
}

fn print_text(tool: &str, report: &CallReport, audit_path: &Path, no_policy: bool) -> ExitCode {
    let code = match &report.result {
        // On a terminal, where a person reads it beside warden's own
        // lines, quoted like all outside text; into a pipe, as it is (a
        // program reads it), with only hiding characters escaped.
        Ok(result) => {
            let shown = if std::io::stdout().is_terminal() {
                quote(result)
            } else {
                warden::transcript::clean(result)
            };
            print_all(&format!("{shown}\n"))
        }
        Err(error) => {
            eprintln!("{}", field("error:", &error.to_string()));
            if !report.refused.is_empty() {
                eprintln!("note: the policy refused what the tool asked for:");
                for refusal in &report.refused {
                    eprintln!("  {}", clean_line(refusal));
                }
                if no_policy {
                    eprintln!(
                        "help: with no --policy the tool is granted nothing (no HTTP, files, environment or secrets); pass a policy whose [tools.{}] entry grants what it needs (see docs/policy.md)",
                        warden::transcript::name(tool)
                    );
                }
            }
            ExitCode::from(EXIT_NO_ANSWER)
        }
    };
    eprintln!(
        "audit log: {}  (check: warden audit verify {} --head {})",
        audit_path.display(),
        audit_path.display(),
        &report.audit_head[..16.min(report.audit_head.len())],
    );
    code
}

fn print_json(tool: &str, report: &CallReport, audit_path: &Path) -> ExitCode {
    let (decision, rule) = match &report.decision {
        Some((verdict, rule)) => (serde_json::json!(verdict), serde_json::json!(rule)),
        None => (serde_json::Value::Null, serde_json::Value::Null),
    };
    let mut value = serde_json::json!({
        "tool": tool,
        "decision": decision,
        "rule": rule,
        "audit": audit_path.display().to_string(),
        "audit_head": report.audit_head,
        "elapsed_ms": report.elapsed.as_millis() as u64,
    });
    match &report.result {
        Ok(result) => value["result"] = serde_json::json!(result),
        Err(error) => {
            value["error"] = serde_json::json!(error.to_string());
            value["kind"] = serde_json::json!(error_kind(error));
            value["refused"] = serde_json::json!(report.refused);
        }
    }
    let printed = print_all(&format!("{}\n", escape_hidden(&value.to_string())));
    if report.result.is_err() {
        ExitCode::from(EXIT_NO_ANSWER)
    } else {
        printed
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// JSON text with every character that [`warden::transcript::hides`] (bidi
/// controls, zero widths, ...) written as a `\uXXXX` escape: the same JSON
/// to a program, and nothing that reorders or hides text on a terminal.
/// Outside strings JSON text is printable ASCII, so only string contents
/// change.
fn escape_hidden(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if (' '..='~').contains(&c) || !warden::transcript::hides(c) {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
