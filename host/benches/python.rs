//! The python tool (`tools/python-exec`, CPython in an 18 MiB component),
//! compile cache warm: what a fresh interpreter costs, from "code
//! received" to "first line executed"; what a second call costs with the
//! instance kept (`instance = "per-run"`) or fresh (`"per-call"`); what a
//! call out of Python code to the host costs; and, in the same run, a
//! `python3 -c` subprocess and (where a Docker daemon and the image are
//! there) a container.
//!
//! Run with `make bench` or
//! `env -u RUST_BACKTRACE cargo bench -p warden --bench python`
//! (`-- --bench` for the full sample counts; without it, a quick check).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::capability::{Grantee, GuestState, ToolRole};
use warden::gate::Gate;
use warden::load::PolicyFile;
use warden::registry::ToolRegistry;
use warden::runtime::{Runtime, RuntimeConfig};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The goal for a fresh interpreter instance (issue "Code agents").
const GOAL: Duration = Duration::from_millis(10);

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

struct Setup {
    gate: Arc<Gate>,
    registry: ToolRegistry,
}

fn setup(
    rt: &tokio::runtime::Runtime,
    runtime: &Runtime,
    dir: &std::path::Path,
    entries: &str,
) -> Setup {
    let text = format!(
        "[model]\nallow = [\"scripted\"]\n[limits]\nmemory = \"128MiB\"\ncpu = \"10s\"\n{entries}"
    );
    let policy = PolicyFile::from_text("bench.toml".into(), dir.into(), text).unwrap();
    let audit = AuditLog::new(new_run_id())
        .with_sink(JsonlFile::open(&dir.join(format!("{}.jsonl", new_run_id()))).unwrap());
    let gate = Arc::new(Gate::new(policy.policy.clone(), audit));
    let registry = rt
        .block_on(ToolRegistry::load(runtime, &policy, &gate))
        .unwrap_or_else(|e| panic!("{e}"));
    Setup { gate, registry }
}

fn python_entry(instance: &str) -> String {
    format!(
        "[tools.python]\ncomponent = {:?}\neffects = \"none\"\ninstance = \"{instance}\"\nmax_calls = 1_000_000\n",
        guests::PYTHON_EXEC
    )
}

/// One mediated call; its result's `value`.
fn call(rt: &tokio::runtime::Runtime, s: &Setup, tool: &str, args: &str) -> serde_json::Value {
    let out = rt
        .block_on(warden::capability::tools::call(
            &s.gate,
            &s.registry,
            None,
            tool,
            args,
        ))
        .unwrap()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
}

/// Median of `n` timed runs of `f` after `n / 10` untimed ones.
fn timed(n: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    median(&mut samples)
}

fn code(code: &str) -> String {
    serde_json::json!({ "code": code }).to_string()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, spawns) = if quick { (10, 3) } else { (300, 30) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        max_instances: 16,
    })
    .unwrap();
    let bytes = std::fs::read(guests::PYTHON_EXEC)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make setup` and build)", guests::PYTHON_EXEC));
    let started = Instant::now();
    let loaded = runtime.load(guests::PYTHON_EXEC, &bytes).unwrap();
    println!(
        "python tool: {:.1} MiB component, first compile {} (then cached); {n} samples each",
        bytes.len() as f64 / (1024.0 * 1024.0),
        ms(started.elapsed())
    );

    // The floor: a fresh store and instance of the component, nothing else
    // (no policy, no schema, no audit record), then its first call.
    let pre = runtime.tool_pre(&loaded.component).unwrap();
    let floor_policy = PolicyFile::from_text(
        "floor.toml".into(),
        dir.path().into(),
        python_entry("per-call"),
    )
    .unwrap();
    let floor_gate = Arc::new(Gate::new(
        floor_policy.policy.clone(),
        AuditLog::new(new_run_id()),
    ));
    let limits = floor_gate.policy().limits.clone();
    let none = code("None");
    let mut inst_t = Vec::new();
    let mut first_t = Vec::new();
    let mut drop_t = Vec::new();
    for i in 0..n + n / 10 {
        let state = GuestState::new(
            "python",
            floor_gate.clone(),
            &limits,
            ToolRole,
            Grantee::Tool("python"),
        )
        .unwrap();
        let t0 = Instant::now();
        let mut store = state.into_store(pre.engine());
        let instance = rt.block_on(pre.instantiate_async(&mut store)).unwrap();
        let t1 = Instant::now();
        let out = rt
            .block_on(instance.call_invoke(&mut store, "python", &none))
            .unwrap();
        let t2 = Instant::now();
        assert!(out.is_ok(), "{out:?}");
        drop(store);
        let t3 = Instant::now();
        if i >= n / 10 {
            inst_t.push(t1 - t0);
            first_t.push(t2 - t1);
            drop_t.push(t3 - t2);
        }
    }
    let instantiate = median(&mut inst_t);
    let first_call = median(&mut first_t);
    let dropped = median(&mut drop_t);
    println!(
        "  floor (raw wasmtime, no gate): store + instantiate {}, first call `None` {}, drop {}",
        ms(instantiate),
        ms(first_call),
        ms(dropped)
    );

    // Code received -> first line executed, through the whole mediated path
    // (arguments parsed and checked, policy, audit record, a pool slot, a
    // fresh instance, the call into Python, `ast.parse`, `exec`). The
    // code's first line reads the wall clock (WASI's, the host's clock);
    // `import time` comes first, and is a built-in module.
    let fresh = setup(&rt, &runtime, dir.path(), &python_entry("per-call"));
    let clock = code("import time\ntime.time_ns()");
    let mut to_first = Vec::new();
    for i in 0..n + n / 10 {
        let sent = now_ns();
        let value = call(&rt, &fresh, "python", &clock);
        let first: u128 = value["value"].as_str().unwrap().parse().unwrap();
        if i >= n / 10 {
            to_first.push(Duration::from_nanos(
                u64::try_from(first.saturating_sub(sent)).unwrap_or(u64::MAX),
            ));
        }
    }
    let to_first = median(&mut to_first);
    let fresh_call = timed(n, || {
        call(&rt, &fresh, "python", &none);
    });
    println!(
        "  per-call (fresh instance): code received -> first line executed {}; whole mediated call `None` {}",
        ms(to_first),
        ms(fresh_call)
    );

    // The same call on the instance kept for the run.
    let kept = setup(&rt, &runtime, dir.path(), &python_entry("per-run"));
    call(&rt, &kept, "python", &code("x = 1"));
    let kept_call = timed(n, || {
        call(&rt, &kept, "python", &code("x"));
    });
    println!(
        "  per-run (kept instance), a later call `x`: {} (fresh per-call: {}, {:.0}x)",
        ms(kept_call),
        ms(fresh_call),
        fresh_call.as_secs_f64() / kept_call.as_secs_f64()
    );
    kept.registry.kept().close(&kept.gate).unwrap();

    // A Rust tool through the same mediated path, and a call out of Python
    // code to the host: a WASI import (`time.time_ns`) in a loop, timed
    // inside the guest. A code agent's tool function is such an import
    // (`tools.call`) plus a mediated call of the tool it names.
    let echo = setup(
        &rt,
        &runtime,
        dir.path(),
        &format!(
            "[tools.echo]\ncomponent = {:?}\neffects = \"none\"\nmax_calls = 1_000_000\n",
            guests::ECHO_TOOL
        ),
    );
    let echo_call = timed(n * 10, || {
        call(&rt, &echo, "echo", "{\"x\":1}");
    });
    let per_import = call(
        &rt,
        &fresh,
        "python",
        &code(
            "import time\nn = 20000\nt = time.perf_counter_ns()\nfor _ in range(n):\n    time.time_ns()\nimport_loop = time.perf_counter_ns() - t\nt = time.perf_counter_ns()\nfor _ in range(n):\n    pass\nempty_loop = time.perf_counter_ns() - t\n(import_loop - empty_loop) / n",
        ),
    );
    let per_import_ns: f64 = per_import["value"].as_str().unwrap().parse().unwrap();
    println!(
        "  from inside Python: one host import (`time.time_ns()`) {:.0} ns; a mediated Rust tool call (tools/echo, fresh instance) {}",
        per_import_ns,
        ms(echo_call)
    );

    // The same run: CPython as a process, and a container if one can run.
    // The interpreter itself, not a version manager's shim script in
    // front of it (pyenv's adds hundreds of milliseconds).
    let python3 = which("python3").and_then(|found| {
        let out = Command::new(found)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?;
        Some(std::path::PathBuf::from(path.trim()))
    });
    match &python3 {
        Some(python3) => {
            let spawn = timed(spawns, || {
                let out = Command::new(python3)
                    .args(["-c", "print(1)"])
                    .output()
                    .unwrap();
                assert!(out.status.success());
            });
            println!(
                "  subprocess `python3 -c \"print(1)\"` ({}): {}",
                python3.display(),
                ms(spawn)
            );
        }
        None => println!("  subprocess: no python3 on PATH, not measured"),
    }
    match docker_ready() {
        Ok(()) => {
            let container = timed(spawns.min(10), || {
                let out = Command::new("docker")
                    .args([
                        "run",
                        "--rm",
                        "--pull=never",
                        "python:3-slim",
                        "python",
                        "-c",
                        "print(1)",
                    ])
                    .output()
                    .unwrap();
                assert!(out.status.success());
            });
            println!(
                "  container `docker run --rm python:3-slim python -c \"print(1)\"`: {}",
                ms(container)
            );
        }
        Err(why) => println!("  container: not measured ({why})"),
    }

    let verdict = if to_first <= GOAL { "within" } else { "MISSES" };
    println!(
        "goal: a fresh interpreter instance to first line under {}: {} {verdict} it ({:.1}x the raw instantiate floor of {})",
        ms(GOAL),
        ms(to_first),
        to_first.as_secs_f64() / instantiate.as_secs_f64(),
        ms(instantiate),
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// Whether `docker run` can work here without pulling: a daemon answers
/// and the image is present locally.
fn docker_ready() -> Result<(), String> {
    let info = Command::new("docker").arg("info").output();
    match info {
        Err(_) => return Err("no `docker` command".into()),
        Ok(out) if !out.status.success() => {
            return Err("`docker info` failed: no Docker daemon here".into());
        }
        Ok(_) => {}
    }
    let image = Command::new("docker")
        .args(["image", "inspect", "python:3-slim"])
        .output()
        .map_err(|e| e.to_string())?;
    if !image.status.success() {
        return Err(
            "the image python:3-slim is not present locally, and this bench never pulls".into(),
        );
    }
    Ok(())
}
