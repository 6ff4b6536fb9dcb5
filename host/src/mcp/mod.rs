//! `warden mcp`: the policy's tools served to any MCP client over stdio.
//!
//! The client takes the agent's place: `tools/list` lists what the policy
//! grants, and every `tools/call` goes through [`capability::tools::call`],
//! the same path an agent's call takes (argument schema, rules, budgets,
//! labels, approvals, a fresh instance under the tool's own limits and
//! grants, secret redaction, audit records). A refusal is a tool result
//! with `isError: true` the model can read; a malformed message is a
//! JSON-RPC error. Nothing a client sends can crash or stall the server:
//! messages are size-limited, calls run concurrently up to a bound, and
//! the end of input (or a stop signal) ends the session with an end record.
//!
//! Start-up: `initialize` is answered at once; the tools' components are
//! read, compiled and described in the background ([`loading`]), and a
//! request that needs them (`tools/list`, `tools/call`) waits for them in
//! its slot, told how far loading got by `notifications/progress` when it
//! carries a `_meta.progressToken`. If loading fails, those requests are
//! refused with the reason (the component, the policy's line); if the
//! client leaves first, loading is abandoned and the session ends at once.
//!
//! Backpressure: every message read takes a slot (`concurrency` running
//! plus `queue` waiting) and keeps it until its answer is written to the
//! client. When the slots are taken, stdin is not read until one frees, so
//! a client sending faster than the tools answer, or reading nothing, makes
//! warden hold at most that many messages and answers, never more. A
//! client that reads nothing for `write_timeout` ends the session (with its
//! end record); a finished call can always hand its answer off, so the
//! session never deadlocks.
//!
//! Transport: JSON-RPC 2.0, one message per line (the MCP stdio transport).
//! Versions: the `initialize` handshake of the revisions in
//! [`SUPPORTED_VERSIONS`]; a client asking for another gets [`LATEST`] (the
//! client decides whether it can speak it). Clients that first probe the
//! stateless 2026-07-28 `server/discover` get "method not found" and fall
//! back to `initialize`, as the revision prescribes.
//!
//! [`capability::tools::call`]: crate::capability::tools::call

use crate::audit::{AuditLog, Entry, Event, Kind, Outcome};
use crate::capability::{brief, tools};
use crate::gate::{Gate, GuestError};
use crate::load::PolicyFile;
use crate::policy::Verdict;
use crate::registry::ToolRegistry;
use crate::run::{Opening, RunError, end_record, record_opening, summary};
use crate::runtime::Runtime;
use crate::secrets::{Clean, Secrets};
use loading::ToolSet;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

mod elicit;
pub(crate) mod http;
mod loading;
pub use http::{MAX_CONNECTIONS, check_address, listen_address, loopback_only, serve_http};
pub use loading::{OnTools, ToolsLoaded, ToolsStatus};

/// The protocol revisions negotiated at `initialize`, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// What a client asking for an unknown revision is offered.
pub const LATEST: &str = "2025-11-25";
/// The largest message read; a longer line is answered with an error and
/// skipped (it is never held in memory whole).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Messages admitted beyond the calls running, by default.
pub const DEFAULT_QUEUE: usize = 8;
/// How long a write to a client that reads nothing may wait, by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// MCP sessions open at once over HTTP, by default.
pub const DEFAULT_MAX_SESSIONS: usize = 64;
/// How long an unused HTTP session lives, by default.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(600);
/// The most bytes of one client-provided string written to the audit log
/// (`clientInfo` fields, the revision asked for); longer ones are cut and
/// their length recorded.
pub const MAX_RECORDED: usize = 256;
/// The JSON-RPC code of "server busy" and "too many sessions": refusals
/// a client may retry later.
pub const SERVER_BUSY: i64 = -32000;

// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;

/// What to serve.
pub struct ServeSpec {
    /// The policy whose tools are served and enforced.
    pub policy: PolicyFile,
    /// Rules approved in advance (`--approve RULE`). Nobody is asked
    /// otherwise: stdin is the protocol, so `ask` decisions are refused.
    pub approve: Vec<String>,
    /// Sources whose values approve an ask (`--approve-from SOURCE`).
    pub approve_from: Vec<crate::policy::explain::ApproveFrom>,
    /// Most tool calls running at once; more wait their turn.
    pub concurrency: usize,
    /// Messages admitted beyond the `concurrency` running, waiting for
    /// their turn or for their answer to be written. Past them, stdin is
    /// not read (HTTP: the request is refused with `503`, server busy).
    pub queue: usize,
    /// A client that reads no output for this long ends the session;
    /// over HTTP, a request head or body that takes longer to arrive is
    /// refused.
    pub write_timeout: Duration,
    /// HTTP: the most MCP sessions open at once; past it `initialize` is
    /// refused with `503`.
    pub max_sessions: usize,
    /// HTTP: a session not used for this long is ended (its id then gets
    /// `404`).
    pub session_idle: Duration,
    /// Counters the caller may watch while the server runs.
    pub gauge: Gauge,
    /// Told when the tools are loaded, or why they could not be.
    pub on_tools: Option<OnTools>,
}

impl ServeSpec {
    /// Serve `policy` with the default bounds and nothing approved.
    pub fn new(policy: PolicyFile) -> Self {
        ServeSpec {
            policy,
            approve: Vec::new(),
            approve_from: Vec::new(),
            concurrency: 8,
            queue: DEFAULT_QUEUE,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_sessions: DEFAULT_MAX_SESSIONS,
            session_idle: DEFAULT_SESSION_IDLE,
            gauge: Gauge::default(),
            on_tools: None,
        }
    }
}

/// What the server holds on the client's behalf, for tests and operators
/// to watch: it is bounded by the slots (`concurrency` + `queue`).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    held: AtomicUsize,
    peak_held: AtomicUsize,
    buffered: AtomicUsize,
    peak_buffered: AtomicUsize,
    read: AtomicU64,
    stalls: AtomicU64,
    busy: AtomicU64,
    written: AtomicU64,
    tools: std::sync::atomic::AtomicU8,
    asks_waiting: AtomicUsize,
    answers_ignored: AtomicU64,
}

impl Gauge {
    /// Messages admitted whose answer has not been written yet.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::Relaxed)
    }
    /// The most messages ever held at once.
    pub fn peak_held(&self) -> usize {
        self.0.peak_held.load(Ordering::Relaxed)
    }
    /// Bytes of answers waiting for the client to read them.
    pub fn buffered_bytes(&self) -> usize {
        self.0.buffered.load(Ordering::Relaxed)
    }
    /// The most bytes of answers ever waiting at once.
    pub fn peak_buffered_bytes(&self) -> usize {
        self.0.peak_buffered.load(Ordering::Relaxed)
    }
    /// Messages read (stdio) or requests admitted (HTTP).
    pub fn read(&self) -> u64 {
        self.0.read.load(Ordering::Relaxed)
    }
    /// Times reading stopped because every slot was taken.
    pub fn stalls(&self) -> u64 {
        self.0.stalls.load(Ordering::Relaxed)
    }
    /// HTTP requests refused as "server busy".
    pub fn busy(&self) -> u64 {
        self.0.busy.load(Ordering::Relaxed)
    }
    /// Answers written to the client.
    pub fn written(&self) -> u64 {
        self.0.written.load(Ordering::Relaxed)
    }

    /// `elicitation/create` requests waiting for the client's answer,
    /// every session together (at most `[approvals] max_pending` per
    /// session).
    pub fn asks_waiting(&self) -> usize {
        self.0.asks_waiting.load(Ordering::Relaxed)
    }
    /// Answers from the client that matched no question waiting (an id
    /// never sent, another session's, already answered or given up on):
    /// dropped, only counted.
    pub fn answers_ignored(&self) -> u64 {
        self.0.answers_ignored.load(Ordering::Relaxed)
    }

    /// How far loading the tools got.
    pub fn tools(&self) -> ToolsStatus {
        match self.0.tools.load(Ordering::Acquire) {
            1 => ToolsStatus::Ready,
            2 => ToolsStatus::Failed,
            3 => ToolsStatus::Abandoned,
            _ => ToolsStatus::Loading,
        }
    }

    fn set_tools(&self, status: ToolsStatus) {
        let value = match status {
            ToolsStatus::Loading => 0,
            ToolsStatus::Ready => 1,
            ToolsStatus::Failed => 2,
            ToolsStatus::Abandoned => 3,
        };
        self.0.tools.store(value, Ordering::Release);
    }

    fn hold(&self) {
        let now = self.0.held.fetch_add(1, Ordering::Relaxed) + 1;
        self.0.peak_held.fetch_max(now, Ordering::Relaxed);
    }
    fn buffer(&self, bytes: usize) {
        let now = self.0.buffered.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.0.peak_buffered.fetch_max(now, Ordering::Relaxed);
    }
}

/// A message's place among the admitted: taken before the message is
/// read, given back when its answer has been written (or dropped).
struct Slot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer on its way to the client, holding its message's slot.
struct Outgoing {
    bytes: Vec<u8>,
    _slot: Option<Arc<Slot>>,
    gauge: Gauge,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.gauge
            .0
            .buffered
            .fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

/// How a session ended.
#[derive(Debug)]
pub struct ServeReport {
    /// The session's id (in every audit record).
    pub run_id: String,
    /// Tool calls answered.
    pub calls: u64,
    /// How long the session lasted.
    pub elapsed: Duration,
    /// The hash of the session's last audit record.
    pub audit_head: String,
}

/// Serve the policy's tools over `input`/`output` until `input` ends or
/// `stop` completes; then wait for the calls in flight, write the end
/// record and return. The tools load in the background (`runtime` is
/// `'static` because a compile abandoned when the client leaves goes on
/// using it); requests arriving first wait for them. `Err` when the tools
/// could not be loaded (after the session served what it could and ended)
/// or the audit log failed.
pub async fn serve<R, W>(
    runtime: &'static Runtime,
    spec: ServeSpec,
    audit: AuditLog,
    input: R,
    output: W,
    stop: impl Future<Output = ()>,
) -> Result<ServeReport, RunError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let started = Instant::now();
    // Unbounded in type, bounded by the slots: every answer in it holds
    // its message's slot until written, so it never holds more answers
    // than there are slots, and a finished call never waits to hand off.
    let (sender, receiver) = mpsc::unbounded_channel::<Outgoing>();
    let write_timeout = spec.write_timeout;
    let server = begin(runtime, spec, audit, "stdio")?;
    let writer = tokio::spawn(write_messages(
        output,
        receiver,
        write_timeout,
        server.clone(),
    ));
    let out = Sink::new(sender, &server);
    server.elicitor.connect(Some(out.clone()));

    let mut calls = JoinSet::new();
    let ended = read_messages(&server, &out, input, &mut calls, stop).await;
    // Nothing more is read: no ask can be answered by the client now.
    server.elicitor.connect(None);
    // The client is gone: requests waiting for the tools are refused now,
    // loading (if not done) is abandoned, and the loader writes nothing
    // more while `_records` is held.
    let _records = server.tools.stop().await;
    // Every call admitted is answered before the session ends.
    let mut failure = ended.err();
    while let Some(joined) = calls.join_next().await {
        if let Ok(Err(error)) = joined {
            failure.get_or_insert(error);
        }
    }
    // The writer ends when the last sender is gone, or after
    // `write_timeout` without the client reading.
    drop(out);
    let _ = writer.await;
    let mut notes = serde_json::Map::new();
    notes.insert("answers_written".into(), json!(server.gauge.written()));
    finish(&server, started, failure, notes)
}

/// Open the session: the first record written, the tools loading.
fn begin(
    runtime: &'static Runtime,
    spec: ServeSpec,
    audit: AuditLog,
    transport: &str,
) -> Result<Arc<Server>, RunError> {
    // Asks go to the client's person when it declares `elicitation`.
    let elicitor =
        elicit::Elicitor::new(spec.policy.policy.approvals.max_pending, spec.gauge.clone());
    let gate = Gate::new(spec.policy.policy.clone(), audit)
        .with_approvals(Some(elicitor.approver()), &spec.approve)
        .with_approve_from(spec.approve_from.clone())
        .with_secrets(Secrets::load(&spec.policy));
    let gate = Arc::new(gate.with_dirs(spec.policy.dirs.clone()));
    let opening = Opening {
        subject: "mcp".into(),
        detail: format!(
            "serving the tools of {} over MCP ({transport})",
            spec.policy.name
        ),
        data: json!({ "server": "mcp", "transport": transport, "versions": SUPPORTED_VERSIONS }),
    };
    // Their hashes are in the `tools` record, once they are read.
    let components: Vec<Value> = named_components(&spec.policy)
        .into_iter()
        .map(|source| json!({ "source": source }))
        .collect();
    record_opening(&gate, &spec.policy, opening, components.into())?;
    let policy_name = spec.policy.name.clone();
    let tools = ToolSet::start(
        runtime,
        Arc::new(spec.policy),
        gate.clone(),
        spec.gauge.clone(),
        spec.on_tools,
    );
    Ok(Arc::new(Server {
        gate,
        elicitor,
        tools,
        in_flight: Mutex::default(),
        failed: Notify::new(),
        policy_name,
        version: Mutex::new(None),
        calls: Semaphore::new(spec.concurrency.max(1)),
        slots: Arc::new(Semaphore::new(spec.concurrency.max(1) + spec.queue)),
        gauge: spec.gauge,
        client_gone: Notify::new(),
        gone_because: Mutex::new(None),
        answered: AtomicU64::new(0),
        line: Mutex::default(),
        places: AtomicU64::new(0),
    }))
}

/// The distinct components `policy` names, as written (resolved against
/// the policy's directory), sorted.
fn named_components(policy: &PolicyFile) -> Vec<String> {
    let mut sources: Vec<String> = policy
        .policy
        .tools
        .values()
        .filter_map(|entry| entry.component.as_ref())
        .map(|reference| {
            crate::load::ComponentSource::parse(
                &reference.text,
                policy.dir_of(reference.place.file),
            )
            .to_string()
        })
        .collect();
    sources.sort();
    sources.dedup();
    sources
}

/// End the session: the end record, the log synced, the report.
fn finish(
    server: &Server,
    started: Instant,
    failure: Option<io::Error>,
    notes: serde_json::Map<String, Value>,
) -> Result<ServeReport, RunError> {
    let gate = &server.gate;
    let calls_answered = server.answered.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    let gone = lock(&server.gone_because).take();
    let (tools, load_error) = server.tools.outcome();
    let (failure, load_error) = match load_error {
        Some(RunError::Audit(error)) => (failure.or(Some(error)), None),
        other => (failure, other),
    };
    let (outcome, mut detail) = match (&failure, &gone, &load_error) {
        (Some(error), _, _) => (Outcome::Failed, format!("stopped: {error}")),
        (None, Some(why), _) => (
            Outcome::Failed,
            format!("{calls_answered} tool calls answered; stopped: {why}"),
        ),
        (None, None, Some(_)) => (
            Outcome::Failed,
            format!(
                "no tools served: {}",
                tools["failed"]
                    .as_str()
                    .unwrap_or("they could not be loaded")
            ),
        ),
        (None, None, None) => (Outcome::Ok, format!("{calls_answered} tool calls answered")),
    };
    if tools.get("abandoned").is_some() {
        detail.push_str("; the client left while the tools were loading");
    }
    let mut data = json!({ "calls_answered": calls_answered, "tools": tools });
    if let Some(why) = gone {
        data["stopped"] = json!(why);
    }
    if let Some(object) = data.as_object_mut() {
        object.extend(notes);
    }
    // The session's per-run tool instances end before its end record (an
    // HTTP server's sessions have closed theirs already).
    if let Some(registry) = server.tools.loaded() {
        registry.kept().close(gate)?;
    }
    summary(gate, elapsed, &mut data);
    end_record(gate, "mcp", outcome, detail, data)?;
    let audit_head = gate.finish_audit()?;
    if let Some(error) = failure {
        return Err(RunError::Audit(error));
    }
    if let Some(error) = load_error {
        return Err(error);
    }
    Ok(ServeReport {
        run_id: gate.run_id().to_string(),
        calls: calls_answered,
        elapsed,
        audit_head,
    })
}

struct Server {
    gate: Arc<Gate>,
    /// Asks sent to the client as `elicitation/create`, when it can answer.
    elicitor: Arc<elicit::Elicitor>,
    /// Loading, loaded, or why not.
    tools: Arc<ToolSet>,
    /// Calls in flight by request id, and whether the client cancelled
    /// each (a cancelled call's answer is not sent).
    in_flight: Mutex<HashMap<String, bool>>,
    /// Set when a call could not write its audit record.
    failed: Notify,
    policy_name: String,
    /// The negotiated revision, once initialized.
    version: Mutex<Option<&'static str>>,
    calls: Semaphore,
    /// One per message held (`concurrency` + `queue`): see [`Slot`].
    slots: Arc<Semaphore>,
    gauge: Gauge,
    /// Set when the client stopped reading (or closed its end): nothing
    /// more is read.
    client_gone: Notify,
    gone_because: Mutex<Option<String>>,
    answered: AtomicU64,
    /// The last of the requests that came before the tools were loaded:
    /// they go on in the order they came, each after the one before it.
    line: Mutex<Option<(u64, oneshot::Receiver<()>)>>,
    places: AtomicU64,
}

/// What an HTTP request's messages are handled in: its MCP session's own
/// per-run instances and questions to the client's person, and whether
/// its answer is an event stream (the only way a question reaches an HTTP
/// client).
struct Scope {
    kept: Arc<crate::registry::KeptInstances>,
    asks: Arc<elicit::Elicitor>,
    streams: bool,
}

/// Why an HTTP call that asks without an event stream is refused.
const NO_STREAM: &str = "this tools/call was POSTed without `Accept: text/event-stream`, so warden has no stream to send its question (elicitation/create) on; accept `application/json, text/event-stream`, or pre-approve with --approve";

/// A request's place in the [`Server::line`]: it goes on once `after`
/// (the one before it) has; dropping `release` lets the next one go on.
struct Place {
    id: u64,
    after: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    /// Wait for a free slot (counting the wait as a stall). `None` only if
    /// the slots were closed, which they never are.
    async fn admit(&self) -> Option<Slot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.gauge.0.stalls.fetch_add(1, Ordering::Relaxed);
                self.slots.clone().acquire_owned().await.ok()?
            }
        };
        Some(self.slot(permit))
    }

    /// A free slot now, or `None` when all are taken.
    fn try_admit(&self) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit))
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        self.gauge.hold();
        self.gauge.0.read.fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            gauge: self.gauge.clone(),
        }
    }

    /// The client cannot be written to: end the session.
    fn gone(&self, why: String) {
        lock(&self.gone_because).get_or_insert(why);
        self.client_gone.notify_one();
    }
}

/// Read messages until the input ends, `stop` completes or the audit log
/// fails. Tool calls are spawned into `calls`; everything else is
/// answered in order.
async fn read_messages<R: AsyncBufRead + Unpin>(
    server: &Arc<Server>,
    out: &Sink,
    mut input: R,
    calls: &mut JoinSet<io::Result<()>>,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut stop = std::pin::pin!(stop);
    let mut line = Vec::new();
    loop {
        line.clear();
        // No slot, no reading: the client waits, warden does not grow. One
        // exception: while calls wait for the client's answer to an ask,
        // one message is read without a slot, so that answer can arrive
        // when every slot is held by a waiting call; anything else read
        // then waits for a slot before it is handled.
        let slot = tokio::select! {
            biased;
            () = &mut stop => return Ok(()),
            // A call could not write its audit record: nothing more may happen.
            () = server.failed.notified() => return Ok(()),
            () = server.client_gone.notified() => return Ok(()),
            slot = server.admit() => match slot {
                Some(slot) => Some(slot),
                None => return Ok(()),
            },
            () = server.elicitor.waiting_for_answers() => None,
        };
        let read = tokio::select! {
            biased;
            () = &mut stop => return Ok(()),
            () = server.failed.notified() => return Ok(()),
            () = server.client_gone.notified() => return Ok(()),
            read = read_line(&mut input, &mut line, MAX_MESSAGE) => read,
        };
        let slot = match slot {
            Some(slot) => slot,
            None if matches!(read, Ok(Line::Message)) && is_response(&line) => {
                server.handle(&line, out, calls)?;
                continue;
            }
            None if matches!(read, Ok(Line::End) | Err(_)) => return Ok(()),
            None => {
                let slot = tokio::select! {
                    biased;
                    () = &mut stop => return Ok(()),
                    () = server.failed.notified() => return Ok(()),
                    () = server.client_gone.notified() => return Ok(()),
                    slot = server.admit() => slot,
                };
                let Some(slot) = slot else {
                    return Ok(());
                };
                slot
            }
        };
        let out = &out.holding(slot);
        match read {
            Ok(Line::End) => return Ok(()),
            Ok(Line::TooLong) => out.error(
                Value::Null,
                INVALID_REQUEST,
                format!("message longer than {MAX_MESSAGE} bytes; it was skipped"),
                None,
            ),
            Ok(Line::Message) => {
                server.handle(&line, out, calls)?;
                // Reap finished calls as we go; a long session keeps none.
                while let Some(joined) = calls.try_join_next() {
                    if let Ok(Err(error)) = joined {
                        return Err(error);
                    }
                }
            }
            // Not UTF-8 or a broken pipe: nothing more can be read.
            Err(error) => {
                tracing::warn!("mcp: stopped reading: {error}");
                return Ok(());
            }
        }
    }
}

/// Whether `line` is a JSON-RPC response (no `method`; a `result` or an
/// `error`): an answer to a request of warden's.
fn is_response(line: &[u8]) -> bool {
    match crate::capability::strict_json::parse_slice(line) {
        Ok(Value::Object(message)) => {
            !message.contains_key("method")
                && (message.contains_key("result") || message.contains_key("error"))
        }
        _ => false,
    }
}

enum Line {
    Message,
    TooLong,
    End,
}

/// Read one line into `buf` (without its newline), never holding more than
/// `limit` bytes: a longer line is read to its end and dropped.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Line> {
    let mut too_long = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            // The last line may lack its newline.
            return Ok(if too_long {
                Line::TooLong
            } else if buf.iter().all(u8::is_ascii_whitespace) {
                Line::End
            } else {
                Line::Message
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(available.len());
        input.consume(consumed);
        if done.is_some() {
            if too_long {
                return Ok(Line::TooLong);
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                // Blank lines between messages are skipped.
                buf.clear();
                continue;
            }
            return Ok(Line::Message);
        }
    }
}

/// Write answers as they come; each gives its slot back once written.
/// A client that reads nothing for `timeout` (or closed its end) ends the
/// session: the answers not written are dropped, the reader stops.
async fn write_messages<W: AsyncWrite + Unpin>(
    mut output: W,
    mut receiver: mpsc::UnboundedReceiver<Outgoing>,
    timeout: Duration,
    server: Arc<Server>,
) {
    let mut batch = Vec::new();
    while let Some(first) = receiver.recv().await {
        // Answers ready together go out with one flush.
        batch.push(first);
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
        }
        let write = async {
            for message in &batch {
                output.write_all(&message.bytes).await?;
            }
            output.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                server.gone(format!("the client's end of the output closed ({error})"));
                return;
            }
            Err(_) => {
                server.gone(format!(
                    "the client read no output for {timeout:?}, with {} bytes of answers waiting",
                    server.gauge.buffered_bytes()
                ));
                return;
            }
        }
        server
            .gauge
            .0
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
    }
}

/// Where a message's answer goes: the stdio writer, or one HTTP response.
/// The one exit to the client: every message passes the boundary's
/// redaction on its way out, whatever it carries (a result, an `isError`
/// text, a JSON-RPC error quoting a name).
#[derive(Clone)]
struct Sink {
    sender: mpsc::UnboundedSender<Outgoing>,
    gate: Arc<Gate>,
    gauge: Gauge,
    /// The slot of the message this sink answers, carried by its answer.
    slot: Option<Arc<Slot>>,
    /// Whether progress notifications can reach the client (over HTTP,
    /// only when the answer is an event stream).
    progress: bool,
}

impl Sink {
    fn new(sender: mpsc::UnboundedSender<Outgoing>, server: &Server) -> Self {
        Sink {
            sender,
            gate: server.gate.clone(),
            gauge: server.gauge.clone(),
            slot: None,
            progress: true,
        }
    }

    /// Resolves when nothing sent here can reach the client any more (the
    /// stdio writer stopped; an HTTP response was dropped).
    async fn closed(&self) {
        self.sender.closed().await;
    }

    /// This sink, sending no progress notifications.
    fn without_progress(mut self) -> Sink {
        self.progress = false;
        self
    }

    /// This sink for one message, its answer holding `slot`.
    fn holding(&self, slot: Slot) -> Sink {
        Sink {
            slot: Some(Arc::new(slot)),
            ..self.clone()
        }
    }

    fn send(&self, message: Value) {
        let message = self.gate.clean(message);
        let mut bytes = serde_json::to_vec(&*message).unwrap_or_default();
        bytes.push(b'\n');
        self.gauge.buffer(bytes.len());
        // Fails only when the writer is gone, i.e. the client left.
        let _ = self.sender.send(Outgoing {
            bytes,
            _slot: self.slot.clone(),
            gauge: self.gauge.clone(),
        });
    }

    fn result(&self, id: Value, result: Value) {
        self.send(json!({ "jsonrpc": "2.0", "id": id, "result": result }));
    }

    /// `notifications/progress` for the request that gave `token`: one per
    /// component compiled, so at most a few per request.
    fn progress(&self, token: &Value, done: usize, total: usize, message: Option<&str>) {
        if !self.progress {
            return;
        }
        let mut params = json!({ "progressToken": token, "progress": done, "total": total });
        if let Some(message) = message {
            params["message"] = json!(message);
        }
        self.send(
            json!({ "jsonrpc": "2.0", "method": "notifications/progress", "params": params }),
        );
    }

    /// A request that needs the tools, refused (they could not be loaded,
    /// or the session ended first).
    fn refuse(&self, id: Value, refusal: &loading::Refusal) {
        self.error(
            id,
            INTERNAL_ERROR,
            refusal.message.clone(),
            refusal.data.clone(),
        );
    }

    fn error(&self, id: Value, code: i64, message: String, data: Option<Value>) {
        let mut error = json!({ "code": code, "message": message });
        if let Some(data) = data {
            error["data"] = data;
        }
        self.send(json!({ "jsonrpc": "2.0", "id": id, "error": error }));
    }
}

impl Server {
    /// Answer one message; tool calls are spawned into `calls`.
    fn handle(
        self: &Arc<Self>,
        line: &[u8],
        out: &Sink,
        calls: &mut JoinSet<io::Result<()>>,
    ) -> io::Result<()> {
        self.handle_in(line, out, calls, None)
    }

    /// [`handle`](Self::handle) in an HTTP session's [`Scope`] (`None`:
    /// the one session of stdio, the server's own).
    fn handle_in(
        self: &Arc<Self>,
        line: &[u8],
        out: &Sink,
        calls: &mut JoinSet<io::Result<()>>,
        scope: Option<Scope>,
    ) -> io::Result<()> {
        let asks = scope.as_ref().map_or(&self.elicitor, |s| &s.asks).clone();
        let message: Value = match crate::capability::strict_json::parse_slice(line) {
            Ok(message) => message,
            Err(error) => {
                out.error(Value::Null, PARSE_ERROR, format!("not JSON: {error}"), None);
                return Ok(());
            }
        };
        let Value::Object(mut message) = message else {
            let what = if message.is_array() {
                "batches are not supported; send one message per line"
            } else {
                "a message is a JSON object"
            };
            out.error(Value::Null, INVALID_REQUEST, what.into(), None);
            return Ok(());
        };
        let id = message.get("id").cloned();
        // The id an error answer echoes: `null` unless the message's id is
        // one a request may carry (JSON-RPC: when it cannot be read, null).
        let error_id = || id.clone().filter(valid_id).unwrap_or(Value::Null);
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            out.error(
                error_id(),
                INVALID_REQUEST,
                "not JSON-RPC 2.0: `\"jsonrpc\": \"2.0\"` is missing".into(),
                None,
            );
            return Ok(());
        }
        let params = message.remove("params").unwrap_or(Value::Null);
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            // A response to a request of ours (`elicitation/create`).
            if message.contains_key("result") || message.contains_key("error") {
                asks.response(message);
                return Ok(());
            }
            out.error(
                error_id(),
                INVALID_REQUEST,
                "a request needs a string `method`".into(),
                None,
            );
            return Ok(());
        };
        let Some(id) = id else {
            self.notification(method, &params);
            return Ok(());
        };
        if !valid_id(&id) {
            out.error(
                Value::Null,
                INVALID_REQUEST,
                "`id` must be a string or an integer".into(),
                None,
            );
            return Ok(());
        }
        if !(params.is_object() || params.is_null()) {
            out.error(
                id,
                INVALID_PARAMS,
                "`params` must be an object".into(),
                None,
            );
            return Ok(());
        }
        match method {
            "initialize" => self.initialize(out, id, &params, &asks)?,
            "ping" => out.result(id, json!({})),
            "tools/list" => match self.tools.loaded() {
                Some(tools) => out.result(id, json!({ "tools": tool_list(&tools) })),
                None => {
                    let token = progress_token(&params);
                    self.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.to_string(), false);
                    let place = self.take_place();
                    let server = self.clone();
                    let out = out.clone();
                    calls.spawn(async move { server.list(out, id, token, place).await });
                }
            },
            "tools/call" => {
                let token = progress_token(&params);
                let (name, arguments) = match Self::call_params(params) {
                    Ok(call) => call,
                    Err(message) => {
                        out.error(id, INVALID_PARAMS, message, None);
                        return Ok(());
                    }
                };
                self.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_string(), false);
                let place = self.take_place();
                let server = self.clone();
                // Over HTTP the call's asks go to its own session, on its
                // POST's event stream when it has one.
                let route = scope.as_ref().map(|scope| elicit::Route {
                    asks: asks.clone(),
                    stream: if scope.streams {
                        Ok(out.clone())
                    } else {
                        Err(NO_STREAM.to_string())
                    },
                });
                let kept = scope.map(|scope| scope.kept);
                let out = out.clone();
                calls.spawn(elicit::within(route, async move {
                    server
                        .call(out, id, name, arguments, token, place, kept)
                        .await
                }));
            }
            other => out.error(
                id,
                METHOD_NOT_FOUND,
                format!("method not found: `{}`", brief(other, 100)),
                Some(json!({ "supported": ["initialize", "ping", "tools/list", "tools/call"] })),
            ),
        }
        Ok(())
    }

    fn notification(&self, method: &str, params: &Value) {
        if method == "notifications/cancelled"
            && let Some(id) = params.get("requestId")
        {
            // Only calls in flight are remembered: a client cannot grow
            // this by cancelling ids that never were.
            if let Some(cancelled) = self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&id.to_string())
            {
                *cancelled = true;
            }
        }
        // `notifications/initialized` and anything else: nothing to do.
    }

    fn initialize(
        &self,
        out: &Sink,
        id: Value,
        params: &Value,
        asks: &elicit::Elicitor,
    ) -> io::Result<()> {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let version = SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .copied()
            .unwrap_or(LATEST);
        *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(version);
        let info = params.get("clientInfo");
        let client_name = info
            .and_then(|i| i.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        asks.initialized(version, params, client_name);
        self.gate.note(Entry {
            kind: Kind::Run,
            event: Event::Decision,
            subject: "mcp".into(),
            decision: Verdict::Allow,
            rule: "policy".into(),
            detail: format!(
                "client {} connected (protocol {version})",
                brief(client_name, 100)
            ),
            outcome: None,
            data: Some(json!({
                "client": recorded_client(info),
                "asked": brief(asked, MAX_RECORDED),
                "protocol": version,
            })),
        })?;
        out.result(
            id,
            json!({
                "protocolVersion": version,
                "capabilities": { "tools": { "listChanged": false } },
                "serverInfo": {
                    "name": "warden",
                    "title": "warden: sandboxed tools",
                    "version": env!("CARGO_PKG_VERSION"),
                },
                "instructions": format!(
                    "Tools run in a WebAssembly sandbox under the policy {}; a refused call returns an error result naming the rule.",
                    self.policy_name
                ),
            }),
        );
        Ok(())
    }

    /// A place in the line when the tools are not loaded yet (or requests
    /// that came before are still waiting); `None` when nothing waits.
    fn take_place(&self) -> Option<Place> {
        let mut line = lock(&self.line);
        if line.is_none() && self.tools.loaded().is_some() {
            return None;
        }
        let (release, receiver) = oneshot::channel();
        let id = self.places.fetch_add(1, Ordering::Relaxed);
        let after = line.replace((id, receiver)).map(|(_, before)| before);
        Some(Place { id, after, release })
    }

    /// Let the request after `place` go on (it has its turn, or is done).
    fn go_on(&self, place: Option<Place>) {
        let Some(place) = place else { return };
        let mut line = lock(&self.line);
        if line.as_ref().is_some_and(|(last, _)| *last == place.id) {
            *line = None;
        }
        drop(place.release);
    }

    /// Wait for the tools, telling the client how far loading got when it
    /// gave a progress token, and for the request before `place` to go on.
    async fn wait_for_tools(
        &self,
        out: &Sink,
        token: Option<Value>,
        place: &mut Option<Place>,
    ) -> Result<Arc<ToolRegistry>, Arc<loading::Refusal>> {
        let with_message = self
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|v| v >= "2025-03-26");
        let tools = self
            .tools
            .ready(|compiled, total, current| {
                if let Some(token) = &token {
                    out.progress(token, compiled, total, current.filter(|_| with_message));
                }
            })
            .await;
        if let Some(after) = place.as_mut().and_then(|p| p.after.take()) {
            // Sent or dropped: either way the one before has gone on.
            let _ = after.await;
        }
        tools
    }

    /// Whether the client cancelled request `id` (it is forgotten).
    fn cancelled(&self, id: &Value) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.to_string())
            .unwrap_or(false)
    }

    /// A `tools/list` that came before the tools were loaded.
    async fn list(
        self: Arc<Self>,
        out: Sink,
        id: Value,
        token: Option<Value>,
        mut place: Option<Place>,
    ) -> io::Result<()> {
        let tools = self.wait_for_tools(&out, token, &mut place).await;
        self.go_on(place);
        if self.cancelled(&id) {
            return Ok(());
        }
        match tools {
            Ok(tools) => out.result(id, json!({ "tools": tool_list(&tools) })),
            Err(refusal) => out.refuse(id, &refusal),
        }
        Ok(())
    }

    /// The tool name and arguments of a `tools/call`.
    fn call_params(mut params: Value) -> Result<(String, Value), String> {
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return Err("tools/call needs a string `name`".into());
        };
        let name = name.to_string();
        let arguments = match params.get_mut("arguments").map(Value::take) {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(arguments @ Value::Object(_)) => arguments,
            Some(_) => {
                return Err(format!(
                    "the `arguments` of `{}` must be an object",
                    brief(&name, 100)
                ));
            }
        };
        Ok((name, arguments))
    }

    /// One `tools/call`, mediated exactly like an agent's.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        self: Arc<Self>,
        out: Sink,
        id: Value,
        name: String,
        arguments: Value,
        token: Option<Value>,
        mut place: Option<Place>,
        kept: Option<Arc<crate::registry::KeptInstances>>,
    ) -> io::Result<()> {
        let name = name.as_str();
        let registry = match self.wait_for_tools(&out, token, &mut place).await {
            Ok(registry) => registry,
            Err(refusal) => {
                self.go_on(place);
                if !self.cancelled(&id) {
                    out.refuse(id, &refusal);
                }
                return Ok(());
            }
        };
        let turn = self.calls.acquire().await;
        // Its turn taken (turns are given in the order asked): the next
        // request of the line may ask for one.
        self.go_on(place);
        let Ok(_turn) = turn else {
            return Ok(());
        };
        let result = tools::call_parsed_in(
            &self.gate,
            &registry,
            None,
            name,
            &arguments,
            kept.as_deref(),
        )
        .await;
        let cancelled = self.cancelled(&id);
        let result = match result {
            Ok(result) => result,
            Err(error) => {
                out.error(
                    id,
                    INTERNAL_ERROR,
                    format!("the audit log could not be written, so warden stopped: {error}"),
                    None,
                );
                self.failed.notify_one();
                return Err(error);
            }
        };
        self.answered.fetch_add(1, Ordering::Relaxed);
        if cancelled {
            return Ok(());
        }
        let structured = self
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|v| v >= "2025-06-18");
        match result.map(Clean::into_inner).map_err(Clean::into_inner) {
            Ok(text) => out.result(
                id,
                json!({ "content": [{ "type": "text", "text": text }], "isError": false }),
            ),
            // A name the policy does not know is the client's mistake, not
            // the model's: a protocol error (the refusal is audited all
            // the same).
            Err(GuestError::Denied(message)) if registry.schema(name).is_none() => out
                .error(
                    id,
                    INVALID_PARAMS,
                    format!("unknown tool `{}`: {message}", brief(name, 100)),
                    Some(json!({ "tools": registry.granted().map(|s| s.name.clone()).collect::<Vec<_>>() })),
                ),
            Err(error) => {
                let kind = match &error {
                    GuestError::Denied(_) => "denied",
                    GuestError::BudgetExhausted(_) => "budget-exhausted",
                    GuestError::Invalid(_) => "invalid",
                    GuestError::Failed(_) => "failed",
                };
                let mut result = json!({
                    "content": [{ "type": "text", "text": error.to_string() }],
                    "isError": true,
                });
                if structured {
                    result["structuredContent"] =
                        json!({ "error": kind, "message": error.reason() });
                }
                out.result(id, result);
            }
        }
        Ok(())
    }
}

/// The tools granted, as `tools/list` lists them.
fn tool_list(tools: &ToolRegistry) -> Vec<Value> {
    tools
        .granted()
        .map(|spec| {
            json!({
                "name": spec.name,
                "description": spec.description,
                "inputSchema": spec.parameters,
            })
        })
        .collect()
}

/// The longest progress token honoured: each notification echoes it, so a
/// longer one (the spec lets a server send no progress) is ignored.
const MAX_PROGRESS_TOKEN: usize = 256;

/// A request's `_meta.progressToken`, if it is one (a string or an integer)
/// warden will echo.
fn progress_token(params: &Value) -> Option<Value> {
    let token = params.get("_meta")?.get("progressToken")?;
    let usable = match token {
        Value::String(text) => text.len() <= MAX_PROGRESS_TOKEN,
        Value::Number(_) => token.is_i64() || token.is_u64(),
        _ => false,
    };
    usable.then(|| token.clone())
}

/// Whether `id` is one a request may carry: a string or an integer.
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// What the audit log keeps of a client's `clientInfo`: its name, title
/// and version, each cut at [`MAX_RECORDED`] bytes (with its length), and
/// how many bytes the whole object took. The rest is the client's to say,
/// not warden's to store: a megabyte of `clientInfo` per `initialize`
/// would otherwise be a megabyte of audit log.
fn recorded_client(info: Option<&Value>) -> Value {
    let field = |name: &str| {
        info.and_then(|i| i.get(name))
            .and_then(Value::as_str)
            .map(|text| brief(text, MAX_RECORDED))
    };
    let mut size = ByteCount(0);
    if let Some(info) = info {
        let _ = serde_json::to_writer(&mut size, info);
    }
    json!({
        "name": field("name"),
        "title": field("title"),
        "version": field("version"),
        "bytes": size.0,
    })
}

/// Counts what is written to it, keeps nothing.
struct ByteCount(usize);

impl io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::MemorySink;
    use crate::runtime::RuntimeConfig;

    /// The answers of a session reading `input`, under a policy with no tools.
    async fn answers(input: &str) -> Vec<Value> {
        let runtime: &'static Runtime = Box::leak(Box::new(
            Runtime::new(RuntimeConfig {
                cache_dir: None,
                max_instances: 2,
            })
            .unwrap(),
        ));
        let policy = PolicyFile::from_text(
            "test.toml".into(),
            "/nonexistent".into(),
            "[model]\nallow = [\"scripted\"]\n".into(),
        )
        .unwrap();
        let audit = AuditLog::new("r-test").with_sink(MemorySink::default());
        let (output, mut client) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut client, &mut out)
                .await
                .unwrap();
            out
        });
        let input = tokio::io::BufReader::new(input.as_bytes());
        serve(
            runtime,
            ServeSpec::new(policy),
            audit,
            input,
            output,
            std::future::pending(),
        )
        .await
        .unwrap();
        let out = reader.await.unwrap();
        out.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect()
    }

    /// Seen while writing the oracle of `fuzz/fuzz_targets/mcp_framing.rs`
    /// (every id-less answer has id `null`): a malformed message
    /// (no `jsonrpc`, or no `method`) had its `id` echoed whatever it was
    /// (an object, an array, a float, a megabyte of nesting), while a
    /// well-formed request with such an id is answered with id `null`.
    /// JSON-RPC: when the id cannot be read, the answer's id is `null`.
    #[tokio::test]
    async fn an_invalid_id_is_never_echoed() {
        let answers = answers(concat!(
            "{\"id\":{\"forged\":[1,2,3]},\"method\":\"ping\"}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":[\"x\"]}\n",
            "{\"id\":1.5,\"method\":\"ping\"}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"ping\"}\n",
            // Valid ids are still echoed on every error path.
            "{\"id\":7,\"method\":\"ping\"}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":\"eight\"}\n",
        ))
        .await;
        let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
        assert_eq!(
            ids,
            [
                &Value::Null,
                &Value::Null,
                &Value::Null,
                &Value::Null,
                &json!(7),
                &json!("eight")
            ],
            "{answers:?}"
        );
        for answer in &answers {
            assert_eq!(answer["error"]["code"], json!(INVALID_REQUEST), "{answer}");
        }
    }
}
