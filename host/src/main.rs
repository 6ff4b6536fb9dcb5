//! The `warden` command line.

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::bundled;
use warden::load::{ComponentSource, PolicyFile};
use warden::policy::{ByteSize, HumanDuration, Policy, Severity, ToolDecision};
use warden::provider::{self, ModelProvider, ScriptedProvider};
use warden::run::{RunError, RunSpec, run};
use warden::runtime::{Runtime, RuntimeConfig, cache};
use warden::transcript::Transcript;

/// Exit status when the agent gave no answer (it failed or was stopped).
const EXIT_NO_ANSWER: u8 = 1;
/// Exit status for bad input: policy, component, arguments.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Run AI agents and their tools as WebAssembly components, under a policy that decides and records every model call and side effect."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent component on a task under a policy.
    Run(RunArgs),
    /// Run the bundled demo: the react agent with the calc and text tools
    /// under policies/demo.toml, answered by a scripted model (offline).
    Demo {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Check a policy file and print what it grants.
    Check {
        /// The policy file.
        policy: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The agent: a .wasm component, or `builtin:react`.
    agent: String,
    /// The policy file to enforce.
    #[arg(long, short)]
    policy: PathBuf,
    /// The task given to the agent.
    #[arg(long, short)]
    task: String,
    /// Who answers the agent's model calls: `scripted:FILE` (a file of
    /// model turns, replayed in order).
    #[arg(long, short)]
    model: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct OutputArgs {
    /// Write the audit log (JSON Lines) here [default: a new file under
    /// $XDG_STATE_HOME/warden/runs/].
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Print only the answer, not the transcript.
    #[arg(long, short)]
    quiet: bool,
    /// Keep compiled components here [default: $WARDEN_CACHE_DIR, or
    /// ~/.cache/warden].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { policy } => check(&policy),
        Command::Run(args) => block_on(run_command(args)),
        Command::Demo { output } => block_on(demo(output)),
    }
}

fn block_on(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn bad_input(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(EXIT_BAD_INPUT)
}

async fn run_command(args: RunArgs) -> ExitCode {
    let policy = match PolicyFile::read(&args.policy) {
        Ok(policy) => policy,
        Err(error) => return bad_input(error),
    };
    print_warnings(&policy);
    let Some(model) = args.model else {
        return bad_input(
            "error: no model provider given\n\
             help: pass `--model scripted:FILE` (a file of model turns, replayed in order)",
        );
    };
    let provider = match provider::from_spec(&model) {
        Ok(provider) => provider,
        Err(error) => return bad_input(format!("error: {error}")),
    };
    let agent = ComponentSource::parse(&args.agent, Path::new("."));
    execute(policy, agent, provider, args.task, args.output).await
}

async fn demo(output: OutputArgs) -> ExitCode {
    let policy = match PolicyFile::from_text(
        bundled::DEMO_POLICY_NAME.into(),
        PathBuf::from("."),
        bundled::DEMO_POLICY.into(),
    ) {
        Ok(policy) => policy,
        Err(error) => return bad_input(error),
    };
    let provider = match ScriptedProvider::parse(bundled::DEMO_SCRIPT_NAME, bundled::DEMO_SCRIPT) {
        Ok(provider) => Arc::new(provider),
        Err(error) => return bad_input(error),
    };
    let agent = ComponentSource::Builtin("react".into());
    execute(policy, agent, provider, bundled::DEMO_TASK.into(), output).await
}

async fn execute(
    policy: PolicyFile,
    agent: ComponentSource,
    provider: Arc<dyn ModelProvider>,
    task: String,
    output: OutputArgs,
) -> ExitCode {
    let cache_dir = if output.no_cache {
        None
    } else {
        output.cache_dir.or_else(cache::default_dir)
    };
    let runtime = match Runtime::new(RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    }) {
        Ok(runtime) => runtime,
        Err(error) => return bad_input(format!("error: cannot start the engine: {error:#}")),
    };
    let run_id = new_run_id();
    let audit_path = match output.audit {
        Some(path) => path,
        None => match default_audit_dir() {
            Some(dir) => dir.join(format!("{run_id}.jsonl")),
            None => {
                return bad_input(
                    "error: no place for the audit log: set HOME or XDG_STATE_HOME, or pass --audit FILE",
                );
            }
        },
    };
    let file = match JsonlFile::open(&audit_path) {
        Ok(file) => file,
        Err(error) => {
            return bad_input(format!(
                "error: cannot open the audit log {}: {error}",
                audit_path.display()
            ));
        }
    };
    let mut log = AuditLog::new(run_id).with_sink(file);
    if !output.quiet {
        log = log.with_sink(Transcript::new(std::io::stdout()));
    }
    let spec = RunSpec {
        policy,
        agent,
        provider,
        task,
    };
    let report = match run(&runtime, spec, log).await {
        Ok(report) => report,
        Err(RunError::Audit(error)) => {
            eprintln!(
                "error: the audit log {} could not be written, so the run was stopped: {error}",
                audit_path.display()
            );
            return ExitCode::from(EXIT_NO_ANSWER);
        }
        Err(error) => return bad_input(format!("error: {error}")),
    };
    eprintln!(
        "audit log: {}  (agent {} in {:.2?})",
        audit_path.display(),
        if report.agent_cache_hit {
            "loaded from the compile cache"
        } else {
            "compiled"
        },
        report.agent_load_time
    );
    match report.result {
        Ok(answer) => {
            if output.quiet {
                println!("{}", warden::transcript::clean(&answer));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

/// `$XDG_STATE_HOME/warden/runs`, else `~/.local/state/warden/runs`.
fn default_audit_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|base| base.join("warden/runs"))
}

fn print_warnings(policy: &PolicyFile) {
    for warning in &policy.policy.warnings {
        eprintln!("{}\n", warning.render(&policy.name, &policy.text));
    }
}

fn check(path: &Path) -> ExitCode {
    let file = match PolicyFile::read(path) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(1);
        }
    };
    print_warnings(&file);
    print!("{}", describe_policy(&file.name, &file.policy));
    ExitCode::SUCCESS
}

fn describe_policy(name: &str, policy: &Policy) -> String {
    let mut out = String::new();
    let warnings = policy
        .warnings
        .iter()
        .filter(|w| w.severity == Severity::Warning)
        .count();
    out.push_str(&format!("{name}: valid, {warnings} warning(s)\n\n"));
    let l = &policy.limits;
    out.push_str(&format!(
        "limits (each instance): memory {}, cpu {}, wall {}, output {}\n",
        ByteSize(l.memory),
        HumanDuration(l.cpu),
        HumanDuration(l.wall),
        ByteSize(l.output)
    ));
    let calls = |max: Option<u32>| match max {
        Some(n) => format!("at most {n} calls per run"),
        None => "no call limit".to_string(),
    };
    if policy.model.allow.is_empty() {
        out.push_str("model: none (every model call is denied)\n");
    } else {
        out.push_str(&format!(
            "model: {}; {}\n",
            policy.model.allow.join(", "),
            calls(policy.model.max_calls)
        ));
    }
    out.push_str("tools:\n");
    if policy.tools.is_empty() {
        out.push_str("  none\n");
    }
    for tool in policy.tools.values() {
        match tool.decision {
            ToolDecision::Allow => out.push_str(&format!(
                "  {:<16} allow  from {}; {}\n",
                tool.name,
                tool.component.as_ref().map_or("?", |c| c.text.as_str()),
                calls(tool.max_calls)
            )),
            ToolDecision::Deny => out.push_str(&format!("  {:<16} deny\n", tool.name)),
        }
    }
    out.push_str("everything else is denied.\n");
    out
}
