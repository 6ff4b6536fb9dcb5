//! The subcommands of the `warden` command line, one module each: a
//! module owns its arguments and its output.

pub(crate) mod audit;
pub(crate) mod call;
pub(crate) mod check;
pub(crate) mod compile;
pub(crate) mod mcp;
pub(crate) mod new;
pub(crate) mod policy;
pub(crate) mod progress;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod tools;
pub(crate) mod worker;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::load::PolicyFile;
use warden::policy::{Severity, SourceError};
use warden::runtime::{Runtime, RuntimeConfig, cache};
use warden::transcript::Transcript;

/// Exit status when what was run or checked failed: a run with no answer
/// (failed or stopped), a failing policy case, a broken log, an invalid
/// policy under `check`.
pub(crate) const EXIT_NO_ANSWER: u8 = 1;
/// Exit status for bad input: policy, component, arguments.
pub(crate) const EXIT_BAD_INPUT: u8 = 2;

pub(crate) fn block_on(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    block_on_with(tokio::runtime::Builder::new_multi_thread(), future)
}

/// `warden mcp` answers one client: on one thread (the default), a call's
/// answer needs no hand-off between worker threads (about 10 us less per
/// call), and calls still run concurrently, taking turns at every 10 ms
/// epoch tick; with more, calls that overlap run on more cores.
pub(crate) fn block_on_threads(
    threads: usize,
    future: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    if threads <= 1 {
        return block_on_with(tokio::runtime::Builder::new_current_thread(), future);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads);
    block_on_with(builder, future)
}

fn block_on_with(
    mut builder: tokio::runtime::Builder,
    future: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

pub(crate) fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The engine, with the compile cache `--cache-dir`/`--no-cache` ask for.
pub(crate) fn start_runtime(
    cache_dir: Option<PathBuf>,
    no_cache: bool,
) -> Result<Runtime, ExitCode> {
    start_runtime_sized(cache_dir, no_cache, RuntimeConfig::default().max_instances)
}

/// [`start_runtime`] with a pool of `max_instances` instances
/// (`warden mcp --max-instances`).
pub(crate) fn start_runtime_sized(
    cache_dir: Option<PathBuf>,
    no_cache: bool,
    max_instances: u32,
) -> Result<Runtime, ExitCode> {
    let cache_dir = if no_cache {
        None
    } else {
        cache_dir.or_else(cache::default_dir)
    };
    Runtime::new(RuntimeConfig {
        cache_dir,
        max_instances,
    })
    .map(|runtime| runtime.with_progress(std::sync::Arc::new(progress::StderrProgress)))
    .map_err(|error| bad_input(format!("error: cannot start the engine: {error:#}")))
}

/// The audit log of a new run or session: `path`, else a new file under
/// [`default_audit_dir`]; a file that exists is continued (one chain).
pub(crate) fn open_audit(path: Option<PathBuf>) -> Result<(PathBuf, AuditLog), ExitCode> {
    let run_id = new_run_id();
    let audit_path = match path {
        Some(path) => path,
        None => match default_audit_dir() {
            Some(dir) => dir.join(format!("{run_id}.jsonl")),
            None => {
                return Err(bad_input(
                    "error: no place for the audit log: set HOME or XDG_STATE_HOME, or pass --audit FILE",
                ));
            }
        },
    };
    let file = JsonlFile::open(&audit_path).map_err(|error| {
        bad_input(format!(
            "error: cannot open the audit log {}: {error}",
            audit_path.display()
        ))
    })?;
    let head = file.head().to_string();
    Ok((
        audit_path,
        AuditLog::new(run_id).with_head(&head).with_sink(file),
    ))
}

/// `$XDG_STATE_HOME/warden/runs`, else `~/.local/state/warden/runs`.
pub(crate) fn default_audit_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|base| base.join("warden/runs"))
}

pub(crate) fn print_warnings(policy: &PolicyFile) {
    for warning in policy.render_warnings() {
        eprintln!("{warning}\n");
    }
}

/// Print `text` to stdout; a reader that went away (`| head`) is not an
/// error.
/// `--approve-from SOURCE`, parsed as a `from` rule's source.
pub(crate) fn parse_approve_from(
    text: &str,
) -> Result<warden::policy::explain::ApproveFrom, String> {
    warden::policy::explain::ApproveFrom::parse(text)
}

/// Warn about `--approve-from` sources that name no tool or label of the
/// policy: they can approve nothing.
pub(crate) fn warn_approve_from(
    policy: &PolicyFile,
    sources: &[warden::policy::explain::ApproveFrom],
) {
    use warden::policy::provenance::SourceSpec;
    for source in sources {
        let known = match &source.spec {
            SourceSpec::Tool(name) => policy.policy.tools.contains_key(name),
            SourceSpec::Label(label) => policy.policy.tools.values().any(|t| {
                t.labels.contains(label)
                    || t.grants
                        .http
                        .as_ref()
                        .is_some_and(|h| h.rules.iter().any(|r| r.labels.contains(label)))
            }),
            _ => true,
        };
        if !known {
            eprintln!(
                "warning: --approve-from {} names no tool or label of {}: it approves nothing",
                source.text, policy.name
            );
        }
    }
}

pub(crate) fn print_all(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

/// `--color`: when warden colours its own words (docs/cli.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set; `CLICOLOR_FORCE=1` forces
    /// it into a pipe.
    #[default]
    Auto,
    /// Always, whatever the environment says.
    Always,
    /// Never.
    Never,
}

static COLOR: OnceLock<ColorChoice> = OnceLock::new();

/// Set once, from the command line, before any output.
pub(crate) fn set_color(choice: ColorChoice) {
    let _ = COLOR.set(choice);
}

/// Whether to colour what goes to a stream that `is_terminal` describes.
pub(crate) fn color_for(is_terminal: bool) -> bool {
    decide_color(
        COLOR.get().copied().unwrap_or_default(),
        is_terminal,
        |name| std::env::var_os(name).filter(|v| !v.is_empty()),
    )
}

/// `--color always|never` decides; under `auto`, as cargo and most tools
/// do: `NO_COLOR` (any value) turns colour off, then `CLICOLOR_FORCE` (not
/// `0`) on, then `CLICOLOR=0` off; else a terminal whose `TERM` is not
/// `dumb` gets colour. `env` gives a variable's value when set and not
/// empty.
fn decide_color(
    choice: ColorChoice,
    is_terminal: bool,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto if env("NO_COLOR").is_some() => false,
        ColorChoice::Auto if env("CLICOLOR_FORCE").is_some_and(|v| v != "0") => true,
        ColorChoice::Auto if env("CLICOLOR").is_some_and(|v| v == "0") => false,
        ColorChoice::Auto => is_terminal && env("TERM").is_none_or(|t| t != "dumb"),
    }
}

/// The transcript on stdout, coloured as [`color_for`] says.
pub(crate) fn stdout_transcript() -> Transcript<std::io::Stdout> {
    Transcript::new(std::io::stdout()).with_color(color_for(std::io::stdout().is_terminal()))
}

/// `--json`'s one document on stdout, a line of JSON
/// ([`warden::transcript::json_line`]), then `code`. A reader gone away
/// is not an error.
pub(crate) fn print_json(value: &serde_json::Value, code: ExitCode) -> ExitCode {
    let mut line = warden::transcript::json_line(value);
    line.push('\n');
    if print_all(&line) == ExitCode::SUCCESS {
        code
    } else {
        ExitCode::from(EXIT_NO_ANSWER)
    }
}

/// The errors and warnings of a file a user wrote, for `--json`:
/// `{severity, file, line, column, message, help}` each, `line` and
/// `column` 1-based, `null` when the finding points at no place.
pub(crate) fn diagnostics_json(
    files: &[warden::policy::SourceFile],
    diagnostics: &[warden::policy::Diagnostic],
) -> Vec<serde_json::Value> {
    diagnostics
        .iter()
        .map(|d| {
            let file = files.get(d.file);
            let at = file.and_then(|f| d.line_col(&f.text));
            serde_json::json!({
                "severity": match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                "file": file.map(|f| f.name.as_str()),
                "line": at.map(|(line, _)| line),
                "column": at.map(|(_, column)| column),
                "message": d.message,
                "help": d.help,
            })
        })
        .collect()
}

/// [`diagnostics_json`] of a file that was refused.
pub(crate) fn error_json(error: &SourceError) -> Vec<serde_json::Value> {
    diagnostics_json(&error.files, &error.diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_follows_the_flag_then_no_color_then_clicolor_force_then_the_terminal() {
        let with = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        use ColorChoice::*;
        assert!(decide_color(Auto, true, with(&[])));
        assert!(!decide_color(Auto, false, with(&[])));
        assert!(!decide_color(Auto, true, with(&[("NO_COLOR", "1")])));
        assert!(!decide_color(Auto, true, with(&[("TERM", "dumb")])));
        assert!(!decide_color(Auto, true, with(&[("CLICOLOR", "0")])));
        assert!(decide_color(Auto, false, with(&[("CLICOLOR_FORCE", "1")])));
        assert!(!decide_color(Auto, false, with(&[("CLICOLOR_FORCE", "0")])));
        assert!(!decide_color(
            Auto,
            true,
            with(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")])
        ));
        assert!(decide_color(Always, false, with(&[("NO_COLOR", "1")])));
        assert!(!decide_color(Never, true, with(&[("CLICOLOR_FORCE", "1")])));
    }
}
