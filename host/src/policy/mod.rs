//! The policy: what an agent and each tool may do, and the pure function
//! that decides every request against it.
//!
//! This module owns the policy file's language and the decisions. It must
//! stay pure: no I/O, no clocks, no wasmtime or tokio types. The host reads
//! the file and hands over its text; the gate hands over a [`Request`] and
//! the [`Session`] counters and gets a [`Decision`] back. Everything that is
//! not granted is denied.

mod file;
mod units;

pub use crate::diagnostic::{Diagnostic, Severity, SourceError};
pub use file::MAX_MEMORY;
pub use units::{ByteSize, HumanDuration};

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// A validated policy file.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Limits on every guest instance.
    pub limits: Limits,
    /// What the agent may ask of the model.
    pub model: ModelPolicy,
    /// Tool entries by name. A tool with no entry is denied.
    pub tools: BTreeMap<String, ToolPolicy>,
    /// Findings that did not stop the file from loading.
    pub warnings: Vec<Diagnostic>,
    default_rule: Rule,
    output_rule: Rule,
}

/// `[limits]`: bounds on each guest instance (the agent's, and each tool
/// call's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most linear memory one instance may grow to, in bytes.
    pub memory: u64,
    /// Most time one instance may spend executing guest code (time spent
    /// waiting on the host, such as for the model, does not count).
    pub cpu: Duration,
    /// Most wall-clock time: for the agent, the whole run; for a tool, each
    /// call.
    pub wall: Duration,
    /// Largest result one guest may return (the agent's answer, a tool's
    /// result), and most bytes of log lines in one run.
    pub output: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 128 << 20,
            cpu: Duration::from_secs(10),
            wall: Duration::from_secs(120),
            output: 1 << 20,
        }
    }
}

/// `[model]`: which models the agent may call, and how often.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    /// Model names the agent may use; empty means no model calls at all.
    pub allow: Vec<String>,
    /// Most model calls in a run.
    pub max_calls: Option<u32>,
    allow_rule: Rule,
    max_calls_rule: Rule,
}

/// `[tools.NAME]`: one tool the agent may (or may not) call.
#[derive(Debug, Clone)]
pub struct ToolPolicy {
    /// The tool's name, as its component describes it.
    pub name: String,
    /// The component that provides the tool.
    pub component: Option<ComponentRef>,
    /// Whether calls are allowed at all.
    pub decision: ToolDecision,
    /// Most calls in a run.
    pub max_calls: Option<u32>,
    /// Where the entry's name is in the policy file.
    pub span: Range<usize>,
    rule: Rule,
    max_calls_rule: Rule,
}

/// Where a tool's component comes from, as written in the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef {
    /// `builtin:NAME`, or a path relative to the policy file.
    pub text: String,
    /// Where it is in the policy file.
    pub span: Range<usize>,
}

/// `decision` in a tool entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolDecision {
    /// Calls go through, within the entry's other rules.
    Allow,
    /// Every call is refused; the tool is not offered to the agent.
    Deny,
}

/// The name of the policy entry that made a decision, e.g. `tools.calc` or
/// `model.max_calls`; `default` when nothing granted the request. Cheap to
/// clone: decisions copy it into audit records.
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
    /// A model call for the model named `model`.
    Model {
        /// The model that would answer.
        model: &'a str,
    },
    /// A tool call.
    Tool {
        /// The tool's name as the guest gave it.
        name: &'a str,
        /// The parsed arguments.
        arguments: &'a serde_json::Value,
    },
    /// A log line of `bytes` bytes.
    Log {
        /// The line's length.
        bytes: u64,
    },
}

/// What a run has used so far: the state decisions depend on. Only the
/// host changes it, through [`Session::record`].
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Allowed model calls so far.
    pub model_calls: u32,
    /// Allowed calls so far, per tool.
    pub tool_calls: HashMap<String, u32>,
    /// Bytes of log lines accepted so far.
    pub log_bytes: u64,
}

impl Session {
    /// Count an allowed request against the run's budgets.
    pub fn record(&mut self, request: &Request<'_>) {
        match request {
            Request::Model { .. } => self.model_calls += 1,
            Request::Tool { name, .. } => match self.tool_calls.get_mut(*name) {
                Some(calls) => *calls += 1,
                None => {
                    self.tool_calls.insert((*name).to_string(), 1);
                }
            },
            Request::Log { bytes } => self.log_bytes += bytes,
        }
    }
}

/// The three answers a policy can give. `Ask` (a human decides) is part of
/// the audit vocabulary; this policy language does not produce it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refused.
    Deny,
    /// A human must approve.
    Ask,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Ask => "ask",
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// Nothing grants it, or an entry forbids it.
    Policy,
    /// It is granted, but a budget is spent.
    Budget,
}

/// The policy's answer to one request, naming the rule that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow {
        /// The entry that granted it.
        rule: Rule,
    },
    /// Refused.
    Deny {
        /// The entry that refused it.
        rule: Rule,
        /// Why, in words fit for the agent (never how to get more).
        reason: String,
        /// A policy refusal or a spent budget.
        kind: DenyKind,
    },
}

impl Decision {
    /// Allow, deny or ask.
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::Allow { .. } => Verdict::Allow,
            Decision::Deny { .. } => Verdict::Deny,
        }
    }

    /// The entry that decided.
    pub fn rule(&self) -> &Rule {
        match self {
            Decision::Allow { rule } | Decision::Deny { rule, .. } => rule,
        }
    }
}

impl Policy {
    /// Parse and validate a policy file. `file` names it in diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<Policy, SourceError> {
        file::parse(file, text)
    }

    /// The tools the agent is offered: every entry whose decision is allow.
    pub fn granted_tools(&self) -> impl Iterator<Item = &ToolPolicy> {
        self.tools
            .values()
            .filter(|t| t.decision == ToolDecision::Allow)
    }

    /// Decide `request` given what the run has used so far. Pure and cheap:
    /// no I/O, and no allocation unless the answer is a refusal.
    pub fn decide(&self, request: &Request<'_>, session: &Session) -> Decision {
        match *request {
            Request::Model { model } => self.decide_model(model, session),
            Request::Tool { name, .. } => self.decide_tool(name, session),
            Request::Log { bytes } => {
                if session.log_bytes.saturating_add(bytes) > self.limits.output {
                    Decision::Deny {
                        rule: self.output_rule.clone(),
                        reason: format!(
                            "the run's log budget of {} is spent",
                            ByteSize(self.limits.output)
                        ),
                        kind: DenyKind::Budget,
                    }
                } else {
                    Decision::Allow {
                        rule: self.output_rule.clone(),
                    }
                }
            }
        }
    }

    fn decide_model(&self, model: &str, session: &Session) -> Decision {
        let policy = &self.model;
        if !policy.allow.iter().any(|allowed| allowed == model) {
            let reason = if policy.allow.is_empty() {
                "no model is granted to this agent".to_string()
            } else {
                format!("model `{model}` is not allowed")
            };
            return Decision::Deny {
                rule: policy.allow_rule.clone(),
                reason,
                kind: DenyKind::Policy,
            };
        }
        if let Some(max) = policy.max_calls
            && session.model_calls >= max
        {
            return Decision::Deny {
                rule: policy.max_calls_rule.clone(),
                reason: format!("all {max} model calls of this run are used"),
                kind: DenyKind::Budget,
            };
        }
        Decision::Allow {
            rule: policy.allow_rule.clone(),
        }
    }

    fn decide_tool(&self, name: &str, session: &Session) -> Decision {
        let Some(tool) = self.tools.get(name) else {
            return Decision::Deny {
                rule: self.default_rule.clone(),
                reason: format!("tool `{}` is not granted", printable(name)),
                kind: DenyKind::Policy,
            };
        };
        if tool.decision == ToolDecision::Deny {
            return Decision::Deny {
                rule: tool.rule.clone(),
                reason: format!("tool `{name}` is denied"),
                kind: DenyKind::Policy,
            };
        }
        if let Some(max) = tool.max_calls {
            let calls = session.tool_calls.get(name).copied().unwrap_or(0);
            if calls >= max {
                return Decision::Deny {
                    rule: tool.max_calls_rule.clone(),
                    reason: format!("all {max} calls of tool `{name}` in this run are used"),
                    kind: DenyKind::Budget,
                };
            }
        }
        Decision::Allow {
            rule: tool.rule.clone(),
        }
    }
}

/// Guest-chosen text quoted back in a reason: bounded, one line.
pub fn printable(text: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = text
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if text.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(text: &str) -> Policy {
        Policy::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        Policy::parse("test.toml", text).unwrap_err().render()
    }

    const DEMO: &str = r#"
[limits]
memory = "64MiB"
cpu = "5s"
wall = "30s"

[model]
allow = ["scripted"]
max_calls = 2

[tools.calc]
component = "builtin:calc"
max_calls = 1

[tools.regex_search]
component = "builtin:text"
decision = "deny"
"#;

    #[test]
    fn deny_by_default() {
        let p = policy("");
        let args = json!({});
        let d = p.decide(
            &Request::Tool {
                name: "calc",
                arguments: &args,
            },
            &Session::default(),
        );
        assert_eq!(d.verdict(), Verdict::Deny);
        assert_eq!(d.rule().as_str(), "default");
        let d = p.decide(&Request::Model { model: "scripted" }, &Session::default());
        assert_eq!(d.verdict(), Verdict::Deny);
        assert_eq!(d.rule().as_str(), "model.allow");
        assert_eq!(p.limits, Limits::default());
    }

    #[test]
    fn tools_allow_deny_and_budget() {
        let p = policy(DEMO);
        let args = json!({"expression": "1+1"});
        let mut session = Session::default();
        let call = Request::Tool {
            name: "calc",
            arguments: &args,
        };
        assert_eq!(
            p.decide(&call, &session),
            Decision::Allow {
                rule: Rule::new("tools.calc")
            }
        );
        session.record(&call);
        match p.decide(&call, &session) {
            Decision::Deny { rule, kind, reason } => {
                assert_eq!(rule.as_str(), "tools.calc.max_calls");
                assert_eq!(kind, DenyKind::Budget);
                assert_eq!(reason, "all 1 calls of tool `calc` in this run are used");
            }
            other => panic!("{other:?}"),
        }
        let denied = Request::Tool {
            name: "regex_search",
            arguments: &args,
        };
        let d = p.decide(&denied, &session);
        assert_eq!(
            (d.verdict(), d.rule().as_str()),
            (Verdict::Deny, "tools.regex_search")
        );
        assert_eq!(
            p.granted_tools()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["calc"]
        );
    }

    #[test]
    fn model_names_and_budget() {
        let p = policy(DEMO);
        let mut session = Session::default();
        let ok = Request::Model { model: "scripted" };
        assert_eq!(p.decide(&ok, &session).verdict(), Verdict::Allow);
        let other = p.decide(&Request::Model { model: "gpt-4o" }, &session);
        assert_eq!(other.rule().as_str(), "model.allow");
        session.record(&ok);
        session.record(&ok);
        let d = p.decide(&ok, &session);
        assert_eq!(d.rule().as_str(), "model.max_calls");
        assert!(matches!(
            d,
            Decision::Deny {
                kind: DenyKind::Budget,
                ..
            }
        ));
    }

    #[test]
    fn log_budget_is_the_output_limit() {
        let p = policy("[limits]\noutput = \"1KiB\"\n");
        let mut session = Session::default();
        assert_eq!(
            p.decide(&Request::Log { bytes: 1000 }, &session).verdict(),
            Verdict::Allow
        );
        session.record(&Request::Log { bytes: 1000 });
        assert_eq!(
            p.decide(&Request::Log { bytes: 100 }, &session).verdict(),
            Verdict::Deny
        );
    }

    #[test]
    fn forged_names_are_quoted_safely() {
        let p = policy("");
        let name = format!("evil\n{}", "x".repeat(500));
        let args = json!({});
        match p.decide(
            &Request::Tool {
                name: &name,
                arguments: &args,
            },
            &Session::default(),
        ) {
            Decision::Deny { reason, .. } => {
                assert!(!reason.contains('\n'));
                assert!(reason.len() < 120, "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_keys_point_at_the_key() {
        let out = error("[model]\nallow = []\nmax_cals = 3\n");
        assert!(out.contains("unknown field `max_cals`"), "{out}");
        assert!(out.contains("--> test.toml:3:1"), "{out}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let out = error("[limits]\nmemory = \"64 Mbit\"\n");
        assert!(out.contains("unknown unit `Mbit`"), "{out}");
        assert!(out.contains("--> test.toml:2:10"), "{out}");
        let out = error("[limits]\ncpu = 5\n");
        assert!(out.contains("ambiguous as a duration"), "{out}");
        let out = error("[tools.calc]\ncomponent = \"x.wasm\"\ndecision = \"maybe\"\n");
        assert!(out.contains("unknown variant `maybe`"), "{out}");
        assert!(out.contains("--> test.toml:3:12"), "{out}");
        let out = error("[tools.calc]\nmax_calls = -1\ncomponent = \"x\"\n");
        assert!(out.contains("--> test.toml:2:13"), "{out}");
    }

    #[test]
    fn semantic_errors() {
        let out = error("[tools.calc]\nmax_calls = 3\n");
        assert!(
            out.contains("tool `calc` is granted but has no `component`"),
            "{out}"
        );
        let out = error("[tools.\"rm -rf\"]\ncomponent = \"x.wasm\"\n");
        assert!(out.contains("`rm -rf` is not a valid tool name"), "{out}");
        assert!(out.contains("--> test.toml:1:8"), "{out}");
        let out = error("[limits]\nmemory = \"8GiB\"\n");
        assert!(out.contains("the most a guest can use is 4GiB"), "{out}");
        let out = error("[limits]\nwall = \"0s\"\n");
        assert!(out.contains("`wall` is zero"), "{out}");
    }

    #[test]
    fn warnings_do_not_stop_loading() {
        let p = policy(
            "[limits]\ncpu = \"1m\"\nwall = \"10s\"\n[tools.calc]\ncomponent = \"x\"\nmax_calls = 0\n",
        );
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings.iter().all(|w| w.severity == Severity::Warning));
    }
}
