//! One run: an agent component on a task, under a policy, with a model
//! provider, recorded to an audit log.

use crate::audit::{AuditLog, Entry, Event, Kind, Outcome};
use crate::capability::{AgentRole, Grantee, GuestState, brief};
use crate::diagnostic::SourceError;
use crate::gate::{Approver, Gate};
use crate::load::{ComponentSource, PolicyFile};
use crate::policy::{Session, Verdict};
use crate::provider::ModelProvider;
use crate::registry::{ToolRegistry, ToolSources};
use crate::runtime::Runtime;
use crate::runtime::limits::{GuestFailure, within_output};
use crate::secrets::Secrets;
use serde_json::json;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The name the model provider's API key is redacted under.
pub const MODEL_KEY_NAME: &str = "model_api_key";

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Note when the process started, so a run can say how long after it the
/// agent's first instruction ran. The `warden` binary calls this with the
/// first instant of `main` (std has no earlier clock of the process; exec,
/// dynamic linking and Rust's own start-up come before it). The first call
/// counts; a process that never calls it records no such time.
pub fn note_process_start(at: Instant) {
    let _ = PROCESS_START.set(at);
}

/// What to run.
pub struct RunSpec {
    /// The policy to enforce.
    pub policy: PolicyFile,
    /// The agent component.
    pub agent: ComponentSource,
    /// Who answers model calls.
    pub provider: Arc<dyn ModelProvider>,
    /// The task given to the agent's `run`.
    pub task: String,
    /// Who is asked about `ask` decisions (a person at a terminal); `None`:
    /// nobody, so they are refused unless pre-approved.
    pub approver: Option<Arc<dyn Approver>>,
    /// Rules approved in advance (`--approve RULE`).
    pub approve: Vec<String>,
    /// Sources whose values approve an ask (`--approve-from SOURCE`): an
    /// ask is approved when every value that triggered it came from one.
    pub approve_from: Vec<crate::policy::explain::ApproveFrom>,
    /// In a replay, the recorded tool results: no tool is called, and no
    /// guest touches anything outside the host (no HTTP, no directory
    /// unless the replay grants the policy's read-only, no inherited
    /// environment).
    pub replay_tools: Option<Arc<crate::replay::ReplayTools>>,
}

/// How a run ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFailure {
    /// The agent returned an error of its own (e.g. it gave up).
    Agent(String),
    /// A limit or trap stopped the agent.
    Stopped(GuestFailure),
    /// The run was cancelled from outside (a client of `warden serve`, a
    /// server shutting down): the reason, in warden's words.
    Cancelled(String),
}

impl crate::secrets::Scrub for RunFailure {
    fn scrub(&mut self, with: &mut crate::secrets::Scrubber<'_>) {
        match self {
            RunFailure::Agent(text) => with.text(text),
            RunFailure::Stopped(failure) => failure.scrub(with),
            RunFailure::Cancelled(_) => {}
        }
    }
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunFailure::Agent(error) => write!(f, "the agent returned an error: {error}"),
            RunFailure::Stopped(failure) => write!(f, "the agent was stopped: {failure}"),
            RunFailure::Cancelled(reason) => write!(f, "the run was cancelled: {reason}"),
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// The run's id (also in every audit record).
    pub run_id: String,
    /// The agent's answer, or why there is none; through the boundary's
    /// redaction (it goes to a terminal), so no secret is in it.
    pub result: Result<String, RunFailure>,
    /// Wall time of the whole run, loading included.
    pub elapsed: Duration,
    /// Budgets used.
    pub session: Session,
    /// Log lines dropped past the log budget.
    pub logs_dropped: u64,
    /// Whether the agent's compiled form came from the cache.
    pub agent_cache_hit: bool,
    /// How long loading the agent component took.
    pub agent_load_time: Duration,
    /// From the process's start (see [`note_process_start`]) to the
    /// instant the agent's `run` export was entered: how long warden took
    /// to start the agent. `None` when the start was not noted, or the
    /// agent never ran.
    pub first_instruction: Option<Duration>,
    /// The hash of the run's last audit record: keep it to check the log
    /// later (`warden audit verify --head`).
    pub audit_head: String,
}

impl RunReport {
    /// What the run used: calls, refusals, tokens, cost, labels, time (as
    /// `warden run --json`, `GET /runs/{id}` and a worker's result show it).
    pub fn summary(&self) -> serde_json::Value {
        let session = &self.session;
        serde_json::json!({
            "model_calls": session.model_calls,
            "tool_calls": session.tool_calls.values().map(|n| u64::from(*n)).sum::<u64>(),
            "refused": session.refusals,
            "tokens": session.tokens,
            "cost_usd": session.cost_usd,
            "labels": session.labels,
            "elapsed_ms": self.elapsed.as_millis() as u64,
        })
    }
}

/// Why a run could not start, or had to stop without a record.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The agent component is missing or not an agent.
    #[error("{0}")]
    Agent(String),
    /// A component named by the policy could not be loaded.
    #[error("{0}")]
    Policy(SourceError),
    /// The audit log could not be written; nothing more may happen.
    #[error("the audit log could not be written: {0}")]
    Audit(#[from] std::io::Error),
}

impl RunError {
    /// What the one who submitted the run is told (`warden serve`, a
    /// worker's result): a tool that cannot be loaded is rendered with the
    /// policy's text and the server's paths, for the operator's log (and
    /// the run's end record), not the client.
    pub fn for_client(&self) -> String {
        match self {
            RunError::Policy(_) => {
                "a tool of the policy cannot be loaded (the server's log says why)".into()
            }
            other => other.to_string(),
        }
    }
}

/// Run `spec` on `runtime`, recording to `audit`.
#[tracing::instrument(level = "debug", name = "run", skip_all, fields(
    run = %audit.run(),
    agent = %crate::transcript::name(&spec.agent.to_string()),
))]
pub async fn run(runtime: &Runtime, spec: RunSpec, audit: AuditLog) -> Result<RunReport, RunError> {
    run_until(runtime, spec, audit, std::future::pending()).await
}

/// [`run`], stopped when `cancel` completes (with the reason): the agent's
/// instance is dropped at once, wherever it is (waiting on the model, in a
/// tool call), and the end record says the run was cancelled
/// (`data.cancelled`). A `cancel` that completed before the agent started
/// stops it before its first instruction.
pub async fn run_until(
    runtime: &Runtime,
    spec: RunSpec,
    audit: AuditLog,
    cancel: impl std::future::Future<Output = String> + Send,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let agent_name = spec.agent.short_name();
    let (bytes, sha256) = spec
        .agent
        .read_hashed()
        .map_err(|e| RunError::Agent(format!("the agent cannot be loaded: {e}")))?;
    let mut loaded = runtime
        .load_hashed(&spec.agent.to_string(), &bytes, &sha256)
        .map_err(|e| RunError::Agent(format!("{e:#}")))?;
    // Reading and hashing included, as a file's load time always was.
    loaded.load_time = started.elapsed();
    let pre = runtime.agent_pre(&loaded.component).map_err(|e| {
        RunError::Agent(format!(
            "`{}` is not a warden agent: {e:#}\nan agent exports `run` (world warden:sandbox/agent)",
            spec.agent
        ))
    })?;

    let policy = spec.policy.policy.clone();
    let mut secrets = Secrets::load(&spec.policy);
    if let Some(key) = spec.provider.api_key() {
        secrets.add(MODEL_KEY_NAME, key.expose());
    }
    let gate = Gate::new(policy.clone(), audit)
        .with_approvals(spec.approver.clone(), &spec.approve)
        .with_approve_from(spec.approve_from.clone())
        .with_secrets(secrets)
        .with_replay(spec.replay_tools.clone());
    let opening = Opening {
        subject: agent_name.clone(),
        detail: brief(&spec.task, 200),
        data: json!({
            "agent": { "source": spec.agent.to_string(), "sha256": loaded.sha256 },
            "model": spec.provider.describe(),
            "task": spec.task,
        }),
    };
    let (gate, tools) = open_session(runtime, &spec.policy, gate, opening).await?;
    // After the first record: filling the index is recorded, and must not
    // come before the run's start.
    gate.observe_task(&spec.task)?;

    let limits = policy.limits.clone();
    let registry = tools.clone();
    let role = AgentRole {
        provider: spec.provider.clone(),
        tools,
        replay: spec.replay_tools.clone(),
    };
    // The agent's instance counts against the pool like a tool call's, so
    // that tool calls waiting for a slot can get one; it never waits.
    let slot = runtime.instance_slots().try_take();
    let state = match slot.as_ref().ok_or_else(|| {
        format!(
            "no instance is free for the agent: all {} instances of the engine are in use by other runs and calls (RuntimeConfig::max_instances, `warden mcp --max-instances`); run fewer at once, or raise it",
            runtime.instance_slots().total()
        )
    }).and_then(|_| GuestState::new(
        agent_name.clone(),
        gate.clone(),
        &limits,
        role,
        Grantee::Agent,
    )) {
        Ok(state) => state,
        Err(message) => {
            end_record(
                &gate,
                &agent_name,
                Outcome::Failed,
                message.clone(),
                json!({}),
            )?;
            return Err(RunError::Agent(message));
        }
    };
    let stderr = state.stderr();
    let mut store = state.into_store(runtime.engine());
    let mut entered = None;
    let agent_run = GuestState::<AgentRole>::guarded(&stderr, limits.wall, async {
        let agent = pre.instantiate_async(&mut store).await?;
        entered = Some(Instant::now());
        agent.call_run(&mut store, &spec.task).await
    });
    // Dropping the agent's call mid-way is what the wall limit does too.
    let outcome = tokio::select! {
        biased;
        reason = cancel => Err(reason),
        outcome = agent_run => Ok(outcome),
    };
    let first_instruction = entered
        .zip(PROCESS_START.get())
        .map(|(at, start)| at - *start);
    let result = match outcome.map(|outcome| within_output(outcome, limits.output)) {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(error))) => Err(RunFailure::Agent(error)),
        Ok(Err(failure)) => Err(RunFailure::Stopped(failure)),
        Err(reason) => Err(RunFailure::Cancelled(reason)),
    };
    // The answer leaves the sandbox for a terminal or a caller: the task
    // may have carried a secret the agent repeats.
    let result = gate.clean(result).into_inner();
    let failure = match &result {
        Err(RunFailure::Stopped(failure)) => Some(failure),
        _ => None,
    };
    store.data().finish(failure)?;
    drop(store);
    drop(slot);
    // Per-run tool instances end with the run, before its end record.
    registry.kept().close(&gate)?;

    let session = gate.session();
    let logs_dropped = gate.logs_dropped();
    let elapsed = started.elapsed();
    let (outcome, detail, data) = match &result {
        Ok(answer) => (Outcome::Ok, brief(answer, 200), json!({ "answer": answer })),
        Err(failure @ RunFailure::Agent(_)) => (
            Outcome::Failed,
            failure.to_string(),
            json!({ "error": failure.to_string() }),
        ),
        Err(failure @ RunFailure::Stopped(_)) => (
            Outcome::Trap,
            failure.to_string(),
            json!({ "error": failure.to_string() }),
        ),
        Err(failure @ RunFailure::Cancelled(_)) => (
            Outcome::Failed,
            failure.to_string(),
            json!({ "error": failure.to_string(), "cancelled": true }),
        ),
    };
    let mut data = data;
    summary(&gate, elapsed, &mut data);
    if let Some(first) = first_instruction {
        data["first_instruction_us"] = json!(first.as_micros() as u64);
    }
    end_record(&gate, &agent_name, outcome, detail, data)?;
    let audit_head = gate.finish_audit()?;

    Ok(RunReport {
        audit_head,
        run_id: gate.run_id().to_string(),
        result,
        elapsed,
        session,
        logs_dropped,
        agent_cache_hit: loaded.cache_hit,
        agent_load_time: loaded.load_time,
        first_instruction,
    })
}

/// The first record of a session: who it is for and what it was given.
pub(crate) struct Opening {
    /// The record's subject (the agent's name, `mcp`).
    pub subject: String,
    /// One line saying what the session is for.
    pub detail: String,
    /// A JSON object; the policy's, the secrets' and the components'
    /// identities are added to it.
    pub data: serde_json::Value,
}

/// Start a session (a run, or an MCP server's life) on `gate`: read every
/// tool component and check its pin, write the first record naming the
/// policy, the secrets loaded and every component's hash, load the tools,
/// and record what is granted. A tool that cannot be loaded ends the
/// session with a failed end record.
pub(crate) async fn open_session(
    runtime: &Runtime,
    policy: &PolicyFile,
    gate: Gate,
    opening: Opening,
) -> Result<(Arc<Gate>, Arc<ToolRegistry>), RunError> {
    let sources = ToolSources::read(policy, runtime.downloader()).await;
    let component_hashes = sources
        .as_ref()
        .map(ToolSources::hashes)
        .unwrap_or_default();
    let gate = Arc::new(gate.with_dirs(policy.dirs.clone()));
    let components = component_hashes
        .iter()
        .map(|(source, sha256)| json!({ "source": source, "sha256": sha256 }))
        .collect();
    let subject = opening.subject.clone();
    record_opening(&gate, policy, opening, components)?;

    let registry = match sources {
        Ok(sources) => ToolRegistry::load_sources(runtime, policy, sources, &gate).await,
        Err(error) => Err(error),
    };
    let tools = match registry {
        Ok(tools) => Arc::new(tools),
        Err(error) => {
            end_record(&gate, &subject, Outcome::Failed, error.render(), json!({}))?;
            return Err(RunError::Policy(error));
        }
    };
    record_granted(&gate, &tools)?;
    Ok((gate, tools))
}

/// The first record of a session: `opening`, the policy's identity, the
/// secrets loaded and missing, and `components` (what is known of the tool
/// components: their sources, and their hashes once read).
pub(crate) fn record_opening(
    gate: &Gate,
    policy: &PolicyFile,
    opening: Opening,
    components: serde_json::Value,
) -> std::io::Result<()> {
    let secrets = gate.secrets();
    let mut data = opening.data;
    data["policy"] = json!({ "file": policy.name, "sha256": policy.sha256 });
    data["secrets"] = json!({
        "loaded": secrets.names(),
        "missing": secrets.missing().iter().map(|(name, why)| json!({ "name": name, "why": why })).collect::<Vec<_>>(),
    });
    data["components"] = components;
    gate.note(Entry {
        kind: Kind::Run,
        event: Event::Decision,
        subject: opening.subject,
        decision: Verdict::Allow,
        rule: "policy".into(),
        detail: opening.detail,
        outcome: None,
        data: Some(data),
    })
    .map(drop)
}

/// The record of the tools loaded: which are granted, and every
/// component's source and hash.
pub(crate) fn record_granted(gate: &Gate, tools: &ToolRegistry) -> std::io::Result<()> {
    gate.note(Entry {
        kind: Kind::Run,
        event: Event::Decision,
        subject: "tools".into(),
        decision: Verdict::Allow,
        rule: "policy".into(),
        detail: format!(
            "granted: {}",
            tools
                .granted()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        outcome: None,
        data: Some(json!({
            "components": tools.components().iter().map(|c| json!({
                "source": c.source, "sha256": c.sha256,
            })).collect::<Vec<_>>(),
            "tools": granted_tools(gate, tools),
        })),
    })
    .map(drop)
}

/// Each granted tool's component (a path made absolute, so `warden policy
/// learn` can name it from anywhere), its SHA-256, and its directories
/// (absolute, with their modes): what a learned policy repeats, since a
/// tool's file access is not decided call by call.
fn granted_tools(gate: &Gate, tools: &ToolRegistry) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, component) in tools.granted_components() {
        let source = &component.source;
        let source = if source.starts_with("builtin:") || crate::remote::is_url(source) {
            source.clone()
        } else {
            let path = std::path::Path::new(source);
            std::path::absolute(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string()
        };
        let fs: serde_json::Map<String, serde_json::Value> = gate
            .policy()
            .tools
            .get(name)
            .map(|t| t.grants.fs.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|mount| {
                let dir = gate.dir_of(mount.place.file).join(&mount.dir);
                let dir = std::path::absolute(&dir).unwrap_or(dir);
                (
                    mount.guest_path.clone(),
                    json!({
                        "dir": dir.display().to_string(),
                        "mode": match mount.mode {
                            crate::policy::MountMode::Ro => "ro",
                            crate::policy::MountMode::Rw => "rw",
                        },
                    }),
                )
            })
            .collect();
        out.insert(
            name.to_string(),
            json!({ "component": source, "sha256": component.sha256, "fs": fs }),
        );
    }
    serde_json::Value::Object(out)
}

/// The session's numbers for its end record: decisions, calls, budgets.
pub(crate) fn summary(gate: &Gate, elapsed: Duration, data: &mut serde_json::Value) {
    let session = gate.session();
    data["elapsed_ms"] = json!(elapsed.as_millis() as u64);
    data["model_calls"] = json!(session.model_calls);
    data["tool_calls"] = json!(session.tool_calls);
    data["logs_dropped"] = json!(gate.logs_dropped());
    data["ledger"] = json!(gate.ledger());
    data["decisions"] = json!(gate.tally());
    data["tokens"] = json!(session.tokens);
    data["cost_usd"] = json!(session.cost_usd);
    data["labels"] = json!(session.labels);
    let model = &gate.policy().model;
    data["budgets"] = json!({
        "max_calls": model.max_calls,
        "max_tokens": model.max_tokens,
        "max_cost_usd": model.max_cost_usd,
    });
}

pub(crate) fn end_record(
    gate: &Gate,
    agent: &str,
    outcome: Outcome,
    detail: String,
    data: serde_json::Value,
) -> std::io::Result<()> {
    gate.note(Entry {
        kind: Kind::Run,
        event: Event::Outcome,
        subject: agent.to_string(),
        decision: Verdict::Allow,
        rule: "policy".into(),
        detail,
        outcome: Some(outcome),
        data: Some(data),
    })
    .map(drop)
}
