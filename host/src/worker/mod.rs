//! `warden worker`: runs taken from a NATS JetStream work queue, their
//! audit records published to a stream as they are written, each answer to
//! a result subject. NATS does queueing, delivery and storage; this module
//! only decides when a job is done.
//!
//! Delivery is at-least-once, so a run is idempotent by its id: before
//! running, a worker looks for the run's result, then for an end record in
//! its audit stream, then claims the id (a compare-and-set on the claims stream). It acks the job
//! only once the end record and the result are stored by JetStream. It must
//! never ack a job whose end is not durable, and never start a run whose
//! result (or end record) is already stored.

pub mod approve;
pub mod claim;
pub mod sink;

use crate::audit::{AuditLog, Entry, Event, GENESIS, JsonlFile, Kind, Outcome, Record, line_hash};
use crate::gate::Approver;
use crate::job::{JobConfig, RunRequest};
use crate::policy::Verdict;
use crate::run::{RunSpec, run_until};
use crate::runtime::Runtime;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use claim::{Claim, Claims, Taken};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The work-queue stream jobs wait in.
pub const QUEUE_STREAM: &str = "WARDEN_RUNS";
/// The subject jobs are submitted on.
pub const QUEUE_SUBJECT: &str = "warden.runs.queue";
/// The stream of every run's audit records and result.
pub const EVENTS_STREAM: &str = "WARDEN_RUN_EVENTS";
/// The durable consumer the workers share.
pub const CONSUMER: &str = "workers";
/// The stream of run claims (one message kept per run).
pub const CLAIMS_STREAM: &str = "WARDEN_CLAIMS";
/// The rule named by the record a later attempt writes to mark the
/// records of an attempt that ended without an end record.
pub const ABANDONED_RULE: &str = "worker.abandoned";
/// The rule of the end record of a run given up after
/// [`WorkerConfig::max_attempts`] attempts that never ended.
pub const GAVE_UP_RULE: &str = "worker.gave-up";

/// The subject of a run's audit records: one message per record, its
/// payload the exact line whose hash the next record's `prev` carries.
pub fn audit_subject(run_id: &str) -> String {
    format!("warden.runs.{run_id}.audit")
}

/// The subject of a run's result (one message, see [`RunResult`]).
pub fn result_subject(run_id: &str) -> String {
    format!("warden.runs.{run_id}.result")
}

/// The subject a run's asks are sent on as NATS requests.
pub fn approve_subject(run_id: &str) -> String {
    format!("warden.runs.{run_id}.approve")
}

/// The subject a run is cancelled on: a NATS request whose payload is the
/// reason; the worker running it replies and stops the run (its end
/// record says cancelled). No responder: no worker runs it now.
pub fn cancel_subject(run_id: &str) -> String {
    format!("warden.runs.{run_id}.cancel")
}

/// Longest cancel reason kept.
const MAX_CANCEL_REASON: usize = 512;

/// A run id is a subject token and a file name: `[A-Za-z0-9_-]{1,64}`.
pub fn check_run_id(run_id: &str) -> Result<(), String> {
    if run_id.is_empty()
        || run_id.len() > 64
        || !run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "run id `{}` is not 1 to 64 letters, digits, `-` or `_`",
            run_id.escape_debug()
        ));
    }
    Ok(())
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One job on the queue: a run id and a self-contained request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuedJob {
    /// The run's id: its audit records carry it, and a redelivered job is
    /// recognised by it.
    pub run_id: String,
    /// When it was submitted (µs since the epoch, the submitter's clock).
    #[serde(default)]
    pub enqueued_us: u64,
    /// What to run: the same request `warden serve` takes.
    pub request: RunRequest,
}

/// Turns a job's request into what [`run`] needs: the operator's
/// [`JobConfig`] (what a request may name), or a test's own.
pub trait Resolve: Send + Sync {
    /// The run to start, or why the request cannot run (bad input: the
    /// job ends with this error and is not retried).
    fn resolve(&self, job: &QueuedJob, approver: Arc<dyn Approver>) -> Result<RunSpec, String>;
}

impl Resolve for JobConfig {
    fn resolve(&self, job: &QueuedJob, approver: Arc<dyn Approver>) -> Result<RunSpec, String> {
        if job
            .request
            .run_id
            .as_ref()
            .is_some_and(|id| *id != job.run_id)
        {
            return Err("run_id: the request's run id is not the job's".into());
        }
        let mut request = job.request.clone();
        request.run_id = Some(job.run_id.clone());
        JobConfig::resolve(self, &request)
            .map(|resolved| resolved.into_spec(Some(approver)))
            .map_err(|error| error.to_string())
    }
}

/// What a run came to, published on [`result_subject`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run's id.
    pub run_id: String,
    /// The agent's answer (already through the gate's redaction).
    pub answer: Option<String>,
    /// Why there is no answer.
    pub error: Option<String>,
    /// Which attempt ended it (1 unless a worker died mid-run).
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// The hash of the run's last audit record.
    pub audit_head: String,
    /// The `seq` of the run's last audit record.
    pub audit_records: u64,
    /// Submitted, started, ended (µs since the epoch).
    pub enqueued_us: u64,
    /// When this attempt started.
    pub started_us: u64,
    /// When the end record was durable.
    pub ended_us: u64,
    /// Rebuilt from the end record by a later delivery (the worker that
    /// ran it died between its end record and its result).
    #[serde(default)]
    pub recovered: bool,
    /// The run was cancelled (on [`cancel_subject`]).
    #[serde(default)]
    pub cancelled: bool,
    /// What the run used: calls, tokens, cost, labels (as `GET /runs/{id}`
    /// shows it); none for a run that never started or was recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<serde_json::Value>,
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name, in claims and results.
    pub name: String,
    /// Runs at once.
    pub concurrency: usize,
    /// How long a delivered job may go without a heartbeat before
    /// JetStream gives it to another worker.
    pub ack_wait: Duration,
    /// Attempts (runs started) a job may have that end without an end
    /// record (their worker died or lost the job) before the next worker
    /// gives it up: ends the run with [`GAVE_UP_RULE`] and a result
    /// saying why, instead of running it again.
    pub max_attempts: u32,
    /// Deliveries before JetStream stops offering a job (a backstop past
    /// `max_attempts`: deliveries also count jobs put back because their
    /// claim was alive elsewhere or NATS failed).
    pub max_deliver: i64,
    /// A local copy of each run's audit log, `DIR/<run id>.jsonl`,
    /// fsynced before the job is acked.
    pub audit_dir: Option<PathBuf>,
    /// How long an ask waits for an answer on the approve subject.
    pub approval_timeout: Duration,
    /// How long publishing one record may keep retrying (NATS down).
    pub publish_deadline: Duration,
    /// Most audit bytes a run may have waiting for JetStream's ack.
    pub max_audit_in_flight: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: format!("worker-{}", std::process::id()),
            concurrency: 2,
            ack_wait: Duration::from_secs(30),
            max_attempts: 3,
            max_deliver: 100,
            audit_dir: None,
            approval_timeout: Duration::from_secs(300),
            publish_deadline: Duration::from_secs(60),
            max_audit_in_flight: 64 << 20,
        }
    }
}

/// Limits of the streams, set when they are created.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Jobs the queue holds before a submit is refused.
    pub queue_max_messages: i64,
    /// Bytes the queue holds before a submit is refused.
    pub queue_max_bytes: i64,
    /// Largest job.
    pub max_job_bytes: i32,
    /// Bytes of audit records and results kept, all runs.
    pub events_max_bytes: i64,
    /// How long audit records and results are kept.
    pub events_max_age: Duration,
    /// Copies JetStream keeps of each stream (1 to 5; 3 survives losing
    /// one server of a cluster). Streams that exist with fewer are scaled
    /// up; more are left as they are.
    pub replicas: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            queue_max_messages: 10_000,
            queue_max_bytes: 256 << 20,
            max_job_bytes: 1 << 20,
            events_max_bytes: 8 << 30,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
        }
    }
}

/// Connect to NATS at `urls` (one URL, or several separated by commas:
/// servers of one cluster), retrying the first connection.
pub async fn connect(urls: &str) -> Result<async_nats::Client, String> {
    let servers: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if servers.is_empty() {
        return Err("no NATS server given".into());
    }
    let addresses = servers
        .iter()
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("`{}` is not a NATS URL: {e}", crate::transcript::clean(url)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(addresses)
        .await
        .map_err(|e| format!("cannot connect to {urls}: {e}"))
}

/// Create the queue, the events stream and the claims bucket, or find
/// them (a second worker, a restart): idempotent. Each has
/// `limits.replicas` copies; one found with fewer is scaled up.
pub async fn ensure_streams(js: &jetstream::Context, limits: &StreamLimits) -> Result<(), String> {
    let replicas = limits.replicas.clamp(1, 5);
    ensure_stream(
        js,
        stream::Config {
            name: QUEUE_STREAM.into(),
            subjects: vec![QUEUE_SUBJECT.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: limits.queue_max_messages,
            max_bytes: limits.queue_max_bytes,
            max_message_size: limits.max_job_bytes,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: EVENTS_STREAM.into(),
            subjects: vec!["warden.runs.*.audit".into(), "warden.runs.*.result".into()],
            retention: stream::RetentionPolicy::Limits,
            max_bytes: limits.events_max_bytes,
            max_age: limits.events_max_age,
            // A full store refuses records (the run stops) rather than
            // dropping the oldest runs' records.
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    ensure_stream(
        js,
        stream::Config {
            name: CLAIMS_STREAM.into(),
            subjects: vec!["warden.claims.*".into()],
            retention: stream::RetentionPolicy::Limits,
            // A key-value store: the last claim of each run.
            max_messages_per_subject: 1,
            max_message_size: 4096,
            max_age: limits.events_max_age,
            storage: stream::StorageType::File,
            allow_direct: true,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await
}

/// Create the stream `config` names, or find it and scale its replicas up
/// to `config`'s.
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<(), String> {
    let name = config.name.clone();
    let replicas = config.num_replicas;
    let explain = |error: String| {
        if error.contains("insufficient resources") || error.contains("replicas") {
            format!(
                "cannot create or find the stream {name} with {replicas} replicas: {error} (a stream of N replicas needs a NATS cluster of at least N servers with JetStream)"
            )
        } else {
            format!("cannot create or find the stream {name}: {error}")
        }
    };
    let mut found = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| explain(e.to_string()))?;
    let info = found.info().await.map_err(|e| explain(e.to_string()))?;
    if info.config.num_replicas < replicas {
        let mut scaled = info.config.clone();
        scaled.num_replicas = replicas;
        js.update_stream(scaled)
            .await
            .map_err(|e| explain(e.to_string()))?;
    } else if info.config.num_replicas > replicas {
        tracing::warn!(
            "the stream {name} has {} replicas, more than the {replicas} asked: left as it is",
            info.config.num_replicas
        );
    }
    Ok(())
}

/// Why a submit was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is at its limit: workers are saturated.
    #[error(
        "the run queue is full ({0}): workers are not keeping up; submit again later, add workers, or raise the queue's limits"
    )]
    QueueFull(String),
    /// The job is not valid.
    #[error("{0}")]
    Invalid(String),
    /// NATS did not take it: the job is not stored.
    #[error("the run queue did not take the job: {0}")]
    Nats(String),
    /// JetStream did not answer within [`SUBMIT_DEADLINE`] after a publish
    /// went out: the job may be stored (or be stored once NATS answers).
    /// Submit it again (same run id) until it is confirmed; a run is
    /// idempotent by its id, so a job stored twice runs once.
    #[error("the run queue did not confirm it stored the job: {0}")]
    Unconfirmed(String),
}

/// How long [`submit`] tries (with the same message id, so a repeat of a
/// stored job is stored once) while JetStream does not answer.
pub const SUBMIT_DEADLINE: Duration = Duration::from_secs(10);

/// Put `job` on the queue; returns once JetStream stored it. The run id is
/// the message id, so a submit repeated within two minutes is stored once.
pub async fn submit(js: &jetstream::Context, job: &QueuedJob) -> Result<(), SubmitError> {
    use jetstream::context::PublishErrorKind as Kind;
    check_run_id(&job.run_id).map_err(SubmitError::Invalid)?;
    let payload: Bytes = serde_json::to_vec(job)
        .map_err(|e| SubmitError::Invalid(e.to_string()))?
        .into();
    let until = tokio::time::Instant::now() + SUBMIT_DEADLINE;
    let mut pause = Duration::from_millis(50);
    // Whether a publish may have reached JetStream unanswered.
    let mut maybe_stored = false;
    loop {
        let attempt = async {
            let ack = js
                .send_publish(
                    QUEUE_SUBJECT,
                    jetstream::message::PublishMessage::build()
                        .payload(payload.clone())
                        .message_id(&job.run_id),
                )
                .await
                .map_err(|e| (false, e))?;
            ack.await.map_err(|e| (true, e))
        };
        let (sent, error) = match attempt.await {
            Ok(_) => return Ok(()),
            Err(failed) => failed,
        };
        let text = error.to_string();
        match error.kind() {
            // Sent, and no answer: it may be stored.
            Kind::TimedOut | Kind::BrokenPipe if sent => maybe_stored = true,
            // JetStream answered a repeat of a publish that may be
            // stored (its limits can be checked before its duplicates):
            // still unknown.
            Kind::Other if sent && maybe_stored => {}
            // JetStream answered: it refused the job.
            Kind::Other if sent => {
                return Err(
                    if text.contains("maximum messages") || text.contains("maximum bytes") {
                        SubmitError::QueueFull(text)
                    } else {
                        SubmitError::Nats(text)
                    },
                );
            }
            Kind::MaxPayloadExceeded => return Err(SubmitError::Invalid(text)),
            // Not sent, or no stream yet (JetStream starting): try again.
            _ => {}
        }
        if tokio::time::Instant::now() + pause > until {
            return Err(if maybe_stored {
                SubmitError::Unconfirmed(text)
            } else {
                SubmitError::Nats(text)
            });
        }
        tracing::debug!(run = %job.run_id, "submitting the job: {text}; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Withdraw run `run_id` (as its front end `withdrawal.by`), unless a live
/// worker holds it (its claim renewed within `stale_after`): no worker
/// runs it from now on, whether its job is in the queue, was never stored,
/// or was given up by JetStream ([`claim::Claims::withdraw`]). The run's
/// result when it is over (this withdrawal's, an earlier one's, or the
/// result a worker stored first); `None` while a live worker holds it
/// (cancel it on [`cancel_subject`]).
pub async fn withdraw(
    js: &jetstream::Context,
    run_id: &str,
    enqueued_us: u64,
    withdrawal: &claim::Withdrawal,
    stale_after: Duration,
) -> Result<Option<RunResult>, String> {
    if let Some(result) = stored_result(js, run_id).await? {
        return Ok(Some(result));
    }
    let result = match last_audit_record(js, run_id).await? {
        // It ended; its worker has not published the result (yet).
        Some(last) if is_end(&last.record) => {
            result_from_end(run_id, enqueued_us, &last.record, &last.line)
        }
        _ => {
            let claims = Claims::open(js).await?;
            let withdrawal = match claims.withdraw(run_id, withdrawal, stale_after).await? {
                claim::Withdrawn::Held => return Ok(None),
                claim::Withdrawn::Yes(withdrawal) => withdrawal,
            };
            end_withdrawn(js, run_id, enqueued_us, &withdrawal).await?
        }
    };
    publish_result(js, &result, Duration::from_secs(30)).await?;
    // A result stored first (a worker that ended just before) is the run's.
    Ok(Some(stored_result(js, run_id).await?.unwrap_or(result)))
}

/// The rule of the end record a withdrawal writes.
pub const WITHDRAWN_RULE: &str = "worker.withdrawn";

/// End the withdrawn run `run_id`: its end record is appended after its
/// last (with the subject's expected last sequence, so an attempt still
/// running somewhere cannot append after it), unless its last record is
/// an end record already (it ended before the withdrawal: that is its
/// result). The result names the end record.
async fn end_withdrawn(
    js: &jetstream::Context,
    run_id: &str,
    enqueued_us: u64,
    withdrawal: &claim::Withdrawal,
) -> Result<RunResult, String> {
    // The reason may have come from the bus (a withdrawn claim): bounded
    // and cleaned as a cancel's is before it is recorded and shown.
    let reason = crate::transcript::clean(&crate::capability::brief(
        &withdrawal.reason,
        MAX_CANCEL_REASON,
    ));
    // A zombie attempt appending between the read and the write makes
    // the write fail; it stops at its next heartbeat.
    for _ in 0..5 {
        let last = last_audit_record(js, run_id).await?;
        if let Some(last) = &last
            && is_end(&last.record)
        {
            return Ok(result_from_end(
                run_id,
                enqueued_us,
                &last.record,
                &last.line,
            ));
        }
        let (head, seq, after) = match &last {
            Some(last) => (line_hash(&last.line), last.record.seq, last.stream_seq),
            None => (GENESIS.to_string(), 0, 0),
        };
        let (audit_sink, pump) = sink::NatsSink::start(
            js.clone(),
            audit_subject(run_id),
            after,
            sink::SinkLimits {
                max_in_flight: 1 << 20,
                publish_deadline: Duration::from_secs(30),
            },
        );
        let audit = AuditLog::new(run_id)
            .with_head(&head)
            .with_seq(seq)
            .with_sink(audit_sink);
        let mut data = serde_json::json!({
            "error": reason,
            "withdrawn": { "by": withdrawal.by },
        });
        if withdrawal.cancelled {
            data["cancelled"] = serde_json::Value::String(reason.clone());
        }
        audit
            .write(Entry {
                kind: Kind::Run,
                event: Event::Outcome,
                subject: "job".into(),
                decision: Verdict::Deny,
                rule: WITHDRAWN_RULE.into(),
                detail: reason.clone(),
                outcome: Some(Outcome::Failed),
                data: Some(data),
            })
            .map_err(|e| e.to_string())?;
        drop(audit);
        match pump.await {
            Ok(Ok(pumped)) => {
                return Ok(RunResult {
                    run_id: run_id.to_string(),
                    answer: None,
                    error: Some(reason.clone()),
                    attempt: 0,
                    worker: withdrawal.by.clone(),
                    audit_head: pumped.head,
                    audit_records: pumped.last_seq,
                    enqueued_us,
                    started_us: 0,
                    ended_us: now_us(),
                    recovered: false,
                    cancelled: withdrawal.cancelled,
                    summary: None,
                });
            }
            Ok(Err(error)) if error.contains("wrong last sequence") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(error)) => return Err(error),
            Err(error) => return Err(error.to_string()),
        }
    }
    Err(format!(
        "the withdrawn run {run_id} kept getting records: its end record could not be written"
    ))
}

/// Jobs waiting in the queue (not yet delivered to a worker): what an
/// autoscaler scales on.
pub async fn queue_depth(js: &jetstream::Context) -> Result<u64, String> {
    let stream = js
        .get_stream(QUEUE_STREAM)
        .await
        .map_err(|e| format!("no stream {QUEUE_STREAM}: {e}"))?;
    let mut consumer: consumer::PullConsumer = stream
        .get_consumer(CONSUMER)
        .await
        .map_err(|e| format!("no consumer {CONSUMER}: {e}"))?;
    let info = consumer.info().await.map_err(|e| e.to_string())?;
    Ok(info.num_pending)
}

/// The stored result of `run_id`, if there is one.
pub async fn stored_result(
    js: &jetstream::Context,
    run_id: &str,
) -> Result<Option<RunResult>, String> {
    let stream = js
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    match stream
        .get_last_raw_message_by_subject(&result_subject(run_id))
        .await
    {
        Ok(message) => serde_json::from_slice(&message.payload)
            .map(Some)
            .map_err(|e| format!("the stored result of {run_id} is not a result: {e}")),
        Err(error) if is_not_found(&error.to_string()) => Ok(None),
        Err(error) => Err(error.to_string()),
    }
}

pub(crate) fn is_not_found(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("no message found") || text.contains("not found")
}

/// Wait up to `timeout` for the result of `run_id`.
pub async fn wait_result(
    js: &jetstream::Context,
    run_id: &str,
    timeout: Duration,
) -> Result<RunResult, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Ok(Some(result)) = stored_result(js, run_id).await {
            return Ok(result);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no result for {run_id} within {timeout:?}"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Every audit line of `run_id` in the stream, in order (at most
/// `max_records`: a bound on what a reader holds).
pub async fn read_audit(
    js: &jetstream::Context,
    run_id: &str,
    max_records: usize,
) -> Result<Vec<Bytes>, String> {
    let stream = js
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let subject = audit_subject(run_id);
    let mut lines = Vec::new();
    let mut next = match stream.get_first_raw_message_by_subject(&subject, 1).await {
        Ok(message) => Some(message),
        Err(error) if is_not_found(&error.to_string()) => None,
        Err(error) => return Err(error.to_string()),
    };
    while let Some(message) = next {
        if lines.len() >= max_records {
            return Err(format!(
                "the audit of {run_id} has more than {max_records} records"
            ));
        }
        let sequence = message.sequence;
        lines.push(message.payload);
        next = match stream
            .get_first_raw_message_by_subject(&subject, sequence + 1)
            .await
        {
            Ok(message) => Some(message),
            Err(error) if is_not_found(&error.to_string()) => None,
            Err(error) => return Err(error.to_string()),
        };
    }
    Ok(lines)
}

/// A worker: one runtime, `concurrency` runs at once.
pub struct Worker {
    js: jetstream::Context,
    runtime: Arc<Runtime>,
    resolver: Arc<dyn Resolve>,
    config: WorkerConfig,
    claims: Claims,
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The run ran (attempt n) and its result is stored.
    Ran(u32),
    /// The result was stored already: acked without running.
    AlreadyDone,
    /// The end record was stored but not the result: the result was
    /// rebuilt from it, without running.
    Recovered,
    /// The run was withdrawn by its front end before a worker took it:
    /// acked without running, its result stored.
    Withdrawn,
    /// Another worker holds the run and is alive: left for later.
    HeldElsewhere,
    /// The run lost its claim to another worker (this one was thought
    /// dead): stopped, nothing acked.
    LostClaim,
    /// Not a job: given up (terminated).
    Rejected(String),
    /// NATS failed before the end was durable: left for redelivery.
    Retry(String),
}

impl Worker {
    /// A worker on `js` (streams created if missing).
    pub async fn new(
        js: jetstream::Context,
        runtime: Arc<Runtime>,
        resolver: Arc<dyn Resolve>,
        config: WorkerConfig,
        limits: &StreamLimits,
    ) -> Result<Self, String> {
        ensure_streams(&js, limits).await?;
        let claims = Claims::open(&js).await?;
        Ok(Worker {
            js,
            runtime,
            resolver,
            config,
            claims,
        })
    }

    async fn consumer(&self) -> Result<consumer::PullConsumer, String> {
        let stream = self
            .js
            .get_stream(QUEUE_STREAM)
            .await
            .map_err(|e| format!("no stream {QUEUE_STREAM}: {e}"))?;
        stream
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_deliver: self.config.max_deliver,
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("cannot create or find the consumer {CONSUMER}: {e}"))
    }

    /// Take jobs until `stop` resolves, then finish the runs in hand. A
    /// job is fetched only when a run slot is free, so a saturated pool
    /// leaves jobs in the queue for other workers.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) -> Result<(), String> {
        let this = Arc::new(self);
        let slots = Arc::new(tokio::sync::Semaphore::new(this.config.concurrency.max(1)));
        let mut consumer = None;
        let mut pause = Duration::from_millis(100);
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                _ = &mut stop => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            if consumer.is_none() {
                match this.consumer().await {
                    Ok(c) => consumer = Some(c),
                    Err(error) => {
                        tracing::warn!("{error}; retrying in {pause:?}");
                        drop(permit);
                        tokio::select! {
                            _ = &mut stop => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let Some(pull) = consumer.as_ref() else {
                continue;
            };
            let fetched = pull
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match fetched {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!("fetching a job failed: {error}; retrying in {pause:?}");
                    drop(permit);
                    consumer = None;
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            use futures_util::StreamExt as _;
            let next = tokio::select! {
                _ = &mut stop => break,
                next = batch.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    pause = Duration::from_millis(100);
                    let this = this.clone();
                    tokio::spawn(async move {
                        let handled = this.handle(message).await;
                        tracing::debug!("job handled: {handled:?}");
                        drop(permit);
                    });
                }
                Some(Err(error)) => {
                    tracing::debug!("no job fetched: {error}");
                    drop(permit);
                }
                None => drop(permit),
            }
        }
        // Let the runs in hand finish (their jobs are acked as usual).
        let _ = slots
            .acquire_many(this.config.concurrency.max(1) as u32)
            .await;
        Ok(())
    }

    /// Handle one delivered job to the end: run it (or recognise it as
    /// done), make its end durable, and ack it.
    pub async fn handle(&self, message: jetstream::Message) -> Handled {
        let job: QueuedJob = match serde_json::from_slice(&message.payload) {
            Ok(job) => job,
            Err(error) => {
                let reason = format!("the job is not a warden job: {error}");
                tracing::warn!("{reason}");
                let _ = message.ack_with(jetstream::AckKind::Term).await;
                return Handled::Rejected(reason);
            }
        };
        if let Err(reason) = check_run_id(&job.run_id) {
            let _ = message.ack_with(jetstream::AckKind::Term).await;
            return Handled::Rejected(reason);
        }
        let handled = self.handle_job(&job, &message).await;
        match &handled {
            Handled::Ran(_) | Handled::AlreadyDone | Handled::Recovered | Handled::Withdrawn => {
                // The result is stored: a lost ack only means one more
                // delivery, which finds it.
                if let Err(error) = message.double_ack().await {
                    tracing::warn!("ack of {} failed: {error}", job.run_id);
                }
            }
            Handled::HeldElsewhere => {
                let _ = message
                    .ack_with(jetstream::AckKind::Nak(Some(self.config.ack_wait / 2)))
                    .await;
            }
            Handled::Retry(_) => {
                let _ = message
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
            Handled::LostClaim | Handled::Rejected(_) => {}
        }
        handled
    }

    async fn handle_job(&self, job: &QueuedJob, message: &jetstream::Message) -> Handled {
        let run_id = job.run_id.as_str();
        match stored_result(&self.js, run_id).await {
            Ok(Some(_)) => return Handled::AlreadyDone,
            Ok(None) => {}
            Err(error) => return Handled::Retry(error),
        }
        let previous = match last_audit_record(&self.js, run_id).await {
            Ok(previous) => previous,
            Err(error) => return Handled::Retry(error),
        };
        if let Some(last) = &previous
            && is_end(&last.record)
        {
            // The run ended and its end record is durable; its worker
            // died before the result. Rebuild it: never run again.
            let result = result_from_end(run_id, job.enqueued_us, &last.record, &last.line);
            return match publish_result(&self.js, &result, self.config.publish_deadline).await {
                Ok(()) => Handled::Recovered,
                Err(error) => Handled::Retry(error),
            };
        }
        let started_us = now_us();
        let claim = match self
            .claims
            .take(run_id, &self.config.name, self.config.ack_wait)
            .await
        {
            Ok(Taken::Mine(claim)) => claim,
            Ok(Taken::Alive) => return Handled::HeldElsewhere,
            Ok(Taken::Withdrawn(withdrawal)) => {
                // Its front end may have died before storing the result.
                let stored = async {
                    let result =
                        end_withdrawn(&self.js, run_id, job.enqueued_us, &withdrawal).await?;
                    publish_result(&self.js, &result, self.config.publish_deadline).await
                };
                return match stored.await {
                    Ok(()) => Handled::Withdrawn,
                    Err(error) => Handled::Retry(error),
                };
            }
            Err(error) => return Handled::Retry(error),
        };
        self.run_claimed(job, message, claim, previous, started_us)
            .await
    }

    async fn run_claimed(
        &self,
        job: &QueuedJob,
        message: &jetstream::Message,
        mut claim: Claim,
        previous: Option<LastRecord>,
        started_us: u64,
    ) -> Handled {
        let run_id = job.run_id.as_str();
        let attempt = claim.attempt;
        // Held from the claim until the result: no heartbeat gap while
        // the local copy is written, the run resolved, or its records
        // drained (a claim gone stale there could be withdrawn or taken
        // over while this attempt still runs).
        let body = self.attempt(job, attempt, claim.previous_worker.clone(), previous);
        let attempted = match self.beating(body, message, &mut claim).await {
            None => return Handled::LostClaim,
            Some(Err(handled)) => return handled,
            Some(Ok(attempted)) => attempted,
        };
        let Attempted {
            answer,
            error,
            cancelled,
            summary,
            pumped,
        } = attempted;
        // Only the claim's holder publishes: a worker thought dead that
        // comes back finds its claim taken and stops here.
        if let Err(error) = self.claims.beat(&mut claim).await {
            return if error == claim::LOST {
                Handled::LostClaim
            } else {
                Handled::Retry(error)
            };
        }
        let result = RunResult {
            run_id: run_id.to_string(),
            answer,
            error,
            attempt,
            worker: self.config.name.clone(),
            audit_head: pumped.head,
            audit_records: pumped.last_seq,
            enqueued_us: job.enqueued_us,
            started_us,
            ended_us: now_us(),
            recovered: false,
            cancelled,
            summary,
        };
        match publish_result(&self.js, &result, self.config.publish_deadline).await {
            Ok(()) => Handled::Ran(attempt),
            Err(error) => Handled::Retry(error),
        }
    }

    /// One attempt of the run, from its first record to its last acked by
    /// JetStream; `Err` is how the job is handled instead.
    async fn attempt(
        &self,
        job: &QueuedJob,
        attempt: u32,
        previous_worker: Option<String>,
        previous: Option<LastRecord>,
    ) -> Result<Attempted, Handled> {
        let run_id = job.run_id.as_str();
        let (head, seq, subject_seq) = match &previous {
            Some(last) => (line_hash(&last.line), last.record.seq, last.stream_seq),
            None => (GENESIS.to_string(), 0, 0),
        };
        let (audit_sink, pump) = sink::NatsSink::start(
            self.js.clone(),
            audit_subject(run_id),
            subject_seq,
            sink::SinkLimits {
                max_in_flight: self.config.max_audit_in_flight,
                publish_deadline: self.config.publish_deadline,
            },
        );
        let mut audit = AuditLog::new(run_id)
            .with_head(&head)
            .with_seq(seq)
            .with_sink(audit_sink);
        if let Some(dir) = &self.config.audit_dir {
            match self.local_copy(dir, run_id, previous.is_some()).await {
                Ok(file) => audit = audit.with_sink(file),
                Err(error) => {
                    return Err(Handled::Retry(format!(
                        "the local audit copy in {} cannot be written: {error}",
                        dir.display()
                    )));
                }
            }
        }
        if let Some(last) = &previous {
            // Mark what the dead attempt left: its records stay, and this
            // record, chained after its last, says they are abandoned.
            let marked = audit.write(Entry {
                kind: Kind::Run,
                event: Event::Outcome,
                subject: "attempt".into(),
                decision: Verdict::Allow,
                rule: ABANDONED_RULE.into(),
                detail: format!(
                    "attempt {} ended without an end record after record {}; attempt {attempt} starts",
                    attempt.saturating_sub(1),
                    last.record.seq
                ),
                outcome: Some(Outcome::Failed),
                data: Some(serde_json::json!({
                    "abandoned": {
                        "attempt": attempt.saturating_sub(1),
                        "last_seq": last.record.seq,
                        "worker": previous_worker,
                    },
                    "attempt": attempt,
                    "worker": self.config.name,
                })),
            });
            if let Err(error) = marked {
                return Err(Handled::Retry(error.to_string()));
            }
        }
        let approver: Arc<dyn Approver> = Arc::new(approve::NatsApprover::new(
            self.js.client(),
            run_id,
            self.config.approval_timeout,
        ));
        // A job whose earlier attempts all died is not run again: it may
        // be what kills them.
        let gave_up = attempt > self.config.max_attempts;
        let refused = if gave_up {
            Err(format!(
                "gave up: {} attempts ended without an end record (each worker died or lost \
                 the job mid-run), the most `--max-attempts` allows; the job is not run again",
                attempt - 1
            ))
        } else {
            self.resolver.resolve(job, approver)
        };
        let outcome = match refused {
            Ok(spec) => Ok(self.run_cancellable(spec, audit, run_id).await),
            Err(reason) => Err((reason, audit)),
        };
        let mut cancelled = false;
        let mut summary = None;
        let (answer, error) = match outcome {
            Ok(Ok(report)) => {
                summary = Some(report.summary());
                match report.result {
                    Ok(answer) => (Some(answer), None),
                    Err(failure) => {
                        cancelled = matches!(failure, crate::run::RunFailure::Cancelled(_));
                        (None, Some(failure.to_string()))
                    }
                }
            }
            Ok(Err(error)) => {
                if let crate::run::RunError::Policy(error) = &error {
                    tracing::warn!(run = %run_id, "a run's policy could not be loaded:\n{error}");
                }
                (None, Some(error.for_client()))
            }
            Err((reason, audit)) => {
                // The request could not become a run, or was given up:
                // record why, so the run's stream says it ended.
                let (rule, outcome) = if gave_up {
                    (GAVE_UP_RULE, Outcome::Failed)
                } else {
                    ("worker.resolve", Outcome::Invalid)
                };
                let ended = audit.write(Entry {
                    kind: Kind::Run,
                    event: Event::Outcome,
                    subject: "job".into(),
                    decision: Verdict::Deny,
                    rule: rule.into(),
                    detail: reason.clone(),
                    outcome: Some(outcome),
                    data: Some(serde_json::json!({ "error": reason, "attempt": attempt })),
                });
                drop(audit);
                if let Err(error) = ended {
                    return Err(Handled::Retry(error.to_string()));
                }
                (None, Some(reason))
            }
        };
        // Every record acked by JetStream (the log and its sink were
        // dropped with the run, closing the pump's channel).
        let pumped = match pump.await {
            Ok(Ok(pumped)) => pumped,
            Ok(Err(error)) => return Err(Handled::Retry(error)),
            Err(error) => return Err(Handled::Retry(error.to_string())),
        };
        Ok(Attempted {
            answer,
            error,
            cancelled,
            summary,
            pumped,
        })
    }

    /// Run `spec` until it ends or is cancelled on its cancel subject.
    async fn run_cancellable(
        &self,
        spec: RunSpec,
        audit: AuditLog,
        run_id: &str,
    ) -> Result<crate::run::RunReport, crate::run::RunError> {
        // Subscribed before the run starts, so a cancel sent from now on
        // stops it (one sent earlier is sent again by the front end).
        let cancel = match self.js.client().subscribe(cancel_subject(run_id)).await {
            Ok(subscription) => Some(subscription),
            Err(error) => {
                tracing::warn!("cannot listen for cancels of {run_id}: {error}");
                None
            }
        };
        let client = self.js.client();
        let cancelled = async move {
            use futures_util::StreamExt as _;
            let Some(mut cancel) = cancel else {
                return std::future::pending().await;
            };
            match cancel.next().await {
                Some(message) => {
                    if let Some(reply) = message.reply {
                        let _ = client
                            .publish(reply, Bytes::from_static(b"cancelling"))
                            .await;
                    }
                    let reason = String::from_utf8_lossy(&message.payload);
                    let reason = crate::transcript::clean(&crate::capability::brief(
                        &reason,
                        MAX_CANCEL_REASON,
                    ));
                    if reason.is_empty() {
                        "cancelled".to_string()
                    } else {
                        reason
                    }
                }
                None => std::future::pending().await,
            }
        };
        run_until(&self.runtime, spec, audit, cancelled).await
    }

    /// `work`, with a heartbeat (in-progress ack, claim renewal) every
    /// third of the ack wait; `None`, with `work` dropped, when the claim
    /// was taken, or when it could not be renewed for half the ack wait:
    /// this worker stops on its own clock before the claim is stale to
    /// anyone else, so a run withdrawn or taken over as a dead worker's
    /// is not still running here.
    async fn beating<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        message: &jetstream::Message,
        claim: &mut Claim,
    ) -> Option<T> {
        tokio::pin!(work);
        let every = (self.config.ack_wait / 3).max(Duration::from_millis(100));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                _ = beat.tick() => {
                    let _ = message.ack_with(jetstream::AckKind::Progress).await;
                    // A renewal counts from when it was sent, and is not
                    // waited for past the lease's half.
                    let sent = tokio::time::Instant::now();
                    let lease_half = renewed + self.config.ack_wait / 2;
                    let renewal = tokio::time::timeout_at(lease_half, self.claims.beat(claim)).await;
                    match renewal {
                        Ok(Ok(())) => renewed = sent,
                        Ok(Err(error)) if error == claim::LOST => return None,
                        Ok(Err(error)) => tracing::warn!("heartbeat of {}: {error}", claim.run_id),
                        Err(_) => tracing::warn!("heartbeat of {}: no answer", claim.run_id),
                    }
                    if renewed.elapsed() >= self.config.ack_wait / 2 {
                        tracing::warn!(
                            "{}: the claim was not renewed for {:?}; stopping the run before another worker may take it",
                            claim.run_id,
                            renewed.elapsed()
                        );
                        return None;
                    }
                }
            }
        }
    }

    /// `DIR/<run>.jsonl`, holding the run's earlier attempts' records
    /// first when there were any, so the local copy verifies on its own.
    async fn local_copy(
        &self,
        dir: &std::path::Path,
        run_id: &str,
        resumed: bool,
    ) -> Result<JsonlFile, String> {
        let path = dir.join(format!("{run_id}.jsonl"));
        let mut text = Vec::new();
        if resumed {
            for line in read_audit(&self.js, run_id, 1_000_000).await? {
                text.extend_from_slice(&line);
                text.push(b'\n');
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        std::fs::write(&path, &text).map_err(|e| e.to_string())?;
        JsonlFile::open(&path).map_err(|e| e.to_string())
    }
}

/// What an attempt came to, its records all stored.
struct Attempted {
    answer: Option<String>,
    error: Option<String>,
    cancelled: bool,
    summary: Option<serde_json::Value>,
    pumped: sink::Pumped,
}

/// The last record of a run in the stream.
struct LastRecord {
    record: Record,
    line: Bytes,
    stream_seq: u64,
}

async fn last_audit_record(
    js: &jetstream::Context,
    run_id: &str,
) -> Result<Option<LastRecord>, String> {
    let stream = js
        .get_stream_no_info(EVENTS_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    match stream
        .get_last_raw_message_by_subject(&audit_subject(run_id))
        .await
    {
        Ok(message) => {
            let record: Record = serde_json::from_slice(&message.payload).map_err(|e| {
                format!(
                    "the last audit record of {run_id} (stream sequence {}) is not a record: {e}",
                    message.sequence
                )
            })?;
            Ok(Some(LastRecord {
                record,
                line: message.payload,
                stream_seq: message.sequence,
            }))
        }
        Err(error) if is_not_found(&error.to_string()) => Ok(None),
        Err(error) => Err(error.to_string()),
    }
}

/// Whether `record` is a run's end record (not the mark a resumed attempt
/// leaves).
fn is_end(record: &Record) -> bool {
    record.kind == Kind::Run && record.event == Event::Outcome && record.rule != ABANDONED_RULE
}

fn result_from_end(run_id: &str, enqueued_us: u64, end: &Record, line: &[u8]) -> RunResult {
    let field = |name: &str| {
        end.data
            .as_ref()
            .and_then(|d| d.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let answer = if end.outcome == Some(Outcome::Ok) {
        field("answer")
    } else {
        None
    };
    let error = match &answer {
        Some(_) => None,
        None => Some(field("error").unwrap_or_else(|| end.detail.clone())),
    };
    RunResult {
        run_id: run_id.to_string(),
        answer,
        error,
        attempt: 0,
        worker: String::new(),
        audit_head: line_hash(line),
        audit_records: end.seq,
        enqueued_us,
        started_us: 0,
        ended_us: now_us(),
        recovered: true,
        cancelled: end
            .data
            .as_ref()
            .is_some_and(|d| d.get("cancelled").is_some()),
        summary: None,
    }
}

/// Publish `result` on its subject unless one is there: the subject must
/// be empty (expected last sequence 0), so a run has one result however
/// many workers race to give it, and a retry whose first publish was
/// stored finds it there.
async fn publish_result(
    js: &jetstream::Context,
    result: &RunResult,
    deadline: Duration,
) -> Result<(), String> {
    let payload: Bytes = serde_json::to_vec(result)
        .map_err(|e| e.to_string())?
        .into();
    let published = sink::publish_retrying(
        js,
        &result_subject(&result.run_id),
        None,
        payload,
        Some(0),
        deadline,
    )
    .await;
    match published {
        Ok(_) => Ok(()),
        Err(error) => match stored_result(js, &result.run_id).await {
            Ok(Some(_)) => Ok(()),
            _ => Err(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_subject_tokens() {
        assert!(check_run_id("r-0123456789abcdef").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "../x", &"x".repeat(65)] {
            assert!(check_run_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_result_is_rebuilt_from_an_end_record() {
        let job = QueuedJob {
            run_id: "r-1".into(),
            enqueued_us: 5,
            request: RunRequest {
                agent: "builtin:react".into(),
                policy: "p".into(),
                task: "t".into(),
                model: None,
                run_id: None,
                approve: Vec::new(),
                approve_from: Vec::new(),
            },
        };
        let end = Record {
            seq: 9,
            prev: GENESIS.into(),
            ts: String::new(),
            run: "r-1".into(),
            kind: Kind::Run,
            event: Event::Outcome,
            subject: "react".into(),
            decision: Verdict::Allow,
            rule: "policy".into(),
            detail: "42".into(),
            outcome: Some(Outcome::Ok),
            data: Some(serde_json::json!({ "answer": "42" })),
        };
        let result = result_from_end(&job.run_id, job.enqueued_us, &end, b"line");
        assert_eq!(result.answer.as_deref(), Some("42"));
        assert_eq!(result.audit_records, 9);
        assert!(result.recovered);
    }
}
