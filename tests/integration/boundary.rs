//! Sealing the boundary: every path a secret or an untrusted byte could take
//! in or out, tried as an attacker would. Each test is an attack that got
//! through before the mechanism it names: guests built from source report
//! what they received *reversed*, so the host's redaction of their answer
//! cannot hide a value they saw; servers on 127.0.0.1 reflect and replay.

use crate::harness::*;
use crate::mock_model::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden::policy::ProviderLimits;
use warden::provider::{KeySource, ModelProvider, ProviderOptions, RecordingProvider, from_spec};

const TOKEN: &str = "tok-7c1d9e2f4a6b8c0d";
const KEY: &str = "sk-test-boundary-0123456789";

fn reversed(text: &str) -> String {
    text.chars().rev().collect()
}

/// Everything a run wrote to its audit log, as text.
fn audit_text(ran: &Ran) -> String {
    ran.records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A directory holding the token in a file, and the `[secrets.TOKEN]`
/// table reading it.
fn token_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let table = format!(
        "[secrets.TOKEN]\nfrom_file = {:?}\ninject = {{ host = \"127.0.0.1\", header = \"Authorization\", format = \"Bearer {{}}\" }}\n",
        dir.path().join("token").display().to_string()
    );
    (dir, table)
}

fn openai(mock: &MockModel, dir: &std::path::Path) -> Arc<dyn ModelProvider> {
    let key = dir.join("key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    from_spec(
        &format!("openai:{}#gpt-test", mock.url),
        &ProviderOptions {
            key: KeySource::File(key),
            limits: ProviderLimits {
                max_retries: 0,
                ..ProviderLimits::default()
            },
            base_dir: PathBuf::new(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_secret_in_a_tools_error_or_panic_never_reaches_the_agent_and_errors_carry_labels() {
    let (dir, secret) = token_dir();
    let tool = guests::ATTACKER_TOOL;
    let data = format!(
        "fs = {{ \"/data\" = {{ dir = {:?}, mode = \"ro\" }} }}",
        dir.path().display().to_string()
    );
    let policy = format!(
        r#"
[model]
allow = ["scripted"]

[tools.panic]
component = "{tool}"
{data}

[tools.fail]
component = "{tool}"
labels = ["untrusted"]
{data}

[tools.counter]
component = "{tool}"
deny_when_labeled = ["untrusted"]

{secret}
"#
    );
    let task = r#"calls:[
        {"tool": "panic", "args": "{\"path\": \"/data/token\"}", "reverse": true},
        {"tool": "counter", "args": "{}"},
        {"tool": "fail", "args": "{\"text\": \"oops: \", \"path\": \"/data/token\"}", "reverse": true},
        {"tool": "counter", "args": "{}"}
    ]"#;
    let ran = run_agent(guests::ATTACKER, &policy, no_model(), task).await;
    let report = calls_report(&ran);
    for seen in [&report[0]["reversed"], &report[2]["reversed"]] {
        let seen = seen.as_str().unwrap();
        assert!(!seen.contains(&reversed(TOKEN)), "the agent saw {seen}");
        assert!(seen.contains(&reversed("[REDACTED:TOKEN]")), "{seen}");
    }
    // An unlabeled tool's panic leaves the session clean; a labeled tool's
    // error taints it like its result would.
    assert_eq!(report[1]["ok"], "1", "{report:?}");
    assert_eq!(report[3]["error"]["kind"], "denied", "{report:?}");
    assert!(ran.report.session.labels.contains(&"untrusted".to_string()));
    assert!(!audit_text(&ran).contains(TOKEN));
}

#[tokio::test]
async fn a_model_answer_or_provider_error_carrying_the_key_is_redacted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockModel::start(vec![
        openai_text(&format!("your key is {KEY}"), Some((5, 5))),
        Reply::raw(
            401,
            format!("{{\"error\": {{\"message\": \"bad header Authorization: Bearer {KEY}\"}}}}"),
        ),
        openai_text(&format!("once more: {KEY}"), Some((5, 5))),
    ])
    .await;
    let recording = dir.path().join("recording.jsonl");
    let model: Arc<dyn ModelProvider> =
        Arc::new(RecordingProvider::create(openai(&mock, dir.path()), &recording).unwrap());
    let policy = "[model]\nallow = [\"gpt-test\"]\n";
    let task = r#"calls:[{"chat": null, "reverse": true}, {"chat": null, "reverse": true}]"#;
    let ran = run_agent(guests::ATTACKER, policy, model.clone(), task).await;
    let report = calls_report(&ran);
    let answer = report[0]["reversed"].as_str().unwrap();
    assert!(!answer.contains(&reversed(KEY)), "{answer}");
    assert!(
        answer.contains(&reversed("[REDACTED:model_api_key]")),
        "{answer}"
    );
    let error = report[1]["reversed"].as_str().unwrap();
    assert!(error.contains(&reversed("401")), "{error}");
    assert!(!error.contains(&reversed(KEY)), "{error}");
    assert!(!audit_text(&ran).contains(KEY));

    // The react agent hands the model's answer back as its own: the run's
    // answer (what `-q` prints) holds no key either.
    let ran = run_agent("builtin:react", policy, model, "tell me").await;
    assert_eq!(ran.answer(), "once more: [REDACTED:model_api_key]");
    let recorded = std::fs::read_to_string(&recording).unwrap();
    assert!(!recorded.contains(KEY), "{recorded}");
    assert!(recorded.contains("[REDACTED:model_api_key]"), "{recorded}");
}

#[tokio::test]
async fn ids_names_schemas_and_the_model_field_are_redacted_before_they_leave() {
    let dir = tempfile::tempdir().unwrap();
    let (_tokens, secret) = token_dir();
    let mock = MockModel::start(vec![
        openai_text("one", Some((5, 5))),
        openai_text("two", Some((5, 5))),
    ])
    .await;
    let policy = format!("[model]\nallow = [\"*\"]\n\n{secret}");
    // The task carried the token (a user pasted it); the agent tries every
    // field but the content to send it on.
    let task = format!(
        r#"calls:[{{"chat": "gpt-test", "user": "hi", "tool_call_id": "call-{TOKEN}", "tool_name": "t_{TOKEN}", "schema": "{{\"description\": \"{TOKEN}\"}}"}}, {{"chat": "{TOKEN}"}}]"#
    );
    let ran = run_agent(guests::ATTACKER, &policy, openai(&mock, dir.path()), &task).await;
    let report = calls_report(&ran);
    assert_eq!(report[0]["ok"], "one", "{report:?}");
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        let body = request.body.to_string();
        assert!(!body.contains(TOKEN), "{body}");
        assert!(body.contains("[REDACTED:TOKEN]"), "{body}");
    }
    assert_eq!(seen[1].body["model"], "[REDACTED:TOKEN]");
}

#[tokio::test]
async fn bulk_in_ids_and_names_is_refused_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockModel::start(vec![openai_text("never sent", Some((5, 5)))]).await;
    let policy = "[model]\nallow = [\"gpt-test\"]\nmax_tokens = 50000\n";
    let big = "x".repeat(400_000);
    let task = format!(
        r#"calls:[{{"chat": null, "tool_call_id": "{big}"}}, {{"chat": null, "tool_name": "{big}"}}]"#
    );
    let ran = run_agent(guests::ATTACKER, policy, openai(&mock, dir.path()), &task).await;
    let report = calls_report(&ran);
    for refused in &report {
        assert_eq!(refused["error"]["kind"], "invalid", "{refused}");
        assert!(
            refused["error"]["reason"]
                .as_str()
                .unwrap()
                .contains("at most"),
            "{refused}"
        );
    }
    assert!(mock.seen().is_empty(), "nothing left the host");
}

#[tokio::test]
async fn the_token_estimate_counts_every_byte_of_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockModel::start(vec![openai_text("an answer", Some((5, 5)))]).await;
    // A conversation whose only bulk is a tool-call id (within the cap):
    // the estimate used to count none of it.
    let policy = "[model]\nallow = [\"gpt-test\"]\n";
    let id = "i".repeat(250);
    let task = format!(r#"calls:[{{"chat": null, "tool_call_id": "{id}"}}]"#);
    let ran = run_agent(guests::ATTACKER, policy, openai(&mock, dir.path()), &task).await;
    assert_eq!(calls_report(&ran)[0]["ok"], "an answer");
    let estimate = ran.find("model", "decision")[0].data.as_ref().unwrap()["estimated_tokens"]
        .as_u64()
        .unwrap();
    // The id (250 bytes) appears twice: in the call and in its result.
    assert!(estimate >= 1024 + 500 / 4, "estimate {estimate}");
}

/// A server on 127.0.0.1 that answers each connection with the next canned
/// response, byte for byte, and keeps each request's head.
pub(crate) struct RawServer {
    pub(crate) url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RawServer {
    pub(crate) async fn start(responses: Vec<Vec<u8>>) -> RawServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = seen.clone();
        tokio::spawn(async move {
            for response in responses {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            }
        });
        RawServer { url, seen }
    }

    fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }

    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

pub(crate) fn response(headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
    for header in headers {
        out.extend_from_slice(header);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// `[tools.probe]` holding the token, allowed to reach `server` by both
/// names of this machine.
fn probe_with_token(server: &RawServer, secret: &str) -> String {
    probe_policy(&format!(
        "secrets = [\"TOKEN\"]\nhttp = {{ allow = [{{ url = \"http://127.0.0.1:{0}/**\", private = true }}, {{ url = \"http://localhost:{0}/**\", private = true }}], methods = [\"GET\", \"POST\"] }}\n\n{secret}",
        server.port()
    ))
}

fn http(url: &str) -> Value {
    json!({ "op": "http", "url": url })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cannot_hand_a_secret_back_by_another_name_an_encoding_or_raw_header_bytes() {
    let (_dir, secret) = token_dir();
    let mut raw_header = b"x-stored: \xff\xfe".to_vec();
    raw_header.extend_from_slice(TOKEN.as_bytes());
    let server = RawServer::start(vec![
        // Stored earlier under the bound name, served back under the other
        // (no secret injected into this request, so nothing used to redact).
        response(&[], format!("stored: Bearer {TOKEN}").as_bytes()),
        // A header value that is not UTF-8.
        response(&[&raw_header], b"ok"),
        // A compressed body the host cannot look inside.
        response(&[b"content-encoding: gzip"], &reversed(TOKEN).into_bytes()),
    ])
    .await;
    let policy = probe_with_token(&server, &secret);
    let localhost = format!("http://localhost:{}/recall", server.port());
    let (recalled, _) = run_probe(&policy, http(&localhost)).await;
    let body = recalled[0]["body_reversed"].as_str().unwrap();
    assert!(!body.contains(&reversed(TOKEN)), "the tool saw {body}");
    assert!(body.contains(&reversed("[REDACTED:TOKEN]")), "{body}");

    let (headers, _) = run_probe(&policy, http(&format!("{}/h", server.url))).await;
    let shown = headers[0]["headers_reversed"].as_str().unwrap();
    assert!(!shown.contains(&reversed(TOKEN)), "the tool saw {shown}");
    assert!(shown.contains(&reversed("[REDACTED:TOKEN]")), "{shown}");

    let (encoded, ran) = run_probe(&policy, http(&format!("{}/gz", server.url))).await;
    assert_eq!(
        encoded[0]["error"], "HttpResponseContentCoding(Some(\"gzip\"))",
        "{encoded}"
    );
    assert!(audit_text(&ran).contains("encoded although identity was asked for"));
    for request in server.seen() {
        assert!(
            request
                .to_ascii_lowercase()
                .contains("accept-encoding: identity"),
            "{request}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_not_carry_a_secret_or_ask_for_part_of_a_response() {
    let (dir, secret) = token_dir();
    let server = RawServer::start(vec![response(&[], b"ok")]).await;
    // The tool found the token in a directory it was granted, and tries to
    // send it on in the URL, a header or the body.
    let policy = probe_with_token(&server, &secret).replace(
        "secrets = [",
        &format!(
            "fs = {{ \"/data\" = {{ dir = {:?}, mode = \"ro\" }} }}\nsecrets = [",
            dir.path().display().to_string()
        ),
    );
    let from = "/data/token";
    let attempts = [
        json!({ "op": "http", "url": format!("{}/r", server.url), "headers": { "range": "bytes=0-3" } }),
        json!({ "op": "http", "from_file": from, "url": format!("{}/q?t={{file}}", server.url) }),
        json!({ "op": "http", "from_file": from, "url": format!("{}/h", server.url), "headers": { "x-leak": "{file}" } }),
        json!({ "op": "http", "from_file": from, "url": format!("{}/b", server.url), "method": "POST", "body": "leak={file}" }),
    ];
    for attempt in attempts {
        let (result, ran) = run_probe(&policy, attempt.clone()).await;
        assert_eq!(
            result[0]["error"], "HttpRequestDenied",
            "{attempt} gave {result}"
        );
        assert!(!audit_text(&ran).contains(TOKEN));
    }
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    // A plain request still goes out, with the secret where it is bound.
    let (result, _) = run_probe(&policy, http(&format!("{}/ok", server.url))).await;
    assert_eq!(result[0]["status"], 200, "{result}");
    let seen = server.seen();
    assert!(seen[0].contains(&format!("Bearer {TOKEN}")), "{seen:?}");
}

#[tokio::test]
async fn an_mcp_client_never_sees_a_secret_in_an_error_result() {
    let (dir, secret) = token_dir();
    let tool = guests::ATTACKER_TOOL;
    let policy = format!(
        "[tools.fail]\ncomponent = \"{tool}\"\nfs = {{ \"/data\" = {{ dir = {:?}, mode = \"ro\" }} }}\n\n{secret}",
        dir.path().display().to_string()
    );
    let input = [
        json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "t", "version": "1" } } }),
        json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "fail", "arguments": { "path": "/data/token" } } }),
    ];
    let (answers, records) = crate::mcp::session(&policy, &crate::mcp::lines(&input)).await;
    let text = serde_json::to_string(&answers).unwrap();
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("[REDACTED:TOKEN]"), "{text}");
    assert_eq!(answers[1]["result"]["isError"], true);
    let audit: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert!(!audit.contains(TOKEN));
}

#[test]
fn a_secret_that_came_with_the_task_is_not_printed() {
    let (dir, secret) = token_dir();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("[model]\nallow = [\"scripted\"]\n\n{secret}"),
    )
    .unwrap();
    let script = dir.path().join("script.toml");
    std::fs::write(&script, "[[turn]]\ntext = \"unused\"\n").unwrap();
    let audit = dir.path().join("audit.jsonl");
    let run = |task: &str, quiet: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_warden"));
        command
            .args(["run", guests::ATTACKER, "-p"])
            .arg(&policy)
            .args(["-t", task, "-m"])
            .arg(format!("scripted:{}", script.display()))
            .arg("--audit")
            .arg(&audit)
            .arg("--cache-dir")
            .arg(cache_dir());
        if quiet {
            command.arg("-q");
        }
        command.output().unwrap()
    };
    // The agent repeats the task in its answer (a tool name it was refused)
    // and in its error (an attack it does not know).
    let answered = run(
        &format!(r#"calls:[{{"tool": "{TOKEN}", "args": "{{}}"}}]"#),
        true,
    );
    let failed = run(&format!("{TOKEN}:now"), false);
    for out in [&answered, &failed] {
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(shown.contains("[REDACTED:TOKEN]"), "{shown}");
    }
    assert_eq!(failed.status.code(), Some(1));
}

#[tokio::test]
async fn a_secret_the_agent_holds_does_not_reach_a_tool() {
    let (_dir, secret) = token_dir();
    let policy = format!(
        "[tools.reverse]\ncomponent = \"{}\"\n\n{secret}",
        guests::ATTACKER_TOOL
    );
    let task = format!(r#"calls:[{{"tool": "reverse", "args": "{{\"text\": \"{TOKEN}\"}}"}}]"#);
    let ran = run_agent(guests::ATTACKER, &policy, no_model(), &task).await;
    let seen = calls_report(&ran)[0]["ok"].as_str().unwrap().to_string();
    assert!(!seen.contains(&reversed(TOKEN)), "{seen}");
    assert!(seen.contains(&reversed("[REDACTED:TOKEN]")), "{seen}");
    let decision = &ran.find("tool", "decision")[0];
    assert_eq!(
        decision.data.as_ref().unwrap()["secrets_redacted"],
        json!({ "TOKEN": 1 })
    );
}

#[tokio::test]
async fn a_panic_message_cut_inside_a_character_does_not_crash_the_host() {
    let tool = guests::ATTACKER_TOOL;
    let policy =
        format!("[model]\nallow = [\"scripted\"]\n\n[tools.panic]\ncomponent = \"{tool}\"\n");
    // 1 + 2 x 600 bytes: the 1000-byte cut of the message falls inside an `é`.
    let text = format!("a{}", "é".repeat(600));
    let task = format!(r#"calls:[{{"tool": "panic", "args": "{{\"text\": \"{text}\"}}"}}]"#);
    let ran = run_agent(guests::ATTACKER, &policy, no_model(), &task).await;
    let report = calls_report(&ran);
    let reason = report[0]["error"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("tool `panic` was stopped: the guest panicked: aéé"),
        "{reason}"
    );
    let end = ran.records.last().unwrap();
    assert_eq!(serde_json::to_value(end.kind).unwrap(), "run");
}
