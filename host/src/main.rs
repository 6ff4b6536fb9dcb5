//! The `warden` command line.

mod cli;

use clap::{CommandFactory as _, Parser, Subcommand};
use cli::{audit, call, check, compile, mcp, new, policy, replay, run, serve, tools, worker};
use std::io::IsTerminal as _;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "Run AI agents and their tools as WebAssembly components, under a policy that decides and records every model call and side effect.",
    after_help = "Exit status, for every command: 0 ok; 1 what was run or checked failed (a run with no answer, a divergent replay, an invalid policy under `check`, a failing case, a broken log); 2 bad input (an unreadable file, a bad argument, a policy `run` cannot load).\n\nExamples:\n  warden demo\n  warden check policies/demo.toml\n  warden run builtin:react -p policies/demo.toml -t \"What is 17 * 23?\" -m openai:gpt-4o-mini\n  warden completions bash > ~/.local/share/bash-completion/completions/warden\n\nMachine output (--json), colour, WARDEN_LOG and the other variables: docs/cli.md"
)]
struct Cli {
    /// When to colour warden's own words: auto (on a terminal, unless
    /// NO_COLOR is set; CLICOLOR_FORCE=1 forces it), always, never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t)]
    color: cli::ColorChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent component on a task under a policy.
    Run(run::RunArgs),
    /// Run the bundled demo: the react agent with the calc and text tools
    /// under policies/demo.toml, answered by a scripted model (offline).
    #[command(
        after_help = "Examples:\n  warden demo\n  warden demo -q\n  warden demo --json | jq .summary\n  warden demo --audit demo.jsonl && warden audit show demo.jsonl --decision deny"
    )]
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
    /// Compile components into the compile cache ahead of a run, as
    /// `wasmtime compile` does: a Python or JavaScript component takes tens
    /// of seconds the first time, and a run or `warden mcp` that finds it
    /// compiled starts in milliseconds.
    Compile(compile::CompileArgs),
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
    #[command(
        subcommand,
        after_help = "Examples:\n  warden tools inspect target/wasm32-wasip2/release/my_tool.wasm"
    )]
    Tools(tools::ToolsCommand),
    /// Read audit logs: check their hash chain, or show them as a timeline.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Serve the policy's tools to an MCP client over stdio (JSON-RPC, one
    /// message per line). Every call is decided, limited and audited
    /// exactly like an agent's; a refusal is an error result naming the
    /// rule. Ends when the client closes stdin.
    #[command(
        after_help = "Examples:\n  warden mcp -p policies/demo.toml\n  warden mcp -p policies/demo.toml --audit mcp.jsonl\n  warden mcp -p policy.toml --approve-from task   # approve an ask whose every value came from the task"
    )]
    Mcp(mcp::McpArgs),
    /// Serve runs over HTTP: submit, status, events (SSE), audit log,
    /// cancel; bearer tokens, per-token limits, one process holding many
    /// runs, each isolated (docs/serve.md, docs/openapi.json).
    Serve(serve::ServeArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  warden completions bash > ~/.local/share/bash-completion/completions/warden\n  warden completions zsh > ~/.zfunc/_warden   # with fpath+=~/.zfunc before compinit\n  warden completions fish > ~/.config/fish/completions/warden.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Call one tool of a component, with no agent: decided, run in a
    /// fresh instance and audited as an agent's call. With --policy, by
    /// that policy's entry for the tool; without, the tool is granted
    /// nothing (no HTTP, files, environment or secrets). Prints the
    /// result; exit 1 when the call is refused or fails, 2 on bad input.
    Call(call::CallArgs),
    /// Create a tool or agent project (Rust, Python or JavaScript) that
    /// builds with one command and runs under its own policy.
    New(new::NewArgs),
    /// Take runs from a NATS JetStream queue and run them, publishing each
    /// audit record and answer to JetStream (docs/cluster.md).
    #[command(
        after_help = "Examples:\n  warden worker --nats nats://127.0.0.1:4222 --policies policies/ --concurrency 4"
    )]
    Worker(worker::WorkerArgs),
}

fn main() -> ExitCode {
    // First: a run reports how long after this its agent started.
    warden::run::note_process_start(std::time::Instant::now());
    let cli = Cli::parse();
    cli::set_color(cli.color);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // warden's spans (run, model_call, tool_call, component_load) say
        // how long they took when they close.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        // Escape codes only for a person at a terminal, never into a file.
        .with_ansi(cli::color_for(std::io::stderr().is_terminal()))
        .init();
    match cli.command {
        Command::Run(args) => cli::block_on(run::run(args)),
        Command::Demo { output } => cli::block_on(run::demo(output)),
        Command::Check(args) => cli::block_on(check::run(args)),
        Command::Compile(args) => cli::block_on(compile::run(args)),
        Command::Policy(command) => policy::run(command),
        Command::Replay(args) => cli::block_on(replay::run(args)),
        Command::Tools(command) => cli::block_on(tools::run(command)),
        Command::Audit(command) => audit::run(command),
        Command::Mcp(args) => cli::block_on_threads(args.threads(), mcp::run(args)),
        Command::Serve(args) => cli::block_on(serve::run(args)),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "warden", &mut script);
            cli::print_all(&String::from_utf8_lossy(&script))
        }
        Command::Call(args) => cli::block_on(call::run(args)),
        Command::New(args) => new::run(args),
        Command::Worker(args) => cli::block_on(worker::run(args)),
    }
}
