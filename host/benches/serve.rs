//! `warden serve` under load: N sessions live at once, each the bundled
//! react agent driven by a loopback model server that answers every call
//! after 200 ms, asking for a `calc` tool call on each of its first
//! [`TOOL_CALLS`] answers and answering on the next.
//!
//! For each N in 1, 64, 512 and 1000 it reports:
//! - RSS per live session: the process's resident memory while all N
//!   sessions wait on the model, less the same process idle, over N;
//! - tool-call throughput: N x TOOL_CALLS over the wall time from the first
//!   submit (over HTTP) until the last run is over;
//! - the floor: the same model server driven directly by N concurrent
//!   loops of the same sequence of calls (no warden), as tool calls a
//!   second: what any client of a 200 ms model can reach at that
//!   concurrency. warden's throughput over the floor's is the share kept.
//!
//! Run with `env -u RUST_BACKTRACE cargo bench -p warden --bench serve`
//! (or `make bench`); `SERVE_BENCH_LEVELS=1,64` picks the levels.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::job::JobConfig;
use warden::runtime::{Runtime, RuntimeConfig};
use warden::serve::auth::Tokens;
use warden::serve::{ServeLimits, ServeState};

/// Tool calls per session.
const TOOL_CALLS: usize = 5;
/// How long the model takes to answer.
const MODEL_DELAY: Duration = Duration::from_millis(200);

const POLICY: &str = r#"
[limits]
memory = "16MiB"
wall = "600s"

[model]
allow = ["gpt-bench"]
max_calls = 20
provider = "MODEL_SPEC"

[tools.calc]
component = "builtin:calc"
max_calls = 20
"#;

/// The model: a calc call while the conversation has fewer than
/// TOOL_CALLS tool results, then an answer; after MODEL_DELAY.
async fn model(body: Bytes) -> ([(&'static str, &'static str); 1], String) {
    tokio::time::sleep(MODEL_DELAY).await;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let results = request["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["role"] == "tool").count())
        .unwrap_or(0);
    let message = if results < TOOL_CALLS {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_{results}"), "type": "function",
            "function": {"name": "calc", "arguments": "{\"expression\":\"6 * 7\"}"}}]})
    } else {
        json!({"role": "assistant", "content": "42"})
    };
    let finish = if results < TOOL_CALLS {
        "tool_calls"
    } else {
        "stop"
    };
    let answer = json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "model": "gpt-bench",
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    });
    ([("content-type", "application/json")], answer.to_string())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// N loops of TOOL_CALLS + 1 sequential model calls, straight to the
/// model server: tool calls (model turns that asked for one) a second.
async fn floor(model_url: &str, sessions: usize) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        let client = client.clone();
        let url = format!("{model_url}/v1/chat/completions");
        tasks.spawn(async move {
            let mut messages = vec![json!({"role": "user", "content": "6 * 7?"})];
            for _ in 0..=TOOL_CALLS {
                let answer: Value = client
                    .post(&url)
                    .json(&json!({"model": "gpt-bench", "messages": messages}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let message = answer["choices"][0]["message"].clone();
                let calls = message["tool_calls"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                messages.push(message);
                for call in calls {
                    messages
                        .push(json!({"role": "tool", "tool_call_id": call["id"], "content": "42"}));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (sessions * TOOL_CALLS) as f64 / started.elapsed().as_secs_f64()
}

struct Level {
    sessions: usize,
    rss_per_session_kib: f64,
    tool_calls_per_s: f64,
    floor_per_s: f64,
    wall: Duration,
    succeeded: usize,
}

async fn level(
    state: &Arc<ServeState>,
    serve_url: &str,
    model_url: &str,
    sessions: usize,
) -> Level {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    // Idle: between levels, after the previous one's runs ended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib();
    let started = Instant::now();
    let submits = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..sessions {
        let client = client.clone();
        let url = format!("{serve_url}/runs");
        let submits = submits.clone();
        tasks.spawn(async move {
            let _permit = submits.acquire().await.unwrap();
            let response = client
                .post(&url)
                .json(&json!({"agent": "builtin:react", "policy": "bench", "task": format!("task {i}: 6 * 7?")}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202, "{:?}", response.text().await);
            let run: Value = response.json().await.unwrap();
            run["id"].as_str().unwrap().to_string()
        });
    }
    let mut ids = Vec::with_capacity(sessions);
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    // Sample the resident memory while every session is live (each is
    // waiting on the model most of the time); keep the highest.
    let mut peak = rss_kib();
    while state.live_runs() > 0 {
        if state.live_runs() == sessions {
            peak = peak.max(rss_kib());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let mut succeeded = 0;
    for id in &ids {
        let run: Value = client
            .get(format!("{serve_url}/runs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "succeeded" && run["summary"]["tool_calls"] == TOOL_CALLS {
            succeeded += 1;
        } else if succeeded == 0 {
            eprintln!("a run did not succeed: {run}");
        }
    }
    let floor_per_s = floor(model_url, sessions).await;
    Level {
        sessions,
        rss_per_session_kib: peak.saturating_sub(idle) as f64 / sessions as f64,
        tool_calls_per_s: (sessions * TOOL_CALLS) as f64 / wall.as_secs_f64(),
        floor_per_s,
        wall,
        succeeded,
    }
}

fn main() {
    let levels: Vec<usize> = std::env::var("SERVE_BENCH_LEVELS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 64, 512, 1000]);
    let max = levels.iter().copied().max().unwrap_or(1);
    let (soft, hard) = warden::serve::raise_descriptor_limit().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let model_url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route("/v1/chat/completions", post(model));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join("bench.toml"),
            POLICY.replace(
                "MODEL_SPEC",
                &format!("openai-compatible:{model_url}/v1#gpt-bench"),
            ),
        )
        .unwrap();
        let engine = Arc::new(
            Runtime::new(RuntimeConfig {
                cache_dir: Some(dir.path().join("cache")),
                max_instances: (max + 128) as u32,
            })
            .unwrap(),
        );
        let limits = ServeLimits {
            max_live_runs: max,
            ..ServeLimits::default()
        };
        assert!(
            soft >= limits.descriptors_needed() + max as u64,
            "descriptors: {soft} (hard {hard}) < {} needed",
            limits.descriptors_needed() + max as u64
        );
        let jobs = JobConfig::new(&policies, dir.path().join("audit"));
        let tokens = Tokens::insecure(1e9, max);
        let state = Arc::new(ServeState::new(engine, jobs, tokens, limits));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let serve_url = format!("http://{}", listener.local_addr().unwrap());
        let app = warden::serve::router(state.clone());
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
        // One run first: the agent and calc compiled and cached.
        let _ = level(&state, &serve_url, &model_url, 1).await;
        println!(
            "serve: sessions each {TOOL_CALLS} tool calls, model answers after {MODEL_DELAY:?}; descriptors {soft}"
        );
        println!(
            "{:>9} {:>12} {:>14} {:>14} {:>8} {:>9} {:>10}",
            "sessions", "RSS/session", "tool calls/s", "floor calls/s", "kept", "wall", "succeeded"
        );
        for n in levels {
            let level = level(&state, &serve_url, &model_url, n).await;
            println!(
                "{:>9} {:>9.0} KiB {:>14.1} {:>14.1} {:>7.1}% {:>8.2}s {:>6}/{}",
                level.sessions,
                level.rss_per_session_kib,
                level.tool_calls_per_s,
                level.floor_per_s,
                100.0 * level.tool_calls_per_s / level.floor_per_s,
                level.wall.as_secs_f64(),
                level.succeeded,
                level.sessions,
            );
        }
    });
}
