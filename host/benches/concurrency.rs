//! Tool calls per second with 1, 8, 64 and 512 calls in flight, against
//! the bare wasmtime floor at the same concurrency.
//!
//! Three ways of calling the echo tool, each kept at N calls in flight
//! (a closed loop: a call finished is a call submitted):
//!
//! - `floor`: N tasks each doing a fresh store + `InstancePre`
//!   instantiate + call `invoke` + drop on the same engine, no gate (as
//!   `tool_call/raw` in `mediation.rs`), on a tokio runtime with 2 workers.
//! - `library`: N tasks calling `capability::tools::call` on one shared
//!   gate (one run): schema, policy, audit records to a file, a fresh
//!   limited instance. Same runtime.
//! - `warden mcp`: the release binary, a client keeping N `tools/call`
//!   requests in flight over its stdio pipes; on one thread (the default)
//!   and with `--threads 2`.
//!
//! Each session (a gate, a server) serves one burst and is then dropped,
//! so no variant pays for a longer run than another; the bursts of the
//! three variants alternate, round after round, so load on the machine
//! hits them alike. Latency is from the moment a call is submitted (its
//! task is ready, or its request written) to its answer, so at N calls in
//! flight it includes the wait for a worker or a server slot.
//!
//! The gate's lock: `gate.check` + `gate.complete` alone (the decision,
//! its record, the outcome record; no instance) with N in flight is the
//! most calls per second the lock lets through; built with
//! `--features lock-timing`, the bench also prints how long each call's
//! acquisitions of the lock waited and held it.
//!
//! Run with `make bench` or `cargo bench -p warden --bench concurrency`
//! (`-- --rounds 2` for a quick look).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, JsonlFile, Outcome, new_run_id};
use warden::bindings::tool::{Tool, ToolPre};
use warden::gate::Gate;
use warden::load::PolicyFile;
use warden::policy::Request;
use warden::registry::ToolRegistry;
use warden::runtime::{Runtime, RuntimeConfig};
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::WasiCtx;

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

const ARGS: &str = r#"{"text":"hello"}"#;
const LEVELS: [usize; 4] = [1, 8, 64, 512];

#[path = "shared/raw.rs"]
mod raw;
use raw::Raw;

/// What one burst measured.
#[derive(Default)]
struct Burst {
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Bursts of one variant at one level, added up.
#[derive(Default)]
struct Tally {
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, burst: Burst) {
        self.calls += burst.calls;
        self.elapsed += burst.elapsed;
        self.latencies.extend(burst.latencies);
    }

    fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.latencies.sort_unstable();
        let at = ((self.latencies.len() as f64 * q) as usize).min(self.latencies.len() - 1);
        self.latencies[at]
    }
}

/// Run `calls` calls of `call` from `n` tasks on `rt`, each task
/// submitting its next call when its last one is answered.
fn burst<F, Fut>(rt: &tokio::runtime::Runtime, n: usize, calls: usize, call: F) -> Burst
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let tickets = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (call, tickets) = (call.clone(), tickets.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while tickets.fetch_add(1, Ordering::Relaxed) < calls {
                    let submitted = Instant::now();
                    // Submitted: the call waits for a worker as the other
                    // tasks' calls do (without this, a call that never
                    // suspends would run its task's next one at once).
                    tokio::task::yield_now().await;
                    call().await;
                    latencies.push(submitted.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::with_capacity(calls);
        for task in tasks {
            latencies.extend(task.await.unwrap());
        }
        Burst {
            calls,
            elapsed: started.elapsed(),
            latencies,
        }
    })
}

/// A `warden mcp` server with `n` `tools/call` requests kept in flight
/// until `calls` are answered.
fn mcp_burst(server: &mut Command, n: usize, calls: usize) -> Burst {
    let mut child = server
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let initialize = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"bench\",\"version\":\"1\"}}}\n";
    input.write_all(initialize.as_bytes()).unwrap();
    input.flush().unwrap();
    output.read_line(&mut line).unwrap();
    // The tools load after `initialize` is answered: one call first, so
    // the burst measures calls, not loading.
    let message = |id: usize| {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{ARGS}}}}}\n"
        )
    };
    input.write_all(message(calls).as_bytes()).unwrap();
    input.flush().unwrap();
    line.clear();
    output.read_line(&mut line).unwrap();

    // The server reads every request at once (its slots are more than
    // `n`), so writing here never waits on our not reading.
    let mut sent = vec![None; calls];
    let started = Instant::now();
    let mut next = 0;
    let mut batch = String::new();
    while next < n.min(calls) {
        batch.push_str(&message(next));
        sent[next] = Some(Instant::now());
        next += 1;
    }
    input.write_all(batch.as_bytes()).unwrap();
    input.flush().unwrap();
    let mut latencies = Vec::with_capacity(calls);
    while latencies.len() < calls {
        line.clear();
        output.read_line(&mut line).unwrap();
        let answered = Instant::now();
        assert!(
            line.contains("\"isError\":false"),
            "unexpected answer: {line}"
        );
        let id: usize = line
            .split("\"id\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no id in {line}"));
        latencies.push(answered - sent[id].take().unwrap());
        if next < calls {
            input.write_all(message(next).as_bytes()).unwrap();
            input.flush().unwrap();
            sent[next] = Some(Instant::now());
            next += 1;
        }
    }
    let elapsed = started.elapsed();
    drop(input);
    child.wait().unwrap();
    Burst {
        calls,
        elapsed,
        latencies,
    }
}

fn flag(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1)?.parse().ok()
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: one
    // quick round so the target is exercised without taking long.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = flag("--rounds").unwrap_or(if quick { 1 } else { 5 });
    let calls = flag("--calls").unwrap_or(if quick { 600 } else { 3000 });

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "[model]\nallow = [\"scripted\"]\n[tools.echo]\ncomponent = {:?}\n",
            guests::ECHO_TOOL
        ),
    )
    .unwrap();
    let policy = PolicyFile::read(&policy_path).unwrap();

    // Two workers: the machine's two cores, as a host serving many
    // sessions would use them.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.clone()),
            ..RuntimeConfig::default()
        })
        .unwrap(),
    );
    let engine = runtime.engine().clone();
    let echo = std::fs::read(guests::ECHO_TOOL).unwrap();
    let component = runtime.load("echo", &echo).unwrap().component;
    let mut linker: Linker<Raw> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    Tool::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    let raw_pre = Arc::new(ToolPre::new(linker.instantiate_pre(&component).unwrap()).unwrap());

    // A new gate (one run) per burst; the registry is the process's.
    let new_gate = {
        let (dir, policy) = (dir.path().to_path_buf(), policy.policy.clone());
        move || {
            let log = AuditLog::new(new_run_id())
                .with_sink(JsonlFile::open(&dir.join("library.jsonl")).unwrap());
            Arc::new(Gate::new(policy.clone(), log))
        }
    };
    let registry = Arc::new(
        rt.block_on(ToolRegistry::load(&runtime, &policy, &new_gate()))
            .unwrap(),
    );

    let mcp_command = |threads: usize| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
        command
            .args(["mcp", "--concurrency", "64", "--queue", "1024", "--threads"])
            .arg(threads.to_string())
            .arg("--policy")
            .arg(&policy_path)
            .arg("--audit")
            .arg(dir.path().join("mcp.jsonl"))
            .arg("--cache-dir")
            .arg(&cache)
            .env_remove("RUST_BACKTRACE");
        command
    };

    let mut floor: Vec<Tally> = LEVELS.iter().map(|_| Tally::default()).collect();
    let mut library: Vec<Tally> = LEVELS.iter().map(|_| Tally::default()).collect();
    let mut mcp: Vec<Tally> = LEVELS.iter().map(|_| Tally::default()).collect();
    let mut mcp2: Vec<Tally> = LEVELS.iter().map(|_| Tally::default()).collect();
    let mut gate_only: Vec<Tally> = LEVELS.iter().map(|_| Tally::default()).collect();
    #[cfg(feature = "lock-timing")]
    let mut locks: Vec<warden::gate::lock_timing::Stats> =
        LEVELS.iter().map(|_| Default::default()).collect();

    for _ in 0..rounds {
        for (level, &n) in LEVELS.iter().enumerate() {
            let pre = raw_pre.clone();
            let engine = engine.clone();
            floor[level].add(burst(&rt, n, calls, move || {
                let (pre, engine) = (pre.clone(), engine.clone());
                async move {
                    let mut store = Store::new(
                        &engine,
                        Raw {
                            wasi: WasiCtx::builder().build(),
                            table: ResourceTable::new(),
                        },
                    );
                    store.set_epoch_deadline(u64::MAX / 2);
                    let tool = pre.instantiate_async(&mut store).await.unwrap();
                    let out = tool.call_invoke(&mut store, "echo", ARGS).await.unwrap();
                    assert_eq!(out.as_deref(), Ok(ARGS));
                }
            }));

            let gate = new_gate();
            #[cfg(feature = "lock-timing")]
            warden::gate::lock_timing::reset();
            let (g, r) = (gate.clone(), registry.clone());
            library[level].add(burst(&rt, n, calls, move || {
                let (gate, registry) = (g.clone(), r.clone());
                async move {
                    let out = warden::capability::tools::call(&gate, &registry, None, "echo", ARGS)
                        .await
                        .unwrap();
                    assert!(out.is_ok());
                }
            }));
            #[cfg(feature = "lock-timing")]
            locks[level].add(&warden::gate::lock_timing::take());
            drop(gate);

            mcp[level].add(mcp_burst(&mut mcp_command(1), n, calls));
            mcp2[level].add(mcp_burst(&mut mcp_command(2), n, calls));

            // The gate alone: decision and its record, outcome record.
            let gate = new_gate();
            let (g, r) = (gate.clone(), registry.clone());
            let arguments: Arc<serde_json::Value> = Arc::new(serde_json::from_str(ARGS).unwrap());
            gate_only[level].add(burst(&rt, n, calls, move || {
                let (gate, registry, arguments) = (g.clone(), r.clone(), arguments.clone());
                async move {
                    let request = Request::Tool {
                        name: "echo",
                        arguments: &arguments,
                        schema: registry.schema("echo"),
                    };
                    let data = serde_json::json!({ "arguments": &*arguments });
                    let permit = gate
                        .check("echo", &request, Some(data))
                        .await
                        .unwrap()
                        .unwrap();
                    gate.complete(permit, Outcome::Ok, ARGS, None).unwrap();
                }
            }));
        }
    }

    println!(
        "echo tool calls with N in flight, {rounds} rounds x {calls} calls per variant and N, variants alternating; 2 tokio workers"
    );
    println!(
        "(latency: submitted to answered; x floor: the floor's calls/s over the variant's, at the same N)"
    );
    for (level, &n) in LEVELS.iter().enumerate() {
        println!("N = {n}");
        let f = floor[level].per_second();
        for (name, tally) in [
            ("floor (fresh instance, no gate)", &mut floor[level]),
            ("library (tools::call, one gate)", &mut library[level]),
            ("warden mcp (stdio, 1 thread)", &mut mcp[level]),
            ("warden mcp --threads 2", &mut mcp2[level]),
            ("gate.check + complete alone", &mut gate_only[level]),
        ] {
            let r = tally.per_second();
            println!(
                "  {name:<32} {r:>8.0} calls/s  median {:>9.1?}  p90 {:>9.1?}  {:>5.2}x floor",
                tally.quantile(0.5),
                tally.quantile(0.9),
                f / r
            );
        }
    }
    #[cfg(feature = "lock-timing")]
    {
        println!("the gate's lock during the library calls (per call: all its acquisitions):");
        for (level, &n) in LEVELS.iter().enumerate() {
            let (stats, tally) = (&locks[level], &library[level]);
            let per_call = |d: Duration| d / tally.calls as u32;
            println!(
                "{n:>5}  {:.1} acquisitions; held {:>8.1?} per call (p50 {:?}, p99 {:?} each, max {:.1?}); waited {:>8.1?} per call (p99 {:?} each, max {:.1?}); held {:.0}% of the time",
                stats.acquired as f64 / tally.calls as f64,
                per_call(stats.hold),
                stats.hold_quantile(0.5),
                stats.hold_quantile(0.99),
                stats.max_hold,
                per_call(stats.wait),
                stats.wait_quantile(0.99),
                stats.max_wait,
                100.0 * stats.hold.as_secs_f64() / tally.elapsed.as_secs_f64(),
            );
        }
    }
    #[cfg(not(feature = "lock-timing"))]
    println!(
        "(lock hold and wait times: cargo bench -p warden --features lock-timing --bench concurrency)"
    );
}
