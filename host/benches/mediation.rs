//! What mediation costs, measured against raw wasmtime in the same run.
//!
//! - `tool_call/raw`: a fresh store + `InstancePre` (pooling) instantiate +
//!   call `invoke` of the echo tool + drop, on **warden's engine** (epoch
//!   interruption, async calls, warden's pool settings), without a gate:
//!   not the true floor. The true floor, bare wasmtime with a sync call of
//!   a component with no SDK, is `benches/floor.rs`.
//! - `tool_call/mediated`: the same call as an agent makes it through
//!   warden: JSON parse, policy decision, audit record, fresh instance with
//!   limits and captured stdio, output check, audit record (to a file).
//! - `tool_call/mediated_with_secret`: the same, with a secret held (every
//!   run with a provider key holds one): arguments and result are redacted.
//! - `import_round_trip`: one guest-to-host import (`list-tools`), derived
//!   from a guest calling it 10,000 times.
//!
//! Run with `make bench` (or `cargo bench -p warden --bench mediation`).

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, JsonlFile};
use warden::bindings::tool::{Tool, ToolPre};
use warden::capability::tools::call;
use warden::gate::Gate;
use warden::load::{ComponentSource, PolicyFile};
use warden::provider::ScriptedProvider;
use warden::registry::ToolRegistry;
use warden::run::{RunSpec, run};
use warden::runtime::{Runtime, RuntimeConfig};
use warden::secrets::{Clean, Secrets};
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::WasiCtx;

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

#[path = "shared/raw.rs"]
mod raw;
use raw::Raw;

const ARGS: &str = r#"{"text":"hello"}"#;

fn policy() -> PolicyFile {
    let text = format!(
        "[model]\nallow = [\"scripted\"]\n[tools.echo]\ncomponent = \"{}\"\n",
        guests::ECHO_TOOL
    );
    PolicyFile::from_text("bench.toml".into(), ".".into(), text).unwrap()
}

fn benches(c: &mut Criterion) {
    // One thread: the host serves a run on one task; a multi-thread
    // runtime would add a cross-thread wake-up to every iteration.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: 16,
    })
    .unwrap();
    let engine = runtime.engine().clone();
    let echo = std::fs::read(guests::ECHO_TOOL).unwrap();
    let component = runtime.load("echo", &echo).unwrap().component;

    // Raw wasmtime: same engine (pooling, epochs), own linker, no gate.
    let mut linker: Linker<Raw> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    Tool::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    let raw_pre = ToolPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();

    // Mediated: a gate writing JSON Lines to a file, and the registry.
    let audit_dir = tempfile::tempdir().unwrap();
    let policy = policy();
    let log = AuditLog::new("r-bench")
        .with_sink(JsonlFile::open(&audit_dir.path().join("audit.jsonl")).unwrap());
    let gate = Arc::new(Gate::new(policy.policy.clone(), log));
    let registry = rt
        .block_on(ToolRegistry::load(&runtime, &policy, &gate))
        .unwrap();

    let mut group = c.benchmark_group("tool_call");
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("raw", |b| {
        b.to_async(&rt).iter(|| async {
            let mut store = Store::new(
                &engine,
                Raw {
                    wasi: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                },
            );
            store.set_epoch_deadline(u64::MAX / 2);
            let tool = raw_pre.instantiate_async(&mut store).await.unwrap();
            let out = tool.call_invoke(&mut store, "echo", ARGS).await.unwrap();
            assert_eq!(out.as_deref(), Ok(ARGS));
        })
    });
    group.bench_function("mediated", |b| {
        b.to_async(&rt).iter(|| async {
            let out = call(&gate, &registry, None, "echo", ARGS).await.unwrap();
            assert_eq!(out.map(Clean::into_inner).as_deref(), Ok(ARGS));
        })
    });
    // The same with a secret held (as every run with a provider key is):
    // arguments and result pass redaction too.
    let mut secrets = Secrets::default();
    secrets.add("model_api_key", "sk-bench-0123456789abcdef0123456789");
    let log = AuditLog::new("r-bench-secrets")
        .with_sink(JsonlFile::open(&audit_dir.path().join("audit-secrets.jsonl")).unwrap());
    let gate_with_secret = Arc::new(Gate::new(policy.policy.clone(), log).with_secrets(secrets));
    group.bench_function("mediated_with_secret", |b| {
        b.to_async(&rt).iter(|| async {
            let out = call(&gate_with_secret, &registry, None, "echo", ARGS)
                .await
                .unwrap();
            assert_eq!(out.map(Clean::into_inner).as_deref(), Ok(ARGS));
        })
    });
    group.finish();

    // The import round trip: a guest calling `list-tools` N times, minus
    // the same guest calling it zero times, divided by N.
    let roundtrip = |n: u64| -> Duration {
        let text = "[model]\nallow = [\"scripted\"]\n".to_string();
        let spec = RunSpec {
            policy: PolicyFile::from_text("rt.toml".into(), ".".into(), text).unwrap(),
            agent: ComponentSource::File(guests::ROUNDTRIP_AGENT.into()),
            provider: Arc::new(ScriptedProvider::parse("s", "[[turn]]\ntext = \"x\"\n").unwrap()),
            task: n.to_string(),
            approver: None,
            approve: Vec::new(),
            approve_from: Vec::new(),
            replay_tools: None,
        };
        let started = Instant::now();
        let report = rt
            .block_on(run(&runtime, spec, AuditLog::new("r-rt")))
            .unwrap();
        assert!(report.result.is_ok());
        started.elapsed()
    };
    c.bench_function("import_round_trip", |b| {
        b.iter_custom(|iters| {
            const N: u64 = 10_000;
            let mut total = Duration::ZERO;
            for _ in 0..iters.div_ceil(N) {
                total += roundtrip(N).saturating_sub(roundtrip(0));
            }
            // Per import call.
            total / (iters.div_ceil(N) * N) as u32 * iters as u32
        })
    });
}

criterion_group!(mediation, benches);
criterion_main!(mediation);
