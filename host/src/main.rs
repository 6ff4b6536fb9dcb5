//! The `warden` command line.

mod cli;

use clap::{Parser, Subcommand};
use cli::{audit, call, check, mcp, new, policy, replay, run, tools};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Run AI agents and their tools as WebAssembly components, under a policy that decides and records every model call and side effect.",
    after_help = "Exit status, for every command: 0 ok; 1 what was run or checked failed (a run with no answer, a divergent replay, an invalid policy under `check`, a failing case, a broken log); 2 bad input (an unreadable file, a bad argument, a policy `run` cannot load)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent component on a task under a policy.
    Run(run::RunArgs),
    /// Run the bundled demo: the react agent with the calc and text tools
    /// under policies/demo.toml, answered by a scripted model (offline).
    Demo {
        #[command(flatten)]
        output: run::OutputArgs,
    },
    /// Check a policy file and print what it grants. Every tool component
    /// it names is loaded as `warden run` loads it (read, pin checked,
    /// compiled through the cache, asked to describe its tools with no
    /// grants; never invoked), so whatever `run` would refuse, `check`
    /// refuses. Exit 0 when valid, 1 on errors, 2 with --strict when there
    /// are warnings.
    Check(check::CheckArgs),
    /// Tools for policy authors.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Re-run a recorded run from its audit log without touching anything
    /// outside warden: every model call and tool call is answered from the
    /// record (nothing is sent to a model; no tool is called, its component
    /// only describes its tools, with no grants), the agent's own HTTP is
    /// refused, it inherits no environment and gets no directory unless
    /// --read-dirs (then read-only), nothing is downloaded, and the only
    /// file written is the compile cache. The log's hash chain is checked
    /// first; the policy is enforced again, and the first divergence (in
    /// what the agent sent or got) is reported. Exit 0 when the run went
    /// the same way, 1 when it diverged, 2 when it cannot be replayed.
    Replay(replay::ReplayArgs),
    /// Tools for people plugging in third-party tools.
    #[command(subcommand)]
    Tools(tools::ToolsCommand),
    /// Read audit logs: check their hash chain, or show them as a timeline.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Serve the policy's tools to an MCP client over stdio (JSON-RPC, one
    /// message per line). Every call is decided, limited and audited
    /// exactly like an agent's; a refusal is an error result naming the
    /// rule. Ends when the client closes stdin.
    Mcp(mcp::McpArgs),
    /// Call one tool of a component, with no agent: decided, run in a
    /// fresh instance and audited as an agent's call. With --policy, by
    /// that policy's entry for the tool; without, the tool is granted
    /// nothing (no HTTP, files, environment or secrets). Prints the
    /// result; exit 1 when the call is refused or fails, 2 on bad input.
    Call(call::CallArgs),
    /// Create a tool or agent project (Rust, Python or JavaScript) that
    /// builds with one command and runs under its own policy.
    New(new::NewArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => cli::block_on(run::run(args)),
        Command::Demo { output } => cli::block_on(run::demo(output)),
        Command::Check(args) => cli::block_on(check::run(args)),
        Command::Policy(command) => policy::run(command),
        Command::Replay(args) => cli::block_on(replay::run(args)),
        Command::Tools(command) => cli::block_on(tools::run(command)),
        Command::Audit(command) => audit::run(command),
        Command::Mcp(args) => cli::block_on_one_thread(mcp::run(args)),
        Command::Call(args) => cli::block_on(call::run(args)),
        Command::New(args) => new::run(args),
    }
}
