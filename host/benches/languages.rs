//! Tools in Rust, Python and JavaScript, cache warm: how long loading a
//! compiled component from the on-disk cache takes (as a new process
//! does; hashing the bytes for the cache key included), and a whole mediated call (schema, policy,
//! audit records, a fresh instance, the call).
//!
//! Run with `make bench` or `cargo bench -p warden --bench languages`.

use sha2::Digest as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::gate::Gate;
use warden::load::PolicyFile;
use warden::registry::ToolRegistry;
use warden::runtime::{Runtime, RuntimeConfig};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (samples, loads) = if quick { (5, 2) } else { (1000, 50) };
    let text = "the quick brown fox jumps over the lazy dog and the dog sleeps";
    let tools = [
        (
            "Rust (tools/text)",
            guests::TEXT,
            "word_count",
            serde_json::json!({ "text": text }),
        ),
        (
            "Python (tools/wordfreq-py)",
            guests::WORDFREQ_PY,
            "word_frequencies",
            serde_json::json!({ "text": text, "top": 3 }),
        ),
        (
            "JavaScript (tools/jsonpath-js)",
            guests::JSONPATH_JS,
            "json_query",
            serde_json::json!({ "document": "{\"a\":{\"b\":[1,2,3]}}", "path": "$.a.b[1]" }),
        ),
    ];
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
    println!("cache warm; {samples} calls each, fresh instance per call:");
    for (label, path, tool, args) in tools {
        let bytes = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (run `make setup` and build)"));
        let started = Instant::now();
        runtime.load(path, &bytes).unwrap();
        let compile = started.elapsed();
        let mut load_t = Vec::new();
        let mut hash_t = Vec::new();
        for _ in 0..loads {
            // A new runtime, as in a new `warden` process: the compiled
            // form comes from the on-disk cache.
            let fresh = Runtime::new(RuntimeConfig {
                cache_dir: Some(dir.path().join("cache")),
                max_instances: 4,
            })
            .unwrap();
            let started = Instant::now();
            let loaded = fresh.load(path, &bytes).unwrap();
            load_t.push(started.elapsed());
            assert!(loaded.cache_hit);
            let started = Instant::now();
            std::hint::black_box(sha2::Sha256::digest(&bytes));
            hash_t.push(started.elapsed());
        }

        let policy_text = format!(
            "[model]\nallow = [\"scripted\"]\n[limits]\nmemory = \"128MiB\"\n[tools.{tool}]\ncomponent = {path:?}\nmax_calls = 1_000_000\n"
        );
        let policy =
            PolicyFile::from_text("bench.toml".into(), dir.path().into(), policy_text).unwrap();
        let audit = AuditLog::new(new_run_id())
            .with_sink(JsonlFile::open(&dir.path().join("audit.jsonl")).unwrap());
        let gate = Arc::new(Gate::new(policy.policy.clone(), audit));
        let registry = rt
            .block_on(ToolRegistry::load(&runtime, &policy, &gate))
            .unwrap();
        let args = args.to_string();
        let mut call_t = Vec::new();
        for i in 0..samples + samples / 10 {
            let started = Instant::now();
            let out = rt
                .block_on(warden::capability::tools::call(
                    &gate, &registry, None, tool, &args,
                ))
                .unwrap()
                .unwrap_or_else(|e| panic!("{tool}: {e}"));
            let elapsed = started.elapsed();
            std::hint::black_box(out);
            if i >= samples / 10 {
                call_t.push(elapsed);
            }
        }
        println!(
            "  {label:<32} {:>6.1} MiB  first compile {:>8.1?}  load from cache {:>8.1?} (of which SHA-256 {:>8.1?})  mediated call {:>8.1?}",
            bytes.len() as f64 / (1024.0 * 1024.0),
            compile,
            median(&mut load_t),
            median(&mut hash_t),
            median(&mut call_t),
        );
    }
}
