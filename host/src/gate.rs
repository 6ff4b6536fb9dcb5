//! The gate: the one place where a guest's request meets the policy.
//!
//! Every capability turns a guest call into a [`Request`], asks
//! [`Gate::check`], performs the effect only with the [`Permit`] it gets
//! back, and hands the permit to [`Gate::complete`]. The gate writes the
//! decision record before the effect and the outcome record after it, and
//! keeps the session (what the run has used) that budgets are checked
//! against. The gate never performs an effect itself, and nothing else
//! writes to the audit log.

use crate::audit::{AuditLog, Entry, Event, Kind, Outcome};
use crate::chat::Usage;
use crate::policy::{Decision, DenyKind, Policy, Request, Rule, Session, Verdict, printable};
use crate::secrets::{Redactions, Secrets};
use serde_json::{Value, json};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Why the host did not do what a guest asked: the host side of the WIT
/// `error` variant. A value the guest receives, never a trap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The policy refused.
    #[error("denied: {0}")]
    Denied(String),
    /// A budget is spent.
    #[error("budget exhausted: {0}")]
    BudgetExhausted(String),
    /// The request was malformed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The effect failed.
    #[error("failed: {0}")]
    Failed(String),
}

impl GuestError {
    /// The audit outcome that goes with this error.
    pub fn outcome(&self) -> Outcome {
        match self {
            GuestError::Denied(_) => Outcome::Denied,
            GuestError::BudgetExhausted(_) => Outcome::BudgetExhausted,
            GuestError::Invalid(_) => Outcome::Invalid,
            GuestError::Failed(_) => Outcome::Failed,
        }
    }

    /// The reason without the kind.
    pub fn reason(&self) -> &str {
        match self {
            GuestError::Denied(r)
            | GuestError::BudgetExhausted(r)
            | GuestError::Invalid(r)
            | GuestError::Failed(r) => r,
        }
    }
}

impl crate::secrets::Scrub for GuestError {
    fn scrub(&mut self, with: &mut crate::secrets::Scrubber<'_>) {
        match self {
            GuestError::Denied(r)
            | GuestError::BudgetExhausted(r)
            | GuestError::Invalid(r)
            | GuestError::Failed(r) => with.text(r),
        }
    }
}

/// Proof that the policy allowed a request; spend it with
/// [`Gate::complete`].
#[must_use = "an allowed request must be completed with Gate::complete"]
#[derive(Debug)]
pub struct Permit {
    kind: Kind,
    subject: String,
    rule: Rule,
    /// `allow`, or `ask` when a person approved it.
    verdict: Verdict,
}

impl Permit {
    /// The rule that allowed the request.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }
}

/// Decision records by kind and verdict (`{"tool": {"allow": 2}}`).
pub type Tally =
    std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, u32>>;

/// What a person said about an `ask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Go ahead, this once.
    Once,
    /// Go ahead, and with every later request under the same rules.
    ForRun,
    /// No.
    Deny,
}

/// A request the policy wants a person to approve.
#[derive(Debug)]
pub struct Question<'a> {
    /// What kind of request.
    pub kind: Kind,
    /// The tool, model or guest.
    pub subject: &'a str,
    /// Every rule that asks (a yes approves the call under all of them;
    /// "for the run" approves each of them for later calls).
    pub rules: &'a [Rule],
    /// Why it asks.
    pub reason: &'a str,
    /// The request's data (e.g. the tool's arguments).
    pub data: Option<&'a Value>,
    /// The session's labels.
    pub labels: &'a [String],
}

/// Who answers `ask` decisions: a person at a terminal, never a guest or
/// the model (they have no channel to it).
pub trait Approver: Send + Sync {
    /// Ask about one request; `None` when nobody can be asked.
    fn ask(&self, question: &Question<'_>) -> Option<Approval>;
}

/// Run a blocking `ask` without stalling the async runtime's other tasks.
fn block_while<T>(ask: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(ask)
        }
        _ => ask(),
    }
}

/// The gate of one run.
pub struct Gate {
    policy: Arc<Policy>,
    audit: AuditLog,
    state: Mutex<State>,
    started: Instant,
    secrets: Secrets,
    /// Who is asked about `ask` decisions.
    approver: Option<Arc<dyn Approver>>,
    /// Rules approved for the rest of the run, and by whom.
    approved: Mutex<std::collections::HashMap<String, String>>,
    /// Decision records by kind and verdict, for the run's summary.
    tally: Mutex<Tally>,
    /// The directory of each policy file, for relative paths in grants.
    dirs: Vec<std::path::PathBuf>,
}

#[derive(Default)]
struct State {
    session: Session,
    /// Log lines refused after the log budget ran out (recorded once).
    logs_dropped: u64,
}

impl Gate {
    /// A gate deciding by `policy` and recording to `audit`.
    pub fn new(policy: Arc<Policy>, audit: AuditLog) -> Self {
        Gate {
            policy,
            audit,
            state: Mutex::new(State::default()),
            started: Instant::now(),
            secrets: Secrets::default(),
            tally: Mutex::default(),
            approver: None,
            approved: Mutex::default(),
            dirs: Vec::new(),
        }
    }

    /// Ask `approver` about `ask` decisions; treat the rules in
    /// `pre_approved` (from `--approve RULE`) as approved for the run.
    pub fn with_approvals(
        mut self,
        approver: Option<Arc<dyn Approver>>,
        pre_approved: &[String],
    ) -> Self {
        self.approver = approver;
        let mut approved = self.approved.lock().unwrap_or_else(|e| e.into_inner());
        for rule in pre_approved {
            approved.insert(rule.clone(), format!("--approve {rule}"));
        }
        drop(approved);
        self
    }

    /// Resolve relative paths in file `i` of the policy against `dirs[i]`.
    pub fn with_dirs(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.dirs = dirs;
        self
    }

    /// The directory paths written in policy file `file` are relative to.
    pub fn dir_of(&self, file: usize) -> &std::path::Path {
        self.dirs
            .get(file)
            .or(self.dirs.first())
            .map_or(std::path::Path::new("."), |d| d.as_path())
    }

    /// Hold these secret values, to redact them from what leaves the host.
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// The run's secret values.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// `value` through the boundary's one redaction path (see
    /// [`Secrets::clean`]).
    pub fn clean<T: crate::secrets::Scrub>(&self, value: T) -> crate::secrets::Clean<T> {
        self.secrets.cleaned(value)
    }

    /// Write a record with every secret value scrubbed from it: whatever a
    /// guest passes around, no secret lands in the audit log.
    fn write(&self, mut entry: Entry) -> io::Result<u64> {
        if entry.event == Event::Decision && entry.kind != Kind::Run {
            let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
            *tally
                .entry(entry.kind.as_str())
                .or_default()
                .entry(entry.decision.as_str())
                .or_default() += 1;
        }
        if !self.secrets.is_empty() {
            let found = &mut Redactions::new();
            self.secrets.redact_in_place(&mut entry.subject, found);
            self.secrets.redact_in_place(&mut entry.detail, found);
            if let Some(data) = &mut entry.data {
                self.secrets.redact_json(data, found);
            }
        }
        self.audit.write(entry)
    }

    /// Make the audit log durable and return its head (the hash of the
    /// last record), at the end of a run.
    pub fn finish_audit(&self) -> io::Result<String> {
        let _order = self.lock();
        self.audit.sync()?;
        Ok(self.audit.head())
    }

    /// The policy this gate enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The run's id.
    pub fn run_id(&self) -> &str {
        self.audit.run()
    }

    /// What the run has used so far.
    pub fn session(&self) -> Session {
        self.lock().session.clone()
    }

    /// Decisions so far, by kind (`model`, `tool`, `http`, `log`) and verdict.
    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Log lines dropped because the log budget was spent.
    pub fn logs_dropped(&self) -> u64 {
        self.lock().logs_dropped
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters invalid
        // (each update is one statement), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decide `request` about `subject` and record the decision. On a
    /// refusal, also record the outcome and return the error for the guest.
    /// An `Err` means the audit log failed: the caller must stop the guest.
    pub fn check(
        &self,
        subject: &str,
        request: &Request<'_>,
        data: Option<Value>,
    ) -> io::Result<Result<Permit, GuestError>> {
        let kind = kind_of(request);
        let subject = printable(subject);
        // Deciding, counting and numbering the record happen under one lock,
        // so concurrent calls cannot overspend a budget and the log's order
        // is the order of decisions.
        let mut state = self.lock();
        state.session.now = self.started.elapsed();
        let decision = self.policy.decide(request, &state.session);
        match decision {
            Decision::Allow { rule } => {
                state.session.record(request);
                self.write(Entry {
                    kind,
                    event: Event::Decision,
                    subject: subject.clone(),
                    decision: Verdict::Allow,
                    rule: rule.to_string(),
                    detail: String::new(),
                    outcome: None,
                    data,
                })?;
                Ok(Ok(Permit {
                    kind,
                    subject,
                    rule,
                    verdict: Verdict::Allow,
                }))
            }
            Decision::Ask {
                rule,
                others,
                reason,
            } => {
                // Every rule that asks must be approved: one rule's approval
                // (`--approve tools.pay.ask_when_labeled`) does not cover
                // what another rule (an argument's) asked about.
                let asking: Vec<Rule> = std::iter::once(rule).chain(others).collect();
                let named = Rule::new(
                    asking
                        .iter()
                        .map(Rule::as_str)
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                // Approved already for this run (`--approve`, or a person
                // who said "always")? Otherwise ask, without holding the
                // lock: a person takes time.
                let standing = self.standing_approval(&asking);
                let by = match standing {
                    Some(by) => Ok(by),
                    None => {
                        let labels = state.session.labels.clone();
                        drop(state);
                        let answer =
                            self.ask_person(kind, &subject, &asking, &reason, &data, &labels);
                        state = self.lock();
                        answer
                    }
                };
                let by = match by {
                    Ok(by) => by,
                    Err(error) => {
                        self.write_refusal(kind, &subject, Verdict::Ask, &named, &error, data)?;
                        return Ok(Err(error));
                    }
                };
                // Budgets (or labels) may have moved while a person was
                // asked: decide again, and go ahead only if nothing asks
                // that was not approved.
                state.session.now = self.started.elapsed();
                let again = self.policy.decide(request, &state.session);
                match again {
                    Decision::Ask { .. } if again.rules().all(|r| asking.contains(r)) => {}
                    Decision::Allow { .. } => {}
                    Decision::Deny {
                        kind: DenyKind::Budget,
                        ..
                    } => {
                        let error = GuestError::BudgetExhausted(format!(
                            "{reason}; approved, but a budget ran out meanwhile (rule: {named})"
                        ));
                        self.write_refusal(kind, &subject, Verdict::Deny, &named, &error, data)?;
                        return Ok(Err(error));
                    }
                    _ => {
                        let error = GuestError::Denied(format!(
                            "{reason}; approved, but the decision changed meanwhile (rule: {})",
                            again.rules_text()
                        ));
                        self.write_refusal(kind, &subject, Verdict::Deny, &named, &error, data)?;
                        return Ok(Err(error));
                    }
                }
                state.session.record(request);
                let mut data = data.unwrap_or_else(|| json!({}));
                data["approved_by"] = json!(by);
                data["rules"] = json!(asking);
                self.write(Entry {
                    kind,
                    event: Event::Decision,
                    subject: subject.clone(),
                    decision: Verdict::Ask,
                    rule: named.to_string(),
                    detail: format!("{reason}; approved by {by}"),
                    outcome: None,
                    data: Some(data),
                })?;
                Ok(Ok(Permit {
                    kind,
                    subject,
                    rule: named,
                    verdict: Verdict::Ask,
                }))
            }
            Decision::Deny {
                rule,
                reason,
                kind: deny,
            } => {
                let text = format!("{reason} (rule: {rule})");
                let error = match deny {
                    DenyKind::Policy => GuestError::Denied(text),
                    DenyKind::Budget => GuestError::BudgetExhausted(text),
                    DenyKind::Invalid => GuestError::Invalid(text),
                };
                self.write_refusal(kind, &subject, Verdict::Deny, &rule, &error, data)?;
                Ok(Err(error))
            }
        }
    }

    /// Who approved every one of `asking` for the run already, or `None`
    /// when any of them is not approved.
    fn standing_approval(&self, asking: &[Rule]) -> Option<String> {
        let approved = self.approved.lock().unwrap_or_else(|e| e.into_inner());
        let mut by: Vec<&str> = Vec::new();
        for rule in asking {
            let who = approved.get(rule.as_str())?;
            if !by.contains(&who.as_str()) {
                by.push(who);
            }
        }
        Some(by.join(", "))
    }

    /// Ask the approver about an `ask` under the rules `asking`: who
    /// approved it, or the refusal for the guest (a person said no, or
    /// nobody could be asked).
    fn ask_person(
        &self,
        kind: Kind,
        subject: &str,
        asking: &[Rule],
        reason: &str,
        data: &Option<Value>,
        labels: &[String],
    ) -> Result<String, GuestError> {
        // A person reads the question on a terminal: it leaves the sandbox.
        let data = self.clean(data.clone());
        let shown = self.clean(reason.to_string());
        let question = Question {
            kind,
            subject,
            rules: asking,
            reason: &shown,
            data: data.as_ref(),
            labels,
        };
        let answer = match &self.approver {
            Some(approver) => block_while(|| approver.ask(&question)),
            None => None,
        };
        let names: Vec<&str> = asking.iter().map(Rule::as_str).collect();
        let cited = match names.as_slice() {
            [one] => format!("rule: {one}"),
            several => format!("rules: {}", several.join(", ")),
        };
        match answer {
            Some(Approval::Once) => Ok("a person, once".to_string()),
            Some(Approval::ForRun) => {
                let by = "a person, for the rest of the run".to_string();
                let mut approved = self.approved.lock().unwrap_or_else(|e| e.into_inner());
                for rule in asking {
                    approved
                        .entry(rule.to_string())
                        .or_insert_with(|| by.clone());
                }
                Ok(by)
            }
            Some(Approval::Deny) => Err(GuestError::Denied(format!(
                "{reason}; a person refused this call ({cited})"
            ))),
            None => Err(GuestError::Denied(format!(
                "{reason}; this call needs a person's approval and none was given: run warden in a terminal to be asked, or pre-approve with {} ({cited})",
                names
                    .iter()
                    .map(|rule| format!("--approve {rule}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        }
    }

    /// Record a request refused before the policy could see it (e.g. tool
    /// arguments that are not JSON), under the rule `rule`.
    pub fn refuse(
        &self,
        kind: Kind,
        subject: &str,
        rule: &str,
        error: GuestError,
        data: Option<Value>,
    ) -> io::Result<GuestError> {
        let _order = self.lock();
        self.write_refusal(
            kind,
            &printable(subject),
            Verdict::Deny,
            &Rule::new(rule),
            &error,
            data,
        )?;
        Ok(error)
    }

    fn write_refusal(
        &self,
        kind: Kind,
        subject: &str,
        verdict: Verdict,
        rule: &Rule,
        error: &GuestError,
        data: Option<Value>,
    ) -> io::Result<()> {
        self.write(Entry {
            kind,
            event: Event::Decision,
            subject: subject.to_string(),
            decision: verdict,
            rule: rule.to_string(),
            detail: error.reason().to_string(),
            outcome: None,
            data,
        })?;
        self.write(Entry {
            kind,
            event: Event::Outcome,
            subject: subject.to_string(),
            decision: verdict,
            rule: rule.to_string(),
            detail: error.to_string(),
            outcome: Some(error.outcome()),
            data: None,
        })?;
        Ok(())
    }

    /// Record what came of an allowed request.
    pub fn complete(
        &self,
        permit: Permit,
        outcome: Outcome,
        detail: impl Into<String>,
        data: Option<Value>,
    ) -> io::Result<()> {
        self.write(Entry {
            kind: permit.kind,
            event: Event::Outcome,
            subject: permit.subject,
            decision: permit.verdict,
            rule: permit.rule.to_string(),
            detail: detail.into(),
            outcome: Some(outcome),
            data,
        })?;
        Ok(())
    }

    /// A log line from `guest`. Within the log budget it is recorded (a
    /// decision and an outcome carrying the line); past it, the first
    /// refusal is recorded and later lines are counted, so a guest cannot
    /// flood the audit log.
    pub fn log(&self, guest: &str, level: &str, message: &str) -> io::Result<()> {
        let request = Request::Log {
            bytes: message.len() as u64,
        };
        {
            let mut state = self.lock();
            if state.logs_dropped > 0 {
                state.logs_dropped += 1;
                return Ok(());
            }
            if let Decision::Deny { .. } = self.policy.decide(&request, &state.session) {
                state.logs_dropped = 1;
            }
        }
        match self.check(guest, &request, Some(json!({ "level": level })))? {
            Ok(permit) => self.complete(permit, Outcome::Ok, message, None),
            Err(_) => Ok(()),
        }
    }

    /// The task reached the agent: index it as the `task` source.
    pub fn observe_task(&self, task: &str) {
        self.lock().session.observe_task(task);
    }

    /// A model answer reached the agent: count its usage and cost, label
    /// and index it. Returns the labels it added to the session.
    pub fn observe_model_output(&self, model: &str, text: &str, usage: Usage) -> Vec<String> {
        let mut state = self.lock();
        let before = state.session.labels.clone();
        state
            .session
            .observe_model_output(&self.policy, text, usage, model);
        added(&before, &state.session.labels)
    }

    /// A tool call was allowed: index its arguments as the model's, with
    /// the session's labels (see [`Session::observe_tool_call`]).
    pub fn observe_tool_call(&self, arguments: &Value) {
        self.lock().session.observe_tool_call(arguments);
    }

    /// A tool's result reached the agent: label and index it. Returns the
    /// labels it added to the session.
    pub fn observe_tool_result(
        &self,
        tool: &str,
        text: &str,
        extra_labels: &[String],
    ) -> Vec<String> {
        let mut state = self.lock();
        let before = state.session.labels.clone();
        state
            .session
            .observe_tool_result(&self.policy, tool, text, extra_labels);
        added(&before, &state.session.labels)
    }

    /// Record something that is not a guest request: the run's start and
    /// end, a limit that stopped a guest, captured stdio.
    pub fn note(&self, entry: Entry) -> io::Result<u64> {
        let _order = self.lock();
        self.write(entry)
    }
}

fn added(before: &[String], after: &[String]) -> Vec<String> {
    after
        .iter()
        .filter(|l| !before.contains(l))
        .cloned()
        .collect()
}

fn kind_of(request: &Request<'_>) -> Kind {
    match request {
        Request::Model { .. } => Kind::Model,
        Request::Tool { .. } => Kind::Tool,
        Request::Log { .. } => Kind::Log,
        Request::Http { .. } => Kind::Http,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemorySink;

    fn gate(policy: &str) -> (Gate, MemorySink) {
        let sink = MemorySink::default();
        let policy = Policy::parse("p.toml", policy).unwrap();
        (
            Gate::new(
                Arc::new(policy),
                AuditLog::new("r-test").with_sink(sink.clone()),
            ),
            sink,
        )
    }

    #[test]
    fn allowed_requests_leave_a_decision_and_an_outcome() {
        let (gate, sink) = gate("[tools.calc]\ncomponent = \"x\"\nmax_calls = 1\n");
        let args = json!({"expression": "1"});
        let request = Request::Tool {
            name: "calc",
            arguments: &args,
            schema: None,
        };
        let permit = gate.check("calc", &request, None).unwrap().unwrap();
        gate.complete(permit, Outcome::Ok, "1", None).unwrap();
        let err = gate.check("calc", &request, None).unwrap().unwrap_err();
        assert_eq!(
            err,
            GuestError::BudgetExhausted(
                "all 1 calls of tool `calc` in this run are used (rule: tools.calc.max_calls)"
                    .into()
            )
        );
        let records = sink.records();
        let summary: Vec<_> = records
            .iter()
            .map(|r| (r.seq, r.event, r.decision, r.rule.as_str(), r.outcome))
            .collect();
        assert_eq!(
            summary,
            [
                (1, Event::Decision, Verdict::Allow, "tools.calc", None),
                (
                    2,
                    Event::Outcome,
                    Verdict::Allow,
                    "tools.calc",
                    Some(Outcome::Ok)
                ),
                (
                    3,
                    Event::Decision,
                    Verdict::Deny,
                    "tools.calc.max_calls",
                    None
                ),
                (
                    4,
                    Event::Outcome,
                    Verdict::Deny,
                    "tools.calc.max_calls",
                    Some(Outcome::BudgetExhausted)
                ),
            ]
        );
    }

    #[test]
    fn a_log_flood_is_recorded_once() {
        let (gate, sink) = gate("[limits]\noutput = \"1KiB\"\n");
        for _ in 0..10_000 {
            gate.log("agent", "info", &"x".repeat(100)).unwrap();
        }
        let records = sink.records();
        // 10 lines fit in 1 KiB (two records each), then one refusal (two records).
        assert_eq!(records.len(), 22);
        assert_eq!(records[20].decision, Verdict::Deny);
        assert_eq!(records[20].rule, "limits.output");
        assert_eq!(gate.logs_dropped(), 10_000 - 10);
    }
}
