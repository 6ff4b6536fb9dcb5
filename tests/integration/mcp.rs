//! `warden mcp`: the policy's tools served over MCP. A real client (the
//! official Python SDK) drives the binary; protocol edge cases drive the
//! server in-process over in-memory pipes.

use crate::harness::{cache_dir, guests, policy, repo, runtime};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden::audit::{AuditLog, MemorySink, Record, new_run_id};
use warden::mcp::{
    Gauge, LATEST, MAX_MESSAGE, MAX_RECORDED, SERVER_BUSY, ServeSpec, ToolsStatus, serve,
};

const DEMO_LIKE: &str = r#"
[model]
allow = ["scripted"]

[tools.calc]
component = "builtin:calc"
max_calls = 3

[tools.regex_search]
component = "builtin:text"
decision = "deny"
"#;

/// Serve `policy_text` to a client that sends `input` (one message per
/// line) and then closes its end: the answers, and the audit records.
pub(crate) async fn session(policy_text: &str, input: &[u8]) -> (Vec<Value>, Vec<Record>) {
    let spec = ServeSpec {
        concurrency: 4,
        ..ServeSpec::new(policy(policy_text))
    };
    session_with(spec, input).await
}

/// A client's side of stdin that sends `input`, then closes once the
/// server's tools are loaded (or could not be): a client that closes it
/// before leaves, and what waits for the tools is refused.
pub(crate) fn sent_once_loaded(
    input: &[u8],
    gauge: &Gauge,
) -> tokio::io::BufReader<tokio::io::DuplexStream> {
    let (server_end, mut client_end) = tokio::io::duplex(64 * 1024);
    let (input, gauge) = (input.to_vec(), gauge.clone());
    tokio::spawn(async move {
        // Fails only when the server stopped reading and left.
        let _ = client_end.write_all(&input).await;
        while gauge.tools() == ToolsStatus::Loading {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    tokio::io::BufReader::new(server_end)
}

/// [`session`] with a spec of the test's own.
async fn session_with(spec: ServeSpec, input: &[u8]) -> (Vec<Value>, Vec<Record>) {
    let memory = MemorySink::default();
    let audit = AuditLog::new(new_run_id()).with_sink(memory.clone());
    let (output, mut client_end) = tokio::io::duplex(64 * 1024);
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        client_end.read_to_end(&mut out).await.unwrap();
        out
    });
    let input = sent_once_loaded(input, &spec.gauge);
    let report = serve(
        runtime(),
        spec,
        audit,
        input,
        output,
        std::future::pending(),
    )
    .await
    .unwrap();
    let out = reader.await.unwrap();
    let answers = out
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("every answer is one JSON line"))
        .collect();
    assert!(!report.audit_head.is_empty());
    (answers, memory.records())
}

pub(crate) fn lines(messages: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        out.extend(serde_json::to_vec(message).unwrap());
        out.push(b'\n');
    }
    out
}

fn initialize(version: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": { "name": "test-client", "version": "1" } } })
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments } })
}

fn answer(answers: &[Value], id: u64) -> &Value {
    answers
        .iter()
        .find(|a| a["id"] == json!(id))
        .unwrap_or_else(|| panic!("no answer to request {id} in {answers:#?}"))
}

fn python() -> PathBuf {
    let python = std::env::var_os("WARDEN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: the MCP client test needs the pinned `mcp` package; run `make setup` (or set WARDEN_PYTHON)",
        python.display()
    );
    python
}

#[test]
fn the_official_python_sdk_lists_and_calls_tools_through_warden_mcp() {
    let (_dir, policy_path, audit) = sdk_files();
    let out = Command::new(python())
        .arg(repo().join("tests/mcp/client.py"))
        .arg(env!("CARGO_BIN_EXE_warden"))
        .arg(&policy_path)
        .arg(&audit)
        .env("WARDEN_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    check_what_the_client_saw(&out);
    check_the_audit_log(&audit);
}

#[test]
fn the_official_python_sdk_works_over_streamable_http() {
    use std::io::BufRead;
    let (_dir, policy_path, audit) = sdk_files();
    let mut server = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["mcp", "--http", "127.0.0.1:0", "--policy"])
        .arg(&policy_path)
        .arg("--audit")
        .arg(&audit)
        .env("WARDEN_CACHE_DIR", cache_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(server.stderr.take().unwrap());
    // Policy warnings may come first.
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
        .arg(repo().join("tests/mcp/client.py"))
        .arg(&url)
        .output()
        .unwrap();
    // SIGTERM: the server finishes and writes its end record.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    check_what_the_client_saw(&out);
    assert!(status.success(), "{rest}");
    assert!(rest.contains("audit head:"), "{rest}");
    check_the_audit_log(&audit);
}

/// The SDK tests' policy file, in a new directory, and where the audit log
/// goes.
fn sdk_files() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        DEMO_LIKE.replace("max_calls = 3", "max_calls = 20"),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    (dir, policy_path, audit)
}

fn check_what_the_client_saw(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let what = |w: &str| -> Vec<&Value> { seen.iter().filter(|s| s["what"] == w).collect() };

    // The SDK probes the stateless 2026 revision first, is told "method
    // not found", and falls back to the handshake at its newest revision.
    assert_eq!(what("connected")[0]["version"], LATEST);
    assert_eq!(what("connected")[0]["server"], "warden");
    let tools = &what("tools")[0]["tools"];
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calc"], "only granted tools are listed");
    assert_eq!(tools[0]["schema"]["required"], json!(["expression"]));

    let calls = what("call");
    assert_eq!(calls[0]["text"], "42");
    assert_eq!(calls[0]["is_error"], false);
    assert_eq!(calls[1]["is_error"], true, "a denial is an error result");
    assert!(
        calls[1]["text"]
            .as_str()
            .unwrap()
            .contains("rule: tools.regex_search")
    );
    assert_eq!(calls[1]["structured"]["error"], "denied");
    assert_eq!(calls[2]["is_error"], true);
    assert_eq!(calls[2]["structured"]["error"], "invalid");
    assert!(
        calls[2]["text"]
            .as_str()
            .unwrap()
            .contains("tools.calc.schema")
    );
    let texts: Vec<&str> = what("concurrent")[0]["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(texts, ["0", "2", "4", "6", "8", "10", "12", "14"]);
    assert!(
        what("unknown")[0]["error"]
            .as_str()
            .unwrap()
            .contains("unknown tool `no_such_tool`")
    );
}

/// Every call is in the audit log, which verifies and ends with the
/// session's end record.
fn check_the_audit_log(audit: &std::path::Path) {
    let log = std::fs::read_to_string(audit).unwrap();
    let report = warden::audit::verify(log.as_bytes()).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions = |verdict: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "tool" && r["event"] == "decision" && r["decision"] == verdict)
            .count()
    };
    assert_eq!(decisions("allow"), 9, "calc once, then eight at once");
    assert_eq!(
        decisions("deny"),
        3,
        "regex_search, bad arguments, unknown tool"
    );
    let end = records.last().unwrap();
    assert_eq!(end["event"], "outcome");
    assert_eq!(end["subject"], "mcp");
    assert!(
        records
            .iter()
            .any(|r| r["detail"].as_str().unwrap_or("").contains("client mcp"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_refuses_other_origins_unknown_sessions_and_streams() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let memory = MemorySink::default();
    let spec = ServeSpec {
        concurrency: 4,
        ..ServeSpec::new(policy(DEMO_LIKE))
    };
    let audit = AuditLog::new(new_run_id()).with_sink(memory.clone());
    let server = tokio::spawn(async move {
        warden::mcp::serve_http(runtime(), spec, audit, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |body: Value, session: Option<&str>, origin: Option<&str>| {
        let mut request = client.post(&url).json(&body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };

    // A web page elsewhere cannot drive the tools through the browser.
    let refused = post(initialize(LATEST), None, Some("http://attacker.example"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let refused = post(
        initialize(LATEST),
        None,
        Some("http://127.0.0.1.attacker.example:8080"),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 403);
    let opened = post(initialize(LATEST), None, Some("http://localhost:3000"))
        .await
        .unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(session.len(), 32);
    let init: Value = opened.json().await.unwrap();
    assert_eq!(init["result"]["protocolVersion"], LATEST);

    let called = post(
        call(1, "calc", json!({ "expression": "6 * 7" })),
        Some(&session),
        None,
    )
    .await
    .unwrap();
    assert_eq!(called.status(), 200);
    let called: Value = called.json().await.unwrap();
    assert_eq!(called["result"]["content"][0]["text"], "42");

    let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    assert_eq!(
        post(note, Some(&session), None).await.unwrap().status(),
        202
    );
    let ping = json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" });
    assert_eq!(post(ping.clone(), None, None).await.unwrap().status(), 400);
    assert_eq!(
        post(ping.clone(), Some("0123"), None)
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(client.get(&url).send().await.unwrap().status(), 405);
    let huge = client
        .post(&url)
        .header("mcp-session-id", &session)
        .body(vec![b' '; MAX_MESSAGE + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let ended = client
        .delete(&url)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    assert_eq!(
        post(ping, Some(&session), None).await.unwrap().status(),
        404
    );

    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.calls, 1);
    let records = memory.records();
    assert_eq!(records.last().unwrap().subject, "mcp");
    assert!(records[0].detail.contains("over MCP (http)"));

    // No listening beyond this machine.
    let open = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let spec = ServeSpec {
        concurrency: 1,
        ..ServeSpec::new(policy(DEMO_LIKE))
    };
    let refused = warden::mcp::serve_http(
        runtime(),
        spec,
        AuditLog::new(new_run_id()),
        open,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("only on loopback"),
        "{refused}"
    );
}

#[tokio::test]
async fn mcp_negotiates_the_revision_the_client_asks_for() {
    for (asked, expected) in [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("1999-01-01", LATEST),
    ] {
        let input = lines(&[
            initialize(asked),
            json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            call(1, "regex_search", json!({})),
        ]);
        let (answers, records) = session(DEMO_LIKE, &input).await;
        assert_eq!(
            answers.len(),
            2,
            "a notification gets no answer: {answers:?}"
        );
        let init = &answer(&answers, 0)["result"];
        assert_eq!(init["protocolVersion"], expected, "asked {asked}");
        assert_eq!(
            init["capabilities"],
            json!({ "tools": { "listChanged": false } })
        );
        assert_eq!(init["serverInfo"]["name"], "warden");
        let denied = &answer(&answers, 1)["result"];
        assert_eq!(denied["isError"], true);
        // structuredContent exists from 2025-06-18 on.
        assert_eq!(
            denied.get("structuredContent").is_some(),
            expected >= "2025-06-18",
            "{expected}: {denied}"
        );
        let connected = records
            .iter()
            .find(|r| r.detail.starts_with("client test-client connected"))
            .expect("the client is recorded");
        assert_eq!(connected.data.as_ref().unwrap()["asked"], asked);
    }
}

#[tokio::test]
async fn mcp_answers_malformed_messages_with_json_rpc_errors_and_keeps_serving() {
    let mut input = Vec::new();
    // 600 KB of text, 300,000 values: ten times that in memory once parsed.
    let many_values = format!(
        r#"{{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{{"name":"calc","arguments":{{"x":[{}0]}}}}}}"#,
        "0,".repeat(300_000)
    );
    for line in [
        "this is not json",
        "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]",
        "42",
        r#"{"jsonrpc":"2.0","id":2}"#,
        r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"ping","params":[1]}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"resources/list"}"#,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"calc","arguments":[1]}}"#,
        r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#,
        &many_values,
        "",
        "   ",
    ] {
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    // A line longer than the limit is skipped, never held whole.
    input.extend(std::iter::repeat_n(b'x', MAX_MESSAGE + 10));
    input.push(b'\n');
    input.extend(lines(&[
        json!({ "jsonrpc": "2.0", "id": 8, "method": "ping" }),
        call(9, "calc", json!({ "expression": "1 + 1" })),
    ]));
    let (answers, _) = session(DEMO_LIKE, &input).await;
    let codes: Vec<i64> = answers
        .iter()
        .filter_map(|a| a["error"]["code"].as_i64())
        .collect();
    assert_eq!(
        codes,
        [
            -32700, // not JSON
            -32600, // batch
            -32600, // not an object
            -32600, // no method
            -32600, // bad id
            -32602, // params not an object
            -32601, // unknown method
            -32602, // tools/call without a name
            -32602, // arguments not an object
            -32600, // not JSON-RPC 2.0
            -32700, // too many values
            -32600, // too long
        ]
    );
    assert!(
        answers[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batches")
    );
    assert_eq!(
        answer(&answers, 4)["error"]["message"],
        "method not found: `resources/list`"
    );
    assert!(
        answers[10]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 262144 values"),
        "{}",
        answers[10]
    );
    assert_eq!(answer(&answers, 8)["result"], json!({}));
    assert_eq!(answer(&answers, 9)["result"]["content"][0]["text"], "2");
}

#[tokio::test]
async fn mcp_calls_are_budgeted_limited_and_audited_like_an_agents() {
    let text = format!(
        "{DEMO_LIKE}\n[tools.echo]\ncomponent = {:?}\n\n[tools.spin]\ncomponent = {:?}\n\n[limits]\ncpu = \"500ms\"\n",
        guests::ECHO_TOOL,
        guests::ATTACKER_TOOL
    );
    let input = lines(&[
        initialize(LATEST),
        call(1, "calc", json!({ "expression": "1" })),
        call(2, "calc", json!({ "expression": "2" })),
        call(3, "calc", json!({ "expression": "3" })),
        call(4, "calc", json!({ "expression": "4" })),
        // A tool that spins is stopped at its CPU limit; the server lives on.
        call(5, "spin", json!({})),
        json!({ "jsonrpc": "2.0", "id": 6, "method": "tools/list" }),
    ]);
    let (answers, records) = session(&text, &input).await;
    for id in 1..=3 {
        assert_eq!(
            answer(&answers, id)["result"]["isError"],
            false,
            "call {id}"
        );
    }
    let fourth = &answer(&answers, 4)["result"];
    assert_eq!(fourth["isError"], true);
    assert_eq!(fourth["structuredContent"]["error"], "budget-exhausted");
    let spun = &answer(&answers, 5)["result"];
    assert_eq!(spun["isError"], true, "{spun}");
    assert_eq!(spun["structuredContent"]["error"], "failed");
    let listed: Vec<&str> = answer(&answers, 6)["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["calc", "echo", "spin"]);

    let tool_outcomes = records
        .iter()
        .filter(|r| r.kind == warden::audit::Kind::Tool && r.event == warden::audit::Event::Outcome)
        .count();
    assert_eq!(tool_outcomes, 5, "every call is recorded");
    let end = records.last().unwrap();
    assert_eq!(end.subject, "mcp");
    assert_eq!(end.data.as_ref().unwrap()["calls_answered"], 5);
}

#[tokio::test]
async fn mcp_does_not_answer_a_call_the_client_cancelled() {
    let input = lines(&[
        initialize(LATEST),
        call(1, "calc", json!({ "expression": "1" })),
        json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": 1, "reason": "user pressed stop" } }),
        // Cancelling an id that is not in flight changes nothing.
        json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": { "requestId": 99 } }),
        call(2, "calc", json!({ "expression": "2" })),
    ]);
    let (answers, records) = session(DEMO_LIKE, &input).await;
    assert!(answers.iter().all(|a| a["id"] != json!(1)), "{answers:?}");
    assert_eq!(answer(&answers, 2)["result"]["content"][0]["text"], "2");
    // The cancelled call still ran to its end and is on the record.
    assert_eq!(
        records
            .iter()
            .filter(
                |r| r.kind == warden::audit::Kind::Tool && r.event == warden::audit::Event::Outcome
            )
            .count(),
        2
    );
}

/// The echo and spin tools besides the demo's, each call stopped after
/// `cpu` of guest time.
fn with_echo_and_spin(cpu: &str) -> String {
    format!(
        "{DEMO_LIKE}\n[tools.echo]\ncomponent = {:?}\n\n[tools.spin]\ncomponent = {:?}\n\n[limits]\ncpu = {cpu:?}\n",
        guests::ECHO_TOOL,
        guests::ATTACKER_TOOL
    )
}

#[tokio::test]
async fn mcp_holds_only_its_slots_of_calls_however_many_the_client_queues() {
    // One call at a time, two waiting: while a call spins for a second,
    // the client sends 30 more of 256 KiB each. Before, every one was
    // spawned at once holding its arguments (400 of 4 MiB: 1.6 GB).
    let spec = ServeSpec {
        concurrency: 1,
        queue: 2,
        ..ServeSpec::new(policy(&with_echo_and_spin("1s")))
    };
    let gauge = spec.gauge.clone();
    let big = "x".repeat(256 * 1024);
    let mut messages = vec![initialize(LATEST), call(1, "spin", json!({}))];
    messages.extend((2..=31).map(|id| call(id, "echo", json!({ "text": big }))));
    let (answers, records) = session_with(spec, &lines(&messages)).await;

    assert_eq!(answers.len(), 32, "every call is answered in the end");
    assert_eq!(answer(&answers, 1)["result"]["isError"], true);
    assert_eq!(answer(&answers, 31)["result"]["isError"], false);
    assert_eq!(
        gauge.peak_held(),
        3,
        "never more than concurrency + queue messages held"
    );
    assert!(gauge.stalls() > 0, "reading waited for a slot");
    let end = records.last().unwrap();
    assert_eq!(end.data.as_ref().unwrap()["answers_written"], 32);
}

#[tokio::test]
async fn a_client_that_reads_nothing_stops_the_server_instead_of_growing_it() {
    // 200 calls whose answers are 64 KiB each, to a client that never
    // reads its end of a 4 KiB pipe. Before, warden read them all and
    // kept every answer (up to 1 GB), and never ended.
    let spec = ServeSpec {
        concurrency: 1,
        queue: 2,
        write_timeout: Duration::from_millis(300),
        ..ServeSpec::new(policy(&with_echo_and_spin("10s")))
    };
    let gauge = spec.gauge.clone();
    let big = "x".repeat(64 * 1024);
    let mut messages = vec![initialize(LATEST)];
    messages.extend((1..=200).map(|id| call(id, "echo", json!({ "text": big }))));
    let input = sent_once_loaded(&lines(&messages), &gauge);
    let memory = MemorySink::default();
    let audit = AuditLog::new(new_run_id()).with_sink(memory.clone());
    let (output, _never_read) = tokio::io::duplex(4 * 1024);
    let served = serve(
        runtime(),
        spec,
        audit,
        input,
        output,
        std::future::pending(),
    );
    let report = tokio::time::timeout(Duration::from_secs(120), served)
        .await
        .expect("the server ends the session, it does not hang on a client that reads nothing")
        .unwrap();

    // The answer to `initialize` fits in the pipe and frees its slot; the
    // three slots then hold the rest.
    assert!(
        gauge.read() <= 3 + gauge.written(),
        "read {} messages, wrote {}",
        gauge.read(),
        gauge.written()
    );
    assert!(report.calls <= 3, "{report:?}");
    let answer_bytes = 64 * 1024 + 200;
    assert!(
        gauge.peak_buffered_bytes() <= 3 * answer_bytes,
        "{} bytes of answers buffered",
        gauge.peak_buffered_bytes()
    );
    let records = memory.records();
    let end = records.last().unwrap();
    assert_eq!(end.subject, "mcp");
    assert_eq!(end.outcome, Some(warden::audit::Outcome::Failed));
    let stopped = end.data.as_ref().unwrap()["stopped"].as_str().unwrap();
    assert!(stopped.contains("read no output"), "{stopped}");
}

/// `warden mcp --http` in-process on a free loopback port: its URL, the
/// stop switch and the server task.
pub(crate) fn start_http(
    spec: ServeSpec,
    memory: &MemorySink,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<warden::mcp::ServeReport, warden::run::RunError>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let audit = AuditLog::new(new_run_id()).with_sink(memory.clone());
    let server = tokio::spawn(async move {
        warden::mcp::serve_http(runtime(), spec, audit, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    (url, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_bounds_sessions_by_count_and_idle_time_and_caps_what_they_record() {
    let memory = MemorySink::default();
    let spec = ServeSpec {
        max_sessions: 2,
        session_idle: Duration::from_secs(2),
        ..ServeSpec::new(policy(DEMO_LIKE))
    };
    let (url, stop, server) = start_http(spec, &memory);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // Each `initialize` carries 512 KiB of client-provided text. Before,
    // 300 of them (1 MB each) opened 300 sessions and wrote 300 MB of
    // audit log.
    let mut hello = initialize(LATEST);
    hello["params"]["clientInfo"] = json!({
        "name": "n".repeat(1 << 18), "version": "1", "junk": "j".repeat(1 << 18) });
    let open = || client.post(&url).json(&hello).send();
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let opened = open().await.unwrap();
        assert_eq!(opened.status(), 200);
        sessions.push(
            opened.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    for _ in 0..5 {
        let refused = open().await.unwrap();
        assert_eq!(refused.status(), 503);
        assert!(refused.headers().get("mcp-session-id").is_none());
        assert!(refused.headers().contains_key("retry-after"));
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], SERVER_BUSY);
    }
    // Idle sessions end: their ids are unknown, their places free again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ping = json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" });
    let expired = client
        .post(&url)
        .header("mcp-session-id", &sessions[0])
        .json(&ping)
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 404);
    assert_eq!(open().await.unwrap().status(), 200);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let records = memory.records();
    let full: Vec<&Record> = records
        .iter()
        .filter(|r| r.rule == "--max-sessions")
        .collect();
    assert_eq!(full.len(), 1, "one record for the refusals, not one each");
    let end = records.last().unwrap();
    assert_eq!(end.data.as_ref().unwrap()["sessions_refused"], 5);
    let connected: Vec<&Record> = records
        .iter()
        .filter(|r| r.detail.contains("connected (protocol"))
        .collect();
    assert_eq!(connected.len(), 3);
    let client_info = &connected[0].data.as_ref().unwrap()["client"];
    assert!(client_info["name"].as_str().unwrap().len() < MAX_RECORDED + 32);
    assert!(
        client_info["name"]
            .as_str()
            .unwrap()
            .ends_with("[262144 bytes]")
    );
    assert!(client_info["bytes"].as_u64().unwrap() > 2 << 18);
    let audit_bytes: usize = records
        .iter()
        .map(|r| serde_json::to_vec(r).unwrap().len())
        .sum();
    assert!(audit_bytes < 64 * 1024, "{audit_bytes} bytes of audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_refuses_requests_past_its_slots_without_reading_them() {
    let memory = MemorySink::default();
    let spec = ServeSpec {
        concurrency: 1,
        queue: 0,
        ..ServeSpec::new(policy(&with_echo_and_spin("3s")))
    };
    let gauge = spec.gauge.clone();
    let (url, stop, server) = start_http(spec, &memory);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let opened = client
        .post(&url)
        .json(&initialize(LATEST))
        .send()
        .await
        .unwrap();
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let spinning = {
        let request = client
            .post(&url)
            .header("mcp-session-id", &session)
            .json(&call(1, "spin", json!({})));
        tokio::spawn(request.send())
    };
    while gauge.held() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The one slot is the spinning call's: a 4 MiB call is refused unread.
    let refused = client
        .post(&url)
        .header("mcp-session-id", &session)
        .json(&call(2, "echo", json!({ "text": "x".repeat(4 << 20) })))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], SERVER_BUSY);
    assert!(body["error"]["message"].as_str().unwrap().contains("busy"));
    assert_eq!(gauge.busy(), 1);
    let spun = spinning.await.unwrap().unwrap();
    assert_eq!(spun.status(), 200);
    // The slot is free again.
    let called = client
        .post(&url)
        .header("mcp-session-id", &session)
        .json(&call(3, "echo", json!({ "text": "hi" })))
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), 200);
    assert_eq!(gauge.peak_held(), 1);

    stop.send(()).unwrap();
    let report = server.await.unwrap().unwrap();
    assert_eq!(report.calls, 2, "the refused call never ran");
    let end = memory.records().pop().unwrap();
    assert_eq!(end.data.as_ref().unwrap()["busy_refused"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_http_clients_do_not_hold_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let memory = MemorySink::default();
    let spec = ServeSpec {
        concurrency: 1,
        queue: 0,
        write_timeout: Duration::from_secs(1),
        ..ServeSpec::new(policy(DEMO_LIKE))
    };
    let (url, stop, server) = start_http(spec, &memory);
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    // More silent connections than the server serves at once.
    let mut silent = Vec::new();
    for _ in 0..warden::mcp::MAX_CONNECTIONS + 44 {
        silent.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // Each is closed once its request head has not come within the read
    // timeout.
    let mut last = silent.pop().unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), last.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    let opened = tokio::time::timeout(
        Duration::from_secs(20),
        client.post(&url).json(&initialize(LATEST)).send(),
    )
    .await
    .expect("silent connections are closed after the read timeout")
    .unwrap();
    assert_eq!(opened.status(), 200);
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    // A body sent slowly holds the one slot only until the timeout.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(
        format!(
            "POST /mcp HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\nmcp-session-id: {session}\r\ncontent-length: 1000\r\n\r\n{{\"jsonrpc\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = client
        .post(&url)
        .header("mcp-session-id", &session)
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 503);
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let pong = client
        .post(&url)
        .header("mcp-session-id", &session)
        .json(&json!({ "jsonrpc": "2.0", "id": 2, "method": "ping" }))
        .send()
        .await
        .unwrap();
    assert_eq!(pong.status(), 200);
    drop(silent);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_mcp_ask_explains_itself_and_approve_from_approves_only_its_source() {
    let policy_text = r#"
[tools.calc]
component = "builtin:calc"
decision = "ask"

[tools.word_count]
component = "builtin:text"
"#;
    let spec = ServeSpec {
        concurrency: 1,
        approve_from: vec![warden::policy::explain::ApproveFrom::parse("tool:word_count").unwrap()],
        ..ServeSpec::new(policy(policy_text))
    };
    let input = lines(&[
        initialize(LATEST),
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        call(1, "word_count", json!({ "text": "6 * 7" })),
        // `5` (the characters) is in word_count's result: approved.
        call(2, "calc", json!({ "expression": "5" })),
        // `1 + 1` is not: refused, saying where its value was seen.
        call(3, "calc", json!({ "expression": "1 + 1" })),
    ]);
    let (answers, records) = session_with(spec, &input).await;
    let approved = &answer(&answers, 2)["result"];
    assert_eq!(approved["isError"], false, "{approved}");
    let refused = &answer(&answers, 3)["result"];
    assert_eq!(refused["isError"], true);
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("values: `expression` is `1 + 1`: it appears nowhere")
            && text.contains("--approve-from tool:word_count does not cover it: `expression` does not come from tool:word_count"),
        "{text}"
    );
    let by: Vec<&str> = records
        .iter()
        .filter_map(|r| r.data.as_ref()?.get("approved_by")?.as_str())
        .collect();
    assert_eq!(by, ["--approve-from tool:word_count"]);
}

/// `warden mcp ARGS` over stdio with a policy granting the echo tool,
/// fed `messages`, until it exits: its output and its audit log's path.
fn serve_echo(
    dir: &std::path::Path,
    args: &[&str],
    messages: &[Value],
) -> (std::process::Output, PathBuf) {
    let policy_path = dir.join("policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "[model]\nallow = [\"scripted\"]\n[tools.echo]\ncomponent = {:?}\n",
            guests::ECHO_TOOL
        ),
    )
    .unwrap();
    let audit = dir.join("audit.jsonl");
    let mut server = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("mcp")
        .args(args)
        .arg("--policy")
        .arg(&policy_path)
        .arg("--audit")
        .arg(&audit)
        .arg("--cache-dir")
        .arg(cache_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = server.stdin.take().unwrap();
        // A server that refused to start has closed its end.
        let _ = stdin.write_all(&lines(messages));
    }
    (server.wait_with_output().unwrap(), audit)
}

/// The JSON-RPC messages a server wrote, one per line.
fn answers_in(out: &std::process::Output) -> Vec<Value> {
    out.stdout
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect()
}

#[test]
fn mcp_on_several_threads_answers_every_call_in_one_audit_chain() {
    // `--threads 2`: calls overlap on two worker threads; every one is
    // answered, and the log is one valid chain with a decision and an
    // outcome per call.
    let dir = tempfile::tempdir().unwrap();
    let mut messages = vec![initialize(LATEST)];
    messages.extend((1..=40).map(|id| call(id, "echo", json!({ "n": id }))));
    let (out, audit) = serve_echo(
        dir.path(),
        &["--threads", "2", "--concurrency", "8"],
        &messages,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = answers_in(&out);
    assert_eq!(answers.len(), 41);
    for id in 1..=40 {
        let result = &answer(&answers, id)["result"];
        assert_eq!(result["isError"], false, "{result}");
        assert_eq!(result["content"][0]["text"], json!({ "n": id }).to_string());
    }
    let verified = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let tool = |event: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "tool" && r["event"] == event)
            .count()
    };
    assert_eq!((tool("decision"), tool("outcome")), (40, 40));
}

/// `--max-instances` sizes the process's pool: a small pool still answers
/// every call (calls past it wait their turn), and a size out of range is
/// refused naming the flag, before anything is served.
#[test]
fn mcp_max_instances_sizes_the_pool_and_refuses_a_size_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut messages = vec![initialize(LATEST)];
    messages.extend((1..=20).map(|id| call(id, "echo", json!({ "n": id }))));
    let serve = |max: &str| {
        serve_echo(
            dir.path(),
            &["--threads", "2", "--max-instances", max],
            &messages,
        )
        .0
    };
    let out = serve("1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = answers_in(&out);
    for id in 1..=20 {
        let result = &answer(&answers, id)["result"];
        assert_eq!(result["isError"], false, "{result}");
    }
    for bad in ["0", "10001", "many"] {
        let out = serve(bad);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--max-instances"), "{stderr}");
    }
}
