//! From the raw (merged) file to a [`Policy`]: every regex, glob, schema
//! and URL pattern is compiled here, once; every mistake becomes an error
//! or warning pointing at the text, with a hint.

use super::args::{ArgRule, Check, FieldPath, LabelPath, compare_numbers, json_eq};
use super::file::{
    At, Instance, MountMode, Place, RawApprovals, RawArgEntry, RawGrants, RawHttp, RawLimits,
    RawModel, RawPlan, RawPolicy, RawReproducible, RawRule, RawSecret, RawTool, Verdict,
};
use super::plan::PlanPolicy;
use super::provenance::SourceSpec;
use super::{
    CommonRules, ComponentRef, Grants, HostPattern, HttpGrant, Inject, Limits, ModelPolicy,
    ModelRules, Mount, Policy, Price, Rule, SecretPolicy, SecretSource, ToolPolicy, ToolRules,
    UrlRule,
};
use crate::diagnostic::Diagnostic;
use globset::{Glob, GlobBuilder, GlobSetBuilder};
use regex::RegexBuilder;
use regex_automata::meta;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The largest linear memory a guest may be granted: 32-bit wasm memories
/// stop at 4 GiB, and the engine's pool reserves no more.
pub const MAX_MEMORY: u64 = 4 << 30;

/// Regexes from policies are bounded, so a policy cannot make the host
/// build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Collects findings while compiling.
pub(super) struct Findings(pub Vec<Diagnostic>);

impl Findings {
    fn error(&mut self, place: &Place, message: impl Into<String>, help: impl Into<String>) {
        self.0.push(
            Diagnostic::error(message, Some(place.span.clone()))
                .in_file(place.file)
                .with_help(help),
        );
    }

    fn warn(&mut self, place: &Place, message: impl Into<String>, help: impl Into<String>) {
        self.0.push(
            Diagnostic::warning(message, Some(place.span.clone()))
                .in_file(place.file)
                .with_help(help),
        );
    }
}

pub(super) fn compile(raw: RawPolicy, found: &mut Findings) -> Policy {
    let limits = limits(raw.limits.unwrap_or_default(), found);
    let reproducible = reproducible(raw.reproducible.unwrap_or_default(), found);
    let tool_names: BTreeSet<String> = raw.tools.keys().map(|k| k.value.clone()).collect();
    let secrets = secrets(raw.secrets, found);
    let model_place = raw
        .model
        .as_ref()
        .and_then(|m| m.allow.as_ref())
        .and_then(|a| a.first())
        .map(At::place);
    let model = model(raw.model.unwrap_or_default(), found);
    let agent = grants(raw.agent.unwrap_or_default(), "agent", &secrets, found);
    let mut tools = BTreeMap::new();
    let mut regexes = Regexes::default();
    for (name, entry) in raw.tools {
        if let Some(tool) = tool(&name, entry, &tool_names, &secrets, &mut regexes, found) {
            tools.insert(name.value, tool);
        }
    }
    check_labels(&model, &tools, found);
    let plan = plan(raw.plan.unwrap_or_default(), &model, found);
    let approvals = approvals(raw.approvals.unwrap_or_default(), found);
    risks(
        &model,
        &agent,
        &tools,
        &secrets,
        model_place.as_ref(),
        found,
    );
    Policy {
        limits,
        reproducible,
        plan,
        approvals,
        model,
        agent,
        tools,
        secrets,
        warnings: Vec::new(),
        includes: Vec::new(),
        rules: CommonRules {
            default: Rule::new("default"),
            output: Rule::new("limits.output"),
            max_steps: Rule::new("limits.max_steps"),
            max_refusals: Rule::new("limits.max_refusals"),
        },
    }
}

fn limits(raw: RawLimits, found: &mut Findings) -> Limits {
    let defaults = Limits::default();
    let memory = match raw.memory {
        Some(memory) => {
            let bytes = memory.value.0;
            if bytes < (1 << 20) {
                found.error(
                    &memory.place(),
                    format!("`memory` is {}; guests need at least 1MiB", memory.value),
                    "Rust guests run in 2MiB; 64MiB suits most agents",
                );
            } else if bytes > MAX_MEMORY {
                found.error(
                    &memory.place(),
                    format!(
                        "`memory` is {}; the most a guest can use is 4GiB",
                        memory.value
                    ),
                    "wasm32 memories are limited to 4GiB: lower the limit",
                );
            }
            bytes
        }
        None => defaults.memory,
    };
    let mut duration =
        |value: Option<At<super::HumanDuration>>, key: &str, default: Duration| match value {
            Some(value) if value.value.0.is_zero() => {
                found.error(
                    &value.place(),
                    format!("`{key}` is zero, so no guest could run"),
                    "give a positive duration such as \"10s\"",
                );
                default
            }
            Some(value) => value.value.0,
            None => default,
        };
    let cpu_place = raw.cpu.as_ref().map(At::place);
    let cpu = duration(raw.cpu, "cpu", defaults.cpu);
    let wall = duration(raw.wall, "wall", defaults.wall);
    if cpu > wall
        && let Some(place) = cpu_place
    {
        found.warn(
            &place,
            format!(
                "`cpu` ({}) is longer than `wall` ({}), so the wall clock always stops a run first",
                super::HumanDuration(cpu),
                super::HumanDuration(wall)
            ),
            "make `cpu` at most `wall`",
        );
    }
    let output = match raw.output {
        Some(output) if output.value.0 == 0 => {
            found.error(
                &output.place(),
                "`output` is zero, so no result could be returned",
                "give a size such as \"1MiB\"",
            );
            defaults.output
        }
        Some(output) => output.value.0,
        None => defaults.output,
    };
    if let Some(steps) = &raw.max_steps
        && steps.value == 0
    {
        found.warn(
            &steps.place(),
            "`max_steps = 0` refuses every model and tool call",
            "raise it, or remove it for no step limit",
        );
    }
    if let Some(refusals) = &raw.max_refusals
        && refusals.value == 0
    {
        found.warn(
            &refusals.place(),
            "`max_refusals = 0` refuses every request of the run",
            "raise it, or remove it for the default of 100",
        );
    }
    let mut size =
        |value: Option<At<super::ByteSize>>, key: &str, default: u64, least: u64| match value {
            Some(value) if value.value.0 < least => {
                found.error(
                    &value.place(),
                    format!(
                        "`{key}` is below {}, too small to be useful",
                        super::ByteSize(least)
                    ),
                    format!("give a size of at least \"{}\"", super::ByteSize(least)),
                );
                default
            }
            Some(value) => value.value.0,
            None => default,
        };
    let stdio = size(raw.stdio, "stdio", defaults.stdio, 0);
    let index = size(raw.index, "index", defaults.index, 0);
    let audit_field = size(raw.audit_field, "audit_field", defaults.audit_field, 256);
    Limits {
        memory,
        cpu,
        wall,
        output,
        max_steps: raw.max_steps.map(|s| s.value),
        max_refusals: raw.max_refusals.map_or(defaults.max_refusals, |r| r.value),
        stdio,
        index,
        audit_field,
    }
}

/// How specific a model-name pattern is, for price lookup: an exact name
/// beats every glob; among globs, more literal characters beat fewer, then
/// a longer pattern a shorter one. Ties keep the file's order.
pub(super) fn price_specificity(pattern: &str) -> (bool, usize, usize) {
    let meta = ['*', '?', '[', ']', '{', '}', ','];
    let literal = pattern.chars().filter(|c| !meta.contains(c)).count();
    (!is_glob(pattern), literal, pattern.len())
}

/// Whether a model-name pattern is a glob rather than one exact name.
pub(super) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// Largest request body of an HTTP grant that names none.
pub(super) const HTTP_MAX_REQUEST: u64 = 1 << 20;
/// Largest response body of an HTTP grant that names none.
pub(super) const HTTP_MAX_RESPONSE: u64 = 10 << 20;
/// Per-request time limit of an HTTP grant that names none.
pub(super) const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

fn glob(pattern: &str, literal_separator: bool) -> Result<Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(literal_separator)
        .build()
        .map_err(|e| format!("`{pattern}` is not a valid glob: {}", e.kind()))
}

/// Compile a policy regex for matching only, parsing it once. The full DFA
/// is off: built eagerly for every small pattern, it made loading a policy
/// three times slower and buys little here; the lazy DFA still matches in
/// linear time.
fn regex(pattern: &str, anchored: bool) -> Result<meta::Regex, String> {
    let source = if anchored {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_string()
    };
    let hir = parse_regex(pattern, &source)?;
    meta_regex(&[hir]).map_err(|e| format!("`{pattern}` is not a valid regular expression: {e}"))
}

/// The argument regexes of one policy, each pattern compiled once however
/// many rules write it (a compiled regex is shared, not copied: a copy
/// would build its own pool of match caches).
#[derive(Default)]
struct Regexes(HashMap<String, Result<Arc<meta::Regex>, String>>);

impl Regexes {
    /// [`regex`] of `pattern`, anchored; an error for each rule that
    /// writes a bad one, so each is reported where it is written.
    fn anchored(&mut self, pattern: &str) -> Result<Arc<meta::Regex>, String> {
        if let Some(compiled) = self.0.get(pattern) {
            return compiled.clone();
        }
        let compiled = regex(pattern, true).map(Arc::new);
        self.0.insert(pattern.to_string(), compiled.clone());
        compiled
    }
}

/// Policy regexes are only asked whether they match (`is_match`), so no
/// capture groups are compiled: a smaller automaton, and no engines that
/// exist to report groups (one-pass DFA, backtracker) built at load.
fn meta_regex(hirs: &[regex_syntax::hir::Hir]) -> Result<meta::Regex, String> {
    meta::Builder::new()
        .configure(
            meta::Config::new()
                .dfa(false)
                .which_captures(regex_automata::nfa::thompson::WhichCaptures::None)
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT)),
        )
        .build_many_from_hir(hirs)
        .map_err(|e| e.to_string())
}

/// Parse `source` (which is `pattern`, perhaps anchored), with the parser's
/// own message on error, which says what is wrong.
fn parse_regex(pattern: &str, source: &str) -> Result<regex_syntax::hir::Hir, String> {
    regex_syntax::Parser::new().parse(source).map_err(|e| {
        let text = e.to_string();
        format!(
            "`{pattern}` is not a valid regular expression: {}",
            text.lines()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or("syntax error")
        )
    })
}

fn check_regex(pattern: &str) -> Result<(), String> {
    parse_regex(pattern, pattern).map(drop)
}

fn redact_regex(pattern: &str) -> Result<regex::Regex, String> {
    check_regex(pattern)?;
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("`{pattern}` is not a valid regular expression: {e}"))
}

fn label_ok(label: &str) -> bool {
    (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.:".contains(&b))
}

fn labels(list: Vec<At<String>>, found: &mut Findings) -> Vec<String> {
    let mut out = Vec::new();
    for label in list {
        if label_ok(&label.value) {
            out.push(label.value);
        } else {
            found.error(
                &label.place(),
                format!("`{}` is not a valid label", label.value),
                "labels are 1 to 64 lowercase letters, digits, `_`, `-`, `.` or `:`, e.g. \"untrusted\"",
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A tool's `labels`: the whole result's (the list form and `/`), and
/// those of parts by path, in file order.
fn result_labels(
    raw: super::file::RawLabels,
    found: &mut Findings,
) -> (Vec<String>, Vec<(LabelPath, Vec<String>)>) {
    let mut whole = labels(raw.whole, found);
    let mut parts: Vec<(Place, LabelPath, Vec<String>)> = Vec::new();
    for (path, list) in raw.paths {
        let list = labels(list, found);
        match LabelPath::parse(&path.value) {
            Ok(parsed) if parsed.is_root() => whole.extend(list),
            Ok(parsed) => parts.push((path.place(), parsed, list)),
            Err(e) => found.error(
                &path.place(),
                e,
                "label paths name parts of the tool's JSON result, e.g. `\"/description\" = [\"untrusted\"]`",
            ),
        }
    }
    whole.sort();
    whole.dedup();
    parts.sort_by_key(|(place, ..)| (place.file, place.span.start));
    let parts = parts
        .into_iter()
        .filter(|(_, _, list)| !list.is_empty())
        .map(|(_, path, list)| (path, list))
        .collect();
    (whole, parts)
}

/// The stores a tool shares state through, for labels that flow: each
/// directory it is granted (another component may read what it wrote),
/// and its component when that can reach a service (tools of one
/// component may keep state for each other there: a mail API's send and
/// list). A local component without `http` runs in a fresh instance per
/// call with no network, so its tools share nothing but directories.
/// Named as written: two spellings of one directory are two stores.
/// Returns the stores it reads and, of those, the ones it can write (a
/// read-only directory is not written by its calls).
fn stores_of(component: Option<&ComponentRef>, grants: &Grants) -> (Vec<String>, Vec<String>) {
    let mut stores = Vec::new();
    let mut writes = Vec::new();
    let remote = component.is_some_and(|c| c.text.contains("://"));
    if let Some(component) = component.filter(|_| remote || grants.http.is_some()) {
        let text = component.text.trim();
        let name = if text.starts_with("builtin:") || text.contains("://") {
            format!("component {text}")
        } else {
            format!("component {text} (file {})", component.place.file)
        };
        writes.push(name.clone());
        stores.push(name);
    }
    for mount in &grants.fs {
        let name = dir_store(mount);
        if mount.mode == MountMode::Rw {
            writes.push(name.clone());
        }
        stores.push(name);
    }
    for list in [&mut stores, &mut writes] {
        list.sort();
        list.dedup();
    }
    (stores, writes)
}

/// The store a per-run tool's kept instance is: one per tool entry (each
/// entry has an instance of its own, even when entries share a component).
pub(crate) fn instance_store(tool: &str) -> String {
    format!("instance of tool {tool}")
}

/// The store a granted directory is: as written, with the file that
/// grants it.
pub(crate) fn dir_store(mount: &super::Mount) -> String {
    let dir = mount.dir.trim_end_matches('/');
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("dir {dir} (file {})", mount.place.file)
}

fn model(raw: RawModel, found: &mut Findings) -> ModelPolicy {
    let mut allow = Vec::new();
    let mut set = GlobSetBuilder::new();
    for name in raw.allow.unwrap_or_default() {
        if name.value.trim().is_empty() {
            found.error(
                &name.place(),
                "an empty model name in `allow`",
                "list model names or globs such as \"gpt-4o-mini\" or \"claude-*\"",
            );
            continue;
        }
        match glob(&name.value, false) {
            Ok(g) => {
                set.add(g);
                allow.push(name.value);
            }
            Err(e) => found.error(
                &name.place(),
                e,
                "fix the pattern: `*` matches any characters",
            ),
        }
    }
    let mut prices = Vec::new();
    let mut price_matchers = Vec::new();
    // Looked up in order, so sorted by specificity: an exact name before
    // any glob, a more literal glob before a looser one. In the file's
    // (alphabetical) order, `"*"` would shadow every exact price.
    let mut raw_prices: Vec<_> = raw.prices.into_iter().collect();
    raw_prices.sort_by_key(|(pattern, _)| std::cmp::Reverse(price_specificity(&pattern.value)));
    for (pattern, price) in raw_prices {
        let RawPriceChecked { input, output } = RawPriceChecked::from(&price.value);
        if !(input >= 0.0 && output >= 0.0 && input.is_finite() && output.is_finite()) {
            found.error(
                &price.place(),
                format!(
                    "the price of `{}` must be two non-negative numbers",
                    pattern.value
                ),
                "prices are US dollars per million tokens, e.g. { input = 0.15, output = 0.60 }",
            );
            continue;
        }
        match glob(&pattern.value, false) {
            Ok(g) => {
                price_matchers.push(g.compile_matcher());
                prices.push((pattern.value, Price { input, output }));
            }
            Err(e) => found.error(&pattern.place(), e, "fix the pattern"),
        }
    }
    if let Some(max) = &raw.max_calls
        && max.value == 0
    {
        found.warn(
            &max.place(),
            "`max_calls = 0` refuses every model call",
            "remove the `allow` list instead, or raise it",
        );
    }
    if let Some(cost) = &raw.max_cost_usd {
        if !(cost.value > 0.0 && cost.value.is_finite()) {
            found.error(
                &cost.place(),
                "`max_cost_usd` must be a positive number of dollars",
                "e.g. max_cost_usd = 0.50",
            );
        } else if prices.is_empty() {
            found.error(
                &cost.place(),
                "`max_cost_usd` needs prices to count against",
                "add `[model.prices]` entries, e.g. \"gpt-4o-mini\" = { input = 0.15, output = 0.60 }",
            );
        } else {
            for name in &allow {
                let literal = !name.contains(['*', '?', '[', '{']);
                if literal && !price_matchers.iter().any(|m| m.is_match(name)) {
                    found.warn(
                        &cost.place(),
                        format!("model `{name}` is allowed but has no price, so every call to it is refused under `max_cost_usd`"),
                        format!("add a price for \"{name}\" under [model.prices]"),
                    );
                }
            }
        }
    }
    if let (Some(per_call), Some(total)) = (&raw.max_tokens_per_call, &raw.max_tokens)
        && u64::from(per_call.value) > total.value
    {
        found.warn(
            &per_call.place(),
            format!(
                "`max_tokens_per_call` ({}) is more than the run's `max_tokens` ({})",
                per_call.value, total.value
            ),
            "lower it to at most `max_tokens`",
        );
    }
    let mut deny = Vec::new();
    let mut deny_hirs = Vec::new();
    let deny_place = raw.deny.first().map(At::place);
    for pattern in raw.deny {
        match parse_regex(&pattern.value, &pattern.value) {
            Ok(hir) => {
                deny_hirs.push(hir);
                deny.push(pattern.value);
            }
            Err(e) => found.error(
                &pattern.place(),
                e,
                "regexes use Rust syntax: https://docs.rs/regex",
            ),
        }
    }
    let mut redact = Vec::new();
    let mut redact_regexes = Vec::new();
    for pattern in raw.redact {
        match redact_regex(&pattern.value) {
            Ok(r) => {
                redact_regexes.push(r);
                redact.push(pattern.value);
            }
            Err(e) => found.error(
                &pattern.place(),
                e,
                "regexes use Rust syntax: https://docs.rs/regex",
            ),
        }
    }
    if raw.provider.is_none() {
        for key in [&raw.api_key_env, &raw.api_key_file].into_iter().flatten() {
            found.error(
                &key.place(),
                "an API key source without `provider` is never used",
                "name the provider it belongs to, e.g. provider = \"openai:gpt-4o-mini\"; on the command line use --api-key-env or --api-key-file",
            );
        }
    }
    if let (Some(env), Some(_)) = (&raw.api_key_env, &raw.api_key_file) {
        found.error(
            &env.place(),
            "both `api_key_env` and `api_key_file` are set",
            "keep one of them",
        );
    }
    if let Some(spec) = &raw.provider
        && let Err(why) = crate::provider::parse_spec(&spec.value)
    {
        found.error(
            &spec.place(),
            why,
            "use openai:MODEL, anthropic:MODEL, openai-compatible:URL#MODEL, scripted:FILE or replay:FILE",
        );
    }
    let provider = raw.provider.map(|spec| super::ProviderChoice {
        place: spec.place(),
        spec: spec.value,
        api_key_env: raw.api_key_env.map(|v| v.value),
        api_key_file: raw.api_key_file.map(|v| (v.value.clone(), v.place())),
    });
    let defaults = super::ProviderLimits::default();
    if let Some(timeout) = &raw.timeout
        && timeout.value.0.is_zero()
    {
        found.error(
            &timeout.place(),
            "`timeout` is zero, so no model call could finish",
            "e.g. timeout = \"60s\"",
        );
    }
    let limits = super::ProviderLimits {
        timeout: raw.timeout.map_or(defaults.timeout, |t| t.value.0),
        max_response: raw
            .max_response
            .map_or(defaults.max_response, |m| m.value.0),
        max_retries: raw.max_retries.map_or(defaults.max_retries, |r| r.value),
    };
    ModelPolicy {
        provider,
        limits,
        allow_set: set
            .build()
            .unwrap_or_else(|_| GlobSetBuilder::new().build().expect("empty set")),
        allow,
        max_calls: raw.max_calls.map(|v| v.value),
        max_tokens: raw.max_tokens.map(|v| v.value),
        max_tokens_per_call: raw.max_tokens_per_call.map(|v| v.value),
        max_cost_usd: raw.max_cost_usd.map(|v| v.value),
        prices,
        price_matchers,
        // Never fall back to an empty set: that would let everything through.
        deny_set: match meta_regex(&deny_hirs) {
            Ok(set) => set,
            Err(e) => {
                if let Some(place) = &deny_place {
                    found.error(
                        place,
                        format!("the `deny` patterns together do not compile: {e}"),
                        "simplify or split the patterns",
                    );
                }
                meta::Regex::new_many(&["[\\s\\S]"]).expect("a match-all regex compiles")
            }
        },
        deny,
        redact,
        redact_regexes,
        labels: labels(raw.labels, found),
        rules: ModelRules {
            allow: Rule::new("model.allow"),
            deny: Rule::new("model.deny"),
            max_calls: Rule::new("model.max_calls"),
            max_tokens: Rule::new("model.max_tokens"),
            max_cost: Rule::new("model.max_cost_usd"),
            prices: Rule::new("model.prices"),
        },
    }
}

struct RawPriceChecked {
    input: f64,
    output: f64,
}

impl From<&super::file::RawPrice> for RawPriceChecked {
    fn from(p: &super::file::RawPrice) -> Self {
        RawPriceChecked {
            input: p.input,
            output: p.output,
        }
    }
}

/// What model providers accept as a function name.
pub(super) fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn tool(
    name: &At<String>,
    entry: At<RawTool>,
    tool_names: &BTreeSet<String>,
    secrets: &BTreeMap<String, SecretPolicy>,
    regexes: &mut Regexes,
    found: &mut Findings,
) -> Option<ToolPolicy> {
    let place = name.place();
    let name = &name.value;
    if !is_tool_name(name) {
        found.error(
            &place,
            format!("`{name}` is not a valid tool name"),
            "tool names are 1 to 64 letters, digits, `_` or `-` (what model providers accept)",
        );
        return None;
    }
    let entry_place = entry.place();
    let raw = entry.value;
    let decision = raw.decision.as_ref().map_or(Verdict::Allow, |d| d.value);
    let component = raw.component.map(|c| ComponentRef {
        place: c.place(),
        text: c.value,
    });
    if let Some(component) = &component
        && component.text.trim().is_empty()
    {
        found.error(
            &component.place,
            "`component` is empty",
            "give the path of the tool's .wasm file, relative to this policy file",
        );
    }
    if let Some(component) = &component
        && crate::remote::is_url(&component.text)
    {
        match crate::remote::check_url(&component.text) {
            Err(refused) => found.error(&component.place, refused.message, refused.help),
            // The pin is what makes a download safe: without it, whoever
            // controls the server (or its name) chooses the code.
            Ok(url) if raw.sha256.is_none() => found.error(
                &component.place,
                format!("[tools.{name}] downloads its component but has no `sha256` pin"),
                format!(
                    "add `sha256 = \"...\"` under [tools.{name}]; `warden tools inspect {url}` prints it (review what it describes first)"
                ),
            ),
            Ok(_) => {}
        }
    }
    if decision != Verdict::Deny && component.is_none() {
        found.error(
            &entry_place,
            format!("tool `{name}` is granted but has no `component`"),
            format!("add `component = \"path/to/tool.wasm\"` under [tools.{name}], or `decision = \"deny\"`"),
        );
    }
    let sha256 = raw.sha256.and_then(|pin| {
        let hex = pin.value.trim().to_ascii_lowercase();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(hex)
        } else {
            found.error(
                &pin.place(),
                "`sha256` must be 64 hexadecimal digits",
                "print a component's hash with `sha256sum TOOL.wasm`",
            );
            None
        }
    });
    if let Some(max) = &raw.max_calls
        && max.value == 0
        && decision != Verdict::Deny
    {
        found.warn(
            &max.place(),
            format!("tool `{name}` is granted with `max_calls = 0`, so it can never be called"),
            "write `decision = \"deny\"` to deny it, or raise `max_calls`",
        );
    }
    if let Some(rate) = &raw.rate
        && rate.value == 0
    {
        found.error(
            &rate.place(),
            "`rate = 0` refuses every call",
            "give calls per minute, or write `decision = \"deny\"`",
        );
    }

    let mut args = Vec::new();
    for (field, entry) in raw.args {
        match FieldPath::parse(&field.value) {
            Ok(path) => arg_entry(name, path, entry, tool_names, regexes, &mut args, found),
            Err(e) => found.error(
                &field.place(),
                e,
                "field paths name a key of the tool's arguments",
            ),
        }
    }
    // The first failing rule of the strongest verdict is the one named:
    // keep the order of the file, not of the field names.
    args.sort_by_key(|r: &ArgRule| (r.place.file, r.place.span.start));
    let (tool_labels, path_labels) = result_labels(raw.labels, found);
    let third_party_labels = labels(raw.third_party_labels, found);
    let labels_flow = raw.labels_flow.as_ref().is_none_or(|f| f.value);
    let deny_when_labeled = labels(raw.deny_when_labeled, found);
    let ask_when_labeled = labels(raw.ask_when_labeled, found);
    for label in ask_when_labeled
        .iter()
        .filter(|l| deny_when_labeled.contains(l))
    {
        found.warn(
            &entry_place,
            format!("label `{label}` is in both `deny_when_labeled` and `ask_when_labeled` of `{name}`: deny wins, so the ask never happens"),
            "keep it in one of the two lists",
        );
    }
    let grants = grants(
        RawGrants {
            http: raw.http,
            fs: raw.fs,
            env: raw.env,
            inherit_env: raw.inherit_env,
            secrets: raw.secrets,
        },
        &format!("tools.{name}"),
        secrets,
        found,
    );
    let effects = raw.effects.map(|effects| {
        let writes = grants.fs.iter().find(|m| m.mode == MountMode::Rw);
        let posts = grants.http.as_ref().and_then(|h| {
            h.methods
                .iter()
                .find(|m| m.as_str() != "GET" && m.as_str() != "HEAD")
        });
        let contradiction = match (writes, posts) {
            (Some(mount), _) => Some(format!("is granted `{}` read-write", mount.guest_path)),
            (None, Some(method)) => Some(format!("may send HTTP `{method}` requests")),
            (None, None) => None,
        };
        if let Some(what) = contradiction {
            found.error(
                &effects.place(),
                format!("tool `{name}` says `effects = \"none\"` but {what}, which can change things"),
                "remove `effects`, or grant only what reads: `mode = \"ro\"`, `methods = [\"GET\"]`",
            );
        }
        effects.value
    });
    if decision == Verdict::Deny
        && (!args.is_empty() || !grants.is_empty() || raw.max_calls.is_some())
    {
        found.warn(
            &entry_place,
            format!("tool `{name}` is denied, so its other rules and grants never apply"),
            "remove them, or change `decision`",
        );
    }
    let (mut stores, mut store_writes) = stores_of(component.as_ref(), &grants);
    let instance = raw.instance.as_ref().map_or(Instance::PerCall, |i| i.value);
    if instance == Instance::PerRun {
        // Written by every call, effects or not (`Session::flow_into_call`).
        for list in [&mut stores, &mut store_writes] {
            list.push(instance_store(name));
            list.sort();
        }
        if let Some(flow) = raw.labels_flow.as_ref().filter(|f| !f.value) {
            found.warn(
                &flow.place(),
                format!("tool `{name}` keeps one instance for the run (`instance = \"per-run\"`) with `labels_flow = false`: what one call is given can come back from a later call unlabeled, as the tool's own"),
                "remove `labels_flow = false`, or use `instance = \"per-call\"`",
            );
        }
    }
    Some(ToolPolicy {
        rules: ToolRules {
            entry: Rule::new(format!("tools.{name}")),
            schema: Rule::new(format!("tools.{name}.schema")),
            max_calls: Rule::new(format!("tools.{name}.max_calls")),
            rate: Rule::new(format!("tools.{name}.rate")),
            deny_when_labeled: Rule::new(format!("tools.{name}.deny_when_labeled")),
            ask_when_labeled: Rule::new(format!("tools.{name}.ask_when_labeled")),
        },
        name: name.clone(),
        component,
        sha256,
        decision,
        max_calls: raw.max_calls.map(|v| v.value),
        rate: raw.rate.map(|v| v.value),
        labels: tool_labels,
        path_labels,
        third_party_labels,
        labels_flow,
        stores,
        store_writes,
        deny_when_labeled,
        ask_when_labeled,
        effects,
        instance,
        grants,
        place,
        arg_index: super::args::ArgIndex::new(&args),
        args,
    })
}

fn arg_entry(
    tool: &str,
    path: FieldPath,
    entry: At<RawArgEntry>,
    tool_names: &BTreeSet<String>,
    regexes: &mut Regexes,
    out: &mut Vec<ArgRule>,
    found: &mut Findings,
) {
    let entry_place = entry.place();
    let (rules, children) = entry.value.into_parts();
    for rule in rules {
        let place = if rule.span.is_empty() {
            entry_place.clone()
        } else {
            rule.place()
        };
        if let Some(compiled) = arg_rule(tool, &path, rule.value, place, tool_names, regexes, found)
        {
            out.push(compiled);
        }
    }
    for (field, child) in children {
        match FieldPath::parse(&field.value) {
            Ok(child_path) => {
                let path = path.join(&child_path);
                arg_entry(tool, path, child, tool_names, regexes, out, found)
            }
            Err(e) => found.error(
                &field.place(),
                e,
                "field paths name a key of the tool's arguments",
            ),
        }
    }
}

fn arg_rule(
    tool: &str,
    path: &FieldPath,
    raw: RawRule,
    place: Place,
    tool_names: &BTreeSet<String>,
    regexes: &mut Regexes,
    found: &mut Findings,
) -> Option<ArgRule> {
    let mut checks = Vec::new();
    let errors_before = found.0.len();
    let fail = |found: &mut Findings, at: &Place, message: String, help: &str| {
        found.error(at, message, help);
    };
    if let Some(v) = &raw.equals {
        checks.push(Check::Equals(v.value.clone()));
    }
    if let Some(options) = &raw.one_of {
        if options.value.is_empty() {
            fail(
                found,
                &options.place(),
                "`one_of` is empty, so the rule can never pass".into(),
                "list the allowed values",
            );
        }
        if let Some(equals) = &raw.equals
            && !options.value.iter().any(|o| json_eq(o, &equals.value))
        {
            fail(
                found,
                &options.place(),
                format!(
                    "`equals = {}` is not among `one_of`, so the rule can never pass",
                    equals.value
                ),
                "keep one of `equals` and `one_of`",
            );
        }
        checks.push(Check::OneOf(options.value.clone()));
    }
    if let Some(pattern) = &raw.matches {
        match regexes.anchored(&pattern.value) {
            Ok(r) => {
                if let Some(equals) = raw
                    .equals
                    .as_ref()
                    .and_then(|e| e.value.as_str().map(str::to_string))
                    && !r.is_match(&equals)
                {
                    fail(
                        found,
                        &pattern.place(),
                        format!(
                            "`equals = \"{equals}\"` does not match `{}`, so the rule can never pass",
                            pattern.value
                        ),
                        "keep one of the two",
                    );
                }
                checks.push(Check::Matches(r, pattern.value.clone()));
            }
            Err(e) => fail(
                found,
                &pattern.place(),
                e,
                "regexes use Rust syntax and match the whole value",
            ),
        }
    }
    if let Some(pattern) = &raw.glob {
        match glob(&pattern.value, false) {
            Ok(g) => checks.push(Check::Glob(g.compile_matcher(), pattern.value.clone())),
            Err(e) => fail(found, &pattern.place(), e, "fix the pattern"),
        }
    }
    if let Some(prefix) = &raw.prefix {
        checks.push(Check::Prefix(prefix.value.clone()));
    }
    if let (Some(min), Some(max)) = (&raw.min, &raw.max)
        && compare_numbers(&min.value.0, &max.value.0) == Some(std::cmp::Ordering::Greater)
    {
        fail(
            found,
            &min.place(),
            format!(
                "`min = {}` is more than `max = {}`, so the rule can never pass",
                min.value, max.value
            ),
            "swap them",
        );
    }
    if let Some(min) = &raw.min {
        checks.push(Check::Min(min.value.0.clone()));
    }
    if let Some(max) = &raw.max {
        checks.push(Check::Max(max.value.0.clone()));
    }
    if let Some(len) = &raw.max_len {
        checks.push(Check::MaxLen(len.value));
    }
    if let Some(schema) = &raw.schema {
        match jsonschema::options().build(&schema.value) {
            Ok(v) => checks.push(Check::Schema(Arc::new(v))),
            Err(e) => fail(
                found,
                &schema.place(),
                format!("`schema` is not a valid JSON Schema: {e}"),
                "see https://json-schema.org",
            ),
        }
    }
    if let Some(from) = &raw.from {
        if from.value.is_empty() {
            fail(
                found,
                &from.place(),
                "`from` is empty, so the rule can never pass".into(),
                "list sources: \"task\", \"unlabeled\", \"model\", \"tool:NAME\", \"label:NAME\"",
            );
        }
        let mut specs = Vec::new();
        let mut names = Vec::new();
        for source in &from.value {
            match SourceSpec::parse(&source.value) {
                Ok(spec) => {
                    if let SourceSpec::Tool(name) = &spec
                        && !tool_names.contains(name)
                    {
                        found.warn(
                            &source.place(),
                            format!(
                                "there is no tool `{name}` in this policy, so nothing comes from it"
                            ),
                            "name a tool of this policy",
                        );
                    }
                    specs.push(spec);
                    names.push(source.value.clone());
                }
                Err(e) => fail(
                    found,
                    &source.place(),
                    e,
                    &match crate::diagnostic::closest(&source.value, ["task", "unlabeled", "model"])
                    {
                        Some(known) => format!("did you mean `{known}`?"),
                        None => "sources say where a value must have been seen first".into(),
                    },
                ),
            }
        }
        checks.push(Check::From(specs, names));
    }
    if let Some(pattern) = &raw.not_matches {
        match regexes.anchored(&pattern.value) {
            Ok(r) => checks.push(Check::NotMatches(r, pattern.value.clone())),
            Err(e) => fail(
                found,
                &pattern.place(),
                e,
                "regexes use Rust syntax and match the whole value: `.*word.*` for one anywhere, or `not_contains`",
            ),
        }
    }
    if let Some(needles) = &raw.not_contains {
        if needles.value.iter().any(String::is_empty) {
            fail(
                found,
                &needles.place(),
                "`not_contains` holds an empty string, which every value contains, so the rule can never pass".into(),
                "remove the empty string",
            );
        }
        checks.push(Check::NotContains(
            needles.value.iter().map(|n| n.to_lowercase()).collect(),
            needles.value.clone(),
        ));
    }
    for (key, other, same) in [
        ("same_as", &raw.same_as, true),
        ("differs_from", &raw.differs_from, false),
    ] {
        let Some(other) = other else { continue };
        match FieldPath::parse(&other.value) {
            Ok(other_path) if other_path == *path => fail(
                found,
                &other.place(),
                format!("`{key}` names the rule's own field `{path}`"),
                "name another argument, from the arguments' top (`a.b` or `/a/b`)",
            ),
            Ok(other_path) => checks.push(if same {
                Check::SameAs(other_path)
            } else {
                Check::DiffersFrom(other_path)
            }),
            Err(e) => fail(
                found,
                &other.place(),
                e,
                "name another argument, from the arguments' top",
            ),
        }
    }
    let count = raw.shared.as_ref().map_or_else(
        || format!("tools.{tool}.args.{}", path.text),
        |shared| shared.value.clone(),
    );
    if let Some(shared) = &raw.shared {
        if shared.value.is_empty() {
            fail(
                found,
                &shared.place(),
                "`shared` names no count".into(),
                "name the count several rules share, e.g. shared = \"money_out\"",
            );
        }
        if raw.max_total.is_none() && raw.max_distinct.is_none() {
            fail(found, &shared.place(), "`shared` names the count of `max_total` or `max_distinct`, and this rule has neither".into(), "add `max_total` or `max_distinct`, or remove `shared`");
        }
    }
    if let Some(max) = &raw.max_total {
        checks.push(Check::MaxTotal(max.value.0.clone(), count.clone()));
    }
    if let Some(max) = &raw.max_distinct {
        if max.value == 0 || max.value > super::args::MAX_DISTINCT {
            fail(
                found,
                &max.place(),
                format!(
                    "`max_distinct = {}` is not between 1 and {}",
                    max.value,
                    super::args::MAX_DISTINCT
                ),
                "write `decision = \"deny\"` on the tool to refuse every call",
            );
        }
        checks.push(Check::MaxDistinct(max.value, count.clone()));
    }
    if let Some(alternatives) = raw.any_of {
        if alternatives.value.is_empty() {
            fail(
                found,
                &alternatives.place(),
                "`any_of` is empty, so the rule can never pass".into(),
                "list rule tables, e.g. any_of = [{ prefix = \"https://our.example/\" }, { from = [\"task\"] }]",
            );
        }
        let mut compiled = Vec::new();
        for alternative in alternatives.value {
            let at = alternative.place();
            let inner = &alternative.value;
            let misplaced = [
                ("required", inner.required.is_some()),
                ("decision", inner.decision.is_some()),
                ("any_of", inner.any_of.is_some()),
                ("max_total", inner.max_total.is_some()),
                ("max_distinct", inner.max_distinct.is_some()),
                ("shared", inner.shared.is_some()),
            ];
            if let Some((key, _)) = misplaced.iter().find(|(_, set)| *set) {
                fail(
                    found,
                    &at,
                    format!("`{key}` inside `any_of` has no meaning: an alternative only checks"),
                    "write it on the rule that holds `any_of`",
                );
                continue;
            }
            if let Some(rule) = arg_rule(
                tool,
                path,
                alternative.value,
                at,
                tool_names,
                regexes,
                found,
            ) {
                compiled.push(rule.checks);
            }
        }
        checks.push(Check::AnyOf(compiled));
    }
    let decision = raw.decision.as_ref().map_or(Verdict::Deny, |d| d.value);
    let ok = found.0.len() == errors_before;
    if decision == Verdict::Allow
        && let Some(d) = &raw.decision
    {
        fail(found, &d.place(), "a rule's `decision` is what a failed check decides; `allow` would make the rule do nothing".into(), "use \"deny\" (the default) or \"ask\"");
    }
    if checks.is_empty() && ok {
        let required = raw.required.as_ref().is_some_and(|r| r.value);
        if !required {
            fail(
                found,
                &place,
                format!("the rule on `{path}` checks nothing"),
                "add a check: equals, one_of, matches, not_matches, not_contains, glob, prefix, min, max, max_len, schema, from, same_as, differs_from, any_of, max_total or max_distinct",
            );
        }
    }
    let ok = found.0.len() == errors_before;
    ok.then(|| ArgRule {
        rule: Rule::new(format!("tools.{tool}.args.{}", path.text)),
        path: path.clone(),
        checks,
        required: raw.required.is_some_and(|r| r.value),
        decision,
        place,
    })
}

fn secrets(
    raw: BTreeMap<At<String>, At<RawSecret>>,
    found: &mut Findings,
) -> BTreeMap<String, SecretPolicy> {
    let mut out = BTreeMap::new();
    for (name, secret) in raw {
        let place = secret.place();
        let RawSecret {
            from_env,
            from_file,
            inject,
        } = secret.value;
        let source = match (from_env, from_file) {
            (Some(var), None) => SecretSource::Env(var),
            (None, Some(path)) => SecretSource::File(path),
            (Some(_), Some(_)) => {
                found.error(
                    &place,
                    format!(
                        "secret `{}` has both `from_env` and `from_file`",
                        name.value
                    ),
                    "keep one",
                );
                continue;
            }
            (None, None) => {
                found.error(
                    &place,
                    format!("secret `{}` says nowhere to read it from", name.value),
                    "add `from_env = \"VAR\"` or `from_file = \"path\"`",
                );
                continue;
            }
        };
        let inject = match inject {
            None => None,
            Some(inject) => {
                let host = match host_pattern(&inject.host) {
                    Ok(host) => host,
                    Err(e) => {
                        found.error(&place, e, "write a host such as \"api.github.com\"");
                        continue;
                    }
                };
                let format = inject.format.unwrap_or_else(|| "{}".into());
                if !format.contains("{}") {
                    found.error(
                        &place,
                        format!(
                            "the `format` of secret `{}` has no `{{}}` for the secret",
                            name.value
                        ),
                        "e.g. format = \"Bearer {}\"",
                    );
                    continue;
                }
                if inject.header.is_empty()
                    || !inject
                        .header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    found.error(
                        &place,
                        format!("`{}` is not a header name", inject.header),
                        "e.g. header = \"Authorization\"",
                    );
                    continue;
                }
                Some(Inject {
                    host,
                    header: inject.header,
                    format,
                })
            }
        };
        out.insert(
            name.value.clone(),
            SecretPolicy {
                name: name.value,
                source,
                inject,
                place,
            },
        );
    }
    out
}

fn grants(
    raw: RawGrants,
    owner: &str,
    secrets: &BTreeMap<String, SecretPolicy>,
    found: &mut Findings,
) -> Grants {
    let http = raw.http.map(|h| http(h, found));
    let mut fs = Vec::new();
    for (guest, mount) in raw.fs {
        if !guest.value.starts_with('/') {
            found.error(
                &guest.place(),
                format!("`{}` is not an absolute path", guest.value),
                "the guest sees granted directories at absolute paths, e.g. \"/workspace\"",
            );
            continue;
        }
        if mount.value.quota.is_some() && mount.value.mode == MountMode::Ro {
            found.warn(
                &mount.place(),
                "a `quota` on a read-only directory never applies",
                "remove it, or set mode = \"rw\"",
            );
        } else if mount.value.quota.is_some() {
            found.warn(
                &mount.place(),
                "`quota` is not enforced yet: a tool may write more than this",
                "bound writes with the tool's `args` rules (e.g. `content = { max_len = ... }`) and `max_calls` for now",
            );
        }
        fs.push(Mount {
            guest_path: guest.value,
            place: mount.place(),
            dir: mount.value.dir,
            mode: mount.value.mode,
            quota: mount.value.quota.map(|q| q.0),
        });
    }
    let env_ok = |name: &str| !name.is_empty() && !name.contains(['=', '\0']);
    let mut env = Vec::new();
    for (name, value) in raw.env {
        if env_ok(&name.value) {
            env.push((name.value, value.value));
        } else {
            found.error(
                &name.place(),
                format!("`{}` is not an environment variable name", name.value),
                "names have no `=`",
            );
        }
    }
    let mut inherit_env = Vec::new();
    for name in raw.inherit_env {
        // A secret's own variable would hand its value to the guest, which
        // must only ever see it injected by the host.
        let holds = secrets
            .values()
            .find(|s| matches!(&s.source, SecretSource::Env(var) if *var == name.value))
            .map(|s| format!("secret `{}`", s.name))
            .or_else(|| {
                ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]
                    .contains(&name.value.as_str())
                    .then(|| "the model provider's API key".to_string())
            });
        if let Some(holder) = holds {
            found.error(
                &name.place(),
                format!(
                    "`{}` holds {holder}: inheriting it would hand the value to the guest",
                    name.value
                ),
                "drop it from `inherit_env`; a tool that needs a secret lists it in `secrets` and the host injects it into the requests it is bound to",
            );
        } else if env_ok(&name.value) {
            inherit_env.push(name.value);
        } else {
            found.error(
                &name.place(),
                format!("`{}` is not an environment variable name", name.value),
                "names have no `=`",
            );
        }
    }
    let mut granted_secrets = Vec::new();
    for name in raw.secrets {
        match secrets.get(&name.value) {
            None => found.error(
                &name.place(),
                format!("there is no secret `{}`", name.value),
                match crate::diagnostic::closest(&name.value, secrets.keys().map(String::as_str)) {
                    Some(known) => format!("did you mean `{known}`?"),
                    None => format!("define it under [secrets.{}]", name.value),
                },
            ),
            Some(secret) => {
                if let (Some(inject), Some(http)) = (&secret.inject, &http)
                    && !http.rules.iter().any(|r| match (&inject.host, &r.host) {
                        (HostPattern::Exact(h), pattern) => pattern.matches(h),
                        (a, b) => a == b,
                    })
                {
                    found.warn(
                        &name.place(),
                        format!(
                            "secret `{}` goes to {}, which {owner}'s `http.allow` never reaches",
                            name.value, inject.host
                        ),
                        "allow that host, or drop the secret",
                    );
                }
                if http.is_none() {
                    found.warn(&name.place(), format!("secret `{}` is granted to {owner}, which has no `http` grant to carry it", name.value), "add an `http` grant, or drop the secret");
                }
                granted_secrets.push(name.value);
            }
        }
    }
    Grants {
        http,
        fs,
        env,
        inherit_env,
        secrets: granted_secrets,
    }
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// `[plan]`. A plan must come before the first label; if every model
/// answer is labeled, the agent cannot ask the model for one.
fn plan(raw: RawPlan, model: &ModelPolicy, found: &mut Findings) -> PlanPolicy {
    let required = raw.required.as_ref().is_some_and(|r| r.value);
    if required
        && !model.labels.is_empty()
        && let Some(at) = &raw.required
    {
        found.warn(
            &at.place(),
            format!(
                "a plan is required, but `[model] labels` labels the session with the model's first answer (`{}`), so no plan can be declared after asking the model for one",
                model.labels.join("`, `")
            ),
            "remove `[model] labels`, or make sure the agent declares its plan before its first model call",
        );
    }
    PlanPolicy { required }
}

/// `[approvals]`: a timeout a person can meet, and room for one ask.
fn approvals(raw: RawApprovals, found: &mut Findings) -> super::Approvals {
    let defaults = super::Approvals::default();
    let timeout = match raw.timeout {
        Some(at) if at.value.0 < Duration::from_secs(1) => {
            found.error(
                &at.place(),
                format!(
                    "`timeout` is {}, too short for a person to answer",
                    super::HumanDuration(at.value.0)
                ),
                "give at least \"1s\"; the default is \"5m\"",
            );
            defaults.timeout
        }
        Some(at) if at.value.0 > Duration::from_secs(24 * 3600) => {
            found.error(
                &at.place(),
                format!(
                    "`timeout` is {}; an ask may wait at most 24h",
                    super::HumanDuration(at.value.0)
                ),
                "give at most \"24h\"; the default is \"5m\"",
            );
            defaults.timeout
        }
        Some(at) => at.value.0,
        None => defaults.timeout,
    };
    let max_pending = match raw.max_pending {
        Some(at) if at.value == 0 => {
            found.error(
                &at.place(),
                "`max_pending = 0` would refuse every ask before a person could see it",
                "give at least 1, or remove it for the default of 16",
            );
            defaults.max_pending
        }
        Some(at) => at.value,
        None => defaults.max_pending,
    };
    super::Approvals {
        timeout,
        max_pending,
    }
}

fn reproducible(raw: RawReproducible, found: &mut Findings) -> super::Reproducible {
    let time = raw
        .time
        .and_then(|time| match humantime::parse_rfc3339_weak(&time.value) {
            Ok(when) => Some(when),
            Err(e) => {
                found.error(
                    &time.place(),
                    format!("`{}` is not a time: {e}", time.value),
                    "write RFC 3339, e.g. \"2026-01-01T00:00:00Z\"",
                );
                None
            }
        });
    super::Reproducible {
        time,
        random_seed: raw.random_seed.map(|s| s.value),
    }
}

fn http(raw: At<RawHttp>, found: &mut Findings) -> HttpGrant {
    let place = raw.place();
    let raw = raw.value;
    let mut rules = Vec::new();
    for rule in raw.allow {
        match url_rule(&rule.value.url) {
            Ok((scheme, host, port, path, matcher)) => {
                let labels = labels(
                    rule.value
                        .labels
                        .iter()
                        .map(|l| At {
                            value: l.clone(),
                            span: rule.span.clone(),
                            file: rule.file,
                        })
                        .collect(),
                    found,
                );
                rules.push(UrlRule {
                    text: rule.value.url.clone(),
                    scheme,
                    host,
                    port,
                    path,
                    path_matcher: matcher,
                    labels,
                    private: rule.value.private,
                });
            }
            Err(e) => found.error(
                &rule.place(),
                e,
                "write `https://host/path-glob`, e.g. \"https://api.github.com/repos/**\"",
            ),
        }
    }
    if rules.is_empty() {
        found.warn(
            &place,
            "this `http` grant allows no URL",
            "add patterns to `allow`, or remove the grant",
        );
    }
    let mut methods = Vec::new();
    for method in raw.methods.unwrap_or_else(|| {
        vec![At {
            value: "GET".into(),
            span: place.span.clone(),
            file: place.file,
        }]
    }) {
        let upper = method.value.to_ascii_uppercase();
        if METHODS.contains(&upper.as_str()) {
            methods.push(upper);
        } else {
            found.error(
                &method.place(),
                format!("`{}` is not an HTTP method warden knows", method.value),
                match crate::diagnostic::closest(&upper, METHODS.iter().copied()) {
                    Some(known) => format!("did you mean `{known}`?"),
                    None => format!("use one of {}", METHODS.join(", ")),
                },
            );
        }
    }
    HttpGrant {
        rules,
        methods,
        max_request: raw.max_request.map_or(HTTP_MAX_REQUEST, |v| v.value.0),
        max_response: raw.max_response.map_or(HTTP_MAX_RESPONSE, |v| v.value.0),
        timeout: raw.timeout.map_or(HTTP_TIMEOUT, |v| v.value.0),
    }
}

pub(super) type ParsedUrl = (
    String,
    HostPattern,
    Option<u16>,
    String,
    globset::GlobMatcher,
);

/// `scheme://host[:port][/path-glob]`, parsed by hand: patterns contain
/// `*`, which URL parsers reject.
pub(super) fn url_rule(text: &str) -> Result<ParsedUrl, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` has no scheme (`https://`)"))?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("`{text}`: the scheme must be http or https"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/**"),
    };
    if authority.contains(['@', '\\', '?', '#']) {
        return Err(format!(
            "`{text}`: the host part may not contain `@`, `\\`, `?` or `#`"
        ));
    }
    let parse_port = |port: &str| -> Result<u16, String> {
        port.parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{text}`: `{port}` is not a port"))
    };
    let (host, port) = if authority.starts_with('[') {
        // [IPv6]:port
        let end = authority
            .find(']')
            .ok_or_else(|| format!("`{text}`: `[` without `]`"))?;
        let (host, after) = authority.split_at(end + 1);
        match after.strip_prefix(':') {
            Some(port) => (host, Some(parse_port(port)?)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("`{text}`: unexpected `{after}` after the address")),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (authority, None),
        }
    };
    let host = host_pattern(host).map_err(|e| format!("`{text}`: {e}"))?;
    let matcher = glob(path, true)
        .map_err(|e| format!("`{text}`: {e}"))?
        .compile_matcher();
    Ok((scheme, host, port, path.to_string(), matcher))
}

/// `*`, `*.example.com`, `example.com`, `10.0.0.1` or `[::1]`.
pub(super) fn host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.starts_with('[') && name.ends_with(']') && !wildcard {
        let inner = &name[1..name.len() - 1];
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|ip| HostPattern::Exact(format!("[{ip}]")))
            .map_err(|_| format!("`{host}` is not an IPv6 address"));
    }
    if !name.is_ascii() {
        return Err(format!(
            "`{host}` is not ASCII: write the punycode form (`xn--...`), which is what requests carry"
        ));
    }
    let name = name.to_ascii_lowercase();
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !labels_ok {
        return Err(format!(
            "`{host}` is not a host name (`*` may only stand alone or as `*.` at the start)"
        ));
    }
    Ok(if wildcard {
        HostPattern::Subdomains(name)
    } else {
        HostPattern::Exact(name)
    })
}

/// Sinks that wait for a label nobody adds never trigger.
fn check_labels(model: &ModelPolicy, tools: &BTreeMap<String, ToolPolicy>, found: &mut Findings) {
    let mut by_tools: BTreeSet<&str> = BTreeSet::new();
    for tool in tools.values() {
        by_tools.extend(tool.labels.iter().map(String::as_str));
        for (_, list) in &tool.path_labels {
            by_tools.extend(list.iter().map(String::as_str));
        }
        by_tools.extend(tool.third_party_labels.iter().map(String::as_str));
        if let Some(http) = &tool.grants.http {
            for rule in &http.rules {
                by_tools.extend(rule.labels.iter().map(String::as_str));
            }
        }
    }
    let mut produced = by_tools.clone();
    produced.extend(model.labels.iter().map(String::as_str));
    for tool in tools.values() {
        for rule in &tool.args {
            for check in &rule.checks {
                let super::args::Check::From(specs, _) = check else {
                    continue;
                };
                for spec in specs {
                    if let SourceSpec::Label(label) = spec
                        && !by_tools.contains(label.as_str())
                    {
                        found.warn(
                            &rule.place,
                            format!("`{}` accepts values from results labeled `{label}`, which no tool or HTTP rule adds, so nothing comes from it", rule.rule.as_str()),
                            format!("add `labels = [\"{label}\"]` to the tools whose results it should accept"),
                        );
                    }
                }
            }
        }
        for label in tool.deny_when_labeled.iter().chain(&tool.ask_when_labeled) {
            if !produced.contains(label.as_str()) {
                found.warn(
                    &tool.place,
                    format!("`{}` waits for label `{label}`, which no tool, HTTP rule or the model adds", tool.name),
                    format!("add `labels = [\"{label}\"]` to the tools whose results should carry it"),
                );
            }
        }
    }
}

/// Verbs that change something outside the tool: a tool named with one
/// (`send_email`, `share_file`, `reserve_hotel`) and allowed with no
/// argument rules gets a warning. Compared whole, as a word of the name.
#[rustfmt::skip]
pub(crate) const STATE_CHANGING: &[&str] = &[
    "add", "append", "approve", "archive", "assign", "ban", "block", "book", "buy", "cancel",
    "change", "charge", "chmod", "chown", "clear", "close", "comment", "copy", "create", "delete",
    "deploy", "deposit", "destroy", "disable", "drop", "edit", "enable", "erase", "exec",
    "execute", "follow", "forward", "grant", "insert", "install", "invite", "invoke", "kill",
    "launch", "like", "lock", "mark", "merge", "mkdir", "modify", "mute", "notify", "overwrite",
    "patch", "pay", "publish", "purchase", "put", "refund", "register", "reject", "remove",
    "rename", "replace", "reply", "reserve", "reset", "restart", "revoke", "rm", "save",
    "schedule", "send", "set", "share", "shell", "sign", "start", "stop", "store", "submit",
    "subscribe", "terminate", "transfer", "trigger", "truncate", "uninstall", "unlock",
    "unsubscribe", "update", "upload", "upsert", "withdraw", "wipe", "write",
];

/// Words that change things only as a name's first word, its verb
/// (`email_user`, `post_message`, `run_query`), and are nouns after one
/// (`search_contacts_by_email`, `get_post`).
#[rustfmt::skip]
pub(crate) const STATE_CHANGING_FIRST: &[&str] = &[
    "commit", "email", "mail", "message", "move", "order", "post", "push", "run", "sms", "text",
    "tweet",
];

/// Verbs that only read or compute: a name starting with one does not
/// sound like it changes things, whatever nouns follow (`get_sent_mail`,
/// `list_scheduled_posts`, `search_contacts_by_email`).
#[rustfmt::skip]
pub(crate) const READ_ONLY_FIRST: &[&str] = &[
    "calc", "calculate", "check", "compare", "compute", "convert", "count", "describe", "diff",
    "download", "estimate", "explain", "extract", "fetch", "find", "format", "get", "grep",
    "inspect", "list", "lookup", "parse", "peek", "preview", "query", "read", "render", "resolve",
    "search", "show", "stat", "summarize", "translate", "validate", "verify", "view",
];

/// The words of a tool name, lowercase: split at `_`, `-`, `.`, spaces,
/// digits and lower-to-upper case changes (`sendEmail` is `send`, `email`).
pub(crate) fn name_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphabetic() {
            previous_lower = false;
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if c.is_uppercase() && previous_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        previous_lower = c.is_lowercase();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Whether a tool's name says it changes things: its first word is a
/// state-changing verb, or it does not start with a read-only verb and a
/// later word is one (`calendar_add_event`).
pub(crate) fn sounds_state_changing(name: &str) -> bool {
    let words = name_words(name);
    let Some(first) = words.first() else {
        return false;
    };
    if READ_ONLY_FIRST.contains(&first.as_str()) {
        return false;
    }
    STATE_CHANGING_FIRST.contains(&first.as_str())
        || words
            .iter()
            .any(|word| STATE_CHANGING.contains(&word.as_str()))
}

/// Grants that are legal but risky, so `warden check` (and every run) says so.
fn risks(
    model: &ModelPolicy,
    agent: &Grants,
    tools: &BTreeMap<String, ToolPolicy>,
    secrets: &BTreeMap<String, SecretPolicy>,
    model_place: Option<&Place>,
    found: &mut Findings,
) {
    if !model.allow.is_empty()
        && model.max_calls.is_none()
        && model.max_tokens.is_none()
        && model.max_cost_usd.is_none()
        && let Some(place) = model_place
    {
        found.warn(
            place,
            "model calls have no budget: a looping agent can call the model without end",
            "set `max_calls`, `max_tokens` or `max_cost_usd` under [model]",
        );
    }
    for secret in secrets.values() {
        match &secret.inject {
            Some(inject) if inject.host.is_wildcard() => found.warn(
                &secret.place,
                format!("secret `{}` is sent to every host matching `{}`", secret.name, inject.host),
                "name the one host that needs it, e.g. host = \"api.github.com\"",
            ),
            None => found.warn(
                &secret.place,
                format!("secret `{}` has no `inject`, so no request ever carries it", secret.name),
                "add `inject = { host = \"...\", header = \"Authorization\", format = \"Bearer {}\" }`",
            ),
            _ => {}
        }
    }
    let broad_mounts = |owner: &str, grants: &Grants, found: &mut Findings| {
        for mount in &grants.fs {
            if mount.mode != MountMode::Rw {
                continue;
            }
            use std::path::Component;
            let path = std::path::Path::new(mount.dir.as_str());
            let named = path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count();
            // `/`, `/home`, `..`, `../..`, `.`, `~`, `$HOME`: a directory
            // that is not one set aside for the guest.
            let broad = named == 0
                || (path.is_absolute() && named <= 1)
                || mount.dir == "~"
                || mount.dir.starts_with("~/") && named <= 1
                || mount.dir.starts_with('$');
            if broad {
                found.warn(
                    &mount.place,
                    format!("{owner} may write anywhere under `{}`", mount.dir),
                    "grant read-write on a dedicated directory, e.g. dir = \"./workspace\"",
                );
            }
        }
    };
    broad_mounts("the agent", agent, found);
    for tool in tools.values() {
        broad_mounts(&format!("tool `{}`", tool.name), &tool.grants, found);
        if tool.decision != Verdict::Allow || !tool.args.is_empty() {
            continue;
        }
        let by_name = tool.effects.is_none() && sounds_state_changing(&tool.name);
        let writes = tool.grants.fs.iter().any(|m| m.mode == MountMode::Rw);
        let posts = tool
            .grants
            .http
            .as_ref()
            .is_some_and(|h| h.methods.iter().any(|m| m != "GET" && m != "HEAD"));
        if by_name || writes || posts {
            let why = if writes {
                "may write files"
            } else if posts {
                "may send HTTP requests that change things"
            } else {
                "sounds like it changes things"
            };
            found.warn(
                &tool.place,
                format!(
                    "tool `{}` {why}, and is allowed with no argument rules",
                    tool.name
                ),
                if by_name && !writes && !posts {
                    "add `args` rules, or `decision = \"ask\"` so a person approves each call; a tool that only reads says `effects = \"none\"`"
                } else {
                    "add `args` rules, or `decision = \"ask\"` so a person approves each call"
                },
            );
        }
    }
}
