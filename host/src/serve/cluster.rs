//! `warden serve --nats URL`: the front end of a cluster. A submitted run
//! is not run here: it is put on the JetStream work queue
//! ([`crate::worker::submit`]) and a `warden worker` runs it. The front
//! end follows each of its runs to the end:
//!
//! - its audit records, read from the run's subject in JetStream in order,
//!   are appended to the run's local audit file, so `GET /runs/{id}/events`,
//!   `/audit` and `/audit/verify` serve them exactly as for a local run;
//! - its asks, NATS requests on the run's approve subject, are put on this
//!   process's approvals desk (the page, `GET /approvals`) for the run's
//!   owner, and the answer goes back as the reply;
//! - `POST /runs/{id}/cancel` is sent to the worker on the run's cancel
//!   subject, again every half second until the run ends (a run still
//!   queued is cancelled within half a second of a worker starting it);
//! - its result ends the entry (status, answer or error, summary, head).
//!
//! Records and the result come from two ordered consumers on the events
//! stream (one per subject: NATS 2.9 takes one filter per consumer). A
//! worker publishes the result only after every record is stored, so the
//! run is over here once the result has come and the record it names as
//! the last (`audit_records`) is copied.

use super::runs::RunEntry;
use super::{Release, ServeState};
use crate::gate::{Approver, Reply};
use crate::job::RunRequest;
use crate::worker::{self, QueuedJob, RunResult, SubmitError, approve};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// Longest audit record mirrored (a larger one is a bus fault: logged and
/// the following stops, the run failed here).
pub const MAX_RECORD: usize = 8 << 20;

/// How often a cancel is sent again until a worker takes it.
const CANCEL_EVERY: Duration = Duration::from_millis(500);

/// The cluster a front end submits to.
#[derive(Clone)]
pub struct Cluster {
    /// JetStream on the cluster's NATS.
    pub js: jetstream::Context,
}

/// The asks of a run, subscribed to before it is queued (so its first ask
/// finds a responder).
pub struct Asks(async_nats::Subscriber);

/// Put `request` on the queue as run `run_id`; returns once JetStream
/// stored it, with the run's asks to relay.
pub async fn enqueue(
    cluster: &Cluster,
    run_id: &str,
    request: RunRequest,
) -> Result<Asks, SubmitError> {
    let client = cluster.js.client();
    let asks = client
        .subscribe(worker::approve_subject(run_id))
        .await
        .map_err(|e| SubmitError::Nats(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| SubmitError::Nats(e.to_string()))?;
    let job = QueuedJob {
        run_id: run_id.to_string(),
        enqueued_us: worker::now_us(),
        request,
    };
    worker::submit(&cluster.js, &job).await?;
    Ok(Asks(asks))
}

/// Follow the queued run `entry` to its end (see the module doc), then
/// give its slot back.
pub async fn follow(
    state: Arc<ServeState>,
    cluster: Cluster,
    entry: Arc<RunEntry>,
    asks: Asks,
    approver: Option<Arc<dyn Approver>>,
) {
    let release = Release {
        state: state.clone(),
        entry: entry.clone(),
    };
    let relay = approver.map(|approver| {
        tokio::spawn(relay_asks(
            cluster.js.client(),
            entry.id.clone(),
            asks,
            approver,
        ))
    });
    match mirror(&cluster, &entry).await {
        Ok(result) => entry.finish_queued(&result),
        Err(error) => {
            tracing::warn!(run = %entry.id, "following a queued run failed: {error}");
            entry.fail(format!(
                "the front end lost the run: {error} (its records and result stay in JetStream under warden.runs.{}.*)",
                entry.id
            ));
        }
    }
    if let Some(relay) = relay {
        relay.abort();
    }
    drop(release);
}

/// Append the run's records to its audit file as they arrive, forward a
/// cancel, and return its result.
async fn mirror(cluster: &Cluster, entry: &RunEntry) -> Result<RunResult, String> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&entry.audit_path)
        .await
        .map_err(|e| format!("the audit file cannot be opened: {e}"))?;
    let stream = cluster
        .js
        .get_stream_no_info(worker::EVENTS_STREAM)
        .await
        .map_err(|e| format!("no stream {}: {e}", worker::EVENTS_STREAM))?;
    let client = cluster.js.client();
    let audit_subject = worker::audit_subject(&entry.id);
    let result_subject = worker::result_subject(&entry.id);
    let mut records = follow_subject(&stream, &client, &audit_subject).await?;
    let mut results = follow_subject(&stream, &client, &result_subject).await?;
    let cancelled = entry.cancelled();
    tokio::pin!(cancelled);
    let mut seen_cancel = false;
    // The reason of a cancel asked for: sent until the run ends.
    let mut cancel: Option<String> = None;
    let mut resend = tokio::time::interval(CANCEL_EVERY);
    // The seq of the last record copied, and the result once read: the
    // run is over when both say the same record.
    let mut last_seq = 0u64;
    let mut result: Option<RunResult> = None;
    loop {
        if let Some(done) = &result
            && last_seq >= done.audit_records
        {
            file.flush().await.map_err(|e| e.to_string())?;
            return Ok(done.clone());
        }
        tokio::select! {
            next = records.next() => {
                let Some(line) = delivered(next, &audit_subject)? else {
                    // A passing fault: not a busy loop if it lasts.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if line.len() > MAX_RECORD || line.contains(&b'\n') {
                    return Err(format!(
                        "a record on {audit_subject} is not one JSON line of at most {MAX_RECORD} bytes"
                    ));
                }
                let seq = serde_json::from_slice::<Seq>(&line)
                    .map_err(|e| format!("a record on {audit_subject} is not a record: {e}"))?
                    .seq;
                let mut text = Vec::with_capacity(line.len() + 1);
                text.extend_from_slice(&line);
                text.push(b'\n');
                // Flushed before readers are told, so they find it there.
                file.write_all(&text)
                    .await
                    .map_err(|e| format!("the audit file cannot be written: {e}"))?;
                file.flush()
                    .await
                    .map_err(|e| format!("the audit file cannot be written: {e}"))?;
                last_seq = seq;
                entry.set_running();
                entry.record_written();
            }
            next = results.next(), if result.is_none() => {
                let Some(payload) = delivered(next, &result_subject)? else {
                    // A passing fault: not a busy loop if it lasts.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                result = Some(serde_json::from_slice(&payload).map_err(|e| {
                    format!("the result on {result_subject} is not a result: {e}")
                })?);
            }
            reason = &mut cancelled, if !seen_cancel => {
                seen_cancel = true;
                cancel = Some(reason);
                resend.reset_immediately();
            }
            _ = resend.tick(), if cancel.is_some() => {
                let reason = cancel.clone().unwrap_or_default();
                // Sent again until the result comes, even once a worker
                // took it: that worker may die before its end record, and
                // the next attempt must be cancelled too.
                let _ = tokio::time::timeout(
                    CANCEL_EVERY,
                    client.request(worker::cancel_subject(&entry.id), reason.into_bytes().into()),
                )
                .await;
            }
        }
    }
}

/// Only the `seq` of a record.
#[derive(serde::Deserialize)]
struct Seq {
    seq: u64,
}

type Messages = consumer::push::Ordered;

/// Every message on `subject` of `stream` from the first, in order.
async fn follow_subject(
    stream: &jetstream::stream::Stream<()>,
    client: &async_nats::Client,
    subject: &str,
) -> Result<Messages, String> {
    stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: subject.to_string(),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot follow {subject}: {e}"))?
        .messages()
        .await
        .map_err(|e| format!("cannot follow {subject}: {e}"))
}

/// The payload of the next message on `subject`; `None` for a passing
/// fault (the ordered consumer recreates itself).
fn delivered(
    next: Option<Result<jetstream::Message, consumer::push::OrderedError>>,
    subject: &str,
) -> Result<Option<bytes::Bytes>, String> {
    match next {
        Some(Ok(message)) => Ok(Some(message.payload.clone())),
        Some(Err(error)) => {
            tracing::debug!("following {subject}: {error}");
            Ok(None)
        }
        None => Err(format!("{subject} stopped")),
    }
}

/// Put each ask of run `run_id` on the desk through `approver`, and reply
/// with the answer (or with why nobody answered).
async fn relay_asks(
    client: async_nats::Client,
    run_id: String,
    Asks(mut asks): Asks,
    approver: Arc<dyn Approver>,
) {
    // Aborted with this task (the run ended): an ask still on the desk is
    // withdrawn then.
    let mut waiting = tokio::task::JoinSet::new();
    loop {
        let ask = tokio::select! {
            ask = asks.next() => match ask {
                Some(ask) => ask,
                None => return,
            },
            Some(_) = waiting.join_next(), if !waiting.is_empty() => continue,
        };
        let Some(reply_to) = ask.reply.clone() else {
            continue;
        };
        let client = client.clone();
        let approver = approver.clone();
        let run_id = run_id.clone();
        // Each ask waits on its own: the desk bounds how many wait.
        waiting.spawn(async move {
            let reply = match approve::question_from_relay(&run_id, &ask.payload) {
                Ok(question) => {
                    let wait = question.timeout;
                    match tokio::time::timeout(wait, approver.ask(question)).await {
                        Ok(reply) => reply,
                        Err(_) => Reply::Unanswered {
                            why: Some(format!("nobody answered on the approvals page within {wait:?}")),
                        },
                    }
                }
                Err(error) => {
                    tracing::warn!(run = %run_id, "an ask on the approve subject was refused: {error}");
                    Reply::Unanswered {
                        why: Some("the front end could not read the question".into()),
                    }
                }
            };
            let answer = approve::Answer::of(&reply);
            if let Ok(payload) = serde_json::to_vec(&answer) {
                let _ = client.publish(reply_to, payload.into()).await;
            }
        });
    }
}
