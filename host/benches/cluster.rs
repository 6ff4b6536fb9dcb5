//! Runs per second end to end through NATS JetStream with 1, 2 and 4
//! `warden worker` processes (2 runs each at once), the scripted model, and
//! the share of each job's time spent waiting in the queue (all jobs
//! submitted at once, and one at a time); the floor is the
//! same runs in this process, 2 at once, with no NATS. A fresh
//! `nats-server -js` (loopback, temp store) per worker count.
//!
//! env -u RUST_BACKTRACE cargo bench -p warden --bench cluster
//! WARDEN_BENCH_RUNS=N (default 200) runs per measurement.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, MemorySink, new_run_id};
use warden::job::RunRequest;
use warden::load::{ComponentSource, PolicyFile};
use warden::provider::ScriptedProvider;
use warden::run::{RunSpec, run};
use warden::runtime::{Runtime, RuntimeConfig};
use warden::worker::{self, QueuedJob, RunResult};

const POLICY: &str = "[model]\nallow = [\"scripted\"]\nmax_calls = 4\n";
const SCRIPT: &str = "[[turn]]\ntext = \"forty-two\"\n";
const PER_WORKER: usize = 2;

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(14222)
}

fn nats_server(port: u16, store: &std::path::Path) -> Child {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is installed (make setup)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn start_worker(url: &str, dir: &std::path::Path, cache: &std::path::Path, name: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["worker", "--nats", url, "--policies"])
        .arg(dir)
        .args(["--name", name, "--allow-model", "scripted:*", "--cache-dir"])
        .arg(cache)
        .args(["--concurrency", &PER_WORKER.to_string()])
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the warden binary runs");
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line.map(|l| l.contains("taking runs")).unwrap_or(false) {
            break;
        }
    }
    // Keep draining so the worker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

fn job(run_id: String) -> QueuedJob {
    QueuedJob {
        run_id,
        enqueued_us: worker::now_us(),
        request: RunRequest {
            agent: "builtin:react".into(),
            policy: "bench".into(),
            task: "What is 6 * 7?".into(),
            model: Some("scripted:answer.script.toml".into()),
            run_id: None,
            approve: Vec::new(),
            approve_from: Vec::new(),
        },
    }
}

struct Measured {
    runs_per_s: f64,
    queue_share: f64,
    mean_queue_ms: f64,
    mean_run_ms: f64,
    idle_queue_ms: f64,
    idle_run_ms: f64,
}

async fn through_nats(
    workers: usize,
    runs: usize,
    dir: &std::path::Path,
    cache: &std::path::Path,
) -> Measured {
    let store = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let _server = Killed(vec![nats_server(port, store.path())]);
    let _workers = Killed(
        (0..workers)
            .map(|i| start_worker(&url, dir, cache, &format!("bench-{i}")))
            .collect(),
    );
    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    // Warm up: every worker's first run loads the agent.
    let warm: Vec<String> = (0..workers * PER_WORKER * 2)
        .map(|i| format!("warm-{i}"))
        .collect();
    for id in &warm {
        worker::submit(&js, &job(id.clone())).await.expect("submit");
    }
    for id in &warm {
        worker::wait_result(&js, id, Duration::from_secs(120))
            .await
            .expect("warm-up result");
    }
    // Unloaded: one job at a time, so queue time is NATS's own (submit,
    // delivery to an idle worker), not waiting for a free slot.
    let mut idle_queue = 0u64;
    let mut idle_run = 0u64;
    const IDLE: u64 = 20;
    for i in 0..IDLE {
        let id = format!("idle-{i}");
        worker::submit(&js, &job(id.clone())).await.expect("submit");
        let r = worker::wait_result(&js, &id, Duration::from_secs(60))
            .await
            .expect("result");
        idle_queue += r.started_us.saturating_sub(r.enqueued_us);
        idle_run += r.ended_us.saturating_sub(r.started_us);
    }
    let ids: Vec<String> = (0..runs).map(|i| format!("bench-{i}")).collect();
    let started = Instant::now();
    for id in &ids {
        worker::submit(&js, &job(id.clone())).await.expect("submit");
    }
    let mut results: Vec<RunResult> = Vec::with_capacity(runs);
    for id in &ids {
        results.push(
            worker::wait_result(&js, id, Duration::from_secs(600))
                .await
                .expect("result"),
        );
    }
    let elapsed = started.elapsed();
    assert!(
        results
            .iter()
            .all(|r| r.answer.as_deref() == Some("forty-two"))
    );
    let queue: u64 = results
        .iter()
        .map(|r| r.started_us.saturating_sub(r.enqueued_us))
        .sum();
    let running: u64 = results
        .iter()
        .map(|r| r.ended_us.saturating_sub(r.started_us))
        .sum();
    Measured {
        runs_per_s: runs as f64 / elapsed.as_secs_f64(),
        queue_share: queue as f64 / (queue + running).max(1) as f64,
        mean_queue_ms: queue as f64 / runs as f64 / 1000.0,
        mean_run_ms: running as f64 / runs as f64 / 1000.0,
        idle_queue_ms: idle_queue as f64 / IDLE as f64 / 1000.0,
        idle_run_ms: idle_run as f64 / IDLE as f64 / 1000.0,
    }
}

async fn in_process(runs: usize, dir: &std::path::Path, cache: &std::path::Path) -> f64 {
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.to_path_buf()),
            max_instances: 50,
        })
        .expect("runtime"),
    );
    let policy = PolicyFile::read(&dir.join("bench.toml")).expect("policy");
    let one = |runtime: Arc<Runtime>, policy: PolicyFile| async move {
        let provider =
            Arc::new(ScriptedProvider::parse("answer.script.toml", SCRIPT).expect("script"));
        let spec = RunSpec {
            policy,
            agent: ComponentSource::Builtin("react".into()),
            provider,
            task: "What is 6 * 7?".into(),
            approver: None,
            approve: Vec::new(),
            approve_from: Vec::new(),
            replay_tools: None,
        };
        let audit = AuditLog::new(new_run_id()).with_sink(MemorySink::default());
        let report = run(&runtime, spec, audit).await.expect("run");
        assert_eq!(report.result.as_deref().ok(), Some("forty-two"));
    };
    for _ in 0..4 {
        one(runtime.clone(), policy.clone()).await;
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(PER_WORKER));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..runs {
        let permit = slots.clone().acquire_owned().await.expect("semaphore");
        let (runtime, policy) = (runtime.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            one(runtime, policy).await;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    runs as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runs: usize = std::env::var("WARDEN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("bench.toml"), POLICY).expect("policy");
    std::fs::write(dir.path().join("answer.script.toml"), SCRIPT).expect("script");
    let cache = tempfile::tempdir().expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    rt.block_on(async {
        let floor = in_process(runs, dir.path(), cache.path()).await;
        println!("cluster: {runs} scripted runs of builtin:react, {PER_WORKER} at once per worker");
        println!("  floor: one process, no NATS        {floor:>8.1} runs/s");
        for workers in [1, 2, 4] {
            let m = through_nats(workers, runs, dir.path(), cache.path()).await;
            println!(
                "  NATS, {workers} worker(s)                {:>8.1} runs/s  ({:.2}x floor)  burst: queue {:>4.1}% of a job's time (mean {:.1} ms queued, {:.1} ms running); one at a time: {:.1} ms queued, {:.1} ms running",
                m.runs_per_s,
                m.runs_per_s / floor,
                m.queue_share * 100.0,
                m.mean_queue_ms,
                m.mean_run_ms,
                m.idle_queue_ms,
                m.idle_run_ms,
            );
        }
    });
}
