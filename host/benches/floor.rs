//! A mediated tool call against the true floor: bare wasmtime.
//!
//! Every variant runs in the same process, interleaved call by call (one
//! call of each variant in a random order, then the next round), so a loaded machine slows
//! them alike; each call is timed on its own and the table gives medians
//! and p90s. Variants:
//!
//! - `bare/floor`: **the floor**. A bare wasmtime engine (pooling
//!   allocator, nothing else configured), a fresh `Store` and
//!   `InstancePre::instantiate` of the minimal `tool`-world component
//!   (`tests/guests/src/bin/floor_tool.rs`: wit-bindgen only, no SDK, no
//!   serde), a **sync** call of `invoke`, drop.
//! - `bare/echo`: the same with warden's SDK echo tool (the SDK parses
//!   nothing on `invoke`, but its component is bigger).
//! - `bare/floor_tuned`: the floor with the pooling allocator's slot
//!   reuse settings warden's engine uses (`warden::runtime`:
//!   `MEMORY_KEEP_RESIDENT`, PAGEMAP_SCAN), so the ratio of warden's own
//!   work can be read apart from that tuning.
//! - `bare/floor_tuned_async`: the same, instantiated and called async
//!   (on a fiber), as warden calls every guest.
//! - `engine/floor`: what the README used to call "raw": warden's own
//!   engine (epoch interruption, async calls on a fiber, warden's pool
//!   sizing), a fresh store without limits or a gate.
//! - `mediated/floor`, `mediated/echo`: a whole call as an agent makes it
//!   through warden: strict JSON parse, schema and five argument rules,
//!   decision, decision record, fresh limited instance with captured
//!   stdio, output check, redaction, labels, provenance, outcome record
//!   (both records written to a file, one `write(2)` each).
//!
//! Then the pieces of a mediated call, on their own:
//! - `piece/decide+records`: `Gate::check` (decision and its record) and
//!   `Gate::complete` (the outcome record), no instance.
//! - `piece/instance_setup`: `GuestState::new` and its store, no call.
//!
//! `cargo bench -p warden --bench floor` (`-- --calls N` to change the
//! number of calls per variant; default 6,000).

use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, JsonlFile, Outcome};
use warden::capability::tools::call;
use warden::capability::{Grantee, GuestState, ToolRole};
use warden::gate::Gate;
use warden::load::PolicyFile;
use warden::policy::Request;
use warden::registry::ToolRegistry;
use warden::runtime::{Runtime, RuntimeConfig};
use warden::secrets::Clean;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The `tool` world with sync imports: what a plain wasmtime embedder
/// would generate.
mod bare {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "tool",
    });
}

/// 106 bytes of arguments, as in the issue's measurement.
/// Keys in order: warden hands the tool the value it decided on,
/// serialized again (sorted), and the bench checks the echo is exact.
const ARGS: &str = r#"{"body":"Attached, as discussed.","priority":3,"subject":"Quarterly numbers","to":"ada@example.com"}"#;

/// The least a store needs to run a tool: WASI and a resource table.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bare::warden::sandbox::types::Host for Bare {}
impl bare::warden::sandbox::log::Host for Bare {
    fn log(&mut self, _: bare::warden::sandbox::log::Level, _: String) {}
}

#[path = "shared/raw.rs"]
mod raw;
use raw::Raw;

/// A policy granting `echo` from `component`, with a schema and five
/// argument rules the arguments pass.
fn policy(component: &str) -> PolicyFile {
    let text = format!(
        r#"[model]
allow = ["scripted"]
[tools.echo]
component = "{component}"
args.to = {{ matches = '[^@\s]+@example\.com', required = true, max_len = 200 }}
args.subject = {{ max_len = 200 }}
args.body = {{ max_len = 10000, not_contains = ["BEGIN PRIVATE KEY"] }}
args.priority = {{ min = 1, max = 5 }}
"#
    );
    PolicyFile::from_text("bench.toml".into(), ".".into(), text).unwrap()
}

/// A bare engine: wasmtime's defaults plus the pooling allocator, or,
/// `tuned`, plus the slot reuse settings warden's engine has.
fn bare_engine(tuned: bool) -> Engine {
    let mut pool = PoolingAllocationConfig::new();
    if tuned {
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        pool.linear_memory_keep_resident(warden::runtime::MEMORY_KEEP_RESIDENT);
        pool.table_keep_resident(warden::runtime::TABLE_KEEP_RESIDENT);
    }
    pool.total_component_instances(16);
    pool.total_core_instances(128);
    pool.total_memories(32);
    pool.total_tables(128);
    pool.total_stacks(16);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).unwrap()
}

fn bare_pre(engine: &Engine, bytes: &[u8]) -> bare::ToolPre<Bare> {
    let component = Component::new(engine, bytes).unwrap();
    let mut linker: Linker<Bare> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    bare::Tool::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    bare::ToolPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

fn bare_call(engine: &Engine, pre: &bare::ToolPre<Bare>) {
    let mut store = Store::new(
        engine,
        Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let tool = pre.instantiate(&mut store).unwrap();
    let out = tool.call_invoke(&mut store, "echo", ARGS).unwrap();
    assert_eq!(out.as_deref(), Ok(ARGS));
}

/// Fisher-Yates with xorshift: a fixed sequence of orders, run to run.
fn shuffle(order: &mut [usize], seed: &mut u64) {
    for i in (1..order.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        order.swap(i, (*seed % (i as u64 + 1)) as usize);
    }
}

/// Per-call times of one variant.
struct Samples {
    name: &'static str,
    times: Vec<Duration>,
}

impl Samples {
    fn new(name: &'static str, n: usize) -> Self {
        Samples {
            name,
            times: Vec::with_capacity(n),
        }
    }

    fn quantile(&mut self, q: f64) -> Duration {
        self.times.sort_unstable();
        let i = ((self.times.len() as f64 - 1.0) * q).round() as usize;
        self.times[i]
    }
}

fn time<T>(samples: &mut Samples, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    samples.times.push(started.elapsed());
    out
}

async fn time_async<T>(samples: &mut Samples, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    samples.times.push(started.elapsed());
    out
}

fn main() {
    let mut calls = 6_000usize;
    // `--only NAME`: run one variant (for a profiler).
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--calls" {
            calls = args.next().and_then(|n| n.parse().ok()).unwrap_or(calls);
        }
        if arg == "--only" {
            only = args.next();
        }
    }
    // `cargo test --benches` runs each bench once without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        calls = 50;
    }
    // One thread: the host serves a run on one task.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let floor_bytes = std::fs::read(guests::FLOOR_TOOL).unwrap();
    let echo_bytes = std::fs::read(guests::ECHO_TOOL).unwrap();

    let bare = bare_engine(false);
    let bare_floor = bare_pre(&bare, &floor_bytes);
    let bare_echo = bare_pre(&bare, &echo_bytes);
    let tuned = bare_engine(true);
    let tuned_floor = bare_pre(&tuned, &floor_bytes);

    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: 16,
    })
    .unwrap();
    // `engine/floor` on a runtime of its own: sharing the mediated
    // variants' pool, its instances (a component object of its own) and
    // theirs would take turns in the same slots, each turn mapping the
    // other's memory image (a cost neither pays alone).
    let engine_runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: 16,
    })
    .unwrap();
    let engine = engine_runtime.engine().clone();
    let floor_component = engine_runtime
        .load("floor", &floor_bytes)
        .unwrap()
        .component;
    let mut linker: Linker<Raw> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    warden::bindings::tool::Tool::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    let engine_floor =
        warden::bindings::tool::ToolPre::new(linker.instantiate_pre(&floor_component).unwrap())
            .unwrap();
    // The tuned bare engine called async: what the async path costs apart
    // from epochs and warden's own settings.
    let tuned_component = Component::new(&tuned, &floor_bytes).unwrap();
    let mut linker: Linker<Raw> = Linker::new(&tuned);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    warden::bindings::tool::Tool::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    let tuned_async =
        warden::bindings::tool::ToolPre::new(linker.instantiate_pre(&tuned_component).unwrap())
            .unwrap();

    let audit_dir = tempfile::tempdir().unwrap();
    let mediated = |component: &str, file: &str| {
        let policy = policy(component);
        let log = AuditLog::new("r-bench")
            .with_sink(JsonlFile::open(&audit_dir.path().join(file)).unwrap());
        let gate = Arc::new(Gate::new(policy.policy.clone(), log));
        let registry = rt
            .block_on(ToolRegistry::load(&runtime, &policy, &gate))
            .unwrap();
        (gate, registry)
    };
    let (floor_gate, floor_registry) = mediated(guests::FLOOR_TOOL, "floor.jsonl");
    let (echo_gate, echo_registry) = mediated(guests::ECHO_TOOL, "echo.jsonl");
    // The pieces on a gate of their own, so that their records and counts
    // do not weigh on the mediated variants' runs.
    let (piece_gate, piece_registry) = mediated(guests::FLOOR_TOOL, "pieces.jsonl");
    let parsed: serde_json::Value = serde_json::from_str(ARGS).unwrap();

    let mut s = [
        Samples::new("bare/floor", calls),
        Samples::new("bare/echo", calls),
        Samples::new("engine/floor", calls),
        Samples::new("mediated/floor", calls),
        Samples::new("mediated/echo", calls),
        Samples::new("piece/decide+records", calls),
        Samples::new("piece/instance_setup", calls),
        Samples::new("bare/floor_tuned", calls),
        Samples::new("bare/floor_tuned_async", calls),
    ];
    let run: Vec<bool> = s
        .iter()
        .map(|samples| only.as_deref().is_none_or(|only| samples.name == only))
        .collect();
    let warm_up = calls / 10;
    let mut order: Vec<usize> = (0..s.len()).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    rt.block_on(async {
        for round in 0..warm_up + calls {
            if round == warm_up {
                for samples in &mut s {
                    samples.times.clear();
                }
            }
            // Each round in a new random order: no variant always follows
            // the same other one (the first call after another engine's
            // finds the caches cold).
            shuffle(&mut order, &mut seed);
            for &i in &order {
                if i == 0 && run[0] {
                    time(&mut s[0], || bare_call(&bare, &bare_floor));
                }
                if i == 1 && run[1] {
                    time(&mut s[1], || bare_call(&bare, &bare_echo));
                }
                if i == 2 && run[2] {
                    time_async(&mut s[2], async {
                        let mut store = Store::new(
                            &engine,
                            Raw {
                                wasi: WasiCtx::builder().build(),
                                table: ResourceTable::new(),
                            },
                        );
                        store.set_epoch_deadline(u64::MAX / 2);
                        let tool = engine_floor.instantiate_async(&mut store).await.unwrap();
                        let out = tool.call_invoke(&mut store, "echo", ARGS).await.unwrap();
                        assert_eq!(out.as_deref(), Ok(ARGS));
                    })
                    .await;
                }
                if i == 3 && run[3] {
                    let out = time_async(
                        &mut s[3],
                        call(&floor_gate, &floor_registry, None, "echo", ARGS),
                    )
                    .await
                    .unwrap();
                    assert_eq!(out.map(Clean::into_inner).as_deref(), Ok(ARGS));
                }
                if i == 4 && run[4] {
                    let out = time_async(
                        &mut s[4],
                        call(&echo_gate, &echo_registry, None, "echo", ARGS),
                    )
                    .await
                    .unwrap();
                    assert_eq!(out.map(Clean::into_inner).as_deref(), Ok(ARGS));
                }
                if i == 5 && run[5] {
                    time(&mut s[5], || {
                        let request = Request::Tool {
                            name: "echo",
                            arguments: &parsed,
                            schema: piece_registry.schema("echo"),
                        };
                        let data = serde_json::json!({ "arguments": &parsed });
                        let permit = piece_gate
                            .check_now("echo", &request, Some(data))
                            .unwrap()
                            .unwrap();
                        let data = serde_json::json!({ "result": ARGS, "labels_added": [] });
                        piece_gate
                            .complete(permit, Outcome::Ok, ARGS, Some(data))
                            .unwrap();
                    });
                }
                if i == 7 && run[7] {
                    time(&mut s[7], || bare_call(&tuned, &tuned_floor));
                }
                if i == 8 && run[8] {
                    time_async(&mut s[8], async {
                        let mut store = Store::new(
                            &tuned,
                            Raw {
                                wasi: WasiCtx::builder().build(),
                                table: ResourceTable::new(),
                            },
                        );
                        let tool = tuned_async.instantiate_async(&mut store).await.unwrap();
                        let out = tool.call_invoke(&mut store, "echo", ARGS).await.unwrap();
                        assert_eq!(out.as_deref(), Ok(ARGS));
                    })
                    .await;
                }
                if i == 6 && run[6] {
                    time(&mut s[6], || {
                        let limits = piece_gate.policy().limits.clone();
                        let state = GuestState::new(
                            "echo",
                            piece_gate.clone(),
                            &limits,
                            ToolRole,
                            Grantee::Tool("echo"),
                        )
                        .unwrap();
                        drop(state.into_store(&engine));
                    });
                }
            }
        }
    });

    if s[0].times.is_empty() || s[1].times.is_empty() {
        // One variant alone: no ratios.
        for samples in s.iter_mut().filter(|samples| !samples.times.is_empty()) {
            let median = samples.quantile(0.5);
            println!("{:<22} {median:>10.2?}", samples.name);
        }
        return;
    }
    let floor = s[0].quantile(0.5);
    let echo = s[1].quantile(0.5);
    println!(
        "{calls} calls per variant, interleaved; {}-byte arguments",
        ARGS.len()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>10}",
        "variant", "median", "p90", "/ floor", "/ bare echo"
    );
    for samples in s.iter_mut().filter(|samples| !samples.times.is_empty()) {
        let median = samples.quantile(0.5);
        let p90 = samples.quantile(0.9);
        println!(
            "{:<22} {:>10.2?} {:>10.2?} {:>9.2}x {:>10.2}x",
            samples.name,
            median,
            p90,
            median.as_secs_f64() / floor.as_secs_f64(),
            median.as_secs_f64() / echo.as_secs_f64(),
        );
    }
}
