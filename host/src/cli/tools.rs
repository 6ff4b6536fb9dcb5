//! `warden tools`: for people plugging in third-party tools.

use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use warden::load::ComponentSource;
use warden::transcript::field;

use super::{bad_input, print_all, start_runtime};

#[derive(Subcommand)]
pub(crate) enum ToolsCommand {
    /// Print a tool component's tools (names, descriptions, JSON Schemas),
    /// the imports it asks for and what each needs from a policy, and the
    /// SHA-256 to pin it with. Only its `describe` runs, with no grants.
    Inspect {
        /// The component: a .wasm file, `builtin:NAME`, or an https:// URL.
        component: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Keep compiled components here [default:
        /// $WARDEN_CACHE_DIR/components, or ~/.cache/warden/components].
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Compile afresh; do not read or write the cache.
        #[arg(long)]
        no_cache: bool,
    },
}

async fn tools_inspect(
    component: String,
    json: bool,
    cache_dir: Option<PathBuf>,
    no_cache: bool,
) -> ExitCode {
    let source = ComponentSource::parse(&component, Path::new("."));
    let runtime = match start_runtime(cache_dir, no_cache) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let inspection = match warden::registry::inspect(&runtime, &source).await {
        Ok(inspection) => inspection,
        Err(error) => return bad_input(field("error:", &error.to_string())),
    };
    if json {
        let value = serde_json::json!({
            "source": inspection.source,
            "sha256": inspection.sha256,
            "tools": inspection.tools,
            "imports": inspection.imports.iter().map(|(name, needs)| serde_json::json!({ "name": name, "needs": needs })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&value).expect("JSON serializes");
        return print_all(&format!("{text}\n"));
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}\n  sha256 = \"{}\"\n",
        inspection.source, inspection.sha256
    );
    text.push_str("tools:\n");
    for tool in &inspection.tools {
        let name = warden::transcript::name(&tool.name);
        let _ = writeln!(text, "{}", field(&format!("  {name}:"), &tool.description));
        let _ = writeln!(
            text,
            "{}",
            field("    parameters:", &tool.parameters.to_string())
        );
    }
    text.push_str("\nimports:\n");
    for (name, needs) in &inspection.imports {
        let _ = writeln!(text, "  {name:<45} {needs}");
    }
    print_all(&text)
}

pub(crate) async fn run(command: ToolsCommand) -> ExitCode {
    match command {
        ToolsCommand::Inspect {
            component,
            json,
            cache_dir,
            no_cache,
        } => tools_inspect(component, json, cache_dir, no_cache).await,
    }
}
