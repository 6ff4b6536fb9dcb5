//! Asks that reach a person: the [`Desk`] holds the pending asks of many
//! runs until someone answers them (by API, on the web page of [`web`], or
//! over NATS through the same three calls), they time out, or their run
//! ends.
//!
//! What it must never do: hold a thread while an ask waits (an ask is a
//! oneshot channel the gate awaits), grow without bound (the gate counts
//! a run's asks against `[approvals] max_pending`, the desk counts all of
//! them against [`DeskLimits`]; past either an ask is refused as if nobody
//! answered), or let an answer reach another ask than the one named, or
//! another owner's (ids are random, an answer names the owner it may
//! answer for, and it is taken exactly once). Everything it shows
//! came through the gate's redaction ([`crate::gate::Question`]); it is
//! guest text and the page inserts it only as text.
//!
//! ```no_run
//! use std::sync::Arc;
//! use warden::approvals::{Desk, DeskLimits};
//! use warden::gate::Approval;
//!
//! let desk = Desk::new(DeskLimits::default());
//! // For each run: its gate asks through this.
//! let approver = desk.approver("r-1234", "alice");
//! // A person (or a relay) lists the asks and answers one.
//! for ask in desk.pending() {
//!     let _ = desk.answer(&ask.id, Approval::Once, "alice", Some(&ask.owner));
//! }
//! // The run was cancelled: its asks disappear.
//! desk.withdraw_run("r-1234");
//! # drop(approver);
//! ```

pub mod web;

use crate::gate::{Approval, Approver, Asking, Question, Reply};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// How many asks the desk holds at once, all runs together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeskLimits {
    /// Most asks waiting at once; past it an ask is refused as unanswered.
    pub max_pending: usize,
    /// Most asks of one owner's runs waiting at once, so that one token's
    /// runs cannot fill the desk and leave the others' asks refused.
    pub max_per_owner: usize,
}

impl Default for DeskLimits {
    fn default() -> Self {
        DeskLimits {
            max_pending: 1024,
            max_per_owner: 256,
        }
    }
}

/// One ask waiting for a person, as the API and the page show it.
#[derive(Debug, Clone, Serialize)]
pub struct PendingAsk {
    /// The ask's id (random: answering needs it).
    pub id: String,
    /// The run that asks.
    pub run: String,
    /// Who the run belongs to (the name of the token that submitted it):
    /// only they see and answer its asks through the API.
    pub owner: String,
    /// The question, as the gate redacted it: kind, subject (the tool),
    /// rules, reason, data (the arguments), labels, explained (each value
    /// with where it was seen), not_vouched, timeout (seconds).
    #[serde(flatten)]
    pub question: Question,
    /// When it was asked, milliseconds since the Unix epoch.
    pub asked_at_ms: u64,
    /// When it is refused as unanswered, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No ask has this id now: it was answered, timed out, withdrawn, or
    /// never was.
    #[error(
        "no pending ask has the id `{0}`: it was answered, timed out or withdrawn (GET /approvals lists those pending)"
    )]
    NotPending(String),
}

/// The pending asks of every run of a process.
#[derive(Clone, Default)]
pub struct Desk {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    limits: DeskLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By id, and in the order asked (`order` is the sequence number).
    asks: HashMap<String, Waiting>,
    sequence: u64,
}

struct Waiting {
    order: u64,
    shown: PendingAsk,
    answer: oneshot::Sender<Reply>,
}

impl State {
    fn remove(&mut self, id: &str) -> Option<Waiting> {
        self.asks.remove(id)
    }
}

impl std::fmt::Debug for Desk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desk")
            .field("limits", &self.inner.limits)
            .field("pending", &self.len())
            .finish()
    }
}

impl Desk {
    /// An empty desk holding at most `limits.max_pending` asks.
    pub fn new(limits: DeskLimits) -> Self {
        Desk {
            inner: Arc::new(Inner {
                limits,
                state: Mutex::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a few statements on maps; a panic elsewhere
        // cannot leave them inconsistent.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The approver of run `run`, which belongs to `owner`: its asks wait
    /// here (the run's gate bounds how many by `[approvals] max_pending`,
    /// and how long by `[approvals] timeout`).
    pub fn approver(&self, run: &str, owner: &str) -> Arc<dyn Approver> {
        Arc::new(DeskApprover {
            desk: self.clone(),
            run: run.to_string(),
            owner: owner.to_string(),
        })
    }

    /// How many asks wait.
    pub fn len(&self) -> usize {
        self.lock().asks.len()
    }

    /// Whether no ask waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every waiting ask, oldest first.
    pub fn pending(&self) -> Vec<PendingAsk> {
        let state = self.lock();
        let mut asks: Vec<(u64, PendingAsk)> = state
            .asks
            .values()
            .map(|w| (w.order, w.shown.clone()))
            .collect();
        drop(state);
        asks.sort_by_key(|(order, _)| *order);
        asks.into_iter().map(|(_, ask)| ask).collect()
    }

    /// The owner of the run that waits on ask `id`, if it waits.
    pub fn owner_of(&self, id: &str) -> Option<String> {
        self.lock().asks.get(id).map(|w| w.shown.owner.clone())
    }

    /// The waiting asks of runs `owner` owns, oldest first.
    pub fn pending_of(&self, owner: &str) -> Vec<PendingAsk> {
        let mut asks = self.pending();
        asks.retain(|ask| ask.owner == owner);
        asks
    }

    /// Answer ask `id` as `by` (a token's name, or who relayed it): the
    /// run goes on with it. With `owner`, only an ask of that owner's runs
    /// is answered (another's is "not pending", as one that never was).
    /// Returns the ask answered.
    pub fn answer(
        &self,
        id: &str,
        approval: Approval,
        by: &str,
        owner: Option<&str>,
    ) -> Result<PendingAsk, AnswerError> {
        let not_pending = || AnswerError::NotPending(crate::capability::brief(id, 64));
        let waiting = {
            let mut state = self.lock();
            match state.asks.get(id) {
                Some(w) if owner.is_none_or(|o| o == w.shown.owner) => state.remove(id),
                _ => None,
            }
        }
        .ok_or_else(not_pending)?;
        let by = crate::policy::printable(by);
        // The run may have stopped waiting an instant ago: then the answer
        // is simply not taken, as if it came late.
        let _ = waiting.answer.send(Reply::Answered {
            approval,
            by: (!by.is_empty()).then_some(by),
        });
        Ok(waiting.shown)
    }

    /// Withdraw every ask of run `run` (it was cancelled or ended): each
    /// is refused as unanswered, and none is listed any more.
    pub fn withdraw_run(&self, run: &str) -> usize {
        let mut state = self.lock();
        let ids: Vec<String> = state
            .asks
            .iter()
            .filter(|(_, w)| w.shown.run == run)
            .map(|(id, _)| id.clone())
            .collect();
        let mut withdrawn = Vec::new();
        for id in &ids {
            withdrawn.extend(state.remove(id));
        }
        drop(state);
        for waiting in withdrawn {
            let _ = waiting.answer.send(Reply::Unanswered {
                why: Some("the run's asks were withdrawn (the run was cancelled)".into()),
            });
        }
        ids.len()
    }

    /// Put `question` of `run` on the desk, or say why not.
    fn put(
        &self,
        run: &str,
        owner: &str,
        question: Question,
    ) -> Result<(String, oneshot::Receiver<Reply>), Reply> {
        let mut state = self.lock();
        let total = self.inner.limits.max_pending;
        if state.asks.len() >= total {
            return Err(Reply::Unanswered {
                why: Some(format!(
                    "{total} asks of all runs are already waiting for a person, the most this server holds; answer some first"
                )),
            });
        }
        let each = self.inner.limits.max_per_owner;
        if state
            .asks
            .values()
            .filter(|w| w.shown.owner == owner)
            .count()
            >= each
        {
            return Err(Reply::Unanswered {
                why: Some(format!(
                    "{each} asks of {}'s runs are already waiting for a person, the most one owner may have waiting; answer some first",
                    crate::capability::brief(&crate::policy::printable(owner), 64)
                )),
            });
        }
        let id = loop {
            let id = random_id();
            if !state.asks.contains_key(&id) {
                break id;
            }
        };
        let now = unix_ms(SystemTime::now());
        let timeout = u64::try_from(question.timeout.as_millis()).unwrap_or(u64::MAX);
        let (sender, receiver) = oneshot::channel();
        state.sequence += 1;
        let order = state.sequence;
        state.asks.insert(
            id.clone(),
            Waiting {
                order,
                shown: PendingAsk {
                    id: id.clone(),
                    run: run.to_string(),
                    owner: owner.to_string(),
                    question,
                    asked_at_ms: now,
                    expires_at_ms: now.saturating_add(timeout),
                },
                answer: sender,
            },
        );
        Ok((id, receiver))
    }
}

/// A run's approver: puts its asks on the desk.
struct DeskApprover {
    desk: Desk,
    run: String,
    owner: String,
}

impl Approver for DeskApprover {
    fn ask(&self, question: Question) -> Asking {
        match self.desk.put(&self.run, &self.owner, question) {
            Err(refused) => Box::pin(async move { refused }),
            Ok((id, receiver)) => {
                // Taken off the desk when the gate stops waiting (timeout,
                // cancelled run), whether or not anyone answered.
                let guard = Withdraw {
                    desk: self.desk.clone(),
                    id,
                };
                Box::pin(async move {
                    let reply = receiver.await.unwrap_or(Reply::Unanswered {
                        why: Some("the ask was withdrawn".into()),
                    });
                    drop(guard);
                    reply
                })
            }
        }
    }
}

/// Removes ask `id` from the desk when dropped.
struct Withdraw {
    desk: Desk,
    id: String,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.desk.lock().remove(&self.id);
    }
}

/// 128 random bits as hex: an id nobody can guess from another.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No system randomness: a counter-and-time id is still unique.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        bytes.copy_from_slice(&now.as_nanos().to_le_bytes());
    }
    format!("a-{}", hex::encode(bytes))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An answer as the API spells it: `once`, `run` or `deny`.
pub fn parse_answer(text: &str) -> Option<Approval> {
    match text {
        "once" => Some(Approval::Once),
        "run" => Some(Approval::ForRun),
        "deny" => Some(Approval::Deny),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Kind;
    use crate::policy::explain::Explanation;

    fn question(subject: &str) -> Question {
        Question {
            kind: Kind::Tool,
            subject: subject.into(),
            rules: vec![crate::policy::Rule::new("tools.pay")],
            reason: "tool `pay` asks".into(),
            data: Some(serde_json::json!({ "arguments": { "to": "bob" } })),
            labels: Vec::new(),
            explained: Explanation::default(),
            not_vouched: None,
            timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn an_answer_reaches_its_ask_once() {
        let desk = Desk::new(DeskLimits::default());
        let approver = desk.approver("r-1", "alice");
        let asking = approver.ask(question("pay"));
        let pending = desk.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].run, "r-1");
        let id = pending[0].id.clone();
        assert_eq!(
            desk.answer(&id, Approval::Once, "mallory", Some("mallory"))
                .err(),
            Some(AnswerError::NotPending(id.clone())),
            "another owner answered"
        );
        desk.answer(&id, Approval::Once, "alice", Some("alice"))
            .unwrap();
        assert_eq!(
            asking.await,
            Reply::Answered {
                approval: Approval::Once,
                by: Some("alice".into())
            }
        );
        assert!(desk.is_empty());
        assert_eq!(
            desk.answer(&id, Approval::Deny, "alice", None).err(),
            Some(AnswerError::NotPending(id))
        );
    }

    #[tokio::test]
    async fn asks_past_the_bound_are_refused_with_the_reason() {
        let desk = Desk::new(DeskLimits {
            max_pending: 4,
            max_per_owner: 2,
        });
        let one = desk.approver("r-1", "alice");
        let two = desk.approver("r-2", "bob");
        let three = desk.approver("r-3", "carol");
        let _a = one.ask(question("pay"));
        let _b = one.ask(question("pay"));
        // alice's runs have their share: a third is refused, bob's is not.
        let Reply::Unanswered { why: Some(why) } = one.ask(question("pay")).await else {
            panic!("a third ask of alice's was taken");
        };
        assert!(why.contains("the most one owner may have waiting"), "{why}");
        let _c = two.ask(question("pay"));
        let _d = three.ask(question("pay"));
        let Reply::Unanswered { why: Some(why) } = two.ask(question("pay")).await else {
            panic!("a fifth ask was taken");
        };
        assert!(why.contains("the most this server holds"), "{why}");
        assert_eq!(desk.len(), 4);
    }

    #[tokio::test]
    async fn a_dropped_or_withdrawn_ask_disappears() {
        let desk = Desk::new(DeskLimits::default());
        let approver = desk.approver("r-1", "alice");
        drop(approver.ask(question("pay")));
        assert!(desk.is_empty(), "a timed-out ask stays listed");
        let asking = approver.ask(question("pay"));
        let _other = desk.approver("r-2", "bob").ask(question("mail"));
        assert_eq!(desk.withdraw_run("r-1"), 1);
        assert!(matches!(asking.await, Reply::Unanswered { why: Some(_) }));
        assert_eq!(desk.pending().len(), 1);
        assert_eq!(desk.pending_of("bob").len(), 1);
        assert!(desk.pending_of("alice").is_empty());
    }

    /// The gate awaits each ask: a thousand of them wait on one thread (a
    /// blocking ask would hold that thread with the first).
    #[tokio::test(flavor = "current_thread")]
    async fn a_thousand_asks_wait_on_one_thread_and_each_gets_its_answer() {
        use crate::audit::{AuditLog, MemorySink};
        use crate::gate::Gate;
        use crate::policy::{Policy, Request};
        let policy = Policy::parse(
            "p.toml",
            "[limits]\nmax_refusals = 5000\n\n[tools.pay]\ncomponent = \"x\"\ndecision = \"ask\"\n\n[approvals]\nmax_pending = 1000\n",
        )
        .unwrap();
        let desk = Desk::new(DeskLimits {
            max_pending: 1000,
            max_per_owner: 1000,
        });
        let sink = MemorySink::default();
        let gate = Arc::new(
            Gate::new(
                Arc::new(policy),
                AuditLog::new("r-many").with_sink(sink.clone()),
            )
            .with_approvals(Some(desk.approver("r-many", "alice")), &[]),
        );
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..1000u32 {
            let gate = gate.clone();
            calls.spawn(async move {
                let arguments = serde_json::json!({ "n": n });
                let request = Request::Tool {
                    name: "pay",
                    arguments: &arguments,
                    schema: None,
                };
                let data = serde_json::json!({ "arguments": &arguments });
                let decided = gate.check("pay", &request, Some(data)).await.unwrap();
                (n, decided.is_ok())
            });
        }
        for _ in 0..100_000 {
            if desk.len() == 1000 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(desk.len(), 1000);
        for ask in desk.pending() {
            let arguments = ask.question.data.clone().unwrap_or_default();
            let approval = if arguments["arguments"]["n"].as_u64().unwrap_or(1) % 2 == 0 {
                Approval::Once
            } else {
                Approval::Deny
            };
            desk.answer(&ask.id, approval, "alice", Some("alice"))
                .unwrap();
        }
        let mut allowed = 0;
        while let Some(joined) = calls.join_next().await {
            let (n, ok) = joined.unwrap();
            assert_eq!(ok, n % 2 == 0, "call {n}");
            allowed += u32::from(ok);
        }
        assert_eq!(allowed, 500);
        assert!(desk.is_empty());
    }
}
