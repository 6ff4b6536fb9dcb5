//! The server's table of runs: which are live, which finished (the newest
//! [`super::ServeLimits::max_kept_runs`] of them, oldest forgotten first;
//! their audit files stay), whose each is, and what each came to.
//!
//! An entry holds a few hundred bytes and the run's answer (bounded by the
//! policy's `limits.output`); never its records, which are in its audit
//! file and read from there.

use crate::run::{RunError, RunFailure, RunReport};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};
use tokio::sync::watch;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepted; loading its policy's tools.
    Queued,
    /// The agent is running.
    Running,
    /// It ended with an answer.
    Succeeded,
    /// It ended with no answer (an error, a limit, a trap).
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl Status {
    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// What subscribers of a run watch: how many records its audit file has,
/// and whether the run is over (no more will come).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records written to the audit file by this run.
    pub records: u64,
    /// Whether the run is over.
    pub done: bool,
}

/// One run of the server.
pub struct RunEntry {
    /// Its id.
    pub id: String,
    /// The name of the token that submitted it.
    pub owner: String,
    /// The policy's name.
    pub policy: String,
    /// The agent, as the request named it.
    pub agent: String,
    /// The model spec.
    pub model: String,
    /// Its audit log.
    pub audit_path: PathBuf,
    created: SystemTime,
    started: Instant,
    state: Mutex<RunState>,
    progress: watch::Sender<Progress>,
    cancel: watch::Sender<Option<String>>,
}

#[derive(Default)]
struct RunState {
    status: Option<Status>,
    answer: Option<String>,
    error: Option<String>,
    summary: Option<Value>,
    audit_head: Option<String>,
    finished: Option<SystemTime>,
}

impl RunEntry {
    /// A queued run.
    pub fn new(
        id: String,
        owner: String,
        (policy, agent, model): (String, String, String),
        audit_path: PathBuf,
    ) -> Self {
        RunEntry {
            id,
            owner,
            policy,
            agent,
            model,
            audit_path,
            created: SystemTime::now(),
            started: Instant::now(),
            state: Mutex::new(RunState {
                status: Some(Status::Queued),
                ..RunState::default()
            }),
            progress: watch::Sender::new(Progress::default()),
            cancel: watch::Sender::new(None),
        }
    }

    /// When it was submitted, µs since the epoch.
    pub fn created_us(&self) -> u64 {
        self.created
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    /// Submitted at `created` (a run known again after a restart).
    pub fn created_at(mut self, created: SystemTime) -> Self {
        self.created = created;
        self
    }

    /// The run as the approver factory sees it.
    pub fn info(&self) -> super::RunInfo {
        super::RunInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            policy: self.policy.clone(),
            agent: self.agent.clone(),
            model: self.model.clone(),
        }
    }

    fn state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the run is.
    pub fn status(&self) -> Status {
        self.state().status.unwrap_or(Status::Queued)
    }

    /// The agent started.
    pub fn set_running(&self) {
        let mut state = self.state();
        if state.status == Some(Status::Queued) {
            state.status = Some(Status::Running);
        }
    }

    /// A record was written to the audit file.
    pub fn record_written(&self) {
        self.progress.send_modify(|p| p.records += 1);
    }

    /// The audit file already holds `records` records (a run known again
    /// after a restart).
    pub fn records_kept(&self, records: u64) {
        self.progress.send_modify(|p| p.records = records);
    }

    /// Watch the run's progress.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Ask the run to stop; `false` when it is already over.
    pub fn cancel(&self, reason: &str) -> bool {
        if self.status().is_final() {
            return false;
        }
        self.cancel.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason.to_string());
                true
            } else {
                false
            }
        });
        true
    }

    /// Completes with the reason once [`Self::cancel`] is called.
    pub fn cancelled(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut receiver = self.cancel.subscribe();
        async move {
            let reason = match receiver.wait_for(Option::is_some).await {
                Ok(reason) => Some(reason.clone().unwrap_or_default()),
                Err(_) => None,
            };
            match reason {
                Some(reason) => reason,
                // The entry is gone: nobody can cancel it any more.
                None => std::future::pending().await,
            }
        }
    }

    /// The run is over: `result` is what [`crate::run::run_until`] gave.
    pub fn finish(&self, result: &Result<RunReport, RunError>) {
        let mut state = self.state();
        match result {
            Ok(report) => {
                state.summary = Some(report.summary());
                state.audit_head = Some(report.audit_head.clone());
                match &report.result {
                    Ok(answer) => {
                        state.status = Some(Status::Succeeded);
                        state.answer = Some(answer.clone());
                    }
                    Err(failure) => {
                        state.status = Some(match failure {
                            RunFailure::Cancelled(_) => Status::Cancelled,
                            _ => Status::Failed,
                        });
                        state.error = Some(failure.to_string());
                    }
                }
            }
            Err(error) => {
                state.status = Some(Status::Failed);
                state.error = Some(error.for_client());
            }
        }
        state.finished = Some(SystemTime::now());
        drop(state);
        self.progress.send_modify(|p| p.done = true);
    }

    /// The run is over on a worker of the cluster: `result` is what it
    /// published (`warden serve --nats`).
    pub fn finish_queued(&self, result: &crate::worker::RunResult) {
        let mut state = self.state();
        state.summary = result.summary.clone();
        // A run that ended before its first record has no head.
        state.audit_head = Some(result.audit_head.clone()).filter(|h| !h.is_empty());
        match (&result.answer, &result.error) {
            (Some(answer), _) => {
                state.status = Some(Status::Succeeded);
                state.answer = Some(answer.clone());
            }
            (None, error) => {
                state.status = Some(if result.cancelled {
                    Status::Cancelled
                } else {
                    Status::Failed
                });
                state.error = Some(error.clone().unwrap_or_else(|| "the run failed".into()));
            }
        }
        state.finished = Some(SystemTime::now());
        drop(state);
        self.progress.send_modify(|p| p.done = true);
    }

    /// The run failed before it could start (its audit log could not be
    /// opened).
    pub fn fail(&self, error: String) {
        let mut state = self.state();
        state.status = Some(Status::Failed);
        state.error = Some(error);
        state.finished = Some(SystemTime::now());
        drop(state);
        self.progress.send_modify(|p| p.done = true);
    }

    /// The run as `GET /runs/{id}` shows it (the `Run` schema of
    /// docs/openapi.json).
    pub fn view(&self) -> Value {
        let state = self.state();
        let progress = *self.progress.borrow();
        let mut view = json!({
            "id": self.id,
            "status": state.status.unwrap_or(Status::Queued),
            "policy": self.policy,
            "agent": self.agent,
            "model": self.model,
            "created": httpdate_rfc3339(self.created),
            "records": progress.records,
            "links": {
                "self": format!("/runs/{}", self.id),
                "events": format!("/runs/{}/events", self.id),
                "audit": format!("/runs/{}/audit", self.id),
                "cancel": format!("/runs/{}/cancel", self.id),
            },
        });
        if let Some(finished) = state.finished {
            view["finished"] = json!(httpdate_rfc3339(finished));
        } else {
            view["elapsed_ms"] = json!(self.started.elapsed().as_millis() as u64);
        }
        if let Some(answer) = &state.answer {
            view["answer"] = json!(answer);
        }
        if let Some(error) = &state.error {
            view["error"] = json!(error);
        }
        if let Some(summary) = &state.summary {
            view["summary"] = summary.clone();
        }
        if let Some(head) = &state.audit_head {
            view["audit_head"] = json!(head);
        }
        view
    }

    /// Bytes this entry keeps besides its fixed fields: its answer and
    /// error (an answer is bounded by the policy's `limits.output`, but
    /// thousands of remembered answers add up).
    pub fn retained_bytes(&self) -> usize {
        let state = self.state();
        state.answer.as_ref().map_or(0, String::len) + state.error.as_ref().map_or(0, String::len)
    }

    /// The short form `GET /runs` lists.
    pub fn brief(&self) -> Value {
        let state = self.state();
        json!({
            "id": self.id,
            "status": state.status.unwrap_or(Status::Queued),
            "policy": self.policy,
            "agent": self.agent,
            "created": httpdate_rfc3339(self.created),
        })
    }
}

/// RFC 3339 in UTC, to the second.
fn httpdate_rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Why a run cannot be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    /// The process has `max_live_runs` live.
    Server(usize),
    /// The token has its `max_runs` live.
    Token(usize),
}

/// Finished runs an owner keeps: (how many, their bytes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Kept(usize, usize);

impl std::ops::AddAssign<(usize, usize)> for Kept {
    fn add_assign(&mut self, (runs, bytes): (usize, usize)) {
        self.0 += runs;
        self.1 += bytes;
    }
}

impl std::ops::SubAssign<(usize, usize)> for Kept {
    fn sub_assign(&mut self, (runs, bytes): (usize, usize)) {
        self.0 = self.0.saturating_sub(runs);
        self.1 = self.1.saturating_sub(bytes);
    }
}

/// Every run the server remembers.
pub struct RunTable {
    by_id: HashMap<String, Arc<RunEntry>>,
    /// Finished runs, oldest first, with their owner and the bytes each
    /// keeps.
    finished: VecDeque<(String, String, usize)>,
    /// Finished runs kept per owner: (runs, bytes).
    kept_by_owner: HashMap<String, Kept>,
    /// The bytes finished runs keep, in all.
    finished_bytes: usize,
    max_kept_bytes: usize,
    /// Live (admitted, not finished) runs per owner, and in all.
    live_by_owner: HashMap<String, usize>,
    live: usize,
    max_live: usize,
    max_kept: usize,
}

impl RunTable {
    /// A table of at most `max_live` live runs, and `max_kept` finished
    /// keeping at most `max_kept_bytes` of answers and errors.
    pub fn new(max_live: usize, max_kept: usize, max_kept_bytes: usize) -> Self {
        RunTable {
            by_id: HashMap::new(),
            finished: VecDeque::new(),
            kept_by_owner: HashMap::new(),
            finished_bytes: 0,
            max_kept_bytes,
            live_by_owner: HashMap::new(),
            live: 0,
            max_live: max_live.max(1),
            max_kept,
        }
    }

    /// Live runs.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Runs remembered, live and finished.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Count a new live run of `owner` (limited to `max_runs`), before it
    /// is resolved; [`Self::release`] gives it back.
    pub fn admit(&mut self, owner: &str, max_runs: usize) -> Result<(), Full> {
        if self.live >= self.max_live {
            return Err(Full::Server(self.max_live));
        }
        let mine = self.live_by_owner.get(owner).copied().unwrap_or(0);
        if mine >= max_runs {
            return Err(Full::Token(max_runs));
        }
        self.live += 1;
        *self.live_by_owner.entry(owner.to_string()).or_insert(0) += 1;
        Ok(())
    }

    /// A live run of `owner` ended (or never started).
    pub fn release(&mut self, owner: &str) {
        self.live = self.live.saturating_sub(1);
        if let Some(count) = self.live_by_owner.get_mut(owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.live_by_owner.remove(owner);
            }
        }
    }

    /// Remember an admitted run.
    pub fn insert(&mut self, entry: Arc<RunEntry>) {
        self.by_id.insert(entry.id.clone(), entry);
    }

    /// Whether a run has this id.
    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// A run that ended: kept among the finished, while more than
    /// `max_kept` are kept, or more than `max_kept_bytes`, one is
    /// forgotten: the oldest of the owner who keeps the most bytes, so one
    /// token's flood of runs forgets its own, not the others'.
    /// Returns the runs forgotten.
    pub fn finished(&mut self, id: &str) -> Vec<Arc<RunEntry>> {
        let mut forgotten = Vec::new();
        let Some(entry) = self.by_id.get(id) else {
            return forgotten;
        };
        let (owner, bytes) = (entry.owner.clone(), entry.retained_bytes());
        *self.kept_by_owner.entry(owner.clone()).or_default() += (1, bytes);
        self.finished.push_back((id.to_string(), owner, bytes));
        self.finished_bytes += bytes;
        while self.finished.len() > self.max_kept || self.finished_bytes > self.max_kept_bytes {
            let Some(heaviest) = self
                .kept_by_owner
                .iter()
                .max_by_key(|(_, kept)| (kept.1, kept.0))
                .map(|(owner, _)| owner.clone())
            else {
                break;
            };
            let Some(at) = self.finished.iter().position(|(_, o, _)| *o == heaviest) else {
                break;
            };
            let Some((oldest, owner, bytes)) = self.finished.remove(at) else {
                break;
            };
            self.finished_bytes -= bytes;
            if let Some(kept) = self.kept_by_owner.get_mut(&owner) {
                *kept -= (1, bytes);
                if kept.0 == 0 {
                    self.kept_by_owner.remove(&owner);
                }
            }
            forgotten.extend(self.by_id.remove(&oldest));
        }
        forgotten
    }

    /// The run `id` if `owner`'s: another owner's run is as absent as one
    /// that never was.
    pub fn get(&self, id: &str, owner: &str) -> Option<Arc<RunEntry>> {
        self.by_id.get(id).filter(|e| e.owner == owner).cloned()
    }

    /// Every live run (for a shutdown).
    pub fn live_entries(&self) -> Vec<Arc<RunEntry>> {
        self.by_id
            .values()
            .filter(|e| !e.status().is_final())
            .cloned()
            .collect()
    }

    /// `owner`'s runs, newest first, at most `max`; and whether there were
    /// more.
    pub fn of(&self, owner: &str, max: usize) -> (Vec<Arc<RunEntry>>, bool) {
        let mut mine: Vec<Arc<RunEntry>> = self
            .by_id
            .values()
            .filter(|e| e.owner == owner)
            .cloned()
            .collect();
        mine.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
        let more = mine.len() > max;
        mine.truncate(max);
        (mine, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, owner: &str) -> Arc<RunEntry> {
        Arc::new(RunEntry::new(
            id.into(),
            owner.into(),
            ("p".into(), "builtin:react".into(), "scripted:x".into()),
            PathBuf::from(format!("/tmp/{id}.jsonl")),
        ))
    }

    #[test]
    fn live_runs_are_limited_per_server_and_per_owner() {
        let mut table = RunTable::new(3, 10, 1 << 20);
        assert!(table.admit("a", 2).is_ok());
        assert!(table.admit("a", 2).is_ok());
        assert_eq!(table.admit("a", 2), Err(Full::Token(2)));
        assert!(table.admit("b", 2).is_ok());
        assert_eq!(table.admit("c", 2), Err(Full::Server(3)));
        table.release("a");
        assert!(table.admit("c", 2).is_ok());
        assert_eq!(table.live(), 3);
    }

    #[test]
    fn finished_runs_are_forgotten_oldest_first_and_owners_see_only_theirs() {
        let mut table = RunTable::new(10, 2, 1 << 20);
        for id in ["r1", "r2", "r3"] {
            table.insert(entry(id, "a"));
            table.finished(id);
        }
        assert!(table.get("r1", "a").is_none(), "the oldest is forgotten");
        assert!(table.get("r3", "a").is_some());
        assert!(
            table.get("r3", "b").is_none(),
            "another owner's run is absent"
        );
        assert_eq!(table.len(), 2);
        let (mine, more) = table.of("a", 1);
        assert_eq!(mine.len(), 1);
        assert!(more);
    }

    /// The attack: one token floods the server with short runs so that
    /// every other token's finished runs (their answers) are forgotten.
    #[test]
    fn a_flood_of_one_owners_runs_forgets_its_own_not_the_others() {
        let mut table = RunTable::new(10, 4, 1 << 20);
        for id in ["b1", "c1"] {
            table.insert(entry(id, id));
            table.finished(id);
        }
        for n in 0..100 {
            let id = format!("a{n}");
            table.insert(entry(&id, "a"));
            table.finished(&id);
        }
        assert_eq!(table.len(), 4);
        assert!(table.get("b1", "b1").is_some(), "b's answer was forgotten");
        assert!(table.get("c1", "c1").is_some(), "c's answer was forgotten");
        assert!(table.get("a99", "a").is_some() && table.get("a98", "a").is_some());
        assert!(table.get("a97", "a").is_none());
    }

    #[test]
    fn finished_runs_are_forgotten_when_their_answers_add_up() {
        let mut table = RunTable::new(10, 100, 250);
        for id in ["r1", "r2", "r3"] {
            let run = entry(id, "a");
            run.fail("x".repeat(100));
            table.insert(run);
            table.finished(id);
        }
        assert!(table.get("r1", "a").is_none(), "300 bytes kept > 250");
        assert!(table.get("r2", "a").is_some() && table.get("r3", "a").is_some());
    }

    #[tokio::test]
    async fn a_cancel_reaches_the_run_once_and_not_after_it_ends() {
        let run = entry("r1", "a");
        let cancelled = run.cancelled();
        assert!(run.cancel("by the client"));
        assert!(
            run.cancel("again"),
            "still live: accepted, the first reason stays"
        );
        assert_eq!(cancelled.await, "by the client");
        run.fail("over".into());
        assert!(!run.cancel("late"));
        assert_eq!(run.status(), Status::Failed);
        assert!(run.watch().borrow().done);
    }
}
