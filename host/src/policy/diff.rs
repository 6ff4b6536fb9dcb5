//! `warden policy diff OLD NEW`: what one compiled policy (includes
//! applied) allows that the other does not, in plain words. Pure: two
//! policies in, a list of differences out. It compares what the policies
//! mean (grants, rules, budgets), never their text, so reordering keys or
//! splitting a file into includes is no difference.

use super::args::{ArgRule, Check};
use super::{Grants, Policy, ToolPolicy, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

/// Which way one difference goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// NEW allows something OLD does not.
    Widens,
    /// OLD allows something NEW does not.
    Narrows,
    /// Neither simply wider nor narrower (another component, another
    /// directory).
    Changes,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// Which way it goes.
    pub direction: Direction,
    /// The policy key (`tools.fetch.http`, `limits.memory`).
    pub key: String,
    /// What changed, in words: `http now allows https://api.example.com/**`.
    pub text: String,
}

struct Diff {
    out: Vec<Difference>,
}

impl Diff {
    fn push(&mut self, direction: Direction, key: impl Into<String>, text: impl Into<String>) {
        self.out.push(Difference {
            direction,
            key: key.into(),
            text: text.into(),
        });
    }

    /// A bound where `None` is unbounded and more is wider.
    fn bound<T: PartialOrd + Display>(
        &mut self,
        key: &str,
        what: &str,
        old: Option<T>,
        new: Option<T>,
    ) {
        match (old, new) {
            (Some(a), Some(b)) if b > a => self.push(
                Direction::Widens,
                key,
                format!("{what} raised from {a} to {b}"),
            ),
            (Some(a), Some(b)) if b < a => self.push(
                Direction::Narrows,
                key,
                format!("{what} lowered from {a} to {b}"),
            ),
            (Some(a), None) => self.push(
                Direction::Widens,
                key,
                format!("{what} no longer bounded (was {a})"),
            ),
            (None, Some(b)) => self.push(
                Direction::Narrows,
                key,
                format!("{what} now bounded at {b}"),
            ),
            _ => {}
        }
    }

    /// Lists where each entry NEW has and OLD lacks goes `more` way.
    fn list(
        &mut self,
        key: &str,
        old: &[String],
        new: &[String],
        more: Direction,
        added: &str,
        dropped: &str,
    ) {
        let old: BTreeSet<&String> = old.iter().collect();
        let new: BTreeSet<&String> = new.iter().collect();
        let less = match more {
            Direction::Widens => Direction::Narrows,
            Direction::Narrows => Direction::Widens,
            Direction::Changes => Direction::Changes,
        };
        for item in new.difference(&old) {
            self.push(more, key, format!("{added} {item}"));
        }
        for item in old.difference(&new) {
            self.push(less, key, format!("{dropped} {item}"));
        }
    }
}

/// Every difference between `old` and `new`, widenings first.
pub fn diff(old: &Policy, new: &Policy) -> Vec<Difference> {
    let mut d = Diff { out: Vec::new() };
    limits(&mut d, old, new);
    if old.plan.required != new.plan.required {
        if new.plan.required {
            d.push(
                Direction::Narrows,
                "plan.required",
                "the agent must now declare a plan before its first label",
            );
        } else {
            d.push(
                Direction::Widens,
                "plan.required",
                "the agent no longer has to declare a plan: once labeled, any sink may be called",
            );
        }
    }
    model(&mut d, old, new);
    grants(&mut d, "agent", &old.agent, &new.agent);
    let names: BTreeSet<&String> = old.tools.keys().chain(new.tools.keys()).collect();
    for name in names {
        fn granted<'p>(p: &'p Policy, name: &str) -> Option<&'p ToolPolicy> {
            p.tools.get(name).filter(|t| t.decision != Verdict::Deny)
        }
        match (granted(old, name), granted(new, name)) {
            (None, Some(_)) => d.push(
                Direction::Widens,
                format!("tools.{name}"),
                format!("added tool {name}"),
            ),
            (Some(_), None) => d.push(
                Direction::Narrows,
                format!("tools.{name}"),
                format!("removed tool {name}"),
            ),
            (Some(a), Some(b)) => tool(&mut d, name, a, b),
            (None, None) => {}
        }
    }
    let secrets: BTreeSet<&String> = old.secrets.keys().chain(new.secrets.keys()).collect();
    for name in secrets {
        match (
            old.secrets.contains_key(name),
            new.secrets.contains_key(name),
        ) {
            (false, true) => d.push(
                Direction::Changes,
                format!("secrets.{name}"),
                format!("added secret {name}"),
            ),
            (true, false) => d.push(
                Direction::Changes,
                format!("secrets.{name}"),
                format!("removed secret {name}"),
            ),
            _ => {}
        }
    }
    d.out.sort_by_key(|x| x.direction);
    d.out
}

fn limits(d: &mut Diff, old: &Policy, new: &Policy) {
    use super::{ByteSize, HumanDuration};
    let (a, b) = (&old.limits, &new.limits);
    for (key, x, y) in [
        ("memory", a.memory, b.memory),
        ("output", a.output, b.output),
        ("stdio", a.stdio, b.stdio),
        ("index", a.index, b.index),
    ] {
        d.bound(
            &format!("limits.{key}"),
            key,
            Some(ByteSize(x)),
            Some(ByteSize(y)),
        );
    }
    for (key, x, y) in [("cpu", a.cpu, b.cpu), ("wall", a.wall, b.wall)] {
        d.bound(
            &format!("limits.{key}"),
            key,
            Some(HumanDuration(x)),
            Some(HumanDuration(y)),
        );
    }
    d.bound(
        "limits.max_steps",
        "steps per run",
        a.max_steps,
        b.max_steps,
    );
    d.bound(
        "limits.max_refusals",
        "refusals per run",
        Some(a.max_refusals),
        Some(b.max_refusals),
    );
}

fn model(d: &mut Diff, old: &Policy, new: &Policy) {
    let (a, b) = (&old.model, &new.model);
    d.list(
        "model.allow",
        &a.allow,
        &b.allow,
        Direction::Widens,
        "now allows the model",
        "no longer allows the model",
    );
    d.bound(
        "model.max_calls",
        "model calls per run",
        a.max_calls,
        b.max_calls,
    );
    d.bound(
        "model.max_tokens",
        "tokens per run",
        a.max_tokens,
        b.max_tokens,
    );
    d.bound(
        "model.max_tokens_per_call",
        "tokens per call",
        a.max_tokens_per_call,
        b.max_tokens_per_call,
    );
    d.bound(
        "model.max_cost_usd",
        "cost per run (USD)",
        a.max_cost_usd,
        b.max_cost_usd,
    );
    d.list(
        "model.deny",
        &a.deny,
        &b.deny,
        Direction::Narrows,
        "now refuses requests matching",
        "no longer refuses requests matching",
    );
    d.list(
        "model.redact",
        &a.redact,
        &b.redact,
        Direction::Narrows,
        "now redacts",
        "no longer redacts",
    );
    d.list(
        "model.labels",
        &a.labels,
        &b.labels,
        Direction::Narrows,
        "model answers now add the label",
        "model answers no longer add the label",
    );
}

fn grants(d: &mut Diff, owner: &str, a: &Grants, b: &Grants) {
    let key = |k: &str| format!("{owner}.{k}");
    let rules = |g: &Grants| -> Vec<String> {
        g.http
            .iter()
            .flat_map(|h| h.rules.iter())
            .map(|r| {
                let mut text = r.text.clone();
                if r.private {
                    text.push_str(" (private addresses too)");
                }
                if !r.labels.is_empty() {
                    text.push_str(&format!(" (labels: {})", r.labels.join(", ")));
                }
                text
            })
            .collect()
    };
    d.list(
        &key("http"),
        &rules(a),
        &rules(b),
        Direction::Widens,
        "http now allows",
        "http no longer allows",
    );
    let methods = |g: &Grants| {
        g.http
            .as_ref()
            .map(|h| h.methods.clone())
            .unwrap_or_default()
    };
    if a.http.is_some() && b.http.is_some() {
        d.list(
            &key("http.methods"),
            &methods(a),
            &methods(b),
            Direction::Widens,
            "http now allows the method",
            "http no longer allows the method",
        );
        if let (Some(x), Some(y)) = (&a.http, &b.http) {
            use super::ByteSize;
            d.bound(
                &key("http.max_request"),
                "http request size",
                Some(ByteSize(x.max_request)),
                Some(ByteSize(y.max_request)),
            );
            d.bound(
                &key("http.max_response"),
                "http response size",
                Some(ByteSize(x.max_response)),
                Some(ByteSize(y.max_response)),
            );
        }
    }
    let mounts = |g: &Grants| -> BTreeMap<String, (String, String)> {
        g.fs.iter()
            .map(|m| {
                let mode = match m.mode {
                    super::MountMode::Ro => "read-only",
                    super::MountMode::Rw => "read-write",
                };
                (m.guest_path.clone(), (m.dir.clone(), mode.to_string()))
            })
            .collect()
    };
    let (ma, mb) = (mounts(a), mounts(b));
    for (path, (dir, mode)) in &mb {
        match ma.get(path) {
            None => d.push(
                Direction::Widens,
                key("fs"),
                format!("fs now grants {path} ({dir}, {mode})"),
            ),
            Some((old_dir, old_mode)) => {
                if old_mode != mode {
                    let way = if mode == "read-write" {
                        Direction::Widens
                    } else {
                        Direction::Narrows
                    };
                    d.push(
                        way,
                        key("fs"),
                        format!("fs {path} is now {mode} (was {old_mode})"),
                    );
                }
                if old_dir != dir {
                    d.push(
                        Direction::Changes,
                        key("fs"),
                        format!("fs {path} is now the directory {dir} (was {old_dir})"),
                    );
                }
            }
        }
    }
    for (path, (dir, _)) in &ma {
        if !mb.contains_key(path) {
            d.push(
                Direction::Narrows,
                key("fs"),
                format!("fs no longer grants {path} ({dir})"),
            );
        }
    }
    let env = |g: &Grants| {
        g.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    };
    d.list(
        &key("env"),
        &env(a),
        &env(b),
        Direction::Widens,
        "now sets",
        "no longer sets",
    );
    d.list(
        &key("inherit_env"),
        &a.inherit_env,
        &b.inherit_env,
        Direction::Widens,
        "now passes through the variable",
        "no longer passes through the variable",
    );
    d.list(
        &key("secrets"),
        &a.secrets,
        &b.secrets,
        Direction::Widens,
        "now gets the secret",
        "no longer gets the secret",
    );
}

fn tool(d: &mut Diff, name: &str, a: &ToolPolicy, b: &ToolPolicy) {
    let key = |k: &str| format!("tools.{name}.{k}");
    let rank = |v: Verdict| match v {
        Verdict::Allow => 2,
        Verdict::Ask => 1,
        Verdict::Deny => 0,
    };
    if a.decision != b.decision {
        let way = if rank(b.decision) > rank(a.decision) {
            Direction::Widens
        } else {
            Direction::Narrows
        };
        d.push(
            way,
            key("decision"),
            format!(
                "every call is now `{}` (was `{}`)",
                b.decision.as_str(),
                a.decision.as_str()
            ),
        );
    }
    let component = |t: &ToolPolicy| t.component.as_ref().map(|c| c.text.clone());
    if component(a) != component(b) {
        d.push(
            Direction::Changes,
            key("component"),
            format!(
                "component is now {} (was {})",
                component(b).unwrap_or_default(),
                component(a).unwrap_or_default()
            ),
        );
    }
    match (&a.sha256, &b.sha256) {
        (Some(_), None) => d.push(
            Direction::Widens,
            key("sha256"),
            "no longer pinned: any bytes at the component's place run",
        ),
        (None, Some(pin)) => d.push(
            Direction::Narrows,
            key("sha256"),
            format!("now pinned to {pin}"),
        ),
        (Some(x), Some(y)) if x != y => d.push(
            Direction::Changes,
            key("sha256"),
            format!("pinned to {y} (was {x})"),
        ),
        _ => {}
    }
    d.bound(&key("max_calls"), "calls per run", a.max_calls, b.max_calls);
    d.bound(&key("rate"), "calls a minute", a.rate, b.rate);
    d.list(
        &key("labels"),
        &a.labels,
        &b.labels,
        Direction::Narrows,
        "results now add the label",
        "results no longer add the label",
    );
    d.list(
        &key("deny_when_labeled"),
        &a.deny_when_labeled,
        &b.deny_when_labeled,
        Direction::Narrows,
        "now denied once the session is labeled",
        "no longer denied once the session is labeled",
    );
    d.list(
        &key("ask_when_labeled"),
        &a.ask_when_labeled,
        &b.ask_when_labeled,
        Direction::Narrows,
        "now asks once the session is labeled",
        "no longer asks once the session is labeled",
    );
    if a.effects != b.effects {
        if b.effects.is_some() {
            d.push(
                Direction::Narrows,
                key("effects"),
                "now only reads (`effects = \"none\"`)",
            );
        } else {
            d.push(
                Direction::Widens,
                key("effects"),
                "may now change things (no longer `effects = \"none\"`): a sink for plans, and its calls write labels to its stores",
            );
        }
    }
    let paths = |t: &ToolPolicy| -> Vec<String> {
        t.path_labels
            .iter()
            .flat_map(|(path, labels)| labels.iter().map(move |l| format!("{} = {l}", path.text)))
            .collect()
    };
    d.list(
        &key("labels"),
        &paths(a),
        &paths(b),
        Direction::Narrows,
        "results now label the part",
        "results no longer label the part",
    );
    d.list(
        &key("third_party_labels"),
        &a.third_party_labels,
        &b.third_party_labels,
        Direction::Narrows,
        "parts the tool declares third-party now carry",
        "parts the tool declares third-party no longer carry",
    );
    if a.labels_flow != b.labels_flow {
        if b.labels_flow {
            d.push(
                Direction::Narrows,
                key("labels_flow"),
                "labels now flow through it (its results carry its arguments' labels)",
            );
        } else {
            d.push(
                Direction::Widens,
                key("labels_flow"),
                "labels no longer flow through it: what it is given and what it stores can come back unlabeled",
            );
        }
    }
    if a.instance != b.instance {
        if b.instance == crate::policy::Instance::PerCall {
            d.push(
                Direction::Narrows,
                key("instance"),
                "now a fresh instance for every call",
            );
        } else {
            d.push(
                Direction::Widens,
                key("instance"),
                "now one instance kept for the run: calls share its state",
            );
        }
    }
    args(d, name, &a.args, &b.args);
    grants(d, &format!("tools.{name}"), &a.grants, &b.grants);
}

fn args(d: &mut Diff, name: &str, a: &[ArgRule], b: &[ArgRule]) {
    let by_field = |rules: &[ArgRule]| -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in rules {
            out.entry(rule.path.text.clone())
                .or_default()
                .push(describe_rule(rule));
        }
        out
    };
    let bound = |rules: &[ArgRule], field: &str, max: bool| -> Option<String> {
        rules
            .iter()
            .filter(|r| r.path.text == field)
            .flat_map(|r| r.checks.iter())
            .find_map(|c| match c {
                Check::Max(n) if max => Some(n.to_string()),
                Check::Min(n) if !max => Some(n.to_string()),
                _ => None,
            })
    };
    let (fa, fb) = (by_field(a), by_field(b));
    let fields: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    for field in fields {
        let key = format!("tools.{name}.args.{field}");
        let empty = Vec::new();
        let (ra, rb) = (
            fa.get(field).unwrap_or(&empty),
            fb.get(field).unwrap_or(&empty),
        );
        // A changed bound reads as one change, not a rule dropped and another added.
        let mut skip: BTreeSet<String> = BTreeSet::new();
        for max in [true, false] {
            if let (Some(x), Some(y)) = (bound(a, field, max), bound(b, field, max))
                && x != y
            {
                let (xn, yn) = (
                    x.parse::<f64>().unwrap_or(0.0),
                    y.parse::<f64>().unwrap_or(0.0),
                );
                let wider = if max { yn > xn } else { yn < xn };
                let (word, kind) = match (max, wider) {
                    (true, true) => ("raised", "upper bound"),
                    (true, false) => ("lowered", "upper bound"),
                    (false, true) => ("lowered", "lower bound"),
                    (false, false) => ("raised", "lower bound"),
                };
                d.push(
                    if wider {
                        Direction::Widens
                    } else {
                        Direction::Narrows
                    },
                    &key,
                    format!("`{field}` {kind} {word} from {x} to {y}"),
                );
                skip.insert(format!("{}{x}", if max { "max " } else { "min " }));
                skip.insert(format!("{}{y}", if max { "max " } else { "min " }));
            }
        }
        let touched = |r: &String| skip.iter().any(|s| r.contains(s.as_str()));
        for rule in rb.iter().filter(|r| !ra.contains(r) && !touched(r)) {
            d.push(
                Direction::Narrows,
                &key,
                format!("`{field}` now must be {rule}"),
            );
        }
        for rule in ra.iter().filter(|r| !rb.contains(r) && !touched(r)) {
            d.push(
                Direction::Widens,
                &key,
                format!("`{field}` no longer must be {rule}"),
            );
        }
    }
}

/// A rule in words: `max 100, from [task] (else ask)`.
fn describe_rule(rule: &ArgRule) -> String {
    let mut parts: Vec<String> = rule.checks.iter().map(describe).collect();
    if rule.required {
        parts.push("present".into());
    }
    let mut text = parts.join(", ");
    if rule.decision == Verdict::Ask {
        text.push_str(" (else ask)");
    }
    text
}

fn describe(check: &Check) -> String {
    match check {
        Check::Equals(v) => format!("equal to {v}"),
        Check::OneOf(vs) => format!("one of {}", serde_json::Value::Array(vs.clone())),
        Check::Matches(_, text) => format!("matching '{text}'"),
        Check::Glob(_, text) => format!("matching the glob '{text}'"),
        Check::Prefix(p) => format!("starting with {p:?}"),
        Check::Min(n) => format!("min {n}"),
        Check::Max(n) => format!("max {n}"),
        Check::MaxLen(n) => format!("at most {n} long"),
        Check::Schema(_) => "valid against its JSON Schema".into(),
        Check::From(_, texts) => format!("from [{}]", texts.join(", ")),
        Check::NotMatches(_, text) => format!("not matching '{text}'"),
        Check::NotContains(_, texts) => format!("containing none of {texts:?}"),
        Check::SameAs(p) => format!("the same as `{p}`"),
        Check::DiffersFrom(p) => format!("different from `{p}`"),
        Check::AnyOf(alternatives) => format!(
            "any of ({})",
            alternatives
                .iter()
                .map(|checks| checks.iter().map(describe).collect::<Vec<_>>().join(", "))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        Check::MaxTotal(n, count) => format!("at most {n} in total a run (count `{count}`)"),
        Check::MaxDistinct(n, count) => {
            format!("at most {n} distinct values a run (count `{count}`)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse("test.toml", text).unwrap_or_else(|e| panic!("{}", e.render()))
    }

    const OLD: &str = r#"
[tools.fetch]
component = "builtin:text"
http = { allow = ["https://docs.example.com/**"] }
labels = ["untrusted"]

[tools.pay]
component = "builtin:text"
args.amount = { max = 100 }

[tools.calc]
component = "builtin:calc"
"#;

    const NEW: &str = r#"
[tools.calc]
component = "builtin:calc"
decision = "deny"

[tools.pay]
component = "builtin:text"
args.amount = { max = 500 }
args.to = { from = ["task"] }

[tools.fetch]
component = "builtin:text"
http = { allow = ["https://docs.example.com/**", "https://api.example.com/**"] }
labels = ["untrusted"]

[tools.send_email]
component = "builtin:text"
args.to = { from = ["task"] }
"#;

    /// Each key that changes what a run may do is compared: a diff that
    /// says "the same" for these would hide a widening from a reviewer.
    #[test]
    fn plans_effects_label_paths_and_flows_are_compared() {
        let old = policy(
            r#"
[plan]
required = true
[tools.read]
component = "r.wasm"
effects = "none"
labels = { "/*/subject" = ["untrusted"] }
third_party_labels = ["untrusted"]
"#,
        );
        let new = policy(
            r#"
[tools.read]
component = "r.wasm"
labels_flow = false
"#,
        );
        let out: Vec<(Direction, String)> = diff(&old, &new)
            .into_iter()
            .map(|d| (d.direction, d.key))
            .collect();
        for key in [
            "plan.required",
            "tools.read.effects",
            "tools.read.labels",
            "tools.read.third_party_labels",
            "tools.read.labels_flow",
        ] {
            assert!(
                out.contains(&(Direction::Widens, key.to_string())),
                "{key}: {out:?}"
            );
        }
        assert!(
            diff(&new, &old)
                .iter()
                .all(|d| d.direction != Direction::Widens)
        );
    }

    #[test]
    fn differences_read_in_plain_words_each_way() {
        let out = diff(&policy(OLD), &policy(NEW));
        let lines: Vec<String> = out
            .iter()
            .map(|d| format!("{:?} {}: {}", d.direction, d.key, d.text))
            .collect();
        assert_eq!(
            lines,
            [
                "Widens tools.fetch.http: http now allows https://api.example.com/**",
                "Widens tools.pay.args.amount: `amount` upper bound raised from 100 to 500",
                "Widens tools.send_email: added tool send_email",
                "Narrows tools.calc: removed tool calc",
                "Narrows tools.pay.args.to: `to` now must be from [task]",
            ],
            "{lines:#?}"
        );
        // The other way round, each difference turns.
        let back = diff(&policy(NEW), &policy(OLD));
        assert_eq!(back.len(), out.len());
        assert!(back.iter().any(|d| d.direction == Direction::Narrows
            && d.text == "`amount` upper bound lowered from 500 to 100"));
        // Same meaning, other order: no difference.
        assert!(diff(&policy(NEW), &policy(NEW)).is_empty());
    }
}
