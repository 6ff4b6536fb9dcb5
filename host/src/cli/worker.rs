//! `warden worker`: take runs from NATS JetStream until stopped (SIGTERM,
//! Ctrl-C), finishing the runs in hand.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden::job::JobConfig;
use warden::worker::{StreamLimits, Worker, WorkerConfig};

use super::{bad_input, start_runtime_sized};

#[derive(Args)]
pub(crate) struct WorkerArgs {
    /// The NATS server (`nats://host:4222`), with JetStream enabled.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The directory of policies a job names (`"policy": "demo"` is
    /// DIR/demo.toml); model scripts a job names are files in it too.
    #[arg(long, value_name = "DIR")]
    policies: PathBuf,
    /// Agents a job may name besides the built-ins: `NAME` is
    /// `DIR/NAME.wasm`.
    #[arg(long, value_name = "DIR")]
    agents: Option<PathBuf>,
    /// A model spec a job may give besides the policy's own provider,
    /// read as a spec: its provider and base URL are fixed (none named:
    /// the provider's own server), a trailing `*` leaves the model open
    /// (`openai:*`, `openai:gpt-4o*`, `scripted:*`); repeatable. As `warden serve`'s.
    #[arg(long, value_name = "SPEC")]
    allow_model: Vec<String>,
    /// Let jobs carry `approve` and `approve_from` (approved in advance).
    #[arg(long)]
    allow_pre_approve: bool,
    /// Keep a copy of each run's audit log in DIR/<run id>.jsonl
    /// (fsynced before the job is acked).
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// Runs at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Seconds a job may go without a heartbeat before it is given to
    /// another worker (heartbeats go every third of it).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    ack_wait: u64,
    /// Attempts of a run that may end without an end record (their
    /// worker died mid-run) before the next worker gives the job up with
    /// an error result instead of running it again.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    max_attempts: u32,
    /// Seconds an ask waits for an answer on warden.runs.<id>.approve
    /// before it is denied.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    approval_timeout: u64,
    /// Jobs the queue holds before a submit is refused (applies when this
    /// worker creates the stream).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..))]
    queue_max: i64,
    /// Copies JetStream keeps of each of warden's streams: 3 on a cluster
    /// of 3 or more NATS servers survives losing one (applies when this
    /// worker creates the streams; streams with fewer are scaled up).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
    /// This worker's name in claims and results (default: host name and
    /// process id).
    #[arg(long)]
    name: Option<String>,
    /// Instances in the engine's pool (each run takes one, each tool call
    /// one more while it runs).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_instances: u32,
    /// Compile cache directory.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: WorkerArgs) -> ExitCode {
    let policies = match std::fs::canonicalize(&args.policies) {
        Ok(dir) if dir.is_dir() => dir,
        _ => {
            return bad_input(format!(
                "error: --policies {}: not a directory",
                args.policies.display()
            ));
        }
    };
    let runtime = match start_runtime_sized(args.cache_dir, false, args.max_instances) {
        Ok(runtime) => Arc::new(runtime),
        Err(code) => return code,
    };
    let client = match warden::worker::connect(&args.nats).await {
        Ok(client) => client,
        Err(error) => return bad_input(format!("error: --nats: {error}")),
    };
    let js = async_nats::jetstream::new(client);
    let config = WorkerConfig {
        name: args.name.unwrap_or_else(default_name),
        concurrency: args.concurrency as usize,
        ack_wait: Duration::from_secs(args.ack_wait),
        max_attempts: args.max_attempts,
        audit_dir: args.audit_dir,
        approval_timeout: Duration::from_secs(args.approval_timeout),
        ..WorkerConfig::default()
    };
    let limits = StreamLimits {
        queue_max_messages: args.queue_max,
        replicas: usize::from(args.replicas),
        ..StreamLimits::default()
    };
    let name = config.name.clone();
    let mut jobs = JobConfig::new(
        policies,
        config.audit_dir.clone().unwrap_or_else(std::env::temp_dir),
    );
    jobs.agent_dir = args.agents;
    jobs.models = args.allow_model;
    jobs.allow_pre_approve = args.allow_pre_approve;
    let resolver = Arc::new(jobs);
    let worker = match Worker::new(js, runtime, resolver, config, &limits).await {
        Ok(worker) => worker,
        Err(error) => return bad_input(format!("error: {error}")),
    };
    eprintln!("warden worker {name}: taking runs from {}", args.nats);
    match worker.serve(stopped()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => bad_input(format!("error: {error}")),
    }
}

pub(crate) fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("{host}-{}", std::process::id())
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
