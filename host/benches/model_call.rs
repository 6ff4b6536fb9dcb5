//! The host's own overhead per model call: everything but the provider's
//! latency.
//!
//! A local HTTP server (axum, 127.0.0.1) answers every request with the same
//! Chat Completions body. Two clients call it in alternation:
//!
//! - `direct`: serialize the request the way the provider does, POST it with
//!   the same reqwest client settings, parse the answer. What any agent
//!   framework pays to talk to a model.
//! - `mediated`: `capability::model::chat`, the path a guest's `chat` import
//!   takes: secret and pattern redaction, clamping, token estimate, policy
//!   decision, the same provider and HTTP, usage accounting, labels and
//!   provenance index, two audit records written to a JSONL file.
//!
//! The difference of the medians is warden's overhead. Run with
//! `make bench` or `cargo bench -p warden --bench model_call`.

use axum::Router;
use axum::body::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::chat::{ChatRequest, Message, Role, ToolSpec};
use warden::gate::Gate;
use warden::load::PolicyFile;
use warden::policy::ProviderLimits;
use warden::provider::{ModelProvider, ProviderOptions, from_spec};
use warden::secrets::Secrets;

const SAMPLES: usize = 4000;
const WARMUP: usize = 300;

const POLICY: &str = r#"
[model]
allow = ["gpt-bench"]
max_tokens = 1_000_000_000
max_tokens_per_call = 512
redact = ['\b\d{3}-\d{2}-\d{4}\b']
labels = ["model"]
"#;

fn answer() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "model": "gpt-bench",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look that up.",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "search", "arguments": "{\"query\":\"wasm component model\"}"}}]}}],
            "usage": {"prompt_tokens": 180, "completion_tokens": 24, "total_tokens": 204},
        })
        .to_string(),
    )
}

fn request() -> ChatRequest {
    let message = |role, content: &str| Message {
        role,
        content: content.into(),
        tool_calls: vec![],
        tool_call_id: None,
    };
    ChatRequest {
        messages: vec![
            message(
                Role::System,
                "You are a careful assistant working inside a sandbox. Use the tools you are given when they help; when you have the answer, reply with it and call no tools.",
            ),
            message(
                Role::User,
                "Find out what the WebAssembly component model is and summarize it in three sentences for a newcomer.",
            ),
        ],
        tools: vec![
            ToolSpec {
                name: "search".into(),
                description: "Search the web".into(),
                parameters: serde_json::json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
            },
            ToolSpec {
                name: "calc".into(),
                description: "Evaluate arithmetic".into(),
                parameters: serde_json::json!({"type": "object", "properties": {"expression": {"type": "string"}}}),
            },
        ],
        model: "gpt-bench".into(),
        max_tokens: Some(1024),
        temperature: None,
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn p90(samples: &[Duration]) -> Duration {
    samples[samples.len() * 9 / 10]
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: do
    // one quick round so the target is exercised without taking minutes.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (samples, warmup) = if quick { (20, 5) } else { (SAMPLES, WARMUP) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let body = answer();
        let app = Router::new().fallback(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let provider: Arc<dyn ModelProvider> = from_spec(
            &format!("openai-compatible:{url}/v1#gpt-bench"),
            &ProviderOptions {
                limits: ProviderLimits::default(),
                ..ProviderOptions::default()
            },
        )
        .unwrap();
        let direct = reqwest::Client::builder().no_proxy().build().unwrap();
        let direct_url = format!("{url}/v1/chat/completions");

        let dir = tempfile::tempdir().unwrap();
        let policy =
            PolicyFile::from_text("bench.toml".into(), dir.path().into(), POLICY.into()).unwrap();
        let audit = AuditLog::new(new_run_id())
            .with_sink(JsonlFile::open(&dir.path().join("audit.jsonl")).unwrap());
        let mut secrets = Secrets::default();
        secrets.add("DB_PASSWORD", "hunter2-correct-horse");
        secrets.add("model_api_key", "sk-bench-0123456789abcdef");
        let gate = Gate::new(policy.policy.clone(), audit).with_secrets(secrets);
        let request = request();

        let mut direct_times = Vec::with_capacity(samples);
        let mut mediated_times = Vec::with_capacity(samples);
        for i in 0..warmup + samples {
            // Direct: what the provider does, without the host around it.
            let started = Instant::now();
            let wire = serde_json::json!({
                "model": request.model, "messages": request.messages, "tools": request.tools,
                "max_tokens": request.max_tokens,
            });
            let response = direct.post(&direct_url).json(&wire).send().await.unwrap();
            let bytes = response.bytes().await.unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            std::hint::black_box(parsed);
            let direct_time = started.elapsed();

            let started = Instant::now();
            let answer = warden::capability::model::chat(&gate, &*provider, request.clone())
                .await
                .unwrap()
                .unwrap();
            std::hint::black_box(answer);
            let mediated_time = started.elapsed();
            if i >= warmup {
                direct_times.push(direct_time);
                mediated_times.push(mediated_time);
            }
        }
        let (d, m) = (median(&mut direct_times), median(&mut mediated_times));
        println!("model call over loopback HTTP, {samples} samples each, alternating:");
        println!(
            "  direct    median {d:>10.1?}  p90 {:>10.1?}",
            p90(&direct_times)
        );
        println!(
            "  mediated  median {m:>10.1?}  p90 {:>10.1?}",
            p90(&mediated_times)
        );
        println!(
            "  host overhead (median difference): {:.1?}",
            m.saturating_sub(d)
        );
    });
}
