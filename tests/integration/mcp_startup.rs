//! `warden mcp` starting and stopping, as a client sees it through real
//! pipes: `initialize` answered while a big component compiles (cold
//! cache), `tools/list` once it has, with progress notifications; the
//! client leaving (or SIGTERM) mid-compile ending the session at once with
//! its end record; a component that cannot load named to the client; and
//! which addresses `--http` accepts.

use crate::harness::{guests, repo};
use crate::languages::built;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longer than any compile here takes on a loaded 2-core machine: a wait
/// that runs out is a hang, not slowness.
const HANG: Duration = Duration::from_secs(600);

/// The calc tool and the Python word counter (18 MiB: 20-80 s to compile
/// cold), in a new directory with room for the audit log.
fn python_policy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[model]\nallow = [\"scripted\"]\nmax_calls = 1\n\n[limits]\nmemory = \"128MiB\"\n\n[tools.calc]\ncomponent = \"builtin:calc\"\n\n[tools.word_frequencies]\ncomponent = {:?}\n",
            built(guests::WORDFREQ_PY)
        ),
    )
    .unwrap();
    (dir, policy)
}

/// `warden mcp` as an MCP client starts it: stdin and stdout piped, one
/// JSON message a line; stderr collected.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    messages: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<String>>,
}

/// How a server ended.
struct Closed {
    status: ExitStatus,
    /// From stdin closed to the exit.
    took: Duration,
    /// Messages not read before.
    rest: Vec<Value>,
    stderr: String,
}

impl Server {
    fn start(policy: &Path, audit: &Path, cache: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["mcp", "--policy"])
            .arg(policy)
            .arg("--audit")
            .arg(audit)
            .args(cache)
            .current_dir(repo())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, messages) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let message = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not one JSON message a line ({e}): {line}"));
                if sender.send(message).is_err() {
                    break;
                }
            }
        });
        Server {
            stdin: child.stdin.take(),
            stderr: collect(child.stderr.take().unwrap()),
            child,
            messages,
        }
    }

    fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn next(&self) -> Value {
        self.messages.recv_timeout(HANG).unwrap_or_else(|e| {
            panic!(
                "no message from warden mcp ({e}); stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// Messages up to and including the answer to `id`.
    fn until_answer(&self, id: u64) -> (Vec<Value>, Value) {
        let mut before = Vec::new();
        loop {
            let message = self.next();
            if message["id"] == json!(id) {
                return (before, message);
            }
            before.push(message);
        }
    }

    /// Close stdin (the client leaves) and wait for the exit.
    fn close(mut self) -> Closed {
        drop(self.stdin.take());
        let closed = Instant::now();
        let status = wait(&mut self.child);
        let took = closed.elapsed();
        // What it wrote before exiting: the reader ends at end of output.
        let rest = std::iter::from_fn(|| self.messages.recv_timeout(HANG).ok()).collect();
        Closed {
            status,
            took,
            rest,
            stderr: self.stderr(),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// Read `stream` to its end on a thread, into the string returned.
fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let into = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

fn wait(child: &mut Child) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            panic!("warden mcp did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn initialize() -> Value {
    json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": warden::mcp::LATEST, "capabilities": {},
        "clientInfo": { "name": "startup-test", "version": "1" } } })
}

fn records(audit: &Path) -> Vec<Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Whether the `tools` record (written once every component is loaded)
/// is in the log.
fn tools_loaded(audit: &Path) -> bool {
    records(audit)
        .iter()
        .any(|r| r["subject"] == "tools" && r["decision"] == "allow")
}

/// `warden audit verify` says the chain is intact and the session ended
/// (it has its end record); the end record.
fn verified_end(audit: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "verify"])
        .arg(audit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("no end record"), "{stdout}");
    let end = records(audit).pop().unwrap();
    assert_eq!(end["event"], "outcome", "{end}");
    assert_eq!(end["subject"], "mcp", "{end}");
    end
}

#[test]
fn initialize_is_answered_while_the_tools_compile_and_tools_list_once_they_have() {
    let (dir, policy) = python_policy();
    let audit = dir.path().join("audit.jsonl");
    let cache = dir.path().join("cold-cache");
    let mut server = Server::start(&policy, &audit, &["--cache-dir", cache.to_str().unwrap()]);

    let asked = Instant::now();
    server.send(initialize());
    let answer = server.next();
    let latency = asked.elapsed();
    assert_eq!(answer["id"], 0, "{answer}");
    assert_eq!(answer["result"]["protocolVersion"], warden::mcp::LATEST);
    // Answered before the Python component compiled (which takes seconds
    // even in a release build): no `tools` record yet, and the session's
    // first record is written.
    assert!(
        !tools_loaded(&audit),
        "initialize was answered only after the tools loaded ({latency:?})"
    );
    eprintln!("initialize answered in {latency:?} while the tools compiled");
    assert!(!records(&audit).is_empty());

    server.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
    server.send(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": { "_meta": { "progressToken": "load-1" } } }));
    let (progress, listed) = server.until_answer(1);
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calc", "word_frequencies"]);
    // One notification per component compiled (the first when the wait
    // began), each for this request's token, counting up to the total.
    assert!(!progress.is_empty(), "no progress notifications");
    let mut last = -1.0;
    for note in &progress {
        assert_eq!(note["method"], "notifications/progress", "{note}");
        let params = &note["params"];
        assert_eq!(params["progressToken"], "load-1", "{note}");
        assert_eq!(params["total"], 2, "{note}");
        let done = params["progress"].as_f64().unwrap();
        assert!(done > last && done <= 2.0, "{progress:?}");
        last = done;
    }
    assert!(
        progress.iter().any(|n| n["params"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("wordfreq_py.wasm")),
        "{progress:?}"
    );
    // Loaded once: a call needs no waiting and no progress.
    server.send(json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "calc", "arguments": { "expression": "6 * 7" },
            "_meta": { "progressToken": "call-2" } } }));
    let (between, called) = server.until_answer(2);
    assert!(between.is_empty(), "{between:?}");
    assert_eq!(called["result"]["content"][0]["text"], "42", "{called}");

    let closed = server.close();
    assert!(closed.status.success(), "{}", closed.stderr);
    assert!(
        closed.stderr.contains("warden mcp: tools ready in"),
        "{}",
        closed.stderr
    );
    let end = verified_end(&audit);
    assert_eq!(end["outcome"], "ok");
    assert_eq!(end["data"]["tools"], "loaded");
}

#[test]
fn closing_stdin_while_the_tools_compile_ends_the_session_at_once_with_its_end_record() {
    let (dir, policy) = python_policy();
    let audit = dir.path().join("audit.jsonl");
    let mut server = Server::start(&policy, &audit, &["--no-cache"]);
    server.send(initialize());
    assert_eq!(server.next()["id"], 0);
    // Both wait for the tools; the client leaves before they are loaded.
    server.send(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }));
    server.send(json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "calc", "arguments": { "expression": "1" } } }));
    let closed = server.close();
    assert!(
        closed.status.success(),
        "{:?}: {}",
        closed.status,
        closed.stderr
    );
    // Not after the compile (20 s and more here): at once.
    assert!(
        closed.took < Duration::from_secs(10),
        "exited {:?} after stdin closed",
        closed.took
    );
    // Both waiting requests are refused, saying why.
    assert_eq!(closed.rest.len(), 2, "{:?}", closed.rest);
    for answer in &closed.rest {
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("the session ended before the tools were loaded"),
            "{answer}"
        );
    }
    let end = verified_end(&audit);
    assert_eq!(end["outcome"], "ok", "{end}");
    assert!(end["data"]["tools"]["abandoned"].is_object(), "{end}");
    assert!(
        end["detail"]
            .as_str()
            .unwrap()
            .contains("left while the tools were loading"),
        "{end}"
    );
    assert!(!tools_loaded(&audit));
}

#[test]
fn a_component_that_cannot_load_is_named_to_the_client_and_the_session_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[model]\nallow = [\"scripted\"]\nmax_calls = 1\n\n[tools.calc]\ncomponent = \"builtin:calc\"\n\n[tools.nope]\ncomponent = \"nope.wasm\"\n",
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut server = Server::start(&policy, &audit, &["--no-cache"]);
    server.send(initialize());
    assert!(server.next()["result"]["protocolVersion"].is_string());
    server.send(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }));
    server.send(json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "calc", "arguments": { "expression": "1" } } }));
    server.send(json!({ "jsonrpc": "2.0", "id": 3, "method": "ping" }));
    let mut answers: Vec<Value> = (0..3).map(|_| server.next()).collect();
    answers.sort_by_key(|a| a["id"].as_u64());
    // The component, the reason and the policy's line, to every request
    // that needs the tools; the rest is served.
    for answer in &answers[..2] {
        assert_eq!(answer["error"]["code"], -32603, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("[tools.nope]") && message.contains("nope.wasm"),
            "{message}"
        );
        assert!(message.contains("No such file"), "{message}");
        assert!(message.contains("policy.toml:9:13"), "{message}");
    }
    assert_eq!(answers[2]["result"], json!({}));
    let closed = server.close();
    assert_eq!(closed.status.code(), Some(2), "{}", closed.stderr);
    assert!(closed.stderr.contains("nope.wasm"), "{}", closed.stderr);
    assert!(
        closed.stderr.contains("served no tools"),
        "{}",
        closed.stderr
    );
    let refused = records(&audit)
        .into_iter()
        .find(|r| r["subject"] == "tools")
        .unwrap();
    assert_eq!(refused["decision"], "deny");
    assert!(refused["detail"].as_str().unwrap().contains("nope.wasm"));
    let end = verified_end(&audit);
    assert_eq!(end["outcome"], "failed");
    assert!(
        end["detail"].as_str().unwrap().contains("nope.wasm"),
        "{end}"
    );
}

#[tokio::test]
async fn over_http_on_localhost_initialize_is_answered_at_once_progress_streams_and_sigterm_ends_it()
 {
    let (dir, policy) = python_policy();
    let audit = dir.path().join("audit.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["mcp", "--http", "localhost:0", "--no-cache", "--policy"])
        .arg(&policy)
        .arg("--audit")
        .arg(&audit)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
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
    // `localhost` resolved to a loopback address.
    assert!(
        url.starts_with("http://127.0.0.1:") || url.starts_with("http://[::1]:"),
        "{url}"
    );
    let rest = collect(stderr.into_inner());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let opened = client.post(&url).json(&initialize()).send().await.unwrap();
    assert_eq!(opened.status(), 200);
    assert!(
        !tools_loaded(&audit),
        "answered only after the tools loaded"
    );
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();

    // A client that takes an event stream gets the progress while it waits.
    let mut listing = client
        .post(&url)
        .header("mcp-session-id", &session)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": { "_meta": { "progressToken": 7 } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    assert_eq!(listing.headers()["content-type"], "text/event-stream");
    let mut events = String::new();
    while !events.contains("\n\n") {
        let chunk = tokio::time::timeout(HANG, listing.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("a progress event before the end");
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first: Value = serde_json::from_str(
        events
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["method"], "notifications/progress", "{first}");
    assert_eq!(first["params"]["progressToken"], 7);
    assert_eq!(first["params"]["total"], 2);

    // SIGTERM mid-compile: the waiting request is refused, the server
    // ends at once with its end record.
    let stopped = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    while let Some(chunk) = tokio::time::timeout(HANG, listing.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        events.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        events.contains("the session ended before the tools were loaded"),
        "{events}"
    );
    let status = wait(&mut child);
    let took = stopped.elapsed();
    assert!(status.success(), "{}", rest.lock().unwrap());
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM"
    );
    let end = verified_end(&audit);
    assert!(end["data"]["tools"]["abandoned"].is_object(), "{end}");
}

#[test]
fn mcp_http_accepts_names_that_resolve_to_loopback_only() {
    let refuse = |address: &str, expected: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["mcp", "--policy", "policies/demo.toml", "--http", address])
            .current_dir(repo())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{address}: {stderr}");
        assert!(stderr.contains(expected), "{address}: {stderr}");
        assert!(!stderr.contains("error: error:"), "{stderr}");
    };
    refuse(
        "10.0.0.1:1",
        "listens only on loopback addresses (127.0.0.1, [::1]); 10.0.0.1:1 is not one",
    );
    refuse("0.0.0.0:8931", "0.0.0.0:8931 is not one");
    refuse("localhost", "needs a port: e.g. `localhost:8931`");
    refuse("localhost:http", "`http` is not a port");
}
