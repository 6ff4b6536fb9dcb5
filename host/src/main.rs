//! The `warden` command line.

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::bundled;
use warden::gate::{Approval, Approver, Question};
use warden::load::{ComponentSource, PolicyFile};
use warden::provider::{
    self, KeySource, ModelProvider, ProviderOptions, RecordingProvider, ScriptedProvider,
};
use warden::run::{RunError, RunSpec, run};
use warden::runtime::{Runtime, RuntimeConfig, cache};
use warden::transcript::{Transcript, field, quote};

/// Exit status when what was run or checked failed: a run with no answer
/// (failed or stopped), a failing policy case, a broken log, an invalid
/// policy under `check`.
const EXIT_NO_ANSWER: u8 = 1;
/// Exit status for bad input: policy, component, arguments.
const EXIT_BAD_INPUT: u8 = 2;

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
    Run(RunArgs),
    /// Run the bundled demo: the react agent with the calc and text tools
    /// under policies/demo.toml, answered by a scripted model (offline).
    Demo {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Check a policy file and print what it grants. Every tool component
    /// it names is loaded as `warden run` loads it (read, pin checked,
    /// compiled through the cache, asked to describe its tools with no
    /// grants; never invoked), so whatever `run` would refuse, `check`
    /// refuses. Exit 0 when valid, 1 on errors, 2 with --strict when there
    /// are warnings.
    Check {
        /// The policy file.
        policy: PathBuf,
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
    },
    /// Tools for policy authors.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
    Replay(ReplayArgs),
    /// Tools for people plugging in third-party tools.
    #[command(subcommand)]
    Tools(ToolsCommand),
    /// Read audit logs: check their hash chain, or show them as a timeline.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve the policy's tools to an MCP client over stdio (JSON-RPC, one
    /// message per line). Every call is decided, limited and audited
    /// exactly like an agent's; a refusal is an error result naming the
    /// rule. Ends when the client closes stdin.
    Mcp(McpArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// The audit log of the run.
    log: PathBuf,
    /// Which run in the log [default: the last].
    #[arg(long)]
    run: Option<String>,
    /// Enforce this policy instead of the recorded one.
    #[arg(long, short)]
    policy: Option<PathBuf>,
    /// Run this agent instead of the recorded one.
    #[arg(long)]
    agent: Option<String>,
    /// Use the agent and policy the log names (shown first). Anyone who can
    /// write the log can name them: without this flag a replay runs only
    /// what --agent and --policy name.
    #[arg(long)]
    trust_log: bool,
    /// Grant the agent the policy's directories, read-only (shown first).
    /// Without it, a replay grants no directory.
    #[arg(long)]
    read_dirs: bool,
    /// Replay a log whose hash chain is broken (it was edited): its
    /// answers may be forged.
    #[arg(long)]
    force: bool,
    /// Print only the verdict, not the transcript.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct McpArgs {
    /// The policy whose tools are served.
    #[arg(long, short)]
    policy: PathBuf,
    /// Approve in advance every request the rule RULE asks about;
    /// repeatable. Nobody else is asked: stdin is the protocol.
    #[arg(long, value_name = "RULE")]
    approve: Vec<String>,
    /// Most tool calls running at once; more wait their turn.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Messages held beyond the calls running (waiting for a turn, or for
    /// the client to read their answer). Past them warden stops reading
    /// stdin until one is answered; over HTTP the request is refused at
    /// once (503, server busy).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(0..=1024))]
    queue: u16,
    /// End the session when the client reads none of its answers for this
    /// many seconds. HTTP: also how long a request's head and body may take
    /// to arrive (a connection whose head is late is closed; a late body
    /// is answered 408).
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    write_timeout: u64,
    /// HTTP: the most MCP sessions open at once; past it `initialize` is
    /// refused (503), recorded once and counted.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_sessions: u32,
    /// HTTP: end a session not used for this many seconds (its id then
    /// gets 404).
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    session_idle: u64,
    /// Show every decision on stderr as it happens (stdout is the protocol).
    #[arg(long, short)]
    verbose: bool,
    /// Serve MCP's streamable-HTTP transport at http://ADDR/mcp instead of
    /// stdio (e.g. `127.0.0.1:8931`; port 0 picks one). Loopback only.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Write the audit log (JSON Lines) here [default: a new file under
    /// $XDG_STATE_HOME/warden/runs/].
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Keep compiled components here [default: $WARDEN_CACHE_DIR/components,
    /// or ~/.cache/warden/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Subcommand)]
enum ToolsCommand {
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Check an audit log's hash chain and numbering. Exit 0 when intact,
    /// 1 when a record was edited, deleted, reordered or inserted.
    Verify {
        /// The log (JSON Lines).
        file: PathBuf,
        /// The head `warden run` printed (a prefix is enough): also detects
        /// records cut from, or edited at, the end.
        #[arg(long)]
        head: Option<String>,
    },
    /// Show an audit log as a readable timeline.
    Show {
        /// The log (JSON Lines).
        file: PathBuf,
        /// Only records of this kind.
        #[arg(long, value_parser = ["run", "model", "tool", "http", "log", "limit", "stdio"])]
        kind: Option<String>,
        /// Only records with this decision.
        #[arg(long, value_parser = ["allow", "ask", "deny"])]
        decision: Option<String>,
        /// Only records about this tool (or other subject).
        #[arg(long)]
        tool: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<String>,
        /// Keep reading as records arrive (a running agent); stops at the
        /// end of the run.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a file of test cases (requests and the decisions they must get)
    /// against a policy. Exit 0 when all pass, 1 otherwise.
    Test {
        /// The policy file.
        policy: PathBuf,
        /// The cases file (TOML, `[[case]]` tables).
        cases: PathBuf,
    },
    /// Print the JSON Schema of policy files (for editors).
    Schema,
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
    /// Who answers the agent's model calls [default: the policy's
    /// `[model] provider`]: `openai:MODEL`, `anthropic:MODEL`,
    /// `openai-compatible:URL#MODEL` (Ollama, vLLM, llama.cpp, ...),
    /// `scripted:FILE` (model turns replayed in order) or `replay:FILE` (a
    /// recording).
    #[arg(long, short)]
    model: Option<String>,
    /// Read the provider's API key from this environment variable
    /// [default: OPENAI_API_KEY or ANTHROPIC_API_KEY].
    #[arg(long, value_name = "VAR", conflicts_with = "api_key_file")]
    api_key_env: Option<String>,
    /// Read the provider's API key from this file.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Approve in advance every request the rule RULE asks about (e.g.
    /// `tools.send_email`, `tools.pay.args.amount`); repeatable.
    #[arg(long, value_name = "RULE")]
    approve: Vec<String>,
    /// Save every model exchange to FILE (JSON Lines), to replay the run
    /// later with `--model replay:FILE`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
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
    /// Keep compiled components here [default: $WARDEN_CACHE_DIR/components,
    /// or ~/.cache/warden/components].
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
        Command::Check {
            policy,
            strict,
            no_load,
            cache_dir,
            no_cache,
        } => {
            let load = (!no_load).then_some((cache_dir, no_cache));
            block_on(check(&policy, strict, load))
        }
        Command::Policy(PolicyCommand::Test { policy, cases }) => policy_test(&policy, &cases),
        Command::Policy(PolicyCommand::Schema) => {
            let schema = warden::policy::Policy::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema serializes")
            );
            ExitCode::SUCCESS
        }
        Command::Run(args) => block_on(run_command(args)),
        Command::Tools(ToolsCommand::Inspect {
            component,
            json,
            cache_dir,
            no_cache,
        }) => {
            let cache_dir = if no_cache {
                None
            } else {
                cache_dir.or_else(cache::default_dir)
            };
            block_on(tools_inspect(component, json, cache_dir))
        }
        Command::Replay(args) => block_on(replay(args)),
        Command::Audit(AuditCommand::Verify { file, head }) => audit_verify(&file, head.as_deref()),
        Command::Audit(AuditCommand::Show {
            file,
            kind,
            decision,
            tool,
            run,
            follow,
        }) => audit_show(
            &file,
            &Filter {
                kind,
                decision,
                tool,
                run,
            },
            follow,
        ),
        Command::Demo { output } => block_on(demo(output)),
        Command::Mcp(args) => block_on_one_thread(mcp(args)),
    }
}

fn block_on(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    block_on_with(tokio::runtime::Builder::new_multi_thread(), future)
}

/// `warden mcp` answers one client: on one thread, a call's answer needs no
/// hand-off between worker threads (about 10 us less per call). Calls still
/// run concurrently, taking turns at every 10 ms epoch tick.
fn block_on_one_thread(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
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
    let provider = match choose_provider(&args, &policy) {
        Ok(provider) => provider,
        Err(message) => return bad_input(message),
    };
    for rule in &args.approve {
        let names_a_tool = rule
            .strip_prefix("tools.")
            .and_then(|rest| rest.split('.').next())
            .is_some_and(|tool| policy.policy.tools.contains_key(tool));
        if !names_a_tool {
            eprintln!(
                "warning: --approve {rule} names no tool of {}: rules that ask look like `tools.NAME`, `tools.NAME.args.FIELD` or `tools.NAME.ask_when_labeled`",
                policy.name
            );
        }
    }
    let agent = ComponentSource::parse(&args.agent, Path::new("."));
    execute(
        policy,
        agent,
        provider,
        args.task,
        args.approve,
        args.output,
    )
    .await
}

/// The provider: `--model`, else the policy's `[model] provider`; the key
/// from `--api-key-env`/`--api-key-file`, else the policy's source (when
/// the provider is the policy's), else the provider's usual variable.
fn choose_provider(args: &RunArgs, policy: &PolicyFile) -> Result<Arc<dyn ModelProvider>, String> {
    let limits = policy.policy.model.limits;
    let cli_key = match (&args.api_key_env, &args.api_key_file) {
        (Some(var), _) => Some(KeySource::Env(var.clone())),
        (None, Some(file)) => Some(KeySource::File(file.clone())),
        (None, None) => None,
    };
    let options = match (&args.model, &policy.policy.model.provider) {
        (Some(spec), _) => (
            spec.clone(),
            ProviderOptions {
                key: cli_key.unwrap_or_default(),
                limits,
                base_dir: PathBuf::new(),
            },
        ),
        (None, Some(choice)) => {
            let policy_key = match (&choice.api_key_env, &choice.api_key_file) {
                (Some(var), _) => KeySource::Env(var.clone()),
                (None, Some((file, place))) => {
                    KeySource::File(policy.dir_of(place.file).join(file))
                }
                (None, None) => KeySource::Default,
            };
            (
                choice.spec.clone(),
                ProviderOptions {
                    key: cli_key.unwrap_or(policy_key),
                    limits,
                    base_dir: policy.dir_of(choice.place.file).to_path_buf(),
                },
            )
        }
        (None, None) => {
            return Err(format!(
                "error: no model provider given\n\
                 help: pass `--model openai:MODEL`, `--model anthropic:MODEL`, `--model openai-compatible:URL#MODEL` or `--model scripted:FILE`, or set `[model] provider` in {}",
                policy.name
            ));
        }
    };
    let (spec, options) = options;
    let provider = provider::from_spec(&spec, &options).map_err(|e| format!("error: {e}"))?;
    match &args.record {
        None => Ok(provider),
        Some(path) => match RecordingProvider::create(provider, path) {
            Ok(recorder) => Ok(Arc::new(recorder)),
            Err(error) => Err(format!(
                "error: cannot create the recording {}: {error}",
                path.display()
            )),
        },
    }
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
    execute(
        policy,
        agent,
        provider,
        bundled::DEMO_TASK.into(),
        Vec::new(),
        output,
    )
    .await
}

async fn execute(
    policy: PolicyFile,
    agent: ComponentSource,
    provider: Arc<dyn ModelProvider>,
    task: String,
    approve: Vec<String>,
    output: OutputArgs,
) -> ExitCode {
    let runtime = match start_runtime(output.cache_dir, output.no_cache) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let (audit_path, mut log) = match open_audit(output.audit) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    if !output.quiet {
        log = log.with_sink(Transcript::new(std::io::stdout()));
    }
    // A person is asked only when one is at the terminal; stdin is the
    // host's (guests have none), and guests' stdout is never shown.
    let approver: Option<Arc<dyn Approver>> =
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            Some(Arc::new(TerminalApprover))
        } else {
            None
        };
    let spec = RunSpec {
        policy,
        agent,
        provider,
        task,
        approver,
        approve,
        replay_tools: None,
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
        // A policy error renders itself, `error:` included.
        Err(RunError::Policy(error)) => return bad_input(error),
        Err(error) => return bad_input(field("error:", &error.to_string())),
    };
    let code = match &report.result {
        Ok(answer) => {
            if output.quiet {
                print_answer(answer);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{}", field("error:", &failure.to_string()));
            ExitCode::from(EXIT_NO_ANSWER)
        }
    };
    // Last, on stderr, once no guest code runs: nothing a guest, model or
    // tool wrote can come after it, and none of it starts like it.
    eprintln!(
        "audit log: {}  (agent {} in {:.2?})\naudit head: {}  (check: warden audit verify {} --head {})",
        audit_path.display(),
        if report.agent_cache_hit {
            "loaded from the compile cache"
        } else {
            "compiled"
        },
        report.agent_load_time,
        report.audit_head,
        audit_path.display(),
        &report.audit_head[..16],
    );
    code
}

/// `--quiet`'s answer. On a terminal, where a person reads it next to
/// warden's own lines on stderr, it is quoted like every outside text;
/// into a pipe or a file, where a program reads it, it is the answer as it
/// is, with only the characters that [`warden::transcript::hides`] escaped.
fn print_answer(answer: &str) {
    if std::io::stdout().is_terminal() {
        println!("{}", quote(answer));
    } else {
        println!("{}", warden::transcript::clean(answer));
    }
}

/// The engine, with the compile cache `--cache-dir`/`--no-cache` ask for.
fn start_runtime(cache_dir: Option<PathBuf>, no_cache: bool) -> Result<Runtime, ExitCode> {
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
fn open_audit(path: Option<PathBuf>) -> Result<(PathBuf, AuditLog), ExitCode> {
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

/// `warden mcp`: serve until the client closes stdin or a stop signal.
async fn mcp(args: McpArgs) -> ExitCode {
    let policy = match PolicyFile::read(&args.policy) {
        Ok(policy) => policy,
        Err(error) => return bad_input(error),
    };
    print_warnings(&policy);
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
    let spec = warden::mcp::ServeSpec {
        approve: args.approve,
        concurrency: usize::from(args.concurrency),
        queue: usize::from(args.queue),
        write_timeout: std::time::Duration::from_secs(args.write_timeout),
        max_sessions: args.max_sessions as usize,
        session_idle: std::time::Duration::from_secs(args.session_idle),
        ..warden::mcp::ServeSpec::new(policy)
    };
    let report = match args.http {
        Some(address) => {
            if let Err(message) = warden::mcp::check_address(address) {
                return bad_input(format!("error: {message}"));
            }
            let listener = match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => listener,
                Err(error) => {
                    return bad_input(format!("error: cannot listen on {address}: {error}"));
                }
            };
            if let Ok(bound) = listener.local_addr() {
                eprintln!("warden mcp: listening on http://{bound}/mcp");
            }
            warden::mcp::serve_http(&runtime, spec, log, listener, stop_signal()).await
        }
        None => {
            let (input, output) = stdio();
            warden::mcp::serve(
                &runtime,
                spec,
                log,
                tokio::io::BufReader::new(input),
                output,
                stop_signal(),
            )
            .await
        }
    };
    match report {
        Ok(report) => {
            eprintln!(
                "warden mcp: {} tool calls in {:.1?}; audit log: {}\naudit head: {}  (check: warden audit verify {} --head {})",
                report.calls,
                report.elapsed,
                audit_path.display(),
                report.audit_head,
                audit_path.display(),
                &report.audit_head[..16],
            );
            ExitCode::SUCCESS
        }
        Err(RunError::Audit(error)) => {
            eprintln!(
                "error: the audit log {} could not be written, so warden mcp stopped: {error}",
                audit_path.display()
            );
            ExitCode::from(EXIT_NO_ANSWER)
        }
        // A policy error renders itself, `error:` included.
        Err(RunError::Policy(error)) => bad_input(error),
        Err(error) => bad_input(field("error:", &error.to_string())),
    }
}

type Input = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
type Output = Box<dyn tokio::io::AsyncWrite + Unpin + Send>;

/// stdin and stdout for the protocol. When they are pipes (as MCP clients
/// start servers), they are read and written by the async runtime directly;
/// tokio's stdin/stdout would hand every read and write to a blocking
/// thread, about 10 us each way.
fn stdio() -> (Input, Output) {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use tokio::net::unix::pipe;
        let input = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(pipe::Receiver::from_owned_fd);
        let output = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .and_then(pipe::Sender::from_owned_fd);
        let input: Input = match input {
            Ok(pipe) => Box::new(pipe),
            Err(_) => Box::new(tokio::io::stdin()),
        };
        let output: Output = match output {
            Ok(pipe) => Box::new(pipe),
            Err(_) => Box::new(tokio::io::stdout()),
        };
        (input, output)
    }
    #[cfg(not(unix))]
    {
        (Box::new(tokio::io::stdin()), Box::new(tokio::io::stdout()))
    }
}

/// Completes at SIGINT or SIGTERM. The handlers are installed at once
/// (not when first polled), so a signal while the tools load still ends
/// the session cleanly, with its end record.
fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match signals {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
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
    for warning in policy.render_warnings() {
        eprintln!("{warning}\n");
    }
}

/// `load`: the cache options to load the components with; `None` with
/// `--no-load`.
async fn check(path: &Path, strict: bool, load: Option<(Option<PathBuf>, bool)>) -> ExitCode {
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

fn policy_test(policy: &Path, cases: &Path) -> ExitCode {
    let file = match PolicyFile::read(policy) {
        Ok(file) => file,
        Err(error) => return bad_input(error),
    };
    let name = cases.display().to_string();
    let text = match warden::load::read_text(cases, warden::load::MAX_SCRIPT_FILE) {
        Ok(text) => text,
        Err(error) => return bad_input(format!("error: cannot read {name}: {error}")),
    };
    let results = match warden::check::run_cases(&file.policy, &name, &text) {
        Ok(results) => results,
        Err(error) => return bad_input(error),
    };
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for result in &results {
        match &result.failure {
            None => println!("PASS {}", result.name),
            Some(why) => println!("FAIL {}\n  {why}", result.name),
        }
    }
    println!(
        "\n{}: {} passed, {failed} failed",
        name,
        results.len() - failed
    );
    if results.is_empty() {
        return bad_input(format!("error: {name} has no `[[case]]`"));
    }
    if failed > 0 {
        return ExitCode::from(EXIT_NO_ANSWER);
    }
    ExitCode::SUCCESS
}

fn audit_verify(path: &Path, head: Option<&str>) -> ExitCode {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", path.display())),
    };
    let report = match warden::audit::verify(file) {
        Ok(report) => report,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", path.display())),
    };
    let name = path.display();
    for problem in &report.problems {
        println!("BROKEN {name}:{}: {}", problem.line, problem.message);
    }
    for line in &report.torn {
        println!(
            "note: {name}:{line}: an incomplete record (the host was stopped while writing it); it is lost, the chain continues"
        );
    }
    for (run, records, finished) in &report.runs {
        if !finished {
            println!(
                "note: run {run} ({records} records) has no end record: the host was stopped, or the log was cut"
            );
        }
    }
    let mut intact = report.is_intact();
    if let Some(expected) = head {
        let expected = expected.trim().to_ascii_lowercase();
        if expected.len() < 8 || !report.head.starts_with(&expected) {
            println!(
                "BROKEN {name}: the last record's hash is {}, not the head you gave ({expected}): records were cut from or edited at the end",
                report.head
            );
            intact = false;
        }
    }
    if intact {
        println!(
            "OK {name}: {} records in {} run(s), chain intact; head {}",
            report.records,
            report.runs.len(),
            report.head
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What `warden audit show` keeps.
struct Filter {
    kind: Option<String>,
    decision: Option<String>,
    tool: Option<String>,
    run: Option<String>,
}

impl Filter {
    fn keeps(&self, record: &warden::audit::Record) -> bool {
        self.kind.as_ref().is_none_or(|k| record.kind.as_str() == k)
            && self
                .decision
                .as_ref()
                .is_none_or(|d| record.decision.as_str() == d)
            && self.tool.as_ref().is_none_or(|t| record.subject == *t)
            && self.run.as_ref().is_none_or(|r| record.run == *r)
    }
}

fn audit_show(path: &Path, filter: &Filter, follow: bool) -> ExitCode {
    use std::io::Read;
    use warden::audit::{AuditSink, Event, Kind, Record};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", path.display())),
    };
    let mut transcript = Transcript::new(std::io::stdout());
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut line_number = 0usize;
    let mut open_run = false;
    loop {
        let read = match file.read(&mut chunk) {
            Ok(n) => n,
            Err(error) => {
                return bad_input(format!("error: cannot read {}: {error}", path.display()));
            }
        };
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            line_number += 1;
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue;
            }
            let record: Record = match serde_json::from_slice(line) {
                Ok(record) => record,
                Err(error) => {
                    eprintln!(
                        "{}:{line_number}: not an audit record ({error})",
                        path.display()
                    );
                    continue;
                }
            };
            if record.kind == Kind::Run {
                open_run = record.event != Event::Outcome;
            }
            if filter.keeps(&record) && transcript.write(&record).is_err() {
                // stdout closed (a pager quit): stop quietly.
                return ExitCode::SUCCESS;
            }
        }
        if read == 0 {
            if !follow || (!open_run && line_number > 0) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    ExitCode::SUCCESS
}

/// Asks the person at the terminal (stderr and stdin, which no guest can
/// reach) about each `ask` decision.
struct TerminalApprover;

impl Approver for TerminalApprover {
    fn ask(&self, question: &Question<'_>) -> Option<Approval> {
        use std::io::{BufRead, Write};
        use warden::transcript::name;
        let what = question
            .data
            .map(|d| d.get("arguments").unwrap_or(d).to_string())
            .unwrap_or_default();
        let labels = if question.labels.is_empty() {
            "none".to_string()
        } else {
            question.labels.join(", ")
        };
        let mut err = std::io::stderr().lock();
        let rules = question
            .rules
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            err,
            "\n\x1b[1mwarden: approval needed\x1b[0m\n{}\n{}\n{}\n{}\n  [y] allow once  [a] allow for the rest of the run (these rules)  [N] deny: ",
            field(&format!("  {} ", name(question.subject)), &what),
            field("  rule:", &rules),
            field("  why:", question.reason),
            field("  session labels:", &labels),
        );
        let _ = err.flush();
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).ok()? == 0 {
            return None;
        }
        Some(match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Approval::Once,
            "a" | "always" => Approval::ForRun,
            _ => Approval::Deny,
        })
    }
}

async fn replay(args: ReplayArgs) -> ExitCode {
    use warden::audit::MemorySink;
    use warden::replay::{Divergence, ReplayModel, ReplayTools};
    let ReplayArgs {
        log,
        run: run_id,
        policy,
        agent,
        trust_log,
        read_dirs,
        force,
        quiet,
    } = args;
    // The chain first: a log that is not what warden wrote is refused
    // before anything in it is believed.
    let report = match std::fs::File::open(&log).and_then(warden::audit::verify) {
        Ok(report) => report,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", log.display())),
    };
    if !report.is_intact() {
        let mut message = format!(
            "{}: the hash chain is broken: the log is not what warden wrote, so its answers may be forged:",
            log.display()
        );
        for problem in report.problems.iter().take(5) {
            message.push_str(&format!(
                "\n  line {}: {}",
                problem.line,
                warden::transcript::clean(&problem.message)
            ));
        }
        if report.problems.len() > 5 {
            message.push_str(&format!("\n  ... and {} more", report.problems.len() - 5));
        }
        if !force {
            return bad_input(format!(
                "error: {message}\nhelp: `warden audit verify {}` shows every break; replay it anyway with --force",
                log.display()
            ));
        }
        eprintln!("warning: {message}\nreplaying anyway (--force)");
    }
    for line in &report.torn {
        eprintln!(
            "note: {}:{line}: an incomplete record (the host was stopped while writing it)",
            log.display()
        );
    }
    // Only the run replayed is held, a line at a time: the log may be
    // large (or made to be).
    let Some(run_id) = run_id.or_else(|| report.runs.last().map(|(run, _, _)| run.clone())) else {
        return bad_input(format!("error: {}: the log holds no run", log.display()));
    };
    let records = match std::fs::File::open(&log).and_then(|file| records_of(file, &run_id)) {
        Ok(records) => records,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", log.display())),
    };
    let recorded = match warden::replay::read(&records, Some(&run_id)) {
        Ok(recorded) => recorded,
        Err(error) => return bad_input(format!("error: {}: {error}", log.display())),
    };
    let clean = warden::transcript::clean;
    let from_log = agent.is_none() || policy.is_none();
    let policy_path = policy
        .clone()
        .unwrap_or_else(|| PathBuf::from(&recorded.policy));
    let policy_file = match PolicyFile::read(&policy_path) {
        Ok(policy) => policy,
        Err(error) => {
            return bad_input(format!(
                "{error}\nhelp: the run used {}; pass --policy FILE if it moved",
                clean(&recorded.policy)
            ));
        }
    };
    let agent_text = agent.clone().unwrap_or_else(|| recorded.agent.clone());
    // What will run, shown before anything does: from a log, these are
    // whatever its writer put there.
    let whence = |given: bool| if given { "given" } else { "from the log" };
    let mut shown = format!(
        "replay of run {}:\n  agent:  {} ({})\n  policy: {} ({})",
        clean(&recorded.run),
        clean(&agent_text),
        whence(agent.is_some()),
        clean(&policy_path.display().to_string()),
        whence(policy.is_some()),
    );
    let (grants, _) = policy_file.policy.grants_of(None);
    let mounts = grants.map(|g| g.fs.as_slice()).unwrap_or_default();
    if mounts.is_empty() {
        shown.push_str("\n  directories: the policy grants the agent none");
    } else {
        shown.push_str(if read_dirs {
            "\n  directories, granted read-only (--read-dirs):"
        } else {
            "\n  directories the policy grants the agent (no directory is granted; --read-dirs grants them read-only):"
        });
        for mount in mounts {
            shown.push_str(&format!(
                "\n    {} = {} ({} in the policy)",
                clean(&mount.guest_path),
                clean(
                    &policy_file
                        .dir_of(mount.place.file)
                        .join(&mount.dir)
                        .display()
                        .to_string()
                ),
                match mount.mode {
                    warden::policy::MountMode::Ro => "ro",
                    warden::policy::MountMode::Rw => "rw",
                },
            ));
        }
    }
    eprintln!("{shown}");
    if from_log && !trust_log {
        return bad_input(
            "error: the agent and policy above come from the log where not given, and anyone who can write the log can name them\nhelp: check them, then pass --trust-log; or name your own with --agent and --policy",
        );
    }
    if policy_file.sha256 != recorded.policy_sha256 {
        eprintln!(
            "note: {} has changed since run {} (sha256 {} then, {} now): differences may come from the policy",
            policy_path.display(),
            warden::transcript::name(&recorded.run),
            // From a log someone else may have written: not necessarily hex.
            warden::transcript::clean_line(
                &recorded.policy_sha256.chars().take(12).collect::<String>()
            ),
            &policy_file.sha256[..12]
        );
    }
    if recorded.model.iter().any(|s| s.request_sha256.is_none()) {
        eprintln!(
            "note: the log holds no hash of the model requests (it was written before warden recorded them): only the number of messages sent is compared"
        );
    }
    let agent = ComponentSource::parse(&agent_text, Path::new("."));
    let runtime = match Runtime::new(RuntimeConfig {
        cache_dir: cache::default_dir(),
        ..RuntimeConfig::default()
    }) {
        Ok(runtime) => runtime,
        Err(error) => return bad_input(format!("error: cannot start the engine: {error:#}")),
    };
    // Tool components come from files or the download cache, never the
    // network.
    let offline = warden::remote::Downloader {
        offline: true,
        ..runtime.downloader().clone()
    };
    let runtime = runtime.with_downloader(offline);
    let divergence = Arc::new(Divergence::default());
    let tools = Arc::new(ReplayTools::new(&recorded, divergence.clone()).with_read_dirs(read_dirs));
    let sink = MemorySink::default();
    let mut audit = AuditLog::new(new_run_id()).with_sink(sink.clone());
    if !quiet {
        audit = audit.with_sink(Transcript::new(std::io::stdout()));
    }
    let spec = RunSpec {
        policy: policy_file,
        agent,
        provider: Arc::new(ReplayModel::new(&recorded, divergence.clone())),
        task: recorded.task.clone(),
        approver: None,
        approve: recorded.approved.clone(),
        replay_tools: Some(tools.clone()),
    };
    let report = match run(&runtime, spec, audit).await {
        Ok(report) => report,
        Err(error) => return bad_input(field("error:", &error.to_string())),
    };
    if let Some(sha) = sink.records().first().and_then(|r| {
        r.data
            .as_ref()?
            .pointer("/agent/sha256")?
            .as_str()
            .map(str::to_string)
    }) && sha != recorded.agent_sha256
    {
        eprintln!(
            "note: the agent component has changed since run {} (sha256 differs)",
            warden::transcript::name(&recorded.run)
        );
    }
    let answer = report.result.as_ref().ok().cloned();
    let verdict = match divergence.first() {
        Some(what) => Some(what),
        None if tools.left() > 0 => Some(format!(
            "the agent stopped with {} recorded tool call(s) not made",
            tools.left()
        )),
        None if answer != recorded.answer => Some(format!(
            "the answer differs: recorded {:?}, now {:?}",
            recorded.answer, answer
        )),
        None => None,
    };
    match verdict {
        Some(what) => {
            println!(
                "{}",
                field(
                    &format!(
                        "DIVERGED from run {}:",
                        warden::transcript::name(&recorded.run)
                    ),
                    &what
                )
            );
            ExitCode::from(EXIT_NO_ANSWER)
        }
        None => {
            println!(
                "SAME as run {}: {} model answer(s) and {} tool result(s) replayed, same answer",
                warden::transcript::name(&recorded.run),
                recorded.model.len(),
                recorded.tools.len()
            );
            ExitCode::SUCCESS
        }
    }
}

/// The records of run `run` in an audit log, read a line at a time; a line
/// longer than any record warden writes is skipped without being held.
fn records_of(file: std::fs::File, run: &str) -> std::io::Result<Vec<warden::audit::Record>> {
    use std::io::{BufRead as _, Read as _};
    let max = warden::audit::verify::MAX_LINE;
    let mut reader = std::io::BufReader::new(file);
    let mut records = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut reader)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut line)?
            == 0
        {
            return Ok(records);
        }
        if line.len() > max && line.last() != Some(&b'\n') {
            let mut byte = [0u8; 1];
            while reader.read(&mut byte)? == 1 && byte[0] != b'\n' {}
            continue;
        }
        if let Ok(record) = serde_json::from_slice::<warden::audit::Record>(&line)
            && record.run == run
        {
            records.push(record);
        }
    }
}

async fn tools_inspect(component: String, json: bool, cache_dir: Option<PathBuf>) -> ExitCode {
    let source = ComponentSource::parse(&component, Path::new("."));
    let runtime = match Runtime::new(RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    }) {
        Ok(runtime) => runtime,
        Err(error) => return bad_input(format!("error: cannot start the engine: {error:#}")),
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

/// Print `text` to stdout; a reader that went away (`| head`) is not an
/// error.
fn print_all(text: &str) -> ExitCode {
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
