//! An audit sink that publishes each record to the run's JetStream
//! subject, in order, each publish acked before the next. The gate writes
//! records synchronously; a pump task publishes them. A record JetStream
//! will not take (NATS down past the deadline, a zombie attempt whose
//! expected subject sequence no longer holds) fails the sink, and the next
//! record the gate writes fails with it: the run stops, as it does when a
//! file cannot be written. Bytes waiting for JetStream are counted against
//! a limit.

use crate::audit::{AuditSink, Record, line_hash};
use async_nats::jetstream;
use bytes::Bytes;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bounds of one run's sink.
#[derive(Debug, Clone, Copy)]
pub struct SinkLimits {
    /// Most bytes written by the gate and not yet acked by JetStream.
    pub max_in_flight: u64,
    /// How long one publish keeps retrying.
    pub publish_deadline: Duration,
}

/// What the pump published.
#[derive(Debug, Clone)]
pub struct Pumped {
    /// The `seq` of the last record acked.
    pub last_seq: u64,
    /// The hash of the last record acked.
    pub head: String,
}

/// The sink half: lives in the run's [`crate::audit::AuditLog`].
pub struct NatsSink {
    send: mpsc::UnboundedSender<(u64, Bytes)>,
    in_flight: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
    limits: SinkLimits,
}

impl NatsSink {
    /// A sink publishing to `subject`, whose last message has stream
    /// sequence `after` (0: none yet), and its [`Pump`]: it ends, with
    /// what it published, once the sink is dropped and every record is
    /// acked.
    pub fn start(
        js: jetstream::Context,
        subject: String,
        after: u64,
        limits: SinkLimits,
    ) -> (NatsSink, Pump) {
        let (send, mut receive) = mpsc::unbounded_channel::<(u64, Bytes)>();
        let in_flight = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(None::<String>));
        let sink = NatsSink {
            send,
            in_flight: in_flight.clone(),
            failed: failed.clone(),
            limits,
        };
        let pump = tokio::spawn(async move {
            let mut expected = after;
            let mut pumped = Pumped {
                last_seq: 0,
                head: String::new(),
            };
            while let Some((seq, line)) = receive.recv().await {
                let size = line.len() as u64;
                // The id names the record's bytes, not only its place: a
                // retry of this very record is stored once, but another
                // record for the same place (a withdrawal's end record, a
                // newer attempt's) is not taken for it, and meets the
                // expected-sequence check (which JetStream applies after
                // its duplicate check).
                let hash = line_hash(&line);
                let id = format!("{subject}.{seq}.{}", &hash[..16]);
                let published = publish_retrying(
                    &js,
                    &subject,
                    Some(id),
                    line.clone(),
                    Some(expected),
                    limits.publish_deadline,
                )
                .await;
                in_flight.fetch_sub(size, Ordering::Relaxed);
                match published {
                    Ok(sequence) => {
                        expected = sequence;
                        pumped.last_seq = seq;
                        pumped.head = hash;
                    }
                    Err(error) => {
                        let error = format!("record {seq} was not stored on {subject}: {error}");
                        if let Ok(mut failed) = failed.lock() {
                            *failed = Some(error.clone());
                        }
                        return Err(error);
                    }
                }
            }
            Ok(pumped)
        });
        (sink, Pump(pump))
    }
}

/// The pump of a [`NatsSink`]: awaited, what it published once every
/// record is acked; dropped, the pump stops (an attempt dropped mid-run,
/// its claim lost, publishes nothing more).
pub struct Pump(JoinHandle<Result<Pumped, String>>);

impl std::future::Future for Pump {
    type Output = Result<Result<Pumped, String>, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(context)
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AuditSink for NatsSink {
    fn write(&mut self, record: &Record) -> io::Result<()> {
        let line = serde_json::to_vec(record)?;
        self.write_line(record, &line)
    }

    fn write_line(&mut self, record: &Record, line: &[u8]) -> io::Result<()> {
        if let Ok(failed) = self.failed.lock()
            && let Some(error) = failed.as_ref()
        {
            return Err(io::Error::other(error.clone()));
        }
        let size = line.len() as u64;
        let waiting = self.in_flight.fetch_add(size, Ordering::Relaxed) + size;
        if waiting > self.limits.max_in_flight {
            self.in_flight.fetch_sub(size, Ordering::Relaxed);
            return Err(io::Error::other(format!(
                "{waiting} bytes of audit records are waiting for JetStream (limit {}): NATS is not taking records",
                self.limits.max_in_flight
            )));
        }
        self.send
            .send((record.seq, Bytes::copy_from_slice(line)))
            .map_err(|_| io::Error::other("the audit publisher stopped"))
    }
}

/// Publish `payload` on `subject` with message id `id` (when given: a
/// retry of a stored publish is then a no-op) and, when given,
/// the subject's expected last sequence, and wait for JetStream's ack;
/// retried with backoff until `deadline` while NATS is unreachable.
/// Returns the stream sequence it was stored at.
pub async fn publish_retrying(
    js: &jetstream::Context,
    subject: &str,
    id: Option<String>,
    payload: Bytes,
    expected_last: Option<u64>,
    deadline: Duration,
) -> Result<u64, String> {
    let until = tokio::time::Instant::now() + deadline;
    let mut pause = Duration::from_millis(50);
    loop {
        let mut publish = jetstream::message::PublishMessage::build().payload(payload.clone());
        if let Some(id) = &id {
            publish = publish.message_id(id);
        }
        if let Some(expected) = expected_last {
            publish = publish.expected_last_subject_sequence(expected);
        }
        let attempt = async {
            let ack = js
                .send_publish(subject.to_string(), publish)
                .await
                .map_err(|e| (true, e.to_string()))?;
            ack.await.map_err(|e| {
                let text = e.to_string();
                // A wrong expected sequence is an answer, not an outage.
                let transient = !text.contains("wrong last sequence")
                    && !text.contains("maximum")
                    && !text.contains("10071");
                (transient, text)
            })
        };
        match attempt.await {
            Ok(ack) => return Ok(ack.sequence),
            Err((false, error)) => return Err(error),
            Err((true, error)) => {
                if tokio::time::Instant::now() + pause > until {
                    return Err(format!("JetStream unreachable for {deadline:?}: {error}"));
                }
                tracing::debug!("publish to {subject} failed ({error}); retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}
