//! Plan before taint: the agent says which tools with effects (sinks) it
//! will use while its context holds only the task, before it has read
//! anything labeled; once the session is labeled, a sink outside that plan
//! is refused, so text injected into a labeled result cannot add a sink.
//!
//! Pure, like the rest of the policy: decisions on [`Request::Plan`] and
//! the refusal of a tool call outside the plan. What a plan does not stop
//! (a planned sink called with injected values) is for argument rules.
//!
//! [`Request::Plan`]: super::Request::Plan

use super::compile::is_tool_name;
use super::{Decision, DenyKind, Effects, Policy, Rule, Session, ToolPolicy, Verdict, printable};

/// Most names a plan may list (a plan names tools of the policy, so a
/// longer one is not a plan).
pub const MAX_PLAN_TOOLS: usize = 128;

/// `[plan]`, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanPolicy {
    /// The agent must declare a plan before the session's first label.
    pub required: bool,
}

impl ToolPolicy {
    /// Whether calling the tool can change things: every tool but one
    /// whose entry says `effects = "none"`. Only these are sinks a plan
    /// restricts.
    pub fn has_effects(&self) -> bool {
        self.effects != Some(Effects::None)
    }
}

/// A plan as the session keeps it: sorted, without duplicates.
pub fn normalized(tools: &[String]) -> Vec<String> {
    let mut plan = tools.to_vec();
    plan.sort();
    plan.dedup();
    plan
}

fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "no tools".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{}`", printable(n)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Policy {
    /// The decision on a declared plan. A plan is accepted once, and only
    /// while the session carries no label: after that, text the agent read
    /// could have written it.
    pub(super) fn decide_plan(&self, tools: &[String], session: &Session) -> Decision {
        let rule = Rule::new("plan");
        let deny = |reason: String, kind: DenyKind| Decision::Deny {
            rule: rule.clone(),
            reason,
            kind,
        };
        if let Some(plan) = &session.plan {
            return deny(
                format!(
                    "a plan is declared once, and this run's plan is declared already ({})",
                    listed(plan)
                ),
                DenyKind::Policy,
            );
        }
        if let Some(label) = session.labels.first() {
            return deny(
                format!(
                    "the session is labeled `{label}` already: a plan must be declared before the agent reads anything labeled"
                ),
                DenyKind::Policy,
            );
        }
        if tools.len() > MAX_PLAN_TOOLS {
            return deny(
                format!(
                    "a plan lists at most {MAX_PLAN_TOOLS} tools, and this one lists {}",
                    tools.len()
                ),
                DenyKind::Invalid,
            );
        }
        for name in tools {
            let granted = self
                .tools
                .get(name)
                .is_some_and(|t| t.decision != Verdict::Deny);
            if !is_tool_name(name) || !granted {
                return deny(
                    format!(
                        "the plan names `{}`, which is not a tool granted to this agent (see `tools.list-tools`)",
                        printable(name)
                    ),
                    DenyKind::Invalid,
                );
            }
        }
        Decision::Allow { rule }
    }

    /// The refusal of a call of `tool` that the plan does not cover: the
    /// session is labeled, the tool has effects, and it is not in the
    /// declared plan (or none was declared where `[plan] required` says
    /// one must be).
    pub(super) fn outside_plan(&self, tool: &ToolPolicy, session: &Session) -> Option<Decision> {
        let label = session.labels.first()?;
        if !tool.has_effects() {
            return None;
        }
        let name = printable(&tool.name);
        match &session.plan {
            Some(plan) if plan.binary_search(&tool.name).is_ok() => None,
            Some(plan) => Some(Decision::Deny {
                rule: Rule::new("plan"),
                reason: format!(
                    "tool `{name}` is not in the plan declared before the session was labeled `{label}` (the plan: {}); a tool with effects outside the plan may not run once the session is labeled",
                    listed(plan)
                ),
                kind: DenyKind::Policy,
            }),
            None if self.plan.required => Some(Decision::Deny {
                rule: Rule::new("plan.required"),
                reason: format!(
                    "the policy requires a plan of the tools with effects before the session is labeled, and none was declared; the session is labeled `{label}`, so tool `{name}` may not run"
                ),
                kind: DenyKind::Policy,
            }),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Request;
    use super::*;
    use serde_json::json;

    const POLICY: &str = r#"
[plan]
required = true

[model]
allow = ["scripted"]
max_calls = 10

[tools.read_inbox]
component = "builtin:text"
effects = "none"
labels = ["untrusted"]

[tools.send_email]
component = "builtin:text"

[tools.pay]
component = "builtin:text"
decision = "ask"

[tools.shell]
component = "builtin:text"
decision = "deny"
"#;

    fn policy(text: &str) -> Policy {
        Policy::parse("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Declare `plan` in `session` as the gate does: decide, then record.
    fn declare(p: &Policy, session: &mut Session, plan: &[&str]) -> Decision {
        let tools = names(plan);
        let request = Request::Plan { tools: &tools };
        let decision = p.decide(&request, session);
        if let Decision::Allow { .. } = decision {
            session.record(p, &request);
        }
        decision
    }

    fn call(p: &Policy, session: &Session, name: &str) -> Decision {
        let args = json!({});
        p.decide(
            &Request::Tool {
                name,
                arguments: &args,
                schema: None,
            },
            session,
        )
    }

    fn labeled(session: &mut Session) {
        session.add_labels(&["untrusted".to_string()]);
    }

    fn reason(d: &Decision) -> &str {
        match d {
            Decision::Deny { reason, .. } | Decision::Ask { reason, .. } => reason,
            Decision::Allow { .. } => "",
        }
    }

    #[test]
    fn a_plan_is_accepted_once_and_only_before_the_first_label() {
        let p = policy(POLICY);
        let mut session = Session::default();
        let d = declare(&p, &mut session, &["send_email", "send_email"]);
        assert_eq!(d.verdict(), Verdict::Allow, "{d:?}");
        assert_eq!(session.plan, Some(names(&["send_email"])));

        // Not again, not even narrower: one plan, one record to trust.
        let d = declare(&p, &mut session, &[]);
        assert_eq!((d.verdict(), d.rule().as_str()), (Verdict::Deny, "plan"));
        assert!(reason(&d).contains("declared once"), "{}", reason(&d));
        assert_eq!(session.plan, Some(names(&["send_email"])));

        let mut late = Session::default();
        labeled(&mut late);
        let d = declare(&p, &mut late, &["send_email"]);
        assert!(
            matches!(&d, Decision::Deny { kind: DenyKind::Policy, reason, .. }
                if reason.contains("labeled `untrusted` already")),
            "{d:?}"
        );
        assert_eq!(late.plan, None);
    }

    #[test]
    fn a_plan_naming_what_is_not_granted_is_invalid() {
        let p = policy(POLICY);
        for bad in ["nope", "shell", "", "send email", &"x".repeat(65)] {
            let mut session = Session::default();
            let d = declare(&p, &mut session, &["send_email", bad]);
            assert!(
                matches!(&d, Decision::Deny { kind: DenyKind::Invalid, reason, .. }
                    if reason.contains("not a tool granted")),
                "{bad}: {d:?}"
            );
            assert_eq!(session.plan, None, "{bad}");
        }
        let many: Vec<&str> = std::iter::repeat_n("send_email", MAX_PLAN_TOOLS + 1).collect();
        let d = declare(&p, &mut Session::default(), &many);
        assert!(
            matches!(&d, Decision::Deny { kind: DenyKind::Invalid, reason, .. }
                if reason.contains("at most 128")),
            "{d:?}"
        );
        // The longest plan allowed is fine.
        let most: Vec<&str> = std::iter::repeat_n("pay", MAX_PLAN_TOOLS).collect();
        assert_eq!(
            declare(&p, &mut Session::default(), &most).verdict(),
            Verdict::Allow
        );
    }

    #[test]
    fn once_labeled_a_sink_outside_the_plan_is_refused_and_one_in_it_is_not() {
        let p = policy(POLICY);
        let mut session = Session::default();
        declare(&p, &mut session, &["pay"]);
        // Before any label the plan restricts nothing.
        assert_eq!(call(&p, &session, "send_email").verdict(), Verdict::Allow);
        labeled(&mut session);
        let d = call(&p, &session, "send_email");
        assert_eq!((d.verdict(), d.rule().as_str()), (Verdict::Deny, "plan"));
        assert!(
            reason(&d).contains("not in the plan") && reason(&d).contains("`pay`"),
            "{}",
            reason(&d)
        );
        // A planned sink is decided by its own rules (here: a person asks).
        assert_eq!(call(&p, &session, "pay").rule().as_str(), "tools.pay");
        assert_eq!(call(&p, &session, "pay").verdict(), Verdict::Ask);
        // Read-only tools are not sinks.
        assert_eq!(call(&p, &session, "read_inbox").verdict(), Verdict::Allow);
        // A tool the policy denies stays denied by its own entry.
        assert_eq!(call(&p, &session, "shell").rule().as_str(), "tools.shell");
    }

    #[test]
    fn with_a_plan_required_and_none_declared_every_sink_is_refused_once_labeled() {
        let p = policy(POLICY);
        let mut session = Session::default();
        assert_eq!(call(&p, &session, "send_email").verdict(), Verdict::Allow);
        labeled(&mut session);
        for sink in ["send_email", "pay"] {
            let d = call(&p, &session, sink);
            assert_eq!(
                (d.verdict(), d.rule().as_str()),
                (Verdict::Deny, "plan.required"),
                "{sink}"
            );
            assert!(reason(&d).contains("none was declared"), "{}", reason(&d));
        }
        assert_eq!(call(&p, &session, "read_inbox").verdict(), Verdict::Allow);
        // An empty plan is a plan: it says "no sinks".
        let mut empty = Session::default();
        declare(&p, &mut empty, &[]);
        labeled(&mut empty);
        assert_eq!(call(&p, &empty, "pay").rule().as_str(), "plan");
    }

    #[test]
    fn a_plan_the_policy_does_not_require_still_binds() {
        let p = policy(&POLICY.replace("required = true", "required = false"));
        let mut session = Session::default();
        labeled(&mut session);
        // No plan, none required: the sinks are decided as without plans.
        assert_eq!(call(&p, &session, "send_email").verdict(), Verdict::Allow);
        let mut session = Session::default();
        declare(&p, &mut session, &["pay"]);
        labeled(&mut session);
        assert_eq!(call(&p, &session, "send_email").rule().as_str(), "plan");
    }

    #[test]
    fn plan_required_must_be_a_bool_and_includes_may_not_turn_it_off() {
        let e = Policy::parse("test.toml", "[plan]\nrequired = \"yes\"\n")
            .unwrap_err()
            .render();
        assert!(
            e.contains("invalid type") && e.contains("test.toml:2"),
            "{e}"
        );
        let e = Policy::parse("test.toml", "[plan]\nrequire = true\n")
            .unwrap_err()
            .render();
        assert!(e.contains("unknown field `require`"), "{e}");

        let base = ("base.toml", "[plan]\nrequired = true\n");
        let load = |over: &str| {
            let root = super::super::SourceFile {
                name: "over.toml".into(),
                text: over.into(),
            };
            Policy::load(root, &mut |_, _| {
                Ok(super::super::SourceFile {
                    name: base.0.into(),
                    text: base.1.into(),
                })
            })
            .map(|(p, _)| p)
            .map_err(|e| e.render())
        };
        let e = load("include = [\"base.toml\"]\n[plan]\nrequired = false\n")
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("`plan.required` would widen") && e.contains("over.toml:3"),
            "{e}"
        );
        let widened = load(
            "include = [\"base.toml\"]\nwiden = [\"plan.required\"]\n[plan]\nrequired = false\n",
        );
        assert!(widened.is_ok_and(|p| !p.plan.required));
        // Unsaid, the include's requirement holds.
        assert!(load("include = [\"base.toml\"]\n[plan]\n").is_ok_and(|p| p.plan.required));
        assert!(load("include = [\"base.toml\"]\n").is_ok_and(|p| p.plan.required));
    }

    #[test]
    fn a_plan_required_beside_model_labels_is_a_warning() {
        let p = policy(&POLICY.replace(
            "max_calls = 10",
            "max_calls = 10\nlabels = [\"model-said\"]",
        ));
        assert!(
            p.warnings
                .iter()
                .any(|w| w.message.contains("no plan can be declared after")),
            "{:?}",
            p.warnings
        );
        assert!(
            !policy(POLICY)
                .warnings
                .iter()
                .any(|w| w.message.contains("no plan can be declared after"))
        );
    }
}
