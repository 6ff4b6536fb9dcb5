//! The streamable-HTTP transport of MCP: `warden mcp --http ADDR`.
//!
//! One endpoint, `/mcp`. A client POSTs one JSON-RPC message; a request is
//! answered with `application/json`, a notification or a response with
//! `202 Accepted`. Two exceptions answer with an event stream when the
//! client accepts `text/event-stream`: a request that waits for the tools
//! to load and carries a `_meta.progressToken` (its progress
//! notifications, then its answer), and a `tools/call` of a session whose
//! client declared `elicitation` (a question to the client's person, as an
//! `elicitation/create` request, when the policy asks; then its answer).
//! The client POSTs its answer to that question with the session's id; it
//! reaches that session's questions only ([`super::elicit`]). `initialize`
//! opens a protocol session whose id (`Mcp-Session-Id`) every later POST
//! must carry; `DELETE` ends it (a question waiting is refused); `GET` (a
//! server-to-client stream) is `405`, as warden sends nothing unasked.
//! Every MCP session shares the one warden session behind it: one policy,
//! one set of budgets, one audit log.
//!
//! Exposure: only loopback addresses are accepted (there is no
//! authentication; a host name is resolved, and refused if any of its
//! addresses is not loopback), and a request whose `Origin` is not a loopback origin
//! is refused (`403`), so a web page the user visits cannot drive the tools
//! through the browser (DNS rebinding).
//!
//! Bounds: at most `max_sessions` sessions are open (past it `initialize`
//! is `503`, recorded once and counted in the end record); a session
//! unused for `session_idle` is ended; a request takes one of the server's
//! slots before its body is read, and when none is free it is refused at
//! once (`503`, JSON-RPC `-32000` "server busy") without reading it
//! (unless its session has a question waiting: then a few such POSTs of at
//! most 64 KiB are read, and only an answer is taken). A client that
//! drops an event stream does not drop its calls: they run to their end
//! (a question waiting is refused), and the server waits for them.

use super::elicit::Elicitor;
use super::{MAX_MESSAGE, SERVER_BUSY, Scope, ServeReport, ServeSpec, Sink, begin, finish, lock};
use crate::audit::{AuditLog, Entry, Event, Kind};
use crate::policy::Verdict;
use crate::registry::KeptInstances;
use crate::run::RunError;
use crate::runtime::Runtime;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

const SESSION_HEADER: &str = "mcp-session-id";

/// Most TCP connections served at once; more wait in the kernel's
/// backlog until one closes. Each costs a task and its buffers, so a
/// client that opens connections and sends nothing (or sends slowly)
/// holds at most this many.
pub const MAX_CONNECTIONS: usize = 256;

struct Shared {
    server: Arc<super::Server>,
    /// A request body not received whole within this long is refused
    /// (`408`), giving its slot back (`--write-timeout`).
    read_timeout: Duration,
    sessions: Mutex<Sessions>,
    /// The first audit failure: the server stops.
    failure: Mutex<Option<io::Error>>,
    /// The calls of event streams the client dropped, run to their end
    /// (an ask among them refused, and recorded) before the server ends.
    /// At most one per slot: each holds its POST's.
    orphans: Mutex<JoinSet<()>>,
    /// Answers read while every slot is taken (see [`answer_without_slot`]).
    answer_reads: tokio::sync::Semaphore,
}

/// The most bytes of an answer to `elicitation/create` read while every
/// slot is taken: an answer is well under 1 KiB.
const MAX_ANSWER: usize = 64 << 10;
/// The most such answers read at once.
const ANSWER_READS: usize = 4;

/// One open MCP session: when it was last used, its per-run tool
/// instances and its questions to the client's person (never another
/// session's).
struct Session {
    used: Instant,
    kept: Arc<KeptInstances>,
    asks: Arc<Elicitor>,
}

/// The open MCP sessions, by id, with when each was last used and its
/// per-run tool instances (never another session's).
struct Sessions {
    open: HashMap<String, Session>,
    /// Sessions ended or expired whose instances are still to be torn
    /// down (outside the lock: that writes audit records).
    ended: Vec<Arc<KeptInstances>>,
    max: usize,
    idle: Duration,
    /// `initialize` requests refused because `max` were open.
    refused: u64,
}

/// What became of a session's `initialize`.
enum Opened {
    Yes(String, Arc<Elicitor>),
    /// Full; `true` the first time, which is recorded (the rest counted).
    Full(bool),
}

impl Sessions {
    /// Forget sessions unused for `idle`. At most `max` entries: a sweep is
    /// cheap, and done on every request, so an expired id never answers.
    fn sweep(&mut self, now: Instant) {
        let idle = self.idle;
        let ended = &mut self.ended;
        self.open.retain(|_, session| {
            let open = now.saturating_duration_since(session.used) < idle;
            if !open {
                session.asks.close();
                ended.push(session.kept.clone());
            }
            open
        });
    }

    fn open(&mut self, now: Instant, server: &Elicitor) -> Opened {
        self.sweep(now);
        if self.open.len() >= self.max {
            self.refused += 1;
            return Opened::Full(self.refused == 1);
        }
        let id = new_session_id();
        let asks = server.for_http_session();
        self.open.insert(
            id.clone(),
            Session {
                used: now,
                kept: Arc::new(KeptInstances::new()),
                asks: asks.clone(),
            },
        );
        Opened::Yes(id, asks)
    }

    /// End `id`; whether it was open.
    fn end(&mut self, id: &str, now: Instant) -> bool {
        self.sweep(now);
        match self.open.remove(id) {
            Some(session) => {
                session.asks.close();
                self.ended.push(session.kept);
                true
            }
            None => false,
        }
    }

    /// `id`'s per-run instances and questions, if it is open; using it
    /// keeps it alive.
    fn touch(&mut self, id: &str, now: Instant) -> Option<(Arc<KeptInstances>, Arc<Elicitor>)> {
        self.sweep(now);
        let session = self.open.get_mut(id)?;
        session.used = now;
        Some((session.kept.clone(), session.asks.clone()))
    }

    /// `id`'s questions, if it is open and one waits for the client's
    /// answer.
    fn asking(&self, id: &str) -> Option<Arc<Elicitor>> {
        let session = self.open.get(id)?;
        session.asks.has_waiting().then(|| session.asks.clone())
    }

    /// The server stops: every question waiting is unanswered.
    fn close_asks(&self) {
        for session in self.open.values() {
            session.asks.close();
        }
    }
}

/// Tear down the per-run instances of the sessions that ended or expired.
fn close_ended(shared: &Shared) {
    let ended = std::mem::take(&mut lock(&shared.sessions).ended);
    for kept in ended {
        if let Err(error) = kept.close(&shared.server.gate) {
            lock(&shared.failure).get_or_insert(error);
            shared.server.failed.notify_one();
        }
    }
}

/// Serve the policy's tools on `listener` until `stop` completes (or the
/// audit log fails); then finish the calls in flight and write the end
/// record. Refuses a listener that is not on a loopback address.
pub async fn serve_http(
    runtime: &'static Runtime,
    spec: ServeSpec,
    audit: AuditLog,
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<ServeReport, RunError> {
    check_address(listener.local_addr()?).map_err(RunError::Agent)?;
    let started = Instant::now();
    let sessions = Sessions {
        open: HashMap::new(),
        ended: Vec::new(),
        max: spec.max_sessions.max(1),
        idle: spec.session_idle,
        refused: 0,
    };
    let read_timeout = spec.write_timeout;
    let server = begin(runtime, spec, audit, "http")?;
    let shared = Arc::new(Shared {
        server,
        read_timeout,
        sessions: Mutex::new(sessions),
        failure: Mutex::default(),
        orphans: Mutex::default(),
        answer_reads: tokio::sync::Semaphore::new(ANSWER_READS),
    });
    let app = Router::new()
        .route("/mcp", post(message).get(no_stream).delete(end_session))
        .with_state(shared.clone());
    let failed = shared.clone();
    let served = serve_bounded(listener, app, read_timeout, MAX_CONNECTIONS, async move {
        tokio::select! {
            () = stop => {}
            () = failed.server.failed.notified() => {}
        }
        // Before the requests in flight are waited for: those waiting for
        // the tools are refused now, not after a compile, and those waiting
        // for a person now, not after `[approvals] timeout`.
        lock(&failed.sessions).close_asks();
        failed.server.tools.stop().await
    })
    .await;
    let (served, _records) = match served {
        Ok(Some(records)) => (Ok(()), records),
        Ok(None) => (Ok(()), shared.server.tools.stop().await),
        Err(error) => (Err(error), shared.server.tools.stop().await),
    };
    // The calls of streams their clients dropped end before the server.
    let mut orphans = std::mem::take(&mut *lock(&shared.orphans));
    while orphans.join_next().await.is_some() {}
    // Every session's per-run instances end with the server.
    {
        let mut sessions = lock(&shared.sessions);
        let open: Vec<_> = sessions
            .open
            .drain()
            .map(|(_, session)| {
                session.asks.close();
                session.kept
            })
            .collect();
        sessions.ended.extend(open);
    }
    close_ended(&shared);
    let failure = lock(&shared.failure).take().or(served.err());
    let mut notes = serde_json::Map::new();
    notes.insert(
        "sessions_refused".into(),
        json!(lock(&shared.sessions).refused),
    );
    notes.insert("busy_refused".into(), json!(shared.server.gauge.busy()));
    finish(&shared.server, started, failure, notes)
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

/// Where `--http ADDR` listens: an address (`127.0.0.1:8931`, `[::1]:0`)
/// or a host name and port (`localhost:8931`), resolved. Refused unless
/// every address the name resolves to is loopback (see [`loopback_only`]).
pub async fn listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(address) = text.parse::<std::net::SocketAddr>() {
        check_address(address)?;
        return Ok(address);
    }
    let shown = crate::capability::brief(text, 100);
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`--http {shown}` needs a port: e.g. `localhost:8931` or `127.0.0.1:8931` (port 0 picks a free one)"
        ));
    };
    let Ok(port) = port.parse::<u16>() else {
        return Err(format!(
            "`--http {shown}`: `{}` is not a port (0-65535); e.g. `localhost:8931`",
            crate::capability::brief(port, 20)
        ));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!(
            "`--http {shown}` needs a host: e.g. `localhost:{port}` or `127.0.0.1:{port}`"
        ));
    }
    let resolved: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host, port)).await {
        Ok(addresses) => addresses.take(64).collect(),
        Err(error) => {
            return Err(format!(
                "`--http {shown}`: cannot resolve `{}`: {error}; give a loopback address such as 127.0.0.1:{port}",
                crate::capability::brief(host, 100)
            ));
        }
    };
    loopback_only(host, &resolved)
}

/// The address to listen on among those `host` resolved to: refused when
/// there are none, or when any is not loopback (a name that also points
/// elsewhere is not this machine's alone); else the first IPv4 one (what
/// most clients try first for `localhost`), or the first.
pub fn loopback_only(
    host: &str,
    resolved: &[std::net::SocketAddr],
) -> Result<std::net::SocketAddr, String> {
    let host = crate::capability::brief(host, 100);
    if let Some(outside) = resolved.iter().find(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "warden mcp --http listens only on loopback addresses; `{host}` resolves to {}, which is not one: MCP over HTTP has no authentication here (use localhost, 127.0.0.1 or [::1])",
            outside.ip()
        ));
    }
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

/// A JSON-RPC error as an HTTP response (for messages refused before
/// they reach the protocol).
fn refuse(status: StatusCode, code: i64, message: &str) -> Response {
    let body =
        json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// A refusal the client may retry: `503` with `Retry-After`.
fn busy(message: &str) -> Response {
    let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, SERVER_BUSY, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
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

async fn message(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if !local_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            -32600,
            "requests from web pages of other origins are refused",
        );
    }
    // A slot before the body: a request past them is refused unread,
    // unless it may be the answer a call holding a slot waits for.
    let Some(slot) = shared.server.try_admit() else {
        let asking = headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|id| lock(&shared.sessions).asking(id));
        if let Some(asks) = asking {
            return answer_without_slot(&shared, &asks, body).await;
        }
        shared
            .server
            .gauge
            .0
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return busy("server busy: every slot (--concurrency + --queue) is taken; retry later");
    };
    // The slot is held while the body arrives: a client that sends it
    // slowly gives the slot back after the timeout.
    let body =
        match tokio::time::timeout(shared.read_timeout, axum::body::to_bytes(body, MAX_MESSAGE))
            .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    -32600,
                    &format!("a message is at most {MAX_MESSAGE} bytes"),
                );
            }
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    -32600,
                    &format!(
                        "the request body did not arrive within {:?} (--write-timeout)",
                        shared.read_timeout
                    ),
                );
            }
        };
    let parsed: Option<Value> = crate::capability::strict_json::parse_slice(&body).ok();
    let method = parsed
        .as_ref()
        .and_then(|m| m.get("method"))
        .and_then(Value::as_str);
    let is_initialize = method == Some("initialize");
    let is_call = method == Some("tools/call");
    let now = Instant::now();
    let mut new_session = None;
    // A closed, empty place for requests outside a session (`initialize`,
    // unparsable ones): no per-run instance is ever shared between
    // sessions, nor kept outside one; nor are questions.
    let mut kept = Arc::new(KeptInstances::closed());
    let mut asks = shared.server.elicitor.for_http_session();
    if is_initialize {
        let opened = lock(&shared.sessions).open(now, &shared.server.elicitor);
        match opened {
            Opened::Yes(id, session_asks) => {
                new_session = Some(id);
                asks = session_asks;
            }
            Opened::Full(first) => {
                if first && let Err(error) = sessions_full(&shared) {
                    lock(&shared.failure).get_or_insert(error);
                    shared.server.failed.notify_one();
                }
                return busy(
                    "too many MCP sessions are open (--max-sessions): end one (DELETE) or wait for an idle one to expire",
                );
            }
        }
    } else if parsed.is_some() {
        match headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    -32600,
                    "no Mcp-Session-Id header: send `initialize` first, then the id it returns with every message",
                );
            }
            Some(id) => {
                let touched = lock(&shared.sessions).touch(id, now);
                close_ended(&shared);
                let Some((session_kept, session_asks)) = touched else {
                    return refuse(
                        StatusCode::NOT_FOUND,
                        -32600,
                        "unknown, ended or expired session: initialize again",
                    );
                };
                kept = session_kept;
                asks = session_asks;
            }
        }
    }

    // Progress can only reach the client in an event stream, and is only
    // sent while a request waits for the tools; a question to the client's
    // person only in the event stream of the call that asks.
    let progress = parsed
        .as_ref()
        .and_then(|m| m.get("params"))
        .and_then(super::progress_token)
        .is_some()
        && shared.server.tools.loaded().is_none();
    let streams =
        !is_initialize && accepts_events(&headers) && (progress || (is_call && asks.enabled()));
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let mut sink = Sink::new(sender, &shared.server).holding(slot);
    if !streams {
        sink = sink.without_progress();
    }
    let mut calls = JoinSet::new();
    let scope = Scope {
        kept,
        asks,
        streams,
    };
    let mut failure = shared
        .server
        .handle_in(&body, &sink, &mut calls, Some(scope))
        .err();
    if streams {
        drop(sink);
        return events(EventStream {
            receiver,
            calls,
            failure,
            shared: shared.clone(),
        });
    }
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
        answer.extend_from_slice(&bytes.bytes);
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

/// Whether the client takes an event stream as an answer.
fn accepts_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// The messages answering one request, as server-sent events: its
/// progress notifications, then its answer. The calls it answers are
/// driven (and, if the client goes, dropped) with it, as a JSON answer's
/// are with its handler.
struct EventStream {
    receiver: mpsc::UnboundedReceiver<super::Outgoing>,
    calls: JoinSet<io::Result<()>>,
    failure: Option<io::Error>,
    shared: Arc<Shared>,
}

fn events(stream: EventStream) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::new(stream),
    )
        .into_response()
}

impl http_body::Body for EventStream {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        while let Poll::Ready(Some(joined)) = this.calls.poll_join_next(cx) {
            if let Ok(Err(error)) = joined {
                this.failure.get_or_insert(error);
            }
        }
        match this.receiver.poll_recv(cx) {
            Poll::Ready(Some(message)) => {
                let json = message.bytes.strip_suffix(b"\n").unwrap_or(&message.bytes);
                let mut event = Vec::with_capacity(json.len() + 24);
                event.extend_from_slice(b"event: message\ndata: ");
                event.extend_from_slice(json);
                event.extend_from_slice(b"\n\n");
                Poll::Ready(Some(Ok(http_body::Frame::data(event.into()))))
            }
            // Every sender is gone: the calls are ending; their results
            // are read before the stream ends.
            Poll::Ready(None) => {
                loop {
                    match this.calls.poll_join_next(cx) {
                        Poll::Ready(Some(Ok(Err(error)))) => {
                            this.failure.get_or_insert(error);
                        }
                        Poll::Ready(Some(_)) => {}
                        Poll::Ready(None) => break,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                if let Some(error) = this.failure.take() {
                    lock(&this.shared.failure).get_or_insert(error);
                    this.shared.server.failed.notify_one();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A stream the client stopped reading (it closed the connection): its
/// calls are not dropped with it but run to their end, so a call waiting
/// for the client's answer is refused (the question's future sees the
/// stream closed) and recorded, and its slot comes back when it ends.
impl Drop for EventStream {
    fn drop(&mut self) {
        if self.calls.is_empty() {
            return;
        }
        // Without a runtime (the process is ending) they are dropped.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut calls = std::mem::take(&mut self.calls);
        let mut failure = self.failure.take();
        let shared = Arc::downgrade(&self.shared);
        let mut orphans = lock(&self.shared.orphans);
        // Those ended are reaped as new ones come: the set holds at most
        // one per slot.
        while orphans.try_join_next().is_some() {}
        orphans.spawn(async move {
            while let Some(joined) = calls.join_next().await {
                if let Ok(Err(error)) = joined {
                    failure.get_or_insert(error);
                }
            }
            if let (Some(error), Some(shared)) = (failure, shared.upgrade()) {
                lock(&shared.failure).get_or_insert(error);
                shared.server.failed.notify_one();
            }
        });
    }
}

/// A POST that came when every slot was taken, from a session with a
/// question waiting: it may be the answer a call holding a slot waits for
/// (with `--concurrency 1 --queue 0`, always). At most [`ANSWER_READS`]
/// are read at once, each at most [`MAX_ANSWER`] bytes within the read
/// timeout; only an answer is taken, anything else is refused as busy.
async fn answer_without_slot(shared: &Shared, asks: &Elicitor, body: Body) -> Response {
    let busy_refused = || {
        shared
            .server
            .gauge
            .0
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        busy(
            "server busy: every slot (--concurrency + --queue) is taken; only answers to warden's questions (elicitation/create) are read until one frees; retry later",
        )
    };
    let Ok(_reading) = shared.answer_reads.try_acquire() else {
        return busy_refused();
    };
    let body = tokio::time::timeout(shared.read_timeout, axum::body::to_bytes(body, MAX_ANSWER));
    let body = match body.await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return busy_refused(),
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                -32600,
                &format!(
                    "the request body did not arrive within {:?} (--write-timeout)",
                    shared.read_timeout
                ),
            );
        }
    };
    match crate::capability::strict_json::parse_slice(&body) {
        Ok(Value::Object(message))
            if message.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
                && !message.contains_key("method")
                && (message.contains_key("result") || message.contains_key("error")) =>
        {
            asks.response(message);
            StatusCode::ACCEPTED.into_response()
        }
        _ => busy_refused(),
    }
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
    let now = Instant::now();
    let Some(id) = id else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let ended = lock(&shared.sessions).end(id, now);
    close_ended(&shared);
    if ended {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// The one record of refused sessions: the first refusal; the rest are
/// counted in the end record (`sessions_refused`).
fn sessions_full(shared: &Shared) -> io::Result<u64> {
    let max = lock(&shared.sessions).max;
    shared.server.gate.note(Entry {
        kind: Kind::Run,
        event: Event::Decision,
        subject: "mcp".into(),
        decision: Verdict::Deny,
        rule: "--max-sessions".into(),
        detail: format!(
            "{max} MCP sessions are open, the most allowed: further `initialize` requests are refused (503) and counted in the end record"
        ),
        outcome: None,
        data: Some(json!({ "max_sessions": max })),
    })
}

/// 128 random bits, hex: not guessable by another local process.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

/// Serve `app` on `listener` until `stop`, then let the requests in flight
/// finish (also `warden serve`'s loop). At most `max_connections`
/// ([`MAX_CONNECTIONS`] for MCP) connections at once (the next is
/// accepted when one closes), and a connection whose request head does not
/// arrive whole within `read_timeout` (an idle keep-alive connection too)
/// is closed: neither slow nor silent clients hold the server.
pub(crate) async fn serve_bounded<T>(
    listener: tokio::net::TcpListener,
    app: Router,
    read_timeout: Duration,
    max_connections: usize,
    stop: impl Future<Output = T>,
) -> io::Result<Option<T>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    let mut stopped = None;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            out = &mut stop => {
                stopped = Some(out);
                break;
            }
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, or a connection reset before it was
                // accepted: wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            out = &mut stop => {
                stopped = Some(out);
                break;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(read_timeout)
            .max_buf_size(MAX_HEAD)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(stopped)
}

/// Most bytes of a request head (and read buffer) per connection.
const MAX_HEAD: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addresses(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_name_is_refused_when_any_address_it_resolves_to_is_not_loopback() {
        let both = addresses(&["[::1]:8931", "127.0.0.1:8931"]);
        assert_eq!(
            loopback_only("localhost", &both).unwrap(),
            "127.0.0.1:8931".parse::<SocketAddr>().unwrap(),
            "IPv4 first, as most clients try it"
        );
        let v6 = addresses(&["[::1]:8931"]);
        assert_eq!(loopback_only("ip6-localhost", &v6).unwrap(), v6[0]);
        // A name that also points elsewhere is not this machine's alone.
        let mixed = addresses(&["127.0.0.1:8931", "192.168.1.20:8931"]);
        let refused = loopback_only("dev.example", &mixed).unwrap_err();
        assert!(
            refused.contains("`dev.example` resolves to 192.168.1.20, which is not one"),
            "{refused}"
        );
        assert!(loopback_only("empty.example", &[]).is_err());
    }

    #[tokio::test]
    async fn listen_addresses_are_literals_or_names_with_a_port() {
        assert_eq!(
            listen_address("127.0.0.1:0").await.unwrap(),
            "127.0.0.1:0".parse::<SocketAddr>().unwrap()
        );
        assert!(
            listen_address("localhost:0")
                .await
                .unwrap()
                .ip()
                .is_loopback()
        );
        let refused = listen_address("10.0.0.1:1").await.unwrap_err();
        assert!(refused.contains("10.0.0.1:1 is not one"), "{refused}");
        let refused = listen_address("[::]:1").await.unwrap_err();
        assert!(refused.contains("is not one"), "{refused}");
        let refused = listen_address("localhost").await.unwrap_err();
        assert!(refused.contains("needs a port"), "{refused}");
        let refused = listen_address(":8931").await.unwrap_err();
        assert!(refused.contains("needs a host"), "{refused}");
    }
}
