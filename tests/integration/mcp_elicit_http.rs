//! MCP elicitation over `warden mcp --http`: an `ask` during a `tools/call`
//! goes to the client's person as an `elicitation/create` event on the
//! call's event stream, and the client POSTs the answer with its session's
//! id. The official Python SDK answers through its elicitation callback;
//! raw HTTP (reqwest) plays the attacker: answers from another session, to
//! questions never sent, floods of them, late ones, a client that cannot
//! take an event stream, one that leaves mid-question.

use crate::harness::{cache_dir, policy, repo};
use crate::mcp::start_http;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use warden::audit::{Event, MemorySink, Outcome, Record};
use warden::mcp::{Gauge, ServeSpec};
use warden::policy::Verdict;

/// `calc` asks on every call; `word_count` never does.
fn asking_policy(timeout: &str) -> String {
    format!(
        "[tools.calc]\ncomponent = \"builtin:calc\"\ndecision = \"ask\"\n\n[tools.word_count]\ncomponent = \"builtin:text\"\n\n[approvals]\ntimeout = \"{timeout}\"\n"
    )
}

const BOTH: &str = "application/json, text/event-stream";

/// One MCP session over raw HTTP.
struct Session {
    client: reqwest::Client,
    url: String,
    id: String,
}

impl Session {
    /// `initialize` with `capabilities`, then `notifications/initialized`.
    async fn open(url: &str, capabilities: Value) -> Session {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let hello = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": capabilities,
            "clientInfo": { "name": "raw-client", "version": "1" } } });
        let opened = client
            .post(url)
            .header("accept", BOTH)
            .json(&hello)
            .send()
            .await
            .unwrap();
        assert_eq!(opened.status(), 200);
        let id = opened.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let session = Session {
            client,
            url: url.to_string(),
            id,
        };
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        assert_eq!(session.post(&note, BOTH).await.status(), 202);
        session
    }

    async fn post(&self, body: &Value, accept: &str) -> reqwest::Response {
        self.client
            .post(&self.url)
            .header("mcp-session-id", &self.id)
            .header("accept", accept)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A `tools/call` whose answer is an event stream.
    async fn call(&self, id: u64, tool: &str, arguments: Value) -> Events {
        let response = self
            .post(
                &json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
                    "params": { "name": tool, "arguments": arguments } }),
                BOTH,
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "a call of a session that can be asked is answered as a stream"
        );
        Events {
            response,
            buffer: Vec::new(),
        }
    }

    /// POST the client's answer to warden's request `id`: its status.
    async fn answer(&self, id: &Value, result: Value) -> u16 {
        let answer = json!({ "jsonrpc": "2.0", "id": id, "result": result });
        self.post(&answer, BOTH).await.status().as_u16()
    }
}

fn accept(answer: &str) -> Value {
    json!({ "action": "accept", "content": { "answer": answer } })
}

/// The messages of one event stream.
struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    /// The next message, or `None` if none comes within `wait` (or the
    /// stream ended).
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                assert!(text.starts_with("event: message\n"), "{text}");
                return Some(serde_json::from_str(&data).unwrap());
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(_) | Err(_) => return None,
            }
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(30))
            .await
            .expect("the stream sent nothing within 30 s")
    }

    /// The next message, which must be a question.
    async fn question(&mut self) -> Value {
        let question = self.next().await;
        assert_eq!(question["method"], "elicitation/create", "{question}");
        question
    }
}

fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still not so after 20 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serve `policy_text` over HTTP in-process with one slot (no queue), so
/// every answer must be read while the only slot is held by the call
/// waiting for it.
fn one_slot(policy_text: &str) -> (ServeSpec, Gauge) {
    let spec = ServeSpec {
        concurrency: 1,
        queue: 0,
        ..ServeSpec::new(policy(policy_text))
    };
    let gauge = spec.gauge.clone();
    (spec, gauge)
}

/// The decision records of asks about `calc` nobody approved (each names
/// why in its detail).
fn refused_asks(records: &[Record]) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| {
            r.subject == "calc"
                && r.event == Event::Decision
                && r.decision == Verdict::Ask
                && r.data
                    .as_ref()
                    .is_none_or(|d| d.get("approved_by").is_none())
        })
        .collect()
}

fn approvals(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| Some(r.data.as_ref()?["approved_by"].as_str()?.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_the_clients_person_approves_once_or_denies_on_the_calls_stream() {
    let memory = MemorySink::default();
    let (spec, gauge) = one_slot(&asking_policy("60s"));
    let (url, stop, server) = start_http(spec, &memory);
    let session = Session::open(&url, json!({ "elicitation": {} })).await;

    let mut events = session
        .call(1, "calc", json!({ "expression": "6 * 7" }))
        .await;
    let question = events.question().await;
    let message = question["params"]["message"].as_str().unwrap();
    assert!(message.contains("the tool \"calc\""), "{message}");
    assert!(message.contains("rule: tools.calc"), "{message}");
    // "For the rest of the session" would approve other sessions' calls
    // too (they share the warden session): not offered over HTTP.
    assert_eq!(
        question["params"]["requestedSchema"]["properties"]["answer"]["enum"],
        json!(["once", "deny"])
    );
    assert_eq!(gauge.asks_waiting(), 1);
    // The only slot is the call's: the answer is read all the same.
    assert_eq!(gauge.held(), 1);
    assert_eq!(session.answer(&question["id"], accept("once")).await, 202);
    let answer = events.next().await;
    assert_eq!(answer["id"], 1);
    assert_eq!(text(&answer), "42", "{answer}");
    assert!(events.next_within(Duration::from_secs(5)).await.is_none());

    // Deny.
    let mut events = session
        .call(2, "calc", json!({ "expression": "1 + 1" }))
        .await;
    let question = events.question().await;
    assert_eq!(session.answer(&question["id"], accept("deny")).await, 202);
    let answer = events.next().await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(text(&answer).contains("refused this call"), "{answer}");

    // `run`, not offered, is not taken either.
    let mut events = session
        .call(3, "calc", json!({ "expression": "2 + 2" }))
        .await;
    let question = events.question().await;
    assert_eq!(session.answer(&question["id"], accept("run")).await, 202);
    let answer = events.next().await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        text(&answer)
            .contains(r#"expected {"action": "accept", "content": {"answer": "once"|"deny"}}"#),
        "{answer}"
    );

    // A call that does not ask is answered on the stream at once.
    let mut events = session
        .call(4, "word_count", json!({ "text": "a b c" }))
        .await;
    let answer = events.next().await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");

    assert_eq!(gauge.asks_waiting(), 0);
    wait_until("every slot free", || gauge.held() == 0).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let records = memory.records();
    assert_eq!(
        approvals(&records),
        ["a person (via the MCP client `raw-client`), once"]
    );
    let refused = refused_asks(&records);
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused[0]
            .detail
            .contains("a person (via the MCP client `raw-client`) refused this call"),
        "{refused:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_another_session_or_to_no_question_is_ignored() {
    let memory = MemorySink::default();
    let spec = ServeSpec {
        concurrency: 4,
        ..ServeSpec::new(policy(&asking_policy("60s")))
    };
    let gauge = spec.gauge.clone();
    let (url, stop, server) = start_http(spec, &memory);
    let alice = Session::open(&url, json!({ "elicitation": {} })).await;
    let mallory = Session::open(&url, json!({ "elicitation": {} })).await;

    let mut events = alice
        .call(1, "calc", json!({ "expression": "6 * 7" }))
        .await;
    let question = events.question().await;
    // Mallory knows (or guesses) the id of Alice's question: her session
    // has no such question, so her "once" approves nothing.
    assert_eq!(mallory.answer(&question["id"], accept("once")).await, 202);
    // Answers to questions never sent, with ids of every shape.
    for id in [
        json!("warden-elicit-999999"),
        json!(7),
        json!(null),
        json!({ "id": question["id"] }),
    ] {
        assert_eq!(alice.answer(&id, accept("once")).await, 202);
    }
    assert_eq!(gauge.answers_ignored(), 5);
    assert_eq!(gauge.asks_waiting(), 1, "Alice's question still waits");
    assert!(
        events
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "nothing answered Alice's question"
    );
    // A session that is not open cannot answer at all.
    let forged = json!({ "jsonrpc": "2.0", "id": question["id"], "result": accept("once") });
    let refused = alice
        .client
        .post(&url)
        .header("mcp-session-id", "0".repeat(32))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    // Alice's person decides.
    assert_eq!(alice.answer(&question["id"], accept("deny")).await, 202);
    let answer = events.next().await;
    assert!(text(&answer).contains("refused this call"), "{answer}");
    // Mallory's own call is asked of Mallory, under a different id.
    let mut theirs = mallory
        .call(2, "calc", json!({ "expression": "1 + 1" }))
        .await;
    let asked = theirs.question().await;
    assert_ne!(asked["id"], question["id"]);
    // Alice answering Mallory's question approves nothing either.
    assert_eq!(alice.answer(&asked["id"], accept("once")).await, 202);
    assert_eq!(mallory.answer(&asked["id"], accept("once")).await, 202);
    assert_eq!(text(&theirs.next().await), "2");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(
        approvals(&memory.records()),
        ["a person (via the MCP client `raw-client`), once"],
        "only Mallory's own answer to her own question approved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_answers_to_unknown_questions_holds_nothing() {
    let memory = MemorySink::default();
    let (spec, gauge) = one_slot(&asking_policy("60s"));
    let (url, stop, server) = start_http(spec, &memory);
    let session = Session::open(&url, json!({ "elicitation": {} })).await;
    let mut events = session
        .call(1, "calc", json!({ "expression": "6 * 7" }))
        .await;
    let question = events.question().await;

    // 2,000 answers to ids never sent, 16 KiB each, 8 at a time, while the
    // only slot is held: each is read without a slot, dropped, counted.
    let padding = "p".repeat(16 << 10);
    let mut sent = 0;
    let mut accepted = 0;
    for round in 0..250 {
        let mut posts = tokio::task::JoinSet::new();
        for n in 0..8 {
            let id = json!(format!("warden-elicit-{}", 1_000_000 + round * 8 + n));
            let result =
                json!({ "action": "accept", "content": { "answer": "once" }, "pad": padding });
            let body = json!({ "jsonrpc": "2.0", "id": id, "result": result });
            let request = session
                .client
                .post(&session.url)
                .header("mcp-session-id", &session.id)
                .json(&body);
            posts.spawn(async move { request.send().await.unwrap().status().as_u16() });
        }
        while let Some(status) = posts.join_next().await {
            sent += 1;
            match status.unwrap() {
                202 => accepted += 1,
                // More at once than are read at once: refused unread.
                503 => {}
                other => panic!("status {other}"),
            }
        }
        assert_eq!(gauge.asks_waiting(), 1);
    }
    assert_eq!(sent, 2000);
    assert!(accepted > 0);
    assert_eq!(gauge.answers_ignored(), accepted);
    // Something other than an answer is not read while the slots are
    // taken, whatever the session.
    let ping = json!({ "jsonrpc": "2.0", "id": 9, "method": "ping" });
    assert_eq!(session.post(&ping, BOTH).await.status(), 503);
    // An answer over the size of one is refused unread.
    let huge =
        json!({ "jsonrpc": "2.0", "id": question["id"], "result": { "pad": "x".repeat(1 << 20) } });
    assert_eq!(session.post(&huge, BOTH).await.status(), 503);
    assert_eq!(gauge.asks_waiting(), 1);
    assert_eq!(gauge.held(), 1);
    assert!(
        gauge.peak_buffered_bytes() < 64 << 10,
        "{} bytes buffered",
        gauge.peak_buffered_bytes()
    );
    // The real answer still gets through.
    assert_eq!(session.answer(&question["id"], accept("once")).await, 202);
    assert_eq!(text(&events.next().await), "42");
    wait_until("the slot free", || gauge.held() == 0).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_timeout_is_ignored_and_the_call_was_already_refused() {
    let memory = MemorySink::default();
    let (spec, gauge) = one_slot(&asking_policy("1s"));
    let (url, stop, server) = start_http(spec, &memory);
    let session = Session::open(&url, json!({ "elicitation": {} })).await;
    let started = Instant::now();
    let mut events = session
        .call(1, "calc", json!({ "expression": "6 * 7" }))
        .await;
    let question = events.question().await;
    let answer = events.next().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        text(&answer).contains("nobody answered within 1s (approvals.timeout)"),
        "{answer}"
    );
    assert_eq!(gauge.asks_waiting(), 0);
    let ignored = gauge.answers_ignored();
    assert_eq!(session.answer(&question["id"], accept("once")).await, 202);
    assert_eq!(gauge.answers_ignored(), ignored + 1);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let records = memory.records();
    assert!(
        approvals(&records).is_empty(),
        "the late answer approved nothing"
    );
    let calc: Vec<&Record> = records.iter().filter(|r| r.subject == "calc").collect();
    assert!(
        calc.iter().all(|r| r.outcome != Some(Outcome::Ok)),
        "{calc:#?}"
    );
    let refused = refused_asks(&records);
    assert_eq!(refused.len(), 1, "{calc:#?}");
    assert!(
        refused[0].detail.contains("nobody answered within 1s"),
        "{calc:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_posted_without_accepting_an_event_stream_is_refused_at_once() {
    let memory = MemorySink::default();
    let (spec, gauge) = one_slot(&asking_policy("60s"));
    let (url, stop, server) = start_http(spec, &memory);
    let session = Session::open(&url, json!({ "elicitation": {} })).await;
    let started = Instant::now();
    let call = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "calc", "arguments": { "expression": "6 * 7" } } });
    let response = session.post(&call, "application/json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nobody to ask: no wait"
    );
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        text(&answer).contains("without `Accept: text/event-stream`"),
        "{answer}"
    );
    assert_eq!(gauge.asks_waiting(), 0);
    // A session that did not declare elicitation is never asked, stream
    // or not: its calls are answered as JSON, as before.
    let silent = Session::open(&url, json!({})).await;
    let response = silent.post(&call, BOTH).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert!(text(&answer).contains("none was given"), "{answer}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_question_refuses_it_and_frees_its_slot() {
    let memory = MemorySink::default();
    let (spec, gauge) = one_slot(&asking_policy("60s"));
    let (url, stop, server) = start_http(spec, &memory);
    let session = Session::open(&url, json!({ "elicitation": {} })).await;
    let started = Instant::now();
    let mut events = session
        .call(1, "calc", json!({ "expression": "6 * 7" }))
        .await;
    let question = events.question().await;
    // The client goes: its end of the stream's connection closes.
    drop(events);
    wait_until("the slot free", || gauge.held() == 0).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "long before the 60 s timeout"
    );
    assert_eq!(gauge.asks_waiting(), 0);
    // An answer now is too late, and the next call has the slot.
    assert_eq!(session.answer(&question["id"], accept("once")).await, 202);
    let mut events = session
        .call(2, "word_count", json!({ "text": "a b" }))
        .await;
    assert_eq!(events.next().await["result"]["isError"], false);

    // Ending the session refuses its question too.
    let mut events = session
        .call(3, "calc", json!({ "expression": "1 + 1" }))
        .await;
    events.question().await;
    let ended = session
        .client
        .delete(&url)
        .header("mcp-session-id", &session.id)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    let answer = events.next().await;
    assert!(
        text(&answer).contains("the MCP session ended before the client answered"),
        "{answer}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let records = memory.records();
    let refused = refused_asks(&records);
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused[0]
            .detail
            .contains("the MCP client closed the connection before it answered"),
        "the refusal is recorded: {refused:#?}"
    );
    assert!(
        refused[1]
            .detail
            .contains("the MCP session ended before the client answered"),
        "{refused:#?}"
    );
    assert!(approvals(&records).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_refuses_the_questions_waiting_at_once() {
    let memory = MemorySink::default();
    let (spec, gauge) = one_slot(&asking_policy("600s"));
    let (url, stop, server) = start_http(spec, &memory);
    let session = Session::open(&url, json!({ "elicitation": {} })).await;
    let mut events = session
        .call(1, "calc", json!({ "expression": "6 * 7" }))
        .await;
    events.question().await;
    let started = Instant::now();
    stop.send(()).unwrap();
    let answer = events.next().await;
    assert!(text(&answer).contains("the MCP session ended"), "{answer}");
    server.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(gauge.asks_waiting(), 0);
    let end = memory.records().pop().unwrap();
    assert_eq!(end.subject, "mcp");
    assert_eq!(end.data.as_ref().unwrap()["calls_answered"], 1);
}

fn python() -> PathBuf {
    let python = std::env::var_os("WARDEN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: this test needs the pinned `mcp` package; run `make setup` (or set WARDEN_PYTHON)",
        python.display()
    );
    python
}

#[test]
fn the_official_python_sdk_answers_asks_over_streamable_http() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, asking_policy("60s")).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut server = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "mcp",
            "--http",
            "127.0.0.1:0",
            "--concurrency",
            "1",
            "--queue",
            "0",
        ])
        .arg("--policy")
        .arg(&policy_path)
        .arg("--audit")
        .arg(&audit)
        .env("WARDEN_CACHE_DIR", cache_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(server.stderr.take().unwrap());
    let mut url = None;
    let mut line = String::new();
    while url.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
        url = line
            .trim()
            .strip_prefix("warden mcp: listening on ")
            .map(str::to_string);
        line.clear();
    }
    let url = url.expect("warden mcp says where it listens");
    let out = Command::new(python())
        .arg(repo().join("tests/mcp/elicit_client.py"))
        .arg(&url)
        .args(["once", "deny", "decline", "cancel", "once"])
        .output()
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "{rest}");
    let seen: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let asked: Vec<&Value> = seen.iter().filter(|s| s["what"] == "asked").collect();
    let calls: Vec<&Value> = seen.iter().filter(|s| s["what"] == "call").collect();
    assert_eq!(asked.len(), 5, "{stdout}");
    assert_eq!(calls.len(), 5, "{stdout}");
    let message = asked[0]["message"].as_str().unwrap();
    assert!(message.contains("the tool \"calc\""), "{message}");
    assert!(
        message.contains(r#"value "expression" = "1 * 7": it appears nowhere"#),
        "{message}"
    );
    assert_eq!(
        asked[0]["schema"]["properties"]["answer"]["enum"],
        json!(["once", "deny"])
    );
    assert_eq!(calls[0]["text"], "7", "{stdout}");
    assert_eq!(calls[0]["is_error"], false);
    for refused in &calls[1..4] {
        assert_eq!(refused["is_error"], true, "{stdout}");
    }
    assert!(
        calls[1]["text"]
            .as_str()
            .unwrap()
            .contains("refused this call"),
        "{stdout}"
    );
    assert!(
        calls[3]["text"]
            .as_str()
            .unwrap()
            .contains("dismissed the question"),
        "{stdout}"
    );
    assert_eq!(calls[4]["text"], "35", "{stdout}");
    let log = std::fs::read_to_string(&audit).unwrap();
    let by: Vec<String> = log
        .lines()
        .filter_map(|l| {
            let r: Value = serde_json::from_str(l).ok()?;
            Some(r["data"]["approved_by"].as_str()?.to_string())
        })
        .collect();
    assert_eq!(by.len(), 2, "{by:?}");
    for by in &by {
        assert!(by.starts_with("a person (via the MCP client `"), "{by:?}");
        assert!(by.ends_with("), once"), "{by:?}");
    }
    assert!(
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["audit", "verify"])
            .arg(&audit)
            .status()
            .unwrap()
            .success()
    );
}
