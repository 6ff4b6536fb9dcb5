//! Run claims: which worker holds a run, one message per run on
//! `warden.claims.<id>` in the claims stream (a key-value store: one
//! message kept per subject), every write a compare-and-set on the
//! subject's last sequence, so JetStream decides every race. A claim not renewed for an
//! ack wait belongs to a dead worker and may be taken over; a holder whose
//! renewal fails has lost it and must stop.

use super::{CLAIMS_STREAM, now_us};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The error [`Claims::beat`] gives when another worker took the claim.
pub const LOST: &str = "the claim was taken by another worker";

/// What the bucket stores per run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    worker: String,
    attempt: u32,
    /// The holder's clock at its last heartbeat (µs since the epoch).
    heartbeat_us: u64,
}

/// A claim this worker holds.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The run.
    pub run_id: String,
    /// Which attempt of the run this is (1 for the first).
    pub attempt: u32,
    /// Who held it before (a takeover), for the abandoned record.
    pub previous_worker: Option<String>,
    worker: String,
    revision: u64,
}

/// The result of trying to claim a run.
#[derive(Debug)]
pub enum Taken {
    /// This worker holds it now.
    Mine(Claim),
    /// A live worker holds it.
    Alive,
}

/// The claims bucket.
pub struct Claims {
    js: jetstream::Context,
    stream: stream::Stream<()>,
}

/// The subject of a run's claim.
pub fn claim_subject(run_id: &str) -> String {
    format!("warden.claims.{run_id}")
}

/// Why a compare-and-set failed.
enum Cas {
    /// Another write came first.
    Lost,
    /// JetStream did not answer.
    Failed(String),
}

impl Claims {
    /// Open the claims stream ([`super::ensure_streams`] creates it).
    pub async fn open(js: &jetstream::Context) -> Result<Self, String> {
        let stream = js
            .get_stream_no_info(CLAIMS_STREAM)
            .await
            .map_err(|e| format!("no stream {CLAIMS_STREAM}: {e}"))?;
        Ok(Claims {
            js: js.clone(),
            stream,
        })
    }

    /// Write `stored` as the claim of `run_id` if the subject's last
    /// message is still at `expected` (0: there is none); the new
    /// revision.
    async fn write(&self, run_id: &str, stored: &Stored, expected: u64) -> Result<u64, Cas> {
        let publish = PublishMessage::build()
            .payload(encode(stored).map_err(Cas::Failed)?)
            .expected_last_subject_sequence(expected);
        let ack = self
            .js
            .send_publish(claim_subject(run_id), publish)
            .await
            .map_err(|e| Cas::Failed(e.to_string()))?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(error) => {
                let text = error.to_string();
                if text.contains("wrong last sequence") || text.contains("10071") {
                    Err(Cas::Lost)
                } else {
                    Err(Cas::Failed(text))
                }
            }
        }
    }

    /// The claim of `run_id` and its revision, if any.
    async fn read(&self, run_id: &str) -> Result<Option<(Stored, u64)>, String> {
        match self
            .stream
            .get_last_raw_message_by_subject(&claim_subject(run_id))
            .await
        {
            Ok(message) => serde_json::from_slice(&message.payload)
                .map(|stored| Some((stored, message.sequence)))
                .map_err(|e| format!("the claim of {run_id} is not a claim: {e}")),
            Err(error) if super::is_not_found(&error.to_string()) => Ok(None),
            Err(error) => Err(format!("reading the claim of {run_id}: {error}")),
        }
    }

    /// Claim `run_id` for `worker`: a new claim, or a takeover of one whose
    /// holder has not renewed it for `stale_after`.
    pub async fn take(
        &self,
        run_id: &str,
        worker: &str,
        stale_after: Duration,
    ) -> Result<Taken, String> {
        let (attempt, expected, previous_worker) = match self.read(run_id).await? {
            None => (1, 0, None),
            Some((held, revision)) => {
                let now = now_us();
                let age = Duration::from_micros(now.saturating_sub(held.heartbeat_us));
                // A heartbeat from further ahead than a claim lives is no
                // clock skew: it was written to hold the run forever (by
                // anyone who may publish on the claims subject), and is
                // taken over as a stale one.
                let ahead = Duration::from_micros(held.heartbeat_us.saturating_sub(now));
                if age < stale_after && ahead < stale_after {
                    return Ok(Taken::Alive);
                }
                (held.attempt.saturating_add(1), revision, Some(held.worker))
            }
        };
        let stored = Stored {
            worker: worker.to_string(),
            attempt,
            heartbeat_us: now_us(),
        };
        match self.write(run_id, &stored, expected).await {
            Ok(revision) => Ok(Taken::Mine(Claim {
                run_id: run_id.to_string(),
                attempt,
                previous_worker,
                worker: worker.to_string(),
                revision,
            })),
            // Another worker claimed it first.
            Err(Cas::Lost) => Ok(Taken::Alive),
            Err(Cas::Failed(error)) => Err(format!("claiming {run_id}: {error}")),
        }
    }

    /// Renew `claim`; [`LOST`] when another worker took it meanwhile.
    pub async fn beat(&self, claim: &mut Claim) -> Result<(), String> {
        let stored = Stored {
            worker: claim.worker.clone(),
            attempt: claim.attempt,
            heartbeat_us: now_us(),
        };
        match self.write(&claim.run_id, &stored, claim.revision).await {
            Ok(revision) => {
                claim.revision = revision;
                Ok(())
            }
            Err(Cas::Lost) => Err(LOST.to_string()),
            Err(Cas::Failed(error)) => {
                Err(format!("renewing the claim of {}: {error}", claim.run_id))
            }
        }
    }
}

fn encode(stored: &Stored) -> Result<bytes::Bytes, String> {
    serde_json::to_vec(stored)
        .map(Into::into)
        .map_err(|e| e.to_string())
}
