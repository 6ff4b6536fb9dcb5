//! Rules on a tool call's JSON arguments, compiled once at load: regexes,
//! globs and schemas are built here, so a decision only matches.

use super::Rule;
use super::file::{Place, Verdict};
use super::printable;
use super::provenance::{Provenance, SourceSpec};
use globset::GlobMatcher;
use regex_automata::meta::Regex;
use serde_json::{Number, Value};
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// Where a field is in the arguments: `to`, `recipient.email` (dotted) or
/// `/items/0/name` (JSON Pointer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    /// As written in the policy.
    pub text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parse a dotted path or a JSON Pointer.
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = if let Some(pointer) = text.strip_prefix('/') {
            pointer
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            text.split('.').map(str::to_string).collect()
        };
        if text.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!(
                "`{text}` is not a field path: write `name`, `a.b` or a JSON Pointer such as `/a/0/b`"
            ));
        }
        Ok(FieldPath {
            text: text.to_string(),
            segments,
        })
    }

    /// Append the segments of `child` (for nested `args` tables).
    pub fn join(&self, child: &FieldPath) -> FieldPath {
        let text = if child.text.starts_with('/') || self.text.starts_with('/') {
            let mut pointer = String::new();
            for segment in self.segments.iter().chain(&child.segments) {
                pointer.push('/');
                pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
            }
            pointer
        } else {
            format!("{}.{}", self.text, child.text)
        };
        FieldPath {
            text,
            segments: self
                .segments
                .iter()
                .chain(&child.segments)
                .cloned()
                .collect(),
        }
    }

    /// The value at this path, if present. A `*` segment stands for any
    /// item or member: the first value found is given.
    pub fn resolve<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        let mut first = None;
        self.each(value, &mut |v| {
            first = Some(v);
            false
        });
        first
    }

    /// Calls `f` with each value at this path (several where a segment is
    /// `*`: every item of an array, every member of an object), until it
    /// returns false. Explicit `null`s are values here; rules treat them as
    /// absent.
    pub fn each<'v>(&self, value: &'v Value, f: &mut dyn FnMut(&'v Value) -> bool) -> bool {
        fn walk<'v>(
            segments: &[String],
            value: &'v Value,
            f: &mut dyn FnMut(&'v Value) -> bool,
        ) -> bool {
            let Some((segment, rest)) = segments.split_first() else {
                return f(value);
            };
            if segment == "*" {
                return match value {
                    Value::Array(items) => items.iter().all(|item| walk(rest, item, f)),
                    Value::Object(map) => map.values().all(|member| walk(rest, member, f)),
                    _ => true,
                };
            }
            let next = match value {
                Value::Object(map) => map.get(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            next.is_none_or(|next| walk(rest, next, f))
        }
        walk(&self.segments, value, f)
    }
}

impl FieldPath {
    /// The top-level argument this path starts at, when it names one (not
    /// `*`).
    fn top_key(&self) -> Option<&str> {
        self.segments
            .first()
            .map(String::as_str)
            .filter(|s| *s != "*")
    }
}

/// A tool's argument rules by the top-level argument each looks at, built
/// once at load, so that a call is checked against the rules its own
/// arguments touch, not every rule of the tool: a rule whose field is
/// absent passes (unless `required`), so skipping it decides the same.
/// What cannot be skipped is kept apart: `required` rules, run-wide counts
/// (`max_total`, `max_distinct`) and paths that start with `*`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ArgIndex {
    /// Positions in the rule list, ascending, by top-level key.
    by_key: std::collections::HashMap<String, Vec<u32>, ahash::RandomState>,
    /// Positions of the rules looked at on every call, ascending.
    always: Vec<u32>,
    /// Positions of the rules with run-wide counts, ascending.
    counted: Vec<u32>,
    /// How many rules it was built for: a list of another length is
    /// checked whole.
    rules: usize,
}

/// Below this many rules a tool's list is checked whole: cheaper than
/// picking.
const INDEXED_FROM: usize = 16;

impl ArgIndex {
    /// The index of `rules` (in the order they are checked).
    pub fn new(rules: &[ArgRule]) -> Self {
        let mut index = ArgIndex {
            rules: rules.len(),
            ..ArgIndex::default()
        };
        for (at, rule) in rules.iter().enumerate() {
            let at = at as u32;
            let counted = rule
                .checks
                .iter()
                .any(|c| matches!(c, Check::MaxTotal(..) | Check::MaxDistinct(..)));
            if counted {
                index.counted.push(at);
            }
            match rule.path.top_key() {
                Some(key) if !rule.required && !counted => {
                    index.by_key.entry(key.to_string()).or_default().push(at)
                }
                _ => index.always.push(at),
            }
        }
        index
    }

    /// The rules of `rules` (the list it was built for) that can fail on
    /// `arguments`, in their order: every rule but those on a top-level
    /// argument the call does not give.
    pub fn relevant<'r>(
        &self,
        rules: &'r [ArgRule],
        arguments: &Value,
    ) -> impl Iterator<Item = &'r ArgRule> {
        let picked = match arguments {
            Value::Object(map) if rules.len() == self.rules && rules.len() >= INDEXED_FROM => {
                let mut picked = self.always.clone();
                // Look up from the smaller side: a call's keys, or the
                // keys rules are written on.
                if map.len() <= self.by_key.len() {
                    for key in map.keys() {
                        if let Some(at) = self.by_key.get(key.as_str()) {
                            picked.extend_from_slice(at);
                        }
                    }
                } else {
                    for (key, at) in &self.by_key {
                        if map.contains_key(key) {
                            picked.extend_from_slice(at);
                        }
                    }
                }
                picked.sort_unstable();
                Some(picked)
            }
            _ => None,
        };
        let all = picked.is_none().then(|| rules.iter());
        picked
            .into_iter()
            .flatten()
            .map(|at| &rules[at as usize])
            .chain(all.into_iter().flatten())
    }

    /// The rules of `rules` with run-wide counts.
    pub fn counted<'r>(&self, rules: &'r [ArgRule]) -> impl Iterator<Item = &'r ArgRule> {
        let indexed = rules.len() == self.rules;
        let picked = indexed.then(|| self.counted.iter().map(|at| &rules[*at as usize]));
        let all = (!indexed).then(|| rules.iter());
        picked
            .into_iter()
            .flatten()
            .chain(all.into_iter().flatten())
    }
}

/// A path into a tool's JSON result that labels the values under it:
/// the JSON Pointer form of [`FieldPath`] (`/a/0/b`, or dotted `a.b`),
/// where a segment `*` stands for one item or member and `**` for any
/// number of them (none included); `/` alone is the whole result. A path
/// that stops at an object or array labels every value inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelPath {
    /// As written.
    pub text: String,
    segments: Vec<String>,
}

/// Most segments of a label path (JSON nests at most 128 deep as parsed).
pub const MAX_LABEL_PATH: usize = 32;

impl LabelPath {
    /// Parse `/`, a JSON Pointer or a dotted path, with `*` and `**`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "/" {
            return Ok(LabelPath {
                text: text.to_string(),
                segments: Vec::new(),
            });
        }
        let path = FieldPath::parse(text).map_err(|_| {
            format!(
                "`{text}` is not a label path: write `/` (the whole result), a JSON Pointer such as `/items/0/subject`, `*` for one segment or `**` for any depth, e.g. `/**/subject`"
            )
        })?;
        let mut segments: Vec<String> = Vec::with_capacity(path.segments.len());
        for segment in path.segments {
            // `**/**` says no more than `**`.
            if segment == "**" && segments.last().is_some_and(|s| s == "**") {
                continue;
            }
            segments.push(segment);
        }
        if segments.len() > MAX_LABEL_PATH {
            return Err(format!(
                "`{text}` has {} segments; a label path may have at most {MAX_LABEL_PATH}",
                segments.len()
            ));
        }
        Ok(LabelPath {
            text: text.to_string(),
            segments,
        })
    }

    /// Whether this is `/`, the whole result.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether the value at `at` (the keys and indexes from the result's
    /// root) is at or under this path.
    pub fn covers<S: AsRef<str>>(&self, at: &[S]) -> bool {
        let mut state = self.start();
        for key in at {
            if state.is_covered() || state.is_dead() {
                break;
            }
            state = self.step(state, key.as_ref());
        }
        state.is_covered()
    }

    /// Where matching stands at the root.
    pub fn start(&self) -> PathState {
        self.close(PathState(1))
    }

    /// Where matching stands one key or index further down: linear in the
    /// path's length. Once covered, a value's whole subtree is.
    pub fn step(&self, state: PathState, key: &str) -> PathState {
        if state.is_covered() || state.is_dead() {
            return state;
        }
        let n = self.segments.len();
        let mut next = 0u64;
        for (i, segment) in self.segments.iter().enumerate() {
            if state.0 & (1 << i) == 0 {
                continue;
            }
            match segment.as_str() {
                "**" => next |= (1 << i) | (1 << (i + 1)),
                "*" => next |= 1 << (i + 1),
                literal if literal == key => next |= 1 << (i + 1),
                _ => {}
            }
        }
        let next = self.close(PathState(next));
        if next.0 & (1 << n) != 0 {
            PathState::COVERED
        } else {
            next
        }
    }

    /// `**` may match nothing: from each reached `**`, the next position.
    fn close(&self, mut state: PathState) -> PathState {
        for (i, segment) in self.segments.iter().enumerate() {
            if state.0 & (1 << i) != 0 && segment == "**" {
                state.0 |= 1 << (i + 1);
            }
        }
        if state.0 & (1 << self.segments.len()) != 0 {
            PathState::COVERED
        } else {
            state
        }
    }
}

/// How far a [`LabelPath`] has matched the keys from the root: the set of
/// pattern positions reached (a bit each; paths have at most
/// [`MAX_LABEL_PATH`] segments), or covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathState(u64);

impl PathState {
    const COVERED: PathState = PathState(u64::MAX);

    /// Whether the value here, and all under it, is covered.
    pub fn is_covered(self) -> bool {
        self == Self::COVERED
    }

    /// Whether nothing here or below can be covered.
    pub fn is_dead(self) -> bool {
        self.0 == 0
    }
}

/// The annotation in a tool's parameters schema (top level) that lists the
/// parts of its results that are third-party: label paths, e.g.
/// `"x-warden-third-party": ["/description", "/**/subject"]`.
pub const THIRD_PARTY_KEY: &str = "x-warden-third-party";

/// Most paths one tool may declare third-party.
pub const MAX_THIRD_PARTY: usize = 32;

/// The label paths `schema` declares third-party (none without the
/// annotation), or what is wrong with them, for the tool's author.
pub fn declared_third_party(schema: &Value) -> Result<Vec<LabelPath>, String> {
    let Some(declared) = schema.get(THIRD_PARTY_KEY) else {
        return Ok(Vec::new());
    };
    let wrong = |why: String| {
        format!(
            "`{THIRD_PARTY_KEY}` that {why}: give a list of at most {MAX_THIRD_PARTY} result paths such as [\"/description\", \"/**/subject\"]"
        )
    };
    let Some(list) = declared.as_array() else {
        return Err(wrong("is not a list".into()));
    };
    if list.len() > MAX_THIRD_PARTY {
        return Err(wrong(format!("has {} paths", list.len())));
    }
    list.iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(|| {
                wrong(format!(
                    "holds {}, not a string",
                    printable(&item.to_string())
                ))
            })?;
            LabelPath::parse(text)
                .map_err(|e| wrong(format!("holds a bad path ({})", printable(&e))))
        })
        .collect()
}

impl fmt::Display for LabelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One check a rule makes.
#[derive(Debug, Clone)]
pub enum Check {
    /// Equal to this value (numbers compare by value).
    Equals(Value),
    /// Equal to one of these.
    OneOf(Vec<Value>),
    /// A string matching this regex, whole (the pattern as written).
    /// Shared by every rule that writes the same pattern.
    Matches(Arc<Regex>, String),
    /// A string matching this glob.
    Glob(GlobMatcher, String),
    /// A string starting with this.
    Prefix(String),
    /// A number at least this (compared exactly).
    Min(Number),
    /// A number at most this (compared exactly).
    Max(Number),
    /// A string of at most this many characters, or an array of at most
    /// this many items.
    MaxLen(u64),
    /// Valid against this JSON Schema.
    Schema(Arc<jsonschema::Validator>),
    /// Occurring in data from these sources.
    From(Vec<SourceSpec>, Vec<String>),
    /// A string not matching this regex, whole (the pattern as written).
    NotMatches(Arc<Regex>, String),
    /// A string containing none of these (each case folded, as written).
    NotContains(Vec<String>, Vec<String>),
    /// Equal to the argument at this path.
    SameAs(FieldPath),
    /// Different from the argument at this path, when it is present.
    DiffersFrom(FieldPath),
    /// All the checks of one of these alternatives pass (each with its
    /// rule's text, for the reason).
    AnyOf(Vec<Vec<Check>>),
    /// The field's numbers, added up over the run's allowed calls (under
    /// the count named), at most this. Checked over the whole call.
    MaxTotal(Number, String),
    /// The field's distinct values over the run's allowed calls (under the
    /// count named), at most this many. Checked over the whole call.
    MaxDistinct(u32, String),
}

/// What the run's allowed calls added up, by count name: the session's
/// side of `max_total` and `max_distinct`.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    counts: std::collections::HashMap<String, Aggregate>,
}

#[derive(Debug, Clone, Default)]
struct Aggregate {
    total: f64,
    /// SHA-256 of each value's JSON form (32 bytes each, whatever the
    /// value's size). Never more than the largest `max_distinct` naming the
    /// count (at most [`MAX_DISTINCT`]): a call that would pass it is
    /// refused, and only allowed calls are counted.
    distinct: std::collections::HashSet<[u8; 32]>,
}

/// The largest `max_distinct`: its values' hashes stay under 4 MiB a count.
pub const MAX_DISTINCT: u32 = 100_000;

/// What `max_distinct` keeps of a value.
fn value_key(value: &Value) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(value.to_string().as_bytes()).into()
}

/// The numbers and values one call gives a field: every value found at its
/// path, items of lists one by one; `null` is nothing. The total is NaN
/// when a value is not a number.
fn contribution<'v>(path: &FieldPath, arguments: &'v Value) -> (f64, Vec<&'v Value>) {
    let mut total = 0.0;
    let mut values = Vec::new();
    let mut numbers = true;
    path.each(arguments, &mut |value| {
        let items: &[Value] = match value {
            Value::Array(items) => items,
            other => std::slice::from_ref(other),
        };
        for item in items.iter().filter(|v| !v.is_null()) {
            match item.as_f64() {
                Some(n) => total += n,
                None => numbers = false,
            }
            values.push(item);
        }
        true
    });
    (if numbers { total } else { f64::NAN }, values)
}

impl Aggregates {
    /// Count an allowed call's arguments against every aggregate rule.
    pub fn record<'r>(&mut self, rules: impl IntoIterator<Item = &'r ArgRule>, arguments: &Value) {
        for rule in rules {
            for check in &rule.checks {
                let (Check::MaxTotal(_, count) | Check::MaxDistinct(_, count)) = check else {
                    continue;
                };
                let (total, values) = contribution(&rule.path, arguments);
                let aggregate = self.counts.entry(count.clone()).or_default();
                match check {
                    Check::MaxTotal(..) if total.is_finite() => aggregate.total += total,
                    Check::MaxDistinct(..) => aggregate
                        .distinct
                        .extend(values.iter().map(|v| value_key(v))),
                    _ => {}
                }
            }
        }
    }

    /// The total counted under `count`.
    pub fn total(&self, count: &str) -> f64 {
        self.counts.get(count).map_or(0.0, |a| a.total)
    }

    /// How many distinct values were counted under `count`.
    pub fn distinct(&self, count: &str) -> usize {
        self.counts.get(count).map_or(0, |a| a.distinct.len())
    }
}

impl Check {
    /// Whether the check applies to each item of an array value rather
    /// than to the array.
    fn per_item(&self) -> bool {
        match self {
            Check::Equals(expected) => !expected.is_array(),
            Check::OneOf(options) => !options.iter().any(Value::is_array),
            Check::MaxLen(_) | Check::Schema(_) | Check::AnyOf(_) => false,
            Check::SameAs(_) | Check::DiffersFrom(_) => false,
            Check::MaxTotal(..) | Check::MaxDistinct(..) => false,
            _ => true,
        }
    }

    fn passes(&self, value: &Value, arguments: &Value, provenance: &Provenance) -> bool {
        if let Value::Array(items) = value
            && self.per_item()
        {
            return items
                .iter()
                .all(|item| self.passes_one(item, arguments, provenance));
        }
        self.passes_one(value, arguments, provenance)
    }

    fn passes_one(&self, value: &Value, arguments: &Value, provenance: &Provenance) -> bool {
        match self {
            // Over the whole call: `ArgRule::aggregate_violation`.
            Check::MaxTotal(..) | Check::MaxDistinct(..) => true,
            Check::NotMatches(regex, _) => text_of(value).is_some_and(|t| !regex.is_match(&*t)),
            Check::NotContains(folded, _) => text_of(value).is_some_and(|t| {
                let text = t.to_lowercase();
                !folded.iter().any(|needle| text.contains(needle.as_str()))
            }),
            Check::SameAs(other) => other
                .resolve(arguments)
                .is_some_and(|o| !o.is_null() && json_eq(value, o)),
            Check::DiffersFrom(other) => other
                .resolve(arguments)
                .is_none_or(|o| o.is_null() || !json_eq(value, o)),
            Check::AnyOf(alternatives) => alternatives.iter().any(|checks| {
                checks
                    .iter()
                    .all(|check| check.passes(value, arguments, provenance))
            }),
            Check::Equals(expected) => json_eq(value, expected),
            Check::OneOf(options) => options.iter().any(|o| json_eq(value, o)),
            Check::Matches(regex, _) => text_of(value).is_some_and(|t| regex.is_match(&*t)),
            Check::Glob(glob, _) => text_of(value).is_some_and(|t| glob.is_match(&*t)),
            Check::Prefix(prefix) => value
                .as_str()
                .is_some_and(|s| s.starts_with(prefix.as_str())),
            Check::Min(min) => value.as_number().is_some_and(|n| {
                matches!(
                    compare_numbers(n, min),
                    Some(Ordering::Greater | Ordering::Equal)
                )
            }),
            Check::Max(max) => value.as_number().is_some_and(|n| {
                matches!(
                    compare_numbers(n, max),
                    Some(Ordering::Less | Ordering::Equal)
                )
            }),
            Check::MaxLen(max) => match value {
                Value::String(s) => s.chars().count() as u64 <= *max,
                Value::Array(items) => items.len() as u64 <= *max,
                _ => false,
            },
            Check::Schema(validator) => validator.is_valid(value),
            Check::From(specs, _) => {
                text_of(value).is_some_and(|t| provenance.occurs_in(&t, specs))
            }
        }
    }

    /// What the value should have been, for a refusal's reason.
    fn expectation(&self) -> String {
        match self {
            Check::Equals(v) => format!("must equal {v}"),
            Check::OneOf(options) => format!(
                "must be one of {}",
                options
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Check::Matches(_, pattern) => format!("must match `{pattern}`"),
            Check::Glob(_, pattern) => format!("must match the glob `{pattern}`"),
            Check::Prefix(prefix) => format!("must start with `{prefix}`"),
            Check::Min(min) => format!("must be at least {min}"),
            Check::Max(max) => format!("must be at most {max}"),
            Check::MaxLen(max) => format!("must be at most {max} long"),
            Check::Schema(_) => "must match the rule's schema".to_string(),
            Check::From(_, names) => format!("must come from {}", names.join(" or ")),
            Check::NotMatches(_, pattern) => format!("must not match `{pattern}`"),
            Check::NotContains(_, written) => format!(
                "must contain none of {}",
                written
                    .iter()
                    .map(|w| format!("`{w}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Check::SameAs(other) => format!("must equal `{other}`"),
            Check::DiffersFrom(other) => format!("must differ from `{other}`"),
            Check::MaxTotal(max, count) => {
                format!("must add up to at most {max} over the run (count `{count}`)")
            }
            Check::MaxDistinct(max, count) => {
                format!("may take at most {max} distinct values over the run (count `{count}`)")
            }
            Check::AnyOf(alternatives) => format!(
                "must pass one of: {}",
                alternatives
                    .iter()
                    .map(|checks| checks
                        .iter()
                        .map(Check::expectation)
                        .collect::<Vec<_>>()
                        .join(" and "))
                    .collect::<Vec<_>>()
                    .join("; or ")
            ),
        }
    }
}

/// Numbers compare by exact value (1 equals 1.0; 2^53 + 1 does not equal
/// 2^53); everything else structurally.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        _ => a == b,
    }
}

/// Compare two JSON numbers by their exact values. Integers compare as
/// integers, never through `f64` (which rounds above 2^53, so an account
/// number one digit off would pass); an integer and a float compare
/// exactly too. `None` only for a NaN, which JSON cannot carry.
pub fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (Some(x), None) => compare_integer_float(x, b.as_f64()?),
        (None, Some(y)) => compare_integer_float(y, a.as_f64()?).map(Ordering::reverse),
        (None, None) => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// An integer's value; `None` for a float.
fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// `integer` (an i64 or u64) against `float`, exactly.
fn compare_integer_float(integer: i128, float: f64) -> Option<Ordering> {
    // Every i64 and u64 lies in [-2^63, 2^64); both bounds are exact f64s.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;
    if float.is_nan() {
        return None;
    }
    if float >= TWO_POW_64 {
        return Some(Ordering::Less);
    }
    if float < MINUS_TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    // In this range the whole part converts to i128 exactly, and the
    // fraction is exact too.
    let whole = float.trunc();
    match integer.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(float - whole)),
        unequal => Some(unequal),
    }
}

/// Strings as they are; numbers and booleans in their JSON form.
fn text_of(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Bool(b) => Some(b.to_string().into()),
        _ => None,
    }
}

/// A rule on one field: all its checks must pass, or it decides
/// `decision`.
#[derive(Debug, Clone)]
pub struct ArgRule {
    /// The field.
    pub path: FieldPath,
    /// What it checks.
    pub checks: Vec<Check>,
    /// Whether a missing field fails the rule.
    pub required: bool,
    /// What a failure decides: deny or ask.
    pub decision: Verdict,
    /// Its name, e.g. `tools.send_email.args.to`.
    pub rule: Rule,
    /// Where it is written.
    pub place: Place,
}

impl ArgRule {
    /// `None` when the arguments satisfy the rule; otherwise why not. A
    /// field that is missing or `null` is absent: it passes unless the
    /// rule is `required`. Under a `*` path every value found must pass.
    pub fn violation(
        &self,
        arguments: &Value,
        provenance: &Provenance,
        aggregates: &Aggregates,
    ) -> Option<String> {
        if let Some(why) = self.aggregate_violation(arguments, aggregates) {
            return Some(why);
        }
        let mut present = false;
        let mut failure = None;
        self.path.each(arguments, &mut |value| {
            if value.is_null() {
                return true;
            }
            present = true;
            match self
                .checks
                .iter()
                .find(|c| !c.passes(value, arguments, provenance))
            {
                Some(failed) => {
                    failure = Some((value, failed));
                    false
                }
                None => true,
            }
        });
        if let Some((value, failed)) = failure {
            let shown = match value {
                Value::String(s) => format!("`{}`", printable(s)),
                other => printable(&other.to_string()),
            };
            // Where the value was seen, for the person an ask goes to.
            let seen = match (failed, text_of(value)) {
                (Check::From(..), Some(text)) => format!(": {}", provenance.explain(&text)),
                _ => String::new(),
            };
            return Some(format!(
                "`{}` is {shown}, which {}{seen}",
                self.path,
                failed.expectation()
            ));
        }
        (!present && self.required).then(|| format!("`{}` is required", self.path))
    }

    /// `max_total` and `max_distinct`, over every value the call gives
    /// the field, with what the run's allowed calls already counted.
    fn aggregate_violation(&self, arguments: &Value, aggregates: &Aggregates) -> Option<String> {
        for check in &self.checks {
            match check {
                Check::MaxTotal(max, count) => {
                    let (total, values) = contribution(&self.path, arguments);
                    if values.is_empty() {
                        continue;
                    }
                    if !total.is_finite() {
                        return Some(format!(
                            "`{}` is not a number, which {}",
                            self.path,
                            check.expectation()
                        ));
                    }
                    let before = aggregates.total(count);
                    let limit = max.as_f64().unwrap_or(f64::INFINITY);
                    if before + total > limit {
                        return Some(format!(
                            "`{}` adds {total} to the {before} already counted, past the run's total of {max} (count `{count}`)",
                            self.path
                        ));
                    }
                }
                Check::MaxDistinct(max, count) => {
                    let (_, values) = contribution(&self.path, arguments);
                    let seen = aggregates.counts.get(count);
                    let mut new: Vec<([u8; 32], &Value)> = values
                        .iter()
                        .map(|v| (value_key(v), *v))
                        .filter(|(k, _)| seen.is_none_or(|a| !a.distinct.contains(k)))
                        .collect();
                    new.sort_by_key(|(k, _)| *k);
                    new.dedup_by_key(|(k, _)| *k);
                    let already = aggregates.distinct(count);
                    if already + new.len() > *max as usize {
                        let shown = match new.first().map(|(_, v)| *v) {
                            Some(Value::String(s)) => format!("`{}`", printable(s)),
                            Some(other) => printable(&other.to_string()),
                            None => String::new(),
                        };
                        return Some(format!(
                            "`{}` is {shown}, a new value past the run's {max} distinct ones (count `{count}`, {already} so far)",
                            self.path,
                        ));
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_resolve_dotted_and_pointer() {
        let args = json!({"a": {"b": [10, {"c/d": 5}]}});
        assert_eq!(
            FieldPath::parse("a.b.0").unwrap().resolve(&args),
            Some(&json!(10))
        );
        assert_eq!(
            FieldPath::parse("/a/b/1/c~1d").unwrap().resolve(&args),
            Some(&json!(5))
        );
        assert_eq!(FieldPath::parse("a.x").unwrap().resolve(&args), None);
        assert!(FieldPath::parse("a..b").is_err());
        let joined = FieldPath::parse("a")
            .unwrap()
            .join(&FieldPath::parse("b").unwrap());
        assert_eq!(joined.text, "a.b");
    }

    #[test]
    fn label_paths_cover_values_at_and_under_them() {
        let path = |t: &str| LabelPath::parse(t).unwrap();
        assert!(path("/").covers::<&str>(&[]));
        assert!(path("/").covers(&["a", "0"]));
        assert!(path("/description").covers(&["description"]));
        assert!(
            path("/description").covers(&["description", "0", "text"]),
            "a path at an object labels what is inside"
        );
        assert!(!path("/description").covers(&["account"]));
        assert!(
            !path("/description").covers::<&str>(&[]),
            "not the root beside it"
        );
        assert!(path("description").covers(&["description"]), "dotted too");
        assert!(path("/items/*/subject").covers(&["items", "3", "subject"]));
        assert!(!path("/items/*/subject").covers(&["items", "subject"]));
        assert!(
            path("/**/subject").covers(&["subject"]),
            "`**` may be empty"
        );
        assert!(path("/**/subject").covers(&["a", "b", "7", "subject"]));
        assert!(!path("/**/subject").covers(&["a", "subject_line"]));
        assert!(path("/a/**/b/**/c").covers(&["a", "x", "b", "y", "z", "c"]));
        assert!(!path("/a/**/b/**/c").covers(&["a", "x", "c", "b"]));
        assert!(path("/a~1b").covers(&["a/b"]), "pointer escapes");
        // Many `**` against a deep path stays linear.
        let deep: Vec<&str> = std::iter::repeat_n("x", 120).collect();
        let stars = format!("{}/y", "/**/x".repeat(15));
        assert!(!path(&stars).covers(&deep));
        for bad in ["", "//", "/a//b", "a..b"] {
            assert!(
                LabelPath::parse(bad)
                    .unwrap_err()
                    .contains("is not a label path"),
                "{bad}"
            );
        }
        assert!(LabelPath::parse(&"/a".repeat(33)).is_err());
        assert!(LabelPath::parse(&"/a".repeat(32)).is_ok());
        assert_eq!(path("/**/**/a").segments, ["**", "a"]);
    }

    #[test]
    fn a_tools_third_party_declaration_is_checked() {
        let declared = |schema: Value| declared_third_party(&schema);
        assert_eq!(declared(json!({"type": "object"})), Ok(vec![]));
        let paths = declared(json!({"x-warden-third-party": ["/a", "/**/b"]})).unwrap();
        assert_eq!(paths.len(), 2);
        assert!(paths[1].covers(&["x", "b"]));
        for (bad, says) in [
            (json!("/a"), "is not a list"),
            (json!([1]), "holds 1, not a string"),
            (json!(["/a//b"]), "holds a bad path"),
            (json!(vec!["/a"; 33]), "has 33 paths"),
        ] {
            let e = declared(json!({ "x-warden-third-party": bad })).unwrap_err();
            assert!(
                e.contains(says) && e.starts_with("`x-warden-third-party` that"),
                "{e}"
            );
        }
    }

    #[test]
    fn checks_apply_per_item_of_arrays() {
        let provenance = Provenance::default();
        let domain = Check::Matches(
            Arc::new(Regex::new("^(?:.*@example\\.com)$").unwrap()),
            ".*@example\\.com".into(),
        );
        let none = json!({});
        assert!(domain.passes(
            &json!(["a@example.com", "b@example.com"]),
            &none,
            &provenance
        ));
        assert!(!domain.passes(
            &json!(["a@example.com", "eve@evil.test"]),
            &none,
            &provenance
        ));
        assert!(Check::MaxLen(2).passes(&json!([1, 2]), &none, &provenance));
        assert!(!Check::MaxLen(2).passes(&json!([1, 2, 3]), &none, &provenance));
        assert!(Check::Equals(json!(1)).passes(&json!(1.0), &none, &provenance));
        assert!(!Check::Min(0.into()).passes(&json!("5"), &none, &provenance));
    }
}
