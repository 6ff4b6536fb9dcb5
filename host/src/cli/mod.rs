//! The subcommands of the `warden` command line, one module each: a
//! module owns its arguments and its output.

pub(crate) mod audit;
pub(crate) mod call;
pub(crate) mod check;
pub(crate) mod mcp;
pub(crate) mod new;
pub(crate) mod policy;
pub(crate) mod replay;
pub(crate) mod run;
pub(crate) mod tools;

use std::path::PathBuf;
use std::process::ExitCode;
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::load::PolicyFile;
use warden::runtime::{Runtime, RuntimeConfig, cache};

/// Exit status when what was run or checked failed: a run with no answer
/// (failed or stopped), a failing policy case, a broken log, an invalid
/// policy under `check`.
pub(crate) const EXIT_NO_ANSWER: u8 = 1;
/// Exit status for bad input: policy, component, arguments.
pub(crate) const EXIT_BAD_INPUT: u8 = 2;

pub(crate) fn block_on(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    block_on_with(tokio::runtime::Builder::new_multi_thread(), future)
}

/// `warden mcp` answers one client: on one thread, a call's answer needs no
/// hand-off between worker threads (about 10 us less per call). Calls still
/// run concurrently, taking turns at every 10 ms epoch tick.
pub(crate) fn block_on_one_thread(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    block_on_with(tokio::runtime::Builder::new_current_thread(), future)
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
    let cache_dir = if no_cache {
        None
    } else {
        cache_dir.or_else(cache::default_dir)
    };
    Runtime::new(RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    })
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
fn default_audit_dir() -> Option<PathBuf> {
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
