//! What the egress check and a granted directory cost.
//!
//! - `http/direct`: a fresh TCP connection, an HTTP/1 GET with hyper, the
//!   body read: what an unmediated host does for a guest's request.
//! - `http/mediated`: the same request through warden's `wasi:http` hooks:
//!   URL normalization, policy decision, audit records (to a file), address
//!   check, connect to the checked address, limits on the body.
//! - `fs/setup`: building a tool instance's WASI context with one granted
//!   directory, against one with none. Opens inside the guest then go
//!   straight through wasmtime-wasi's preopen (no warden code per open), so
//!   the grant's whole cost is this setup; `fs/open` measures a native open
//!   for scale.
//!
//! Medians of alternating samples. `cargo bench -p warden --bench egress`.

use axum::Router;
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::capability::http::Egress;
use warden::capability::{Grantee, GuestState, ToolRole};
use warden::gate::Gate;
use warden::load::PolicyFile;
use wasmtime_wasi_http::WasiHttpHooks;

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let samples = if quick { 20 } else { 3000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = Router::new().fallback(|| async { "ok" });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let url = format!("http://{address}/api/items?page=2");

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        std::fs::write(dir.path().join("work/file.txt"), "hello").unwrap();
        let policy = PolicyFile::from_text(
            "bench.toml".into(),
            dir.path().into(),
            format!(
                r#"
[tools.fetch]
component = "builtin:fetch"
http = {{ allow = ["https://api.example.com/**", {{ url = "http://127.0.0.1:{}/api/**", private = true, labels = ["internal"] }}] }}
[tools.files]
component = "builtin:files"
fs = {{ "/work" = {{ dir = "work", mode = "rw" }} }}
[tools.bare]
component = "builtin:files"
"#,
                address.port()
            ),
        )
        .unwrap();
        let audit = AuditLog::new(new_run_id())
            .with_sink(JsonlFile::open(&dir.path().join("audit.jsonl")).unwrap());
        let gate = Arc::new(
            Gate::new(policy.policy.clone(), audit).with_dirs(policy.dirs.clone()),
        );

        let mut direct = Vec::with_capacity(samples);
        let mut mediated = Vec::with_capacity(samples);
        for i in 0..samples + samples / 10 {
            let started = Instant::now();
            let stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = http::Request::builder()
                .uri("/api/items?page=2")
                .header("host", address.to_string())
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            std::hint::black_box(body);
            let d = started.elapsed();

            let started = Instant::now();
            let mut egress = Egress::new(gate.clone(), Some("fetch".into()), "fetch".into(), true);
            let request = http::Request::builder()
                .uri(&url)
                .body(
                    Empty::<bytes::Bytes>::new()
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
                .unwrap();
            let future = egress.send_request(request, None, Box::new(async { Ok(()) }));
            let (response, _) = Box::into_pin(future).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            std::hint::black_box(body);
            let m = started.elapsed();
            if i >= samples / 10 {
                direct.push(d);
                mediated.push(m);
            }
        }
        let (d, m) = (median(&mut direct), median(&mut mediated));
        println!("HTTP GET over loopback, fresh connection each, {samples} samples each:");
        println!("  direct    median {d:>10.1?}");
        println!("  mediated  median {m:>10.1?}");
        println!("  egress check + audit (median difference): {:.1?}", m.saturating_sub(d));

        let limits = gate.policy().limits.clone();
        let mut with = Vec::with_capacity(samples);
        let mut without = Vec::with_capacity(samples);
        let mut open = Vec::with_capacity(samples);
        let file = dir.path().join("work/file.txt");
        for _ in 0..samples {
            let started = Instant::now();
            let state =
                GuestState::new("bare", gate.clone(), &limits, ToolRole, Grantee::Tool("bare")).unwrap();
            std::hint::black_box(state);
            without.push(started.elapsed());
            let started = Instant::now();
            let state =
                GuestState::new("files", gate.clone(), &limits, ToolRole, Grantee::Tool("files")).unwrap();
            std::hint::black_box(state);
            with.push(started.elapsed());
            let started = Instant::now();
            std::hint::black_box(std::fs::File::open(&file).unwrap());
            open.push(started.elapsed());
        }
        let (w, wo, o) = (median(&mut with), median(&mut without), median(&mut open));
        println!("tool instance WASI context, {samples} samples each:");
        println!("  no grant         median {wo:>10.1?}");
        println!("  one preopen (rw) median {w:>10.1?}  (+{:.1?})", w.saturating_sub(wo));
        println!("  native File::open median {o:>9.1?}  (for scale)");
    });
}
