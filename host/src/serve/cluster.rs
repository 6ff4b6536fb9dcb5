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
use super::{Release, RunInfo, ServeState};
use crate::gate::{Approver, Reply};
use crate::job::RunRequest;
use crate::worker::claim::Withdrawal;
use crate::worker::{self, QueuedJob, RunResult, SubmitError, approve};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt as _;
use std::path::{Path, PathBuf};
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
    /// This front end, as a withdrawn run's result names it.
    pub name: String,
    /// The workers' `--ack-wait`: a claim not renewed for this long is a
    /// dead worker's, and its run may be withdrawn.
    pub worker_ack_wait: Duration,
    /// How long a run may wait with no live worker holding it (queued, or
    /// its workers dead) before it is withdrawn as failed; `None`: forever.
    pub queue_timeout: Option<Duration>,
}

impl Cluster {
    /// A front end on `js` with the default timeouts (a worker's default
    /// ack wait; an hour in the queue).
    pub fn new(js: jetstream::Context) -> Self {
        Cluster {
            js,
            name: format!("serve-{}", std::process::id()),
            worker_ack_wait: worker::WorkerConfig::default().ack_wait,
            queue_timeout: Some(Duration::from_secs(3600)),
        }
    }

    /// Withdraw run `entry` for `reason` unless a live worker holds it:
    /// its result if it is over now.
    async fn withdraw(
        &self,
        entry: &RunEntry,
        enqueued_us: u64,
        reason: String,
        cancelled: bool,
    ) -> Option<RunResult> {
        let withdrawal = Withdrawal {
            by: self.name.clone(),
            reason,
            cancelled,
        };
        match worker::withdraw(
            &self.js,
            &entry.id,
            enqueued_us,
            &withdrawal,
            self.worker_ack_wait,
        )
        .await
        {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(run = %entry.id, "withdrawing a run failed (tried again later): {error}");
                None
            }
        }
    }
}

/// A run put on the queue: its asks (subscribed to before it was queued,
/// so its first ask finds a responder), when, and its job while JetStream
/// has not confirmed it stored it.
pub struct Queued {
    asks: async_nats::Subscriber,
    enqueued_us: u64,
    unconfirmed: Option<QueuedJob>,
    /// The audit file holds the records up to this `seq` already.
    copied_through: u64,
}

/// What a front end keeps on disk of each run it follows, beside its audit
/// file, so that a restarted front end follows it again ([`recover`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct Following {
    run: RunInfo,
    enqueued_us: u64,
    /// Once the run is over: its result (the entry is kept, with the
    /// finished runs, until the table forgets it).
    #[serde(default)]
    result: Option<RunResult>,
}

impl Following {
    /// The run's entry, its audit file in `audit_dir`.
    fn entry(&self, audit_dir: &Path) -> Arc<RunEntry> {
        let run = &self.run;
        let submitted = std::time::UNIX_EPOCH + Duration::from_micros(self.enqueued_us);
        Arc::new(
            RunEntry::new(
                run.id.clone(),
                run.owner.clone(),
                (run.policy.clone(), run.agent.clone(), run.model.clone()),
                audit_dir.join(format!("{}.jsonl", run.id)),
            )
            .created_at(submitted),
        )
    }
}

const FOLLOWING: &str = ".following.json";

/// Largest file [`recover`] reads (a result from the bus, at most NATS's
/// largest message, and a few names).
const MAX_FOLLOWING: u64 = 16 << 20;

fn following_path(entry: &RunEntry) -> Option<PathBuf> {
    let dir = entry.audit_path.parent()?;
    Some(dir.join(format!("{}{FOLLOWING}", entry.id)))
}

/// Write (atomically) that this front end follows `entry`, and once it is
/// over its result.
fn write_following(
    entry: &RunEntry,
    enqueued_us: u64,
    result: Option<&RunResult>,
) -> Result<(), String> {
    let path = following_path(entry).ok_or("the audit file has no directory")?;
    let text = serde_json::to_vec(&Following {
        run: entry.info(),
        enqueued_us,
        result: result.cloned(),
    })
    .map_err(|e| e.to_string())?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The server forgot these runs: a restarted front end need not know them.
pub(super) fn forget(runs: &[Arc<RunEntry>]) {
    for entry in runs {
        forget_following(entry);
    }
}

fn forget_following(entry: &RunEntry) {
    if let Some(path) = following_path(entry) {
        let _ = std::fs::remove_file(path);
    }
}

/// Put `request` on the queue as run `entry`. Refused only when the job
/// is surely not stored; when JetStream did not confirm within
/// [`worker::SUBMIT_DEADLINE`] (the job may be stored, or be stored once
/// NATS answers), the run is accepted and [`follow`] goes on submitting
/// it: a run is idempotent by its id, so a job stored twice runs once.
/// The run is written down first, so a front end restarted from now on
/// follows it ([`recover`]).
pub async fn enqueue(
    cluster: &Cluster,
    entry: &RunEntry,
    request: RunRequest,
) -> Result<Queued, SubmitError> {
    let run_id = entry.id.as_str();
    let client = cluster.js.client();
    let asks = client
        .subscribe(worker::approve_subject(run_id))
        .await
        .map_err(|e| SubmitError::Nats(e.to_string()))?;
    // Nothing is published yet: NATS away here is a plain refusal.
    match tokio::time::timeout(worker::SUBMIT_DEADLINE, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(SubmitError::Nats(error.to_string())),
        Err(_) => {
            return Err(SubmitError::Nats(format!(
                "NATS did not answer within {:?}",
                worker::SUBMIT_DEADLINE
            )));
        }
    }
    let job = QueuedJob {
        run_id: run_id.to_string(),
        // The entry's own time, so a restarted front end shows the same.
        enqueued_us: entry.created_us(),
        request,
    };
    if let Err(error) = write_following(entry, job.enqueued_us, None) {
        // Refused: a run this process could lose track of on a restart.
        return Err(SubmitError::Nats(format!(
            "the front end cannot write down the run it follows: {error}"
        )));
    }
    let confirmed = match worker::submit(&cluster.js, &job).await {
        Ok(()) => true,
        Err(SubmitError::Unconfirmed(error)) => {
            tracing::warn!(run = %run_id, "the queue did not confirm the job ({error}); accepted, and submitted again until it does");
            false
        }
        Err(refused) => {
            forget_following(entry);
            return Err(refused);
        }
    };
    Ok(Queued {
        asks,
        enqueued_us: job.enqueued_us,
        unconfirmed: (!confirmed).then_some(job),
        copied_through: 0,
    })
}

/// Hold the audit directory `dir` for this front end (an exclusive lock
/// on `dir/.serve.lock`, released when the returned file is dropped or the
/// process ends): two front ends sharing one directory would each follow,
/// copy and forget the other's runs.
pub fn lock_audit_dir(dir: &Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd as _;
    let path = dir.join(".serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: the descriptor is the open file's, alive for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "another `warden serve --nats` uses the audit directory {} (it holds {}): give each front end its own --audit-dir",
            dir.display(),
            path.display()
        ));
    }
    Ok(file)
}

/// Know again the runs a front end that stopped knew (each
/// `<id>.following.json` in the audit directory). One it saw end is shown
/// as it ended. One it was following is followed again: its audit file is
/// copied afresh from JetStream, its asks are relayed from now on, and if
/// it ended meanwhile it ends at once with its stored result. At most as
/// many are followed as the server has live slots, newest first; the
/// others are left on disk, and said. Returns how many are followed.
pub async fn recover(state: &Arc<ServeState>) -> Result<usize, String> {
    let Some(cluster) = state.cluster.clone() else {
        return Ok(0);
    };
    let dir = state.jobs.audit_dir.clone();
    let found = tokio::task::spawn_blocking(move || read_following(&dir))
        .await
        .map_err(|e| e.to_string())??;
    let (ended, live): (Vec<Following>, Vec<Following>) =
        found.into_iter().partition(|f| f.result.is_some());
    // The ended runs are shown again as they ended, oldest first (so the
    // table forgets the oldest past its limits); their audit files are
    // whole.
    for following in ended.iter().rev() {
        let run = &following.run;
        let entry = following.entry(&state.jobs.audit_dir);
        if let Some(result) = &following.result {
            entry.records_kept(result.audit_records);
            entry.finish_queued(result);
        }
        let forgotten = {
            let mut runs = state.runs();
            if runs.contains(&run.id) {
                continue;
            }
            runs.insert(entry.clone());
            runs.finished(&run.id)
        };
        forget(&forgotten);
    }
    let found = live;
    let mut followed = 0;
    for (index, following) in found.iter().enumerate() {
        let run = &following.run;
        let entry = following.entry(&state.jobs.audit_dir);
        {
            let mut runs = state.runs();
            if runs.contains(&run.id) {
                continue;
            }
            // The run goes on whatever its token's limit is now.
            if runs.admit(&run.owner, usize::MAX).is_err() {
                tracing::warn!(
                    "{} more runs this front end followed are not followed again: its --max-runs is full (their records and results are in JetStream)",
                    found.len() - index
                );
                break;
            }
            runs.insert(entry.clone());
        }
        // The records it has are kept (the stream may have lost them);
        // the rest come from the stream.
        let path = entry.audit_path.clone();
        let kept = tokio::task::spawn_blocking(move || kept_records(&path))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|kept| kept);
        let copied_through = match kept {
            Ok(seq) => seq,
            Err(error) => {
                entry.fail(format!("the run's audit file cannot be read: {error}"));
                let mut runs = state.runs();
                runs.release(&entry.owner);
                let forgotten = runs.finished(&entry.id);
                drop(runs);
                forget(&forgotten);
                continue;
            }
        };
        entry.records_kept(copied_through);
        let asks = match cluster
            .js
            .client()
            .subscribe(worker::approve_subject(&run.id))
            .await
        {
            Ok(asks) => asks,
            Err(error) => return Err(format!("NATS: {error}")),
        };
        let approver = state.approver_for.as_ref().map(|make| make(&entry.info()));
        tokio::spawn(follow(
            state.clone(),
            cluster.clone(),
            entry,
            Queued {
                asks,
                enqueued_us: following.enqueued_us,
                unconfirmed: None,
                copied_through,
            },
            approver,
        ));
        followed += 1;
    }
    Ok(followed)
}

/// The `seq` of the last whole record of the audit file at `path` (0 for
/// none or no file), a torn last line cut off.
fn kept_records(path: &Path) -> std::io::Result<u64> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    let whole = text
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |end| end + 1);
    if whole < text.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(whole as u64)?;
    }
    let last = text[..whole]
        .split(|b| *b == b'\n')
        .rfind(|line| !line.is_empty());
    Ok(last
        .and_then(|line| serde_json::from_slice::<Seq>(line).ok())
        .map_or(0, |record| record.seq))
}

/// The runs written down in `dir`, newest first.
fn read_following(dir: &Path) -> Result<Vec<Following>, String> {
    let mut found = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for item in listing.flatten() {
        let name = item.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(FOLLOWING)) else {
            continue;
        };
        let path = item.path();
        let read = std::fs::File::open(&path).and_then(|file| {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FOLLOWING), &mut text)
                .map(|_| text)
        });
        let parsed = read
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_slice::<Following>(&text).map_err(|e| e.to_string()))
            .and_then(|following| {
                worker::check_run_id(&following.run.id)?;
                if following.run.id == id {
                    Ok(following)
                } else {
                    Err(format!("it names run {}", following.run.id))
                }
            });
        match parsed {
            Ok(following) => found.push(following),
            Err(error) => tracing::warn!(
                "{} is not a run this front end followed ({error}): left as it is",
                path.display()
            ),
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.enqueued_us));
    Ok(found)
}

/// Follow the queued run `entry` to its end (see the module doc), then
/// give its slot back.
pub async fn follow(
    state: Arc<ServeState>,
    cluster: Cluster,
    entry: Arc<RunEntry>,
    queued: Queued,
    approver: Option<Arc<dyn Approver>>,
) {
    let release = Release {
        state: state.clone(),
        entry: entry.clone(),
    };
    let Queued {
        asks,
        enqueued_us,
        unconfirmed,
        copied_through,
    } = queued;
    let relay = approver.map(|approver| {
        tokio::spawn(relay_asks(
            cluster.js.client(),
            entry.id.clone(),
            asks,
            approver,
        ))
    });
    let confirming =
        unconfirmed.map(|job| tokio::spawn(confirm(cluster.clone(), entry.clone(), job)));
    match mirror(&cluster, &entry, enqueued_us, copied_through).await {
        Ok(result) => {
            // Over: a restarted front end shows it, and need not follow it.
            if let Err(error) = write_following(&entry, enqueued_us, Some(&result)) {
                tracing::warn!(run = %entry.id, "the end of a run cannot be written down: {error}");
            }
            entry.finish_queued(&result);
        }
        Err(error) => {
            tracing::warn!(run = %entry.id, "following a queued run failed: {error}");
            // Not left running unseen: withdrawn if no worker holds it,
            // else cancelled on its worker.
            let reason = format!("the front end could not follow the run: {error}");
            let stopped = stop(&cluster, &entry, enqueued_us, &reason);
            if tokio::time::timeout(Duration::from_secs(30), stopped)
                .await
                .is_err()
            {
                tracing::warn!(run = %entry.id, "the run could not be stopped: it may go on on a worker");
            }
            entry.fail(format!(
                "the front end lost the run: {error} (its records and result stay in JetStream under warden.runs.{}.*)",
                entry.id
            ));
        }
    }
    for task in [relay, confirming].into_iter().flatten() {
        task.abort();
    }
    drop(release);
}

/// Submit `job` again until JetStream confirms it stored it (the message
/// id makes a stored job's repeat a no-op, and a run is idempotent by its
/// id past the dedupe window), until the run has a record (it is stored:
/// a worker took it), or [`CONFIRM_TRIES`] times (then `--queue-timeout`
/// ends a run that never reached the queue). A job the queue refuses is
/// withdrawn, so its result says why.
async fn confirm(cluster: Cluster, entry: Arc<RunEntry>, job: QueuedJob) {
    let mut pause = Duration::from_millis(500);
    for _ in 0..CONFIRM_TRIES {
        if entry.watch().borrow().records > 0 {
            return;
        }
        let refused = match worker::submit(&cluster.js, &job).await {
            Ok(()) => return,
            Err(refused @ (SubmitError::QueueFull(_) | SubmitError::Invalid(_))) => refused,
            Err(error) => {
                tracing::debug!(run = %job.run_id, "the queue did not confirm the job yet: {error}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        // Withdrawn, or held by a live worker (an earlier copy is stored).
        let withdrawal = Withdrawal {
            by: cluster.name.clone(),
            reason: format!("the run queue refused the run: {refused}"),
            cancelled: false,
        };
        match worker::withdraw(
            &cluster.js,
            &job.run_id,
            job.enqueued_us,
            &withdrawal,
            cluster.worker_ack_wait,
        )
        .await
        {
            Ok(_) => return,
            Err(error) => tracing::warn!(run = %job.run_id, "withdrawing a refused run: {error}"),
        }
        tokio::time::sleep(pause).await;
    }
    tracing::warn!(run = %job.run_id, "the queue never confirmed the job; --queue-timeout ends the run if no worker takes it");
}

/// Most submits of one unconfirmed job (about two minutes with the pauses
/// between, JetStream's dedupe window): a bound on the copies one run can
/// put in the queue.
const CONFIRM_TRIES: usize = 16;

/// Withdraw the run, or cancel it on the live worker that holds it, until
/// one of the two is done.
async fn stop(cluster: &Cluster, entry: &RunEntry, enqueued_us: u64, reason: &str) {
    let client = cluster.js.client();
    loop {
        if cluster
            .withdraw(entry, enqueued_us, reason.to_string(), true)
            .await
            .is_some()
        {
            return;
        }
        let sent = client
            .request(
                worker::cancel_subject(&entry.id),
                reason.as_bytes().to_vec().into(),
            )
            .await;
        if sent.is_ok() {
            return;
        }
        tokio::time::sleep(CANCEL_EVERY).await;
    }
}

/// Retried with backoff for this long when following a run cannot start
/// (NATS is away): the run goes on on its worker meanwhile.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// The run's two ordered consumers, retried while NATS does not answer.
async fn consumers(cluster: &Cluster, run_id: &str) -> Result<(Messages, Messages), String> {
    let client = cluster.js.client();
    let until = tokio::time::Instant::now() + SETUP_DEADLINE;
    let mut pause = Duration::from_millis(100);
    loop {
        let made = async {
            let stream = cluster
                .js
                .get_stream_no_info(worker::EVENTS_STREAM)
                .await
                .map_err(|e| format!("no stream {}: {e}", worker::EVENTS_STREAM))?;
            let records = follow_subject(&stream, &client, &worker::audit_subject(run_id)).await?;
            let results = follow_subject(&stream, &client, &worker::result_subject(run_id)).await?;
            Ok::<_, String>((records, results))
        };
        match made.await {
            Ok(both) => return Ok(both),
            Err(error) if tokio::time::Instant::now() + pause < until => {
                tracing::debug!(run = %run_id, "following the run: {error}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(format!("{error} (for {SETUP_DEADLINE:?})")),
        }
    }
}

/// Append the run's records to its audit file as they arrive, forward a
/// cancel (or withdraw the run if no worker holds it), withdraw it when it
/// waited past the queue timeout, and return its result.
async fn mirror(
    cluster: &Cluster,
    entry: &RunEntry,
    enqueued_us: u64,
    copied_through: u64,
) -> Result<RunResult, String> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&entry.audit_path)
        .await
        .map_err(|e| format!("the audit file cannot be opened: {e}"))?;
    let client = cluster.js.client();
    let audit_subject = worker::audit_subject(&entry.id);
    let result_subject = worker::result_subject(&entry.id);
    let (mut records, mut results) = consumers(cluster, &entry.id).await?;
    let cancelled = entry.cancelled();
    tokio::pin!(cancelled);
    let mut seen_cancel = false;
    // The reason of a cancel asked for: sent until the run ends.
    let mut cancel: Option<String> = None;
    let mut resend = tokio::time::interval(CANCEL_EVERY);
    resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A withdrawal is tried at most this often while a cancel finds no
    // worker (each is a few requests to JetStream).
    let mut next_withdrawal = tokio::time::Instant::now();
    // Whether a worker holds the run is looked at when it has been quiet
    // (no record) for the queue timeout.
    let mut quiet_since = tokio::time::Instant::now();
    let mut look = tokio::time::interval(
        cluster
            .queue_timeout
            .map_or(Duration::from_secs(3600), |t| {
                (t / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
            }),
    );
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The seq of the last record copied, and the result once read: the
    // run is over when both say the same record.
    let mut last_seq = copied_through;
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
                if seq <= copied_through {
                    // In the file from before a restart.
                    last_seq = seq;
                    continue;
                }
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
                quiet_since = tokio::time::Instant::now();
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
            _ = resend.tick(), if cancel.is_some() && result.is_none() => {
                let reason = cancel.clone().unwrap_or_default();
                // Sent again until the result comes, even once a worker
                // took it: that worker may die before its end record, and
                // the next attempt must be cancelled too.
                let sent = tokio::time::timeout(
                    CANCEL_EVERY,
                    client.request(worker::cancel_subject(&entry.id), reason.clone().into_bytes().into()),
                )
                .await;
                let nobody = matches!(&sent, Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders);
                if nobody && tokio::time::Instant::now() >= next_withdrawal {
                    next_withdrawal = tokio::time::Instant::now() + 4 * CANCEL_EVERY;
                    // No worker runs it now: queued, or its worker dead.
                    // Withdrawn unless a live worker just took it (then
                    // the next cancel reaches it).
                    result = cluster
                        .withdraw(entry, enqueued_us, format!("the run was cancelled: {reason} (before a worker ran it)"), true)
                        .await;
                }
            }
            _ = look.tick(), if result.is_none() => {
                let Some(timeout) = cluster.queue_timeout else { continue };
                if quiet_since.elapsed() < timeout {
                    continue;
                }
                result = cluster
                    .withdraw(
                        entry,
                        enqueued_us,
                        format!(
                            "no worker ran the run for {}s (`warden serve --queue-timeout`): \
                             none took it from the queue, or the ones that did died; start workers, \
                             or raise --queue-timeout",
                            timeout.as_secs()
                        ),
                        false,
                    )
                    .await;
                // A live worker holds it: looked at again after another
                // quiet while.
                quiet_since = tokio::time::Instant::now();
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
    mut asks: async_nats::Subscriber,
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
