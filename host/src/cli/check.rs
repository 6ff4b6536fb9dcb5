//! `warden check`.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use warden::load::PolicyFile;

use super::{EXIT_NO_ANSWER, print_warnings, start_runtime};

#[derive(Args)]
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
}

pub(crate) async fn run(args: CheckArgs) -> ExitCode {
    let CheckArgs {
        policy: path,
        strict,
        no_load,
        cache_dir,
        no_cache,
    } = args;
    let path = path.as_path();
    let load = (!no_load).then_some((cache_dir, no_cache));
    let file = match PolicyFile::read(path) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("{error}");
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
            match warden::check::load_components(&runtime, &file).await {
                Ok(components) => Some(components),
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    print!("{}", warden::check::describe(&file));
    print!(
        "{}",
        warden::check::describe_components(components.as_deref())
    );
    if strict && !file.policy.warnings.is_empty() {
        eprintln!("\n--strict: {} warning(s)", file.policy.warnings.len());
        return ExitCode::from(EXIT_NO_ANSWER);
    }
    ExitCode::SUCCESS
}
