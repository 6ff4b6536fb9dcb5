//! `warden serve`: runs over HTTP, many at once in one process, each
//! isolated as a separate process's would be (its own gate, budgets,
//! labels, provider and audit chain: one audit file per run), all on one
//! shared [`Runtime`].
//!
//! ```text
//! POST /runs                 submit a RunRequest (crate::job); 202 with the run's id
//! GET  /runs                 the caller's runs, newest first
//! GET  /runs/{id}            status, answer or error, counts, audit head
//! GET  /runs/{id}/events     the run's audit records as Server-Sent Events, from the first
//! GET  /runs/{id}/audit      the run's audit log (JSON Lines)
//! GET  /runs/{id}/audit/verify  its hash chain checked
//! POST /runs/{id}/cancel     stop it now; its end record says cancelled
//! ```
//!
//! Threat model: clients are authenticated by bearer token ([`auth`]); a
//! token sees only its own runs (another's id is `404`, exactly as an id
//! that never was), runs only the policies it names, and is held to its
//! rate and to its number of live runs. What a request names is resolved
//! by [`crate::job::JobConfig`], inside the operator's directories. Every
//! resource a client can grow is bounded by [`ServeLimits`]: connections,
//! request heads and bodies (and the time they take to arrive), live runs,
//! runs remembered, event streams, and a slow event reader (dropped, never
//! buffered for). Records reach clients as the audit log holds them,
//! already redacted by the gate; answers are the gate's cleaned answers.
//!
//! # Mounting more routes
//!
//! [`router_with`] serves other routes behind the same authentication and
//! rate limits: their handlers read the caller as
//! `axum::Extension<auth::Caller>`. The approvals desk mounts its routes so:
//!
//! ```no_run
//! # fn example(state: std::sync::Arc<warden::serve::ServeState>, desk_routes: axum::Router) {
//! let app = warden::serve::router_with(state, desk_routes);
//! # }
//! ```
//!
//! Routes that must be reached without a token (a static page that asks
//! for one) are merged outside: `router(state).merge(public)`.
//!
//! # Who answers asks
//!
//! [`ServeState::approver_for`], when set, is called once per run, before
//! it starts, with the run's [`RunInfo`], and its [`Approver`] becomes the
//! run's `RunSpec::approver`. Unset, an `ask` is refused unless the request
//! pre-approved it (and the server allows pre-approval).

pub mod auth;
pub mod cluster;
pub mod runs;
pub mod stream;

use crate::audit::{AuditLog, AuditSink, Record};
use crate::gate::Approver;
use crate::job::{JobConfig, JobError, JobErrorKind, RunRequest};
use crate::runtime::Runtime;
use crate::worker;
use auth::{Caller, Refusal, Tokens};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Json};
use runs::{Full, RunEntry, RunTable};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The bounds of a serve process (every one configurable on the command
/// line).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// The largest request body, in bytes (`413` past it).
    pub max_body: usize,
    /// Most runs live at once in the process (`503` past it).
    pub max_live_runs: usize,
    /// Most finished runs remembered; the oldest are forgotten (their
    /// audit files stay).
    pub max_kept_runs: usize,
    /// Most bytes of answers and errors the remembered runs keep; past it
    /// the oldest are forgotten.
    pub max_kept_bytes: usize,
    /// Most event streams and audit downloads open at once (`503` past it).
    pub max_streams: usize,
    /// Most of those one token may hold (so one token cannot take them
    /// all).
    pub max_streams_per_token: usize,
    /// Most TCP connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request head or body not received whole within this long is
    /// refused (`408`) or its connection closed.
    pub read_timeout: Duration,
    /// An event reader that takes nothing for this long is dropped.
    pub slow_reader: Duration,
    /// Most runs `GET /runs` lists.
    pub max_listed: usize,
    /// A submit is refused (`507`) while the audit directory's file system
    /// has fewer bytes free than this: audit files are kept, so the disk
    /// is what bounds them.
    pub min_free_disk: u64,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_body: 1 << 20,
            max_live_runs: 1000,
            max_kept_runs: 10_000,
            max_kept_bytes: 256 << 20,
            max_streams: 512,
            max_streams_per_token: 64,
            max_connections: 1024,
            read_timeout: Duration::from_secs(10),
            slow_reader: Duration::from_secs(10),
            max_listed: 1000,
            min_free_disk: 1 << 30,
        }
    }
}

impl ServeLimits {
    /// Descriptors the process may need at these limits: per live run its
    /// audit file and a connection to its model provider, one per
    /// connection, and a reserve for the engine, the listener, tool calls'
    /// HTTP and the compile cache.
    pub fn descriptors_needed(&self) -> u64 {
        2 * self.max_live_runs as u64 + self.max_connections as u64 + DESCRIPTOR_RESERVE
    }
}

/// Descriptors kept for everything that is not a run or a connection.
pub const DESCRIPTOR_RESERVE: u64 = 256;

/// A run as the approver factory sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// The run's id.
    pub id: String,
    /// The name of the token that submitted it.
    pub owner: String,
    /// The policy's name.
    pub policy: String,
    /// The agent, as the request named it.
    pub agent: String,
    /// The model spec.
    pub model: String,
}

/// Makes the approver of each run (see the module doc).
pub type ApproverFactory = Arc<dyn Fn(&RunInfo) -> Arc<dyn Approver> + Send + Sync>;

/// Everything a serve process shares between requests.
pub struct ServeState {
    /// The one engine every run uses.
    pub runtime: Arc<Runtime>,
    /// What requests may name.
    pub jobs: JobConfig,
    /// Who may call.
    pub tokens: Tokens,
    /// The bounds.
    pub limits: ServeLimits,
    /// Who answers each run's asks; `None`: nobody (asks are refused unless
    /// pre-approved).
    pub approver_for: Option<ApproverFactory>,
    /// With `--nats`: runs go on the cluster's queue instead of running
    /// here ([`cluster`]).
    pub cluster: Option<cluster::Cluster>,
    runs: Mutex<RunTable>,
    streams: Arc<Semaphore>,
    /// Each token's share of `streams`.
    token_streams: std::collections::HashMap<String, Arc<Semaphore>>,
    closing: AtomicBool,
}

impl ServeState {
    /// A server's state.
    pub fn new(
        runtime: Arc<Runtime>,
        jobs: JobConfig,
        tokens: Tokens,
        limits: ServeLimits,
    ) -> Self {
        ServeState {
            runs: Mutex::new(RunTable::new(
                limits.max_live_runs,
                limits.max_kept_runs,
                limits.max_kept_bytes,
            )),
            streams: Arc::new(Semaphore::new(limits.max_streams.max(1))),
            token_streams: tokens
                .names()
                .into_iter()
                .map(|name| {
                    (
                        name,
                        Arc::new(Semaphore::new(limits.max_streams_per_token.max(1))),
                    )
                })
                .collect(),
            runtime,
            jobs,
            tokens,
            limits,
            approver_for: None,
            cluster: None,
            closing: AtomicBool::new(false),
        }
    }

    /// With `factory` making each run's approver.
    pub fn with_approver_for(mut self, factory: ApproverFactory) -> Self {
        self.approver_for = Some(factory);
        self
    }

    /// Submitting runs to `cluster`'s workers instead of running them.
    pub fn with_cluster(mut self, cluster: cluster::Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    fn runs(&self) -> MutexGuard<'_, RunTable> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs live now.
    pub fn live_runs(&self) -> usize {
        self.runs().live()
    }

    /// The run `id` if `owner`'s.
    pub fn run(&self, id: &str, owner: &str) -> Option<Arc<RunEntry>> {
        self.runs().get(id, owner)
    }

    /// Refuse new runs, cancel the live ones (their end records say the
    /// server is shutting down), and wait up to `wait` for them to end.
    pub async fn shut_down(&self, wait: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        if self.cluster.is_some() {
            // The runs are the workers': they go on, their records and
            // results stay in JetStream. Only this process stops following
            // them (which ends their event streams here).
            for entry in self.runs().live_entries() {
                entry.fail(format!(
                    "the front end stopped following the run; it goes on on its worker (its records and result are in JetStream under warden.runs.{}.*)",
                    entry.id
                ));
            }
            return;
        }
        let live = self.runs().live_entries();
        for entry in live {
            entry.cancel("the server is shutting down");
        }
        let deadline = Instant::now() + wait;
        while self.live_runs() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every route of the API: (method, path) as docs/openapi.json writes
/// them, and its handler. The router is built from this table, so the
/// OpenAPI test can check the two against each other.
fn table() -> Vec<(&'static str, &'static str, MethodRouter<Arc<ServeState>>)> {
    vec![
        ("post", "/runs", post(submit)),
        ("get", "/runs", get(list)),
        ("get", "/runs/{id}", get(show)),
        ("get", "/runs/{id}/events", get(events)),
        ("get", "/runs/{id}/audit", get(audit)),
        ("get", "/runs/{id}/audit/verify", get(verify)),
        ("post", "/runs/{id}/cancel", post(cancel)),
    ]
}

/// The API's routes: (method, path), lowercase methods.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The API, behind authentication.
pub fn router(state: Arc<ServeState>) -> Router {
    router_with(state, Router::new())
}

/// The API and `extra` routes, all behind the same authentication and
/// rate limits (see the module doc).
pub fn router_with(state: Arc<ServeState>, extra: Router) -> Router {
    let mut api: Router<Arc<ServeState>> = Router::new();
    for (_, path, route) in table() {
        api = api.route(path, route);
    }
    api.fallback(not_found)
        .with_state(state.clone())
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Serve `app` on `listener` until `stop` completes; then shut down: new
/// runs are refused, live ones cancelled (waited for up to `wait`), and
/// the requests in flight finished. Refuses a listener that is not on a
/// loopback address when the state has no authentication.
pub async fn serve(
    state: Arc<ServeState>,
    listener: tokio::net::TcpListener,
    app: Router,
    wait: Duration,
    stop: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    if state.tokens.is_insecure() && !address.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "--insecure-no-auth serves only loopback addresses (127.0.0.1, [::1]); {address} is not one"
        )));
    }
    let limits = state.limits.clone();
    let stopping = state.clone();
    crate::mcp::http::serve_bounded(
        listener,
        app,
        limits.read_timeout,
        limits.max_connections,
        async move {
            stop.await;
            stopping.shut_down(wait).await;
        },
    )
    .await
    .map(drop)
}

/// An error response: `{"error": {"code", "message", "field"?}}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn job_error(refused: &JobError) -> Response {
    let (status, code) = match refused.kind {
        JobErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
        JobErrorKind::NotFound => (StatusCode::UNPROCESSABLE_ENTITY, "not-found"),
        JobErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        JobErrorKind::Server => (StatusCode::INTERNAL_SERVER_ERROR, "server"),
    };
    (
        status,
        Json(json!({ "error": {
            "code": code,
            "message": refused.message,
            "field": refused.field,
        } })),
    )
        .into_response()
}

fn no_such_run() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such run: it never was, is another token's, or finished long enough ago to be forgotten (its audit file is kept on the server)",
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such route: see docs/openapi.json",
    )
}

/// Without tokens, the only thing between a web page in the person's
/// browser and the API is that the browser says where a request comes
/// from and is addressed to. So with `--insecure-no-auth` a request must be
/// addressed to a loopback name (`Host`: a page that rebinds its own domain
/// to 127.0.0.1 sends its domain) and, when a browser says where it comes
/// from (`Origin`), come from a loopback origin (a cross-site form or
/// `fetch`, even a "simple" one with `text/plain`, sends the site's).
fn browser_refusal(request: &Request) -> Option<String> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let loopback =
        |text: &str| url::Url::parse(text).is_ok_and(|url| crate::remote::is_loopback(&url));
    match host {
        Some(host) if loopback(&format!("http://{host}/")) => {}
        host => {
            return Some(format!(
                "without authentication (--insecure-no-auth) only requests addressed to 127.0.0.1, [::1] or localhost are served, not `{}`: a web page whose name points at this machine is refused",
                crate::capability::brief(
                    &crate::policy::printable(host.as_deref().unwrap_or("")),
                    80
                )
            ));
        }
    }
    match headers.get(header::ORIGIN).map(|v| v.to_str()) {
        None => None,
        Some(Ok(origin)) if loopback(origin) => None,
        Some(origin) => Some(format!(
            "without authentication (--insecure-no-auth) requests from web pages of other origins are refused (`Origin: {}`)",
            crate::capability::brief(&crate::policy::printable(origin.unwrap_or("?")), 80)
        )),
    }
}

async fn authenticate(
    State(state): State<Arc<ServeState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_insecure()
        && let Some(why) = browser_refusal(&request)
    {
        return error(StatusCode::FORBIDDEN, "forbidden", why);
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match state.tokens.authenticate(presented, Instant::now()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(Refusal::Unauthenticated(why)) => {
            let mut response = error(StatusCode::UNAUTHORIZED, "unauthenticated", why);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Err(Refusal::RateLimited { wait, rate }) => with_retry_after(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!(
                    "this token's rate of {rate} requests/s is spent: retry after {} ms",
                    wait.as_millis()
                ),
            ),
            wait.as_secs_f64().ceil() as u64,
        ),
    }
}

/// Counts a run's records as its audit file takes them, for its event
/// readers.
struct Progressed(Arc<RunEntry>);

impl AuditSink for Progressed {
    fn write(&mut self, _record: &Record) -> std::io::Result<()> {
        self.0.record_written();
        Ok(())
    }
}

/// Gives a live run's slot back when its task ends, however it ends (a
/// panic included: the run is then marked failed).
struct Release {
    state: Arc<ServeState>,
    entry: Arc<RunEntry>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.entry.status().is_final() {
            self.entry
                .fail("the server failed while running it (see its log)".into());
        }
        let forgotten = {
            let mut runs = self.state.runs();
            runs.release(&self.entry.owner);
            runs.finished(&self.entry.id)
        };
        if self.state.cluster.is_some() {
            cluster::forget(&forgotten);
        }
    }
}

/// A slot admitted but not yet a run: given back if the submit fails.
struct Admitted<'a> {
    state: &'a ServeState,
    owner: String,
    armed: bool,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.runs().release(&self.owner);
        }
    }
}

/// Read a request body, at most `max` bytes, within `timeout`.
async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<bytes::Bytes, Response> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("a request body is at most {max} bytes (--max-body)"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request body did not arrive within {timeout:?}"),
        )),
    }
}

async fn submit(
    State(state): State<Arc<ServeState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if state.closing.load(Ordering::SeqCst) {
        return with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "the server is shutting down",
            ),
            5,
        );
    }
    // Refused unread when the declared length is too large.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.limits.max_body as u64) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "a request body is at most {} bytes (--max-body)",
                state.limits.max_body
            ),
        );
    }
    let body = match read_body(body, state.limits.max_body, state.limits.read_timeout).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = match RunRequest::from_json(&body) {
        Ok(request) => request,
        Err(refused) => return job_error(&refused),
    };
    if request.run_id.is_some() {
        return job_error(&JobError {
            field: "run_id",
            kind: JobErrorKind::Invalid,
            message: "the server chooses run ids: leave `run_id` out".into(),
        });
    }
    if !caller.token.may_use(&request.policy) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this token may not run the policy `{}`; it may run: {}",
                crate::transcript::clean(&crate::capability::brief(&request.policy, 64)),
                caller.token.policies.join(", ")
            ),
        );
    }
    // Off the reactor: a hung network file system must not stall it.
    let audit_dir = state.jobs.audit_dir.clone();
    let free = tokio::task::spawn_blocking(move || free_disk(&audit_dir))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    match free {
        Ok(free) if free < state.limits.min_free_disk => {
            tracing::warn!(
                "a run was refused: {free} bytes are free for audit logs in {}, less than --min-free-disk {}",
                state.jobs.audit_dir.display(),
                state.limits.min_free_disk
            );
            return with_retry_after(
                error(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "disk-full",
                    "the server has no room for more audit logs (--min-free-disk): retry later, or ask its operator to archive old ones",
                ),
                60,
            );
        }
        Ok(_) => {}
        Err(failure) => {
            tracing::debug!("cannot read the free space of the audit directory: {failure}")
        }
    }
    let admitted = state.runs().admit(caller.name(), caller.token.max_runs);
    match admitted {
        Ok(()) => {}
        Err(Full::Server(max)) => {
            return with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server-full",
                    format!(
                        "{max} runs are live, the most this server holds (--max-runs): retry later"
                    ),
                ),
                1,
            );
        }
        Err(Full::Token(max)) => {
            return with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-runs",
                    format!(
                        "this token has {max} runs live, the most it may (`max_runs`): wait for one to end, or cancel one"
                    ),
                ),
                1,
            );
        }
    }
    let mut slot = Admitted {
        state: &state,
        owner: caller.name().to_string(),
        armed: true,
    };
    // Reading and validating the policy, and building the provider, touch
    // files: off the reactor.
    let resolving = state.clone();
    let queued = state.cluster.as_ref().map(|_| request.clone());
    let resolved = tokio::task::spawn_blocking(move || resolving.jobs.resolve(&request)).await;
    let job = match resolved {
        Ok(Ok(job)) => job,
        Ok(Err(refused)) => return job_error(&refused),
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server",
                "the request could not be resolved",
            );
        }
    };
    let entry = Arc::new(RunEntry::new(
        job.run_id.clone(),
        caller.name().to_string(),
        (
            job.policy_name.clone(),
            job.agent_name.clone(),
            job.model.clone(),
        ),
        job.audit_path.clone(),
    ));
    if let (Some(cluster), Some(request)) = (&state.cluster, queued) {
        if state.runs().contains(&entry.id) {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "a run with this id exists",
            );
        }
        // Queued and followed in a task of its own, which owns the run's
        // slot: a client that hangs up mid-submit cannot leave a job
        // stored but unfollowed.
        slot.armed = false;
        drop(slot);
        let queueing = tokio::spawn(queue_and_follow(
            state.clone(),
            cluster.clone(),
            entry.clone(),
            request,
        ));
        let refused = match queueing.await {
            Ok(Ok(view)) => return accepted(view),
            Ok(Err(refused)) => refused,
            Err(_) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server",
                    "the run could not be queued (the server's log says why)",
                );
            }
        };
        return match refused {
            worker::SubmitError::QueueFull(_) => with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue-full",
                    refused.to_string(),
                ),
                5,
            ),
            worker::SubmitError::Invalid(_)
            | worker::SubmitError::Nats(_)
            | worker::SubmitError::Unconfirmed(_) => {
                tracing::warn!(run = %entry.id, "the queue refused a run: {refused}");
                with_retry_after(
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "queue-unavailable",
                        "the run queue did not take the run (the server's log says why): retry later",
                    ),
                    5,
                )
            }
        };
    }
    let log = match job.open_audit() {
        Ok(log) => log.with_sink(Progressed(entry.clone())),
        Err(failure) => {
            tracing::warn!(path = %job.audit_path.display(), "cannot open an audit log: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server",
                "the run's audit log cannot be opened (the server's log says why)",
            );
        }
    };
    {
        let mut runs = state.runs();
        if runs.contains(&entry.id) {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "a run with this id exists",
            );
        }
        runs.insert(entry.clone());
    }
    slot.armed = false;
    drop(slot);
    let view = entry.view();
    tokio::spawn(drive(state.clone(), entry, job, log));
    accepted(view)
}

/// Queue the admitted run `entry` on `cluster` and follow it: its view
/// once queued (the following goes on in its own task), or why the queue
/// refused it (its slot given back).
async fn queue_and_follow(
    state: Arc<ServeState>,
    cluster: cluster::Cluster,
    entry: Arc<RunEntry>,
    request: RunRequest,
) -> Result<Value, worker::SubmitError> {
    let queued = match cluster::enqueue(&cluster, &entry, request).await {
        Ok(queued) => queued,
        Err(refused) => {
            state.runs().release(&entry.owner);
            return Err(refused);
        }
    };
    state.runs().insert(entry.clone());
    let view = entry.view();
    let approver = state.approver_for.as_ref().map(|make| make(&entry.info()));
    tokio::spawn(cluster::follow(
        state.clone(),
        cluster,
        entry,
        queued,
        approver,
    ));
    Ok(view)
}

/// 202 with the run's view and its `Location`.
fn accepted(view: Value) -> Response {
    let location = view["links"]["self"]
        .as_str()
        .unwrap_or("/runs")
        .to_string();
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Run one job to its end.
async fn drive(state: Arc<ServeState>, entry: Arc<RunEntry>, job: crate::job::Job, log: AuditLog) {
    let release = Release {
        state: state.clone(),
        entry: entry.clone(),
    };
    let approver = state.approver_for.as_ref().map(|make| make(&entry.info()));
    let spec = job.into_spec(approver);
    entry.set_running();
    let result = crate::run::run_until(&state.runtime, spec, log, entry.cancelled()).await;
    if let Err(crate::run::RunError::Policy(error)) = &result {
        tracing::warn!(run = %entry.id, "a run's policy could not be loaded:\n{error}");
    }
    entry.finish(&result);
    drop(release);
}

async fn list(
    State(state): State<Arc<ServeState>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let (mine, more) = state.runs().of(caller.name(), state.limits.max_listed);
    let runs: Vec<_> = mine.iter().map(|e| e.brief()).collect();
    Json(json!({ "runs": runs, "truncated": more })).into_response()
}

async fn show(
    State(state): State<Arc<ServeState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match state.run(&id, caller.name()) {
        Some(entry) => Json(entry.view()).into_response(),
        None => no_such_run(),
    }
}

/// A stream slot of the server's and one of the caller's.
fn stream_slot(state: &ServeState, caller: &Caller) -> Result<stream::Slot, Box<Response>> {
    let mine = state
        .token_streams
        .get(caller.name())
        .and_then(|s| s.clone().try_acquire_owned().ok())
        .ok_or_else(|| {
            Box::new(with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "streams-full",
                    format!(
                        "this token has {} event streams and downloads open, the most one token may (--max-streams-per-token): close one",
                        state.limits.max_streams_per_token
                    ),
                ),
                1,
            ))
        })?;
    let server = state.streams.clone().try_acquire_owned().map_err(|_| {
        Box::new(with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "streams-full",
                format!(
                    "{} event streams and downloads are open, the most this server serves (--max-streams): retry later",
                    state.limits.max_streams
                ),
            ),
            1,
        ))
    })?;
    Ok(stream::Slot(vec![server, mine]))
}

async fn events(
    State(state): State<Arc<ServeState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(entry) = state.run(&id, caller.name()) else {
        return no_such_run();
    };
    let permit = match stream_slot(&state, &caller) {
        Ok(permit) => permit,
        Err(response) => return *response,
    };
    let skip = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let body = stream::events(
        entry,
        skip,
        permit,
        stream::StreamLimits {
            slow_reader: state.limits.slow_reader,
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::new(body),
    )
        .into_response()
}

async fn audit(
    State(state): State<Arc<ServeState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Some(entry) = state.run(&id, caller.name()) else {
        return no_such_run();
    };
    let permit = match stream_slot(&state, &caller) {
        Ok(permit) => permit,
        Err(response) => return *response,
    };
    let body = stream::audit_file(
        entry.audit_path.clone(),
        permit,
        stream::StreamLimits {
            slow_reader: state.limits.slow_reader,
        },
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::new(body),
    )
        .into_response()
}

async fn verify(
    State(state): State<Arc<ServeState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Some(entry) = state.run(&id, caller.name()) else {
        return no_such_run();
    };
    let permit = match stream_slot(&state, &caller) {
        Ok(permit) => permit,
        Err(response) => return *response,
    };
    let path = entry.audit_path.clone();
    let report = tokio::task::spawn_blocking(move || {
        crate::load::open_regular(&path).and_then(crate::audit::verify)
    })
    .await;
    drop(permit);
    let report = match report {
        Ok(Ok(report)) => report,
        Ok(Err(failure)) => {
            tracing::warn!(run = %id, "cannot read an audit log: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server",
                "the run's audit log cannot be read",
            );
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "server", "verify failed"),
    };
    let view = entry.view();
    let head_matches = view
        .get("audit_head")
        .and_then(|h| h.as_str())
        .map(|head| head == report.head);
    let complete = report
        .runs
        .iter()
        .any(|(run, _, ended)| *run == id && *ended);
    Json(json!({
        "id": id,
        "intact": report.is_intact(),
        "records": report.records,
        "head": report.head,
        "head_matches": head_matches,
        "complete": complete,
        "problems": report.problems.iter().map(|p| json!({ "line": p.line, "message": p.message })).collect::<Vec<_>>(),
        "more_problems": report.more_problems,
        "torn": report.torn,
    }))
    .into_response()
}

async fn cancel(
    State(state): State<Arc<ServeState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Some(entry) = state.run(&id, caller.name()) else {
        return no_such_run();
    };
    if !entry.cancel(&format!(
        "cancelled by `{}` (POST /runs/{id}/cancel)",
        caller.name()
    )) {
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": {
                "code": "finished",
                "message": "the run is over: there is nothing to cancel",
            } })),
        )
            .into_response();
    }
    (StatusCode::ACCEPTED, Json(entry.view())).into_response()
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
pub fn free_disk(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    // A directory not made yet will be on its nearest existing ancestor's.
    let dir = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(std::path::Path::new(if dir.is_relative() {
            "."
        } else {
            "/"
        }));
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `stats` is a plain struct the call fills in.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Raise the soft limit on open descriptors to the hard limit; returns
/// (soft, hard) after.
pub fn raise_descriptor_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}
