//! `warden serve`: the HTTP service (docs/serve.md), and `warden serve
//! hash-token`.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden::approvals::{self, Desk, DeskLimits};
use warden::job::JobConfig;
use warden::serve::auth::{self, Tokens};
use warden::serve::{ServeLimits, ServeState};

use super::{EXIT_NO_ANSWER, bad_input, start_runtime_sized};

#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:
  warden serve hash-token --new           # a new token, and the hash for the tokens file
  warden serve --policies policies --tokens tokens.toml --listen 0.0.0.0:8940
  warden serve --policies policies --insecure-no-auth --listen 127.0.0.1:8940
  curl -H \"Authorization: Bearer $TOKEN\" -d '{\"agent\":\"builtin:react\",\"policy\":\"demo\",\"task\":\"6*7?\"}' http://127.0.0.1:8940/runs"
)]
pub(crate) struct ServeArgs {
    #[command(subcommand)]
    command: Option<ServeCommand>,
    /// The directory of policies a request may name: `NAME` is
    /// `DIR/NAME.toml`; model scripts a request names are files in it too.
    #[arg(long, value_name = "DIR", required = true)]
    policies: Option<PathBuf>,
    /// Where to listen: an address (`127.0.0.1:8940`, `[::]:8940`) or
    /// `HOST:PORT`; port 0 picks a free one (printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8940")]
    listen: String,
    /// The tokens file (TOML or JSON: each token's name, SHA-256, policies,
    /// rate and max_runs; docs/serve.md).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tokens_env", "insecure_no_auth"])]
    tokens: Option<PathBuf>,
    /// Read the tokens file's text from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "insecure_no_auth")]
    tokens_env: Option<String>,
    /// Serve without authentication: refused unless --listen is a loopback
    /// address. Every request is the caller `anonymous`, allowed every
    /// policy.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Agents a request may name besides the built-ins: `NAME` is
    /// `DIR/NAME.wasm`.
    #[arg(long, value_name = "DIR")]
    agents: Option<PathBuf>,
    /// A model spec a request may give besides the policy's own provider,
    /// read as a spec: its provider and base URL are fixed (none named:
    /// the provider's own server), a trailing `*` leaves the model open
    /// (`openai:*`, `openai:gpt-4o*`, `scripted:*`); repeatable.
    #[arg(long, value_name = "SPEC")]
    allow_model: Vec<String>,
    /// Let requests carry `approve` and `approve_from` (rules and sources
    /// approved in advance); without it, an `ask` goes to the approver.
    #[arg(long)]
    allow_pre_approve: bool,
    /// Each run's audit log is DIR/RUN_ID.jsonl [default:
    /// $XDG_STATE_HOME/warden/runs].
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// Most runs live at once; a submit past it gets 503.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_runs: u32,
    /// Most finished runs remembered (the oldest are forgotten; their
    /// audit files stay).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_kept: usize,
    /// Most bytes of answers and errors the remembered runs keep in memory
    /// (the oldest are forgotten past it).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    max_kept_bytes: usize,
    /// Refuse new runs (507) while the audit directory's file system has
    /// fewer bytes free than this: audit logs are kept, never deleted by
    /// the server, so the disk bounds them; archive old ones.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    min_free_disk: u64,
    /// The largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_body: usize,
    /// The longest task, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = warden::job::DEFAULT_MAX_TASK)]
    max_task: usize,
    /// Most event streams and audit downloads open at once.
    #[arg(long, value_name = "N", default_value_t = 512)]
    max_streams: usize,
    /// Most event streams and audit downloads one token may have open.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_streams_per_token: usize,
    /// Most TCP connections at once; more wait in the kernel's backlog.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// A request whose head or body takes longer than this many seconds to
    /// arrive is refused; an event reader that takes nothing for this long
    /// is dropped.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    read_timeout: u64,
    /// Guest instances alive at once, all runs together (the pooling
    /// allocator's size): each live run's agent holds one, each tool call
    /// in flight another [default: --max-runs + 128].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=200_000))]
    max_instances: Option<u32>,
    /// Keep compiled components here [default: $WARDEN_CACHE_DIR/components,
    /// or ~/.cache/warden/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
    /// Be the front end of a cluster: put runs on the JetStream work
    /// queue of this NATS server for `warden worker`s to run, follow their
    /// records and results, and relay their asks to the approvals page
    /// (docs/cluster.md). The workers need the same policy directory.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// With --nats: copies JetStream keeps of each of warden's streams
    /// (as `warden worker --replicas`).
    #[arg(long, default_value_t = 1, requires = "nats",
          value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
    /// With --nats: seconds a run may wait with no live worker holding it
    /// (still queued, or its workers died and JetStream gave it up) before
    /// it is withdrawn and fails saying why; 0: wait forever.
    #[arg(long, value_name = "SECS", default_value_t = 3600, requires = "nats")]
    queue_timeout: u64,
    /// With --nats: the workers' `--ack-wait`. A run whose claim was not
    /// renewed for this long belongs to a dead worker, and may be withdrawn
    /// when it is cancelled or waited past --queue-timeout.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "nats",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    worker_ack_wait: u64,
    /// Most asks waiting for a person at once, all runs together (each
    /// run's own bound is its policy's `[approvals] max_pending`); past it
    /// an ask is refused as unanswered.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_asks: u64,
    /// Most asks of one token's runs waiting on the desk at once, so one
    /// token cannot fill it for the others.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_asks_per_token: u64,
}

#[derive(Subcommand)]
enum ServeCommand {
    /// Print the SHA-256 a tokens file holds for a token: of the token read
    /// from stdin (one line), or, with --new, of a new random token, which
    /// is printed first (give it to the client; keep only the hash).
    HashToken {
        /// Make a new token (256 random bits).
        #[arg(long)]
        new: bool,
    },
}

pub(crate) async fn run(args: ServeArgs) -> ExitCode {
    if let Some(ServeCommand::HashToken { new }) = args.command {
        return hash_token(new);
    }
    let Some(policies) = args.policies.clone() else {
        return bad_input("error: --policies DIR is required");
    };
    if !policies.is_dir() {
        return bad_input(format!(
            "error: --policies {}: not a directory",
            policies.display()
        ));
    }
    let address = match listen_address(&args.listen).await {
        Ok(address) => address,
        Err(message) => return bad_input(format!("error: {message}")),
    };
    let tokens = match (&args.tokens, &args.tokens_env, args.insecure_no_auth) {
        (Some(file), _, _) => Tokens::read(file),
        (None, Some(var), _) => match std::env::var(var) {
            Ok(text) => Tokens::parse(&format!("${var}"), &text),
            Err(_) => Err(format!("the environment variable {var} (--tokens-env) is not set")),
        },
        (None, None, true) if address.ip().is_loopback() => Ok(Tokens::insecure(100.0, 1_000_000)),
        (None, None, true) => Err(format!(
            "--insecure-no-auth serves only loopback addresses (127.0.0.1, [::1]); {address} is not one: give --tokens FILE"
        )),
        (None, None, false) => Err(
            "no tokens: give --tokens FILE (make one with `warden serve hash-token --new`), --tokens-env VAR, or --insecure-no-auth on a loopback address".into(),
        ),
    };
    let tokens = match tokens {
        Ok(tokens) => tokens,
        Err(message) => return bad_input(format!("error: {message}")),
    };
    let audit_dir = match args.audit_dir.clone().or_else(super::default_audit_dir) {
        Some(dir) => dir,
        None => {
            return bad_input(
                "error: no place for audit logs: set HOME or XDG_STATE_HOME, or pass --audit-dir DIR",
            );
        }
    };
    if let Err(error) = std::fs::create_dir_all(&audit_dir) {
        return bad_input(format!(
            "error: cannot create the audit directory {}: {error}",
            audit_dir.display()
        ));
    }
    let limits = ServeLimits {
        max_body: args.max_body.max(1024),
        max_live_runs: args.max_runs as usize,
        max_kept_runs: args.max_kept,
        max_kept_bytes: args.max_kept_bytes,
        min_free_disk: args.min_free_disk,
        max_streams: args.max_streams.max(1),
        max_streams_per_token: args.max_streams_per_token.max(1),
        max_connections: args.max_connections.max(1),
        read_timeout: Duration::from_secs(args.read_timeout),
        slow_reader: Duration::from_secs(args.read_timeout),
        ..ServeLimits::default()
    };
    // One audit file and one model connection per live run, one descriptor
    // per client connection: raise the soft limit as far as it goes, and
    // refuse limits it cannot hold.
    match warden::serve::raise_descriptor_limit() {
        Ok((soft, hard)) if soft < limits.descriptors_needed() => {
            return bad_input(format!(
                "error: this process may open {soft} descriptors (hard limit {hard}); --max-runs {} and --max-connections {} need {}: raise `ulimit -n` (the hard limit), or lower them",
                limits.max_live_runs,
                limits.max_connections,
                limits.descriptors_needed()
            ));
        }
        Ok(_) => {}
        Err(error) => eprintln!("warning: cannot read the descriptor limit: {error}"),
    }
    // A front end of a cluster runs nothing here: one instance.
    let max_instances = args.max_instances.unwrap_or_else(|| match args.nats {
        Some(_) => 1,
        None => args.max_runs.saturating_add(128),
    });
    let runtime = match start_runtime_sized(args.cache_dir.clone(), args.no_cache, max_instances) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mut jobs = JobConfig::new(policies.clone(), audit_dir.clone());
    jobs.agent_dir = args.agents.clone();
    jobs.models = args.allow_model.clone();
    jobs.allow_pre_approve = args.allow_pre_approve;
    jobs.max_task_bytes = args.max_task;
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => return bad_input(format!("error: cannot listen on {address}: {error}")),
    };
    let bound = match listener.local_addr() {
        Ok(bound) => bound,
        Err(error) => return bad_input(format!("error: {error}")),
    };
    let auth = if tokens.is_insecure() {
        "NO AUTHENTICATION (--insecure-no-auth)".to_string()
    } else {
        format!("{} tokens", tokens.len())
    };
    // Asks reach a person on the desk: `GET /approvals`, the page at /ui.
    let desk = Desk::new(DeskLimits {
        max_pending: usize::try_from(args.max_asks).unwrap_or(usize::MAX),
        max_per_owner: usize::try_from(args.max_asks_per_token).unwrap_or(usize::MAX),
    });
    let asks = desk.clone();
    let mut state = ServeState::new(Arc::new(runtime), jobs, tokens, limits).with_approver_for(
        Arc::new(move |run: &warden::serve::RunInfo| asks.approver(&run.id, &run.owner)),
    );
    if let Some(url) = &args.nats {
        match cluster(url, usize::from(args.replicas)).await {
            Ok(mut cluster) => {
                cluster.name = format!("serve {}", super::worker::default_name());
                cluster.worker_ack_wait = Duration::from_secs(args.worker_ack_wait);
                cluster.queue_timeout =
                    (args.queue_timeout > 0).then(|| Duration::from_secs(args.queue_timeout));
                state = state.with_cluster(cluster)
            }
            Err(message) => return bad_input(format!("error: {message}")),
        }
    }
    let state = Arc::new(state);
    // Held while this process runs.
    let _audit_lock = match &args.nats {
        Some(_) => match warden::serve::cluster::lock_audit_dir(&audit_dir) {
            Ok(lock) => Some(lock),
            Err(message) => return bad_input(format!("error: {message}")),
        },
        None => None,
    };
    // The runs a front end that stopped was following, on this audit dir.
    match warden::serve::cluster::recover(&state).await {
        Ok(0) => {}
        Ok(followed) => eprintln!(
            "warden serve: following again {followed} runs this front end followed before it stopped"
        ),
        Err(message) => return bad_input(format!("error: {message}")),
    }
    // The desk's API behind the same authentication; the page (static, no
    // data) outside it, since a browser cannot send a bearer token to load it.
    let app = warden::serve::router_with(state.clone(), approvals::web::router(desk))
        .merge(approvals::web::page());
    let runs_where = match &args.nats {
        Some(url) => format!("runs on the workers of {url}"),
        None => format!("{max_instances} instances"),
    };
    eprintln!(
        "warden serve: listening on http://{bound}  ({auth}; policies {}; audit logs {}; up to {} runs live, {runs_where})",
        policies.display(),
        audit_dir.display(),
        state.limits.max_live_runs,
    );
    let served = warden::serve::serve(
        state.clone(),
        listener,
        app,
        Duration::from_secs(10),
        super::mcp::stop_signal(),
    )
    .await;
    match served {
        Ok(()) => {
            eprintln!(
                "warden serve: stopped ({} runs still live)",
                state.live_runs()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

/// The cluster at `url`, its streams made if missing (as a worker makes
/// them), so a run can be queued before any worker started.
async fn cluster(url: &str, replicas: usize) -> Result<warden::serve::cluster::Cluster, String> {
    let client = warden::worker::connect(url)
        .await
        .map_err(|e| format!("--nats: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let limits = warden::worker::StreamLimits {
        replicas,
        ..warden::worker::StreamLimits::default()
    };
    warden::worker::ensure_streams(&js, &limits).await?;
    Ok(warden::serve::cluster::Cluster::new(js))
}

/// `--listen`: an address, or `HOST:PORT` resolved (the first address).
async fn listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(address) = text.parse::<std::net::SocketAddr>() {
        return Ok(address);
    }
    let shown = warden::transcript::clean(text);
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`--listen {shown}` needs a port: e.g. `127.0.0.1:8940`"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`--listen {shown}`: `{port}` is not a port (0-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut resolved = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("`--listen {shown}`: cannot resolve `{host}`: {e}"))?;
    resolved
        .next()
        .ok_or_else(|| format!("`--listen {shown}`: `{host}` resolves to no address"))
}

fn hash_token(new: bool) -> ExitCode {
    let token = if new {
        match auth::new_token() {
            Ok(token) => token,
            Err(message) => return bad_input(format!("error: {message}")),
        }
    } else {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(_) if !line.trim().is_empty() => line.trim().to_string(),
            _ => {
                return bad_input(
                    "error: give the token on stdin (one line), or --new for a new one",
                );
            }
        }
    };
    if new {
        super::print_all(&format!(
            "token:  {token}\nsha256: {}\n",
            auth::hash_token(&token)
        ))
    } else {
        super::print_all(&format!("{}\n", auth::hash_token(&token)))
    }
}
