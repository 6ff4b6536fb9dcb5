//! The self-contained job: what a client asks to run ([`RunRequest`]: the
//! JSON body of `warden serve`'s `POST /runs`, and the message a
//! `warden worker` takes from its queue), and how a server's configuration
//! ([`JobConfig`]) turns it into the ingredients of a [`RunSpec`].
//!
//! Threat model: every field of a request is written by a client the server
//! does not trust beyond its token. A request names things (a policy, an
//! agent, a model); it never gives a path. Names are checked against a
//! narrow alphabet before any file is touched, resolved only inside the
//! directories the operator configured, and checked again after symbolic
//! links are followed, so `../../etc/x`, `/etc/shadow`, a symlink out of
//! the policy directory or `scripted:/etc/shadow` all fail with an error
//! naming the field. A model spec that is not the policy's own provider
//! must be allowed by the operator (`--allow-model`): a client cannot point
//! the server's API key, or its network position, at a URL of its choosing.
//! Every field is bounded; unknown fields are refused. Nothing here depends
//! on HTTP: the queue runs exactly the same requests.

use crate::audit::{AuditLog, JsonlFile};
use crate::gate::Approver;
use crate::load::{ComponentSource, PolicyFile};
use crate::policy::explain::ApproveFrom;
use crate::provider::{self, KeySource, ModelProvider, ProviderOptions, Spec};
use crate::run::RunSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest policy or agent name, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest model spec, in bytes.
pub const MAX_MODEL_SPEC: usize = 512;
/// Most `approve` or `approve_from` entries, and the longest of each.
pub const MAX_APPROVE: usize = 32;
/// The longest `approve` or `approve_from` entry, in bytes.
pub const MAX_APPROVE_ENTRY: usize = 256;
/// The default bound on a task ([`JobConfig::max_task_bytes`]).
pub const DEFAULT_MAX_TASK: usize = 64 << 10;

/// A run a client asks for. Unknown fields are refused.
///
/// ```json
/// {"agent": "builtin:react", "policy": "demo", "task": "What is 6 * 7?", "model": "scripted:demo.script.toml"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The agent: `builtin:NAME` (a bundled agent the server allows), or
    /// the name of a component in the server's agents directory
    /// (`NAME` is `DIR/NAME.wasm`). Never a path.
    pub agent: String,
    /// The policy, by name: `NAME` is `POLICY_DIR/NAME.toml`.
    pub policy: String,
    /// The task given to the agent.
    pub task: String,
    /// Who answers the agent's model calls; absent: the policy's `[model]
    /// provider`. Any other spec must be allowed by the server
    /// (`--allow-model`); `scripted:FILE` and `replay:FILE` name a file
    /// inside the policy directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The run's id; absent: a new one. Set by a front end that enqueues
    /// (so a redelivered job keeps its id); `warden serve` refuses it from
    /// clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Rules approved in advance (as `warden run --approve`); refused
    /// unless the server allows pre-approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approve: Vec<String>,
    /// Sources whose values approve an ask (as `--approve-from`); refused
    /// unless the server allows pre-approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approve_from: Vec<String>,
}

impl RunRequest {
    /// Parse a request from JSON; the error names the field (or the line
    /// and column) and what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, JobError> {
        serde_json::from_slice(bytes).map_err(|error| {
            let message = error.to_string();
            // `missing field `policy``: that field; anything else (an
            // unknown field, a wrong type, broken JSON) is the body's.
            let field = [
                "agent",
                "policy",
                "task",
                "model",
                "run_id",
                "approve",
                "approve_from",
            ]
            .into_iter()
            .find(|f| message.starts_with(&format!("missing field `{f}`")))
            .unwrap_or("body");
            JobError::invalid(
                field,
                format!(
                    "the request is not a run request: {message}; send a JSON object with `agent`, `policy` and `task` (and optionally `model`, `approve`, `approve_from`)"
                ),
            )
        })
    }
}

/// What kind of refusal a [`JobError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobErrorKind {
    /// The request is malformed (a bad name, a field too long).
    Invalid,
    /// It names a policy or agent the server does not have.
    NotFound,
    /// It asks for something the server does not allow (a model spec,
    /// pre-approval).
    Forbidden,
    /// The server's own configuration is broken (a policy that does not
    /// load): the operator must fix it.
    Server,
}

/// Why a request cannot be run: the field, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct JobError {
    /// The request's field at fault (`policy`, `model`, ...; `body` for the
    /// whole).
    pub field: &'static str,
    /// What kind of refusal.
    pub kind: JobErrorKind,
    /// What is wrong and what to do; any value of the client's in it is
    /// cut short and quoted.
    pub message: String,
}

impl JobError {
    fn new(field: &'static str, kind: JobErrorKind, message: String) -> Self {
        JobError {
            field,
            kind,
            message,
        }
    }
    fn invalid(field: &'static str, message: String) -> Self {
        Self::new(field, JobErrorKind::Invalid, message)
    }
    fn not_found(field: &'static str, message: String) -> Self {
        Self::new(field, JobErrorKind::NotFound, message)
    }
    fn forbidden(field: &'static str, message: String) -> Self {
        Self::new(field, JobErrorKind::Forbidden, message)
    }
    fn server(field: &'static str, message: String) -> Self {
        Self::new(field, JobErrorKind::Server, message)
    }
}

/// What a server may run, and where: set by its operator, never by a
/// client.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Policies are `policy_dir/NAME.toml`.
    pub policy_dir: PathBuf,
    /// Agents by name are `agent_dir/NAME.wasm`; `None`: only built-ins.
    pub agent_dir: Option<PathBuf>,
    /// The bundled agents a request may name (`builtin:NAME`).
    pub builtin_agents: Vec<String>,
    /// Model specs a request may give besides the policy's own provider:
    /// each is the exact spec, or ends in `*` to allow every spec that
    /// starts with the rest (`openai:gpt-4o*`,
    /// `openai-compatible:http://127.0.0.1:8080/v1#*`, `scripted:*`).
    pub models: Vec<String>,
    /// Each run's audit log is `audit_dir/RUN_ID.jsonl`.
    pub audit_dir: PathBuf,
    /// Whether requests may carry `approve` and `approve_from`.
    pub allow_pre_approve: bool,
    /// The longest task, in bytes.
    pub max_task_bytes: usize,
}

impl JobConfig {
    /// A configuration serving the policies of `policy_dir`, the bundled
    /// `react` agent, each policy's own provider only, audit logs to
    /// `audit_dir`.
    pub fn new(policy_dir: impl Into<PathBuf>, audit_dir: impl Into<PathBuf>) -> Self {
        JobConfig {
            policy_dir: policy_dir.into(),
            agent_dir: None,
            builtin_agents: vec!["react".into()],
            models: Vec::new(),
            audit_dir: audit_dir.into(),
            allow_pre_approve: false,
            max_task_bytes: DEFAULT_MAX_TASK,
        }
    }

    /// Check `request` and resolve what it names: the policy file read and
    /// validated, the agent, the model provider built, the audit log's
    /// path. Nothing is run and no audit file is created.
    pub fn resolve(&self, request: &RunRequest) -> Result<Job, JobError> {
        let run_id = match &request.run_id {
            Some(id) => {
                check_name("run_id", id, "a run id")?;
                id.clone()
            }
            None => crate::audit::new_run_id(),
        };
        if request.task.len() > self.max_task_bytes {
            return Err(JobError::invalid(
                "task",
                format!(
                    "the task is {} bytes; this server takes at most {}: shorten it",
                    request.task.len(),
                    self.max_task_bytes
                ),
            ));
        }
        let (approve, approve_from) = self.approvals(request)?;
        let (policy_path, policy) = self.policy(&request.policy)?;
        let agent = self.agent(&request.agent)?;
        let (model, provider) = self.provider(request.model.as_deref(), &policy, &policy_path)?;
        Ok(Job {
            audit_path: self.audit_dir.join(format!("{run_id}.jsonl")),
            run_id,
            policy_name: request.policy.clone(),
            policy,
            agent_name: request.agent.clone(),
            agent,
            model,
            provider,
            task: request.task.clone(),
            approve,
            approve_from,
        })
    }

    fn approvals(&self, request: &RunRequest) -> Result<(Vec<String>, Vec<ApproveFrom>), JobError> {
        let asked = !request.approve.is_empty() || !request.approve_from.is_empty();
        if asked && !self.allow_pre_approve {
            let field = if request.approve.is_empty() {
                "approve_from"
            } else {
                "approve"
            };
            return Err(JobError::forbidden(
                field,
                "this server does not take approvals in advance: an `ask` goes to a person (the operator can allow it with --allow-pre-approve)".into(),
            ));
        }
        for (field, list) in [
            ("approve", &request.approve),
            ("approve_from", &request.approve_from),
        ] {
            if list.len() > MAX_APPROVE {
                return Err(JobError::invalid(
                    field,
                    format!("at most {MAX_APPROVE} entries, not {}", list.len()),
                ));
            }
            if let Some(long) = list.iter().find(|e| e.len() > MAX_APPROVE_ENTRY) {
                return Err(JobError::invalid(
                    field,
                    format!(
                        "an entry is {} bytes, more than {MAX_APPROVE_ENTRY}: `{}`",
                        long.len(),
                        shown(long)
                    ),
                ));
            }
        }
        let from = request
            .approve_from
            .iter()
            .map(|text| {
                ApproveFrom::parse(text).map_err(|e| {
                    JobError::invalid("approve_from", format!("`{}`: {e}", shown(text)))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((request.approve.clone(), from))
    }

    /// `POLICY_DIR/NAME.toml`, inside the directory after links are
    /// followed, read and validated.
    fn policy(&self, name: &str) -> Result<(PathBuf, PolicyFile), JobError> {
        if let Some(stem) = name.strip_suffix(".toml")
            && check_name("policy", stem, "a policy name").is_ok()
        {
            return Err(JobError::invalid(
                "policy",
                format!("give the policy's name without `.toml`: `{}`", shown(stem)),
            ));
        }
        check_name("policy", name, "a policy name")?;
        let path = inside(
            "policy",
            &self.policy_dir,
            &format!("{name}.toml"),
            "policy",
        )?;
        match PolicyFile::read(&path) {
            Ok(policy) => Ok((path, policy)),
            Err(error) => {
                tracing::warn!(policy = name, "a policy does not load:\n{error}");
                Err(JobError::server(
                    "policy",
                    format!(
                        "the policy `{name}` does not load (the server's log says why): its operator must fix it"
                    ),
                ))
            }
        }
    }

    fn agent(&self, reference: &str) -> Result<ComponentSource, JobError> {
        if let Some(name) = reference.strip_prefix("builtin:") {
            check_name("agent", name, "a built-in agent's name")?;
            if !self.builtin_agents.iter().any(|b| b == name) {
                return Err(JobError::not_found(
                    "agent",
                    format!(
                        "this server runs no built-in agent `{name}`; it runs: {}",
                        list_or_none(
                            &self
                                .builtin_agents
                                .iter()
                                .map(|b| format!("builtin:{b}"))
                                .collect::<Vec<_>>()
                        )
                    ),
                ));
            }
            return Ok(ComponentSource::Builtin(name.to_string()));
        }
        check_name("agent", reference, "an agent's name").map_err(|mut error| {
            error.message.push_str(
                "; an agent is `builtin:NAME` or the name of a component in the server's agents directory, never a path",
            );
            error
        })?;
        let Some(dir) = &self.agent_dir else {
            return Err(JobError::not_found(
                "agent",
                format!(
                    "this server has no agents directory, so `{reference}` names no agent; it runs: {}",
                    list_or_none(
                        &self
                            .builtin_agents
                            .iter()
                            .map(|b| format!("builtin:{b}"))
                            .collect::<Vec<_>>()
                    )
                ),
            ));
        };
        let path = inside("agent", dir, &format!("{reference}.wasm"), "agent")?;
        Ok(ComponentSource::File(path))
    }

    /// The request's model spec (allowed by the server) or the policy's
    /// provider, built. File names in scripted and replay specs stay
    /// inside the policy directory.
    fn provider(
        &self,
        spec: Option<&str>,
        policy: &PolicyFile,
        policy_path: &Path,
    ) -> Result<(String, Arc<dyn ModelProvider>), JobError> {
        let limits = policy.policy.model.limits;
        let own = policy.policy.model.provider.as_ref();
        let policy_stem = || {
            policy_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let (spec, options, built_spec) = match (spec, own) {
            // The operator's own choice, read as `warden run` reads it.
            (None, Some(choice)) => own_provider(policy, choice, limits),
            (Some(spec), Some(choice)) if choice.spec == spec => {
                own_provider(policy, choice, limits)
            }
            (Some(spec), _) => {
                if spec.len() > MAX_MODEL_SPEC {
                    return Err(JobError::invalid(
                        "model",
                        format!(
                            "the spec is {} bytes, more than {MAX_MODEL_SPEC}",
                            spec.len()
                        ),
                    ));
                }
                if !self.models.iter().any(|p| spec_matches(p, spec)) {
                    return Err(JobError::forbidden(
                        "model",
                        format!(
                            "this server does not allow the model `{}`: leave `model` out to use the policy's provider, or ask the operator to allow it (--allow-model); allowed: {}",
                            shown(spec),
                            list_or_none(&self.models)
                        ),
                    ));
                }
                let parsed = provider::parse_spec(spec).map_err(|e| {
                    JobError::invalid("model", format!("`{}`: {}", shown(spec), shown(&e)))
                })?;
                // A script or recording: a file inside the policy
                // directory, whatever pattern allowed the spec.
                let (base_dir, built) = match &parsed {
                    Spec::Scripted(file) | Spec::Replay(file) => {
                        let path = inside("model", &self.policy_dir, file, "model script")?;
                        let scheme = if matches!(parsed, Spec::Scripted(_)) {
                            "scripted"
                        } else {
                            "replay"
                        };
                        let name = path
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        (
                            path.parent().map(Path::to_path_buf).unwrap_or_default(),
                            format!("{scheme}:{name}"),
                        )
                    }
                    Spec::Http { .. } => (PathBuf::new(), spec.to_string()),
                };
                let key = client_key(&parsed);
                if let (Spec::Http { api, base, .. }, KeySource::None) = (&parsed, &key)
                    && *api == provider::Api::Anthropic
                {
                    return Err(JobError::forbidden(
                        "model",
                        format!(
                            "anthropic at {} would be sent no API key: a request's own spec gets the provider's key only at the provider's own server; leave `model` out to use the policy's provider",
                            shown(base.as_str())
                        ),
                    ));
                }
                let options = ProviderOptions {
                    key,
                    limits,
                    base_dir,
                };
                (spec.to_string(), options, built)
            }
            (None, None) => {
                return Err(JobError::invalid(
                    "model",
                    format!(
                        "the policy `{}` names no provider (`[model] provider`): give `model`",
                        policy_stem()
                    ),
                ));
            }
        };
        match provider::from_spec(&built_spec, &options) {
            Ok(provider) => Ok((spec, provider)),
            Err(error) => {
                tracing::warn!(model = %spec, "a model provider cannot be built: {error}");
                let message = match error {
                    provider::ProviderSpecError::Script(_) => format!(
                        "the model script of `{}` is invalid (the server's log says where)",
                        shown(&spec)
                    ),
                    provider::ProviderSpecError::Read { what, .. } => {
                        format!("{what} of `{}` cannot be read", shown(&spec))
                    }
                    other => shown(&other.to_string()),
                };
                Err(JobError::server("model", message))
            }
        }
    }
}

/// The policy's own provider, its key and files read as `warden run`
/// reads them: (spec, options, spec to build).
fn own_provider(
    policy: &PolicyFile,
    choice: &crate::policy::ProviderChoice,
    limits: crate::policy::ProviderLimits,
) -> (String, ProviderOptions, String) {
    let key = match (&choice.api_key_env, &choice.api_key_file) {
        (Some(var), _) => KeySource::Env(var.clone()),
        (None, Some((file, place))) => KeySource::File(policy.dir_of(place.file).join(file)),
        (None, None) => KeySource::Default,
    };
    let options = ProviderOptions {
        key,
        limits,
        base_dir: policy.dir_of(choice.place.file).to_path_buf(),
    };
    (choice.spec.clone(), options, choice.spec.clone())
}

/// The key a request's own spec gets: the provider's usual one only at
/// the provider's own server. A base URL a client named gets no key,
/// whatever pattern allowed it.
fn client_key(spec: &Spec) -> KeySource {
    match spec {
        Spec::Http { api, base, .. } if !api.is_own_base(base) => KeySource::None,
        _ => KeySource::Default,
    }
}

/// Whether `spec` is allowed by `pattern` (an `--allow-model`). Both are
/// read as specs, not as text: the provider and the base URL must be the
/// pattern's own (a pattern that names no base URL allows only the
/// provider's own server), and only the model, or a script's file name,
/// may be left open by a trailing `*`, or the port of a base URL written
/// `API:SCHEME://HOST:*`. So `openai:*` allows every OpenAI model at
/// api.openai.com and never `openai:https://elsewhere/v1#m`.
pub fn spec_matches(pattern: &str, spec: &str) -> bool {
    let Ok(spec) = provider::parse_spec(spec) else {
        return false;
    };
    let (fixed, open) = match pattern.strip_suffix('*') {
        Some(fixed) => (fixed, true),
        None => (pattern, false),
    };
    let allows = |have: &str, want: &str| {
        if open {
            have.starts_with(want)
        } else {
            have == want
        }
    };
    match spec {
        Spec::Scripted(file) => fixed
            .strip_prefix("scripted:")
            .is_some_and(|want| allows(&file, want)),
        Spec::Replay(file) => fixed
            .strip_prefix("replay:")
            .is_some_and(|want| allows(&file, want)),
        Spec::Http { api, base, model } => {
            // `API:SCHEME://HOST:*`: any port of that host, any model (a
            // model server on loopback whose port is not known ahead).
            if open && fixed.ends_with(':') && fixed.contains("://") && !fixed.contains('#') {
                let head = &fixed[..fixed.len() - 1];
                return match provider::parse_spec(&format!("{head}/#m")) {
                    Ok(Spec::Http {
                        api: their_api,
                        base: their_base,
                        ..
                    }) => {
                        their_api == api
                            && their_base.scheme() == base.scheme()
                            && their_base.host() == base.host()
                            && base.username().is_empty()
                            && base.password().is_none()
                    }
                    _ => false,
                };
            }
            // The pattern's model part is after its base URL's `#`, or
            // after the provider's `:` when it names no base URL.
            let split = match fixed.rfind('#') {
                Some(at) if fixed[..at].contains("://") => at + 1,
                _ => fixed.find(':').map_or(fixed.len(), |at| at + 1),
            };
            let (head, want) = fixed.split_at(split);
            // Read the pattern's provider and base with a stand-in model.
            match provider::parse_spec(&format!("{head}m")) {
                Ok(Spec::Http {
                    api: their_api,
                    base: their_base,
                    ..
                }) => their_api == api && their_base == base && allows(&model, want),
                _ => false,
            }
        }
    }
}

/// A request's run, resolved: what [`RunSpec`] needs, and where its audit
/// log goes.
pub struct Job {
    /// The run's id.
    pub run_id: String,
    /// The policy's name, as the request gave it.
    pub policy_name: String,
    /// The policy, read and validated.
    pub policy: PolicyFile,
    /// The agent, as the request named it.
    pub agent_name: String,
    /// The agent component.
    pub agent: ComponentSource,
    /// The model spec used (the request's, or the policy's).
    pub model: String,
    /// Who answers the agent's model calls: a provider of this run's own
    /// (a scripted one keeps its place in its script per run).
    pub provider: Arc<dyn ModelProvider>,
    /// The task.
    pub task: String,
    /// Rules approved in advance.
    pub approve: Vec<String>,
    /// Sources that approve an ask.
    pub approve_from: Vec<ApproveFrom>,
    /// `audit_dir/RUN_ID.jsonl`.
    pub audit_path: PathBuf,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("run_id", &self.run_id)
            .field("policy", &self.policy_name)
            .field("agent", &self.agent_name)
            .field("model", &self.model)
            .field("audit_path", &self.audit_path)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// The run's audit log, with `sinks` added after its file; a file that
    /// exists is continued (one chain), as `warden run --audit` does.
    pub fn open_audit(&self) -> std::io::Result<AuditLog> {
        let file = JsonlFile::open(&self.audit_path)?;
        let head = file.head().to_string();
        Ok(AuditLog::new(self.run_id.clone())
            .with_head(&head)
            .with_sink(file))
    }

    /// The [`RunSpec`] of this job, with `approver` asked about `ask`s.
    pub fn into_spec(self, approver: Option<Arc<dyn Approver>>) -> RunSpec {
        RunSpec {
            policy: self.policy,
            agent: self.agent,
            provider: self.provider,
            task: self.task,
            approver,
            approve: self.approve,
            approve_from: self.approve_from,
            replay_tools: None,
        }
    }
}

/// `text`, cut to 80 bytes, for a message.
fn shown(text: &str) -> String {
    let cut = crate::capability::brief(text, 80);
    crate::transcript::clean(&cut)
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A name is 1 to [`MAX_NAME`] letters, digits, `-` and `_`, starting with
/// a letter or digit: no `.`, `/`, `\` or NUL, so it can only name a file
/// directly inside a directory.
fn check_name(field: &'static str, name: &str, what: &str) -> Result<(), JobError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        return Ok(());
    }
    Err(JobError::invalid(
        field,
        format!(
            "`{}` is not {what}: use 1 to {MAX_NAME} letters, digits, `-` and `_` (no `/`, `.` or `..`)",
            shown(name)
        ),
    ))
}

/// `dir/file`, which must be a regular file inside `dir` once links are
/// followed. `file` is a plain relative path (for model scripts it may
/// have directories, but no `..`, no root, nothing absolute).
fn inside(field: &'static str, dir: &Path, file: &str, what: &str) -> Result<PathBuf, JobError> {
    use std::path::Component;
    let relative = Path::new(file);
    let plain = !file.is_empty()
        && file.len() <= MAX_MODEL_SPEC
        && !file.contains('\0')
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(JobError::invalid(
            field,
            format!(
                "`{}` is not a {what} file inside the server's policy directory: give a relative name with no `..` (absolute paths are refused)",
                shown(file)
            ),
        ));
    }
    let missing = || {
        JobError::not_found(
            field,
            format!("there is no {what} `{}` on this server", shown(file)),
        )
    };
    let root = dir.canonicalize().map_err(|error| {
        tracing::warn!(dir = %dir.display(), "a configured directory cannot be read: {error}");
        JobError::server(
            field,
            format!("the server's {what} directory cannot be read: its operator must fix it"),
        )
    })?;
    let path = root.join(relative).canonicalize().map_err(|_| missing())?;
    if !path.starts_with(&root) {
        return Err(JobError::forbidden(
            field,
            format!(
                "the {what} `{}` leads out of the server's directory (a symbolic link): refused",
                shown(file)
            ),
        ));
    }
    if !path.is_file() {
        return Err(missing());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[model]
allow = ["scripted"]
provider = "scripted:turns.toml"
max_calls = 4
"#;
    const TURNS: &str = "[[turn]]\ntext = \"done\"\n";

    fn setup() -> (tempfile::TempDir, JobConfig) {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("demo.toml"), POLICY).unwrap();
        std::fs::write(policies.join("turns.toml"), TURNS).unwrap();
        std::fs::write(policies.join("other.toml"), TURNS).unwrap();
        std::fs::write(dir.path().join("secret.toml"), POLICY).unwrap();
        let config = JobConfig::new(&policies, dir.path().join("audit"));
        (dir, config)
    }

    fn request(policy: &str) -> RunRequest {
        RunRequest {
            agent: "builtin:react".into(),
            policy: policy.into(),
            task: "What is 6 * 7?".into(),
            model: None,
            run_id: None,
            approve: vec![],
            approve_from: vec![],
        }
    }

    fn refused(config: &JobConfig, request: &RunRequest) -> JobError {
        match config.resolve(request) {
            Ok(job) => panic!("resolved: {job:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_named_policy_resolves_to_its_file_and_provider() {
        let (_dir, config) = setup();
        let job = config.resolve(&request("demo")).unwrap();
        assert_eq!(job.model, "scripted:turns.toml");
        assert!(
            job.policy.name.ends_with("policies/demo.toml"),
            "{}",
            job.policy.name
        );
        assert_eq!(job.agent, ComponentSource::Builtin("react".into()));
        assert!(job.audit_path.starts_with(&config.audit_dir));
        assert!(!job.audit_path.exists(), "resolving creates no file");
    }

    #[test]
    fn policy_names_that_leave_the_directory_are_refused() {
        let (dir, config) = setup();
        for name in [
            "../secret",
            "../../etc/passwd",
            "/etc/passwd",
            "demo/../../secret",
            "..",
            ".",
            "",
            "a\0b",
            "demo\\..\\x",
            " demo",
        ] {
            let error = refused(&config, &request(name));
            assert_eq!(error.field, "policy", "{name:?}: {error}");
            assert_eq!(error.kind, JobErrorKind::Invalid, "{name:?}: {error}");
            assert!(error.message.contains("no `/`, `.` or `..`"), "{error}");
        }
        let error = refused(&config, &request("demo.toml"));
        assert!(error.message.contains("without `.toml`"), "{error}");
        let error = refused(&config, &request(&"x".repeat(65)));
        assert_eq!(error.kind, JobErrorKind::Invalid);
        let error = refused(&config, &request("nope"));
        assert_eq!(error.kind, JobErrorKind::NotFound, "{error}");
        // A link inside the directory that points out of it.
        std::os::unix::fs::symlink(
            dir.path().join("secret.toml"),
            config.policy_dir.join("escape.toml"),
        )
        .unwrap();
        let error = refused(&config, &request("escape"));
        assert_eq!(error.kind, JobErrorKind::Forbidden, "{error}");
        assert!(error.message.contains("leads out"), "{error}");
    }

    #[test]
    fn agents_are_allowed_built_ins_or_names_in_the_agents_directory() {
        let (dir, mut config) = setup();
        for agent in [
            "/tmp/evil.wasm",
            "../agent",
            "evil.wasm",
            "builtin:../react",
        ] {
            let mut req = request("demo");
            req.agent = agent.into();
            let error = refused(&config, &req);
            assert_eq!(error.field, "agent", "{agent}: {error}");
            assert_eq!(error.kind, JobErrorKind::Invalid, "{agent}: {error}");
        }
        let mut req = request("demo");
        req.agent = "builtin:calc".into();
        assert_eq!(refused(&config, &req).kind, JobErrorKind::NotFound);
        req.agent = "mine".into();
        let error = refused(&config, &req);
        assert!(error.message.contains("no agents directory"), "{error}");
        let agents = dir.path().join("agents");
        std::fs::create_dir(&agents).unwrap();
        std::fs::write(agents.join("mine.wasm"), b"\0asm").unwrap();
        config.agent_dir = Some(agents.clone());
        let job = config.resolve(&req).unwrap();
        assert_eq!(
            job.agent,
            ComponentSource::File(agents.canonicalize().unwrap().join("mine.wasm"))
        );
    }

    #[test]
    fn model_specs_are_the_policys_or_allowed_and_scripts_stay_inside() {
        let (dir, mut config) = setup();
        let mut req = request("demo");
        for spec in [
            "scripted:/etc/shadow",
            "openai-compatible:http://169.254.169.254/v1#x",
            "openai:gpt-4o",
        ] {
            req.model = Some(spec.into());
            let error = refused(&config, &req);
            assert_eq!(
                (error.field, error.kind),
                ("model", JobErrorKind::Forbidden),
                "{spec}: {error}"
            );
        }
        config.models = vec!["scripted:*".into()];
        for spec in [
            "scripted:/etc/shadow",
            "scripted:../secret.toml",
            "replay:../../x",
        ] {
            req.model = Some(spec.into());
            let error = refused(&config, &req);
            assert_eq!(error.field, "model", "{spec}: {error}");
            assert_ne!(error.kind, JobErrorKind::Server, "{spec}: {error}");
        }
        // Not even through a link.
        std::os::unix::fs::symlink(
            dir.path().join("secret.toml"),
            config.policy_dir.join("link.toml"),
        )
        .unwrap();
        req.model = Some("scripted:link.toml".into());
        assert_eq!(refused(&config, &req).kind, JobErrorKind::Forbidden);
        req.model = Some("scripted:other.toml".into());
        let job = config.resolve(&req).unwrap();
        assert_eq!(job.model, "scripted:other.toml");
        req.model = Some("x".repeat(MAX_MODEL_SPEC + 1));
        assert_eq!(refused(&config, &req).kind, JobErrorKind::Invalid);
        // A pattern allows what starts with its prefix, and nothing else.
        config.models = vec!["openai-compatible:http://127.0.0.1:9/v1#*".into()];
        req.model = Some("openai-compatible:http://127.0.0.1:9/v1#m".into());
        assert_eq!(
            config.resolve(&req).unwrap().model,
            "openai-compatible:http://127.0.0.1:9/v1#m"
        );
        for other in [
            "openai-compatible:http://127.0.0.1:99/v1#m",
            "openai-compatible:http://169.254.169.254/v1#m",
            "scripted:other.toml",
        ] {
            req.model = Some(other.into());
            assert_eq!(
                refused(&config, &req).kind,
                JobErrorKind::Forbidden,
                "{other}"
            );
        }
        assert!(spec_matches("openai:gpt-4o", "openai:gpt-4o"));
        assert!(!spec_matches("openai:gpt-4o", "openai:gpt-4o-mini"));
    }

    /// The attack: `--allow-model 'openai:*'` meant every OpenAI model, and
    /// a client named its own server as the base URL to receive the
    /// operator's OPENAI_API_KEY.
    #[test]
    fn a_pattern_allows_models_not_servers_and_the_key_goes_only_to_its_provider() {
        for (pattern, spec, allowed) in [
            ("openai:*", "openai:gpt-4o", true),
            (
                "openai:*",
                "openai:https://attacker.example/v1#gpt-4o",
                false,
            ),
            (
                "openai:*",
                "openai:https://api.openai.com.attacker.example/v1#m",
                false,
            ),
            ("openai:gpt-4o*", "openai:gpt-4o-mini", true),
            ("openai:gpt-4o*", "openai:gpt-3.5", false),
            ("anthropic:*", "anthropic:http://127.0.0.1:9#claude", false),
            ("anthropic:*", "anthropic:claude-sonnet", true),
            (
                "openai:*",
                "openai-compatible:http://127.0.0.1:9/v1#m",
                false,
            ),
            ("openai:*", "anthropic:claude", false),
            (
                "openai-compatible:http://127.0.0.1:9/v1#*",
                "openai-compatible:http://127.0.0.1:9/v1#m",
                true,
            ),
            (
                "openai-compatible:http://127.0.0.1:9/v1#*",
                "openai-compatible:http://127.0.0.1:9/v1/../x#m",
                false,
            ),
            (
                "openai-compatible:http://127.0.0.1:9/v1#*",
                "openai-compatible:http://127.0.0.1:9/v1#m#x",
                false,
            ),
            (
                "openai-compatible:http://127.0.0.1:9/v*",
                "openai-compatible:http://127.0.0.1:9/v1@evil.example/#m",
                false,
            ),
            (
                "https://api.openai.com/v1#openai:gpt-4o",
                "openai:https://api.openai.com/v1#openai:gpt-4o",
                false,
            ),
            (
                "openai-compatible:http://127.0.0.1:*",
                "openai-compatible:http://127.0.0.1:4000/v1#m",
                true,
            ),
            (
                "openai-compatible:http://127.0.0.1:*",
                "openai-compatible:http://127.0.0.1:80@evil.example/v1#m",
                false,
            ),
            (
                "openai-compatible:http://127.0.0.1:*",
                "openai-compatible:http://127.0.0.1.evil.example:80/v1#m",
                false,
            ),
            (
                "openai-compatible:http://127.0.0.1:*",
                "openai-compatible:https://127.0.0.1:443/v1#m",
                false,
            ),
            (
                "openai:http://127.0.0.1:*",
                "openai:http://127.0.0.1:9/v1#m",
                true,
            ),
            ("scripted:*", "scripted:demo.toml", true),
            ("scripted:*", "replay:demo.jsonl", false),
            ("*", "openai:https://attacker.example/v1#m", false),
            ("*", "scripted:demo.toml", false),
        ] {
            assert_eq!(
                spec_matches(pattern, spec),
                allowed,
                "--allow-model {pattern} and the request's {spec}"
            );
        }
        // An operator who allows a server by name still sends it no key
        // that was meant for api.openai.com.
        let key = |spec: &str| client_key(&provider::parse_spec(spec).unwrap());
        assert_eq!(
            key("openai:https://proxy.example/v1#gpt-4o"),
            KeySource::None
        );
        assert_eq!(key("anthropic:http://127.0.0.1:9#claude"), KeySource::None);
        assert_eq!(key("openai:gpt-4o"), KeySource::Default);
        assert_eq!(
            key("openai:https://api.openai.com/v1#gpt-4o"),
            KeySource::Default
        );
        assert_eq!(key("anthropic:claude"), KeySource::Default);
        // Anthropic with no key is refused, not run keyless.
        let (_dir, mut config) = setup();
        config.models = vec!["anthropic:http://127.0.0.1:9#*".into()];
        let mut req = request("demo");
        req.model = Some("anthropic:http://127.0.0.1:9#claude".into());
        let error = refused(&config, &req);
        assert_eq!(error.field, "model", "{error}");
        assert!(error.message.contains("no API key"), "{error}");
    }

    #[test]
    fn fields_are_bounded_and_unknown_fields_refused() {
        let (_dir, config) = setup();
        let mut req = request("demo");
        req.task = "x".repeat(config.max_task_bytes + 1);
        let error = refused(&config, &req);
        assert_eq!(error.field, "task");
        let error = RunRequest::from_json(
            br#"{"agent":"builtin:react","policy":"demo","task":"t","policy_dir":"/"}"#,
        )
        .unwrap_err();
        assert!(
            error.message.contains("unknown field `policy_dir`"),
            "{error}"
        );
        let error = RunRequest::from_json(br#"{"agent":"builtin:react","task":"t"}"#).unwrap_err();
        assert_eq!(error.field, "policy", "{error}");
        let error = RunRequest::from_json(b"[[[[").unwrap_err();
        assert_eq!(error.field, "body");
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(RunRequest::from_json(deep.as_bytes()).is_err());
        let mut req = request("demo");
        req.run_id = Some("../../x".into());
        assert_eq!(refused(&config, &req).field, "run_id");
        req.run_id = Some("r-0123456789abcdef".into());
        let job = config.resolve(&req).unwrap();
        assert!(job.audit_path.ends_with("r-0123456789abcdef.jsonl"));
    }

    #[test]
    fn pre_approval_is_refused_unless_the_server_allows_it() {
        let (_dir, mut config) = setup();
        let mut req = request("demo");
        req.approve = vec!["tools.pay".into()];
        let error = refused(&config, &req);
        assert_eq!(
            (error.field, error.kind),
            ("approve", JobErrorKind::Forbidden)
        );
        config.allow_pre_approve = true;
        assert!(config.resolve(&req).is_ok());
        req.approve = vec!["x".into(); MAX_APPROVE + 1];
        assert_eq!(refused(&config, &req).kind, JobErrorKind::Invalid);
        req.approve = vec![];
        req.approve_from = vec!["nonsense:source".into()];
        assert_eq!(refused(&config, &req).field, "approve_from");
    }

    #[test]
    fn a_policy_that_does_not_load_is_the_servers_fault_and_shows_no_text() {
        let (_dir, config) = setup();
        std::fs::write(
            config.policy_dir.join("broken.toml"),
            "[model\nsecret-ish text",
        )
        .unwrap();
        let error = refused(&config, &request("broken"));
        assert_eq!(error.kind, JobErrorKind::Server);
        assert!(!error.message.contains("secret-ish"), "{error}");
    }
}
