//! `warden worker`: take runs from NATS JetStream until stopped (SIGTERM,
//! Ctrl-C), finishing the runs in hand.

use clap::Args;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use warden::gate::Approver;
use warden::load::{ComponentSource, PolicyFile};
use warden::provider::{self, KeySource, ProviderOptions};
use warden::run::RunSpec;
use warden::worker::{QueuedJob, Resolve, StreamLimits, Worker, WorkerConfig};

use super::{bad_input, start_runtime_sized};

#[derive(Args)]
pub(crate) struct WorkerArgs {
    /// The NATS server (`nats://host:4222`), with JetStream enabled.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The directory of policies a job names (`"policy": "demo"` is
    /// DIR/demo.toml).
    #[arg(long, value_name = "DIR")]
    policies: PathBuf,
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
    /// Seconds an ask waits for an answer on warden.runs.<id>.approve
    /// before it is denied.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    approval_timeout: u64,
    /// Jobs the queue holds before a submit is refused (applies when this
    /// worker creates the stream).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..))]
    queue_max: i64,
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
    let client = match async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(args.nats.as_str())
        .await
    {
        Ok(client) => client,
        Err(error) => return bad_input(format!("error: cannot connect to {}: {error}", args.nats)),
    };
    let js = async_nats::jetstream::new(client);
    let config = WorkerConfig {
        name: args.name.unwrap_or_else(default_name),
        concurrency: args.concurrency as usize,
        ack_wait: Duration::from_secs(args.ack_wait),
        audit_dir: args.audit_dir,
        approval_timeout: Duration::from_secs(args.approval_timeout),
        ..WorkerConfig::default()
    };
    let limits = StreamLimits {
        queue_max_messages: args.queue_max,
        ..StreamLimits::default()
    };
    let name = config.name.clone();
    let resolver = Arc::new(PolicyDir { dir: policies });
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

fn default_name() -> String {
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

/// A job's request: `{agent, policy, task, model}`, the policy by name
/// from the worker's directory.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    agent: String,
    policy: String,
    task: String,
    #[serde(default)]
    model: Option<String>,
}

struct PolicyDir {
    dir: PathBuf,
}

/// A name in the policy directory: no separators, no `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// A path relative to the policy directory that stays inside it.
fn inside(dir: &Path, relative: &str) -> Option<PathBuf> {
    let path = Path::new(relative);
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(path))
}

impl Resolve for PolicyDir {
    fn resolve(&self, job: &QueuedJob, approver: Arc<dyn Approver>) -> Result<RunSpec, String> {
        let request: Request = serde_json::from_value(job.request.clone())
            .map_err(|e| format!("the job's request is not valid: {e}"))?;
        if !plain_name(&request.policy) {
            return Err(format!(
                "policy `{}`: a policy is named by its file name in the worker's policy directory, without `/` or `..`",
                request.policy.escape_debug()
            ));
        }
        let path = self.dir.join(format!("{}.toml", request.policy));
        let policy = PolicyFile::read(&path).map_err(|e| e.render())?;
        let agent = match request.agent.strip_prefix("builtin:") {
            Some(_) => ComponentSource::parse(&request.agent, &self.dir),
            None => match inside(&self.dir, &request.agent) {
                Some(path) => ComponentSource::parse(&path.display().to_string(), &self.dir),
                None => {
                    return Err(format!(
                        "agent `{}`: a builtin (`builtin:react`) or a path inside the policy directory",
                        request.agent.escape_debug()
                    ));
                }
            },
        };
        let spec = match (&request.model, &policy.policy.model.provider) {
            (Some(spec), _) => spec.clone(),
            (None, Some(choice)) => choice.spec.clone(),
            (None, None) => {
                return Err(format!(
                    "no model: the job names none and {} has no `[model] provider`",
                    policy.name
                ));
            }
        };
        if let Some(file) = spec
            .strip_prefix("scripted:")
            .or_else(|| spec.strip_prefix("replay:"))
            && inside(&self.dir, file).is_none()
        {
            return Err(format!(
                "model `{}`: a script is a path inside the policy directory",
                spec.escape_debug()
            ));
        }
        let provider = provider::from_spec(
            &spec,
            &ProviderOptions {
                key: KeySource::Default,
                limits: policy.policy.model.limits,
                base_dir: self.dir.clone(),
            },
        )
        .map_err(|e| format!("model `{spec}`: {e}"))?;
        Ok(RunSpec {
            policy,
            agent,
            provider,
            task: request.task,
            approver: Some(approver),
            approve: Vec::new(),
            approve_from: Vec::new(),
            replay_tools: None,
        })
    }
}
