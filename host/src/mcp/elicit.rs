//! Asks answered by the MCP client's person: when the client declares the
//! `elicitation` capability at `initialize` (revision 2025-06-18 and
//! later), an `ask` during `tools/call` becomes an `elicitation/create`
//! request to the client, and its answer decides. Without the capability
//! an ask is refused as today (nobody to ask).
//!
//! Over stdio the one session is the server's ([`Elicitor`] of the
//! server). Over `--http` every MCP session has its own: the question goes
//! out as an event on the event stream of the POST that carries the
//! `tools/call` (the call's [`Route`], set for the call's task), and the
//! client POSTs its answer with the session's `Mcp-Session-Id`, which
//! routes it to that session's questions and no other's. A POST that does
//! not accept `text/event-stream` has nowhere to be asked: its ask is
//! refused at once, saying so.
//!
//! Threat model: the client is the person. Whatever the client answers is
//! what the person said, so a malicious client can approve anything the
//! policy lets a person approve, never more (an `allow` still needs the
//! policy's `ask`; budgets and labels are decided again after the answer).
//! What it sends back is untrusted input: only an exact
//! `{"action": "accept", "content": {"answer": "once"|"run"|"deny"}}` (or a
//! decline, which is a refusal) is taken; anything else is "nobody
//! answered". Over HTTP `run` is not offered (nor taken): every MCP session
//! shares the one warden session, so "for the rest of the session" would
//! approve other clients' calls. Questions waiting are bounded by
//! `[approvals] max_pending`, each waits at most `[approvals] timeout`, an
//! answer to an id not waiting (never sent, another session's, answered,
//! timed out) is dropped and only counted, and a client that never answers
//! stalls only the calls it was asked about; one that closes the stream
//! (or ends the session) refuses them at once.

use super::{Gauge, Sink};
use crate::capability::brief;
use crate::gate::{Approval, Approver, Asking, Question, Reply};
use crate::policy::printable;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};

/// The prefix of the ids of warden's requests to the client.
const ID_PREFIX: &str = "warden-elicit-";

tokio::task_local! {
    /// Where an HTTP call's ask goes: its MCP session and the event stream
    /// of its POST. Unset over stdio, whose one session is the server's.
    static ROUTE: Route;
}

/// An HTTP call's way to its client's person.
#[derive(Clone)]
pub(super) struct Route {
    /// The call's MCP session's questions.
    pub(super) asks: Arc<Elicitor>,
    /// The POST's event stream, or why the call has none (the refusal's
    /// reason).
    pub(super) stream: Result<Sink, String>,
}

/// Run `call` with its asks going through `route` (none: the server's
/// own session, stdio).
pub(super) async fn within<F: Future>(route: Option<Route>, call: F) -> F::Output {
    match route {
        Some(route) => ROUTE.scope(route, call).await,
        None => call.await,
    }
}

/// One MCP session's channel to the client's person.
pub(super) struct Elicitor {
    /// Whether the client declared `elicitation` (form mode) at a revision
    /// that has it.
    enabled: AtomicBool,
    /// The client's name from `initialize`, for the record.
    client: Mutex<String>,
    /// Where requests go over stdio; `None` before the session writes and
    /// after it (and always over HTTP, where each call has its stream).
    sink: Mutex<Option<Sink>>,
    /// Requests sent and not answered, by id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Set (under `waiting`'s lock) when the session ended: a call still
    /// running asks nobody.
    closed: AtomicBool,
    /// Told when a request is sent, so the reader reads its answer even
    /// when every slot is taken by calls waiting for answers.
    sent: Notify,
    /// Shared by every session of a server: an id names one question of
    /// one session, never two.
    next: Arc<AtomicU64>,
    max_waiting: usize,
    /// Whether `run` (for the rest of the warden session) is offered.
    offers_run: bool,
    gauge: Gauge,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Elicitor {
    /// The server's own session (stdio).
    pub(super) fn new(max_waiting: u32, gauge: Gauge) -> Arc<Self> {
        Arc::new(Elicitor {
            enabled: AtomicBool::new(false),
            client: Mutex::new(String::new()),
            sink: Mutex::new(None),
            waiting: Mutex::default(),
            closed: AtomicBool::new(false),
            sent: Notify::new(),
            next: Arc::new(AtomicU64::new(1)),
            max_waiting: usize::try_from(max_waiting).unwrap_or(usize::MAX),
            offers_run: true,
            gauge,
        })
    }

    /// A new HTTP session's own questions: its ids from the same counter,
    /// `run` not offered, nothing enabled until its `initialize`.
    pub(super) fn for_http_session(&self) -> Arc<Self> {
        Arc::new(Elicitor {
            enabled: AtomicBool::new(false),
            client: Mutex::new(String::new()),
            sink: Mutex::new(None),
            waiting: Mutex::default(),
            closed: AtomicBool::new(false),
            sent: Notify::new(),
            next: self.next.clone(),
            max_waiting: self.max_waiting,
            offers_run: false,
            gauge: self.gauge.clone(),
        })
    }

    /// The approver the session's gate asks.
    pub(super) fn approver(self: &Arc<Self>) -> Arc<dyn Approver> {
        Arc::new(ClientApprover(self.clone()))
    }

    /// At `initialize`: whether the client can be asked.
    pub(super) fn initialized(&self, version: &str, params: &Value, client: &str) {
        let declared = params
            .get("capabilities")
            .and_then(|c| c.get("elicitation"))
            .and_then(Value::as_object)
            // An empty object means form mode; a client listing modes
            // must list `form` (warden asks with a form, never a URL).
            .is_some_and(|modes| modes.is_empty() || modes.contains_key("form"));
        self.enabled
            .store(declared && version >= "2025-06-18", Ordering::Relaxed);
        *lock(&self.client) = brief(&printable(client), 100);
    }

    /// Whether the client declared it can be asked.
    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The session writes to `sink` from now on (`None`: it stopped).
    pub(super) fn connect(&self, sink: Option<Sink>) {
        let stopped = sink.is_none();
        *lock(&self.sink) = sink;
        if stopped {
            self.close();
        }
    }

    /// The session ended: nobody will answer now, so every waiting ask is
    /// unanswered (its call goes on and is refused), and so is every later
    /// one.
    pub(super) fn close(&self) {
        let mut waiting = lock(&self.waiting);
        self.closed.store(true, Ordering::Relaxed);
        let dropped = std::mem::take(&mut *waiting);
        drop(waiting);
        self.gauge
            .0
            .asks_waiting
            .fetch_sub(dropped.len(), Ordering::Relaxed);
    }

    /// Whether requests wait for the client's answer.
    pub(super) fn has_waiting(&self) -> bool {
        !lock(&self.waiting).is_empty()
    }

    /// Resolves once a request waits for an answer.
    pub(super) async fn waiting_for_answers(&self) {
        loop {
            let sent = self.sent.notified();
            if self.has_waiting() {
                return;
            }
            sent.await;
        }
    }

    /// Stop waiting for `id`: its answer, if it still waits for one.
    fn forget(&self, id: &str) -> Option<oneshot::Sender<Value>> {
        let removed = lock(&self.waiting).remove(id);
        if removed.is_some() {
            self.gauge.0.asks_waiting.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// A message with no `method`: an answer to one of warden's requests.
    /// Answers to ids this session is not waiting for (never sent, sent
    /// by another session, answered, given up on) are dropped and counted:
    /// a client cannot grow anything by sending them.
    pub(super) fn response(&self, message: serde_json::Map<String, Value>) {
        let waiting = message
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| self.forget(id));
        match waiting {
            Some(waiting) => {
                let _ = waiting.send(Value::Object(message));
            }
            None => {
                self.gauge.0.answers_ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Ask the client's person about `question` through `stream`.
    fn ask(self: &Arc<Self>, question: Question, stream: Result<Sink, Option<String>>) -> Asking {
        if !self.enabled() {
            return Box::pin(async { Reply::Unanswered { why: None } });
        }
        let sink = match stream {
            Ok(sink) => sink,
            Err(why) => return Box::pin(async { Reply::Unanswered { why } }),
        };
        let id = format!("{ID_PREFIX}{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if self.closed.load(Ordering::Relaxed) {
                return Box::pin(async {
                    Reply::Unanswered {
                        why: Some("the MCP session ended before the client answered".into()),
                    }
                });
            }
            if waiting.len() >= self.max_waiting {
                let n = waiting.len();
                return Box::pin(async move {
                    Reply::Unanswered {
                        why: Some(format!(
                            "{n} questions to the MCP client are already waiting for an answer, the most the policy allows (approvals.max_pending)"
                        )),
                    }
                });
            }
            waiting.insert(id.clone(), sender);
            self.gauge.0.asks_waiting.fetch_add(1, Ordering::Relaxed);
        }
        let client = lock(&self.client).clone();
        let offered = self.offered();
        // Through the session's one exit (redacted like every message).
        sink.send(json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": message(&question),
                "requestedSchema": schema(offered),
            },
        }));
        self.sent.notify_waiters();
        let forget = Forget {
            elicitor: self.clone(),
            id,
        };
        Box::pin(async move {
            let reply = tokio::select! {
                answer = receiver => match answer {
                    Ok(answer) => decode(&answer, &client, offered),
                    Err(_) => Reply::Unanswered {
                        why: Some("the MCP session ended before the client answered".into()),
                    },
                },
                // Over HTTP: the client closed the call's event stream (it
                // went away); over stdio: the client stopped reading.
                () = sink.closed() => Reply::Unanswered {
                    why: Some("the MCP client closed the connection before it answered".into()),
                },
            };
            drop(forget);
            reply
        })
    }

    /// The answers the person is offered.
    fn offered(&self) -> &'static [&'static str] {
        if self.offers_run {
            &["once", "run", "deny"]
        } else {
            &["once", "deny"]
        }
    }
}

/// Stops waiting for request `id` when dropped (answered, timed out).
struct Forget {
    elicitor: Arc<Elicitor>,
    id: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.elicitor.forget(&self.id);
    }
}

struct ClientApprover(Arc<Elicitor>);

impl Approver for ClientApprover {
    fn ask(&self, question: Question) -> Asking {
        match ROUTE.try_with(Route::clone) {
            Ok(route) => route.asks.ask(question, route.stream.map_err(Some)),
            Err(_) => {
                let sink = lock(&self.0.sink).clone();
                self.0.ask(question, sink.ok_or(None))
            }
        }
    }
}

/// The form the person fills in: one field, `answer`, one of `offered`.
fn schema(offered: &[&str]) -> Value {
    let name = |answer: &&str| match *answer {
        "once" => "Allow once",
        "run" => "Allow for the session",
        _ => "Deny",
    };
    let description = if offered.contains(&"run") {
        "once: allow this call; run: allow it and every later call under the same rules in this session; deny: refuse it"
    } else {
        "once: allow this call; deny: refuse it"
    };
    json!({
        "type": "object",
        "properties": {
            "answer": {
                "type": "string",
                "title": "Your answer",
                "description": description,
                "enum": offered,
                "enumNames": offered.iter().map(name).collect::<Vec<_>>(),
            }
        },
        "required": ["answer"],
    })
}

/// The text the client's person reads: the tool, the rule, why, and each
/// value with where warden saw it. Guest text is quoted as JSON strings.
fn message(question: &Question) -> String {
    let quote = |text: &str| Value::String(text.to_string()).to_string();
    let mut out = format!(
        "warden: approval needed for the tool {}\nrule: {}\nwhy: {}",
        quote(&question.subject),
        question
            .rules
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        question.reason
    );
    if let Some(data) = &question.data {
        let arguments = data.get("arguments").unwrap_or(data);
        out.push_str(&format!(
            "\narguments: {}",
            brief(&arguments.to_string(), 2000)
        ));
    }
    for seen in &question.explained.values {
        out.push_str(&format!(
            "\nvalue {} = {}: {}",
            quote(&seen.field),
            quote(&seen.value),
            seen.seen
        ));
    }
    if question.explained.unlisted > 0 {
        out.push_str(&format!(
            "\nand {} more values, not shown",
            question.explained.unlisted
        ));
    }
    for label in &question.explained.labels {
        out.push_str(&format!(
            "\nlabel {}: brought by {}",
            quote(&label.label),
            label.brought_by.join(", ")
        ));
    }
    out
}

/// The client's answer, taken only in its exact expected shape and with
/// one of the `offered` answers.
fn decode(answer: &Value, client: &str, offered: &[&str]) -> Reply {
    let by = Some(format!("via the MCP client `{client}`"));
    let choices = offered
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>();
    let malformed = |what: &str| Reply::Unanswered {
        why: Some(format!(
            "the MCP client's answer to elicitation/create {what}; expected {{\"action\": \"accept\", \"content\": {{\"answer\": {}}}}}",
            choices.join("|")
        )),
    };
    if let Some(error) = answer.get("error") {
        let text = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Reply::Unanswered {
            why: Some(format!(
                "the MCP client refused to ask its person: {}",
                brief(&printable(text), 200)
            )),
        };
    }
    let Some(result) = answer.get("result").and_then(Value::as_object) else {
        return malformed("has no `result` object");
    };
    match result.get("action").and_then(Value::as_str) {
        Some("accept") => {}
        Some("decline") => {
            return Reply::Answered {
                approval: Approval::Deny,
                by,
            };
        }
        Some("cancel") => {
            return Reply::Unanswered {
                why: Some("the MCP client's person dismissed the question".into()),
            };
        }
        Some(other) => {
            return malformed(&format!(
                "has the action `{}`",
                brief(&printable(other), 40)
            ));
        }
        None => return malformed("has no string `action`"),
    }
    let answer = result
        .get("content")
        .and_then(|c| c.get("answer"))
        .and_then(Value::as_str)
        .filter(|answer| offered.contains(answer));
    match answer.and_then(crate::approvals::parse_answer) {
        Some(approval) => Reply::Answered { approval, by },
        None => malformed(&format!(
            "accepted without an `answer` of {}",
            choices.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STDIO: &[&str] = &["once", "run", "deny"];
    const HTTP: &[&str] = &["once", "deny"];

    #[test]
    fn over_http_run_is_neither_offered_nor_taken() {
        let run = json!({ "result": { "action": "accept", "content": { "answer": "run" } } });
        let Reply::Unanswered { why: Some(why) } = decode(&run, "c", HTTP) else {
            panic!("`run` taken over HTTP");
        };
        assert!(
            why.contains(r#"expected {"action": "accept", "content": {"answer": "once"|"deny"}}"#),
            "{why}"
        );
        let once = json!({ "result": { "action": "accept", "content": { "answer": "once" } } });
        assert!(matches!(
            decode(&once, "c", HTTP),
            Reply::Answered {
                approval: Approval::Once,
                ..
            }
        ));
        assert_eq!(
            schema(HTTP)["properties"]["answer"]["enum"],
            json!(["once", "deny"])
        );
        assert_eq!(
            schema(HTTP)["properties"]["answer"]["enumNames"],
            json!(["Allow once", "Deny"])
        );
        assert_eq!(
            schema(STDIO)["properties"]["answer"]["enum"],
            json!(["once", "run", "deny"])
        );
    }

    #[test]
    fn only_the_exact_shape_is_taken() {
        let ok = json!({ "result": { "action": "accept", "content": { "answer": "run" } } });
        assert_eq!(
            decode(&ok, "c", STDIO),
            Reply::Answered {
                approval: Approval::ForRun,
                by: Some("via the MCP client `c`".into())
            }
        );
        for bad in [
            json!({ "result": { "action": "accept", "content": { "answer": "yes" } } }),
            json!({ "result": { "action": "accept", "content": { "answer": ["once"] } } }),
            json!({ "result": { "action": "accept" } }),
            json!({ "result": { "action": "ACCEPT", "content": { "answer": "once" } } }),
            json!({ "result": "accept" }),
            json!({}),
        ] {
            assert!(
                matches!(decode(&bad, "c", STDIO), Reply::Unanswered { why: Some(_) }),
                "{bad}"
            );
        }
        let declined = json!({ "result": { "action": "decline" } });
        assert!(matches!(
            decode(&declined, "c", STDIO),
            Reply::Answered {
                approval: Approval::Deny,
                ..
            }
        ));
    }
}
