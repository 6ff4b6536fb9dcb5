//! The policy: what an agent and each tool may do, and the pure function
//! that decides every request against it.
//!
//! This module owns the policy file's language and the decisions. It must
//! stay pure: no I/O, no clocks, no wasmtime or tokio types. The host reads
//! the files and hands over their text; the gate hands over a [`Request`]
//! and the [`Session`] (what the run has used and seen) and gets a
//! [`Decision`] back, naming the rule that made it. Everything that is not
//! granted is denied.
//!
//! Precedence: deny beats ask beats allow. A tool call is decided in this
//! order: the entry (none: `default` deny; `decision = "deny"`), the
//! arguments against the tool's own JSON Schema (`invalid`), the labels and
//! argument rules (the strongest verdict wins; a deny names the first rule
//! that denies, an ask every rule that asks), then the budgets.

pub mod args;
mod compile;
pub mod diff;
pub mod explain;
pub mod file;
pub mod learn;
mod merge;
pub mod plan;
pub mod provenance;
mod units;

pub use crate::diagnostic::{Diagnostic, Severity, SourceError, SourceFile};
pub use compile::MAX_MEMORY;
pub use file::{Effects, Instance, MountMode, Place, Verdict};
pub use units::{ByteSize, HumanDuration};

use crate::chat::{Message, Usage};
use args::ArgRule;
use globset::{GlobMatcher, GlobSet};
use provenance::{Provenance, Source};
use regex::Regex;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A validated policy (one file, or a file merged with its includes).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Limits on every guest instance.
    pub limits: Limits,
    /// What the agent may ask of the model.
    pub model: ModelPolicy,
    /// What the agent itself may touch.
    pub agent: Grants,
    /// Tool entries by name. A tool with no entry is denied.
    pub tools: BTreeMap<String, ToolPolicy>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, SecretPolicy>,
    /// A fixed clock and seeded randomness, when asked for.
    pub reproducible: Reproducible,
    /// `[plan]`: whether the agent must declare its sinks before any label.
    pub plan: plan::PlanPolicy,
    /// `[approvals]`: how long a person may take, how many asks may wait.
    pub approvals: Approvals,
    /// Findings that did not stop the policy from loading.
    pub warnings: Vec<Diagnostic>,
    /// What each including file changed in what it includes, in load order.
    pub includes: Vec<IncludeLayer>,
    rules: CommonRules,
}

/// One file laid over what it includes, and what it changed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeLayer {
    /// The including file (or, for a second include of one file, that include).
    pub file: String,
    /// What it lies on (the included file, or the includes merged so far).
    pub below: String,
    /// Each key it changed, in the order the merge met them.
    pub changes: Vec<IncludeChange>,
}

/// One key an including file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeChange {
    /// The key, e.g. `limits.memory` or `tools.fetch.http.allow`.
    pub key: String,
    /// What changed, in words: "64MiB -> 32MiB", "adds the tool".
    pub what: String,
    /// How: narrowed, added (new to every lower file), or widened (allowed
    /// because `widen` lists the key).
    pub kind: ChangeKind,
}

/// How an including file changed a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Narrower than below.
    Narrowed,
    /// Not set by any lower file: a new tool, secret or section.
    Added,
    /// Wider than below, allowed by `widen` (and warned about).
    Widened,
}

#[derive(Debug, Clone)]
struct CommonRules {
    default: Rule,
    output: Rule,
    max_steps: Rule,
    max_refusals: Rule,
}

/// `[reproducible]`: what makes runs repeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reproducible {
    /// The wall-clock time guests see (it does not advance).
    pub time: Option<std::time::SystemTime>,
    /// The seed of guests' random numbers.
    pub random_seed: Option<u64>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most linear memory one instance may grow to, in bytes.
    pub memory: u64,
    /// Most time one instance may spend executing guest code.
    pub cpu: Duration,
    /// Most wall-clock time: the whole run (agent), each call (tool).
    pub wall: Duration,
    /// Largest result one guest may return; most log bytes in a run.
    pub output: u64,
    /// Most model calls plus tool calls in a run, allowed or refused.
    pub max_steps: Option<u32>,
    /// Most refused requests recorded in a run; past it every request is
    /// refused, the first with one record, the rest only counted.
    pub max_refusals: u32,
    /// Most bytes of captured stdout and stderr recorded in a run, all
    /// instances together; past it output is counted, not recorded.
    pub stdio: u64,
    /// Most memory the provenance index may use in a run (an estimate:
    /// each distinct token costs its length plus
    /// [`provenance::TOKEN_COST`]); once full, nothing more is indexed.
    pub index: u64,
    /// Most bytes of one field of an audit record (an argument list, a
    /// result, a log line, a detail); a longer value is kept as its start,
    /// its size and its SHA-256.
    pub audit_field: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 128 << 20,
            cpu: Duration::from_secs(10),
            wall: Duration::from_secs(120),
            output: 1 << 20,
            max_steps: None,
            max_refusals: 100,
            stdio: 1 << 20,
            index: 16 << 20,
            audit_field: 16 << 10,
        }
    }
}

/// `[approvals]`: asks waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvals {
    /// How long an ask waits for an answer before it is refused as
    /// unanswered.
    pub timeout: Duration,
    /// Most asks of one run waiting at once; past it an ask is refused.
    pub max_pending: u32,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            timeout: Duration::from_secs(300),
            max_pending: 16,
        }
    }
}

/// Price of a model, US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

impl Price {
    /// The cost of `usage`.
    pub fn cost(&self, usage: Usage) -> f64 {
        (usage.input_tokens as f64 * self.input + usage.output_tokens as f64 * self.output) / 1e6
    }
}

/// Who answers model calls, as the policy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderChoice {
    /// The provider spec, e.g. `openai:gpt-4o-mini`.
    pub spec: String,
    /// Where the spec is written (file names in it are relative to that
    /// file).
    pub place: Place,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// The file holding the API key (relative to the file that names it).
    pub api_key_file: Option<(String, Place)>,
}

/// How the host talks to a model provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLimits {
    /// Per request, retries excluded.
    pub timeout: Duration,
    /// Largest response body.
    pub max_response: u64,
    /// Retries on 429 and 5xx.
    pub max_retries: u32,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        ProviderLimits {
            timeout: Duration::from_secs(120),
            max_response: 4 << 20,
            max_retries: 3,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    /// The provider the policy names, if any.
    pub provider: Option<ProviderChoice>,
    /// Timeouts, size limit and retries for provider requests.
    pub limits: ProviderLimits,
    /// Model name patterns the agent may use; empty means none.
    pub allow: Vec<String>,
    allow_set: GlobSet,
    /// Most model calls in a run.
    pub max_calls: Option<u32>,
    /// Most tokens in a run.
    pub max_tokens: Option<u64>,
    /// Most output tokens per call.
    pub max_tokens_per_call: Option<u32>,
    /// Most spend in a run.
    pub max_cost_usd: Option<f64>,
    /// Prices by model pattern, most specific first (an exact name, then
    /// the glob with the most literal characters); first match wins.
    pub prices: Vec<(String, Price)>,
    price_matchers: Vec<GlobMatcher>,
    /// Patterns that refuse a request.
    pub deny: Vec<String>,
    deny_set: regex_automata::meta::Regex,
    /// Patterns redacted from requests.
    pub redact: Vec<String>,
    redact_regexes: Vec<Regex>,
    /// Labels model answers add.
    pub labels: Vec<String>,
    rules: ModelRules,
}

#[derive(Debug, Clone)]
struct ModelRules {
    allow: Rule,
    deny: Rule,
    max_calls: Rule,
    max_tokens: Rule,
    max_cost: Rule,
    prices: Rule,
}

/// `[tools.NAME]`.
#[derive(Debug, Clone)]
pub struct ToolPolicy {
    /// The tool's name.
    pub name: String,
    /// The component that provides it.
    pub component: Option<ComponentRef>,
    /// The SHA-256 the component must have (lowercase hex).
    pub sha256: Option<String>,
    /// allow, ask or deny.
    pub decision: Verdict,
    /// Most calls in a run.
    pub max_calls: Option<u32>,
    /// Most calls in any 60 seconds.
    pub rate: Option<u32>,
    /// Rules on the arguments, in file order.
    pub args: Vec<ArgRule>,
    /// Labels its whole results carry (the list form, and `"/"`).
    pub labels: Vec<String>,
    /// Labels of parts of a JSON result, by path, in file order.
    pub path_labels: Vec<(args::LabelPath, Vec<String>)>,
    /// Labels for the parts of a result the tool's own description marks
    /// as third-party; empty: the declaration is ignored.
    pub third_party_labels: Vec<String>,
    /// Whether labels flow through it (`labels_flow`, default true).
    pub labels_flow: bool,
    /// The stores it shares state through (its component, its
    /// directories), for labels that flow.
    pub stores: Vec<String>,
    /// Of its stores, those its calls can write (not a read-only
    /// directory): where the labels its arguments carry are written.
    pub store_writes: Vec<String>,
    /// Labels that deny it.
    pub deny_when_labeled: Vec<String>,
    /// Labels that make it ask.
    pub ask_when_labeled: Vec<String>,
    /// What calling it can change, as the entry says (`effects`).
    pub effects: Option<Effects>,
    /// How long one instance of it lives (`instance`). A per-run instance
    /// is one of its stores ([`ToolPolicy::instance_store`]).
    pub instance: Instance,
    /// What the tool itself may touch.
    pub grants: Grants,
    /// Where the entry is.
    pub place: Place,
    rules: ToolRules,
    /// `args` by the top-level argument each rule looks at.
    arg_index: args::ArgIndex,
}

#[derive(Debug, Clone)]
struct ToolRules {
    entry: Rule,
    schema: Rule,
    max_calls: Rule,
    rate: Rule,
    deny_when_labeled: Rule,
    ask_when_labeled: Rule,
}

impl ToolPolicy {
    /// Whether its results are labelled by part: it has label paths, or
    /// accepts what its description (`declared`) marks third-party.
    pub fn labels_by_path(&self, declared: &[args::LabelPath]) -> bool {
        !self.path_labels.is_empty()
            || (!self.third_party_labels.is_empty() && !declared.is_empty())
    }

    /// The store its kept instance is, with `instance = "per-run"`: what
    /// one call was given can come out of a later one, so every call
    /// writes its arguments' labels there, `effects = "none"` or not.
    pub fn instance_store(&self) -> Option<String> {
        (self.instance == Instance::PerRun).then(|| compile::instance_store(&self.name))
    }
}

/// Where a component comes from, as written in the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef {
    /// `builtin:NAME`, a path relative to the file it is written in, or a
    /// URL to download from (checked by [`crate::remote::check_url`]).
    pub text: String,
    /// Where it is written.
    pub place: Place,
}

/// What a guest may touch beyond the gate's imports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    /// Outgoing HTTP.
    pub http: Option<HttpGrant>,
    /// Directories.
    pub fs: Vec<Mount>,
    /// Environment variables with fixed values.
    pub env: Vec<(String, String)>,
    /// Environment variables passed through.
    pub inherit_env: Vec<String>,
    /// Secrets injected into HTTP requests.
    pub secrets: Vec<String>,
}

impl Grants {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        *self == Grants::default()
    }
}

/// Outgoing HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpGrant {
    /// URL rules; a request must match one.
    pub rules: Vec<UrlRule>,
    /// Methods allowed (uppercase).
    pub methods: Vec<String>,
    /// Largest request body.
    pub max_request: u64,
    /// Largest response body.
    pub max_response: u64,
    /// Per-request time limit.
    pub timeout: Duration,
}

/// One URL rule: `scheme://host[:port]/path-glob`.
#[derive(Debug, Clone)]
pub struct UrlRule {
    /// As written.
    pub text: String,
    /// `http` or `https`.
    pub scheme: String,
    /// Which hosts.
    pub host: HostPattern,
    /// The port, if the rule names one.
    pub port: Option<u16>,
    /// The path glob as written.
    pub path: String,
    path_matcher: GlobMatcher,
    /// Labels responses add.
    pub labels: Vec<String>,
    /// Whether private, loopback and link-local addresses may be reached.
    pub private: bool,
}

impl PartialEq for UrlRule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.labels == other.labels && self.private == other.private
    }
}

impl UrlRule {
    /// Whether a URL's parts match (the caller has parsed and normalized
    /// the URL; addresses are checked separately, after resolution).
    pub fn matches(&self, scheme: &str, host: &str, port: u16, path: &str) -> bool {
        scheme == self.scheme
            && self.host.matches(host)
            && port
                == self
                    .port
                    .unwrap_or(if scheme == "https" { 443 } else { 80 })
            && self.path_matcher.is_match(path)
    }
}

/// A host in a URL rule or a secret's injection target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Any host (`*`).
    Any,
    /// This host exactly (lowercase; IP literals as written).
    Exact(String),
    /// Any subdomain of this domain (`*.example.com`), not the domain.
    Subdomains(String),
}

impl HostPattern {
    /// Whether `host` (lowercase) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(exact) => host == exact,
            HostPattern::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }

    /// Whether it matches more than one host.
    pub fn is_wildcard(&self) -> bool {
        !matches!(self, HostPattern::Exact(_))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Subdomains(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// A directory granted to a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where the guest sees it.
    pub guest_path: String,
    /// The host directory, relative to the file that grants it.
    pub dir: String,
    /// Read-only or read-write.
    pub mode: MountMode,
    /// Most bytes written under it.
    pub quota: Option<u64>,
    /// Where it is written.
    pub place: Place,
}

/// `[secrets.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretPolicy {
    /// Its name.
    pub name: String,
    /// Where the host reads it.
    pub source: SecretSource,
    /// Where the host injects it.
    pub inject: Option<Inject>,
    /// Where it is written.
    pub place: Place,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A host environment variable.
    Env(String),
    /// A file, relative to the policy file.
    File(String),
}

/// How a secret is injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inject {
    /// The only hosts that receive it.
    pub host: HostPattern,
    /// The header.
    pub header: String,
    /// The header value, `{}` standing for the secret.
    pub format: String,
}

/// The name of the policy entry that made a decision, e.g. `tools.calc`,
/// `tools.send_email.args.to` or `model.max_calls`; `default` when nothing
/// granted the request. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule(Arc<str>);

impl Rule {
    /// A rule name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Rule(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// What a guest asks the host to do, in host terms.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// A model call.
    Model {
        /// The model that would answer.
        model: &'a str,
        /// What would be sent.
        messages: &'a [Message],
        /// Tokens the call may use at most (input estimate plus the output
        /// allowance), for budgets checked before the call.
        estimated_tokens: u64,
    },
    /// A tool call.
    Tool {
        /// The tool's name as the guest gave it.
        name: &'a str,
        /// The parsed arguments.
        arguments: &'a serde_json::Value,
        /// The JSON Schema the tool declared, compiled; checked first.
        schema: Option<&'a jsonschema::Validator>,
    },
    /// A log line.
    Log {
        /// Its length.
        bytes: u64,
    },
    /// The agent declares its plan: the tools with effects it will use
    /// once the session is labeled (`tools.declare-plan`).
    Plan {
        /// The tool names as the guest gave them.
        tools: &'a [String],
    },
    /// An outgoing HTTP request from a tool (or, with `None`, the agent).
    Http {
        /// The tool making it; `None` for the agent.
        tool: Option<&'a str>,
        /// The method (uppercase).
        method: &'a str,
        /// Where it goes.
        target: &'a HttpTarget,
    },
}

impl<'a> Request<'a> {
    /// The same request with its schema taken off, once
    /// [`Policy::validate`] passed it.
    pub fn validated(&self) -> Request<'a> {
        match *self {
            Request::Tool {
                name, arguments, ..
            } => Request::Tool {
                name,
                arguments,
                schema: None,
            },
            other => other,
        }
    }
}

/// Where an outgoing HTTP request goes, as the host parsed and normalized
/// its URL (lowercase scheme and host, no trailing dot, explicit port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `http` or `https`.
    pub scheme: String,
    /// The host name, or an IP literal (IPv6 in brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The path, without the query.
    pub path: String,
}

impl fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme, self.host, self.port, self.path
        )
    }
}

/// What a run has used and seen: the state decisions depend on. The guest
/// cannot change it; the host updates it through the methods below.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Allowed model calls.
    pub model_calls: u32,
    /// Allowed calls per tool.
    pub tool_calls: HashMap<String, u32>,
    /// Model plus tool calls, allowed or refused.
    pub steps: u32,
    /// Refused requests of any kind (recorded or only counted).
    pub refusals: u32,
    /// Bytes of log lines accepted.
    pub log_bytes: u64,
    /// Tokens the provider reported.
    pub tokens: u64,
    /// Spend, by the price table.
    pub cost_usd: f64,
    /// Labels gathered (sorted, no duplicates). They only grow.
    pub labels: Vec<String>,
    /// Time since the run started, set by the host before each decision.
    pub now: Duration,
    /// Start times of recent calls per tool, for `rate`.
    recent: HashMap<String, VecDeque<Duration>>,
    /// Where values came from.
    pub provenance: Provenance,
    /// What `max_total` and `max_distinct` rules counted.
    pub aggregates: args::Aggregates,
    /// Labels written to each store (see [`ToolPolicy::stores`]) by calls
    /// of tools with effects: every later result of a tool sharing the
    /// store carries them. Bounded by the policy's stores and labels.
    pub stores: BTreeMap<String, Vec<String>>,
    /// The plan the agent declared (sorted, no duplicates), if it did.
    pub plan: Option<Vec<String>>,
}

/// Where a tool's result came from besides the tool: what
/// [`Session::observe_tool_result_from`] labels it by.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultOrigin<'a> {
    /// Labels of the HTTP rules that served it (the tool's own).
    pub http_labels: &'a [String],
    /// Labels its call's arguments carried ([`Session::flow_into_call`]).
    pub inherited: &'a [String],
    /// Parts the tool's own description marks as third-party.
    pub declared: &'a [args::LabelPath],
    /// The result as JSON, if the caller parsed it (outside any lock).
    pub json: ResultJson<'a>,
}

/// A result as JSON, for labels by path.
#[derive(Debug, Clone, Copy, Default)]
pub enum ResultJson<'a> {
    /// Not parsed yet: parsed when the tool labels parts.
    #[default]
    Unparsed,
    /// Parsed.
    Json(&'a serde_json::Value),
    /// Not JSON.
    NotJson,
}

/// Union of two sorted, deduplicated label lists.
fn union_labels(into: &mut Vec<String>, more: &[String]) {
    for label in more {
        if let Err(at) = into.binary_search(label) {
            into.insert(at, label.clone());
        }
    }
}

/// The window of `rate`.
const RATE_WINDOW: Duration = Duration::from_secs(60);

impl Session {
    /// Count an allowed request against the run's budgets (and `policy`'s
    /// run-wide argument counts).
    pub fn record(&mut self, policy: &Policy, request: &Request<'_>) {
        if let Request::Tool {
            name, arguments, ..
        } = request
            && let Some(tool) = policy.tools.get(*name)
        {
            self.aggregates
                .record(tool.arg_index.counted(&tool.args), arguments);
        }
        match request {
            Request::Model { .. } => {
                self.model_calls += 1;
                self.steps = self.steps.saturating_add(1);
            }
            Request::Tool { name, .. } => {
                match self.tool_calls.get_mut(*name) {
                    Some(calls) => *calls += 1,
                    None => {
                        self.tool_calls.insert((*name).to_string(), 1);
                    }
                }
                self.steps = self.steps.saturating_add(1);
                // Only a tool with a `rate` needs its call times: kept for
                // every tool, a long run's busy minute would hold one per
                // call.
                if policy.tools.get(*name).is_some_and(|t| t.rate.is_some()) {
                    let now = self.now;
                    let recent = self.recent.entry((*name).to_string()).or_default();
                    recent.push_back(now);
                    while recent
                        .front()
                        .is_some_and(|t| now.saturating_sub(*t) >= RATE_WINDOW)
                    {
                        recent.pop_front();
                    }
                }
            }
            Request::Log { bytes } => self.log_bytes += bytes,
            Request::Plan { tools } => self.plan = Some(plan::normalized(tools)),
            Request::Http { .. } => {}
        }
    }

    /// Count a refused request: against the refusal budget, and, when it
    /// was a model or tool call (`step`), against `max_steps` too.
    pub fn count_refusal(&mut self, step: bool) {
        self.refusals = self.refusals.saturating_add(1);
        if step {
            self.steps = self.steps.saturating_add(1);
        }
    }

    /// Add labels (they never go away).
    pub fn add_labels<'l>(&mut self, labels: impl IntoIterator<Item = &'l String>) {
        for label in labels {
            if let Err(at) = self.labels.binary_search(label) {
                self.labels.insert(at, label.clone());
            }
        }
    }

    fn has_any<'l>(&self, labels: &'l [String]) -> Option<&'l String> {
        labels.iter().find(|l| self.labels.binary_search(l).is_ok())
    }

    /// The task reached the agent.
    pub fn observe_task(&mut self, task: &str) {
        self.provenance.observe(Source::Task, &[], task);
    }

    /// A model answer reached the agent: it carries the session's labels
    /// (the model saw everything) plus `[model] labels`.
    pub fn observe_model_output(&mut self, policy: &Policy, text: &str, usage: Usage, model: &str) {
        self.add_labels(&policy.model.labels);
        let labels = self.labels.clone();
        self.provenance.observe(Source::Model, &labels, text);
        self.tokens += u64::from(usage.input_tokens) + u64::from(usage.output_tokens);
        if let Some(price) = policy.model.price(model) {
            self.cost_usd += price.cost(usage);
        }
    }

    /// A tool call was decided and goes ahead: the values in its arguments
    /// are what the model wrote, indexed as `model` data with the session's
    /// labels. Only after the decision, so that no call is the source of
    /// its own values.
    pub fn observe_tool_call(&mut self, arguments: &serde_json::Value) {
        if self.provenance.is_full() {
            return;
        }
        let mut text = String::new();
        leaf_text(arguments, &mut text);
        let labels = self.labels.clone();
        self.provenance.observe(Source::Model, &labels, &text);
    }

    /// A tool's result reached the agent, carrying the tool's labels and
    /// `extra` ones (e.g. from HTTP rules that served it).
    pub fn observe_tool_result(
        &mut self,
        policy: &Policy,
        tool: &str,
        text: &str,
        extra: &[String],
    ) {
        self.observe_tool_result_from(
            policy,
            tool,
            text,
            &ResultOrigin {
                http_labels: extra,
                ..ResultOrigin::default()
            },
        );
    }

    /// The labels the values of `arguments` carry: for each value (and
    /// key), the labels of the data it was found in
    /// ([`Provenance::labels_of`]), or the session's labels when only the
    /// model wrote it or it was seen nowhere.
    pub fn labels_of_arguments(&self, arguments: &serde_json::Value) -> Vec<String> {
        use serde_json::Value;
        let mut out: Vec<String> = Vec::new();
        let look = |text: &str, out: &mut Vec<String>| match self.provenance.labels_of(text) {
            Some(labels) => union_labels(out, &labels),
            None => union_labels(out, &self.labels),
        };
        let mut stack = vec![arguments];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(s) => look(s, &mut out),
                Value::Number(n) => look(&n.to_string(), &mut out),
                Value::Bool(_) | Value::Null => {}
                Value::Array(items) => stack.extend(items.iter()),
                Value::Object(map) => {
                    for (key, member) in map {
                        look(key, &mut out);
                        stack.push(member);
                    }
                }
            }
            if out.len() >= self.labels.len() && out == self.labels {
                // Nothing can add more than the session has.
                break;
            }
        }
        out
    }

    /// A call of `tool` was decided and goes ahead: when labels flow
    /// through it (`labels_flow`, the default), the labels its argument
    /// values carry are written to its stores if it may change things
    /// (any `effects` but `"none"`), and returned: its result inherits
    /// them. Call it before [`Session::observe_tool_call`].
    pub fn flow_into_call(
        &mut self,
        policy: &Policy,
        tool: &str,
        arguments: &serde_json::Value,
    ) -> Vec<String> {
        let Some(entry) = policy.tools.get(tool) else {
            return Vec::new();
        };
        if !entry.labels_flow {
            return Vec::new();
        }
        let inherited = self.labels_of_arguments(arguments);
        // A kept instance remembers what it was given, effects or not.
        if let Some(store) = entry.instance_store().filter(|_| !inherited.is_empty()) {
            match self.stores.get_mut(&store) {
                Some(labels) => union_labels(labels, &inherited),
                None => {
                    self.stores.insert(store, inherited.clone());
                }
            }
        }
        if entry.effects != Some(Effects::None) && !inherited.is_empty() {
            for store in &entry.store_writes {
                match self.stores.get_mut(store) {
                    Some(labels) => union_labels(labels, &inherited),
                    None => {
                        self.stores.insert(store.clone(), inherited.clone());
                    }
                }
            }
        }
        inherited
    }

    /// A tool's result reached the agent. Its labels: the tool's own (its
    /// entry's whole-result `labels`, the HTTP rules'), those that flowed
    /// in (its arguments', its stores'), and, for a JSON object or array,
    /// per value those of every label path covering it (the policy's, and
    /// the tool's declared third-party parts if the policy accepts them).
    /// Each value is indexed with its own labels; the session gains every
    /// label present. A result that is not a JSON object or array, from a
    /// tool with label paths, carries every path's labels.
    pub fn observe_tool_result_from(
        &mut self,
        policy: &Policy,
        tool: &str,
        text: &str,
        origin: &ResultOrigin<'_>,
    ) {
        let entry = policy.tools.get(tool);
        let mut own: Vec<String> = entry.map(|t| t.labels.clone()).unwrap_or_default();
        union_labels(&mut own, &{
            let mut http = origin.http_labels.to_vec();
            http.sort();
            http.dedup();
            http
        });
        let mut flowed: Vec<String> = Vec::new();
        let mut stored: Vec<String> = Vec::new();
        if let Some(entry) = entry.filter(|e| e.labels_flow) {
            union_labels(&mut flowed, origin.inherited);
            for store in &entry.stores {
                if let Some(labels) = self.stores.get(store) {
                    union_labels(&mut stored, labels);
                }
            }
            // A directory the agent itself may write holds whatever the
            // agent saw: its writes are not calls, so what a tool reads
            // there carries every label the session has.
            let agent_writes_here = policy
                .agent
                .fs
                .iter()
                .filter(|m| m.mode == MountMode::Rw)
                .any(|m| entry.stores.contains(&compile::dir_store(m)));
            if agent_writes_here {
                union_labels(&mut stored, &self.labels);
            }
            union_labels(&mut flowed, &stored);
        }
        let mut parts: Vec<(&args::LabelPath, &[String])> = Vec::new();
        if let Some(entry) = entry {
            parts.extend(entry.path_labels.iter().map(|(p, l)| (p, l.as_slice())));
            if !entry.third_party_labels.is_empty() {
                parts.extend(
                    origin
                        .declared
                        .iter()
                        .map(|p| (p, entry.third_party_labels.as_slice())),
                );
            }
        }
        let mut whole = own.clone();
        union_labels(&mut whole, &flowed);
        let source = Source::Tool(tool.to_string());
        // What flowed in makes the result foreign only when it brings a
        // label the tool's own results do not carry: a read by an id the
        // same family of tools gave (`notes_read` of a `notes_list` id)
        // is still the tool's own.
        let not_own = |labels: &[String]| -> Vec<String> {
            labels
                .iter()
                .filter(|l| own.binary_search(l).is_err())
                .cloned()
                .collect()
        };
        // What was written to a store it reads is someone else's data: it
        // vouches only for the labels written with it. What its arguments
        // carried in makes it not the tool's own (`tool:NAME`), but a
        // lookup by an outsider's query still returns the tool's data,
        // with the tool's labels (`label:NAME`).
        let foreign = Foreign {
            theirs: not_own(&stored),
            borrowed: !not_own(&flowed).is_empty(),
        };
        if parts.is_empty() {
            self.add_labels(&whole);
            self.provenance
                .observe_part(source, &whole, &foreign.theirs, foreign.borrowed, text);
            return;
        }
        let parsed;
        let value = match origin.json {
            _ if self.provenance.is_full() => None,
            ResultJson::Json(value) => Some(value),
            ResultJson::NotJson => None,
            ResultJson::Unparsed => {
                parsed = serde_json::from_str::<serde_json::Value>(text).ok();
                parsed.as_ref()
            }
        };
        let Some(value) = value.filter(|v| v.is_object() || v.is_array()) else {
            // Not JSON with fields: every part's labels, the safe side.
            let mut theirs = foreign.theirs.clone();
            for (_, labels) in &parts {
                union_labels(&mut whole, labels);
                union_labels(&mut theirs, labels);
            }
            self.add_labels(&whole);
            self.provenance
                .observe_part(source, &whole, &theirs, foreign.borrowed, text);
            return;
        };
        let mut groups = PartGroups::default();
        let states: Vec<args::PathState> = parts.iter().map(|(path, _)| path.start()).collect();
        label_parts(value, &states, &parts, &whole, &foreign.theirs, &mut groups);
        for ((labels, theirs), text) in groups.0 {
            self.add_labels(&labels);
            self.provenance
                .observe_part(source.clone(), &labels, &theirs, foreign.borrowed, &text);
        }
        // Labels the whole result carries, even where no value is left.
        self.add_labels(&whole);
    }
}

/// Why a tool's result (or part of it) is not the tool's own.
struct Foreign {
    /// Labels of data written by others (stores; parts add theirs): the
    /// only labels it vouches for.
    theirs: Vec<String>,
    /// Its call's arguments carried in labels the tool's own results do
    /// not: not `tool:NAME`, though still `label:NAME` of the tool's.
    borrowed: bool,
}

/// The text of a result's values, grouped by the labels each carries
/// (and the labels that make them a foreign part).
#[derive(Default)]
struct PartGroups(HashMap<(Vec<String>, Vec<String>), String>);

impl PartGroups {
    fn push(&mut self, key: (Vec<String>, Vec<String>), text: &str) {
        let buffer = self.0.entry(key).or_default();
        buffer.push_str(text);
        buffer.push('\n');
    }
}

/// Each value (and key) of `value` into `groups`, with the labels of
/// `whole` and of every part covering it; `states` says how far each
/// part's path has matched down to here. Linear in the result's size
/// times the parts' lengths. Recursion is bounded: the JSON parser refuses
/// nesting deeper than 128.
fn label_parts(
    value: &serde_json::Value,
    states: &[args::PathState],
    parts: &[(&args::LabelPath, &[String])],
    whole: &[String],
    foreign: &[String],
    groups: &mut PartGroups,
) {
    use serde_json::Value;
    let labels_at = |states: &[args::PathState]| {
        let mut labels = whole.to_vec();
        let mut theirs = foreign.to_vec();
        for ((_, extra), state) in parts.iter().zip(states) {
            if state.is_covered() {
                union_labels(&mut labels, extra);
                union_labels(&mut theirs, extra);
            }
        }
        (labels, theirs)
    };
    let key_here = || labels_at(states);
    let below = |key: &str| -> Vec<args::PathState> {
        parts
            .iter()
            .zip(states)
            .map(|((path, _), state)| path.step(*state, key))
            .collect()
    };
    match value {
        Value::Null => {}
        Value::String(s) => groups.push(key_here(), s),
        Value::Number(n) => groups.push(key_here(), &n.to_string()),
        Value::Bool(b) => groups.push(key_here(), if *b { "true" } else { "false" }),
        Value::Array(items) => {
            let mut index = String::new();
            for (i, item) in items.iter().enumerate() {
                use std::fmt::Write;
                index.clear();
                let _ = write!(index, "{i}");
                label_parts(item, &below(&index), parts, whole, foreign, groups);
            }
        }
        Value::Object(map) => {
            for (key, member) in map {
                // A key names its member: it carries the member's labels
                // (`/*` labels an outsider's chosen key too).
                let states = below(key);
                groups.push(labels_at(&states), key);
                label_parts(member, &states, parts, whole, foreign, groups);
            }
        }
    }
}

/// The strings, numbers and booleans in `value`, one a line (keys are not
/// values). Iterative: arguments may nest as deep as the parser allows.
fn leaf_text(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => out.push_str(s),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Null => {}
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(map) => stack.extend(map.values().rev()),
        }
        out.push('\n');
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// Nothing grants it, or a rule forbids it.
    Policy,
    /// It is granted, but a budget is spent.
    Budget,
    /// The request is malformed (its arguments fail the tool's schema).
    Invalid,
}

/// The policy's answer to one request, naming the rule that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow {
        /// The entry that granted it.
        rule: Rule,
    },
    /// A human must approve. Every rule that asks is named: an approval
    /// must cover them all.
    Ask {
        /// The first rule that asks.
        rule: Rule,
        /// The other rules that ask, in policy order.
        others: Vec<Rule>,
        /// Why, for the human and the agent (each rule's reason, prefixed
        /// with the rule's name when several ask).
        reason: String,
    },
    /// Refused.
    Deny {
        /// The rule that refused it.
        rule: Rule,
        /// Why, in words fit for the agent (never how to get more).
        reason: String,
        /// Policy, budget or malformed.
        kind: DenyKind,
    },
}

impl Decision {
    /// Allow, ask or deny.
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::Allow { .. } => Verdict::Allow,
            Decision::Ask { .. } => Verdict::Ask,
            Decision::Deny { .. } => Verdict::Deny,
        }
    }

    /// The rule that decided (of an `ask`, the first that asks).
    pub fn rule(&self) -> &Rule {
        match self {
            Decision::Allow { rule } | Decision::Ask { rule, .. } | Decision::Deny { rule, .. } => {
                rule
            }
        }
    }

    /// Every rule that decided: of an `ask`, each rule that asks; otherwise
    /// the one rule.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        let others = match self {
            Decision::Ask { others, .. } => others.as_slice(),
            _ => &[],
        };
        std::iter::once(self.rule()).chain(others)
    }

    /// [`Decision::rules`] as one text, `a, b`: what a record's `rule` says.
    pub fn rules_text(&self) -> String {
        self.rules()
            .map(Rule::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ModelPolicy {
    /// The price of `model`, if the table has one: the most specific
    /// matching pattern's (the table is kept in that order).
    pub fn price(&self, model: &str) -> Option<Price> {
        self.price_matchers
            .iter()
            .position(|m| m.is_match(model))
            .map(|i| self.prices[i].1)
    }

    /// Whether the allow list grants `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.allow_set.is_match(model)
    }

    /// `text` with every `redact` match replaced by `[REDACTED]`, and how
    /// many matches there were.
    pub fn redact<'t>(&self, text: &'t str) -> (Cow<'t, str>, usize) {
        let mut out = Cow::Borrowed(text);
        let mut count = 0;
        for regex in &self.redact_regexes {
            let found = regex.find_iter(&out).count();
            if found > 0 {
                count += found;
                out = Cow::Owned(regex.replace_all(&out, "[REDACTED]").into_owned());
            }
        }
        (out, count)
    }
}

impl Policy {
    /// Parse and validate one policy file that includes no others. `file`
    /// names it in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<Policy, SourceError> {
        let root = SourceFile {
            name: file.to_string(),
            text: text.to_string(),
        };
        Self::load(root, &mut |_, include| {
            Err(format!("`{include}` cannot be included here: this policy was given as text, with no files around it"))
        })
        .map(|(policy, _)| policy)
    }

    /// Parse and validate `root` and the files it includes, which `read`
    /// fetches (given the including file and the include as written).
    /// Returns the policy and every file loaded, in the order that
    /// [`Place::file`] indexes.
    pub fn load(
        root: SourceFile,
        read: &mut dyn FnMut(&SourceFile, &str) -> Result<SourceFile, String>,
    ) -> Result<(Policy, Vec<SourceFile>), SourceError> {
        merge::load(root, read)
    }

    /// The JSON Schema of policy files (committed as
    /// `policies/policy.schema.json`).
    pub fn json_schema() -> serde_json::Value {
        file::json_schema()
    }

    /// The tools the agent is offered: entries that allow or ask.
    pub fn granted_tools(&self) -> impl Iterator<Item = &ToolPolicy> {
        self.tools.values().filter(|t| t.decision != Verdict::Deny)
    }

    /// The part of deciding `request` that needs no session: whether a
    /// granted tool's arguments match its schema. A schema's cost grows
    /// with the arguments (linearly: patterns use a linear-time engine),
    /// so the gate runs this before it takes its lock, on the caller's
    /// time; `decide` on [`Request::validated`] then skips it.
    pub fn validate(&self, request: &Request<'_>) -> Option<Decision> {
        let Request::Tool {
            name,
            arguments,
            schema: Some(schema),
        } = *request
        else {
            return None;
        };
        let tool = self.tools.get(name)?;
        if tool.decision == Verdict::Deny {
            return None;
        }
        invalid(name, &tool.rules.schema, schema, arguments)
    }

    /// Decide `request` given what the run has used and seen. Pure and
    /// cheap: no I/O, and no allocation unless the answer is a refusal.
    pub fn decide(&self, request: &Request<'_>, session: &Session) -> Decision {
        if let Some(denial) = self.refusals_spent(session) {
            return denial;
        }
        match *request {
            Request::Model {
                model,
                messages,
                estimated_tokens,
            } => self.decide_model(model, messages, estimated_tokens, session),
            Request::Tool {
                name,
                arguments,
                schema,
            } => self.decide_tool(name, arguments, schema, session),
            Request::Http {
                tool,
                method,
                target,
            } => self.decide_http(tool, method, target),
            Request::Plan { tools } => self.decide_plan(tools, session),
            Request::Log { bytes } => {
                if session.log_bytes.saturating_add(bytes) > self.limits.output {
                    Decision::Deny {
                        rule: self.rules.output.clone(),
                        reason: format!(
                            "the run's log budget of {} is spent",
                            ByteSize(self.limits.output)
                        ),
                        kind: DenyKind::Budget,
                    }
                } else {
                    Decision::Allow {
                        rule: self.rules.output.clone(),
                    }
                }
            }
        }
    }

    /// The grants of a tool (or, with `None`, the agent) and the policy key
    /// they are written under.
    pub fn grants_of(&self, tool: Option<&str>) -> (Option<&Grants>, String) {
        match tool {
            None => (Some(&self.agent), "agent".to_string()),
            Some(name) => (
                self.tools.get(name).map(|t| &t.grants),
                format!("tools.{}", printable(name)),
            ),
        }
    }

    /// The first URL rule of `tool`'s HTTP grant matching `target`, and
    /// its index.
    pub fn http_rule(&self, tool: Option<&str>, target: &HttpTarget) -> Option<(usize, &UrlRule)> {
        let (grants, _) = self.grants_of(tool);
        grants?
            .http
            .as_ref()?
            .rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(&target.scheme, &target.host, target.port, &target.path))
    }

    fn decide_http(&self, tool: Option<&str>, method: &str, target: &HttpTarget) -> Decision {
        let (grants, key) = self.grants_of(tool);
        let who = match tool {
            Some(name) => format!("tool `{}`", printable(name)),
            None => "the agent".to_string(),
        };
        let deny = |rule: String, reason: String| Decision::Deny {
            rule: Rule::new(rule),
            reason,
            kind: DenyKind::Policy,
        };
        let Some(http) = grants.and_then(|g| g.http.as_ref()) else {
            return deny(format!("{key}.http"), format!("{who} has no HTTP grant"));
        };
        if !http.methods.iter().any(|m| m == method) {
            return deny(
                format!("{key}.http.methods"),
                format!(
                    "{who} may not use {} (allowed: {})",
                    printable(method),
                    http.methods.join(", ")
                ),
            );
        }
        match self.http_rule(tool, target) {
            Some((index, _)) => Decision::Allow {
                rule: Rule::new(format!("{key}.http.allow[{index}]")),
            },
            None => deny(
                format!("{key}.http.allow"),
                format!("{who} may not reach {}", printable(&target.to_string())),
            ),
        }
    }

    /// The refusal of every request once the run's refusal budget is spent:
    /// a guest that keeps asking for what it may not have has nothing more
    /// to gain, and must not make the host write a record per attempt.
    pub fn refusals_spent(&self, session: &Session) -> Option<Decision> {
        let max = self.limits.max_refusals;
        (session.refusals >= max).then(|| Decision::Deny {
            rule: self.rules.max_refusals.clone(),
            reason: format!(
                "all {max} refusals this run may have are used: every further request is refused"
            ),
            kind: DenyKind::Budget,
        })
    }

    fn steps_spent(&self, session: &Session) -> Option<Decision> {
        let max = self.limits.max_steps?;
        (session.steps >= max).then(|| Decision::Deny {
            rule: self.rules.max_steps.clone(),
            reason: format!("all {max} steps of this run are used"),
            kind: DenyKind::Budget,
        })
    }

    fn decide_model(
        &self,
        model: &str,
        messages: &[Message],
        estimated: u64,
        session: &Session,
    ) -> Decision {
        let policy = &self.model;
        let rules = &policy.rules;
        if !policy.allows(model) {
            let reason = if policy.allow.is_empty() {
                "no model is granted to this agent".to_string()
            } else {
                format!("model `{}` is not allowed", printable(model))
            };
            return Decision::Deny {
                rule: rules.allow.clone(),
                reason,
                kind: DenyKind::Policy,
            };
        }
        if !policy.deny.is_empty()
            && messages.iter().any(|m| {
                policy.deny_set.is_match(&m.content)
                    || m.tool_calls
                        .iter()
                        .any(|c| policy.deny_set.is_match(&c.arguments))
            })
        {
            return Decision::Deny {
                rule: rules.deny.clone(),
                reason: "the request contains text the policy does not let reach the model"
                    .to_string(),
                kind: DenyKind::Policy,
            };
        }
        if let Some(denial) = self.steps_spent(session) {
            return denial;
        }
        if let Some(max) = policy.max_calls
            && session.model_calls >= max
        {
            return Decision::Deny {
                rule: rules.max_calls.clone(),
                reason: format!("all {max} model calls of this run are used"),
                kind: DenyKind::Budget,
            };
        }
        if let Some(max) = policy.max_tokens
            && session.tokens.saturating_add(estimated) > max
        {
            return Decision::Deny {
                rule: rules.max_tokens.clone(),
                reason: format!(
                    "this call could use {estimated} tokens and {} of the run's {max} are used",
                    session.tokens
                ),
                kind: DenyKind::Budget,
            };
        }
        if let Some(max) = policy.max_cost_usd {
            let Some(price) = policy.price(model) else {
                return Decision::Deny {
                    rule: rules.prices.clone(),
                    reason: format!(
                        "model `{}` has no price, so the cost budget cannot be kept",
                        printable(model)
                    ),
                    kind: DenyKind::Policy,
                };
            };
            let worst = price
                .cost(Usage {
                    input_tokens: u32::try_from(estimated).unwrap_or(u32::MAX),
                    output_tokens: 0,
                })
                .max(price.cost(Usage {
                    input_tokens: 0,
                    output_tokens: u32::try_from(estimated).unwrap_or(u32::MAX),
                }));
            if session.cost_usd + worst > max {
                return Decision::Deny {
                    rule: rules.max_cost.clone(),
                    reason: format!(
                        "this call could cost ${worst:.4} and ${:.4} of the run's ${max:.2} is spent",
                        session.cost_usd
                    ),
                    kind: DenyKind::Budget,
                };
            }
        }
        Decision::Allow {
            rule: rules.allow.clone(),
        }
    }

    fn decide_tool(
        &self,
        name: &str,
        arguments: &serde_json::Value,
        schema: Option<&jsonschema::Validator>,
        session: &Session,
    ) -> Decision {
        let Some(tool) = self.tools.get(name) else {
            return Decision::Deny {
                rule: self.rules.default.clone(),
                reason: format!("tool `{}` is not granted", printable(name)),
                kind: DenyKind::Policy,
            };
        };
        let rules = &tool.rules;
        if tool.decision == Verdict::Deny {
            return Decision::Deny {
                rule: rules.entry.clone(),
                reason: format!("tool `{name}` is denied"),
                kind: DenyKind::Policy,
            };
        }
        if let Some(invalid) =
            schema.and_then(|schema| invalid(name, &rules.schema, schema, arguments))
        {
            return invalid;
        }

        // Labels and argument rules: the strongest verdict wins. A deny names
        // the first rule that denies; an ask names every rule that asks, so
        // that approving one of them (say, the label's) cannot let through
        // what another (an argument's) asked about.
        let mut asks: Vec<(Rule, String)> = Vec::new();
        if let Some(label) = session.has_any(&tool.deny_when_labeled) {
            return Decision::Deny {
                rule: rules.deny_when_labeled.clone(),
                reason: format!("tool `{name}` may not run once the session is labeled `{label}`"),
                kind: DenyKind::Policy,
            };
        }
        if let Some(denial) = self.outside_plan(tool, session) {
            return denial;
        }
        if let Some(label) = session.has_any(&tool.ask_when_labeled) {
            // Which results brought the label, so a person can judge it.
            let carriers = session.provenance.carriers(label, 4);
            let by = if carriers.is_empty() {
                String::new()
            } else {
                format!(" (by {})", carriers.join(", "))
            };
            asks.push((
                rules.ask_when_labeled.clone(),
                format!("the session is labeled `{label}`{by}"),
            ));
        }
        for rule in tool.arg_index.relevant(&tool.args, arguments) {
            if let Some(why) = rule.violation(arguments, &session.provenance, &session.aggregates) {
                match rule.decision {
                    Verdict::Deny => {
                        return Decision::Deny {
                            rule: rule.rule.clone(),
                            reason: why,
                            kind: DenyKind::Policy,
                        };
                    }
                    _ => asks.push((rule.rule.clone(), why)),
                }
            }
        }
        if tool.decision == Verdict::Ask {
            asks.push((
                rules.entry.clone(),
                format!("every call of `{name}` needs approval"),
            ));
        }

        if let Some(denial) = self.steps_spent(session) {
            return denial;
        }
        if let Some(max) = tool.max_calls
            && session.tool_calls.get(name).copied().unwrap_or(0) >= max
        {
            return Decision::Deny {
                rule: rules.max_calls.clone(),
                reason: format!("all {max} calls of tool `{name}` in this run are used"),
                kind: DenyKind::Budget,
            };
        }
        if let Some(rate) = tool.rate {
            let recent = session.recent.get(name).map_or(0, |times| {
                times
                    .iter()
                    .filter(|t| session.now.saturating_sub(**t) < RATE_WINDOW)
                    .count()
            });
            if recent >= rate as usize {
                return Decision::Deny {
                    rule: rules.rate.clone(),
                    reason: format!("tool `{name}` may be called {rate} times a minute"),
                    kind: DenyKind::Budget,
                };
            }
        }
        ask_of(asks).unwrap_or_else(|| Decision::Allow {
            rule: rules.entry.clone(),
        })
    }
}

/// One `ask` naming every rule that asked, or `None` when none did.
fn ask_of(asks: Vec<(Rule, String)>) -> Option<Decision> {
    let mut asks = asks.into_iter();
    let (rule, first_reason) = asks.next()?;
    let others: Vec<(Rule, String)> = asks.collect();
    if others.is_empty() {
        return Some(Decision::Ask {
            rule,
            others: Vec::new(),
            reason: first_reason,
        });
    }
    let mut reason = format!("{rule}: {first_reason}");
    for (other, why) in &others {
        use std::fmt::Write;
        let _ = write!(reason, "; {other}: {why}");
    }
    Some(Decision::Ask {
        rule,
        others: others.into_iter().map(|(rule, _)| rule).collect(),
        reason,
    })
}

/// Guest-chosen text quoted back in a reason: bounded, one line, and
/// escaped as the terminal shows guest text ([`crate::transcript::clean`]),
/// so a reason cannot hide or reorder what it quotes.
pub fn printable(text: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    let mut shown = 0;
    for c in text.chars() {
        let piece = crate::transcript::clean_line(c.encode_utf8(&mut [0; 4]));
        let width = piece.chars().count();
        if shown + width > MAX {
            out.push('…');
            break;
        }
        shown += width;
        out.push_str(&piece);
    }
    out
}

/// A refusal if `arguments` fail the tool's `schema`, naming where.
fn invalid(
    name: &str,
    rule: &Rule,
    schema: &jsonschema::Validator,
    arguments: &serde_json::Value,
) -> Option<Decision> {
    let error = schema.iter_errors(arguments).next()?;
    let at = error.instance_path().to_string();
    let at = if at.is_empty() {
        "the arguments do".to_string()
    } else {
        format!("`{at}` does")
    };
    Some(Decision::Deny {
        rule: rule.clone(),
        reason: format!(
            "{at} not match the schema of `{name}`: {}",
            printable(&error.to_string())
        ),
        kind: DenyKind::Invalid,
    })
}

#[cfg(test)]
mod tests;
