//! Tool components named by URL: served by the test itself on 127.0.0.1
//! (plain http is allowed to loopback), downloaded once, checked against
//! their pin before anything else, and reused offline.

use crate::harness::*;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, MemorySink, Record, new_run_id};
use warden::load::{ComponentSource, PolicyFile};
use warden::remote::Downloader;
use warden::run::{RunError, RunReport, RunSpec, run};
use warden::runtime::{Runtime, RuntimeConfig};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn echo_bytes() -> Vec<u8> {
    std::fs::read(guests::ECHO_TOOL).unwrap()
}

/// A component server: `/echo.wasm` serves `bytes` (each request counted),
/// `/moved` redirects there, `/insecure` redirects to plain http on another
/// host, `/loop` redirects to itself, `/endless` streams without end and
/// without a Content-Length.
struct Server {
    /// `http://127.0.0.1:PORT`.
    url: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct Served {
    bytes: Vec<u8>,
    hits: Arc<AtomicUsize>,
}

impl Server {
    async fn start(bytes: Vec<u8>) -> Server {
        let hits = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(Served {
            bytes,
            hits: hits.clone(),
        });
        let app = Router::new().fallback(serve).with_state(served);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { url, hits, task }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stop serving: the port refuses connections afterwards.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve(State(served): State<Arc<Served>>, uri: Uri) -> Response {
    let redirect = |to: &str| {
        Response::builder()
            .status(StatusCode::FOUND)
            .header("location", to)
            .body(Body::empty())
            .unwrap()
    };
    match uri.path() {
        "/echo.wasm" => {
            served.hits.fetch_add(1, Ordering::SeqCst);
            Response::new(Body::from(served.bytes.clone()))
        }
        "/moved" => redirect("/echo.wasm"),
        "/insecure" => redirect("http://example.com/echo.wasm"),
        "/loop" => redirect("/loop"),
        "/endless" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![0u8; 64 * 1024]);
                while tx.send(Ok(chunk.clone())).await.is_ok() {}
            });
            Response::new(Body::from_stream(Receiver(rx)))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::empty())
            .unwrap(),
    }
}

struct Receiver(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Receiver {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A raw TCP server that answers every connection with `head` (nothing,
/// for one that never answers) and then holds it open.
fn stalling_server(head: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request);
                let _ = socket.write_all(head.as_bytes());
                std::thread::sleep(Duration::from_secs(120));
            });
        }
    });
    url
}

/// A runtime as a new process would have: the tests' shared compile cache
/// (so each component compiles once) and its own download cache.
fn runtime_with(downloads: Option<PathBuf>) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir().to_path_buf()),
        max_instances: 8,
    })
    .unwrap()
    .with_downloader(Downloader::new(downloads))
}

fn echo_policy(component: &str, pin: Option<&str>) -> String {
    let pin = pin
        .map(|p| format!("sha256 = \"{p}\"\n"))
        .unwrap_or_default();
    format!("[model]\nallow = [\"scripted\"]\n\n[tools.echo]\ncomponent = \"{component}\"\n{pin}")
}

/// Run the react agent under `policy` on `runtime`, with a model that calls
/// `echo` once and then answers "done".
async fn run_echo(runtime: &Runtime, policy: &str) -> (Result<RunReport, RunError>, Vec<Record>) {
    let script = "[[turn]]\ncalls = [{ tool = \"echo\", arguments_json = '{\"text\":\"hi\"}' }]\n[[turn]]\ntext = \"done\"\n";
    let sink = MemorySink::default();
    let spec = RunSpec {
        policy: PolicyFile::from_text("test-policy.toml".into(), repo(), policy.into())
            .unwrap_or_else(|e| panic!("{e}")),
        agent: ComponentSource::Builtin("react".into()),
        provider: Recording::new(script),
        task: "echo hi".into(),
        approver: None,
        approve: Vec::new(),
        approve_from: Vec::new(),
        replay_tools: None,
    };
    let log = AuditLog::new(new_run_id()).with_sink(sink.clone());
    let result = run(runtime, spec, log).await;
    (result, sink.records())
}

/// The run went through and `echo` answered.
fn assert_echoed(result: &Result<RunReport, RunError>, records: &[Record]) {
    let report = result.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.result.as_deref(), Ok("done"));
    let outcome = records
        .iter()
        .find(|r| {
            r.subject == "echo"
                && serde_json::to_value(r.kind).unwrap() == "tool"
                && serde_json::to_value(r.event).unwrap() == "outcome"
        })
        .expect("echo ran");
    assert_eq!(
        outcome.data.as_ref().unwrap()["result"],
        "{\"text\":\"hi\"}"
    );
}

fn policy_error(result: Result<RunReport, RunError>) -> String {
    match result {
        Err(RunError::Policy(error)) => error.render(),
        other => panic!("expected a policy error, got {other:?}"),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn a_pinned_url_component_is_downloaded_checked_and_callable() {
    let bytes = echo_bytes();
    let pin = sha256(&bytes);
    let server = Server::start(bytes).await;
    let downloads = tempfile::tempdir().unwrap();
    let runtime = runtime_with(Some(downloads.path().to_path_buf()));
    let url = server.at("/echo.wasm");

    let (result, records) = run_echo(&runtime, &echo_policy(&url, Some(&pin))).await;
    assert_echoed(&result, &records);
    assert_eq!(server.hits(), 1);
    // The first record names the component by its URL and its hash.
    let components = &records[0].data.as_ref().unwrap()["components"];
    assert_eq!(
        components,
        &serde_json::json!([{ "source": url, "sha256": pin }])
    );
    // Kept under its hash, for the next run.
    assert_eq!(files_in(downloads.path()), vec![format!("{pin}.wasm")]);
}

#[tokio::test]
async fn a_second_run_uses_the_download_cache_and_works_offline() {
    let bytes = echo_bytes();
    let pin = sha256(&bytes);
    let server = Server::start(bytes).await;
    let downloads = tempfile::tempdir().unwrap();
    let policy = echo_policy(&server.at("/echo.wasm"), Some(&pin));

    let (result, records) = run_echo(&runtime_with(Some(downloads.path().into())), &policy).await;
    assert_echoed(&result, &records);
    // A new process: the component comes from the cache, no request.
    let (result, records) = run_echo(&runtime_with(Some(downloads.path().into())), &policy).await;
    assert_echoed(&result, &records);
    assert_eq!(server.hits(), 1, "the second run made no request");

    // With the server gone, runs still work.
    server.stop().await;
    let (result, records) = run_echo(&runtime_with(Some(downloads.path().into())), &policy).await;
    assert_echoed(&result, &records);

    // A cached file changed at rest is not used; with nowhere to download
    // it from again, the run is refused, and the bad file is gone.
    let cached = downloads.path().join(format!("{pin}.wasm"));
    std::fs::write(&cached, b"\0asm tampered").unwrap();
    let (result, _) = run_echo(&runtime_with(Some(downloads.path().into())), &policy).await;
    let text = policy_error(result);
    assert!(text.contains("cannot be downloaded from"), "{text}");
    assert!(
        text.contains("cannot connect to http://127.0.0.1:"),
        "{text}"
    );
    assert!(!cached.exists(), "the tampered file was discarded");
}

#[tokio::test]
async fn a_tampered_cache_file_is_downloaded_again() {
    let bytes = echo_bytes();
    let pin = sha256(&bytes);
    let server = Server::start(bytes.clone()).await;
    let downloads = tempfile::tempdir().unwrap();
    let cached = downloads.path().join(format!("{pin}.wasm"));
    std::fs::write(&cached, std::fs::read(guests::ATTACKER_TOOL).unwrap()).unwrap();
    let runtime = runtime_with(Some(downloads.path().into()));
    let (result, records) =
        run_echo(&runtime, &echo_policy(&server.at("/echo.wasm"), Some(&pin))).await;
    assert_echoed(&result, &records);
    assert_eq!(server.hits(), 1);
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        bytes,
        "replaced by the download"
    );
}

#[tokio::test]
async fn a_component_swapped_at_its_url_is_refused_by_the_pin_and_not_kept() {
    // The policy pins the echo tool; the server now sends another component.
    let pin = sha256(&echo_bytes());
    let swapped = std::fs::read(guests::ATTACKER_TOOL).unwrap();
    let actual = sha256(&swapped);
    let server = Server::start(swapped).await;
    let downloads = tempfile::tempdir().unwrap();
    let runtime = runtime_with(Some(downloads.path().into()));
    let url = server.at("/echo.wasm");
    let (result, records) = run_echo(&runtime, &echo_policy(&url, Some(&pin))).await;
    let text = policy_error(result);
    assert!(
        text.contains(&format!("`{url}` does not match the pin of [tools.echo]")),
        "{text}"
    );
    assert!(
        text.contains(&format!("sha256 in the policy:   {pin}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("sha256 of the download: {actual}")),
        "{text}"
    );
    assert!(text.contains("--> test-policy.toml:5:13"), "{text}");
    assert!(text.contains("warden tools inspect"), "{text}");
    assert!(files_in(downloads.path()).is_empty(), "nothing was cached");
    assert!(
        !records.iter().any(|r| r.subject.ends_with(":describe")),
        "nothing of the component ran"
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn url_components_need_a_pin_https_and_no_credentials() {
    let error = |component: &str, pin: Option<&str>| {
        PolicyFile::from_text("p.toml".into(), repo(), echo_policy(component, pin))
            .unwrap_err()
            .render()
    };
    let text = error("https://tools.example.com/echo.wasm", None);
    assert!(
        text.contains("error: [tools.echo] downloads its component but has no `sha256` pin"),
        "{text}"
    );
    assert!(text.contains("--> p.toml:5:13"), "{text}");
    assert!(
        text.contains("help: add `sha256 = \"...\"` under [tools.echo]; `warden tools inspect https://tools.example.com/echo.wasm` prints it"),
        "{text}"
    );
    let pin = "0".repeat(64);
    let text = error("http://tools.example.com/echo.wasm", Some(&pin));
    assert!(
        text.contains("components are not downloaded over plain http from `tools.example.com`"),
        "{text}"
    );
    assert!(text.contains("help: use https"), "{text}");
    let text = error("file:///tmp/echo.wasm", Some(&pin));
    assert!(text.contains("`file:` URLs are not supported"), "{text}");
    assert!(text.contains("help: write the path itself"), "{text}");
    let text = error("https://me:hunter2@tools.example.com/echo.wasm", Some(&pin));
    assert!(
        text.contains("may not contain a user name or password"),
        "{text}"
    );
    // Pinned https and loopback http are fine; nothing is fetched by checking.
    for component in [
        "https://tools.example.com/echo.wasm",
        "http://127.0.0.1:1/echo.wasm",
        "http://[::1]:1/echo.wasm",
        "http://localhost:1/echo.wasm",
    ] {
        PolicyFile::from_text("p.toml".into(), repo(), echo_policy(component, Some(&pin)))
            .unwrap_or_else(|e| panic!("{component}: {e}"));
    }
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_urls() {
    let bytes = echo_bytes();
    let pin = sha256(&bytes);
    let server = Server::start(bytes).await;
    let runtime = runtime_with(None);

    let (result, records) =
        run_echo(&runtime, &echo_policy(&server.at("/moved"), Some(&pin))).await;
    assert_echoed(&result, &records);
    assert_eq!(server.hits(), 1);

    let (result, _) = run_echo(&runtime, &echo_policy(&server.at("/insecure"), Some(&pin))).await;
    let text = policy_error(result);
    assert!(
        text.contains(&format!(
            "refusing the redirect from {} to http://example.com/echo.wasm: components are not downloaded over plain http from `example.com`",
            server.at("/insecure")
        )),
        "{text}"
    );

    let (result, _) = run_echo(&runtime, &echo_policy(&server.at("/loop"), Some(&pin))).await;
    let text = policy_error(result);
    assert!(text.contains("more than 5 redirects"), "{text}");

    let (result, _) = run_echo(&runtime, &echo_policy(&server.at("/gone"), Some(&pin))).await;
    let text = policy_error(result);
    assert!(text.contains("answered 404 Not Found"), "{text}");
}

#[tokio::test]
async fn oversized_and_stalled_downloads_fail_clearly_and_quickly() {
    let pin = sha256(&echo_bytes());
    let started = Instant::now();

    // A server declaring more than the cap is refused unread (the default
    // cap, 256 MiB).
    let huge = stalling_server("HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n");
    let runtime = runtime_with(None);
    let (result, _) = run_echo(
        &runtime,
        &echo_policy(&format!("{huge}/x.wasm"), Some(&pin)),
    )
    .await;
    let text = policy_error(result);
    assert!(
        text.contains("sends more than 256MiB (the download size limit): refused"),
        "{text}"
    );

    // One that does not say is cut off while streaming.
    let server = Server::start(Vec::new()).await;
    let small = Downloader {
        max_size: 1024 * 1024,
        ..Downloader::new(None)
    };
    let runtime = runtime_with(None).with_downloader(small);
    let (result, _) = run_echo(&runtime, &echo_policy(&server.at("/endless"), Some(&pin))).await;
    let text = policy_error(result);
    assert!(
        text.contains("sends more than 1MiB (the download size limit): refused"),
        "{text}"
    );

    // One that never answers is given up on at the timeout.
    let silent = stalling_server("");
    let impatient = Downloader {
        timeout: Duration::from_secs(1),
        ..Downloader::new(None)
    };
    let runtime = runtime_with(None).with_downloader(impatient);
    let (result, _) = run_echo(
        &runtime,
        &echo_policy(&format!("{silent}/x.wasm"), Some(&pin)),
    )
    .await;
    let text = policy_error(result);
    assert!(
        text.contains("the download did not finish within 1s (the download timeout)"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
}

#[tokio::test]
async fn without_a_cache_directory_downloads_stay_in_memory() {
    let bytes = echo_bytes();
    let pin = sha256(&bytes);
    let server = Server::start(bytes.clone()).await;
    let url = url::Url::parse(&server.at("/echo.wasm")).unwrap();
    let downloader = Downloader::new(None);
    for _ in 0..2 {
        let fetched = downloader.fetch(&url, Some(&pin)).await.unwrap();
        assert_eq!(fetched.bytes, bytes);
        assert!(!fetched.from_cache);
    }
    assert_eq!(
        server.hits(),
        2,
        "nothing was kept, so each fetch downloads"
    );
}

fn warden(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn check_refuses_a_missing_pin_and_inspect_prints_it() {
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let bytes = echo_bytes();
    let pin = sha256(&bytes);
    let server = tokio.block_on(Server::start(bytes));
    let url = server.at("/echo.wasm");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("remote.toml");

    std::fs::write(&policy, echo_policy(&url, None)).unwrap();
    let out = warden(&["check", policy.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no `sha256` pin"), "{stderr}");
    assert!(stderr.contains("remote.toml:5:13"), "{stderr}");
    assert!(
        stderr.contains(&format!("`warden tools inspect {url}` prints it")),
        "{stderr}"
    );

    // No pin is needed to inspect: that is how the pin is learned.
    let out = warden(&[
        "tools",
        "inspect",
        &url,
        "--cache-dir",
        cache_dir().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("{url}\n  sha256 = \"{pin}\"\n")),
        "{stdout}"
    );
    assert!(
        stdout.contains("echo: Return the arguments unchanged."),
        "{stdout}"
    );
    assert_eq!(server.hits(), 1);

    // Pinned, the policy checks and shows where the tool comes from. With
    // --no-load nothing is downloaded; without, the component is downloaded
    // as `run` would, matched against its pin and kept, so the next check
    // (and run) needs no network.
    std::fs::write(&policy, echo_policy(&url, Some(&pin))).unwrap();
    let cache = dir.path().join("cache");
    let check = |extra: &[&str]| {
        let mut args = vec!["check", policy.to_str().unwrap()];
        args.extend(["--cache-dir", cache.to_str().unwrap()]);
        args.extend(extra);
        let out = warden(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!(
                "echo ({url}): allowed; pinned to sha256 {}",
                &pin[..12]
            )),
            "{stdout}"
        );
        stdout
    };
    check(&["--no-load"]);
    assert_eq!(server.hits(), 1);
    let stdout = check(&[]);
    assert!(
        stdout.contains(&format!("  {url}: sha256 {pin}")),
        "{stdout}"
    );
    assert_eq!(server.hits(), 2);
    check(&[]);
    assert_eq!(server.hits(), 2);
}
