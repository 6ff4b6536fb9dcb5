//! The react agent against the scripted model: allowed calls, refusals the
//! agent reads and works around, budgets.

use crate::harness::*;
use serde_json::json;
use warden::audit::{Outcome, Record};
use warden::chat::Role;
use warden::policy::Verdict;
use warden::run::RunFailure;

const CALC_POLICY: &str = r#"
[model]
allow = ["scripted"]
max_calls = 5

[tools.calc]
component = "builtin:calc"
"#;

fn tool_outcome<'a>(ran: &'a Ran, name: &str) -> &'a Record {
    ran.find("tool", "outcome")
        .into_iter()
        .find(|r| r.subject == name)
        .unwrap_or_else(|| panic!("no outcome for {name}"))
}

#[tokio::test]
async fn an_allowed_tool_call_runs_and_its_result_reaches_the_model() {
    let model = Recording::new(
        r#"
[[turn]]
calls = [{ tool = "calc", arguments = { expression = "6 * 7" } }]
[[turn]]
text = "6 * 7 is 42."
"#,
    );
    let ran = run_agent(
        "builtin:react",
        CALC_POLICY,
        model.clone(),
        "What is 6 * 7?",
    )
    .await;
    assert_eq!(ran.answer(), "6 * 7 is 42.");

    let decision = &ran.find("tool", "decision")[0];
    assert_eq!(
        (decision.decision, decision.rule.as_str()),
        (Verdict::Allow, "tools.calc")
    );
    assert_eq!(
        decision.data.as_ref().unwrap()["arguments"],
        json!({"expression": "6 * 7"})
    );
    let outcome = tool_outcome(&ran, "calc");
    assert_eq!(outcome.outcome, Some(Outcome::Ok));
    assert_eq!(outcome.data.as_ref().unwrap()["result"], "42");
    assert!(decision.seq < outcome.seq);

    // The agent offered the granted tool to the model and fed the result back.
    let requests = model.requests.lock().unwrap();
    assert_eq!(requests[0].tools.len(), 1);
    assert_eq!(requests[0].tools[0].name, "calc");
    assert_eq!(
        requests[0].tools[0].parameters["required"],
        json!(["expression"])
    );
    let last = requests[1].messages.last().unwrap();
    assert_eq!((last.role, last.content.as_str()), (Role::Tool, "42"));
    assert_eq!(last.tool_call_id.as_deref(), Some("call_1_1"));
    assert_eq!(ran.report.session.tool_calls["calc"], 1);
}

#[tokio::test]
async fn an_ungranted_tool_is_denied_and_the_agent_carries_on() {
    let model = Recording::new(
        r#"
[[turn]]
calls = [{ tool = "shell", arguments = { command = "rm -rf /" } }]
[[turn]]
text = "I could not use a shell."
"#,
    );
    let ran = run_agent("builtin:react", CALC_POLICY, model.clone(), "Clean up.").await;
    assert_eq!(ran.answer(), "I could not use a shell.");
    let decision = &ran.find("tool", "decision")[0];
    assert_eq!(
        (
            decision.subject.as_str(),
            decision.decision,
            decision.rule.as_str()
        ),
        ("shell", Verdict::Deny, "default")
    );
    assert_eq!(tool_outcome(&ran, "shell").outcome, Some(Outcome::Denied));
    // The refusal reached the model as text it can read.
    let requests = model.requests.lock().unwrap();
    let last = requests[1].messages.last().unwrap();
    assert_eq!(
        last.content,
        "error: denied by policy: tool `shell` is not granted (rule: default)"
    );
    assert!(!ran.report.session.tool_calls.contains_key("shell"));
}

#[tokio::test]
async fn a_tool_denied_by_its_entry_is_not_offered_and_not_run() {
    let policy = r#"
[model]
allow = ["scripted"]
[tools.word_count]
component = "builtin:text"
[tools.regex_search]
component = "builtin:text"
decision = "deny"
"#;
    let model = Recording::new(
        r#"
[[turn]]
calls = [{ tool = "regex_search", arguments = { text = "a", pattern = "a" } }]
[[turn]]
text = "done"
"#,
    );
    let ran = run_agent("builtin:react", policy, model.clone(), "search").await;
    assert_eq!(ran.answer(), "done");
    let offered: Vec<_> = model.requests.lock().unwrap()[0]
        .tools
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(offered, ["word_count"]);
    let decision = &ran.find("tool", "decision")[0];
    assert_eq!(
        (decision.decision, decision.rule.as_str()),
        (Verdict::Deny, "tools.regex_search")
    );
}

#[tokio::test]
async fn the_model_call_budget_ends_the_run_cleanly() {
    let policy = r#"
[model]
allow = ["scripted"]
max_calls = 2
[tools.calc]
component = "builtin:calc"
"#;
    let turn = "[[turn]]\ncalls = [{ tool = \"calc\", arguments = { expression = \"1 + 1\" } }]\n";
    let model = Recording::new(&turn.repeat(5));
    let ran = run_agent("builtin:react", policy, model.clone(), "loop").await;
    match &ran.report.result {
        Err(RunFailure::Agent(error)) => {
            assert!(
                error.starts_with("stopped after 2 model turn(s): the model budget is spent"),
                "{error}"
            );
            assert!(error.contains("rule: model.max_calls"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        model.requests.lock().unwrap().len(),
        2,
        "the third call never reached the provider"
    );
    let refused = ran
        .find("model", "outcome")
        .into_iter()
        .find(|r| r.decision == Verdict::Deny)
        .unwrap();
    assert_eq!(refused.rule, "model.max_calls");
    assert_eq!(refused.outcome, Some(Outcome::BudgetExhausted));
    assert_eq!(ran.report.session.model_calls, 2);
}

#[tokio::test]
async fn a_tool_call_budget_is_enforced_per_tool() {
    let policy = r#"
[model]
allow = ["scripted"]
[tools.calc]
component = "builtin:calc"
max_calls = 1
"#;
    let model = Recording::new(
        r#"
[[turn]]
calls = [{ tool = "calc", arguments = { expression = "1" } }, { tool = "calc", arguments = { expression = "2" } }]
[[turn]]
text = "ok"
"#,
    );
    let ran = run_agent("builtin:react", policy, model.clone(), "twice").await;
    assert_eq!(ran.answer(), "ok");
    let outcomes: Vec<_> = ran
        .find("tool", "outcome")
        .iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [Some(Outcome::Ok), Some(Outcome::BudgetExhausted)]
    );
    let requests = model.requests.lock().unwrap();
    assert!(
        requests[1]
            .messages
            .last()
            .unwrap()
            .content
            .starts_with("error: budget exhausted: all 1 calls of tool `calc`")
    );
}

#[tokio::test]
async fn a_model_the_policy_does_not_name_is_refused() {
    let policy = "[model]\nallow = [\"scripted\"]\n";
    let task = r#"calls:[{"chat": "gpt-4o"}, {"chat": null}]"#;
    let ran = run_agent(crate::harness::guests::ATTACKER, policy, no_model(), task).await;
    let report = calls_report(&ran);
    assert_eq!(report[0]["error"]["kind"], "denied");
    assert_eq!(
        report[0]["error"]["reason"],
        "model `gpt-4o` is not allowed (rule: model.allow)"
    );
    assert_eq!(report[1]["ok"], "unused");
}

#[tokio::test]
async fn the_agent_stops_when_the_script_runs_out() {
    let model = Recording::new(
        "[[turn]]\ncalls = [{ tool = \"calc\", arguments = { expression = \"1\" } }]\n",
    );
    let ran = run_agent("builtin:react", CALC_POLICY, model, "go").await;
    match &ran.report.result {
        Err(RunFailure::Agent(error)) => assert!(
            error.contains(
                "the model script test.script.toml has 1 turn(s) and the agent asked for turn 2"
            ),
            "{error}"
        ),
        other => panic!("{other:?}"),
    }
    let failed = ran
        .find("model", "outcome")
        .into_iter()
        .find(|r| r.outcome == Some(Outcome::Failed));
    assert!(failed.is_some());
}

#[tokio::test]
async fn malformed_and_forged_tool_calls_are_refused_without_running_anything() {
    let policy = "[tools.calc]\ncomponent = \"builtin:calc\"\n";
    let long = "x".repeat(10_000);
    let task = format!(
        r#"calls:[
            {{"tool": "calc", "args": "{{not json"}},
            {{"tool": "", "args": "{{}}"}},
            {{"tool": "../../bin/sh", "args": "{{}}"}},
            {{"tool": "calc\u0000shell", "args": "{{}}"}},
            {{"tool": "{long}", "args": "{{}}"}},
            {{"tool": "calc", "args": "{{\"expression\": \"2 +\"}}"}},
            {{"list": true}}
        ]"#
    );
    let ran = run_agent(guests::ATTACKER, policy, no_model(), &task).await;
    let report = calls_report(&ran);
    assert_eq!(report[0]["error"]["kind"], "invalid");
    assert!(
        report[0]["error"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("the arguments of `calc` are not valid JSON")
    );
    for forged in &report[1..5] {
        assert_eq!(forged["error"]["kind"], "denied", "{forged}");
    }
    // The tool's own error comes back as `failed`, with its message.
    assert_eq!(report[5]["error"]["kind"], "failed");
    assert!(
        report[5]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("expected a number")
    );
    assert_eq!(report[6]["ok"], json!(["calc"]));
    // Forged names are stored bounded and without control characters.
    for record in &ran.records {
        assert!(
            record.subject.chars().count() <= 81,
            "{}",
            record.subject.len()
        );
        assert!(!record.subject.contains('\0'));
    }
    // Only the last calc call was allowed to run.
    assert_eq!(ran.report.session.tool_calls.get("calc"), Some(&1));
}

/// Accepts records until the first tool decision, then fails like a full
/// disk.
struct FailOnToolDecision(std::sync::Arc<std::sync::Mutex<Vec<Record>>>);

impl warden::audit::AuditSink for FailOnToolDecision {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        if record.kind == warden::audit::Kind::Tool {
            return Err(std::io::Error::other("disk full"));
        }
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_run_stops_when_the_audit_log_cannot_be_written() {
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = warden::audit::AuditLog::new("r-full").with_sink(FailOnToolDecision(kept.clone()));
    let model = Recording::new(
        "[[turn]]\ncalls = [{ tool = \"counter\", arguments = {} }]\n[[turn]]\ntext = \"done\"\n",
    );
    let spec = warden::run::RunSpec {
        policy: policy(&format!(
            "[model]\nallow = [\"scripted\"]\n[tools.counter]\ncomponent = \"{}\"\n",
            guests::ATTACKER_TOOL
        )),
        agent: warden::load::ComponentSource::Builtin("react".into()),
        provider: model.clone(),
        task: "count".into(),
        approver: None,
        approve: Vec::new(),
        approve_from: Vec::new(),
        replay_tools: None,
    };
    let result = warden::run::run(runtime(), spec, log).await;
    match result {
        Err(warden::run::RunError::Audit(error)) => {
            assert_eq!(error.to_string(), "the audit log failed earlier: disk full")
        }
        other => panic!("expected the run to stop, got {other:?}"),
    }
    // The tool call was never decided into an effect, and the model was
    // not asked again.
    assert_eq!(model.requests.lock().unwrap().len(), 1);
    assert!(kept.lock().unwrap().iter().all(|r| r.subject != "counter"));
}
