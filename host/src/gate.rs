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
use crate::policy::explain::{ApproveFrom, Explanation, Vouched};
use crate::policy::{Decision, DenyKind, Policy, Request, Rule, Session, Verdict, printable};
use crate::secrets::{Redactions, Secrets};
use serde_json::{Value, json};
use std::io;
use std::sync::{Arc, Mutex};
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

/// A request the policy wants a person to approve: owned, so an approver
/// can keep it (on a page, in a message) while the run waits.
///
/// Every string in it has passed the boundary's redaction
/// ([`Gate::clean`]); values and fields are guest text: show them quoted,
/// and on a web page only as text, never as markup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Question {
    /// What kind of request.
    pub kind: Kind,
    /// The tool, model or guest.
    pub subject: String,
    /// Every rule that asks (a yes approves the call under all of them;
    /// "for the run" approves each of them for later calls).
    pub rules: Vec<Rule>,
    /// Why it asks.
    pub reason: String,
    /// The request's data (e.g. the tool's arguments).
    pub data: Option<Value>,
    /// The session's labels.
    pub labels: Vec<String>,
    /// Each value that triggered the ask with where it was seen, and each
    /// label with what brought it: redacted, values cut to
    /// [`crate::policy::explain::SHOWN_CHARS`].
    pub explained: Explanation,
    /// Why `--approve-from` did not approve it, when it was given (warden's
    /// words around quoted field names).
    pub not_vouched: Option<String>,
    /// How long the gate waits for an answer (`[approvals] timeout`);
    /// after it the ask is refused as unanswered.
    #[serde(with = "humantime_serde_secs")]
    pub timeout: std::time::Duration,
}

/// `timeout` as whole seconds in JSON.
mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        value: &std::time::Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }
}

/// What came of asking: a person's answer, or why nobody gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A person answered.
    Answered {
        /// Their answer.
        approval: Approval,
        /// Who, when the channel knows (a token's name); recorded as
        /// `a person (NAME)`.
        by: Option<String>,
    },
    /// Nobody answered.
    Unanswered {
        /// Why, in warden's words (e.g. "3 asks of this run are already
        /// waiting"); `None` for "nobody can be asked here".
        why: Option<String>,
    },
}

impl From<Option<Approval>> for Reply {
    fn from(answer: Option<Approval>) -> Self {
        match answer {
            Some(approval) => Reply::Answered { approval, by: None },
            None => Reply::Unanswered { why: None },
        }
    }
}

/// An answer on its way: what [`Approver::ask`] returns.
pub type Asking = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + 'static>>;

/// Who answers `ask` decisions: a person at a terminal, on a web page or in
/// an MCP client, never a guest or the model (they have no channel to it).
///
/// `ask` returns at once with a future; the gate awaits it without holding
/// a thread or its lock, and for at most the question's `timeout` (the
/// future is dropped then: an approver must let go of the ask on drop).
pub trait Approver: Send + Sync {
    /// Ask about one request.
    fn ask(&self, question: Question) -> Asking;
}

/// An ask decided up to the point of asking a person: what the answer is
/// checked and recorded with.
struct Pending {
    kind: Kind,
    subject: String,
    data: Option<Value>,
    /// Every rule that asks, and their names joined (the record's rule).
    asking: Vec<Rule>,
    named: Rule,
    reason: String,
    /// What triggered it, redacted and cut.
    shown: Explanation,
    approved_from: Option<Vec<(String, String)>>,
    labels: Vec<String>,
    not_vouched: Option<String>,
}

/// How far [`Gate::decide_first`] got.
enum First {
    /// Decided (allowed, refused, or approved without a person).
    Done(Result<Permit, GuestError>),
    /// A person must be asked.
    Ask(Box<Pending>),
}

/// A tool call's record data with where each argument value came from
/// (`data.sources`), for `warden policy learn`.
fn with_sources(data: Option<Value>, request: &Request<'_>, session: &Session) -> Option<Value> {
    let Request::Tool { arguments, .. } = request else {
        return data;
    };
    let mut data = data.unwrap_or_else(|| json!({}));
    data["sources"] = crate::policy::explain::argument_sources(&session.provenance, arguments);
    Some(data)
}

/// The values of `explained` that `reason` does not already show (an
/// argument rule's reason names its value), as `; values: ...`, or nothing.
fn unexplained(reason: &str, explained: &Explanation) -> String {
    let rest = Explanation {
        values: explained
            .values
            .iter()
            .filter(|v| {
                let (field, value) = (printable(&v.field), printable(&v.value));
                // Strings are quoted in a rule's reason, numbers are not.
                !reason.contains(&format!("`{field}` is `{value}`"))
                    && !reason.contains(&format!("`{field}` is {value},"))
            })
            .cloned()
            .collect(),
        labels: Vec::new(),
        unlisted: explained.unlisted,
    };
    if rest.values.is_empty() && rest.unlisted == 0 {
        return String::new();
    }
    format!("; values: {}", rest.summary(4))
}

/// One of a run's asks waiting for a person, counted while it lives.
struct AskSlot<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> AskSlot<'a> {
    fn take(count: &'a std::sync::atomic::AtomicU32, most: u32) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < most).then_some(n + 1)
            })
            .ok()
            .map(|_| AskSlot(count))
    }
}

impl Drop for AskSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// `rule: a` or `rules: a, b`.
fn cited(asking: &[Rule]) -> String {
    let names: Vec<&str> = asking.iter().map(Rule::as_str).collect();
    match names.as_slice() {
        [one] => format!("rule: {one}"),
        several => format!("rules: {}", several.join(", ")),
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
    /// Asks of this run waiting for a person now (at most `[approvals]
    /// max_pending`).
    asks_waiting: std::sync::atomic::AtomicU32,
    /// Rules approved for the rest of the run, and by whom.
    approved: Mutex<std::collections::HashMap<String, String>>,
    /// `--approve-from SOURCE`: an ask is approved when every value that
    /// triggered it came from one of these.
    approve_from: Vec<ApproveFrom>,
    /// Decision records by kind and verdict, for the run's summary.
    tally: Mutex<Tally>,
    /// The directory of each policy file, for relative paths in grants.
    dirs: Vec<std::path::PathBuf>,
    /// Instances started per guest (one name per tool of the policy, and
    /// the agent), for `[reproducible]` seeds.
    instances: Mutex<std::collections::HashMap<String, u64>>,
    /// In a replay: the recorded results, and the promise that no guest
    /// touches anything outside the host.
    replay: Option<Arc<crate::replay::ReplayTools>>,
}

/// The session's lock, held: timed only with `--features lock-timing`.
#[cfg(not(feature = "lock-timing"))]
type StateGuard<'a> = std::sync::MutexGuard<'a, State>;
#[cfg(feature = "lock-timing")]
type StateGuard<'a> = lock_timing::Held<'a, State>;

#[derive(Default)]
struct State {
    session: Session,
    /// Log lines refused after the log budget ran out (recorded once).
    logs_dropped: u64,
    /// Whether the refusal of the spent refusal budget is recorded.
    refusals_spent_recorded: bool,
    /// Requests refused without a record after that.
    refusals_unrecorded: u64,
    /// Bytes of captured stdio recorded, and counted without a record.
    stdio_recorded: u64,
    stdio_unrecorded: u64,
    /// Whether the spent stdio budget is recorded.
    stdio_spent_recorded: bool,
    /// Whether the full provenance index is recorded.
    index_full_recorded: bool,
    /// Linear memory of the per-run instances kept now, and at most.
    kept_memory: u64,
    kept_memory_peak: u64,
    /// Per-run instances torn down by a limit or trap.
    instance_resets: u64,
}

/// What a run has spent of its ledger besides the policy's budgets, for its
/// end record.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ledger {
    /// Model and tool calls, allowed or refused.
    pub steps: u32,
    /// Refused requests, recorded or only counted.
    pub refusals: u32,
    /// Refused requests that left no record (after `limits.max_refusals`).
    pub refusals_unrecorded: u64,
    /// Bytes of guests' stdout and stderr recorded.
    pub stdio_recorded: u64,
    /// Bytes of guests' stdout and stderr counted, not recorded.
    pub stdio_unrecorded: u64,
    /// Log lines dropped after the log budget was spent.
    pub logs_dropped: u64,
    /// The provenance index's memory, as charged.
    pub index_bytes: u64,
    /// Whether the index filled (later data was not indexed).
    pub index_full: bool,
    /// Most bytes of linear memory held at once by the per-run instances
    /// kept between calls (`instance = "per-run"`).
    pub kept_memory_peak: u64,
    /// Per-run instances torn down by a limit or trap (the next call got
    /// a fresh one).
    pub instance_resets: u64,
}

impl Gate {
    /// A gate deciding by `policy` and recording to `audit`.
    pub fn new(policy: Arc<Policy>, audit: AuditLog) -> Self {
        let mut state = State::default();
        state.session.provenance =
            crate::policy::provenance::Provenance::with_limit(policy.limits.index);
        Gate {
            policy,
            audit,
            state: Mutex::new(state),
            started: Instant::now(),
            secrets: Secrets::default(),
            tally: Mutex::default(),
            approver: None,
            asks_waiting: std::sync::atomic::AtomicU32::new(0),
            approved: Mutex::default(),
            approve_from: Vec::new(),
            dirs: Vec::new(),
            instances: Mutex::default(),
            replay: None,
        }
    }

    /// How many instances of `name` this run started before this one: 0
    /// for the first. With calls made one after another (as an agent makes
    /// them), the same in every run.
    pub fn instance_number(&self, name: &str) -> u64 {
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        let n = instances.entry(name.to_string()).or_default();
        let this = *n;
        *n += 1;
        this
    }

    /// Make this gate a replay's: every guest's effects are answered from
    /// `replay` or refused (see [`crate::replay`]).
    pub fn with_replay(mut self, replay: Option<Arc<crate::replay::ReplayTools>>) -> Self {
        self.replay = replay;
        self
    }

    /// The replay this gate serves, if it is one.
    pub fn replay(&self) -> Option<&crate::replay::ReplayTools> {
        self.replay.as_deref()
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

    /// Approve an ask when every value that triggered it came from one of
    /// `sources` (`--approve-from SOURCE`): once per call, never for the run.
    pub fn with_approve_from(mut self, sources: Vec<ApproveFrom>) -> Self {
        self.approve_from = sources;
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

    /// Write a record, sealed ([`Gate::seal`]): every record goes through
    /// here, so none can carry a secret or an unbounded value.
    fn write(&self, entry: Entry) -> io::Result<u64> {
        if entry.event == Event::Decision && entry.kind != Kind::Run {
            let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
            *tally
                .entry(entry.kind.as_str())
                .or_default()
                .entry(entry.decision.as_str())
                .or_default() += 1;
        }
        self.audit.write(self.seal(entry))
    }

    /// A record as it may be stored: every secret value scrubbed from it
    /// (whatever a guest passes around, no secret lands in the audit log),
    /// then every field bounded to `[limits] audit_field` (a longer value
    /// is kept as its start, size and SHA-256; see [`crate::audit::bound`]).
    /// Scrubbing comes first, so neither the start nor the hash can carry
    /// a secret. Sealing a sealed record changes nothing, so callers seal
    /// large data before they take the lock, and `write` only re-checks.
    fn seal(&self, mut entry: Entry) -> Entry {
        if !self.secrets.is_empty() {
            let found = &mut Redactions::new();
            self.secrets.redact_in_place(&mut entry.subject, found);
            self.secrets.redact_in_place(&mut entry.detail, found);
            if let Some(data) = &mut entry.data {
                self.secrets.redact_json(data, found);
            }
        }
        let max = usize::try_from(self.policy.limits.audit_field).unwrap_or(usize::MAX);
        crate::audit::bound::bound_entry(&mut entry, max);
        entry
    }

    /// `data` sealed as a record's would be, before any lock is taken:
    /// hashing megabytes must not stall other guests' decisions.
    fn seal_data(&self, data: Option<Value>) -> Option<Value> {
        let data = data?;
        self.seal(Entry {
            kind: Kind::Run,
            event: Event::Outcome,
            subject: String::new(),
            decision: Verdict::Allow,
            rule: String::new(),
            detail: String::new(),
            outcome: None,
            data: Some(data),
        })
        .data
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

    /// What the run has spent of its ledger.
    pub fn ledger(&self) -> Ledger {
        let state = self.lock();
        Ledger {
            steps: state.session.steps,
            refusals: state.session.refusals,
            refusals_unrecorded: state.refusals_unrecorded,
            stdio_recorded: state.stdio_recorded,
            stdio_unrecorded: state.stdio_unrecorded,
            logs_dropped: state.logs_dropped,
            index_bytes: state.session.provenance.used(),
            index_full: state.session.provenance.is_full(),
            kept_memory_peak: state.kept_memory_peak,
            instance_resets: state.instance_resets,
        }
    }

    /// A per-run instance kept between calls now holds `now` bytes of
    /// linear memory where it held `before` (0 when new; `now` 0 when torn
    /// down, `reset` when a limit or trap did it): the run's ledger keeps
    /// the peak of all kept instances together.
    pub fn charge_kept(&self, before: u64, now: u64, reset: bool) {
        let mut state = self.lock();
        state.kept_memory = state.kept_memory.saturating_sub(before).saturating_add(now);
        state.kept_memory_peak = state.kept_memory_peak.max(state.kept_memory);
        if reset {
            state.instance_resets += 1;
        }
    }

    fn lock(&self) -> StateGuard<'_> {
        #[cfg(feature = "lock-timing")]
        let asked = Instant::now();
        // A panic while holding the lock cannot leave the counters invalid
        // (each update is one statement), so a poisoned lock is still usable.
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(feature = "lock-timing")]
        let guard = lock_timing::Held::new(guard, asked);
        guard
    }

    /// Decide `request` about `subject` and record the decision. On a
    /// refusal, also record the outcome and return the error for the guest.
    /// An `Err` means the audit log failed: the caller must stop the guest.
    ///
    /// When the policy asks and nothing approved the request already, the
    /// approver is asked and awaited (at most `[approvals] timeout`) with no
    /// lock held and no thread blocked; the decision is recorded after the
    /// answer and before the effect.
    pub async fn check(
        &self,
        subject: &str,
        request: &Request<'_>,
        data: Option<Value>,
    ) -> io::Result<Result<Permit, GuestError>> {
        match self.decide_first(subject, request, data)? {
            First::Done(result) => Ok(result),
            First::Ask(pending) => {
                let by = self.ask_person(&pending).await;
                self.decide_again(request, *pending, by)
            }
        }
    }

    /// [`Gate::check`] where nobody can be waited for (a request that can
    /// never ask, such as a log line): an ask that needs a person is
    /// refused as unanswered.
    pub fn check_now(
        &self,
        subject: &str,
        request: &Request<'_>,
        data: Option<Value>,
    ) -> io::Result<Result<Permit, GuestError>> {
        match self.decide_first(subject, request, data)? {
            First::Done(result) => Ok(result),
            First::Ask(pending) => {
                let by = Err(self.unanswered(&pending, None));
                self.decide_again(request, *pending, by)
            }
        }
    }

    /// Decide, and record unless a person must be asked first.
    fn decide_first(
        &self,
        subject: &str,
        request: &Request<'_>,
        data: Option<Value>,
    ) -> io::Result<First> {
        let kind = kind_of(request);
        let subject = printable(subject);
        let data = self.seal_data(data);
        // Schema validation needs no session: it runs here, on the caller's
        // time, before the lock, so one call's large arguments hold up no
        // other call.
        let invalid = self.policy.validate(request);
        let request = &request.validated();
        // Deciding, counting and numbering the record happen under one lock,
        // so concurrent calls cannot overspend a budget and the log's order
        // is the order of decisions.
        let mut state = self.lock();
        state.session.now = self.started.elapsed();
        let decision = match invalid {
            Some(invalid) if self.policy.refusals_spent(&state.session).is_none() => invalid,
            _ => self.policy.decide(request, &state.session),
        };
        match decision {
            Decision::Allow { rule } => {
                state.session.record(&self.policy, request);
                let data = with_sources(data, request, &state.session);
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
                Ok(First::Done(Ok(Permit {
                    kind,
                    subject,
                    rule,
                    verdict: Verdict::Allow,
                })))
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
                // What triggered the ask and where it was seen, for the
                // person, the record and `--approve-from`: bounded, and
                // computed from the raw values; redacted, then cut.
                let explained = match request {
                    Request::Tool {
                        name, arguments, ..
                    } => self
                        .policy
                        .explain_ask(name, arguments, &state.session, &asking),
                    _ => Explanation::default(),
                };
                let vouched = match standing {
                    None if !self.approve_from.is_empty() => {
                        Some(explained.vouched(&state.session.provenance, &self.approve_from))
                    }
                    _ => None,
                };
                let shown = self.clean(explained).map(Explanation::cut).into_inner();
                let labels = state.session.labels.clone();
                drop(state);
                let mut pending = Pending {
                    kind,
                    subject,
                    data,
                    asking,
                    named,
                    reason,
                    shown,
                    approved_from: None,
                    labels,
                    not_vouched: None,
                };
                let by = match (standing, vouched) {
                    (Some(by), _) => by,
                    (None, Some(Vouched::Yes(matched))) => {
                        let mut sources: Vec<&str> = Vec::new();
                        for (_, source) in &matched {
                            if !sources.contains(&source.as_str()) {
                                sources.push(source);
                            }
                        }
                        let by = format!("--approve-from {}", sources.join(", --approve-from "));
                        pending.approved_from = Some(matched);
                        by
                    }
                    (None, vouched) => {
                        pending.not_vouched = match vouched {
                            Some(Vouched::No(why)) => Some(format!(
                                "--approve-from {} does not cover it: {why}",
                                self.approve_from
                                    .iter()
                                    .map(|s| s.text.as_str())
                                    .collect::<Vec<_>>()
                                    .join(" --approve-from ")
                            )),
                            _ => None,
                        };
                        return Ok(First::Ask(Box::new(pending)));
                    }
                };
                self.decide_again(request, pending, Ok(by)).map(First::Done)
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
                self.write_refusal(
                    &mut state,
                    kind,
                    &subject,
                    Verdict::Deny,
                    &rule,
                    &error,
                    data,
                )?;
                Ok(First::Done(Err(error)))
            }
        }
    }

    /// After an ask was answered (`by`: who approved it, or the refusal):
    /// record a refusal, or decide again (budgets or labels may have moved
    /// while a person was asked) and record the approval.
    fn decide_again(
        &self,
        request: &Request<'_>,
        pending: Pending,
        by: Result<String, GuestError>,
    ) -> io::Result<Result<Permit, GuestError>> {
        let Pending {
            kind,
            subject,
            data,
            asking,
            named,
            reason,
            shown,
            approved_from,
            ..
        } = pending;
        let request = &request.validated();
        let mut state = self.lock();
        let asked = serde_json::to_value(&shown).unwrap_or(Value::Null);
        let by = match by {
            Ok(by) => by,
            Err(error) => {
                let mut data = data.unwrap_or_else(|| json!({}));
                data["asked"] = asked;
                self.write_refusal(
                    &mut state,
                    kind,
                    &subject,
                    Verdict::Ask,
                    &named,
                    &error,
                    Some(data),
                )?;
                return Ok(Err(error));
            }
        };
        // Go ahead only if nothing asks now that was not approved.
        state.session.now = self.started.elapsed();
        let again = self.policy.decide(request, &state.session);
        let changed = match again {
            Decision::Ask { .. } if again.rules().all(|r| asking.contains(r)) => None,
            Decision::Allow { .. } => None,
            Decision::Deny {
                kind: DenyKind::Budget,
                ..
            } => Some(GuestError::BudgetExhausted(format!(
                "{reason}; approved, but a budget ran out meanwhile (rule: {named})"
            ))),
            _ => Some(GuestError::Denied(format!(
                "{reason}; approved, but the decision changed meanwhile (rule: {})",
                again.rules_text()
            ))),
        };
        if let Some(error) = changed {
            self.write_refusal(
                &mut state,
                kind,
                &subject,
                Verdict::Deny,
                &named,
                &error,
                data,
            )?;
            return Ok(Err(error));
        }
        state.session.record(&self.policy, request);
        let mut data = with_sources(data, request, &state.session).unwrap_or_else(|| json!({}));
        data["approved_by"] = json!(by);
        data["rules"] = json!(asking);
        data["asked"] = asked;
        if let Some(matched) = approved_from {
            data["approved_from"] = matched
                .iter()
                .map(|(field, source)| json!({ "field": field, "source": source }))
                .collect();
        }
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

    /// Ask the approver about `pending` and wait, at most `[approvals]
    /// timeout`: who approved it, or the refusal for the guest (a person
    /// said no, or nobody answered).
    async fn ask_person(&self, pending: &Pending) -> Result<String, GuestError> {
        let Some(approver) = &self.approver else {
            return Err(self.unanswered(pending, None));
        };
        let timeout = self.policy.approvals.timeout;
        // Concurrent calls of one run could each wait for a person: at
        // most `max_pending` do; the next is refused at once.
        let Some(_waiting) = AskSlot::take(&self.asks_waiting, self.policy.approvals.max_pending)
        else {
            let most = self.policy.approvals.max_pending;
            return Err(self.unanswered(
                pending,
                Some(format!(
                    "{most} asks of this run are already waiting for a person, the most the policy allows (approvals.max_pending)"
                )),
            ));
        };
        // A person reads the question: it leaves the sandbox.
        let question = Question {
            kind: pending.kind,
            subject: pending.subject.clone(),
            rules: pending.asking.clone(),
            reason: self.clean(pending.reason.clone()).into_inner(),
            data: self.clean(pending.data.clone()).into_inner(),
            labels: pending.labels.clone(),
            explained: pending.shown.clone(),
            not_vouched: pending.not_vouched.clone(),
            timeout,
        };
        let asking = approver.ask(question);
        // Without a timer (no tokio runtime) the approver's own bound holds.
        let reply = match tokio::runtime::Handle::try_current() {
            Ok(_) => match tokio::time::timeout(timeout, asking).await {
                Ok(reply) => reply,
                Err(_) => Reply::Unanswered {
                    why: Some(format!(
                        "nobody answered within {} (approvals.timeout)",
                        crate::policy::HumanDuration(timeout)
                    )),
                },
            },
            Err(_) => asking.await,
        };
        let cited = cited(&pending.asking);
        let who = |by: &Option<String>| match by {
            Some(name) => format!(
                "a person ({})",
                crate::capability::brief(&printable(name), 80)
            ),
            None => "a person".to_string(),
        };
        match reply {
            Reply::Answered {
                approval: Approval::Once,
                by,
            } => Ok(format!("{}, once", who(&by))),
            Reply::Answered {
                approval: Approval::ForRun,
                by,
            } => {
                let by = format!("{}, for the rest of the run", who(&by));
                let mut approved = self.approved.lock().unwrap_or_else(|e| e.into_inner());
                for rule in &pending.asking {
                    approved
                        .entry(rule.to_string())
                        .or_insert_with(|| by.clone());
                }
                Ok(by)
            }
            Reply::Answered {
                approval: Approval::Deny,
                by,
            } => Err(GuestError::Denied(format!(
                "{}; {} refused this call ({cited})",
                pending.reason,
                who(&by)
            ))),
            Reply::Unanswered { why } => Err(self.unanswered(pending, why)),
        }
    }

    /// The refusal of an ask nobody answered: what triggered it, and how
    /// it could be approved (`why`, or by default the terminal and
    /// `--approve`).
    fn unanswered(&self, pending: &Pending, why: Option<String>) -> GuestError {
        let why = why.unwrap_or_else(|| {
            format!(
                "run warden in a terminal to be asked, or pre-approve with {}",
                pending
                    .asking
                    .iter()
                    .map(|rule| format!("--approve {rule}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        });
        GuestError::Denied(format!(
            "{}{}{}; this call needs a person's approval and none was given: {why} ({})",
            pending.reason,
            unexplained(&pending.reason, &pending.shown),
            pending
                .not_vouched
                .as_deref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default(),
            cited(&pending.asking),
        ))
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
        let data = self.seal_data(data);
        let mut state = self.lock();
        // Past the refusal budget, every refusal is that budget's.
        let (rule, error) = match self.policy.refusals_spent(&state.session) {
            Some(Decision::Deny { rule, reason, .. }) => (
                rule.clone(),
                GuestError::BudgetExhausted(format!("{reason} (rule: {rule})")),
            ),
            _ => (Rule::new(rule), error),
        };
        self.write_refusal(
            &mut state,
            kind,
            &printable(subject),
            Verdict::Deny,
            &rule,
            &error,
            data,
        )?;
        Ok(error)
    }

    /// Count a refusal and record it: a decision and an outcome. Once the
    /// run's refusal budget is spent, only the first refusal after it is
    /// recorded (naming `limits.max_refusals`); later ones are counted, so
    /// a guest that keeps asking cannot grow the audit log.
    #[allow(clippy::too_many_arguments)]
    fn write_refusal(
        &self,
        state: &mut State,
        kind: Kind,
        subject: &str,
        verdict: Verdict,
        rule: &Rule,
        error: &GuestError,
        data: Option<Value>,
    ) -> io::Result<()> {
        let spent = self.policy.refusals_spent(&state.session).is_some();
        state
            .session
            .count_refusal(matches!(kind, Kind::Model | Kind::Tool));
        if spent {
            if state.refusals_spent_recorded {
                state.refusals_unrecorded += 1;
                return Ok(());
            }
            state.refusals_spent_recorded = true;
        }
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
        // A log line is never asked about: decided at once.
        match self.check_now(guest, &request, Some(json!({ "level": level })))? {
            Ok(permit) => self.complete(permit, Outcome::Ok, message, None),
            Err(_) => Ok(()),
        }
    }

    /// The task reached the agent: index it as the `task` source.
    pub fn observe_task(&self, task: &str) -> io::Result<()> {
        let mut state = self.lock();
        state.session.observe_task(task);
        self.note_index_full(&mut state)
    }

    /// A model answer reached the agent: count its usage and cost, label
    /// and index it. Returns the labels it added to the session.
    pub fn observe_model_output(
        &self,
        model: &str,
        text: &str,
        usage: Usage,
    ) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        let before = state.session.labels.clone();
        state
            .session
            .observe_model_output(&self.policy, text, usage, model);
        self.note_index_full(&mut state)?;
        Ok(added(&before, &state.session.labels))
    }

    /// A response to the agent's own HTTP request arrived under a rule
    /// with `labels`: the agent reads it directly, so the session carries
    /// them from now on (a tool's go with its result instead). Returns the
    /// labels added.
    pub fn label_session(&self, labels: &[String]) -> Vec<String> {
        let mut state = self.lock();
        let before = state.session.labels.clone();
        state.session.add_labels(labels);
        added(&before, &state.session.labels)
    }

    /// A tool call was allowed: index its arguments as the model's, with
    /// the session's labels (see [`Session::observe_tool_call`]).
    pub fn observe_tool_call(&self, arguments: &Value) -> io::Result<()> {
        let mut state = self.lock();
        state.session.observe_tool_call(arguments);
        self.note_index_full(&mut state)
    }

    /// A tool call was allowed and goes ahead: the labels its arguments
    /// carry flow into its stores and its result (see
    /// [`Session::flow_into_call`]). Returns the labels its result
    /// inherits. Before [`Gate::observe_tool_call`].
    pub fn flow_into_call(&self, tool: &str, arguments: &Value) -> Vec<String> {
        let mut state = self.lock();
        state.session.flow_into_call(&self.policy, tool, arguments)
    }

    /// Once, when the provenance index has filled: say so, and what it
    /// means for `from` rules.
    fn note_index_full(&self, state: &mut State) -> io::Result<()> {
        let index = &state.session.provenance;
        if !index.is_full() || state.index_full_recorded {
            return Ok(());
        }
        state.index_full_recorded = true;
        let data = json!({ "bytes": index.used(), "limit": index.limit(), "tokens": index.len() });
        self.write(Entry {
            kind: Kind::Limit,
            event: Event::Outcome,
            subject: "provenance".into(),
            decision: Verdict::Deny,
            rule: "limits.index".into(),
            detail: format!(
                "the provenance index is full ({}): later data is not indexed, so a value seen only after this fails `from` rules",
                crate::policy::ByteSize(index.limit())
            ),
            outcome: Some(Outcome::BudgetExhausted),
            data: Some(data),
        })?;
        Ok(())
    }

    /// A tool's result reached the agent: label and index it by what it
    /// came from (see [`Session::observe_tool_result_from`]). Returns the
    /// labels it added to the session.
    pub fn observe_tool_result_from(
        &self,
        tool: &str,
        text: &str,
        origin: &crate::policy::ResultOrigin<'_>,
    ) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        let before = state.session.labels.clone();
        state
            .session
            .observe_tool_result_from(&self.policy, tool, text, origin);
        self.note_index_full(&mut state)?;
        Ok(added(&before, &state.session.labels))
    }

    /// A tool's result reached the agent: label and index it. Returns the
    /// labels it added to the session.
    pub fn observe_tool_result(
        &self,
        tool: &str,
        text: &str,
        extra_labels: &[String],
    ) -> io::Result<Vec<String>> {
        let mut state = self.lock();
        let before = state.session.labels.clone();
        state
            .session
            .observe_tool_result(&self.policy, tool, text, extra_labels);
        self.note_index_full(&mut state)?;
        Ok(added(&before, &state.session.labels))
    }

    /// Record something that is not a guest request: the run's start and
    /// end, a limit that stopped a guest, captured stdio.
    pub fn note(&self, entry: Entry) -> io::Result<u64> {
        let entry = self.seal(entry);
        let _order = self.lock();
        self.write(entry)
    }

    /// What a guest wrote to one stream (`subject` is e.g. `agent/stdout`):
    /// `captured`, and `dropped` bytes past the instance's capture. Recorded
    /// within the run's stdio budget (`[limits] stdio`, all instances
    /// together) and each record's field bound; past the budget, output is
    /// counted, not recorded, and one record says so.
    pub fn stdio(&self, subject: String, captured: &[u8], dropped: u64) -> io::Result<()> {
        let total = (captured.len() as u64).saturating_add(dropped);
        let limit = self.policy.limits.stdio;
        let field = self.policy.limits.audit_field.saturating_sub(256);
        let mut state = self.lock();
        let room = limit.saturating_sub(state.stdio_recorded).min(field);
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        let text =
            String::from_utf8_lossy(captured.get(..room.min(captured.len())).unwrap_or_default());
        // One record's field holds `field` bytes of JSON (escapes count).
        let field = usize::try_from(field).unwrap_or(usize::MAX);
        let text = crate::audit::bound::escaped_prefix(&text, field);
        // The budget charges the bytes the record holds: invalid UTF-8 turns
        // into longer replacement characters, so cut again, on a character.
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = text.get(..end).unwrap_or_default();
        let recorded = text.len() as u64;
        state.stdio_recorded += recorded;
        state.stdio_unrecorded += total - recorded.min(total);
        if recorded == 0 {
            if state.stdio_spent_recorded || limit > 0 && state.stdio_recorded < limit {
                return Ok(());
            }
            state.stdio_spent_recorded = true;
            self.write(Entry {
                kind: Kind::Stdio,
                event: Event::Outcome,
                subject,
                decision: Verdict::Deny,
                rule: "limits.stdio".into(),
                detail: format!(
                    "the run's stdio budget of {} is spent: later output of every guest is counted, not recorded",
                    crate::policy::ByteSize(limit)
                ),
                outcome: Some(Outcome::BudgetExhausted),
                data: Some(json!({ "bytes": total })),
            })?;
            return Ok(());
        }
        let mut detail = text.to_string();
        if recorded < total {
            detail.push_str(&format!("\n[{} more bytes not recorded]", total - recorded));
        }
        self.write(Entry {
            kind: Kind::Stdio,
            event: Event::Outcome,
            subject,
            decision: Verdict::Allow,
            rule: "stdio".into(),
            detail,
            outcome: Some(Outcome::Ok),
            data: Some(json!({ "bytes": total, "recorded": recorded })),
        })?;
        Ok(())
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
        Request::Plan { .. } => Kind::Plan,
        Request::Http { .. } => Kind::Http,
    }
}

/// How long the gate's session lock is waited for and held, for
/// `benches/concurrency.rs`: built only with `--features lock-timing`, so a
/// normal build pays nothing for it. The counters are the process's (every
/// gate's), in atomics: timing must not add a lock of its own.
#[cfg(feature = "lock-timing")]
pub mod lock_timing {
    use std::ops::{Deref, DerefMut};
    use std::sync::MutexGuard;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// Width of one histogram bucket.
    const BUCKET_NS: u64 = 100;
    /// Buckets: 0 to 100 us in steps of 100 ns; the last holds the rest.
    const BUCKETS: usize = 1001;

    struct Counters {
        acquired: AtomicU64,
        wait_ns: AtomicU64,
        hold_ns: AtomicU64,
        max_wait_ns: AtomicU64,
        max_hold_ns: AtomicU64,
        waits: [AtomicU64; BUCKETS],
        holds: [AtomicU64; BUCKETS],
    }

    static COUNTERS: Counters = Counters {
        acquired: AtomicU64::new(0),
        wait_ns: AtomicU64::new(0),
        hold_ns: AtomicU64::new(0),
        max_wait_ns: AtomicU64::new(0),
        max_hold_ns: AtomicU64::new(0),
        waits: [const { AtomicU64::new(0) }; BUCKETS],
        holds: [const { AtomicU64::new(0) }; BUCKETS],
    };

    fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    fn bucket(ns: u64) -> usize {
        usize::try_from(ns / BUCKET_NS).map_or(BUCKETS - 1, |b| b.min(BUCKETS - 1))
    }

    /// The lock, held since `acquired`; counts its hold time when dropped.
    pub struct Held<'a, T> {
        guard: MutexGuard<'a, T>,
        acquired: Instant,
    }

    impl<'a, T> Held<'a, T> {
        /// `guard`, asked for at `asked`: counts the wait now.
        pub(super) fn new(guard: MutexGuard<'a, T>, asked: Instant) -> Self {
            let acquired = Instant::now();
            let wait = nanos(acquired - asked);
            let c = &COUNTERS;
            c.acquired.fetch_add(1, Ordering::Relaxed);
            c.wait_ns.fetch_add(wait, Ordering::Relaxed);
            c.max_wait_ns.fetch_max(wait, Ordering::Relaxed);
            c.waits[bucket(wait)].fetch_add(1, Ordering::Relaxed);
            Held { guard, acquired }
        }
    }

    impl<T> Deref for Held<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.guard
        }
    }

    impl<T> DerefMut for Held<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.guard
        }
    }

    impl<T> Drop for Held<'_, T> {
        // Runs before the guard field is dropped: the lock is still held.
        fn drop(&mut self) {
            let hold = nanos(self.acquired.elapsed());
            let c = &COUNTERS;
            c.hold_ns.fetch_add(hold, Ordering::Relaxed);
            c.max_hold_ns.fetch_max(hold, Ordering::Relaxed);
            c.holds[bucket(hold)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the counters held, taken at once.
    #[derive(Debug, Clone, Default)]
    pub struct Stats {
        /// Times the lock was taken.
        pub acquired: u64,
        /// Time spent waiting for it, all acquisitions together.
        pub wait: Duration,
        /// Time it was held, all acquisitions together.
        pub hold: Duration,
        /// The longest wait.
        pub max_wait: Duration,
        /// The longest hold.
        pub max_hold: Duration,
        waits: Vec<u64>,
        holds: Vec<u64>,
    }

    impl Stats {
        /// Add `other` to these.
        pub fn add(&mut self, other: &Stats) {
            self.acquired += other.acquired;
            self.wait += other.wait;
            self.hold += other.hold;
            self.max_wait = self.max_wait.max(other.max_wait);
            self.max_hold = self.max_hold.max(other.max_hold);
            for (mine, theirs) in [
                (&mut self.waits, &other.waits),
                (&mut self.holds, &other.holds),
            ] {
                mine.resize(BUCKETS, 0);
                for (m, t) in mine.iter_mut().zip(theirs) {
                    *m += t;
                }
            }
        }

        /// The wait at quantile `q` (0 to 1), to 100 ns.
        pub fn wait_quantile(&self, q: f64) -> Duration {
            quantile(&self.waits, q)
        }

        /// The hold at quantile `q` (0 to 1), to 100 ns.
        pub fn hold_quantile(&self, q: f64) -> Duration {
            quantile(&self.holds, q)
        }
    }

    fn quantile(buckets: &[u64], q: f64) -> Duration {
        let total: u64 = buckets.iter().sum();
        let wanted = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in buckets.iter().enumerate() {
            seen += n;
            if seen >= wanted.max(1) {
                return Duration::from_nanos((i as u64 + 1) * BUCKET_NS);
            }
        }
        Duration::ZERO
    }

    /// Zero the counters.
    pub fn reset() {
        let _ = take();
    }

    /// The counters since the last `take` or `reset`, zeroing them.
    pub fn take() -> Stats {
        let c = &COUNTERS;
        let swap = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        Stats {
            acquired: swap(&c.acquired),
            wait: Duration::from_nanos(swap(&c.wait_ns)),
            hold: Duration::from_nanos(swap(&c.hold_ns)),
            max_wait: Duration::from_nanos(swap(&c.max_wait_ns)),
            max_hold: Duration::from_nanos(swap(&c.max_hold_ns)),
            waits: c.waits.iter().map(swap).collect(),
            holds: c.holds.iter().map(swap).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemorySink;
    use sha2::Digest;

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
        let permit = gate.check_now("calc", &request, None).unwrap().unwrap();
        gate.complete(permit, Outcome::Ok, "1", None).unwrap();
        let err = gate.check_now("calc", &request, None).unwrap().unwrap_err();
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
    fn refusals_past_the_budget_are_counted_not_recorded() {
        let (gate, sink) = gate("[limits]\nmax_refusals = 3\n[tools.calc]\ncomponent = \"x\"\n");
        let args = json!({});
        let nope = Request::Tool {
            name: "nope",
            arguments: &args,
            schema: None,
        };
        for _ in 0..3 {
            gate.check_now("nope", &nope, None).unwrap().unwrap_err();
        }
        // A malformed request refused before the policy sees it is refused
        // by the spent budget too, with one record.
        let error = gate
            .refuse(
                Kind::Tool,
                "calc",
                "arguments",
                GuestError::Invalid("not JSON".into()),
                None,
            )
            .unwrap();
        assert_eq!(
            error,
            GuestError::BudgetExhausted(
                "all 3 refusals this run may have are used: every further request is refused (rule: limits.max_refusals)".into()
            )
        );
        // Even a granted call is refused now, and leaves no record.
        let calc = Request::Tool {
            name: "calc",
            arguments: &args,
            schema: None,
        };
        for _ in 0..1000 {
            gate.check_now("calc", &calc, None).unwrap().unwrap_err();
            gate.log("agent", "info", "still here").unwrap();
        }
        let rules: Vec<String> = sink
            .records()
            .iter()
            .filter(|r| r.event == Event::Decision)
            .map(|r| r.rule.clone())
            .collect();
        assert_eq!(
            rules,
            ["default", "default", "default", "limits.max_refusals"]
        );
        let ledger = gate.ledger();
        // Log lines after the first refused one are the log budget's to
        // count (`logs_dropped`), not refusals.
        assert_eq!(ledger.refusals, 1005);
        assert_eq!(ledger.refusals_unrecorded, 1001);
        assert_eq!(ledger.steps, 1004);
        assert_eq!(ledger.logs_dropped, 1000);
    }

    #[test]
    fn every_record_field_is_bounded_with_its_hash() {
        let (gate, sink) = gate("[limits]\naudit_field = \"1KiB\"\n");
        let client = json!({ "name": "c".repeat(1 << 20), "version": "1" });
        gate.note(Entry {
            kind: Kind::Run,
            event: Event::Decision,
            subject: "mcp".into(),
            decision: Verdict::Allow,
            rule: "policy".into(),
            detail: "d".repeat(1 << 20),
            outcome: None,
            data: Some(json!({ "client": client })),
        })
        .unwrap();
        gate.log("agent", "info", &"l".repeat(1 << 20)).unwrap();
        let records = sink.records();
        for record in &records {
            let line = serde_json::to_vec(record).unwrap();
            assert!(line.len() < 4 << 10, "{}", line.len());
        }
        let data = records[0].data.as_ref().unwrap();
        let whole = serde_json::to_vec(&client).unwrap();
        assert_eq!(data["client"]["bytes"], whole.len());
        assert_eq!(
            data["client"]["sha256"],
            hex::encode(sha2::Sha256::digest(&whole))
        );
        assert_eq!(data["truncated_fields"], json!(["detail", "client"]));
        assert!(
            records[2]
                .detail
                .contains("[truncated: 1048576 bytes, sha256 ")
        );
    }

    #[test]
    fn stdio_is_recorded_within_the_run_budget() {
        let (gate, sink) = gate("[limits]\nstdio = \"40KiB\"\n");
        for i in 0..10 {
            gate.stdio(format!("t{i}/stdout"), &[b'o'; 64 << 10], 1000)
                .unwrap();
        }
        let records = sink.records();
        let kept: usize = records.iter().map(|r| r.detail.len()).sum();
        assert!(kept < (40 << 10) + 1024, "{kept}");
        assert_eq!(
            records.iter().filter(|r| r.rule == "limits.stdio").count(),
            1
        );
        let ledger = gate.ledger();
        assert_eq!(
            ledger.stdio_recorded + ledger.stdio_unrecorded,
            10 * ((64 << 10) + 1000)
        );
        assert_eq!(ledger.stdio_recorded, 40 << 10);
    }

    #[test]
    #[ignore = "measurement: cargo test -p warden --lib index_memory -- --ignored --nocapture"]
    fn index_memory() {
        fn rss() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                << 10
        }
        let text: String = (0..1_000_000).map(|i| format!("w{i} ")).collect();
        for limit in [16 << 20, u64::MAX] {
            let before = rss();
            let mut index = crate::policy::provenance::Provenance::with_limit(limit);
            index.observe(crate::policy::provenance::Source::Task, &[], &text);
            let grew = rss().saturating_sub(before);
            eprintln!(
                "limit {limit}: {} tokens, charged {} bytes, RSS grew {grew} bytes",
                index.len(),
                index.used(),
            );
            assert!(index.used() <= limit);
            if limit != u64::MAX {
                assert!(grew < 2 * limit, "{grew}");
            }
        }
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
