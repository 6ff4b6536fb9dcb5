//! `warden worker` against a real `nats-server -js` started per test on
//! loopback with a temp store dir, workers as real processes: jobs spread
//! across workers, a worker killed mid-run, a NATS restart, a full queue,
//! and redelivered jobs that must not run again.

use crate::mock_model::{MockModel, Reply, openai_text};
use async_nats::jetstream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use warden::job::RunRequest;
use warden::worker::{
    self, ABANDONED_RULE, GAVE_UP_RULE, QueuedJob, RunResult, StreamLimits, SubmitError,
    read_audit, wait_result,
};

/// A `nats-server -js` on a free loopback port, with its own store dir;
/// killed on drop.
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = NatsServer {
            port,
            store: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (`make setup` installs Debian's nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's pid, to stop it with SIGSTOP (it keeps its
    /// connections and what they send, and answers nothing until
    /// SIGCONT).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap()
    }

    /// Stop (SIGTERM, as an orchestrator does) and start again on the same
    /// port and store.
    pub fn restart(&mut self, down_for: Duration) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        std::thread::sleep(down_for);
        self.spawn();
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(self.url())
            .await
            .unwrap();
        let js = jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(10);
        // (async-nats's `query_account` does not parse nats-server 2.9's
        // answer: ask the API directly.)
        let ready = |js: &jetstream::Context| {
            let client = js.client();
            async move {
                match client.request("$JS.API.INFO", "".into()).await {
                    Ok(reply) => {
                        let text = String::from_utf8_lossy(&reply.payload).to_string();
                        text.contains("account_info_response") && !text.contains("\"error\"")
                    }
                    Err(_) => false,
                }
            }
        };
        while !ready(&js).await {
            assert!(Instant::now() < deadline, "JetStream did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        js
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `warden worker` process; SIGKILLed on drop.
pub struct WorkerProcess {
    child: Child,
    pub name: String,
}

impl WorkerProcess {
    pub fn start(nats: &str, policies: &Path, name: &str, extra: &[&str]) -> WorkerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["worker", "--nats", nats, "--policies"])
            .arg(policies)
            .args(["--name", name, "--allow-model", "scripted:*"])
            .args([
                "--allow-model",
                "openai-compatible:http://127.0.0.1:*",
                "--cache-dir",
            ])
            .arg(crate::harness::cache_dir())
            .args(extra)
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Ready once it says so (its streams and consumer exist).
        let stderr = child.stderr.take().unwrap();
        let (ready, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains("taking runs") {
                    let _ = ready.send(());
                    sent = true;
                }
                if std::env::var_os("WARDEN_TEST_WORKER_LOG").is_some() {
                    eprintln!("[worker] {line}");
                }
            }
        });
        wait.recv_timeout(Duration::from_secs(60))
            .expect("the worker started");
        WorkerProcess {
            child,
            name: name.to_string(),
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A policy directory: `scripted.toml` (the scripted model, answering
/// "forty-two") and `remote.toml` (model `m` on a loopback server).
pub fn policies() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("scripted.toml"),
        "[model]\nallow = [\"scripted\"]\nmax_calls = 4\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("answer.script.toml"),
        "[[turn]]\ntext = \"forty-two\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("remote.toml"),
        "[model]\nallow = [\"m\"]\nmax_calls = 4\n",
    )
    .unwrap();
    dir
}

fn request(policy: &str, task: &str, model: String) -> RunRequest {
    RunRequest {
        agent: "builtin:react".into(),
        policy: policy.into(),
        task: task.into(),
        model: Some(model),
        run_id: None,
        approve: Vec::new(),
        approve_from: Vec::new(),
    }
}

pub fn scripted_job(run_id: &str) -> QueuedJob {
    QueuedJob {
        run_id: run_id.into(),
        enqueued_us: worker::now_us(),
        request: request(
            "scripted",
            "What is 6 * 7?",
            "scripted:answer.script.toml".into(),
        ),
    }
}

fn remote_job(run_id: &str, model: &MockModel) -> QueuedJob {
    QueuedJob {
        run_id: run_id.into(),
        enqueued_us: worker::now_us(),
        request: request(
            "remote",
            "Answer.",
            format!("openai-compatible:{}/v1#m", model.url),
        ),
    }
}

/// The run's audit from the stream, as a file, verified.
async fn verified_audit(js: &jetstream::Context, run_id: &str) -> (Vec<serde_json::Value>, String) {
    let lines = read_audit(js, run_id, 10_000).await.unwrap();
    let mut text = Vec::new();
    for line in &lines {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    let report = warden::audit::verify(&text[..]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert!(report.torn.is_empty());
    let records = lines
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    (records, report.head)
}

fn ends(records: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "run" && r["event"] == "outcome" && r["rule"] != ABANDONED_RULE)
        .collect()
}

async fn queue_messages(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream(worker::QUEUE_STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

async fn results_on_subject(js: &jetstream::Context, run_id: &str) -> u64 {
    let stream = js.get_stream(worker::EVENTS_STREAM).await.unwrap();
    let info = stream
        .info_with_subjects(worker::result_subject(run_id))
        .await
        .unwrap();
    use futures_util::StreamExt as _;
    let subjects: Vec<_> = info.collect().await;
    subjects.into_iter().map(|s| s.unwrap().1 as u64).sum()
}

/// Submit the scripted job `id`, again while NATS refuses it (a submitter
/// retries), for up to a minute.
async fn submit_until_stored(js: &jetstream::Context, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = worker::submit(js, &scripted_job(id)).await {
        assert!(Instant::now() < deadline, "submit kept failing: {error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each scripted run of `ids` answered, ended once, with one result.
async fn each_answered_once(js: &jetstream::Context, ids: &[String]) {
    for id in ids {
        let result = wait_result(js, id, Duration::from_secs(120)).await.unwrap();
        assert_eq!(result.answer.as_deref(), Some("forty-two"), "{id}");
        let (records, _) = verified_audit(js, id).await;
        assert_eq!(ends(&records).len(), 1, "{id} ended once");
        assert_eq!(results_on_subject(js, id).await, 1, "{id}");
    }
}

async fn drained(js: &jetstream::Context, within: Duration) {
    let deadline = Instant::now() + within;
    while queue_messages(js).await > 0 {
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_one_job_gives_its_answer_and_a_verifiable_chain() {
    let nats = NatsServer::start();
    let dir = policies();
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    let js = nats.jetstream().await;
    worker::submit(&js, &scripted_job("r-one")).await.unwrap();
    let result = wait_result(&js, "r-one", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result.answer.as_deref(), Some("forty-two"), "{result:?}");
    assert_eq!((result.attempt, result.worker.as_str()), (1, "w1"));
    assert!(result.enqueued_us <= result.started_us && result.started_us <= result.ended_us);
    let (records, head) = verified_audit(&js, "r-one").await;
    assert_eq!(result.audit_head, head, "the result names the chain's head");
    assert_eq!(result.audit_records, records.len() as u64);
    assert_eq!(records[0]["kind"], "run");
    assert_eq!(ends(&records).len(), 1);
    assert_eq!(ends(&records)[0]["data"]["answer"], "forty-two");
    drained(&js, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_three_workers_share_thirty_jobs_each_run_once() {
    let nats = NatsServer::start();
    let dir = policies();
    let workers: Vec<_> = (1..=3)
        .map(|i| {
            WorkerProcess::start(
                &nats.url(),
                dir.path(),
                &format!("w{i}"),
                &["--concurrency", "2"],
            )
        })
        .collect();
    let js = nats.jetstream().await;
    let ids: Vec<String> = (0..30).map(|i| format!("r-spread-{i}")).collect();
    for id in &ids {
        worker::submit(&js, &scripted_job(id)).await.unwrap();
    }
    let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let result = wait_result(&js, id, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(result.answer.as_deref(), Some("forty-two"));
        assert_eq!(result.attempt, 1);
        *by_worker.entry(result.worker).or_default() += 1;
        let (records, _) = verified_audit(&js, id).await;
        let openings = records
            .iter()
            .filter(|r| r["kind"] == "run" && r["event"] == "decision" && r["subject"] == "react")
            .count();
        assert_eq!((openings, ends(&records).len()), (1, 1), "{id} ran once");
        assert_eq!(results_on_subject(&js, id).await, 1);
    }
    for w in &workers {
        assert!(
            by_worker.get(&w.name).copied().unwrap_or(0) > 0,
            "{} did none: {by_worker:?}",
            w.name
        );
    }
    assert_eq!(by_worker.values().sum::<usize>(), 30);
    drained(&js, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_worker_killed_mid_run_is_redelivered_and_completes_once() {
    let nats = NatsServer::start();
    let dir = policies();
    // The first model call never answers in time: the worker is killed
    // while waiting on it. The second (the next attempt's) answers.
    let model = MockModel::start(vec![
        openai_text("too late", None).after(Duration::from_secs(600)),
        openai_text("finished by the second worker", None),
    ])
    .await;
    let mut first = WorkerProcess::start(&nats.url(), dir.path(), "doomed", &["--ack-wait", "2"]);
    let js = nats.jetstream().await;
    worker::submit(&js, &remote_job("r-killed", &model))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first worker never called the model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let partial = read_audit(&js, "r-killed", 10_000).await.unwrap();
    assert!(
        !partial.is_empty(),
        "the killed attempt's records are in the stream"
    );
    let _second = WorkerProcess::start(&nats.url(), dir.path(), "heir", &["--ack-wait", "2"]);
    let result = wait_result(&js, "r-killed", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        result.answer.as_deref(),
        Some("finished by the second worker")
    );
    assert_eq!((result.attempt, result.worker.as_str()), (2, "heir"));
    assert_eq!(model.seen().len(), 2, "one model call per attempt");
    let (records, _) = verified_audit(&js, "r-killed").await;
    // The killed attempt's records are kept as they were, first.
    for (kept, line) in records.iter().zip(&partial) {
        assert_eq!(
            kept,
            &serde_json::from_slice::<serde_json::Value>(line).unwrap()
        );
    }
    let marks: Vec<_> = records
        .iter()
        .filter(|r| r["rule"] == ABANDONED_RULE)
        .collect();
    assert_eq!(marks.len(), 1, "one abandoned mark");
    let mark = marks[0];
    assert_eq!(
        mark["seq"],
        partial.len() as u64 + 1,
        "the mark follows the last kept record"
    );
    assert_eq!(mark["data"]["abandoned"]["worker"], "doomed");
    assert_eq!(mark["data"]["attempt"], 2);
    assert_eq!(
        ends(&records).len(),
        1,
        "one end record: the run completed once"
    );
    assert_eq!(results_on_subject(&js, "r-killed").await, 1);
    drained(&js, Duration::from_secs(10)).await;
}

/// The attack: a job that kills every worker that runs it (here each is
/// SIGKILLed mid-run) would take worker after worker down and, once
/// JetStream stopped delivering it, leave its submitter waiting forever.
/// After `--max-attempts` attempts that never ended, the next worker does
/// not run it: it ends the run with a record saying why and a result
/// with that error, and the queue lets the job go.
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_job_that_kills_its_workers_is_given_up_with_a_result() {
    let nats = NatsServer::start();
    let dir = policies();
    let model = MockModel::start(vec![
        openai_text("never", None).after(Duration::from_secs(600)),
        openai_text("never", None).after(Duration::from_secs(600)),
        openai_text("must not be asked", None),
    ])
    .await;
    let js = nats.jetstream().await;
    let flags = ["--ack-wait", "2", "--max-attempts", "2"];
    for attempt in 1..=2 {
        let mut doomed = WorkerProcess::start(
            &nats.url(),
            dir.path(),
            &format!("doomed-{attempt}"),
            &flags,
        );
        if attempt == 1 {
            worker::submit(&js, &remote_job("r-poison", &model))
                .await
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while model.seen().len() < attempt {
            assert!(Instant::now() < deadline, "attempt {attempt} never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        doomed.kill();
    }
    let _last = WorkerProcess::start(&nats.url(), dir.path(), "judge", &flags);
    let result = wait_result(&js, "r-poison", Duration::from_secs(60))
        .await
        .expect("a result for the job that killed its workers");
    assert_eq!(result.answer, None);
    let error = result.error.clone().unwrap_or_default();
    assert!(
        error.contains("2 attempts") && error.contains("--max-attempts"),
        "{error}"
    );
    assert_eq!((result.attempt, result.worker.as_str()), (3, "judge"));
    assert_eq!(model.seen().len(), 2, "not run a third time");
    let (records, head) = verified_audit(&js, "r-poison").await;
    assert_eq!(result.audit_head, head);
    let marks = records
        .iter()
        .filter(|r| r["rule"] == ABANDONED_RULE)
        .count();
    assert_eq!(marks, 2, "both dead attempts are marked");
    let ended = ends(&records);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["rule"], GAVE_UP_RULE);
    assert_eq!(ended[0]["decision"], "deny");
    assert_eq!(records.last(), Some(ended[0]), "the give-up is the end");
    assert_eq!(results_on_subject(&js, "r-poison").await, 1);
    drained(&js, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_restart_mid_stream_loses_no_job() {
    let mut nats = NatsServer::start();
    let dir = policies();
    let _workers: Vec<_> = (1..=2)
        .map(|i| {
            WorkerProcess::start(
                &nats.url(),
                dir.path(),
                &format!("w{i}"),
                &["--ack-wait", "5"],
            )
        })
        .collect();
    let js = nats.jetstream().await;
    let ids: Vec<String> = (0..20).map(|i| format!("r-restart-{i}")).collect();
    for id in &ids[..10] {
        worker::submit(&js, &scripted_job(id)).await.unwrap();
    }
    nats.restart(Duration::from_millis(500));
    let js = nats.jetstream().await;
    for id in &ids[10..] {
        // A submit during the reconnect may fail: the submitter retries.
        submit_until_stored(&js, id).await;
    }
    each_answered_once(&js, &ids).await;
    drained(&js, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_full_queue_refuses_submits_and_a_saturated_worker_leaves_jobs_queued() {
    let nats = NatsServer::start();
    let dir = policies();
    let js = nats.jetstream().await;
    worker::ensure_streams(
        &js,
        &StreamLimits {
            queue_max_messages: 3,
            ..StreamLimits::default()
        },
    )
    .await
    .unwrap();
    let model = MockModel::start(
        (0..3)
            .map(|i| openai_text(&format!("slow {i}"), None).after(Duration::from_millis(1500)))
            .collect::<Vec<Reply>>(),
    )
    .await;
    for i in 0..3 {
        worker::submit(&js, &remote_job(&format!("r-full-{i}"), &model))
            .await
            .unwrap();
    }
    let refused = worker::submit(&js, &remote_job("r-full-3", &model))
        .await
        .unwrap_err();
    assert!(matches!(refused, SubmitError::QueueFull(_)), "{refused}");
    assert!(
        refused.to_string().contains("the run queue is full"),
        "{refused}"
    );
    assert_eq!(
        queue_messages(&js).await,
        3,
        "the refused job is not stored"
    );

    // One worker, one run at a time: the others wait in the queue.
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "busy", &["--concurrency", "1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while model.seen().is_empty() {
        assert!(Instant::now() < deadline, "the worker never started a run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        worker::queue_depth(&js).await.unwrap(),
        2,
        "two jobs still queued"
    );
    for i in 0..3 {
        let result = wait_result(&js, &format!("r-full-{i}"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(result.answer.unwrap().starts_with("slow"));
    }
    drained(&js, Duration::from_secs(10)).await;
    worker::submit(&js, &scripted_job("r-full-after"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_redelivered_completed_job_does_not_run_again() {
    let nats = NatsServer::start();
    let dir = policies();
    let model = MockModel::start(vec![openai_text("done once", None)]).await;
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    let js = nats.jetstream().await;
    let job = remote_job("r-again", &model);
    worker::submit(&js, &job).await.unwrap();
    let first: RunResult = wait_result(&js, "r-again", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(first.answer.as_deref(), Some("done once"));
    drained(&js, Duration::from_secs(10)).await;
    let (before, _) = verified_audit(&js, "r-again").await;

    // The same job delivered again (as after a lost ack, past the
    // queue's duplicate window: another message id).
    let redeliver = |id: &'static str| {
        let js = js.clone();
        let payload = serde_json::to_vec(&job).unwrap();
        async move {
            js.send_publish(
                worker::QUEUE_SUBJECT,
                jetstream::message::PublishMessage::build()
                    .payload(payload.into())
                    .message_id(id),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    redeliver("again-1").await;
    drained(&js, Duration::from_secs(10)).await;
    assert_eq!(model.seen().len(), 1, "the model was not called again");
    assert_eq!(results_on_subject(&js, "r-again").await, 1);
    let (after, _) = verified_audit(&js, "r-again").await;
    assert_eq!(after.len(), before.len(), "no record was added");

    // The worker died after the end record, before the result: the next
    // delivery rebuilds the result from the end record, still without
    // running.
    let stream = js.get_stream(worker::EVENTS_STREAM).await.unwrap();
    let stored = stream
        .get_last_raw_message_by_subject(&worker::result_subject("r-again"))
        .await
        .unwrap();
    assert!(stream.delete_message(stored.sequence).await.unwrap());
    redeliver("again-2").await;
    let rebuilt = wait_result(&js, "r-again", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(rebuilt.recovered);
    assert_eq!(rebuilt.answer.as_deref(), Some("done once"));
    assert_eq!(rebuilt.audit_head, first.audit_head);
    drained(&js, Duration::from_secs(10)).await;
    assert_eq!(model.seen().len(), 1, "still one model call");
}

/// A job that is not JSON, or names a run id that is not a subject token,
/// is given up (terminated) with no run and no result; a request naming a
/// policy outside the directory ends with an error result naming it.
#[tokio::test(flavor = "multi_thread")]
async fn nats_bad_jobs_are_refused_without_running() {
    let nats = NatsServer::start();
    let dir = policies();
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    let js = nats.jetstream().await;
    for payload in [&b"not json"[..], br#"{"run_id": "a.b.>", "request": {}}"#] {
        js.publish(worker::QUEUE_SUBJECT, payload.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut escape = scripted_job("r-escape");
    escape.request.policy = "../../etc/passwd".into();
    worker::submit(&js, &escape).await.unwrap();
    let result = wait_result(&js, "r-escape", Duration::from_secs(60))
        .await
        .unwrap();
    let error = result.error.unwrap();
    assert!(error.contains("policy"), "{error}");
    assert!(result.answer.is_none());
    let (records, _) = verified_audit(&js, "r-escape").await;
    assert_eq!(ends(&records).len(), 1);
    drained(&js, Duration::from_secs(10)).await;
}

/// An ask travels as a NATS request on the run's approve subject: the
/// answer decides (once → the call runs; deny → refused), and the
/// question carries the tool, the rule and the arguments.
#[tokio::test(flavor = "multi_thread")]
async fn nats_asks_are_answered_on_the_approve_subject() {
    let nats = NatsServer::start();
    let dir = policies();
    std::fs::write(
        dir.path().join("ask.toml"),
        "[model]\nallow = [\"scripted\"]\nmax_calls = 4\n\n[tools.calc]\ncomponent = \"builtin:calc\"\ndecision = \"ask\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("calc.script.toml"),
        "[[turn]]\ntext = \"computing\"\ncalls = [{ tool = \"calc\", arguments = { expression = \"6 * 7\" } }]\n\n[[turn]]\ntext = \"done\"\n",
    )
    .unwrap();
    let _worker =
        WorkerProcess::start(&nats.url(), dir.path(), "w1", &["--approval-timeout", "20"]);
    let js = nats.jetstream().await;
    let client = js.client();
    use futures_util::StreamExt as _;
    for (run_id, answer, outcome) in [("r-ask-yes", "once", "ok"), ("r-ask-no", "deny", "denied")] {
        let mut asks = client
            .subscribe(worker::approve_subject(run_id))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let job = QueuedJob {
            run_id: run_id.into(),
            enqueued_us: worker::now_us(),
            request: request("ask", "6 * 7?", "scripted:calc.script.toml".into()),
        };
        worker::submit(&js, &job).await.unwrap();
        let ask = tokio::time::timeout(Duration::from_secs(60), asks.next())
            .await
            .unwrap()
            .unwrap();
        let question: serde_json::Value = serde_json::from_slice(&ask.payload).unwrap();
        assert_eq!(question["run_id"], run_id);
        assert_eq!(question["subject"], "calc");
        assert!(
            question["rules"].to_string().contains("tools.calc"),
            "{question}"
        );
        let reply = ask.reply.unwrap();
        client
            .publish(
                reply,
                serde_json::json!({ "answer": answer }).to_string().into(),
            )
            .await
            .unwrap();
        let result = wait_result(&js, run_id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(result.answer.as_deref(), Some("done"), "{result:?}");
        let (records, _) = verified_audit(&js, run_id).await;
        let calc = records
            .iter()
            .find(|r| r["kind"] == "tool" && r["event"] == "outcome" && r["subject"] == "calc")
            .unwrap();
        assert_eq!(calc["outcome"], outcome, "{calc}");
    }
}

/// SIGTERM (Kubernetes stopping the pod) stops a worker taking jobs but
/// lets the run in hand finish: its result is stored, the job acked, and
/// the worker exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn nats_sigterm_lets_the_run_in_hand_finish() {
    let nats = NatsServer::start();
    let dir = policies();
    let model = MockModel::start(vec![
        openai_text("finished after SIGTERM", None).after(Duration::from_millis(1500)),
    ])
    .await;
    let mut worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    let js = nats.jetstream().await;
    worker::submit(&js, &remote_job("r-term", &model))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the worker never called the model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unsafe { libc::kill(worker.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let result = wait_result(&js, "r-term", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(result.answer.as_deref(), Some("finished after SIGTERM"));
    drained(&js, Duration::from_secs(5)).await;
}

/// The attack: anyone who may publish on the claims subject writes a claim
/// whose heartbeat lies far in the future, so every worker takes the run
/// as held elsewhere and it never runs. A heartbeat further ahead than a
/// claim lives is taken over as stale; the run completes once.
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_claim_with_a_future_heartbeat_does_not_hold_a_run_forever() {
    let nats = NatsServer::start();
    let dir = policies();
    let js = nats.jetstream().await;
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &["--ack-wait", "2"]);
    // The worker made its streams; forge the claim before the job exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.get_stream(worker::CLAIMS_STREAM).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the worker made no claims stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let forged = serde_json::json!({
        "worker": "forger",
        "attempt": 1,
        "heartbeat_us": worker::now_us() + 10 * 365 * 24 * 3600 * 1_000_000,
    });
    js.publish(
        worker::claim::claim_subject("r-forged"),
        serde_json::to_vec(&forged).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    worker::submit(&js, &scripted_job("r-forged"))
        .await
        .unwrap();
    let result = wait_result(&js, "r-forged", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(result.answer.as_deref(), Some("forty-two"), "{result:?}");
    assert_eq!(result.worker, "w1");
    let (records, _) = verified_audit(&js, "r-forged").await;
    assert_eq!(ends(&records).len(), 1);
}

/// `--replicas 3` on one server is refused at start, saying what it needs.
#[tokio::test(flavor = "multi_thread")]
async fn nats_replicas_past_the_servers_are_refused_clearly() {
    let nats = NatsServer::start();
    let dir = policies();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["worker", "--nats", &nats.url(), "--policies"])
        .arg(dir.path())
        .args(["--replicas", "3"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARDEN_RUNS with 3 replicas")
            && stderr.contains("needs a NATS cluster of at least N servers"),
        "{stderr}"
    );
    // One replica on the same server works, and the streams have one.
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &["--replicas", "1"]);
    let js = nats.jetstream().await;
    let mut stream = js.get_stream(worker::QUEUE_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 1);
}

/// Three `nats-server -js` routed into one cluster on loopback, each with
/// its own store; killed on drop.
struct NatsCluster {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    _stores: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    fn start(size: usize) -> NatsCluster {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let ports: Vec<u16> = (0..size).map(|_| free()).collect();
        let routes: Vec<u16> = (0..size).map(|_| free()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster {
            ports: ports.clone(),
            children: Vec::new(),
            _stores: Vec::new(),
        };
        for (i, (port, route)) in ports.iter().zip(&routes).enumerate() {
            let store = tempfile::tempdir().unwrap();
            let child = Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["--name", &format!("n{i}"), "--cluster_name", "warden"])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &all_routes, "-sd"])
                .arg(store.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server is installed");
            cluster.children.push(Some(child));
            cluster._stores.push(store);
        }
        for port in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "nats-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster
    }

    /// Every server's URL, separated by commas (as `--nats` takes them).
    fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// JetStream through every server, once the cluster has a leader.
    async fn jetstream(&self) -> jetstream::Context {
        let servers: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .unwrap();
        let js = jetstream::new(client);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reply = js.client().request("$JS.API.INFO", "".into()).await;
            if let Ok(reply) = reply {
                let text = String::from_utf8_lossy(&reply.payload).to_string();
                if text.contains("account_info_response") && !text.contains("\"error\"") {
                    return js;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the JetStream cluster did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// `--replicas 3` on a real three-server cluster: the streams are made
/// with three copies, and losing a server (SIGKILL, the one the worker
/// and the submitter may be talking to) loses no job and runs none twice.
#[tokio::test(flavor = "multi_thread")]
async fn nats_replicas_three_survive_losing_a_server_of_the_cluster() {
    let mut cluster = NatsCluster::start(3);
    let dir = policies();
    let js = cluster.jetstream().await;
    let _workers: Vec<_> = (1..=2)
        .map(|i| {
            WorkerProcess::start(
                &cluster.urls(),
                dir.path(),
                &format!("w{i}"),
                &["--replicas", "3", "--ack-wait", "5"],
            )
        })
        .collect();
    for name in [
        worker::QUEUE_STREAM,
        worker::EVENTS_STREAM,
        worker::CLAIMS_STREAM,
    ] {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 3, "{name}");
    }
    let ids: Vec<String> = (0..20).map(|i| format!("r-r3-{i}")).collect();
    for id in &ids[..10] {
        worker::submit(&js, &scripted_job(id)).await.unwrap();
    }
    cluster.kill(0);
    for id in &ids[10..] {
        // The submitter's connection may be to the server just lost: it
        // reconnects to another, and a submit is retried until stored.
        submit_until_stored(&js, id).await;
    }
    each_answered_once(&js, &ids).await;
    drained(&js, Duration::from_secs(30)).await;
}

/// A withdrawal (a front end ending a run no live worker holds) appends
/// the run's end record after the last record a dead attempt left, so
/// that attempt, if it is only cut off and comes back, cannot append
/// after it; and a run that ended before its result was published is
/// given its real result, not withdrawn.
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_withdrawal_fences_a_stale_attempt_and_keeps_a_run_that_ended() {
    use warden::audit::{AuditLog, Entry, Event, Kind, Outcome};
    use warden::worker::claim::Withdrawal;
    let nats = NatsServer::start();
    let dir = policies();
    let js = nats.jetstream().await;
    worker::ensure_streams(&js, &StreamLimits::default())
        .await
        .unwrap();
    // A dead attempt: one record, and a claim last renewed two minutes ago.
    let run = "r-zombie";
    let (sink, pump) = worker::sink::NatsSink::start(
        js.clone(),
        worker::audit_subject(run),
        0,
        worker::sink::SinkLimits {
            max_in_flight: 1 << 20,
            publish_deadline: Duration::from_secs(10),
        },
    );
    let audit = AuditLog::new(run).with_sink(sink);
    let entry = || Entry {
        kind: Kind::Tool,
        event: Event::Outcome,
        subject: "calc".into(),
        decision: warden::policy::Verdict::Allow,
        rule: "policy".into(),
        detail: "2".into(),
        outcome: Some(Outcome::Ok),
        data: None,
    };
    audit.write(entry()).unwrap();
    drop(audit);
    pump.await.unwrap().unwrap();
    let zombie_last = js
        .get_stream(worker::EVENTS_STREAM)
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&worker::audit_subject(run))
        .await
        .unwrap();
    let stale = serde_json::json!({
        "worker": "zombie",
        "attempt": 1,
        "heartbeat_us": worker::now_us() - 120_000_000,
        "lease_ms": 5_000,
    });
    js.publish(
        warden::worker::claim::claim_subject(run),
        stale.to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let withdrawal = Withdrawal {
        by: "test front end".into(),
        reason: "the run was cancelled: test".into(),
        cancelled: true,
    };
    let result = worker::withdraw(&js, run, 0, &withdrawal, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a stale claim is withdrawn");
    assert!(result.cancelled, "{result:?}");
    assert_eq!(result.audit_records, 2, "{result:?}");
    let (records, head) = verified_audit(&js, run).await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["rule"], worker::WITHDRAWN_RULE, "{}", records[1]);
    assert_eq!(result.audit_head, head);
    // The zombie's next records, chained after its own last, are refused:
    // the first has the same place (seq 2) as the withdrawal's end record,
    // and must not be acked as its duplicate.
    let (sink, pump) = worker::sink::NatsSink::start(
        js.clone(),
        worker::audit_subject(run),
        zombie_last.sequence,
        worker::sink::SinkLimits {
            max_in_flight: 1 << 20,
            publish_deadline: Duration::from_secs(5),
        },
    );
    let zombie = AuditLog::new(run)
        .with_head(&warden::audit::line_hash(&zombie_last.payload))
        .with_seq(1)
        .with_sink(sink);
    zombie.write(entry()).unwrap();
    let _ = zombie.write(entry());
    drop(zombie);
    let refused = pump.await.unwrap();
    assert!(
        refused.is_err(),
        "a stale attempt appended after the withdrawal: {refused:?}"
    );
    assert_eq!(verified_audit(&js, run).await.0.len(), 2);

    // A run that ended (its end record stored) but whose result was not
    // published is not withdrawn: its result is its answer.
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &[]);
    worker::submit(&js, &scripted_job("r-ended")).await.unwrap();
    wait_result(&js, "r-ended", Duration::from_secs(60))
        .await
        .unwrap();
    let events = js.get_stream(worker::EVENTS_STREAM).await.unwrap();
    let stored = events
        .get_last_raw_message_by_subject(&worker::result_subject("r-ended"))
        .await
        .unwrap();
    events.delete_message(stored.sequence).await.unwrap();
    let result = worker::withdraw(&js, "r-ended", 0, &withdrawal, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.answer.as_deref(), Some("forty-two"), "{result:?}");
    assert!(!result.cancelled, "{result:?}");
    let (records, _) = verified_audit(&js, "r-ended").await;
    assert!(
        records.iter().all(|r| r["rule"] != worker::WITHDRAWN_RULE),
        "an ended run got a withdrawal record"
    );
}

/// A worker cut off from NATS while its run waits on the model does not
/// go on with the run once it may have lost its claim: the attempt is
/// dropped, and once NATS is back the job runs again as attempt 2, the
/// first marked abandoned. (Here the renewal sent as NATS went down is
/// applied when it comes back, so the worker's next renewal finds the
/// claim changed and stops; a worker whose renewals fail without landing
/// stops on its own clock after half the ack wait, which this test does
/// not separate.)
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_worker_cut_off_from_nats_stops_its_run_before_its_claim_is_stale() {
    let mut nats = NatsServer::start();
    let dir = policies();
    let model = MockModel::start(vec![
        openai_text("too late", None).after(Duration::from_secs(30)),
        openai_text("second attempt", None),
    ])
    .await;
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &["--ack-wait", "4"]);
    let js = nats.jetstream().await;
    worker::submit(&js, &remote_job("r-cut-off", &model))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.seen().is_empty() {
        assert!(Instant::now() < deadline, "the run did not call its model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nats.restart(Duration::from_secs(6));
    let js = nats.jetstream().await;
    let result = wait_result(&js, "r-cut-off", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(result.attempt, 2, "{result:?}");
    assert_eq!(
        result.answer.as_deref(),
        Some("second attempt"),
        "{result:?}"
    );
    let (records, _) = verified_audit(&js, "r-cut-off").await;
    assert!(
        records.iter().any(|r| r["rule"] == ABANDONED_RULE),
        "the first attempt is marked"
    );
    assert_eq!(ends(&records).len(), 1);
}

/// A worker whose claim renewals fail without landing (here the claims
/// stream stops taking its subject for a while) stops its run on its own
/// clock after half the ack wait, instead of going on until the claim is
/// stale to others: once renewals work again, the job runs as attempt 2.
/// Before the self-stop, attempt 1 went on and answered "too late".
#[tokio::test(flavor = "multi_thread")]
async fn nats_a_worker_whose_renewals_fail_stops_its_run_on_its_own_clock() {
    let nats = NatsServer::start();
    let dir = policies();
    let model = MockModel::start(vec![
        openai_text("too late", None).after(Duration::from_secs(20)),
        openai_text("second attempt", None),
    ])
    .await;
    let _worker = WorkerProcess::start(&nats.url(), dir.path(), "w1", &["--ack-wait", "4"]);
    let js = nats.jetstream().await;
    worker::submit(&js, &remote_job("r-renewals", &model))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while model.seen().is_empty() {
        assert!(Instant::now() < deadline, "the run did not call its model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut claims = js.get_stream(worker::CLAIMS_STREAM).await.unwrap();
    let config = claims.info().await.unwrap().config.clone();
    let mut away = config.clone();
    away.subjects = vec!["warden.claims-away.>".into()];
    js.update_stream(away).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    js.update_stream(config).await.unwrap();
    let result = wait_result(&js, "r-renewals", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(result.attempt, 2, "{result:?}");
    assert_eq!(
        result.answer.as_deref(),
        Some("second attempt"),
        "{result:?}"
    );
}
