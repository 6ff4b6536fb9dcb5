//! For policy authors: `warden check` (what a policy grants, in plain
//! words, and whether `warden run` could load every component it names)
//! and `warden policy test` (a file of requests with the decisions they
//! must get, run against the policy like `opa test`). Checking never runs
//! a tool's `invoke` and grants no component anything.

use crate::chat::{Message, Role};
use crate::diagnostic::{SourceError, parse_toml};
use crate::load::PolicyFile;
use crate::policy::args::Check;
use crate::policy::provenance::Source;
use crate::policy::{
    ByteSize, ChangeKind, Decision, Grants, HumanDuration, MountMode, Policy, Request,
    ResultOrigin, SecretSource, Session, Severity, Verdict,
};
use crate::registry::ToolComponent;
use crate::runtime::Runtime;
use serde::Deserialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// Load every tool component `file` names exactly as `warden run` and
/// `warden mcp` do (the same session opening: read, pin check, compile
/// through the cache, `describe` with no grants under the policy's
/// limits, each entry bound to a tool the component provides), into an
/// audit log that is kept nowhere. `Err` is what `run` would refuse with,
/// rendered.
pub async fn load_components(
    runtime: &Runtime,
    file: &PolicyFile,
) -> Result<Vec<Arc<ToolComponent>>, String> {
    load_tools(runtime, file)
        .await
        .map(|tools| tools.components())
}

/// [`load_components`], keeping the tools as loaded (their specs and what
/// their descriptions declare).
pub async fn load_tools(
    runtime: &Runtime,
    file: &PolicyFile,
) -> Result<Arc<crate::registry::ToolRegistry>, String> {
    use crate::run::{Opening, RunError, open_session};
    let audit = crate::audit::AuditLog::new(crate::audit::new_run_id());
    let gate = crate::gate::Gate::new(file.policy.clone(), audit);
    let opening = Opening {
        subject: "check".into(),
        detail: "warden check".into(),
        data: serde_json::json!({}),
    };
    match open_session(runtime, file, gate, opening).await {
        Ok((_, tools)) => Ok(tools),
        Err(RunError::Policy(error)) => Err(error.render()),
        Err(error) => Err(format!("error: {error}")),
    }
}

/// What `warden check` says of the components: each one loaded, with its
/// SHA-256 (what a `sha256` pin holds); `None` when they were not loaded.
pub fn describe_components(components: Option<&[Arc<ToolComponent>]>) -> String {
    let Some(components) = components else {
        return "Components: not loaded (--no-load); `warden run` may still refuse them.\n".into();
    };
    if components.is_empty() {
        return String::new();
    }
    let mut out = String::from("Components, loaded and described with no grants:\n");
    for component in components {
        let _ = writeln!(
            out,
            "  {}: sha256 {}{}",
            crate::transcript::clean_line(&component.source),
            component.sha256,
            if component.cache_hit {
                " (from the compile cache)"
            } else {
                ""
            }
        );
    }
    out
}

/// What `warden check` says of the parts of results that tools'
/// descriptions mark third-party (`x-warden-third-party`), and whether
/// the policy accepts them.
pub fn describe_declared(
    policy: &crate::policy::Policy,
    tools: &crate::registry::ToolRegistry,
) -> String {
    let mut out = String::new();
    for tool in policy.tools.values() {
        let declared = tools.third_party(&tool.name);
        if declared.is_empty() {
            continue;
        }
        if out.is_empty() {
            out.push_str(
                "Result parts tools declare third-party:
",
            );
        }
        let paths: Vec<String> = declared
            .iter()
            .map(|p| format!("`{}`", crate::transcript::clean_line(&p.text)))
            .collect();
        let what = if tool.third_party_labels.is_empty() {
            "ignored: the entry has no `third_party_labels`".to_string()
        } else {
            format!("labeled {}", tool.third_party_labels.join(", "))
        };
        let _ = writeln!(out, "  {}: {} ({what})", tool.name, paths.join(", "));
    }
    out
}

/// What `policy` grants, in plain words.
pub fn describe(file: &PolicyFile) -> String {
    let policy = &file.policy;
    let mut out = String::new();
    let warnings = policy
        .warnings
        .iter()
        .filter(|w| w.severity == Severity::Warning)
        .count();
    let files = if file.files.len() > 1 {
        format!(
            " (with {})",
            file.files[1..]
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    let _ = writeln!(out, "{}{files}: valid, {warnings} warning(s)\n", file.name);
    describe_includes(&mut out, policy);

    let l = &policy.limits;
    let _ = write!(
        out,
        "Limits, for each guest instance: memory {}, CPU {}, wall clock {}, output {}",
        ByteSize(l.memory),
        HumanDuration(l.cpu),
        HumanDuration(l.wall),
        ByteSize(l.output)
    );
    match l.max_steps {
        Some(steps) => {
            let _ = writeln!(
                out,
                "; at most {steps} model and tool calls per run, allowed or refused."
            );
        }
        None => out.push_str(".\n"),
    }
    let _ = writeln!(
        out,
        "Run-wide ledger: {} refusals recorded, then every request is refused and only counted; stdio recorded {}; provenance index {}; audit record fields {} (longer values kept as start, size and SHA-256).",
        l.max_refusals,
        ByteSize(l.stdio),
        ByteSize(l.index),
        ByteSize(l.audit_field)
    );

    let m = &policy.model;
    if m.allow.is_empty() {
        out.push_str("Model: none; every model call is denied.\n");
    } else {
        let mut budgets = Vec::new();
        if let Some(n) = m.max_calls {
            budgets.push(format!("{n} calls"));
        }
        if let Some(n) = m.max_tokens {
            budgets.push(format!("{n} tokens"));
        }
        if let Some(n) = m.max_cost_usd {
            budgets.push(format!("${n:.2}"));
        }
        let budget = if budgets.is_empty() {
            "no budget".to_string()
        } else {
            format!("at most {} per run", budgets.join(", "))
        };
        let _ = write!(out, "Model: may use {}; {budget}", m.allow.join(", "));
        if let Some(n) = m.max_tokens_per_call {
            let _ = write!(out, "; at most {n} output tokens a call");
        }
        out.push_str(".\n");
        if !m.deny.is_empty() {
            let _ = writeln!(
                out,
                "  Requests matching {} pattern(s) are refused.",
                m.deny.len()
            );
        }
        if !m.redact.is_empty() {
            let _ = writeln!(
                out,
                "  Text matching {} pattern(s) is redacted before it leaves.",
                m.redact.len()
            );
        }
        if !m.labels.is_empty() {
            let _ = writeln!(out, "  Answers label the session: {}.", m.labels.join(", "));
        }
        if let Some(provider) = &m.provider {
            let key = match (&provider.api_key_env, &provider.api_key_file) {
                (Some(var), _) => format!(", key from ${var}"),
                (None, Some((file, _))) => format!(", key from the file {file}"),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "  Provider (unless --model names another): {}{key}.",
                provider.spec
            );
        }
        let _ = writeln!(
            out,
            "  Each provider request: {} to answer, at most {}, {} retr{} on 429/5xx.",
            HumanDuration(m.limits.timeout),
            ByteSize(m.limits.max_response),
            m.limits.max_retries,
            if m.limits.max_retries == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }

    out.push_str("Tools:\n");
    if policy.tools.is_empty() {
        out.push_str("  none\n");
    }
    for tool in policy.tools.values() {
        let from = tool
            .component
            .as_ref()
            .map(|c| format!(" ({})", c.text))
            .unwrap_or_default();
        let verdict = match tool.decision {
            Verdict::Allow => "allowed",
            Verdict::Ask => "allowed when a person approves each call",
            Verdict::Deny => "denied",
        };
        let _ = write!(out, "  {}{from}: {verdict}", tool.name);
        if tool.decision == Verdict::Deny {
            out.push_str(".\n");
            continue;
        }
        if let Some(pin) = &tool.sha256 {
            let _ = write!(out, "; pinned to sha256 {}…", &pin[..12]);
        }
        if let Some(n) = tool.max_calls {
            let _ = write!(out, "; at most {n} calls per run");
        }
        if let Some(n) = tool.rate {
            let _ = write!(out, "; at most {n} a minute");
        }
        out.push_str(".\n");
        for rule in &tool.args {
            let checks: Vec<String> = rule.checks.iter().map(describe_check).collect();
            let mut line = checks.join(", ");
            if rule.required {
                line = if line.is_empty() {
                    "required".into()
                } else {
                    format!("required, {line}")
                };
            }
            let _ = writeln!(
                out,
                "    argument `{}`: {line}; otherwise {}",
                rule.path,
                if rule.decision == Verdict::Ask {
                    "ask a person"
                } else {
                    "deny"
                }
            );
        }
        if !tool.labels.is_empty() {
            let _ = writeln!(
                out,
                "    its results label the session: {}",
                tool.labels.join(", ")
            );
        }
        if !tool.path_labels.is_empty() {
            let parts: Vec<String> = tool
                .path_labels
                .iter()
                .map(|(path, labels)| format!("`{path}`: {}", labels.join(", ")))
                .collect();
            let _ = writeln!(
                out,
                "    parts of its JSON results carry labels: {} (a result that is not a JSON object or array carries them all)",
                parts.join("; ")
            );
        }
        if !tool.third_party_labels.is_empty() {
            let _ = writeln!(
                out,
                "    parts its description marks third-party carry: {}",
                tool.third_party_labels.join(", ")
            );
        }
        if tool.instance == crate::policy::Instance::PerRun {
            out.push_str("    one instance kept for the run (`instance = \"per-run\"`): calls share its state (an interpreter's variables); its memory stays charged, a limit or trap resets it, and what one call is given carries its labels into every later result\n");
        }
        if !tool.labels_flow {
            out.push_str("    labels do not flow through it: its results do not carry its arguments' or its store's labels\n");
        }
        if !tool.deny_when_labeled.is_empty() {
            let _ = writeln!(
                out,
                "    denied once the session is labeled: {}",
                tool.deny_when_labeled.join(", ")
            );
        }
        if !tool.ask_when_labeled.is_empty() {
            let _ = writeln!(
                out,
                "    asks a person once the session is labeled: {}",
                tool.ask_when_labeled.join(", ")
            );
        }
        describe_grants(&mut out, &tool.grants, policy);
    }
    if policy.plan.required {
        let (sinks, read_only): (Vec<_>, Vec<_>) =
            policy.granted_tools().partition(|tool| tool.has_effects());
        let names = |tools: &[&crate::policy::ToolPolicy]| match tools {
            [] => "none".to_string(),
            some => some
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(
            out,
            "Plan: required. The agent declares the tools with effects it will use before the session carries any label; once labeled, a tool with effects outside its plan is refused, and with no plan every one is.\n  Tools with effects: {}.\n  Read-only (`effects = \"none\"`), never refused by the plan: {}.",
            names(&sinks),
            names(&read_only)
        );
    }
    if policy.agent.is_empty() {
        out.push_str("Agent: no files, network, environment or secrets.\n");
    } else {
        out.push_str("Agent:\n");
        describe_grants(&mut out, &policy.agent, policy);
    }
    out.push_str("Everything else is denied.\n");
    out
}

/// What each including file changed in what it includes. Keys and values
/// are the files' text: escaped to one line each, so an include cannot
/// print a line that looks like warden's.
fn describe_includes(out: &mut String, policy: &Policy) {
    if policy.includes.is_empty() {
        return;
    }
    let line = crate::transcript::clean_line;
    out.push_str("What each include changed (an include may only narrow):\n");
    for layer in &policy.includes {
        let _ = writeln!(out, "  {} over {}:", line(&layer.file), line(&layer.below));
        if layer.changes.is_empty() {
            out.push_str("    nothing\n");
        }
        for change in &layer.changes {
            let how = match change.kind {
                ChangeKind::Narrowed => "narrows",
                ChangeKind::Added => "adds",
                ChangeKind::Widened => "WIDENS (listed in `widen`)",
            };
            let _ = writeln!(
                out,
                "    {how} {}: {}",
                line(&change.key),
                line(&change.what)
            );
        }
    }
    out.push('\n');
}

fn describe_check(check: &Check) -> String {
    match check {
        Check::Equals(v) => format!("equals {v}"),
        Check::OneOf(options) => format!(
            "one of {}",
            options
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Check::Matches(_, pattern) => format!("matches `{pattern}`"),
        Check::Glob(_, pattern) => format!("matches the glob `{pattern}`"),
        Check::Prefix(prefix) => format!("starts with `{prefix}`"),
        Check::Min(n) => format!("at least {n}"),
        Check::Max(n) => format!("at most {n}"),
        Check::MaxLen(n) => format!("at most {n} long"),
        Check::Schema(_) => "valid against a schema".into(),
        Check::From(_, names) => format!("seen first in {}", names.join(" or ")),
        Check::NotMatches(_, pattern) => format!("does not match `{pattern}`"),
        Check::NotContains(_, written) => format!(
            "contains none of {}",
            written
                .iter()
                .map(|w| format!("`{w}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Check::SameAs(other) => format!("equals `{other}`"),
        Check::DiffersFrom(other) => format!("differs from `{other}`"),
        Check::MaxTotal(max, count) => format!("adds up to at most {max} over the run ({count})"),
        Check::MaxDistinct(max, count) => {
            format!("at most {max} distinct values over the run ({count})")
        }
        Check::AnyOf(alternatives) => format!(
            "any of: {}",
            alternatives
                .iter()
                .map(|checks| checks
                    .iter()
                    .map(describe_check)
                    .collect::<Vec<_>>()
                    .join(" and "))
                .collect::<Vec<_>>()
                .join("; or ")
        ),
    }
}

fn describe_grants(out: &mut String, grants: &Grants, policy: &Policy) {
    if let Some(http) = &grants.http {
        for rule in &http.rules {
            let _ = write!(out, "    network: {} {}", http.methods.join("/"), rule.text);
            if rule.private {
                out.push_str(" (private addresses too)");
            }
            if !rule.labels.is_empty() {
                let _ = write!(
                    out,
                    "; responses label the session: {}",
                    rule.labels.join(", ")
                );
            }
            out.push('\n');
        }
    }
    for mount in &grants.fs {
        let mode = match mount.mode {
            MountMode::Ro => "read-only".to_string(),
            MountMode::Rw => match mount.quota {
                Some(q) => format!("read-write, at most {} written", ByteSize(q)),
                None => "read-write".to_string(),
            },
        };
        let _ = writeln!(
            out,
            "    files: {} is {} ({mode})",
            mount.guest_path, mount.dir
        );
    }
    if !grants.env.is_empty() || !grants.inherit_env.is_empty() {
        let mut vars: Vec<String> = grants.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        vars.extend(
            grants
                .inherit_env
                .iter()
                .map(|k| format!("{k} (from the host)")),
        );
        let _ = writeln!(out, "    environment: {}", vars.join(", "));
    }
    for name in &grants.secrets {
        let Some(secret) = policy.secrets.get(name) else {
            continue;
        };
        let source = match &secret.source {
            SecretSource::Env(var) => format!("from ${var}"),
            SecretSource::File(path) => format!("from {path}"),
        };
        match &secret.inject {
            Some(inject) => {
                let _ = writeln!(
                    out,
                    "    secret {name} ({source}): sent to {} in the {} header",
                    inject.host, inject.header
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "    secret {name} ({source}): never sent (no `inject`)"
                );
            }
        }
    }
}

/// A file of policy test cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCases {
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    tool: Option<String>,
    model: Option<String>,
    #[serde(default)]
    args: Option<toml::Table>,
    /// The arguments as JSON text, for what TOML cannot write (`null`).
    args_json: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    labels: Vec<String>,
    /// The plan the agent declared before the session's labels.
    plan: Option<Vec<String>>,
    #[serde(default)]
    calls: u32,
    #[serde(default)]
    steps: u32,
    #[serde(default)]
    tokens: u64,
    #[serde(default)]
    cost_usd: f64,
    #[serde(default)]
    task: String,
    #[serde(default)]
    seen: Vec<RawSeen>,
    expect: Verdict,
    rule: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeen {
    tool: Option<String>,
    #[serde(default)]
    model: bool,
    text: String,
    #[serde(default)]
    labels: Vec<String>,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// `None` when it passed; else what differed.
    pub failure: Option<String>,
}

/// Run the cases in `text` (the file `file`) against `policy`.
pub fn run_cases(policy: &Policy, file: &str, text: &str) -> Result<Vec<CaseResult>, SourceError> {
    let raw: RawCases = parse_toml(file, text)?;
    let mut results = Vec::new();
    for case in raw.case {
        let failure = match run_case(policy, &case) {
            Err(problem) => Some(problem),
            Ok(decision) => compare(&case, &decision),
        };
        results.push(CaseResult {
            name: case.name,
            failure,
        });
    }
    Ok(results)
}

fn run_case(policy: &Policy, case: &RawCase) -> Result<Decision, String> {
    let mut session = Session::default();
    session.steps = case.steps;
    session.tokens = case.tokens;
    session.cost_usd = case.cost_usd;
    if let Some(plan) = &case.plan {
        let request = Request::Plan { tools: plan };
        if let Decision::Deny { reason, .. } = policy.decide(&request, &session) {
            return Err(format!("the case's `plan` is refused: {reason}"));
        }
        session.record(policy, &request);
    }
    let mut labels = case.labels.clone();
    labels.sort();
    labels.dedup();
    session.add_labels(&labels);
    if !case.task.is_empty() {
        session.observe_task(&case.task);
    }
    for seen in &case.seen {
        let mut labels = seen.labels.clone();
        labels.sort();
        labels.dedup();
        match (&seen.tool, seen.model) {
            // Labelled as a run labels that tool's result (its entry's
            // labels, by path too), plus the case's own.
            (Some(tool), false) => session.observe_tool_result_from(
                policy,
                tool,
                &seen.text,
                &ResultOrigin {
                    http_labels: &labels,
                    ..ResultOrigin::default()
                },
            ),
            (None, true) => {
                session.add_labels(&labels);
                session
                    .provenance
                    .observe(Source::Model, &labels, &seen.text);
            }
            _ => return Err("each `seen` entry names a `tool` or sets `model = true`".into()),
        }
    }
    match (&case.tool, &case.model) {
        (Some(tool), None) => {
            session.tool_calls.insert(tool.clone(), case.calls);
            let args = match (&case.args, &case.args_json) {
                (Some(_), Some(_)) => {
                    return Err("a case has `args` or `args_json`, not both".into());
                }
                (_, Some(json)) => {
                    let args: serde_json::Value = serde_json::from_str(json)
                        .map_err(|e| format!("`args_json` is not JSON: {e}"))?;
                    if !args.is_object() {
                        return Err("`args_json` is a JSON object of the arguments".into());
                    }
                    args
                }
                (args, None) => serde_json::to_value(args.clone().unwrap_or_default())
                    .map_err(|e| format!("bad `args`: {e}"))?,
            };
            Ok(policy.decide(
                &Request::Tool {
                    name: tool,
                    arguments: &args,
                    schema: None,
                },
                &session,
            ))
        }
        (None, Some(model)) => {
            session.model_calls = case.calls;
            let messages = [Message {
                role: Role::User,
                content: case.prompt.clone(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            }];
            Ok(policy.decide(
                &Request::Model {
                    model,
                    messages: &messages,
                    estimated_tokens: case.prompt.len().div_ceil(4) as u64,
                },
                &session,
            ))
        }
        _ => Err("a case names exactly one of `tool` and `model`".into()),
    }
}

fn compare(case: &RawCase, decision: &Decision) -> Option<String> {
    let got_verdict = decision.verdict();
    // An ask names every rule that asks: `a, b`.
    let got_rule = decision.rules_text();
    let got_rule = got_rule.as_str();
    let rule_ok = case.rule.as_deref().is_none_or(|r| r == got_rule);
    if got_verdict == case.expect && rule_ok {
        return None;
    }
    let expected = match &case.rule {
        Some(rule) => format!("{} ({rule})", case.expect),
        None => case.expect.to_string(),
    };
    let reason = match decision {
        Decision::Allow { .. } => String::new(),
        Decision::Ask { reason, .. } | Decision::Deny { reason, .. } => {
            format!("\n  because: {reason}")
        }
    };
    Some(format!(
        "expected: {expected}\n  got:      {got_verdict} ({got_rule}){reason}"
    ))
}
