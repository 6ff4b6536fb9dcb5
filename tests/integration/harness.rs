//! Shared setup: one runtime and compile cache per test process, policies
//! written inline, audit records kept in memory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use warden::audit::{AuditLog, MemorySink, Record, new_run_id};
use warden::chat::{ChatRequest, ChatResponse};
use warden::load::{ComponentSource, PolicyFile};
use warden::provider::{BoxFuture, ModelProvider, ProviderError, ScriptedProvider};
use warden::run::{RunError, RunReport, RunSpec, run};
use warden::runtime::{Runtime, RuntimeConfig};

/// Paths of every guest, built from source by host/build.rs.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One compile cache for the whole test process (the CLI tests share it, so
/// each component is compiled once).
pub fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The runtime shared by the tests.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache_dir().to_path_buf()),
            max_instances: 50,
        })
        .unwrap()
    })
}

/// A policy from text, with relative paths resolved against the repo.
pub fn policy(text: &str) -> PolicyFile {
    PolicyFile::from_text("test-policy.toml".into(), repo(), text.into())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A scripted model that also keeps every request it was sent.
pub struct Recording {
    script: ScriptedProvider,
    pub requests: Mutex<Vec<ChatRequest>>,
}

impl Recording {
    pub fn new(script: &str) -> Arc<Self> {
        Arc::new(Recording {
            script: ScriptedProvider::parse("test.script.toml", script)
                .unwrap_or_else(|e| panic!("{e}")),
            requests: Mutex::new(Vec::new()),
        })
    }
}

impl ModelProvider for Recording {
    fn default_model(&self) -> &str {
        self.script.default_model()
    }
    fn describe(&self) -> String {
        self.script.describe()
    }
    fn chat<'a>(
        &'a self,
        request: &'a warden::secrets::Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        self.requests.lock().unwrap().push((**request).clone());
        self.script.chat(request)
    }
}

/// A finished run and its audit records.
pub struct Ran {
    pub report: RunReport,
    pub records: Vec<Record>,
}

impl Ran {
    /// Records of `kind` ("tool", "model", ...) and `event`.
    pub fn find(&self, kind: &str, event: &str) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| {
                serde_json::to_value(r.kind).unwrap() == kind
                    && serde_json::to_value(r.event).unwrap() == event
            })
            .collect()
    }

    pub fn answer(&self) -> &str {
        match &self.report.result {
            Ok(answer) => answer,
            Err(failure) => panic!("no answer: {failure}"),
        }
    }
}

/// Run `agent` (a path or `builtin:NAME`) on `task` under `policy_text`.
pub async fn try_run(
    agent: &str,
    policy_text: &str,
    provider: Arc<dyn ModelProvider>,
    task: &str,
) -> (Result<RunReport, RunError>, Vec<Record>) {
    try_run_with(agent, policy_text, provider, task, None, &[]).await
}

/// Like [`try_run_with`], with `--approve-from` sources too.
pub async fn try_run_approving_from(
    agent: &str,
    policy_text: &str,
    provider: Arc<dyn ModelProvider>,
    task: &str,
    approver: Option<Arc<dyn warden::gate::Approver>>,
    approve_from: &[&str],
) -> (Result<RunReport, RunError>, Vec<Record>) {
    let approve_from = approve_from
        .iter()
        .map(|s| warden::policy::explain::ApproveFrom::parse(s).unwrap())
        .collect();
    run_spec(
        agent,
        policy_text,
        provider,
        task,
        approver,
        Vec::new(),
        approve_from,
    )
    .await
}

/// Like [`try_run`], with an approver and pre-approved rules.
pub async fn try_run_with(
    agent: &str,
    policy_text: &str,
    provider: Arc<dyn ModelProvider>,
    task: &str,
    approver: Option<Arc<dyn warden::gate::Approver>>,
    approve: &[&str],
) -> (Result<RunReport, RunError>, Vec<Record>) {
    let approve = approve.iter().map(|r| r.to_string()).collect();
    run_spec(
        agent,
        policy_text,
        provider,
        task,
        approver,
        approve,
        Vec::new(),
    )
    .await
}

async fn run_spec(
    agent: &str,
    policy_text: &str,
    provider: Arc<dyn ModelProvider>,
    task: &str,
    approver: Option<Arc<dyn warden::gate::Approver>>,
    approve: Vec<String>,
    approve_from: Vec<warden::policy::explain::ApproveFrom>,
) -> (Result<RunReport, RunError>, Vec<Record>) {
    let sink = MemorySink::default();
    let log = AuditLog::new(new_run_id()).with_sink(sink.clone());
    let spec = RunSpec {
        policy: policy(policy_text),
        agent: ComponentSource::parse(agent, &repo()),
        provider,
        task: task.into(),
        approver,
        approve,
        approve_from,
        replay_tools: None,
    };
    let result = run(runtime(), spec, log).await;
    (result, sink.records())
}

/// Like [`try_run`], for runs that must start.
pub async fn run_agent(
    agent: &str,
    policy_text: &str,
    provider: Arc<dyn ModelProvider>,
    task: &str,
) -> Ran {
    let (result, records) = try_run(agent, policy_text, provider, task).await;
    let report = result.unwrap_or_else(|e| panic!("the run did not start: {e}"));
    // Every record carries the fields the audit format promises, in order.
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(record.run, report.run_id);
        assert!(!record.rule.is_empty(), "{record:?}");
    }
    Ran { report, records }
}

/// A scripted model that is never called (for agents that need none).
pub fn no_model() -> Arc<dyn ModelProvider> {
    Recording::new("[[turn]]\ntext = \"unused\"\n")
}

/// The attacker agent's report of direct host calls.
pub fn calls_report(ran: &Ran) -> Vec<serde_json::Value> {
    serde_json::from_str(ran.answer()).unwrap()
}

/// Run the react agent under `policy` with a scripted model that asks for
/// `calls` (tool, JSON arguments) in one turn and then answers "done".
/// Returns each call's result as its outcome record holds it (`Err` with
/// the record's detail when the call was refused or failed), and the run.
pub async fn run_calls(
    policy: &str,
    calls: &[(&str, serde_json::Value)],
) -> (Vec<Result<String, String>>, Ran) {
    let calls: Vec<String> = calls
        .iter()
        .map(|(tool, args)| {
            format!(
                "{{ tool = {tool:?}, arguments_json = {:?} }}",
                args.to_string()
            )
        })
        .collect();
    let script = format!(
        "[[turn]]\ncalls = [{}]\n[[turn]]\ntext = \"done\"\n",
        calls.join(", ")
    );
    let ran = run_agent(
        "builtin:react",
        policy,
        Recording::new(&script),
        "use the tools",
    )
    .await;
    let results = ran
        .find("tool", "outcome")
        .into_iter()
        .map(|r| match r.outcome {
            Some(warden::audit::Outcome::Ok) => {
                let data = r.data.as_ref().unwrap();
                assert!(
                    !warden::audit::bound::was_truncated(data, "result"),
                    "the record keeps only the start of this result: raise [limits] audit_field"
                );
                Ok(data["result"].as_str().unwrap().to_string())
            }
            _ => Err(r.detail.clone()),
        })
        .collect();
    (results, ran)
}

/// A policy granting the `probe` guest as a tool, with `grants` (TOML
/// lines, and any further tables) under `[tools.probe]`.
pub fn probe_policy(grants: &str) -> String {
    format!(
        "[model]\nallow = [\"scripted\"]\n\n[tools.probe]\ncomponent = {:?}\n{grants}\n",
        guests::PROBE_TOOL
    )
}

/// Run the probe once with `args` under `policy`: what it reported (JSON),
/// and the run.
pub async fn run_probe(policy: &str, args: serde_json::Value) -> (serde_json::Value, Ran) {
    let (results, ran) = run_calls(policy, &[("probe", args)]).await;
    let result = match &results[0] {
        Ok(text) => serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
        Err(_) => serde_json::Value::Null,
    };
    (result, ran)
}
