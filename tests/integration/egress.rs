//! Outgoing HTTP from tools: each request decided by the tool's own grant,
//! checked again after resolution, bounded, and audited; secrets injected
//! only where bound and never seen by the guest. The `probe` guest tries
//! each attack; a server on 127.0.0.1 started by the test says what
//! arrived.

use crate::harness::*;
use crate::mock_model::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warden::audit::{Outcome, Record};
use warden::policy::Verdict;

/// Run the probe tool once with `args` under `grants` (TOML lines under
/// `[tools.probe]`, plus any extra tables); what it reported, and the run.
async fn probe(grants: &str, args: Value) -> (Value, Ran) {
    run_probe(&probe_policy(grants), args).await
}

fn http_records(ran: &Ran) -> Vec<&Record> {
    ran.records
        .iter()
        .filter(|r| serde_json::to_value(r.kind).unwrap() == "http")
        .collect()
}

fn get(url: &str) -> Value {
    json!({ "op": "http", "url": url })
}

fn loopback_rule(server: &MockModel) -> String {
    format!(
        "http = {{ allow = [{{ url = \"{}/**\", private = true, labels = [\"internal\"] }}] }}",
        server.url
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_request_goes_out_and_is_audited_with_its_rule() {
    let server = MockModel::start(vec![Reply::raw(200, "hello from the server")]).await;
    let (result, ran) = probe(&loopback_rule(&server), get(&format!("{}/ok", server.url))).await;
    assert_eq!(result[0]["status"], 200, "{result}");
    assert_eq!(result[0]["body"], "hello from the server");
    assert_eq!(server.seen().len(), 1);
    let records = http_records(&ran);
    assert_eq!(records.len(), 2, "a decision and an outcome");
    assert_eq!(records[0].decision, Verdict::Allow);
    assert_eq!(records[0].rule, "tools.probe.http.allow[0]");
    assert_eq!(records[1].outcome, Some(Outcome::Ok));
    assert_eq!(records[1].data.as_ref().unwrap()["status"], 200);
    // The rule's label reaches the session through the tool's result.
    assert!(
        ran.report.session.labels.contains(&"internal".to_string()),
        "{:?}",
        ran.report.session.labels
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_grant_are_refused_as_error_values() {
    let server = MockModel::start(vec![]).await;
    // No http grant at all.
    let (result, ran) = probe("", get(&format!("{}/x", server.url))).await;
    assert_eq!(result[0]["error"], "HttpRequestDenied", "{result}");
    assert_eq!(http_records(&ran)[0].rule, "tools.probe.http");
    // A grant for another host; another method; an IDN look-alike.
    let grant = "http = { allow = [\"https://apple.com/**\"], methods = [\"GET\"] }";
    for (args, rule) in [
        (get(&format!("{}/x", server.url)), "tools.probe.http.allow"),
        (
            get("https://xn--pple-43d.com/login"),
            "tools.probe.http.allow",
        ),
        (
            json!({"op": "http", "url": "https://apple.com/x", "method": "POST"}),
            "tools.probe.http.methods",
        ),
    ] {
        let (result, ran) = probe(grant, args.clone()).await;
        assert_eq!(result[0]["error"], "HttpRequestDenied", "{args}: {result}");
        let decision = http_records(&ran)[0].clone();
        assert_eq!(decision.decision, Verdict::Deny);
        assert_eq!(decision.rule, rule);
    }
    assert!(server.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_and_ip_literal_tricks_are_refused_unless_granted() {
    let server = MockModel::start(vec![]).await;
    let port = server.url.rsplit(':').next().unwrap().to_string();
    // Any host, but not private addresses.
    let grant = "http = { allow = [\"http://*/**\", \"http://*:*/**\"] }";
    let grant = grant.replace("http://*:*/**", &format!("http://*:{port}/**"));
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://0x7f.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://example.com@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}\\@example.com/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://0.0.0.0/".to_string(),
    ] {
        let (result, _) = probe(&grant, get(&url)).await;
        let error = result[0]["error"].as_str().unwrap_or_default().to_string();
        assert!(!error.is_empty(), "{url} was not refused: {result}");
    }
    assert!(
        server.seen().is_empty(),
        "nothing reached the loopback server"
    );

    // The same address with `private = true` is reachable.
    let server = MockModel::start(vec![Reply::raw(200, "ok")]).await;
    let (result, _) = probe(&loopback_rule(&server), get(&format!("{}/", server.url))).await;
    assert_eq!(result[0]["status"], 200, "{result}");

    // The refusal after resolution names the address and why.
    let (_, ran) = probe(
        &format!("http = {{ allow = [\"http://localhost:{port}/**\"] }}"),
        get(&format!("http://localhost:{port}/")),
    )
    .await;
    let outcome = http_records(&ran)[1].clone();
    assert_eq!(outcome.outcome, Some(Outcome::Denied));
    assert!(outcome.detail.contains("(loopback)"), "{}", outcome.detail);
    assert!(
        outcome.detail.contains("private = true"),
        "{}",
        outcome.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_forbidden_host_is_decided_again_and_refused() {
    let elsewhere = MockModel::start(vec![Reply::raw(200, "internal secrets")]).await;
    let server = MockModel::start(vec![
        Reply::raw(302, "").header("location", format!("{}/admin", elsewhere.url)),
    ])
    .await;
    let args = json!({ "op": "http", "url": format!("{}/start", server.url), "follow": 1 });
    let (result, ran) = probe(&loopback_rule(&server), args).await;
    assert_eq!(result[0]["status"], 302, "{result}");
    assert_eq!(result[1]["error"], "HttpRequestDenied", "{result}");
    assert!(elsewhere.seen().is_empty());
    assert_eq!(http_records(&ran).len(), 4, "two decisions, two outcomes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_and_responses_are_cut_off() {
    let stream = Reply {
        status: 200,
        headers: vec![],
        body: ReplyBody::Stream {
            chunk: vec![b'x'; 4096],
            count: 16,
            every: Duration::ZERO,
        },
        delay: Duration::ZERO,
    };
    let server = MockModel::start(vec![Reply::raw(200, vec![b'x'; 10_000]), stream]).await;
    // The probe's report holds the body; the harness reads it from the
    // record, so the record must keep it whole.
    let grant = format!(
        "http = {{ allow = [{{ url = \"{}/**\", private = true }}], methods = [\"GET\", \"POST\"], max_response = \"8KiB\", max_request = \"1KiB\" }}\n[limits]\naudit_field = \"64KiB\"",
        server.url
    );
    let (result, _) = probe(&grant, get(&format!("{}/big", server.url))).await;
    assert!(
        result[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("HttpResponseBodySize"),
        "{result}"
    );
    let (result, _) = probe(&grant, get(&format!("{}/stream", server.url))).await;
    assert!(
        result[0]["body_error"]
            .as_str()
            .unwrap_or_default()
            .contains("body size"),
        "{result}"
    );
    assert!(result[0]["body"].as_str().unwrap().len() <= 8192);
    let post = json!({ "op": "http", "method": "POST", "url": format!("{}/up", server.url), "body": "y".repeat(5000) });
    let (result, _) = probe(&grant, post).await;
    assert!(result[0]["error"].is_string(), "{result}");
    assert_eq!(
        server.seen().len(),
        2,
        "the oversized upload never arrived whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sending_a_byte_a_second_is_cut_off_at_the_timeout() {
    let trickle = Reply {
        status: 200,
        headers: vec![],
        body: ReplyBody::Stream {
            chunk: b"x".to_vec(),
            count: 30,
            every: Duration::from_secs(1),
        },
        delay: Duration::ZERO,
    };
    let server = MockModel::start(vec![trickle]).await;
    let grant = format!(
        "http = {{ allow = [{{ url = \"{}/**\", private = true }}], timeout = \"2s\" }}",
        server.url
    );
    let started = Instant::now();
    let (result, ran) = probe(&grant, get(&format!("{}/slow", server.url))).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        result[0]["body_error"], "connection read timeout",
        "{result}"
    );
    assert_eq!(ran.answer(), "done", "the agent carried on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_injected_only_where_bound_and_never_reach_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-5f3a9c1e7b2d\n").unwrap();
    let echo = Reply {
        status: 200,
        headers: vec![],
        body: ReplyBody::EchoHeaders,
        delay: Duration::ZERO,
    };
    let server = MockModel::start(vec![echo]).await;
    let other = MockModel::start(vec![Reply {
        status: 200,
        headers: vec![],
        body: ReplyBody::EchoHeaders,
        delay: Duration::ZERO,
    }])
    .await;
    let other_port = other.url.rsplit(':').next().unwrap().to_string();
    let http = format!(
        "http = {{ allow = [{{ url = \"{}/**\", private = true }}, {{ url = \"http://localhost:{other_port}/**\", private = true }}] }}",
        server.url
    );
    let grants = format!(
        "secrets = [\"TOKEN\"]\n{http}\n\n[secrets.TOKEN]\nfrom_file = {:?}\ninject = {{ host = \"127.0.0.1\", header = \"Authorization\", format = \"Bearer {{}}\" }}\n",
        token_file.display().to_string()
    );
    // The bound host receives it; the echo of it is redacted for the guest.
    let (result, ran) = probe(&grants, get(&format!("{}/echo", server.url))).await;
    assert_eq!(
        server.seen()[0].header("authorization"),
        Some("Bearer tok-5f3a9c1e7b2d")
    );
    let body = result[0]["body"].as_str().unwrap();
    assert!(body.contains("Bearer [REDACTED:TOKEN]"), "{body}");
    // Another host (same machine, other name) gets nothing.
    let (result, _) = probe(
        &grants,
        get(&format!(
            "http://localhost:{}/echo",
            other.authority().rsplit(':').next().unwrap()
        )),
    )
    .await;
    assert!(!result.to_string().contains("tok-5f3a9c1e7b2d"));
    assert_eq!(other.seen()[0].header("authorization"), None);
    // Environment and files hold nothing either.
    let (result, _) = probe(&grants, json!({ "op": "env" })).await;
    assert_eq!(result, json!([]));
    let (result, _) = probe(&grants, json!({ "op": "read", "path": token_file })).await;
    assert!(result["error"].is_string(), "{result}");
    // No record holds the value.
    let all: String = ran
        .records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert!(!all.contains("tok-5f3a9c1e7b2d"));
    assert!(all.contains("\"secrets_injected\":[\"TOKEN\"]"), "{all}");
}

/// A server on 127.0.0.1 that resolves each request path the way a
/// lenient web server does (every percent-escape decoded, `\` read as `/`,
/// empty and dot segments resolved) and serves a secret at `/admin/x`.
/// It keeps the request target as it arrived and what it resolved it to.
struct ResolvingServer {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl ResolvingServer {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or("").to_string();
                    let path = target.split('?').next().unwrap_or("");
                    let resolved = Self::resolve(path);
                    let body = match resolved.as_deref() {
                        Some("/admin/x") => "SECRET admin page",
                        Some(p) if p.starts_with("/pub/") => "public page",
                        _ => "not found",
                    };
                    log.lock().unwrap().push((
                        target,
                        resolved.unwrap_or_else(|| "(bad request)".to_string()),
                    ));
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        ResolvingServer { url, seen }
    }

    /// Decode everything, then resolve segments; `None` above the root.
    fn resolve(path: &str) -> Option<String> {
        let bytes = path.as_bytes();
        let mut decoded = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    decoded.push(b);
                    i += 3;
                }
                (b, _) => {
                    decoded.push(b);
                    i += 1;
                }
            }
        }
        let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
        let mut segments: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop()?;
                }
                s => segments.push(s),
            }
        }
        Some(format!("/{}", segments.join("/")))
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_and_encodings_cannot_leave_a_granted_path() {
    let server = ResolvingServer::start().await;
    let grant = format!(
        "http = {{ allow = [{{ url = \"{}/pub/**\", private = true }}] }}",
        server.url
    );
    // The server is what the test says it is: unguarded, it serves the
    // secret for every one of these paths.
    for path in [
        "/pub/../admin/x",
        "/pub/%2e%2e/admin/x",
        "/pub/..%2fadmin/x",
        "/pub\\..\\admin/x",
        "//pub/../admin/x",
    ] {
        assert_eq!(
            ResolvingServer::resolve(path).as_deref(),
            Some("/admin/x"),
            "{path}"
        );
        let (result, ran) = probe(&grant, get(&format!("{}{path}", server.url))).await;
        let error = result[0]["error"].as_str().unwrap_or_default();
        assert!(
            error == "HttpRequestUriInvalid" || error == "HttpRequestDenied",
            "{path} was not refused: {result}"
        );
        assert!(!result.to_string().contains("SECRET"), "{path}: {result}");
        // Refused as a value, and audited with the rule that refused it.
        let decision = http_records(&ran)[0].clone();
        assert_eq!(decision.decision, Verdict::Deny, "{path}");
        assert_eq!(
            decision.data.as_ref().unwrap()["url"],
            format!("{}{path}", server.url),
            "the guest's path reached the host as written"
        );
        match decision.rule.as_str() {
            "http.url" => assert_eq!(error, "HttpRequestUriInvalid"),
            // Decided on the path the server would have served.
            "tools.probe.http.allow" => assert!(
                decision
                    .detail
                    .contains(&format!("may not reach {}/admin/x ", server.url)),
                "{path}: {}",
                decision.detail
            ),
            other => panic!("{path}: refused by {other}"),
        }
        assert_eq!(ran.answer(), "done", "the agent carried on");
    }
    assert!(
        server
            .seen()
            .iter()
            .all(|(_, resolved)| resolved != "/admin/x"),
        "{:?}",
        server.seen()
    );

    // What was decided is what is fetched: the server receives the
    // normalized path, with the query as written.
    let (result, _) = probe(
        &grant,
        get(&format!("{}/pub/./a//b%7e?q=%2e%2e/x", server.url)),
    )
    .await;
    assert_eq!(result[0]["body"], "public page", "{result}");
    assert_eq!(
        server.seen().last().map(|(target, _)| target.clone()),
        Some("/pub/a/b~?q=%2e%2e/x".to_string())
    );
}
