//! `warden serve`: the HTTP service, over real HTTP on loopback, with real
//! runs of the bundled react agent on scripted models (and a slow model
//! served by the test where a run must wait), real audit files in temp
//! dirs, and the real binary for the command line.

use crate::mock_model::{MockModel, openai_text};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use warden::job::JobConfig;
use warden::runtime::{Runtime, RuntimeConfig};
use warden::serve::auth::{Tokens, hash_token};
use warden::serve::{ServeLimits, ServeState};

const DEMO_POLICY: &str = r#"
[limits]
memory = "64MiB"
cpu = "5s"
wall = "60s"

[model]
allow = ["scripted", "gpt-test"]
provider = "scripted:demo.script.toml"
max_calls = 8

[tools.calc]
component = "builtin:calc"
max_calls = 10

[tools.word_count]
component = "builtin:text"
max_calls = 10

[tools.regex_search]
component = "builtin:text"
decision = "deny"
"#;

/// calc twice at most; word_count's results label the session, and calc
/// is refused once it is labeled.
const BUDGET_POLICY: &str = r#"
[model]
allow = ["scripted"]
provider = "scripted:two-calls.toml"
max_calls = 8

[tools.calc]
component = "builtin:calc"
max_calls = 2
deny_when_labeled = ["untrusted"]

[tools.word_count]
component = "builtin:text"
labels = ["untrusted"]
"#;

fn script(calls: &[(&str, Value)], answer: &str) -> String {
    let mut text = String::new();
    for (tool, arguments) in calls {
        text.push_str(&format!(
            "[[turn]]\ntext = \"calling\"\ncalls = [{{ tool = \"{tool}\", arguments_json = {} }}]\n\n",
            toml_string(&arguments.to_string())
        ));
    }
    text.push_str(&format!("[[turn]]\ntext = {}\n", toml_string(answer)));
    text
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.into()).to_string()
}

fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Arc::new(
                Runtime::new(RuntimeConfig {
                    cache_dir: Some(crate::harness::cache_dir().to_path_buf()),
                    max_instances: 64,
                })
                .unwrap(),
            )
        })
        .clone()
}

/// A server in this process on 127.0.0.1:0, with tokens:
/// `alice` (every policy), `bob` (`demo` only), `slow` (rate 1/s),
/// `one` (one run live at most).
struct Server {
    url: String,
    dir: tempfile::TempDir,
    state: Arc<ServeState>,
    client: reqwest::Client,
}

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";
const SLOW: &str = "slow-token-0123456789";
const ONE: &str = "one-token-0123456789";

impl Server {
    async fn start() -> Server {
        Self::start_with(|_, _| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut JobConfig, &mut ServeLimits)) -> Server {
        let tokens = format!(
            "{}{}{}{}",
            token_entry("alice", ALICE, "[\"*\"]", 1000.0, 16),
            token_entry("bob", BOB, "[\"demo\"]", 1000.0, 16),
            token_entry("slow", SLOW, "[\"*\"]", 1.0, 16),
            token_entry("one", ONE, "[\"*\"]", 1000.0, 1),
        );
        let tokens = Tokens::parse("tokens.toml", &tokens).unwrap();
        Self::start_with_tokens(tokens, configure).await
    }

    async fn start_with_tokens(
        tokens: Tokens,
        configure: impl FnOnce(&mut JobConfig, &mut ServeLimits),
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("demo.toml"), DEMO_POLICY).unwrap();
        std::fs::copy(
            crate::harness::repo().join("agents/react/demo.script.toml"),
            policies.join("demo.script.toml"),
        )
        .unwrap();
        std::fs::write(policies.join("budget.toml"), BUDGET_POLICY).unwrap();
        let calc = |e: &str| ("calc", json!({ "expression": e }));
        std::fs::write(
            policies.join("two-calls.toml"),
            script(&[calc("1 + 1"), calc("2 + 2")], "4"),
        )
        .unwrap();
        std::fs::write(
            policies.join("exhaust.toml"),
            script(&[calc("1"), calc("2"), calc("3"), calc("4")], "gave up"),
        )
        .unwrap();
        std::fs::write(
            policies.join("label-then-calc.toml"),
            script(
                &[("word_count", json!({ "text": "a b c" })), calc("5 * 5")],
                "labeled",
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("outside.toml"), DEMO_POLICY).unwrap();
        let mut jobs = JobConfig::new(&policies, dir.path().join("audit"));
        jobs.models = vec!["scripted:*".into()];
        let mut limits = ServeLimits {
            max_body: 64 << 10,
            ..ServeLimits::default()
        };
        configure(&mut jobs, &mut limits);
        let state = Arc::new(ServeState::new(runtime(), jobs, tokens, limits));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // The desk's routes as `warden serve` mounts them (no approver: its
        // list is empty; approvals_web tests asks end to end).
        let desk = warden::approvals::Desk::new(Default::default());
        let app = warden::serve::router_with(state.clone(), warden::approvals::web::router(desk));
        let serving = state.clone();
        tokio::spawn(async move {
            warden::serve::serve(
                serving,
                listener,
                app,
                Duration::from_secs(5),
                std::future::pending(),
            )
            .await
            .unwrap()
        });
        Server {
            url,
            dir,
            state,
            client: reqwest::Client::new(),
        }
    }

    fn policies(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    async fn submit(&self, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/runs", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Poll the run until it is over.
    async fn wait(&self, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, run) = self.get(token, &format!("/runs/{id}")).await;
            assert_eq!(status, 200, "{run}");
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap()) {
                return run;
            }
            assert!(Instant::now() < deadline, "the run did not end: {run}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn token_entry(name: &str, token: &str, policies: &str, rate: f64, max_runs: usize) -> String {
    format!(
        "[[token]]\nname = \"{name}\"\nsha256 = \"{}\"\npolicies = {policies}\nrate = {rate:?}\nmax_runs = {max_runs}\n\n",
        hash_token(token)
    )
}

fn demo_request() -> Value {
    json!({ "agent": "builtin:react", "policy": "demo", "task": "What is (17 * 23) + 4?" })
}

/// Read a server-sent event stream to its end: (event, id, data) each.
async fn read_events(response: reqwest::Response) -> Vec<(String, Option<String>, String)> {
    let mut response = response;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(chunk) = tokio::time::timeout_at(deadline.into(), response.chunk())
        .await
        .expect("the event stream ended in time")
        .unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let (mut event, mut id, mut data) = (String::new(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.into());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            (event, id, data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_submitted_run_answers_and_its_events_and_audit_match() {
    let server = Server::start().await;
    let (status, accepted) = server.submit(ALICE, demo_request()).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("r-"), "{accepted}");

    // Subscribed at once: what happened so far, then the rest, then the end.
    let events = server
        .client
        .get(format!("{}/runs/{id}/events", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(
        events.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = read_events(events).await;
    let run = server.wait(ALICE, &id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["answer"].as_str().unwrap().contains("395"), "{run}");
    assert_eq!(run["summary"]["refused"], 2, "{run}");

    let (last, records) = events.split_last().unwrap();
    assert_eq!(last.0, "end", "the stream ends with the run: {last:?}");
    let end: Value = serde_json::from_str(&last.2).unwrap();
    assert_eq!(end["status"], "succeeded");
    let records: Vec<Value> = records
        .iter()
        .map(|(event, id, data)| {
            assert_eq!(event, "record");
            let record: Value = serde_json::from_str(data).unwrap();
            assert_eq!(id.as_deref(), Some(record["seq"].to_string().as_str()));
            record
        })
        .collect();
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, none missing"
    );
    assert!(records.iter().all(|r| r["run"] == id.as_str()));
    let decisions: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["kind"] == "tool" && r["event"] == "decision")
        .map(|r| {
            (
                r["subject"].as_str().unwrap().into(),
                r["decision"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("calc".to_string(), "allow".to_string()),
            ("word_count".into(), "allow".into()),
            ("regex_search".into(), "deny".into()),
            ("shell".into(), "deny".into()),
        ]
    );
    let end_record = records.last().unwrap();
    assert_eq!(
        (end_record["kind"].as_str(), end_record["event"].as_str()),
        (Some("run"), Some("outcome"))
    );

    // The audit log: the same records, the chain intact, its head the run's.
    let log = server
        .client
        .get(format!("{}/runs/{id}/audit", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(log.status(), 200);
    let log = log.text().await.unwrap();
    let logged: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged, records, "the stream is the log");
    let on_disk =
        std::fs::read_to_string(server.dir.path().join(format!("audit/{id}.jsonl"))).unwrap();
    assert_eq!(on_disk, log);
    let (status, verified) = server.get(ALICE, &format!("/runs/{id}/audit/verify")).await;
    assert_eq!(status, 200);
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["complete"], true, "{verified}");
    assert_eq!(verified["head_matches"], true, "{verified}");
    assert_eq!(verified["head"], run["audit_head"]);

    // A late subscriber gets the whole run again; Last-Event-ID resumes.
    let late = server
        .client
        .get(format!("{}/runs/{id}/events", server.url))
        .bearer_auth(ALICE)
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let late = read_events(late).await;
    assert_eq!(late.len(), events.len() - 3);
    assert_eq!(late[0].1.as_deref(), Some("4"));

    let (status, listed) = server.get(ALICE, "/runs").await;
    assert_eq!(status, 200);
    assert_eq!(listed["runs"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_tampered_audit_file_fails_verify() {
    let server = Server::start().await;
    let (_, accepted) = server.submit(ALICE, demo_request()).await;
    let id = accepted["id"].as_str().unwrap().to_string();
    server.wait(ALICE, &id).await;
    let path = server.dir.path().join(format!("audit/{id}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"allow\"", "\"deny\"", 1)).unwrap();
    let (_, verified) = server.get(ALICE, &format!("/runs/{id}/audit/verify")).await;
    assert_eq!(verified["intact"], false, "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_auth_refuses_missing_wrong_and_other_tokens() {
    let server = Server::start().await;
    let url = format!("{}/runs", server.url);
    let no_token = server.client.get(&url).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    for bad in ["wrong", "alice-token-012345678", "alice-token-01234567890"] {
        let refused = server.get(bad, "/runs").await;
        assert_eq!(refused.0, 401, "{bad}: {}", refused.1);
    }
    let basic = server
        .client
        .get(&url)
        .header("authorization", format!("Basic {ALICE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    // Unknown routes too: nothing is served before authentication.
    let probe = server
        .client
        .get(format!("{}/nothing", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 401);

    // bob may run `demo` only.
    let (status, refused) = server
        .submit(
            BOB,
            json!({ "agent": "builtin:react", "policy": "budget", "task": "t" }),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may run: demo")
    );

    // Another token's run is as absent as one that never was.
    let (_, accepted) = server.submit(ALICE, demo_request()).await;
    let id = accepted["id"].as_str().unwrap().to_string();
    for path in [
        format!("/runs/{id}"),
        format!("/runs/{id}/events"),
        format!("/runs/{id}/audit"),
        format!("/runs/{id}/audit/verify"),
    ] {
        let (status, body) = server.get(BOB, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        let (never, never_body) = server.get(BOB, "/runs/r-0000000000000000").await;
        assert_eq!((never, &never_body), (404, &body), "no difference to tell");
    }
    let cancel = server
        .client
        .post(format!("{}/runs/{id}/cancel", server.url))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
    let (_, listed) = server.get(BOB, "/runs").await;
    assert_eq!(listed["runs"], json!([]));
    assert_eq!(server.wait(ALICE, &id).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_rate_and_concurrency_limits_answer_429() {
    let model = MockModel::start(vec![
        openai_text("late", None).after(Duration::from_secs(30)),
    ])
    .await;
    let spec = format!("openai-compatible:{}/v1#gpt-test", model.url);
    let allowed = spec.clone();
    let server = Server::start_with(move |jobs, _| jobs.models.push(allowed)).await;

    // `slow` may make one request a second.
    assert_eq!(server.get(SLOW, "/runs").await.0, 200);
    let limited = server
        .client
        .get(format!("{}/runs", server.url))
        .bearer_auth(SLOW)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Others are not affected.
    assert_eq!(server.get(ALICE, "/runs").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(server.get(SLOW, "/runs").await.0, 200, "the bucket refills");

    // `one` may have one run live.
    let slow_run =
        json!({ "agent": "builtin:react", "policy": "demo", "task": "wait", "model": spec });
    let (status, first) = server.submit(ONE, slow_run.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, second) = server.submit(ONE, demo_request()).await;
    assert_eq!(status, 429, "{second}");
    assert_eq!(second["error"]["code"], "too-many-runs");
    // Once it is over, the next is taken.
    let id = first["id"].as_str().unwrap();
    let cancelled = server
        .client
        .post(format!("{}/runs/{id}/cancel", server.url))
        .bearer_auth(ONE)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 202);
    server.wait(ONE, id).await;
    let (status, third) = server.submit(ONE, demo_request()).await;
    assert_eq!(status, 202, "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_cancel_stops_a_run_waiting_on_its_model_at_once() {
    let model = MockModel::start(vec![
        openai_text("late", None).after(Duration::from_secs(60)),
    ])
    .await;
    let spec = format!("openai-compatible:{}/v1#gpt-test", model.url);
    let allowed = spec.clone();
    let server = Server::start_with(move |jobs, _| jobs.models.push(allowed)).await;
    let (status, accepted) = server
        .submit(
            ALICE,
            json!({ "agent": "builtin:react", "policy": "demo", "task": "wait for the model", "model": spec }),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_string();
    // Wait until the model has the request: the agent is waiting on it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.seen().is_empty() {
        assert!(Instant::now() < deadline, "the model was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, running) = server.get(ALICE, &format!("/runs/{id}")).await;
    assert_eq!(running["status"], "running", "{running}");
    let asked = Instant::now();
    let cancel = server
        .client
        .post(format!("{}/runs/{id}/cancel", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let run = server.wait(ALICE, &id).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("cancelled by `alice`"),
        "{run}"
    );
    let log = std::fs::read_to_string(server.dir.path().join(format!("audit/{id}.jsonl"))).unwrap();
    let end: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        (end["kind"].as_str(), end["event"].as_str()),
        (Some("run"), Some("outcome"))
    );
    assert_eq!(end["data"]["cancelled"], true, "{end}");
    assert!(
        end["detail"]
            .as_str()
            .unwrap()
            .starts_with("the run was cancelled"),
        "{end}"
    );
    let (_, verified) = server.get(ALICE, &format!("/runs/{id}/audit/verify")).await;
    assert_eq!(
        (verified["intact"].as_bool(), verified["complete"].as_bool()),
        (Some(true), Some(true))
    );
    // Over: a second cancel is a conflict.
    let again = server
        .client
        .post(format!("{}/runs/{id}/cancel", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(server.state.live_runs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_names_that_leave_its_directories_and_bad_bodies() {
    let server = Server::start_with(|_, limits| limits.read_timeout = Duration::from_secs(1)).await;
    std::os::unix::fs::symlink(
        server.dir.path().join("outside.toml"),
        server.policies().join("link.toml"),
    )
    .unwrap();
    let cases = [
        (
            json!({ "agent": "builtin:react", "policy": "../outside", "task": "t" }),
            400,
            "policy",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "/etc/passwd", "task": "t" }),
            400,
            "policy",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "link", "task": "t" }),
            403,
            "policy",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "nope", "task": "t" }),
            422,
            "policy",
        ),
        (
            json!({ "agent": "/tmp/evil.wasm", "policy": "demo", "task": "t" }),
            400,
            "agent",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "demo", "task": "t", "model": "scripted:/etc/shadow" }),
            400,
            "model",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "demo", "task": "t", "model": "scripted:../outside.toml" }),
            400,
            "model",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "demo", "task": "t", "model": "openai-compatible:http://169.254.169.254/v1#x" }),
            403,
            "model",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "demo", "task": "t", "run_id": "r-1" }),
            400,
            "run_id",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "demo", "task": "t", "approve": ["tools.calc"] }),
            403,
            "approve",
        ),
        (
            json!({ "agent": "builtin:react", "policy": "demo", "task": "t", "audit": "/tmp/x" }),
            400,
            "body",
        ),
    ];
    for (body, status, field) in cases {
        let (got, answer) = server.submit(ALICE, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let policies = server.policies().display().to_string();
    for (body, _, _) in [(
        json!({ "agent": "builtin:react", "policy": "nope", "task": "t" }),
        0,
        0,
    )] {
        let (_, answer) = server.submit(ALICE, body).await;
        assert!(
            !answer.to_string().contains(&policies),
            "no server path: {answer}"
        );
    }
    // Too large: refused by its length, and by its bytes when it has none.
    let big = json!({ "agent": "builtin:react", "policy": "demo", "task": "x".repeat(100 << 10) });
    let (status, answer) = server.submit(ALICE, big.clone()).await;
    assert_eq!(status, 413, "{answer}");
    // Chunked, with no Content-Length: counted as it arrives.
    let body = big.to_string();
    let mut raw = format!(
        "POST /runs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(4096) {
        raw.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    raw.push_str("0\r\n\r\n");
    assert_eq!(raw_status(&server, raw.as_bytes()).await, 413);
    // A body that never arrives is refused after the read timeout, not held.
    let stalled = format!(
        "POST /runs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-length: 100\r\n\r\n{{"
    );
    assert_eq!(raw_status(&server, stalled.as_bytes()).await, 408);
    let (status, _) = server.submit(ALICE, json!("not an object")).await;
    assert_eq!(status, 400);
    assert_eq!(
        server.state.live_runs(),
        0,
        "no refused submit holds a slot"
    );
}

/// Send raw bytes on a new connection; the response's status code.
async fn raw_status(server: &Server, request: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://"))
        .await
        .unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = socket.write_all(request).await;
    let mut head = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(30), socket.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_are_isolated_budgets_and_labels_do_not_cross() {
    let server = Server::start().await;
    let submit = |model: &'static str| {
        server.submit(
            ALICE,
            json!({ "agent": "builtin:react", "policy": "budget", "task": "compute", "model": model }),
        )
    };
    // At once: one spends its calc budget, one is labeled, one does its two calls.
    let ((s1, exhaust), (s2, labeled), (s3, fine)) = tokio::join!(
        submit("scripted:exhaust.toml"),
        submit("scripted:label-then-calc.toml"),
        submit("scripted:two-calls.toml"),
    );
    assert_eq!((s1, s2, s3), (202, 202, 202), "{exhaust} {labeled} {fine}");
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let exhaust = server.wait(ALICE, &id(&exhaust)).await;
    let labeled = server.wait(ALICE, &id(&labeled)).await;
    let fine = server.wait(ALICE, &id(&fine)).await;
    assert_eq!(exhaust["summary"]["tool_calls"], 2, "{exhaust}");
    assert_eq!(exhaust["summary"]["refused"], 2, "{exhaust}");
    assert_eq!(
        labeled["summary"]["labels"],
        json!(["untrusted"]),
        "{labeled}"
    );
    assert_eq!(
        labeled["summary"]["refused"], 1,
        "calc refused once labeled: {labeled}"
    );
    assert_eq!(fine["summary"]["tool_calls"], 2, "{fine}");
    assert_eq!(fine["summary"]["refused"], 0, "{fine}");
    assert_eq!(fine["summary"]["labels"], json!([]), "{fine}");
    assert_eq!(fine["status"], "succeeded");
    assert_eq!(fine["answer"], "4");
    // One audit chain per run, each starting at genesis.
    for run in [&exhaust, &labeled, &fine] {
        let (_, verified) = server
            .get(
                ALICE,
                &format!("/runs/{}/audit/verify", run["id"].as_str().unwrap()),
            )
            .await;
        assert_eq!(verified["intact"], true, "{verified}");
        assert_eq!(verified["head_matches"], true, "{verified}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_a_server_full_of_runs_answers_503_and_forgets_the_oldest_finished() {
    let model = MockModel::start(vec![
        openai_text("late", None).after(Duration::from_secs(60)),
    ])
    .await;
    let spec = format!("openai-compatible:{}/v1#gpt-test", model.url);
    let allowed = spec.clone();
    let server = Server::start_with(move |jobs, limits| {
        jobs.models.push(allowed);
        limits.max_live_runs = 1;
        limits.max_kept_runs = 2;
        limits.max_streams_per_token = 1;
    })
    .await;
    let (status, live) = server
        .submit(
            ALICE,
            json!({ "agent": "builtin:react", "policy": "demo", "task": "wait", "model": spec }),
        )
        .await;
    assert_eq!(status, 202, "{live}");
    let (status, full) = server.submit(BOB, demo_request()).await;
    assert_eq!(status, 503, "{full}");
    assert_eq!(full["error"]["code"], "server-full");
    let live = live["id"].as_str().unwrap().to_string();
    // One stream per token here: a second is refused while the first is open.
    let first = server
        .client
        .get(format!("{}/runs/{live}/events", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let (status, second) = server
        .get(ALICE, &format!("/runs/{live}/audit/verify"))
        .await;
    assert_eq!(status, 429, "{second}");
    assert_eq!(second["error"]["code"], "streams-full");
    drop(first);
    server
        .client
        .post(format!("{}/runs/{live}/cancel", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    server.wait(ALICE, &live).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, run) = server.submit(ALICE, demo_request()).await;
        assert_eq!(status, 202, "{run}");
        ids.push(run["id"].as_str().unwrap().to_string());
        server.wait(ALICE, ids.last().unwrap()).await;
    }
    assert_eq!(
        server.get(ALICE, &format!("/runs/{live}")).await.0,
        404,
        "forgotten"
    );
    assert!(
        server
            .dir
            .path()
            .join(format!("audit/{live}.jsonl"))
            .exists(),
        "its audit file is kept"
    );
    assert_eq!(server.get(ALICE, &format!("/runs/{}", ids[1])).await.0, 200);
}

/// Check `value` against the schema `schema` of docs/openapi.json.
pub(crate) fn openapi_check(schema: &str, value: &Value) {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::harness::repo().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    let root = json!({
        "$ref": format!("#/components/schemas/{schema}"),
        "components": spec["components"],
    });
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{schema}: {errors:?}\n{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_the_openapi_description_matches_the_router_and_real_responses() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::harness::repo().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let documented: std::collections::BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete", "patch"].contains(&k.as_str()))
                .map(|method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let served: std::collections::BTreeSet<(String, String)> = warden::serve::routes()
        .into_iter()
        .chain(warden::approvals::web::routes())
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, served,
        "docs/openapi.json and the router differ"
    );

    let server = Server::start().await;
    let check = openapi_check;
    // Every route is served (none answers the router's 404 or 405), and
    // each documented response schema holds for a real answer.
    let (status, accepted) = server.submit(ALICE, demo_request()).await;
    assert_eq!(status, 202);
    check("Run", &accepted);
    let id = accepted["id"].as_str().unwrap().to_string();
    let done = server.wait(ALICE, &id).await;
    check("Run", &done);
    let (_, listed) = server.get(ALICE, "/runs").await;
    check("RunList", &listed);
    let (_, verified) = server.get(ALICE, &format!("/runs/{id}/audit/verify")).await;
    check("Verify", &verified);
    let events = server
        .client
        .get(format!("{}/runs/{id}/events", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    for (event, _, data) in read_events(events).await {
        let data: Value = serde_json::from_str(&data).unwrap();
        check(if event == "end" { "Run" } else { "Record" }, &data);
    }
    let audit = server
        .client
        .get(format!("{}/runs/{id}/audit", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(audit.status(), 200);
    for line in audit.text().await.unwrap().lines() {
        check("Record", &serde_json::from_str(line).unwrap());
    }
    let cancel = server
        .client
        .post(format!("{}/runs/{id}/cancel", server.url))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 409);
    check("Error", &cancel.json().await.unwrap());
    let (status, refused) = server.get(ALICE, "/runs/r-nope").await;
    assert_eq!(status, 404);
    check("Error", &refused);
    let (_, unauthenticated) = server.get("nope", "/runs").await;
    check("Error", &unauthenticated);
    let (_, invalid) = server.submit(ALICE, json!({ "policy": "../x" })).await;
    check("Error", &invalid);
    // The desk's routes (asks themselves: approvals_web's `asks_of` checks
    // every list it reads against `ApprovalList`).
    let (status, pending) = server.get(ALICE, "/approvals").await;
    assert_eq!(status, 200, "{pending}");
    check("ApprovalList", &pending);
    for (body, code) in [
        (r#"{"answer": "once"}"#, 404),
        (r#"{"answer": "maybe"}"#, 400),
    ] {
        let answered = server
            .client
            .post(format!("{}/approvals/a-nope", server.url))
            .bearer_auth(ALICE)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answered.status(), code);
        check("Error", &answered.json().await.unwrap());
    }
    // Each documented status of each operation has a schema or is a stream.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (code, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response.get("content").is_some() || code == "204",
                    "{method} {path} {code} documents no content"
                );
            }
        }
    }
}

/// `warden serve` itself: a token made with `hash-token --new`, a run
/// submitted over HTTP, and the addresses it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_the_command_line_serves_with_a_hashed_token_and_refuses_open_addresses() {
    use std::process::{Command, Stdio};
    let warden = env!("CARGO_BIN_EXE_warden");
    let made = Command::new(warden)
        .args(["serve", "hash-token", "--new"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let made = String::from_utf8(made.stdout).unwrap();
    let token = made
        .lines()
        .find_map(|l| l.strip_prefix("token:  "))
        .unwrap()
        .to_string();
    let hash = made
        .lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .unwrap()
        .to_string();
    let mut from_stdin = Command::new(warden)
        .args(["serve", "hash-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    from_stdin
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let out = from_stdin.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), hash);

    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("demo.toml"), DEMO_POLICY).unwrap();
    std::fs::copy(
        crate::harness::repo().join("agents/react/demo.script.toml"),
        policies.join("demo.script.toml"),
    )
    .unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!("[[token]]\nname = \"ci\"\nsha256 = \"{hash}\"\npolicies = [\"demo\"]\n"),
    )
    .unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--policies".into(),
            policies.display().to_string(),
            "--audit-dir".into(),
            dir.path().join("audit").display().to_string(),
            "--cache-dir".into(),
            crate::harness::cache_dir().display().to_string(),
            "--max-runs".into(),
            "8".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // No authentication is only for loopback, and some authentication is required.
    let open = Command::new(warden)
        .args(args(&["--insecure-no-auth", "--listen", "0.0.0.0:0"]))
        .output()
        .unwrap();
    assert_eq!(open.status.code(), Some(2), "{open:?}");
    assert!(
        String::from_utf8_lossy(&open.stderr).contains("only loopback"),
        "{open:?}"
    );
    let none = Command::new(warden)
        .args(args(&["--listen", "127.0.0.1:0"]))
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no tokens"),
        "{none:?}"
    );

    let mut child = Command::new(warden)
        .args(args(&[
            "--tokens",
            &tokens.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ]))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = sender.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let url = receiver
        .recv_timeout(Duration::from_secs(60))
        .expect("warden serve listens");
    let client = reqwest::Client::new();
    let unauthenticated = client.get(format!("{url}/runs")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let accepted: Value = client
        .post(format!("{url}/runs"))
        .bearer_auth(&token)
        .json(&demo_request())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        let run: Value = client
            .get(format!("{url}/runs/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] != "queued" && run["status"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(dir.path().join(format!("audit/{id}.jsonl")).exists());
    // SIGTERM: it stops cleanly.
    let pid = child.id() as i32;
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("warden serve did not stop at SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// The attack on `--insecure-no-auth`: no token stands between the API and
/// a web page the person has open. A cross-site "simple" POST (text/plain,
/// no preflight) started runs; a page rebinding its own name to 127.0.0.1
/// read them. Both are refused; a local client and the page served from
/// loopback are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_auth_refuses_other_sites_and_rebound_names() {
    let server = Server::start_with_tokens(Tokens::insecure(1000.0, 16), |_, _| {}).await;
    let body = demo_request().to_string();
    let post = |origin: Option<&str>, host: Option<&str>| {
        let mut request = server
            .client
            .post(format!("{}/runs", server.url))
            .header("content-type", "text/plain")
            .body(body.clone());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.send()
    };
    let cross_site = post(Some("https://attacker.example"), None).await.unwrap();
    assert_eq!(cross_site.status(), 403);
    let said = cross_site.text().await.unwrap();
    assert!(said.contains("other origins"), "{said}");
    let opaque = post(Some("null"), None).await.unwrap();
    assert_eq!(opaque.status(), 403);
    let rebound = server
        .client
        .get(format!("{}/runs", server.url))
        .header("host", "attacker.example:8940")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let said = rebound.text().await.unwrap();
    assert!(said.contains("attacker.example"), "{said}");
    let rebound_page = server
        .client
        .get(format!("{}/approvals", server.url))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound_page.status(), 403);
    // Nothing ran.
    let (status, list) = server.get("", "/runs").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["runs"], json!([]), "{list}");
    // A local client, and the page from this machine, are served.
    let port = server.url.rsplit(':').next().unwrap();
    let local = post(Some(&format!("http://127.0.0.1:{port}")), None)
        .await
        .unwrap();
    assert_eq!(local.status(), 202, "{:?}", local.text().await);
    let by_name = post(None, Some(&format!("localhost:{port}")))
        .await
        .unwrap();
    assert_eq!(by_name.status(), 202, "{:?}", by_name.text().await);
}

/// Audit logs are kept, never deleted by the server: a disk with less room
/// than `--min-free-disk` refuses new runs (507, `disk-full`) instead of
/// letting clients fill it.
#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_runs_when_the_audit_disk_has_no_room() {
    let server = Server::start_with(|_, limits| limits.min_free_disk = u64::MAX).await;
    let (status, body) = server.submit(ALICE, demo_request()).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "disk-full", "{body}");
    openapi_check("Error", &body);
    assert_eq!(server.state.live_runs(), 0);
    let room = Server::start_with(|_, limits| limits.min_free_disk = 1).await;
    let (status, body) = room.submit(ALICE, demo_request()).await;
    assert_eq!(status, 202, "{body}");
}
