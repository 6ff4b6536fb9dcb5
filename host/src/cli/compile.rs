//! `warden compile`: fill the compile cache ahead of a run.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use warden::load::{ComponentSource, PolicyFile};
use warden::runtime::Runtime;
use warden::transcript::clean_line;

use super::progress::size_text;
use super::{EXIT_BAD_INPUT, bad_input, print_warnings, start_runtime};

#[derive(Args)]
pub(crate) struct CompileArgs {
    /// Policy files (every tool component they name is compiled, and
    /// describes its tools, as `warden run` loads it) and components (a
    /// .wasm file or `builtin:NAME`: agents too).
    #[arg(required = true, value_name = "POLICY|COMPONENT")]
    targets: Vec<String>,
    /// The compile cache to fill [default: $WARDEN_CACHE_DIR/components,
    /// or ~/.cache/warden/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: CompileArgs) -> ExitCode {
    let Some(cache_dir) = args.cache_dir.or_else(warden::runtime::cache::default_dir) else {
        return bad_input(
            "error: no place for the compile cache: set HOME or WARDEN_CACHE_DIR, or pass --cache-dir DIR",
        );
    };
    let runtime = match start_runtime(Some(cache_dir.clone()), false) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    for target in &args.targets {
        let done = if target.ends_with(".toml") {
            compile_policy(&runtime, target).await
        } else {
            compile_component(&runtime, target)
        };
        if let Err(code) = done {
            return code;
        }
    }
    println!("compile cache: {}", cache_dir.display());
    ExitCode::SUCCESS
}

/// Every tool component the policy names, loaded as `warden run` loads it.
async fn compile_policy(runtime: &Runtime, path: &str) -> Result<(), ExitCode> {
    let file = PolicyFile::read(std::path::Path::new(path)).map_err(bad_input)?;
    print_warnings(&file);
    let started = Instant::now();
    let components = warden::check::load_components(runtime, &file)
        .await
        .map_err(bad_input)?;
    for component in &components {
        println!(
            "{}: {}",
            clean_line(&component.source),
            if component.cache_hit {
                "already in the cache"
            } else {
                "compiled"
            }
        );
    }
    println!(
        "{path}: {} component(s) ready in {:.1}s",
        components.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One component, agent or tool.
fn compile_component(runtime: &Runtime, text: &str) -> Result<(), ExitCode> {
    let source = ComponentSource::parse(text, std::path::Path::new("."));
    if matches!(source, ComponentSource::Url(_)) {
        return Err(bad_input(format!(
            "error: {text} is a URL: a component is downloaded only with its `sha256` pin\nhelp: name it in a policy (`component = \"{text}\"`, `sha256 = \"...\"`) and compile the policy"
        )));
    }
    let (bytes, sha256) = source
        .read_hashed()
        .map_err(|e| bad_input(format!("error: {e}")))?;
    let loaded = runtime
        .load_hashed(text, &bytes, &sha256)
        .map_err(|e| bad_input(format!("error: {text} cannot be compiled: {e:#}")))?;
    let kind = if runtime.agent_pre(&loaded.component).is_ok() {
        "an agent"
    } else if runtime.tool_pre(&loaded.component).is_ok() {
        "a tool"
    } else {
        eprintln!(
            "error: {text} is a component, but neither a warden agent (world warden:sandbox/agent) nor a tool (world warden:sandbox/tool)"
        );
        return Err(ExitCode::from(EXIT_BAD_INPUT));
    };
    println!(
        "{text}: {kind}, {} ({}), sha256 {}",
        if loaded.cache_hit {
            "already in the cache"
        } else {
            "compiled"
        },
        size_text(bytes.len()),
        loaded.sha256
    );
    Ok(())
}
