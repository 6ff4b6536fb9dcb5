//! `warden mcp`: serve a policy's tools to an MCP client.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use warden::load::PolicyFile;
use warden::mcp::ToolsLoaded;
use warden::run::RunError;
use warden::transcript::{Transcript, field, name};

use super::{EXIT_NO_ANSWER, bad_input, open_audit, print_warnings, start_runtime_sized};

#[derive(Args)]
pub(crate) struct McpArgs {
    /// The policy whose tools are served.
    #[arg(long, short)]
    policy: PathBuf,
    /// Approve in advance every request the rule RULE asks about;
    /// repeatable. Other asks go to the client's person as MCP
    /// elicitation when the client offers it (over stdio or --http), and
    /// are refused when it does not: stdin is the protocol, not a terminal.
    #[arg(long, value_name = "RULE")]
    approve: Vec<String>,
    /// Approve an ask, once per call, when every value that triggered it
    /// came from SOURCE: `task`, `unlabeled`, `model`, `tool:NAME` or
    /// `label:NAME`, as in a `from` rule; repeatable (any of them).
    #[arg(long, value_name = "SOURCE", value_parser = super::parse_approve_from)]
    approve_from: Vec<warden::policy::explain::ApproveFrom>,
    /// Most tool calls running at once; more wait their turn.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Threads running the session: 1 answers a lone call soonest (no
    /// hand-off between threads); more let calls that overlap use more
    /// cores (at most 64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
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
    /// stdio (e.g. `localhost:8931` or `127.0.0.1:8931`; port 0 picks one).
    /// Loopback only: a host name must resolve to loopback addresses only.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
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
    /// Most tool instances alive at once in this process, all sessions
    /// together (the pooling allocator's size; each takes address space,
    /// and up to 2 MiB resident once used). A call past it waits for a
    /// free one, at most the tool's `limits.wall`.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_instances: u32,
}

impl McpArgs {
    /// The async runtime's threads (`--threads`).
    pub(crate) fn threads(&self) -> usize {
        usize::from(self.threads)
    }
}

/// `warden mcp`: serve until the client closes stdin or a stop signal.
pub(crate) async fn run(args: McpArgs) -> ExitCode {
    let policy = match PolicyFile::read(&args.policy) {
        Ok(policy) => policy,
        Err(error) => return bad_input(error),
    };
    print_warnings(&policy);
    super::warn_approve_from(&policy, &args.approve_from);
    // Before anything is loaded: a refused address is refused at once.
    let address = match &args.http {
        Some(text) => match warden::mcp::listen_address(text).await {
            Ok(address) => Some(address),
            Err(message) => return bad_input(format!("error: {message}")),
        },
        None => None,
    };
    // The process's engine; a compile abandoned when the client leaves
    // goes on using it until the process exits (at once).
    let runtime: &'static warden::runtime::Runtime =
        match start_runtime_sized(args.cache_dir, args.no_cache, args.max_instances) {
            Ok(runtime) => Box::leak(Box::new(runtime)),
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
        approve_from: args.approve_from,
        concurrency: usize::from(args.concurrency),
        queue: usize::from(args.queue),
        write_timeout: std::time::Duration::from_secs(args.write_timeout),
        max_sessions: args.max_sessions as usize,
        session_idle: std::time::Duration::from_secs(args.session_idle),
        on_tools: Some(std::sync::Arc::new(tools_loaded)),
        ..warden::mcp::ServeSpec::new(policy)
    };
    let report = match address {
        Some(address) => {
            let listener = match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => listener,
                Err(error) => {
                    return bad_input(format!("error: cannot listen on {address}: {error}"));
                }
            };
            if let Ok(bound) = listener.local_addr() {
                eprintln!("warden mcp: listening on http://{bound}/mcp");
            }
            warden::mcp::serve_http(runtime, spec, log, listener, stop_signal()).await
        }
        None => {
            let (input, output) = stdio();
            warden::mcp::serve(
                runtime,
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
        // Printed when it happened (see `tools_loaded`).
        Err(RunError::Policy(_)) => bad_input(format!(
            "error: warden mcp served no tools: they could not be loaded (the error is above); audit log: {}",
            audit_path.display()
        )),
        Err(error) => bad_input(field("error:", &error.to_string())),
    }
}

/// Say on stderr (stdout is the protocol) when the tools are ready, or at
/// once why they could not be loaded: the client only learns it from its
/// `tools/list`.
fn tools_loaded(loaded: &ToolsLoaded<'_>) {
    match loaded {
        ToolsLoaded::Ready { granted, elapsed } => {
            let names: Vec<String> = granted.iter().map(|n| name(n)).collect();
            eprintln!(
                "warden mcp: tools ready in {elapsed:.1?}: {}",
                if names.is_empty() {
                    "none granted".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
        // A policy error renders itself, `error:` included.
        ToolsLoaded::Failed(RunError::Policy(error)) => eprintln!(
            "{error}\nwarden mcp: the tools could not be loaded; tools/list and tools/call answer with this error until the client leaves"
        ),
        ToolsLoaded::Failed(error) => eprintln!("{}", field("error:", &error.to_string())),
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
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
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
