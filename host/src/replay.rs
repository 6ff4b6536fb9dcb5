//! Whole-run replay: re-run an agent with the model answers and tool
//! results taken from a run's audit log, and report the first place where
//! the agent now does something else. For debugging agents and reviewing
//! incidents, on logs that may come from someone else.
//!
//! What a replay may do, and must never do:
//! - nothing is sent to a model: every model call is answered from the
//!   record, and the request the agent sends is compared with the one
//!   recorded (its SHA-256, and its number of messages);
//! - no tool is called: every tool call is answered from the record
//!   (components are still loaded, and describe their tools with no
//!   grants at all, as in every run);
//! - no other effect: the agent's own HTTP requests are refused (the record
//!   does not hold the responses) and noted as a divergence; no directory
//!   is granted unless the person asks for the policy's directories, and
//!   then only read-only; no environment variable is inherited; no
//!   component is downloaded.
//!
//! The policy is enforced again, so refusals happen as they did (or
//! differently, if the policy changed: that is a divergence too). `ask`
//! decisions that were approved in the recorded run are approved again.

use crate::audit::{Event, Kind, Outcome, Record};
use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall, Usage};
use crate::policy::Verdict;
use crate::provider::{BoxFuture, ModelProvider, ProviderError};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Mutex;

/// A recorded run, read from its audit log.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The run's id.
    pub run: String,
    /// The agent component's source (`builtin:react`, a path).
    pub agent: String,
    /// Its SHA-256 then.
    pub agent_sha256: String,
    /// The policy file's name then.
    pub policy: String,
    /// Its SHA-256 then.
    pub policy_sha256: String,
    /// The task.
    pub task: String,
    /// The answers the provider gave, in order.
    pub model: Vec<ModelStep>,
    /// The tool calls that ran, in order.
    pub tools: Vec<ToolStep>,
    /// The plans the agent declared (`tools.declare-plan`), in order.
    pub plans: Vec<PlanStep>,
    /// Rules a person approved during the run.
    pub approved: Vec<String>,
    /// The run's answer, if it gave one.
    pub answer: Option<String>,
}

impl Recorded {
    /// The recorded tool calls that ran (the others were refused).
    pub fn tool_results(&self) -> usize {
        self.tools.iter().filter(|t| t.permitted).count()
    }
}

/// One model call that reached the provider.
#[derive(Debug, Clone)]
pub struct ModelStep {
    /// Messages in the request.
    pub messages: u64,
    /// The SHA-256 of the request ([`ChatRequest::sha256`]); `None` in a
    /// log written before it was recorded.
    pub request_sha256: Option<String>,
    /// The names of the tools the request offered.
    pub tools: Vec<String>,
    /// The answer, or the provider's error.
    pub answer: Result<ChatResponse, String>,
}

/// One plan the agent declared, and whether it was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    /// The names as the agent listed them (as recorded: at most
    /// [`crate::policy::plan::MAX_PLAN_TOOLS`]).
    pub tools: Value,
    /// Whether the policy accepted it.
    pub accepted: bool,
}

/// One tool call the agent made: one that ran, or one the policy refused
/// (a refusal is a step too, so that a decision that changed is reported
/// as that, not as a different call).
#[derive(Debug, Clone)]
pub struct ToolStep {
    /// The tool.
    pub name: String,
    /// Its arguments.
    pub arguments: Value,
    /// Whether it went ahead: allowed, or asked and approved.
    pub permitted: bool,
    /// What the policy answered (`ask` for an approved call, and for one
    /// that asked and was not approved).
    pub verdict: Verdict,
    /// The rule that decided.
    pub rule: String,
    /// What it returned, or how it failed; for a refusal, the reason.
    pub result: Result<String, String>,
}

impl ToolStep {
    /// How the recorded run decided it, for a sentence: "denied in the
    /// recorded run (rule tools.x)".
    fn decided(&self) -> String {
        let how = match (self.permitted, self.verdict) {
            (true, Verdict::Ask) => "approved",
            (true, _) => "allowed",
            (false, Verdict::Ask) => "asked about and not approved",
            (false, _) => "denied",
        };
        format!(
            "{how} in the recorded run (rule {})",
            crate::transcript::clean_line(&self.rule)
        )
    }
}

/// Read run `run` (default: the last) from the records of an audit log.
pub fn read(records: &[Record], run: Option<&str>) -> Result<Recorded, String> {
    let run = match run {
        Some(run) => run.to_string(),
        None => records
            .iter()
            .rev()
            .find(|r| r.kind == Kind::Run && r.event == Event::Decision && r.seq == 1)
            .map(|r| r.run.clone())
            .ok_or("the log holds no run")?,
    };
    let mine: Vec<&Record> = records.iter().filter(|r| r.run == run).collect();
    let start = mine
        .iter()
        .find(|r| r.seq == 1)
        .ok_or(format!("run {run} has no start record"))?;
    let data = start.data.clone().unwrap_or(Value::Null);
    if is_mcp_start(start) {
        return Err(format!(
            "run {} is a `warden mcp` session: it served the policy's tools to an MCP client and ran no agent, so there is nothing to replay",
            crate::transcript::name(&run)
        ));
    }
    whole(start, &data, &["task"])?;
    let text = |pointer: &str| {
        data.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut recorded = Recorded {
        run: run.clone(),
        agent: text("/agent/source"),
        agent_sha256: text("/agent/sha256"),
        policy: text("/policy/file"),
        policy_sha256: text("/policy/sha256"),
        task: text("/task"),
        model: Vec::new(),
        tools: Vec::new(),
        plans: Vec::new(),
        approved: Vec::new(),
        answer: None,
    };
    let mut model_requests: VecDeque<(u64, Option<String>, Vec<String>)> = VecDeque::new();
    let mut tool_arguments: Vec<(String, Value)> = Vec::new();
    // The decision of each call in `tool_arguments`, at the same place.
    let mut tool_decisions: Vec<(Verdict, String)> = Vec::new();
    for record in &mine {
        let data = record.data.clone().unwrap_or(Value::Null);
        let permitted = matches!(record.decision, Verdict::Allow)
            || data.get("approved_by").is_some()
            || (record.event == Event::Outcome
                && record.decision == Verdict::Ask
                && !matches!(
                    record.outcome,
                    Some(Outcome::Denied | Outcome::BudgetExhausted | Outcome::Invalid)
                ));
        if data.get("approved_by").is_some() {
            // An approval covers every rule that asked (`data.rules`; a
            // record without them names one rule).
            let rules: Vec<String> = match data.get("rules").and_then(Value::as_array) {
                Some(rules) => rules
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                None => vec![record.rule.clone()],
            };
            for rule in rules {
                if !recorded.approved.contains(&rule) {
                    recorded.approved.push(rule);
                }
            }
        }
        match (record.kind, record.event) {
            (Kind::Run, Event::Outcome) if record.outcome == Some(Outcome::Ok) => {
                recorded.answer = data["answer"].as_str().map(str::to_string);
            }
            (Kind::Model, Event::Decision) if permitted => {
                model_requests.push_back((
                    data["messages"].as_u64().unwrap_or(0),
                    data["request_sha256"].as_str().map(str::to_string),
                    data["tools"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                ));
            }
            (Kind::Model, Event::Outcome) if permitted => {
                let (messages, request_sha256, tools) =
                    model_requests.pop_front().unwrap_or_default();
                let answer = match record.outcome {
                    Some(Outcome::Ok) => {
                        whole(record, &data, &["text", "tool_calls"])?;
                        Ok(response(&data)?)
                    }
                    _ => Err(record.detail.clone()),
                };
                recorded.model.push(ModelStep {
                    messages,
                    request_sha256,
                    tools,
                    answer,
                });
            }
            (Kind::Plan, Event::Decision) => recorded.plans.push(PlanStep {
                tools: data["tools"].clone(),
                accepted: record.decision == Verdict::Allow,
            }),
            (Kind::Tool, Event::Decision) if permitted => {
                whole(record, &data, &["arguments"])?;
                tool_arguments.push((record.subject.clone(), data["arguments"].clone()));
                tool_decisions.push((record.decision, record.rule.clone()));
            }
            // A refusal: its decision and outcome records are written
            // together, and nothing ran.
            (Kind::Tool, Event::Decision) => {
                recorded.tools.push(ToolStep {
                    name: record.subject.clone(),
                    arguments: data["arguments"].clone(),
                    permitted: false,
                    verdict: record.decision,
                    rule: record.rule.clone(),
                    result: Err(record.detail.clone()),
                });
            }
            (Kind::Tool, Event::Outcome) if permitted => {
                let position = tool_arguments
                    .iter()
                    .position(|(name, _)| *name == record.subject)
                    .ok_or(format!(
                        "seq {}: an outcome of `{}` with no decision",
                        record.seq, record.subject
                    ))?;
                let (name, arguments) = tool_arguments.remove(position);
                let (verdict, rule) = tool_decisions.remove(position);
                let result = match record.outcome {
                    Some(Outcome::Ok) => {
                        whole(record, &data, &["result"])?;
                        Ok(data["result"].as_str().unwrap_or_default().to_string())
                    }
                    _ => Err(record.detail.clone()),
                };
                recorded.tools.push(ToolStep {
                    name,
                    arguments,
                    permitted: true,
                    verdict,
                    rule,
                    result,
                });
            }
            _ => {}
        }
    }
    Ok(recorded)
}

/// Whether `start` (a run's first record) opens a `warden mcp` session,
/// which serves tools to a client and has no agent.
fn is_mcp_start(start: &Record) -> bool {
    start.subject == "mcp"
        && start
            .data
            .as_ref()
            .is_some_and(|d| d.get("server").and_then(Value::as_str) == Some("mcp"))
}

/// Whether run `run` in `records` is a `warden mcp` session.
pub fn is_mcp_session(records: &[Record], run: &str) -> bool {
    records
        .iter()
        .find(|r| r.run == run && r.seq == 1)
        .is_some_and(is_mcp_start)
}

/// An error unless each of `fields` is whole in the record: a value longer
/// than `[limits] audit_field` was kept as its start and hash, and a
/// replay from it would give the agent something else.
fn whole(record: &Record, data: &Value, fields: &[&str]) -> Result<(), String> {
    match fields
        .iter()
        .find(|f| crate::audit::bound::was_truncated(data, f))
    {
        Some(field) => Err(format!(
            "seq {}: the record keeps only the start and SHA-256 of `{field}` (it was longer than `[limits] audit_field`), so the run cannot be replayed; record it again with a larger `audit_field`",
            record.seq
        )),
        None => Ok(()),
    }
}

fn response(data: &Value) -> Result<ChatResponse, String> {
    let calls: Vec<ToolCall> = serde_json::from_value(data["tool_calls"].clone())
        .map_err(|e| format!("a model record's tool calls cannot be read: {e}"))?;
    Ok(ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: data["text"].as_str().unwrap_or_default().to_string(),
            tool_calls: calls,
            tool_call_id: None,
        },
        usage: serde_json::from_value::<Usage>(data["usage"].clone()).unwrap_or_default(),
        finish_reason: serde_json::from_value::<FinishReason>(data["finish_reason"].clone())
            .unwrap_or(FinishReason::Stop),
        model: data["model"].as_str().unwrap_or_default().to_string(),
        usage_reported: data["usage_reported"].as_bool().unwrap_or(true),
    })
}

/// The first place a replay went differently, shared by the model and the
/// tools of one replay.
#[derive(Debug, Default)]
pub struct Divergence(Mutex<Option<String>>);

impl Divergence {
    /// Note `what`, unless something diverged earlier.
    pub fn note(&self, what: String) {
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(what);
        }
    }

    /// The first divergence, if any.
    pub fn first(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Answers model calls from a recorded run.
pub struct ReplayModel {
    steps: Mutex<VecDeque<ModelStep>>,
    total: usize,
    default_model: String,
    divergence: std::sync::Arc<Divergence>,
}

impl ReplayModel {
    /// Answer from `recorded`'s model steps.
    pub fn new(recorded: &Recorded, divergence: std::sync::Arc<Divergence>) -> Self {
        ReplayModel {
            steps: Mutex::new(recorded.model.iter().cloned().collect()),
            total: recorded.model.len(),
            default_model: recorded
                .model
                .iter()
                .find_map(|s| s.answer.as_ref().ok().map(|a| a.model.clone()))
                .unwrap_or_default(),
            divergence,
        }
    }
}

impl ModelProvider for ReplayModel {
    fn default_model(&self) -> &str {
        &self.default_model
    }

    fn describe(&self) -> String {
        format!("replay of {} recorded model answer(s)", self.total)
    }

    fn chat<'a>(
        &'a self,
        request: &'a crate::secrets::Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let call = self.total - steps.len() + 1;
        let result = match steps.pop_front() {
            None => {
                let what = format!(
                    "model call {call}: the agent asked the model again; the recorded run made {} call(s)",
                    self.total
                );
                self.divergence.note(what.clone());
                Err(ProviderError::Other(format!("replay diverged: {what}")))
            }
            Some(step) => {
                let sent = request.messages.len();
                let sha256 = step.request_sha256.as_ref().map(|recorded| {
                    let now = request.sha256();
                    (now != *recorded).then_some((now, recorded))
                });
                if let Some(Some((now, recorded))) = sha256 {
                    let offered: Vec<&str> =
                        request.tools.iter().map(|t| t.name.as_str()).collect();
                    let what = if offered != step.tools {
                        format!(
                            "it offered the tools {offered:?}; the recorded run offered {:?}",
                            step.tools
                        )
                    } else if step.messages != sent as u64 {
                        format!("{sent} message(s); the recorded run sent {}", step.messages)
                    } else {
                        format!(
                            "{sent} message(s) and the same tools, with other content or settings"
                        )
                    };
                    self.divergence.note(format!(
                        "model call {call}: the agent sent a different request: {what} (sha256 {}… now, {}… then)",
                        &now[..12],
                        // From a log someone else may have written: not
                        // necessarily hex.
                        recorded.chars().take(12).collect::<String>(),
                    ));
                } else if step.messages != sent as u64 {
                    self.divergence.note(format!(
                        "model call {call}: the agent sent {} message(s); the recorded run sent {}",
                        request.messages.len(),
                        step.messages
                    ));
                }
                step.answer.map_err(ProviderError::Other)
            }
        };
        Box::pin(std::future::ready(result))
    }
}

/// A replay's answers to everything but the model: tool results from a
/// recorded run, in order, and what guests may touch (nothing outside the
/// host). The gate holds it for the whole replay ([`crate::gate::Gate::replay`]).
pub struct ReplayTools {
    steps: Mutex<VecDeque<ToolStep>>,
    plans: Mutex<VecDeque<PlanStep>>,
    total: usize,
    divergence: std::sync::Arc<Divergence>,
    read_dirs: bool,
}

impl ReplayTools {
    /// Results from `recorded`'s tool steps; no directory is granted.
    pub fn new(recorded: &Recorded, divergence: std::sync::Arc<Divergence>) -> Self {
        ReplayTools {
            steps: Mutex::new(recorded.tools.iter().cloned().collect()),
            plans: Mutex::new(recorded.plans.iter().cloned().collect()),
            total: recorded.tools.len(),
            divergence,
            read_dirs: false,
        }
    }

    /// Grant the agent the policy's directories, read-only (`--read-dirs`:
    /// the person asked for them, after they were shown).
    pub fn with_read_dirs(mut self, read_dirs: bool) -> Self {
        self.read_dirs = read_dirs;
        self
    }

    /// Whether the policy's directories are granted (read-only).
    pub fn read_dirs(&self) -> bool {
        self.read_dirs
    }

    /// Where the replay notes that it went differently.
    pub fn divergence(&self) -> &Divergence {
        &self.divergence
    }

    /// The recorded result of the next tool call, which the policy allowed
    /// now under `rule`, if the recorded run made this call and it ran;
    /// otherwise the divergence, as an error for the agent.
    pub fn next(&self, name: &str, arguments: &Value, rule: &str) -> Result<String, String> {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let call = self.total - steps.len() + 1;
        let Some(step) = steps.pop_front() else {
            let what = format!(
                "tool call {call}: the agent called `{name}` {arguments}; the recorded run made {} tool call(s)",
                self.total
            );
            self.divergence.note(what.clone());
            return Err(format!("replay diverged: {what}"));
        };
        if step.name != name || step.arguments != *arguments {
            let what = format!(
                "tool call {call}: the agent called `{name}` {arguments}; the recorded run called `{}` {}",
                step.name, step.arguments
            );
            self.divergence.note(what.clone());
            return Err(format!("replay diverged: {what}"));
        }
        if !step.permitted {
            // The same call, decided otherwise: the policy changed (or the
            // session did), and the record holds no result to give.
            let what = format!(
                "tool call {call} (`{name}`) was {} and is allowed now (rule {}); it did not run then, so the record holds no result to give the agent, and the replay gives it an error instead",
                step.decided(),
                crate::transcript::clean_line(rule),
            );
            self.divergence.note(what.clone());
            return Err(format!("replay diverged: {what}"));
        }
        step.result
    }

    /// Note that the policy refused a tool call now (`refusal` is what the
    /// agent gets): a divergence unless the recorded run made this call
    /// and it was refused then too.
    pub fn refused(&self, name: &str, arguments: &Value, refusal: &crate::gate::GuestError) {
        use crate::gate::GuestError;
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let call = self.total - steps.len() + 1;
        let how = match refusal {
            GuestError::Denied(_) => "denied",
            GuestError::BudgetExhausted(_) => "refused, a budget being spent",
            GuestError::Invalid(_) => "refused as invalid",
            GuestError::Failed(_) => "refused",
        };
        let reason = crate::transcript::clean_line(refusal.reason());
        let refusal = format!("{how}: {reason}");
        let Some(step) = steps.pop_front() else {
            self.divergence.note(format!(
                "tool call {call}: the agent called `{name}` {arguments} (refused now: {refusal}); the recorded run made {} tool call(s)",
                self.total
            ));
            return;
        };
        // A call refused for its arguments keeps them as text: only its
        // name is compared.
        let same_arguments = step.arguments == *arguments
            || (!step.permitted && (step.arguments.is_string() || arguments.is_string()));
        if step.name != name || !same_arguments {
            self.divergence.note(format!(
                "tool call {call}: the agent called `{name}` {arguments} (refused now: {refusal}); the recorded run called `{}` {}",
                step.name, step.arguments
            ));
        } else if step.permitted {
            self.divergence.note(format!(
                "tool call {call} (`{name}`) was {} and is {how} now: {reason}; the agent gets the refusal instead of the recorded result, so what it does next may differ",
                step.decided(),
            ));
        }
    }

    /// Note the plan the agent declared now (`tools`, as the gate records
    /// it) and whether the policy accepted it: a divergence unless the
    /// recorded run declared the same plan, decided the same way.
    pub fn planned(&self, tools: &Value, accepted: bool) {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let how = |accepted: bool| if accepted { "accepted" } else { "refused" };
        let shown = |tools: &Value| crate::transcript::clean_line(&tools.to_string());
        match plans.pop_front() {
            None => self.divergence.note(format!(
                "the agent declared the plan {} ({} now); the recorded run declared no further plan",
                shown(tools),
                how(accepted)
            )),
            Some(step) if step.tools != *tools || step.accepted != accepted => {
                self.divergence.note(format!(
                    "the agent declared the plan {} ({} now); the recorded run declared {} ({} then)",
                    shown(tools),
                    how(accepted),
                    shown(&step.tools),
                    how(step.accepted)
                ))
            }
            Some(_) => {}
        }
    }

    /// Recorded tool calls the replay never reached.
    pub fn left(&self) -> usize {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: u64, kind: Kind, event: Event, data: Value) -> Record {
        Record {
            seq,
            prev: String::new(),
            ts: String::new(),
            run: "r".into(),
            kind,
            event,
            subject: "t".into(),
            decision: Verdict::Allow,
            rule: "tools.t".into(),
            detail: String::new(),
            outcome: (event == Event::Outcome).then_some(Outcome::Ok),
            data: Some(data),
        }
    }

    #[test]
    fn a_run_whose_values_were_cut_is_not_replayed_from_their_start() {
        let start = record(1, Kind::Run, Event::Decision, json!({ "task": "t" }));
        let whole = vec![
            start.clone(),
            record(2, Kind::Tool, Event::Decision, json!({ "arguments": {} })),
            record(3, Kind::Tool, Event::Outcome, json!({ "result": "ok" })),
        ];
        assert_eq!(read(&whole, None).unwrap().tools.len(), 1);
        let cut = vec![
            start,
            record(2, Kind::Tool, Event::Decision, json!({ "arguments": {} })),
            record(
                3,
                Kind::Tool,
                Event::Outcome,
                json!({
                    "result": { "truncated": true, "bytes": 1, "sha256": "", "head": "" },
                    "truncated_fields": ["result"],
                }),
            ),
        ];
        let error = read(&cut, None).unwrap_err();
        assert!(
            error.contains("seq 3") && error.contains("audit_field"),
            "{error}"
        );
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: text.into(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            }],
            tools: Vec::new(),
            model: "m".into(),
            max_tokens: None,
            temperature: None,
        }
    }

    fn one_call(decision: Value) -> Recorded {
        let records = vec![
            record(1, Kind::Run, Event::Decision, json!({ "task": "t" })),
            record(2, Kind::Model, Event::Decision, decision),
            record(
                3,
                Kind::Model,
                Event::Outcome,
                json!({ "text": "same", "tool_calls": [] }),
            ),
        ];
        read(&records, None).unwrap()
    }

    #[tokio::test]
    async fn what_the_agent_sent_is_compared_not_only_what_it_got() {
        let sent = request("hello 1");
        let recorded = one_call(json!({
            "messages": 1, "tools": [], "request_sha256": sent.sha256(),
        }));
        assert_eq!(recorded.model[0].request_sha256, Some(sent.sha256()));
        let secrets = crate::secrets::Secrets::default();
        for (now, diverged) in [("hello 1", false), ("hello 2", true)] {
            let divergence = std::sync::Arc::new(Divergence::default());
            let model = ReplayModel::new(&recorded, divergence.clone());
            let answer = model.chat(&secrets.cleaned(request(now))).await.unwrap();
            assert_eq!(answer.message.content, "same");
            match divergence.first() {
                Some(what) => {
                    assert!(diverged, "{what}");
                    assert!(
                        what.contains("model call 1: the agent sent a different request")
                            && what.contains("1 message(s) and the same tools"),
                        "{what}"
                    );
                }
                None => assert!(!diverged, "{now} was not noticed"),
            }
        }
        // A log from before requests were hashed: only the count is
        // compared, and `request_sha256` is absent for main to say so.
        let old = one_call(json!({ "messages": 1 }));
        assert_eq!(old.model[0].request_sha256, None);
        let divergence = std::sync::Arc::new(Divergence::default());
        let model = ReplayModel::new(&old, divergence.clone());
        model
            .chat(&secrets.cleaned(request("other")))
            .await
            .unwrap();
        assert_eq!(divergence.first(), None);
    }

    /// A refused tool call as the gate records it: a decision and an
    /// outcome, written together.
    fn refusal(seq: u64, tool: &str, rule: &str, arguments: Value) -> Vec<Record> {
        let mut decision = record(
            seq,
            Kind::Tool,
            Event::Decision,
            json!({ "arguments": arguments }),
        );
        decision.subject = tool.into();
        decision.decision = Verdict::Deny;
        decision.rule = rule.into();
        decision.detail = format!("no (rule: {rule})");
        let mut outcome = decision.clone();
        outcome.seq = seq + 1;
        outcome.event = Event::Outcome;
        outcome.outcome = Some(Outcome::Denied);
        outcome.data = None;
        vec![decision, outcome]
    }

    fn ran(seq: u64, tool: &str, arguments: Value, result: &str) -> Vec<Record> {
        let mut decision = record(
            seq,
            Kind::Tool,
            Event::Decision,
            json!({ "arguments": arguments }),
        );
        decision.subject = tool.into();
        decision.rule = format!("tools.{tool}");
        let mut outcome = record(
            seq + 1,
            Kind::Tool,
            Event::Outcome,
            json!({ "result": result }),
        );
        outcome.subject = tool.into();
        outcome.rule = format!("tools.{tool}");
        vec![decision, outcome]
    }

    #[test]
    fn refused_calls_are_steps_with_their_decision() {
        let mut records = vec![record(
            1,
            Kind::Run,
            Event::Decision,
            json!({ "task": "t" }),
        )];
        records.extend(ran(2, "a", json!({ "x": 1 }), "one"));
        records.extend(refusal(4, "b", "tools.b.args.x", json!({ "x": 2 })));
        records.extend(ran(6, "a", json!({ "x": 3 }), "three"));
        let recorded = read(&records, None).unwrap();
        let steps: Vec<(&str, bool, &str)> = recorded
            .tools
            .iter()
            .map(|t| (t.name.as_str(), t.permitted, t.rule.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("a", true, "tools.a"),
                ("b", false, "tools.b.args.x"),
                ("a", true, "tools.a")
            ]
        );
        assert_eq!(recorded.tool_results(), 2);
    }

    #[test]
    fn a_decision_that_changed_is_reported_as_one() {
        let mut records = vec![record(
            1,
            Kind::Run,
            Event::Decision,
            json!({ "task": "t" }),
        )];
        records.extend(refusal(2, "b", "tools.b.args.x", json!({ "x": 2 })));
        records.extend(ran(4, "a", json!({}), "r"));
        let recorded = read(&records, None).unwrap();

        // Denied then, allowed now.
        let divergence = std::sync::Arc::new(Divergence::default());
        let tools = ReplayTools::new(&recorded, divergence.clone());
        let error = tools.next("b", &json!({ "x": 2 }), "tools.b").unwrap_err();
        let what = divergence.first().unwrap();
        assert!(error.contains(&what));
        assert!(
            what.starts_with(
                "tool call 1 (`b`) was denied in the recorded run (rule tools.b.args.x) and is allowed now (rule tools.b); it did not run then"
            ),
            "{what}"
        );
        assert!(!what.contains("the recorded run called"), "{what}");

        // Allowed then, denied now.
        let divergence = std::sync::Arc::new(Divergence::default());
        let tools = ReplayTools::new(&recorded, divergence.clone());
        tools.refused(
            "b",
            &json!({ "x": 2 }),
            &crate::gate::GuestError::Denied("no (rule: tools.b.args.x)".into()),
        );
        assert_eq!(divergence.first(), None, "refused both times");
        tools.refused(
            "a",
            &json!({}),
            &crate::gate::GuestError::Denied("not now (rule: tools.a)".into()),
        );
        let what = divergence.first().unwrap();
        assert!(
            what.starts_with(
                "tool call 2 (`a`) was allowed in the recorded run (rule tools.a) and is denied now: not now (rule: tools.a); the agent gets the refusal"
            ),
            "{what}"
        );
        assert_eq!(tools.left(), 0);
    }

    #[test]
    fn an_mcp_session_is_not_replayed_as_an_agent() {
        let mut start = record(
            1,
            Kind::Run,
            Event::Decision,
            json!({ "server": "mcp", "transport": "stdio" }),
        );
        start.subject = "mcp".into();
        let error = read(std::slice::from_ref(&start), None).unwrap_err();
        assert!(
            error.contains("`warden mcp` session") && error.contains("no agent"),
            "{error}"
        );
        assert!(is_mcp_session(&[start], "r"));
    }
}
