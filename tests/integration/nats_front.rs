//! `warden serve --nats`: the HTTP API in front of a cluster. Runs are put
//! on a real `nats-server -js`'s queue and run by a real `warden worker`;
//! the front end serves their records, audit and verify from what it read
//! back from JetStream, relays their asks to its approvals desk, and sends
//! cancels to the worker.

use crate::harness::*;
use crate::nats::{NatsServer, WorkerProcess, policies};
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use warden::worker::{read_audit, stored_result};

/// Asks about every `calc` call the attacker agent makes (its expression
/// is not from `word_count`).
const ASKS: &str = r#"
[model]
allow = ["scripted"]
provider = "scripted:answer.script.toml"

[tools.calc]
component = "builtin:calc"
args.expression = { from = ["tool:word_count"], decision = "ask" }

[tools.word_count]
component = "builtin:text"

[approvals]
timeout = "10m"

[limits]
wall = "15m"
"#;

/// `warden serve --nats URL --insecure-no-auth` on loopback; killed on drop.
struct Front {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Front {
    fn start(nats: &str, policies: &Path, agents: &Path, audit: &Path) -> Front {
        Front::start_with(nats, policies, agents, audit, &[])
    }

    fn start_with(
        nats: &str,
        policies: &Path,
        agents: &Path,
        audit: &Path,
        extra: &[&str],
    ) -> Front {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["serve", "--nats", nats, "--policies"])
            .arg(policies)
            .arg("--agents")
            .arg(agents)
            .arg("--audit-dir")
            .arg(audit)
            .args(["--insecure-no-auth", "--listen", "127.0.0.1:0"])
            .args(["--allow-model", "scripted:*", "--max-runs", "16"])
            .arg("--cache-dir")
            .arg(cache_dir())
            .args(extra)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                if std::env::var_os("WARDEN_TEST_WORKER_LOG").is_some() {
                    eprintln!("[serve] {line}");
                }
            }
        });
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("warden serve --nats did not say where it listens");
        Front {
            child,
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> String {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn submit(&self, request: Value) -> String {
        let (status, view) = self.post("/runs", request).await;
        assert_eq!(status, 202, "{view}");
        view["id"].as_str().unwrap().to_string()
    }

    async fn finished(&self, run: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, view) = self.get(&format!("/runs/{run}")).await;
            if view.get("finished").is_some() {
                return view;
            }
            assert!(Instant::now() < deadline, "{run} did not end: {view}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn asks_of(&self, run: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get("/approvals").await;
            assert_eq!(status, 200, "{body}");
            let asks: Vec<Value> = body["pending"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a["run"] == run)
                .collect();
            if !asks.is_empty() {
                return asks;
            }
            assert!(
                Instant::now() < deadline,
                "no ask of {run} reached the desk"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn calls(expression: &str) -> Value {
    let ops = json!([{ "tool": "calc", "args": json!({ "expression": expression }).to_string() }]);
    json!({ "agent": "attacker", "policy": "asks", "task": format!("calls:{ops}") })
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_serve_front_end_queues_runs_follows_them_relays_asks_and_cancels() {
    let nats = NatsServer::start();
    let dir = policies();
    std::fs::write(dir.path().join("asks.toml"), ASKS).unwrap();
    let agents = tempfile::tempdir().unwrap();
    std::fs::copy(guests::ATTACKER, agents.path().join("attacker.wasm")).unwrap();
    let audit = tempfile::tempdir().unwrap();
    let agents_flag = agents.path().to_str().unwrap().to_string();
    let front = Front::start(&nats.url(), dir.path(), agents.path(), audit.path());
    // Queued before any worker runs: the run waits in JetStream.
    let run = front
        .submit(json!({
            "agent": "builtin:react",
            "policy": "scripted",
            "task": "What is 6 * 7?",
            "model": "scripted:answer.script.toml",
        }))
        .await;
    let (_, view) = front.get(&format!("/runs/{run}")).await;
    assert_eq!(view["status"], "queued", "{view}");
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &["--agents", &agents_flag]);
    let view = front.finished(&run).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["answer"], "forty-two");
    assert_eq!(view["summary"]["model_calls"], 1, "{view}");
    // The front end's copy of the log is the stream's, byte for byte, and
    // verifies with the head the worker published.
    let js = nats.jetstream().await;
    let stream: Vec<String> = read_audit(&js, &run, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect();
    let copy = front.text(&format!("/runs/{run}/audit")).await;
    assert_eq!(copy.lines().collect::<Vec<_>>(), stream);
    assert_eq!(view["records"], stream.len());
    let (_, verified) = front.get(&format!("/runs/{run}/audit/verify")).await;
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["head_matches"], true, "{verified}");
    assert_eq!(verified["complete"], true, "{verified}");
    // The events stream serves the same records.
    let events = front.text(&format!("/runs/{run}/events")).await;
    assert_eq!(
        events.matches("event: record\n").count(),
        stream.len(),
        "{events}"
    );
    assert!(events.contains("event: end\n"), "{events}");

    // An ask on the worker reaches this desk; the answer goes back.
    let asked = front.submit(calls("6 * 7")).await;
    let asks = front.asks_of(&asked).await;
    assert_eq!(asks[0]["subject"], "calc");
    assert_eq!(
        asks[0]["data"]["arguments"]["expression"], "6 * 7",
        "{}",
        asks[0]
    );
    let id = asks[0]["id"].as_str().unwrap();
    let (status, body) = front
        .post(&format!("/approvals/{id}"), json!({ "answer": "once" }))
        .await;
    assert_eq!(status, 200, "{body}");
    let view = front.finished(&asked).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    let records = front.text(&format!("/runs/{asked}/audit")).await;
    assert!(
        records.contains("a person (anonymous)"),
        "the worker's record names who approved: {records}"
    );

    // A run waiting on an ask is cancelled on the worker; its ask leaves
    // the desk.
    let waiting = front.submit(calls("1 + 1")).await;
    front.asks_of(&waiting).await;
    let (status, body) = front
        .post(&format!("/runs/{waiting}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let view = front.finished(&waiting).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    let end: Value = read_audit(&js, &waiting, 10_000)
        .await
        .unwrap()
        .last()
        .map(|l| serde_json::from_slice(l).unwrap())
        .unwrap();
    assert!(end["data"].get("cancelled").is_some(), "{end}");
    let (_, desk) = front.get("/approvals").await;
    assert_eq!(desk["pending"], json!([]), "{desk}");
}

fn scripted() -> Value {
    json!({
        "agent": "builtin:react",
        "policy": "scripted",
        "task": "What is 6 * 7?",
        "model": "scripted:answer.script.toml",
    })
}

/// JetStream that takes a job but does not answer within its timeout (a
/// slow or partitioned server; here one stopped with SIGSTOP and
/// continued) must not make the front end refuse a run that it then
/// leaves running unfollowed: what it answers must be true.
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_run_whose_queue_does_not_answer_in_time_is_not_refused_and_then_run_unseen() {
    let nats = NatsServer::start();
    let dir = policies();
    let agents = tempfile::tempdir().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let front = Front::start(&nats.url(), dir.path(), agents.path(), audit.path());
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    let js = nats.jetstream().await;
    let pid = nats.pid();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Continued after JetStream's 5 s publish timeout has passed.
    let resumed = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(7));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let (status, view) = front.post("/runs", scripted()).await;
    resumed.join().unwrap();
    if status != 202 {
        // The id was never told: look for any run's records.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let mut events = js.get_stream(warden::worker::EVENTS_STREAM).await.unwrap();
        let stored = events.info().await.unwrap().state.messages;
        panic!(
            "refused with {status} {view}, and a worker ran it anyway: {stored} records and results"
        );
    }
    let run = view["id"].as_str().unwrap().to_string();
    let view = front.finished(&run).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    assert_eq!(view["answer"], "forty-two");
    let result = stored_result(&js, &run).await.unwrap().unwrap();
    assert_eq!(result.attempt, 1, "the run ran once: {result:?}");
    let copy = front.text(&format!("/runs/{run}/audit")).await;
    let report = warden::audit::verify(copy.as_bytes()).unwrap();
    assert_eq!(report.records as u64, result.audit_records, "{copy}");
    assert!(report.problems.is_empty(), "{copy}");
    assert_eq!(report.head, result.audit_head);
}

/// A run cancelled while no worker has taken it ends at once, gives back
/// its slot, and never runs: a worker that starts later finds it
/// withdrawn.
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_queued_run_cancelled_before_any_worker_ends_at_once_and_never_runs() {
    let nats = NatsServer::start();
    let dir = policies();
    let agents = tempfile::tempdir().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let front = Front::start_with(
        &nats.url(),
        dir.path(),
        agents.path(),
        audit.path(),
        &["--queue-timeout", "3"],
    );
    let run = front.submit(scripted()).await;
    let (status, body) = front
        .post(
            &format!("/runs/{run}/cancel"),
            json!({ "reason": "changed my mind" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let view = front.finished(&run).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    // Nobody takes the other one: it is given up after --queue-timeout.
    let waited = front.submit(scripted()).await;
    let view = front.finished(&waited).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert!(
        view["error"].as_str().unwrap().contains("--queue-timeout"),
        "{view}"
    );
    let js = nats.jetstream().await;
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    // The worker takes both jobs off the queue without running them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut queue = js.get_stream(warden::worker::QUEUE_STREAM).await.unwrap();
    while queue.info().await.unwrap().state.messages > 0 {
        assert!(
            Instant::now() < deadline,
            "the worker did not take the jobs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (run, cancelled) in [(&run, true), (&waited, false)] {
        let result = stored_result(&js, run).await.unwrap().unwrap();
        assert_eq!(result.attempt, 0, "{run} ran: {result:?}");
        assert_eq!(result.cancelled, cancelled, "{result:?}");
        // Its one record is the withdrawal's end record, which the front
        // end's copy has too.
        let records = read_audit(&js, run, 10).await.unwrap();
        assert_eq!(records.len(), 1, "{run} ran");
        let end: Value = serde_json::from_slice(&records[0]).unwrap();
        assert_eq!(end["rule"], warden::worker::WITHDRAWN_RULE, "{end}");
        assert_eq!(end["data"].get("cancelled").is_some(), cancelled, "{end}");
        let (_, verified) = front.get(&format!("/runs/{run}/audit/verify")).await;
        assert_eq!(verified["complete"], true, "{verified}");
        assert_eq!(verified["head_matches"], true, "{verified}");
    }
    // A tool the worker cannot load: the client is told so, not the
    // worker's paths and the compiler's text (those are in its log).
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm not a component").unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        "[model]\nallow = [\"scripted\"]\nprovider = \"scripted:answer.script.toml\"\n\n\
         [tools.calc]\ncomponent = \"broken.wasm\"\n",
    )
    .unwrap();
    let mut request = scripted();
    request["policy"] = json!("broken");
    let broken = front.submit(request).await;
    let view = front.finished(&broken).await;
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(
        view["error"], "a tool of the policy cannot be loaded (the server's log says why)",
        "{view}"
    );
}

/// A front end that stops (killed: a crash, or a rolling update) and
/// starts again on the same audit directory knows its runs again: one
/// still queued is followed to its end, one that ended while no front end
/// was up ends with its stored result, one it saw end is shown as it
/// ended; each audit copy is the stream's.
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_restarted_front_end_knows_and_follows_its_runs_again() {
    let nats = NatsServer::start();
    let dir = policies();
    let agents = tempfile::tempdir().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let start = || Front::start(&nats.url(), dir.path(), agents.path(), audit.path());
    let js = nats.jetstream().await;
    let front = start();
    let queued = front.submit(scripted()).await;
    let (_, before) = front.get(&format!("/runs/{queued}")).await;
    drop(front);
    let front = start();
    let (status, view) = front.get(&format!("/runs/{queued}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "queued", "{view}");
    assert_eq!(view["created"], before["created"], "{view}");
    let worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    let view = front.finished(&queued).await;
    assert_eq!(view["status"], "succeeded", "{view}");
    // Submitted, then no front end while it runs.
    let unseen = front.submit(scripted()).await;
    drop(front);
    warden::worker::wait_result(&js, &unseen, Duration::from_secs(120))
        .await
        .unwrap();
    drop(worker);
    let front = start();
    for run in [&queued, &unseen] {
        let view = front.finished(run).await;
        assert_eq!(view["status"], "succeeded", "{run}: {view}");
        assert_eq!(view["answer"], "forty-two", "{view}");
        let stream: Vec<String> = read_audit(&js, run, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect();
        let copy = front.text(&format!("/runs/{run}/audit")).await;
        assert_eq!(copy.lines().collect::<Vec<_>>(), stream, "{run}");
        let (_, verified) = front.get(&format!("/runs/{run}/audit/verify")).await;
        assert_eq!(verified["intact"], true, "{verified}");
        assert_eq!(verified["head_matches"], true, "{verified}");
    }
    let (_, listed) = front.get("/runs").await;
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2, "{listed}");
    // A second front end on the same audit directory would follow, copy
    // and forget this one's runs: it is refused.
    let second = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--nats", &nats.url(), "--policies"])
        .arg(dir.path())
        .arg("--audit-dir")
        .arg(audit.path())
        .args(["--insecure-no-auth", "--listen", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(cache_dir())
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("uses the audit directory"), "{said}");
}
