//! The policy file as written: TOML deserialized into "raw" types that keep
//! every value's place in its file. `compile` turns them into a [`Policy`];
//! `merge` combines a file with the files it includes. The JSON Schema that
//! editors use (`policies/policy.schema.json`) is generated from these
//! types, so it cannot drift from what the parser accepts.
//!
//! [`Policy`]: super::Policy

use super::units::{ByteSize, HumanDuration};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;
use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

thread_local! {
    /// The file being deserialized on this thread, stamped into every [`At`]
    /// so that diagnostics after merging still know which file a value came
    /// from. Set only by [`parse_raw`], for the duration of one parse.
    static CURRENT_FILE: Cell<usize> = const { Cell::new(0) };
}

/// A value, where it is (byte range), and in which file (an index into the
/// files of one policy load).
#[derive(Debug, Clone)]
pub struct At<T> {
    /// The value.
    pub value: T,
    /// Its byte range in its file.
    pub span: Range<usize>,
    /// Which file.
    pub file: usize,
}

impl<T> At<T> {
    /// The value.
    pub fn get(&self) -> &T {
        &self.value
    }

    /// Where it is.
    pub fn place(&self) -> Place {
        Place {
            file: self.file,
            span: self.span.clone(),
        }
    }
}

/// A place in one of the files of a policy load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    /// Index of the file.
    pub file: usize,
    /// Byte range.
    pub span: Range<usize>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<T>::deserialize(deserializer)?;
        Ok(At {
            span: spanned.span(),
            value: spanned.into_inner(),
            file: CURRENT_FILE.with(Cell::get),
        })
    }
}

// Map keys compare by value only.
impl<T: PartialEq> PartialEq for At<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for At<T> {}
impl<T: PartialOrd> PartialOrd for At<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.value.partial_cmp(&other.value)
    }
}
impl<T: Ord> Ord for At<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

impl<T: JsonSchema> JsonSchema for At<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

impl JsonSchema for ByteSize {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: bytes as an integer, or a string with a unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. \"64MiB\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9][0-9_]*(\\.[0-9]+)?\\s*([KkMmGg][Ii]?[Bb]|[Bb])?\\s*$" }
            ]
        })
    }
}

impl JsonSchema for HumanDuration {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration such as \"500ms\", \"30s\", \"2m\" or \"1h 30m\".",
            "type": "string"
        })
    }
}

/// A rule's numeric bound (`min`, `max`) as written: a TOML integer stays
/// an exact integer (an `f64` would round past 2^53), a float stays a float.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound(pub serde_json::Number);

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundVisitor;
        impl Visitor<'_> for BoundVisitor {
            type Value = Bound;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, e.g. max = 100")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bound, E> {
                Ok(Bound(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bound, E> {
                Ok(Bound(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Bound, E> {
                serde_json::Number::from_f64(v)
                    .map(Bound)
                    .ok_or_else(|| E::custom("a bound must be a finite number, e.g. max = 100"))
            }
        }
        deserializer.deserialize_any(BoundVisitor)
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for Bound {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Bound".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "number" })
    }
}

/// What a policy entry or rule answers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// A human must approve.
    Ask,
    /// Refused.
    Deny,
}

impl Verdict {
    /// The name policies and records use.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Ask => "ask",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A warden policy file. Everything not granted here is denied.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "warden policy")]
pub struct RawPolicy {
    /// Policy files this one builds on, relative to this file. This file
    /// may narrow what they grant; widening needs `widen`.
    #[serde(default)]
    pub include: Vec<At<String>>,
    /// Keys (e.g. "limits.memory", "tools.fetch") this file deliberately
    /// widens relative to its includes. Each use is reported by `warden check`.
    #[serde(default)]
    pub widen: Vec<At<String>>,
    /// Limits on every guest instance.
    pub limits: Option<RawLimits>,
    /// What the agent may ask of the model.
    pub model: Option<RawModel>,
    /// What the agent itself may touch (files, network, environment).
    pub agent: Option<RawGrants>,
    /// The tools the agent may call, by name.
    #[serde(default)]
    pub tools: BTreeMap<At<String>, At<RawTool>>,
    /// Secrets the host reads and injects into granted HTTP requests.
    #[serde(default)]
    pub secrets: BTreeMap<At<String>, At<RawSecret>>,
    /// A fixed clock and seeded randomness for every guest, so runs repeat.
    pub reproducible: Option<RawReproducible>,
    /// Whether the agent must declare, before the session carries any
    /// label, which tools with effects it will use.
    pub plan: Option<RawPlan>,
    /// How long a person may take to answer an `ask`, and how many asks of
    /// one run may wait at once.
    pub approvals: Option<RawApprovals>,
}

/// `[approvals]`: asks waiting for a person.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Approvals")]
pub struct RawApprovals {
    /// How long an `ask` waits for a person's answer before it is refused
    /// as unanswered (default "5m", at least "1s", at most "24h").
    pub timeout: Option<At<HumanDuration>>,
    /// Most asks of one run waiting for a person at once (default 16, at
    /// least 1); past it an ask is refused as unanswered.
    pub max_pending: Option<At<u32>>,
}

/// `[plan]`: plan before taint.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Plan")]
pub struct RawPlan {
    /// The agent must declare the tools with effects it will use (its
    /// plan, `tools.declare-plan`) before the session carries any label;
    /// once labeled, a tool with effects outside the plan is refused, and
    /// with no plan every tool with effects is (default false). A tool is
    /// read-only, and never refused by the plan, only if its entry says
    /// `effects = "none"`.
    pub required: Option<At<bool>>,
}

/// `[reproducible]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Reproducible")]
pub struct RawReproducible {
    /// The wall-clock time every guest sees, RFC 3339 (e.g.
    /// "2026-01-01T00:00:00Z"); it does not advance.
    pub time: Option<At<String>>,
    /// Seed of every guest's random numbers (`wasi:random`).
    pub random_seed: Option<At<u64>>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub struct RawLimits {
    /// Linear memory per instance (default "128MiB", at most "4GiB").
    pub memory: Option<At<ByteSize>>,
    /// Guest execution time per instance (default "10s").
    pub cpu: Option<At<HumanDuration>>,
    /// Wall-clock time: the whole run for the agent, each call for a tool
    /// (default "120s").
    pub wall: Option<At<HumanDuration>>,
    /// Largest answer or tool result; all log lines of a run together
    /// (default "1MiB").
    pub output: Option<At<ByteSize>>,
    /// Most mediated actions (model calls plus tool calls, allowed or
    /// refused) in a run.
    pub max_steps: Option<At<u32>>,
    /// Most refused requests recorded in a run (default 100); past it every
    /// request is refused, the first with one record, the rest only counted.
    pub max_refusals: Option<At<u32>>,
    /// Captured stdout and stderr recorded in a run, all instances together
    /// (default "1MiB"); past it output is counted, not recorded.
    pub stdio: Option<At<ByteSize>>,
    /// Memory of the provenance index in a run (default "16MiB"); once full,
    /// later data is not indexed and values seen only there fail `from`.
    pub index: Option<At<ByteSize>>,
    /// Largest field of an audit record (default "16KiB", at least "256B");
    /// a longer value is kept as its start, its size and its SHA-256.
    pub audit_field: Option<At<ByteSize>>,
}

/// `[model]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Model")]
pub struct RawModel {
    /// Who answers model calls when the command line names no provider:
    /// `openai:MODEL`, `anthropic:MODEL`, `openai-compatible:URL#MODEL`,
    /// `scripted:FILE` or `replay:FILE`.
    pub provider: Option<At<String>>,
    /// The environment variable holding the provider's API key (default
    /// OPENAI_API_KEY or ANTHROPIC_API_KEY).
    pub api_key_env: Option<At<String>>,
    /// A file holding the provider's API key, relative to this file.
    pub api_key_file: Option<At<String>>,
    /// Time limit per provider request, retries excluded (default "120s").
    pub timeout: Option<At<HumanDuration>>,
    /// Largest provider response accepted (default "4MiB").
    pub max_response: Option<At<ByteSize>>,
    /// Retries on 429 and 5xx answers (default 3).
    pub max_retries: Option<At<u32>>,
    /// Model names the agent may use; globs (`claude-*`). Empty: none.
    pub allow: Option<Vec<At<String>>>,
    /// Most model calls in a run.
    pub max_calls: Option<At<u32>>,
    /// Most tokens (input plus output) in a run.
    pub max_tokens: Option<At<u64>>,
    /// Most output tokens one call may ask for (requests are clamped).
    pub max_tokens_per_call: Option<At<u32>>,
    /// Most spend in a run, in US dollars, priced by `prices`.
    pub max_cost_usd: Option<At<f64>>,
    /// Price per million tokens, by model name or glob.
    #[serde(default)]
    pub prices: BTreeMap<At<String>, At<RawPrice>>,
    /// Regular expressions: a request whose text matches one is refused.
    #[serde(default)]
    pub deny: Vec<At<String>>,
    /// Regular expressions: matching text is replaced by `[REDACTED]` before
    /// a request leaves the host.
    #[serde(default)]
    pub redact: Vec<At<String>>,
    /// Labels every model answer adds to the session.
    #[serde(default)]
    pub labels: Vec<At<String>>,
}

/// Price of a model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Price")]
pub struct RawPrice {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

/// `[tools.NAME]`: one tool and its rules.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Tool")]
pub struct RawTool {
    /// The component that provides the tool: a path relative to this file,
    /// `builtin:NAME`, or an https:// URL (downloaded; needs `sha256`).
    pub component: Option<At<String>>,
    /// SHA-256 (hex) the component's bytes must have.
    pub sha256: Option<At<String>>,
    /// allow (default), ask (a human approves each call) or deny.
    pub decision: Option<At<Verdict>>,
    /// Most calls in a run.
    pub max_calls: Option<At<u32>>,
    /// Most calls in any 60 seconds.
    pub rate: Option<At<u32>>,
    /// Rules on the call's JSON arguments, by field.
    #[serde(default)]
    pub args: BTreeMap<At<String>, At<RawArgEntry>>,
    /// Labels this tool's results carry: a list (the whole result), or a
    /// table from label paths to lists (parts of a JSON result).
    #[serde(default)]
    pub labels: RawLabels,
    /// Labels for the parts of a result that the tool's own description
    /// marks as third-party (`x-warden-third-party` in its schema). Unset:
    /// the tool's declaration is ignored.
    #[serde(default)]
    pub third_party_labels: Vec<At<String>>,
    /// Whether labels flow through the tool (default true): its results
    /// carry the labels of the argument values that produced them and of
    /// what was written to its store; a call of a tool with effects writes
    /// its arguments' labels to its store.
    pub labels_flow: Option<At<bool>>,
    /// Deny calls once the session carries any of these labels.
    #[serde(default)]
    pub deny_when_labeled: Vec<At<String>>,
    /// Ask a human once the session carries any of these labels.
    #[serde(default)]
    pub ask_when_labeled: Vec<At<String>>,
    /// What calling the tool can change, as the policy's author says:
    /// `"none"` (it only reads and computes) silences the warning for a tool
    /// allowed with no argument rules whose name sounds like it changes
    /// things, and is refused beside a grant that can change things (a
    /// read-write directory, HTTP methods other than GET and HEAD).
    pub effects: Option<At<Effects>>,
    /// How long one instance of the tool lives: `"per-call"` (default: a
    /// fresh instance for every call) or `"per-run"` (one instance kept for
    /// the run, or the MCP session, so state such as an interpreter's
    /// variables survives between calls).
    pub instance: Option<At<Instance>>,
    // The five grant keys below repeat `RawGrants`: serde cannot `flatten`
    // a struct into one that denies unknown fields, and unknown keys must
    // stay errors. `compile` turns both into one `Grants`.
    /// Outgoing HTTP the tool may make.
    pub http: Option<At<RawHttp>>,
    /// Directories the tool may see, by the path it sees them at.
    #[serde(default)]
    pub fs: BTreeMap<At<String>, At<RawMount>>,
    /// Environment variables the tool sees, with fixed values.
    #[serde(default)]
    pub env: BTreeMap<At<String>, At<String>>,
    /// Environment variables passed through from the host.
    #[serde(default)]
    pub inherit_env: Vec<At<String>>,
    /// Secrets (from `[secrets]`) injected into the tool's HTTP requests.
    #[serde(default)]
    pub secrets: Vec<At<String>>,
}

/// `[agent]`: what the agent component itself may touch.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Grants")]
pub struct RawGrants {
    /// Outgoing HTTP the agent may make.
    pub http: Option<At<RawHttp>>,
    /// Directories the agent may see.
    #[serde(default)]
    pub fs: BTreeMap<At<String>, At<RawMount>>,
    /// Environment variables with fixed values.
    #[serde(default)]
    pub env: BTreeMap<At<String>, At<String>>,
    /// Environment variables passed through from the host.
    #[serde(default)]
    pub inherit_env: Vec<At<String>>,
    /// Secrets injected into the agent's HTTP requests.
    #[serde(default)]
    pub secrets: Vec<At<String>>,
}

/// Outgoing HTTP.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http")]
pub struct RawHttp {
    /// URL patterns: `scheme://host[:port]/path-glob`; host may start with
    /// `*.`; or tables with `url`, `labels` and `private`.
    #[serde(default)]
    pub allow: Vec<At<RawUrlRule>>,
    /// Methods allowed (default ["GET"]).
    pub methods: Option<Vec<At<String>>>,
    /// Largest request body (default "1MiB").
    pub max_request: Option<At<ByteSize>>,
    /// Largest response body (default "10MiB").
    pub max_response: Option<At<ByteSize>>,
    /// Connect plus transfer time per request (default "30s").
    pub timeout: Option<At<HumanDuration>>,
}

/// A tool's `labels`: `["untrusted"]` labels the whole result;
/// `{ "/description" = ["untrusted"], "/" = [...] }` labels parts of a
/// JSON result by path (`/` is the whole).
#[derive(Debug, Clone, Default)]
pub struct RawLabels {
    /// The list form.
    pub whole: Vec<At<String>>,
    /// The table form, by path as written.
    pub paths: BTreeMap<At<String>, Vec<At<String>>>,
}

impl JsonSchema for RawLabels {
    fn schema_name() -> Cow<'static, str> {
        "Labels".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Labels the tool's results carry: a list (the whole result), or a table from label paths (`/` for the whole result, a JSON Pointer such as `/description`, `*` for one segment, `**` for any depth) to lists, labelling those parts of a JSON result.",
            "anyOf": [
                { "type": "array", "items": { "type": "string" } },
                {
                    "type": "object",
                    "additionalProperties": { "type": "array", "items": { "type": "string" } }
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = RawLabels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a list of labels, or a table from result paths to lists of labels (`{ \"/description\" = [\"untrusted\"] }`)",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawLabels, A::Error> {
                let mut whole = Vec::new();
                while let Some(label) = seq.next_element::<At<String>>()? {
                    whole.push(label);
                }
                Ok(RawLabels {
                    whole,
                    paths: BTreeMap::new(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawLabels, A::Error> {
                let paths = BTreeMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawLabels {
                    whole: Vec::new(),
                    paths,
                })
            }
        }
        deserializer.deserialize_any(LabelsVisitor)
    }
}

/// One URL rule.
#[derive(Debug, Clone, Default)]
pub struct RawUrlRule {
    /// The pattern.
    pub url: String,
    /// Labels responses from matching URLs add to the session.
    pub labels: Vec<String>,
    /// Whether the rule may reach loopback, private and link-local addresses.
    pub private: bool,
}

impl JsonSchema for RawUrlRule {
    fn schema_name() -> Cow<'static, str> {
        "UrlRule".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A URL pattern `scheme://host[:port]/path-glob` (host may be `*` or start with `*.`), or a table with it as `url`.",
            "anyOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": {
                        "url": { "type": "string" },
                        "labels": { "type": "array", "items": { "type": "string" }, "description": "Labels responses from matching URLs add to the session." },
                        "private": { "type": "boolean", "description": "Whether the rule may reach loopback, private and link-local addresses." }
                    },
                    "required": ["url"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawUrlRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            url: String,
            #[serde(default)]
            labels: Vec<String>,
            #[serde(default)]
            private: bool,
        }
        struct RuleVisitor;
        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = RawUrlRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL pattern, or a table with `url`, `labels` and `private`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUrlRule, E> {
                Ok(RawUrlRule {
                    url: v.to_string(),
                    ..RawUrlRule::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawUrlRule, A::Error> {
                let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawUrlRule {
                    url: table.url,
                    labels: table.labels,
                    private: table.private,
                })
            }
        }
        deserializer.deserialize_any(RuleVisitor)
    }
}

/// A directory granted to a guest.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Mount")]
pub struct RawMount {
    /// The host directory, relative to the policy file.
    pub dir: String,
    /// "ro" (default) or "rw".
    #[serde(default)]
    pub mode: MountMode,
    /// Most bytes the guest may write under it (rw only).
    pub quota: Option<ByteSize>,
}

/// What calling a tool can change (`effects`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effects {
    /// Nothing outside its own instance: it reads and computes. Its grants
    /// must agree (no read-write directory, no HTTP method but GET and HEAD).
    None,
}

impl fmt::Display for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effects::None => "none",
        })
    }
}

/// How long one instance of a tool lives (`instance`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Instance {
    /// A fresh instance for every call (the default): nothing one call
    /// leaves behind reaches the next.
    #[default]
    PerCall,
    /// One instance kept for the run (or the MCP session): its memory
    /// stays charged to the tool's limits, a limit hit or trap tears it
    /// down, and it is a store for labels that flow.
    PerRun,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Instance::PerCall => "per-call",
            Instance::PerRun => "per-run",
        })
    }
}

/// Read-only or read-write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// Read only.
    #[default]
    Ro,
    /// Read and write.
    Rw,
}

/// `[secrets.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Secret")]
pub struct RawSecret {
    /// Read the value from this host environment variable.
    pub from_env: Option<String>,
    /// Read the value from this file (relative to the policy file).
    pub from_file: Option<String>,
    /// Where the host injects it.
    pub inject: Option<RawInject>,
}

/// How a secret is injected into requests.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Inject")]
pub struct RawInject {
    /// The only host (exact, or `*.example.com`) that receives it.
    pub host: String,
    /// The header it goes in.
    pub header: String,
    /// The header's value, with `{}` where the secret goes (default "{}").
    pub format: Option<String>,
}

/// The keys of an argument rule; a table with none of them is a level of a
/// nested field path.
#[rustfmt::skip]
pub const RULE_KEYS: &[&str] = &[
    "equals", "one_of", "matches", "not_matches", "not_contains", "glob", "prefix", "min", "max",
    "max_len", "schema", "from", "same_as", "differs_from", "any_of", "max_total", "max_distinct",
    "shared", "required", "decision",
];

/// A rule on one argument field: the checks it makes and what happens when
/// one fails.
#[derive(Debug, Clone, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rule")]
pub struct RawRule {
    /// The value must equal this.
    pub equals: Option<At<serde_json::Value>>,
    /// The value must equal one of these.
    pub one_of: Option<At<Vec<serde_json::Value>>>,
    /// The value must match this regular expression (whole value).
    pub matches: Option<At<String>>,
    /// The value must not match this regular expression (whole value).
    pub not_matches: Option<At<String>>,
    /// The string must contain none of these (case folded).
    pub not_contains: Option<At<Vec<String>>>,
    /// The value must match this glob.
    pub glob: Option<At<String>>,
    /// The value must start with this.
    pub prefix: Option<At<String>>,
    /// The number must be at least this.
    pub min: Option<At<Bound>>,
    /// The number must be at most this.
    pub max: Option<At<Bound>>,
    /// The string (characters) or array (items) must be at most this long.
    pub max_len: Option<At<u64>>,
    /// The value must validate against this JSON Schema.
    pub schema: Option<At<serde_json::Value>>,
    /// The value must occur in data from these sources: "task",
    /// "unlabeled", "model", "tool:NAME", "label:NAME".
    pub from: Option<At<Vec<At<String>>>>,
    /// The value must equal the argument at this field path.
    pub same_as: Option<At<String>>,
    /// The value must differ from the argument at this field path (when
    /// that one is present).
    pub differs_from: Option<At<String>>,
    /// The value passes if it passes all the checks of any one of these
    /// rule tables (no `required`, `decision` or `any_of` inside).
    pub any_of: Option<At<Vec<At<RawRule>>>>,
    /// The numbers this field holds, added up over the run's allowed calls,
    /// must stay at most this.
    pub max_total: Option<At<Bound>>,
    /// The distinct values this field holds over the run's allowed calls
    /// must be at most this many.
    pub max_distinct: Option<At<u32>>,
    /// The name of a count `max_total` and `max_distinct` share with every
    /// rule that names it (several tools sending money from one budget);
    /// unsaid, the rule counts alone.
    pub shared: Option<At<String>>,
    /// A missing field fails the rule (default: a missing field passes).
    pub required: Option<At<bool>>,
    /// What a failed check decides: deny (default) or ask.
    pub decision: Option<At<Verdict>>,
}

/// What stands under `args.FIELD`: one rule, a list of rules, or (for a
/// table without rule keys) the next level of a nested field path.
#[derive(Debug, Clone)]
pub enum RawArgEntry {
    /// Rules on this field.
    Rules(Vec<At<RawRule>>),
    /// Deeper fields.
    Nested(BTreeMap<At<String>, At<RawArgEntry>>),
    /// Both (only from merging two files, one with rules on this field and
    /// one with rules on deeper fields).
    Mixed(Vec<At<RawRule>>, BTreeMap<At<String>, At<RawArgEntry>>),
}

/// The rules on a field and its deeper fields.
pub type ArgParts = (Vec<At<RawRule>>, BTreeMap<At<String>, At<RawArgEntry>>);

impl RawArgEntry {
    /// Split into rules on this field and deeper fields.
    pub fn into_parts(self) -> ArgParts {
        match self {
            RawArgEntry::Rules(rules) => (rules, BTreeMap::new()),
            RawArgEntry::Nested(nested) => (Vec::new(), nested),
            RawArgEntry::Mixed(rules, nested) => (rules, nested),
        }
    }

    /// Join rules and deeper fields.
    pub fn from_parts(
        rules: Vec<At<RawRule>>,
        nested: BTreeMap<At<String>, At<RawArgEntry>>,
    ) -> Self {
        match (rules.is_empty(), nested.is_empty()) {
            (_, true) => RawArgEntry::Rules(rules),
            (true, false) => RawArgEntry::Nested(nested),
            (false, false) => RawArgEntry::Mixed(rules, nested),
        }
    }
}

impl JsonSchema for RawArgEntry {
    fn schema_name() -> Cow<'static, str> {
        "ArgEntry".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let rule = generator.subschema_for::<RawRule>();
        let entry = generator.subschema_for::<RawArgEntry>();
        json_schema!({
            "description": "A rule on this field, a list of rules, or a table of deeper fields.",
            "anyOf": [
                rule,
                { "type": "array", "items": rule },
                { "type": "object", "additionalProperties": entry }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawArgEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = DEEPER_KEY.with(|k| k.borrow_mut().take());
        deserializer.deserialize_any(EntryVisitor {
            key: key.as_deref(),
        })
    }
}

/// The keys of a rule, for a message: "`equals`, `one_of`, ...".
fn rule_keys() -> String {
    RULE_KEYS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads what stands under `args.FIELD`; `key` is the key it stands
/// under when that is not a rule key (so it names a deeper field, and a
/// plain value there is most likely a misspelled rule key).
struct EntryVisitor<'k> {
    key: Option<&'k str>,
}

impl EntryVisitor<'_> {
    fn not_a_rule<E: de::Error>(&self, what: de::Unexpected<'_>) -> E {
        match self.key {
            Some(key) => E::custom(format!(
                "unknown rule key `{key}`, expected one of {}; a key that is not a rule key names a deeper field, and holds a table of rules, not {what}",
                rule_keys()
            )),
            None => E::invalid_type(what, self),
        }
    }
}

impl<'de> Visitor<'de> for EntryVisitor<'_> {
    type Value = RawArgEntry;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a rule table such as `{{ matches = '...' }}`, a list of them, or a table of deeper fields (any key but the rule keys {} names a deeper field)",
            rule_keys()
        )
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawArgEntry, E> {
        Err(self.not_a_rule(de::Unexpected::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawArgEntry, E> {
        Err(self.not_a_rule(de::Unexpected::Signed(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawArgEntry, E> {
        Err(self.not_a_rule(de::Unexpected::Unsigned(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawArgEntry, E> {
        Err(self.not_a_rule(de::Unexpected::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawArgEntry, E> {
        Err(self.not_a_rule(de::Unexpected::Str(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawArgEntry, A::Error> {
        let mut rules = Vec::new();
        while let Some(rule) = seq.next_element::<At<RawRuleTable>>()? {
            rules.push(At {
                value: rule.value.0,
                span: rule.span,
                file: rule.file,
            });
        }
        Ok(RawArgEntry::Rules(rules))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawArgEntry, A::Error> {
        let mut rule = RawRule::default();
        let mut has_rule = false;
        let mut nested = BTreeMap::new();
        while let Some(key) = map.next_key::<At<String>>()? {
            if RULE_KEYS.contains(&key.value.as_str()) {
                has_rule = true;
                read_rule_key(&mut rule, &key.value, &mut map)?;
            } else {
                DEEPER_KEY.with(|k| *k.borrow_mut() = Some(key.value.clone()));
                let entry = map.next_value::<At<RawArgEntry>>();
                DEEPER_KEY.with(|k| k.borrow_mut().take());
                nested.insert(key, entry?);
            }
        }
        match (has_rule, nested.is_empty()) {
            (true, true) => Ok(RawArgEntry::Rules(vec![At {
                value: rule,
                span: 0..0,
                file: CURRENT_FILE.with(Cell::get),
            }])),
            (false, _) => Ok(RawArgEntry::Nested(nested)),
            (true, false) => {
                let fields: Vec<_> = nested.keys().map(|k| format!("`{}`", k.value)).collect();
                Err(de::Error::custom(format!(
                    "this table mixes rule keys with {}, which are not rule keys (expected one of {})",
                    fields.join(", "),
                    rule_keys()
                )))
            }
        }
    }
}

thread_local! {
    /// The key the [`RawArgEntry`] about to be read stands under, when it
    /// is not a rule key: set just before the value is read, taken by the
    /// first entry read, and cleared after. (A `DeserializeSeed` cannot
    /// reach through [`At`]'s `Spanned`.)
    static DEEPER_KEY: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A rule table in a list, where every key must be a rule key.
struct RawRuleTable(RawRule);

impl<'de> Deserialize<'de> for RawRuleTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RuleVisitor;
        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = RawRuleTable;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rule table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRuleTable, A::Error> {
                let mut rule = RawRule::default();
                while let Some(key) = map.next_key::<String>()? {
                    if !RULE_KEYS.contains(&key.as_str()) {
                        return Err(de::Error::unknown_field(&key, RULE_KEYS));
                    }
                    read_rule_key(&mut rule, &key, &mut map)?;
                }
                Ok(RawRuleTable(rule))
            }
        }
        deserializer.deserialize_map(RuleVisitor)
    }
}

fn read_rule_key<'de, A: MapAccess<'de>>(
    rule: &mut RawRule,
    key: &str,
    map: &mut A,
) -> Result<(), A::Error> {
    fn set<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), String> {
        if slot.is_some() {
            return Err(format!("duplicate key `{key}`"));
        }
        *slot = Some(value);
        Ok(())
    }
    let result = match key {
        "equals" => set(&mut rule.equals, map.next_value()?, key),
        "one_of" => set(&mut rule.one_of, map.next_value()?, key),
        "matches" => set(&mut rule.matches, map.next_value()?, key),
        "not_matches" => set(&mut rule.not_matches, map.next_value()?, key),
        "not_contains" => set(&mut rule.not_contains, map.next_value()?, key),
        "same_as" => set(&mut rule.same_as, map.next_value()?, key),
        "max_total" => set(&mut rule.max_total, map.next_value()?, key),
        "max_distinct" => set(&mut rule.max_distinct, map.next_value()?, key),
        "shared" => set(&mut rule.shared, map.next_value()?, key),
        "differs_from" => set(&mut rule.differs_from, map.next_value()?, key),
        "any_of" => {
            let alternatives: At<Vec<At<RawRuleTable>>> = map.next_value()?;
            let At { value, span, file } = alternatives;
            let value = value
                .into_iter()
                .map(|rule| At {
                    value: rule.value.0,
                    span: rule.span,
                    file: rule.file,
                })
                .collect();
            set(&mut rule.any_of, At { value, span, file }, key)
        }
        "glob" => set(&mut rule.glob, map.next_value()?, key),
        "prefix" => set(&mut rule.prefix, map.next_value()?, key),
        "min" => set(&mut rule.min, map.next_value()?, key),
        "max" => set(&mut rule.max, map.next_value()?, key),
        "max_len" => set(&mut rule.max_len, map.next_value()?, key),
        "schema" => set(&mut rule.schema, map.next_value()?, key),
        "from" => set(&mut rule.from, map.next_value()?, key),
        "required" => set(&mut rule.required, map.next_value()?, key),
        "decision" => set(&mut rule.decision, map.next_value()?, key),
        _ => unreachable!("callers pass rule keys only"),
    };
    result.map_err(de::Error::custom)
}

/// Deserialize one file's text as file number `file` of a load; on
/// failure, every error found (see [`crate::diagnostic::from_toml_all`]).
pub fn parse_raw(file: usize, text: &str) -> Result<RawPolicy, Vec<toml::de::Error>> {
    struct Reset(usize);
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT_FILE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(CURRENT_FILE.with(|c| c.replace(file)));
    crate::diagnostic::from_toml_all(text)
}

/// The JSON Schema of a policy file, for editors.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RawPolicy);
    serde_json::to_value(schema).expect("a schema serializes")
}
