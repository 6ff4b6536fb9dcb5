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

/// The longest lease a claim is taken to have (a worker's `--ack-wait` is
/// at most an hour).
const MAX_LEASE: Duration = Duration::from_secs(3600);

/// The error [`Claims::beat`] gives when another worker took the claim.
pub const LOST: &str = "the claim was taken by another worker";

/// What the bucket stores per run.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    worker: String,
    attempt: u32,
    /// The holder's clock at its last heartbeat (µs since the epoch).
    heartbeat_us: u64,
    /// How long the holder takes its claim to live unrenewed (its ack
    /// wait, ms): nobody takes it as stale sooner.
    #[serde(default)]
    lease_ms: u64,
    /// The run was withdrawn (by its front end): no worker runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    withdrawn: Option<Withdrawal>,
}

impl Stored {
    /// Its holder renewed it within `stale_after`. A heartbeat from
    /// further ahead than a claim lives is no clock skew: it was written to
    /// hold the run forever (by anyone who may publish on the claims
    /// subject), and is taken as a stale one.
    fn is_live(&self, stale_after: Duration) -> bool {
        // A lease read from the bus is held to a worker's longest
        // `--ack-wait`, so a forged one cannot hold a run forever.
        let lease = Duration::from_millis(self.lease_ms).min(MAX_LEASE);
        let now = now_us();
        let age = Duration::from_micros(now.saturating_sub(self.heartbeat_us));
        let ahead = Duration::from_micros(self.heartbeat_us.saturating_sub(now));
        // Clock skew is judged by the reader's own bound alone.
        age < stale_after.max(lease) && ahead < stale_after
    }
}

/// Why a run was withdrawn before a worker ran it to its end: what its
/// result says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// Who withdrew it (a front end's name).
    pub by: String,
    /// The run's error.
    pub reason: String,
    /// It was cancelled (rather than given up waiting for a worker).
    pub cancelled: bool,
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
    lease_ms: u64,
}

/// The result of trying to claim a run.
#[derive(Debug)]
pub enum Taken {
    /// This worker holds it now.
    Mine(Claim),
    /// A live worker holds it.
    Alive,
    /// It was withdrawn: it must not run.
    Withdrawn(Withdrawal),
}

/// The result of trying to withdraw a run.
#[derive(Debug, PartialEq)]
pub enum Withdrawn {
    /// No worker holds it or ever will: this withdrawal, or an earlier one.
    Yes(Withdrawal),
    /// A live worker holds it (a cancel reaches it on the cancel subject).
    Held,
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
            Some((
                Stored {
                    withdrawn: Some(withdrawal),
                    ..
                },
                _,
            )) => return Ok(Taken::Withdrawn(withdrawal)),
            Some((held, revision)) => {
                if held.is_live(stale_after) {
                    return Ok(Taken::Alive);
                }
                (held.attempt.saturating_add(1), revision, Some(held.worker))
            }
        };
        let lease_ms = u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX);
        let stored = Stored {
            worker: worker.to_string(),
            attempt,
            heartbeat_us: now_us(),
            lease_ms,
            withdrawn: None,
        };
        match self.write(run_id, &stored, expected).await {
            Ok(revision) => Ok(Taken::Mine(Claim {
                run_id: run_id.to_string(),
                attempt,
                previous_worker,
                worker: worker.to_string(),
                revision,
                lease_ms,
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
            lease_ms: claim.lease_ms,
            withdrawn: None,
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

    /// Withdraw `run_id` unless a live worker holds it (its claim renewed
    /// within `stale_after`): the claim becomes `withdrawal`, by the same
    /// compare-and-set a worker claims with, so a worker either took the
    /// run first (and is cancelled on the cancel subject) or never runs it.
    /// A dead worker's claim is taken over, as a worker would; the dead
    /// worker, if it comes back, finds its claim lost and stops.
    pub async fn withdraw(
        &self,
        run_id: &str,
        withdrawal: &Withdrawal,
        stale_after: Duration,
    ) -> Result<Withdrawn, String> {
        // Each round lost is a worker's claim or heartbeat written first:
        // a live worker is found within a few.
        for _ in 0..8 {
            let (attempt, expected) = match self.read(run_id).await? {
                None => (0, 0),
                Some((
                    Stored {
                        withdrawn: Some(earlier),
                        ..
                    },
                    _,
                )) => return Ok(Withdrawn::Yes(earlier)),
                Some((held, revision)) => {
                    if held.is_live(stale_after) {
                        return Ok(Withdrawn::Held);
                    }
                    (held.attempt, revision)
                }
            };
            let stored = Stored {
                worker: withdrawal.by.clone(),
                attempt,
                heartbeat_us: now_us(),
                lease_ms: 0,
                withdrawn: Some(withdrawal.clone()),
            };
            match self.write(run_id, &stored, expected).await {
                Ok(_) => return Ok(Withdrawn::Yes(withdrawal.clone())),
                // A worker (or another withdrawal) wrote first: look again.
                Err(Cas::Lost) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(Cas::Failed(error)) => return Err(format!("withdrawing {run_id}: {error}")),
            }
        }
        Err(format!(
            "withdrawing {run_id}: its claim kept changing under the compare-and-set"
        ))
    }
}

fn encode(stored: &Stored) -> Result<bytes::Bytes, String> {
    serde_json::to_vec(stored)
        .map(Into::into)
        .map_err(|e| e.to_string())
}
