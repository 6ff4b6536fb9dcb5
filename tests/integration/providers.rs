//! Real model providers over real HTTP: both wire formats against a server
//! on 127.0.0.1 that the test starts, and every way a provider can fail.

use crate::harness::*;
use crate::mock_model::*;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::audit::{Outcome, Record};
use warden::chat::{ChatRequest, Message, Role};
use warden::policy::{ProviderLimits, Verdict};
use warden::provider::{KeySource, ModelProvider, ProviderOptions, RecordingProvider, from_spec};
use warden::run::RunFailure;

const KEY: &str = "sk-test-0123456789abcdef";

/// A key file in a temp dir (tests never set environment variables: they
/// run in parallel).
fn key_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    path
}

fn provider(spec: &str, key: Option<PathBuf>, limits: ProviderLimits) -> Arc<dyn ModelProvider> {
    from_spec(
        spec,
        &ProviderOptions {
            key: key.map_or(KeySource::Default, KeySource::File),
            limits,
            base_dir: PathBuf::new(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A keyless `openai-compatible` provider for the mock server.
fn compatible(mock: &MockModel, limits: ProviderLimits) -> Arc<dyn ModelProvider> {
    provider(
        &format!("openai-compatible:{}#gpt-test", mock.url),
        None,
        limits,
    )
}

/// Limits that keep failing tests fast.
fn quick() -> ProviderLimits {
    ProviderLimits {
        timeout: Duration::from_secs(10),
        max_response: 1 << 20,
        max_retries: 2,
    }
}

fn request(text: &str) -> warden::secrets::Clean<ChatRequest> {
    warden::secrets::Secrets::default().cleaned(ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: text.into(),
            tool_calls: vec![],
            tool_call_id: None,
        }],
        tools: vec![],
        model: "gpt-test".into(),
        max_tokens: None,
        temperature: None,
    })
}

fn all_text(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

const CALC_POLICY: &str = r#"
[model]
allow = ["gpt-test", "claude-test"]
max_tokens_per_call = 256

[tools.calc]
component = "builtin:calc"
"#;

#[tokio::test]
async fn openai_chat_completions_drive_a_real_run() {
    let mock = MockModel::start(vec![
        openai_call("call_a", "calc", json!({"expression": "6 * 7"}), (120, 15)),
        openai_text("6 * 7 = 42", Some((160, 8))),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let model = provider(
        &format!("openai:{}/v1#gpt-test", mock.url),
        Some(key_file(&dir)),
        quick(),
    );
    let ran = run_agent("builtin:react", CALC_POLICY, model, "What is 6 * 7?").await;
    assert_eq!(ran.answer(), "6 * 7 = 42");

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(
        first.header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(first.body["model"], "gpt-test");
    assert_eq!(
        first.body["max_completion_tokens"], 256,
        "clamped by max_tokens_per_call"
    );
    assert_eq!(first.body["messages"][0]["role"], "system");
    assert_eq!(first.body["messages"][1]["content"], "What is 6 * 7?");
    assert_eq!(first.body["tools"][0]["function"]["name"], "calc");
    let second = &seen[1].body["messages"];
    assert_eq!(second[2]["tool_calls"][0]["id"], "call_a");
    assert_eq!(second[3]["role"], "tool");
    assert_eq!(second[3]["tool_call_id"], "call_a");
    assert_eq!(second[3]["content"], "42");

    // Budgets count the provider's own figures.
    assert_eq!(ran.report.session.tokens, 120 + 15 + 160 + 8);
    let outcomes = ran.find("model", "outcome");
    assert_eq!(outcomes.len(), 2);
    let data = outcomes[0].data.as_ref().unwrap();
    assert_eq!(
        data["usage"],
        json!({"input_tokens": 120, "output_tokens": 15})
    );
    assert_eq!(data["usage_reported"], true);
    // The key is the host's: it is in no record.
    assert!(!all_text(&ran.records).contains(KEY));
}

#[tokio::test]
async fn anthropic_messages_drive_a_real_run() {
    let mock = MockModel::start(vec![
        anthropic_call("toolu_1", "calc", json!({"expression": "2 ^ 8"}), (300, 40)),
        anthropic_text("2 ^ 8 = 256", (350, 10)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let model = provider(
        &format!("anthropic:{}#claude-test", mock.url),
        Some(key_file(&dir)),
        quick(),
    );
    let ran = run_agent("builtin:react", CALC_POLICY, model, "What is 2 ^ 8?").await;
    assert_eq!(ran.answer(), "2 ^ 8 = 256");

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/v1/messages");
    assert_eq!(seen[0].header("x-api-key"), Some(KEY));
    assert_eq!(seen[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen[0].header("authorization"), None);
    let body = &seen[0].body;
    assert!(body["system"].as_str().unwrap().contains("sandbox"));
    assert_eq!(body["max_tokens"], 256);
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(body["tools"][0]["name"], "calc");
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    let messages = seen[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[1]["content"][1]["type"], "tool_use");
    assert_eq!(messages[1]["content"][1]["input"]["expression"], "2 ^ 8");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], "toolu_1");
    assert_eq!(messages[2]["content"][0]["content"], "256");
    assert_eq!(ran.report.session.tokens, 300 + 40 + 350 + 10);
    assert!(!all_text(&ran.records).contains(KEY));
}

#[tokio::test]
async fn a_compatible_server_gets_no_key_and_missing_usage_is_estimated() {
    let mock = MockModel::start(vec![openai_text("hello", None)]).await;
    let model = provider(
        &format!("openai-compatible:{}/v1#gpt-test", mock.url),
        None,
        quick(),
    );
    let ran = run_agent("builtin:react", CALC_POLICY, model, "say hello").await;
    assert_eq!(ran.answer(), "hello");
    let seen = mock.seen();
    assert_eq!(seen[0].header("authorization"), None);
    assert_eq!(seen[0].body["max_tokens"], 256);
    let data = ran.find("model", "outcome")[0].data.clone().unwrap();
    assert_eq!(data["usage_reported"], false);
    assert!(
        ran.report.session.tokens > 0,
        "estimated usage still counts"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_the_time_it_asks_for() {
    let mock = MockModel::start(vec![
        Reply::json(429, json!({"error": {"message": "Rate limit reached"}}))
            .header("retry-after", "1"),
        openai_text("ok", Some((5, 1))),
    ])
    .await;
    let model = compatible(&mock, quick());
    let started = Instant::now();
    let answer = model.chat(&request("hi")).await.unwrap();
    assert_eq!(answer.message.content, "ok");
    assert_eq!(mock.seen().len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
}

#[tokio::test]
async fn a_500_then_success_is_retried_and_persistent_errors_give_up() {
    let mock = MockModel::start(vec![
        Reply::raw(500, "boom"),
        openai_text("recovered", Some((5, 1))),
    ])
    .await;
    let model = compatible(&mock, quick());
    assert_eq!(
        model.chat(&request("hi")).await.unwrap().message.content,
        "recovered"
    );
    assert_eq!(mock.seen().len(), 2);

    let overloaded =
        Reply::json(503, json!({"error": {"message": "overloaded"}})).header("retry-after", "0");
    let mock = MockModel::start(vec![overloaded.clone(), overloaded.clone(), overloaded]).await;
    let model = compatible(&mock, quick());
    let error = model.chat(&request("hi")).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "openai-compatible answered 503 Service Unavailable: overloaded (after 3 attempts)"
    );
    assert_eq!(mock.seen().len(), 3, "max_retries = 2");
}

#[tokio::test]
async fn a_provider_asking_for_a_long_wait_is_not_waited_for() {
    let mock = MockModel::start(vec![
        Reply::json(429, json!({"error": {"message": "quota"}})).header("retry-after", "3600"),
    ])
    .await;
    let model = compatible(&mock, quick());
    let started = Instant::now();
    let error = model.chat(&request("hi")).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(error.contains("429 Too Many Requests: quota"), "{error}");
    assert!(error.contains("asked to wait 3600s"), "{error}");
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn a_4xx_says_what_the_provider_said_and_is_not_retried() {
    let mock = MockModel::start(vec![Reply::json(
        401,
        json!({"error": {"message": "Incorrect API key provided: sk-bad.", "type": "invalid_request_error"}}),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let model = provider(
        &format!("openai:{}#gpt-test", mock.url),
        Some(key_file(&dir)),
        quick(),
    );
    let error = model.chat(&request("hi")).await.unwrap_err().to_string();
    assert_eq!(
        error,
        "openai answered 401 Unauthorized: Incorrect API key provided: sk-bad."
    );
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn malformed_answers_fail_the_call_not_the_host() {
    let mock = MockModel::start(vec![Reply::raw(200, "{\"choices\": [oops")]).await;
    let model = compatible(&mock, quick());
    let ran = run_agent("builtin:react", CALC_POLICY, model, "hi").await;
    match &ran.report.result {
        Err(RunFailure::Agent(error)) => {
            assert!(error.starts_with("the model call failed"), "{error}");
            assert!(
                error.contains("openai-compatible's answer is not a valid response"),
                "{error}"
            );
            assert!(error.contains("it starts: {\"choices\": [oops"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let outcome = &ran.find("model", "outcome")[0];
    assert_eq!(outcome.outcome, Some(Outcome::Failed));

    // Valid JSON of the wrong shape is as clear.
    let mock = MockModel::start(vec![Reply::json(200, json!({"choices": [{"message": 7}]}))]).await;
    let model = compatible(&mock, quick());
    let error = model.chat(&request("hi")).await.unwrap_err().to_string();
    assert!(
        error.contains("not a valid response: invalid type: integer `7`"),
        "{error}"
    );
}

#[tokio::test]
async fn a_slow_provider_times_out() {
    let mock = MockModel::start(vec![
        openai_text("late", None).after(Duration::from_secs(10)),
    ])
    .await;
    let limits = ProviderLimits {
        timeout: Duration::from_millis(300),
        ..quick()
    };
    let model = compatible(&mock, limits);
    let started = Instant::now();
    let error = model.chat(&request("hi")).await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        error,
        "openai-compatible did not answer within 300ms (`[model] timeout`)"
    );
    assert_eq!(
        mock.seen().len(),
        1,
        "a timed-out request is not retried (it may be billed)"
    );

    // A body that trickles in is cut off by the same limit.
    let trickle = Reply {
        status: 200,
        headers: vec![],
        body: ReplyBody::Stream {
            chunk: b" ".to_vec(),
            count: 100,
            every: Duration::from_millis(100),
        },
        delay: Duration::ZERO,
    };
    let mock = MockModel::start(vec![trickle]).await;
    let model = compatible(&mock, limits);
    let error = model.chat(&request("hi")).await.unwrap_err().to_string();
    assert!(error.contains("did not answer within 300ms"), "{error}");
}

#[tokio::test]
async fn an_oversized_answer_is_refused_unread() {
    let limits = ProviderLimits {
        max_response: 64 * 1024,
        ..quick()
    };
    // With a Content-Length...
    let big = openai_text(&"x".repeat(100 * 1024), None);
    // ...and streamed without one.
    let stream = Reply {
        status: 200,
        headers: vec![],
        body: ReplyBody::Stream {
            chunk: vec![b' '; 16 * 1024],
            count: 1000,
            every: Duration::ZERO,
        },
        delay: Duration::ZERO,
    };
    for reply in [big, stream] {
        let mock = MockModel::start(vec![reply]).await;
        let model = compatible(&mock, limits);
        let error = model.chat(&request("hi")).await.unwrap_err().to_string();
        assert_eq!(
            error,
            "openai-compatible's answer is larger than 65536 bytes (`[model] max_response`); it was not read"
        );
    }
}

#[tokio::test]
async fn redirects_are_refused_so_the_key_goes_nowhere_else() {
    let elsewhere = MockModel::start(vec![openai_text("stolen", None)]).await;
    let mock = MockModel::start(vec![
        Reply::raw(307, "").header("location", format!("{}/v1/messages", elsewhere.url)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let model = provider(
        &format!("anthropic:{}#claude-test", mock.url),
        Some(key_file(&dir)),
        quick(),
    );
    let error = model.chat(&request("hi")).await.unwrap_err().to_string();
    assert!(error.contains("answered 307, a redirect to"), "{error}");
    assert!(elsewhere.seen().is_empty(), "the other server saw nothing");
}

#[tokio::test]
async fn secrets_in_a_prompt_are_redacted_before_it_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("db-password");
    std::fs::write(&secret_file, "hunter2-correct-horse\n").unwrap();
    let policy = format!(
        r#"{CALC_POLICY}
[secrets.DB_PASSWORD]
from_file = {:?}
"#,
        secret_file.display().to_string()
    );
    let mock = MockModel::start(vec![openai_text("I will not repeat that.", Some((10, 5)))]).await;
    let model = provider(
        &format!("openai:{}#gpt-test", mock.url),
        Some(key_file(&dir)),
        quick(),
    );
    let task = format!("The password is hunter2-correct-horse and the key is {KEY}; post both.");
    let ran = run_agent("builtin:react", &policy, model, &task).await;
    assert_eq!(ran.answer(), "I will not repeat that.");

    let sent = mock.seen()[0].body["messages"][1]["content"].clone();
    assert_eq!(
        sent,
        "The password is [REDACTED:DB_PASSWORD] and the key is [REDACTED:model_api_key]; post both."
    );
    let decision = &ran.find("model", "decision")[0];
    assert_eq!(
        decision.data.as_ref().unwrap()["secrets_redacted"],
        json!({"DB_PASSWORD": 1, "model_api_key": 1})
    );
    // Neither value is anywhere in the audit log (the task record included).
    let audit = all_text(&ran.records);
    assert!(!audit.contains("hunter2-correct-horse") && !audit.contains(KEY));
    let start = &ran.records[0].data.as_ref().unwrap()["secrets"];
    assert_eq!(start["loaded"], json!(["DB_PASSWORD", "model_api_key"]));
}

#[tokio::test]
async fn the_token_budget_uses_reported_usage_and_refuses_before_the_call() {
    let policy = r#"
[model]
allow = ["gpt-test"]
max_tokens = 4000

[tools.calc]
component = "builtin:calc"
"#;
    // The first answer reports 3000 tokens: the next call's estimate
    // (its prompt plus 1024 for the answer) cannot fit in what is left.
    let mock = MockModel::start(vec![
        openai_call("c1", "calc", json!({"expression": "1 + 1"}), (2900, 100)),
        openai_text("never sent", Some((1, 1))),
    ])
    .await;
    let model = compatible(&mock, quick());
    let ran = run_agent("builtin:react", policy, model, "add").await;
    match &ran.report.result {
        Err(RunFailure::Agent(error)) => {
            assert!(
                error.starts_with("stopped after 1 model turn(s): the model budget is spent"),
                "{error}"
            );
            assert!(error.contains("model.max_tokens"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.seen().len(), 1, "the refused call never left the host");
    assert_eq!(ran.report.session.tokens, 3000);
    let refused = ran
        .find("model", "outcome")
        .into_iter()
        .find(|r| r.decision == Verdict::Deny)
        .unwrap();
    assert_eq!(refused.outcome, Some(Outcome::BudgetExhausted));
}

#[tokio::test]
async fn a_recorded_run_replays_offline_and_a_changed_run_shows_the_diff() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("run.jsonl");
    let mock = MockModel::start(vec![
        openai_call("call_a", "calc", json!({"expression": "6 * 7"}), (120, 15)),
        openai_text("6 * 7 = 42", Some((160, 8))),
    ])
    .await;
    let live = provider(
        &format!("openai:{}#gpt-test", mock.url),
        Some(key_file(&dir)),
        quick(),
    );
    let recorder = Arc::new(RecordingProvider::create(live, &recording).unwrap());
    let ran = run_agent("builtin:react", CALC_POLICY, recorder, "What is 6 * 7?").await;
    assert_eq!(ran.answer(), "6 * 7 = 42");
    let text = std::fs::read_to_string(&recording).unwrap();
    assert_eq!(text.lines().count(), 3, "a header and two exchanges");
    assert!(!text.contains(KEY), "the recording holds no key");

    let replay_spec = format!("replay:{}", recording.display());
    let replay = provider(&replay_spec, None, quick());
    let again = run_agent("builtin:react", CALC_POLICY, replay, "What is 6 * 7?").await;
    assert_eq!(again.answer(), "6 * 7 = 42");
    assert_eq!(again.report.session.tokens, ran.report.session.tokens);
    assert_eq!(mock.seen().len(), 2, "the replay sent nothing");

    let replay = provider(&replay_spec, None, quick());
    let changed = run_agent("builtin:react", CALC_POLICY, replay, "What is 6 * 8?").await;
    match &changed.report.result {
        Err(RunFailure::Agent(error)) => {
            assert!(
                error.contains("differs from the recording") && error.contains("at model call 1"),
                "{error}"
            );
            assert!(
                error.contains("messages[1].content differs at character 13"),
                "{error}"
            );
            assert!(error.contains("recorded: \"What is 6 * 7?\""), "{error}");
            assert!(error.contains("now:      \"What is 6 * 8?\""), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn provider_specs_and_keys_fail_clearly() {
    let options = ProviderOptions::default();
    let error = |spec: &str, options: &ProviderOptions| match from_spec(spec, options) {
        Ok(_) => panic!("{spec} was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(error("gpt-4o", &options).contains("`gpt-4o` names no provider"));
    assert!(error("opnai:gpt-4o", &options).contains("unknown model provider `opnai`"));
    assert!(error("openai-compatible:llama3", &options).contains("needs a base URL and a model"));
    assert!(error("openai:http://127.0.0.1:1/v1#", &options).contains("names no model"));
    let missing = ProviderOptions {
        key: KeySource::Env("WARDEN_TEST_SURELY_UNSET_KEY".into()),
        ..ProviderOptions::default()
    };
    let message = error("anthropic:claude-test", &missing);
    assert!(
        message.contains("the environment variable WARDEN_TEST_SURELY_UNSET_KEY is not set"),
        "{message}"
    );
    let dir = tempfile::tempdir().unwrap();
    let with_key = ProviderOptions {
        key: KeySource::File(key_file(&dir)),
        ..ProviderOptions::default()
    };
    let message = error("openai:http://models.example.com/v1#gpt", &with_key);
    assert!(
        message.contains("refusing to send the API key over plain http to models.example.com"),
        "{message}"
    );
    assert!(from_spec("openai:http://localhost:1/v1#gpt", &with_key).is_ok());
    let message = error("replay:/nonexistent/run.jsonl", &options);
    assert!(
        message.contains("cannot read the recording /nonexistent/run.jsonl"),
        "{message}"
    );
}
