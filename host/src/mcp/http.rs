//! The streamable-HTTP transport of MCP: `warden mcp --http ADDR`.
//!
//! One endpoint, `/mcp`. A client POSTs one JSON-RPC message; a request is
//! answered with `application/json` (this server never streams), a
//! notification with `202 Accepted`. `initialize` opens a protocol session
//! whose id (`Mcp-Session-Id`) every later POST must carry; `DELETE` ends
//! it; `GET` (a server-to-client stream) is `405`, as warden sends nothing
//! unasked. Every MCP session shares the one warden session behind it:
//! one policy, one set of budgets, one audit log.
//!
//! Exposure: only loopback addresses are accepted (there is no
//! authentication), and a request whose `Origin` is not a loopback origin
//! is refused (`403`), so a web page the user visits cannot drive the tools
//! through the browser (DNS rebinding).

use super::{MAX_MESSAGE, ServeReport, ServeSpec, Sink, begin, finish};
use crate::audit::AuditLog;
use crate::run::RunError;
use crate::runtime::Runtime;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const SESSION_HEADER: &str = "mcp-session-id";

struct Shared {
    server: Arc<super::Server>,
    sessions: Mutex<HashSet<String>>,
    /// The first audit failure: the server stops.
    failure: Mutex<Option<io::Error>>,
}

/// Serve the policy's tools on `listener` until `stop` completes (or the
/// audit log fails); then finish the calls in flight and write the end
/// record. Refuses a listener that is not on a loopback address.
pub async fn serve_http(
    runtime: &Runtime,
    spec: ServeSpec,
    audit: AuditLog,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<ServeReport, RunError> {
    check_address(listener.local_addr()?).map_err(RunError::Agent)?;
    let started = Instant::now();
    let server = begin(runtime, spec, audit, "http").await?;
    let shared = Arc::new(Shared {
        server,
        sessions: Mutex::default(),
        failure: Mutex::default(),
    });
    let app = Router::new()
        .route("/mcp", post(message).get(no_stream).delete(end_session))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE))
        .with_state(shared.clone());
    let failed = shared.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = stop => {}
                () = failed.server.failed.notified() => {}
            }
        })
        .await;
    let failure = shared
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .or(served.err());
    finish(&shared.server, started, failure)
}

/// Refuse a listen address that is not loopback: the transport has no
/// authentication.
pub fn check_address(address: std::net::SocketAddr) -> Result<(), String> {
    if address.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "warden mcp --http listens only on loopback addresses (127.0.0.1, [::1]); {address} is not one: MCP over HTTP has no authentication here"
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A JSON-RPC error as an HTTP response (for messages refused before
/// they reach the protocol).
fn refuse(status: StatusCode, code: i64, message: &str) -> Response {
    let body =
        json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// Whether `Origin` (when a browser sent one) is this machine.
fn local_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    url::Url::parse(origin).is_ok_and(|url| crate::remote::is_loopback(&url))
}

async fn message(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !local_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            -32600,
            "requests from web pages of other origins are refused",
        );
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let is_initialize = parsed
        .as_ref()
        .and_then(|m| m.get("method"))
        .and_then(Value::as_str)
        == Some("initialize");
    let mut new_session = None;
    if is_initialize {
        let id = new_session_id();
        lock(&shared.sessions).insert(id.clone());
        new_session = Some(id);
    } else if parsed.is_some() {
        match headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    "no Mcp-Session-Id header: send `initialize` first, then the id it returns with every message",
                );
            }
            Some(id) if !lock(&shared.sessions).contains(id) => {
                return refuse(
                    StatusCode::NOT_FOUND,
                    -32600,
                    "unknown or ended session: initialize again",
                );
            }
            Some(_) => {}
        }
    }

    let (sender, mut receiver) = mpsc::unbounded_channel();
    let sink = Sink::new(sender, &shared.server);
    let mut calls = JoinSet::new();
    let mut failure = shared.server.handle(&body, &sink, &mut calls).err();
    while let Some(joined) = calls.join_next().await {
        if let Ok(Err(error)) = joined {
            failure.get_or_insert(error);
        }
    }
    drop(sink);
    if let Some(error) = failure {
        lock(&shared.failure).get_or_insert(error);
        shared.server.failed.notify_one();
    }
    let mut answer = Vec::new();
    while let Some(bytes) = receiver.recv().await {
        answer.extend_from_slice(&bytes);
    }
    if answer.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    if answer.last() == Some(&b'\n') {
        answer.pop();
    }
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        answer,
    )
        .into_response();
    if let Some(id) = new_session
        && let Ok(value) = HeaderValue::from_str(&id)
    {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

async fn no_stream() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
        "warden sends no messages unasked: there is no stream to open\n",
    )
        .into_response()
}

async fn end_session(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !local_origin(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let id = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    match id {
        Some(id) if lock(&shared.sessions).remove(id) => StatusCode::OK.into_response(),
        Some(_) => StatusCode::NOT_FOUND.into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// 128 random bits, hex: not guessable by another local process.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}
