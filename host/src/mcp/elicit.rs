//! Asks answered by the MCP client's person: when the client declares the
//! `elicitation` capability at `initialize` (revision 2025-06-18 and
//! later), an `ask` during `tools/call` becomes an `elicitation/create`
//! request to the client, and its answer decides. Without the capability
//! an ask is refused as today (nobody to ask).
//!
//! Threat model: the client is the person. Whatever the client answers is
//! what the person said, so a malicious client can approve anything the
//! policy lets a person approve, never more (an `allow` still needs the
//! policy's `ask`; budgets and labels are decided again after the answer).
//! What it sends back is untrusted input: only an exact
//! `{"action": "accept", "content": {"answer": "once"|"run"|"deny"}}` (or a
//! decline, which is a refusal) is taken; anything else is "nobody
//! answered". Questions waiting are bounded by `[approvals] max_pending`,
//! each waits at most `[approvals] timeout`, and a client that never
//! answers stalls only the calls it was asked about.

use super::Sink;
use crate::capability::brief;
use crate::gate::{Approval, Approver, Asking, Question, Reply};
use crate::policy::printable;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};

/// The prefix of the ids of warden's requests to the client.
const ID_PREFIX: &str = "warden-elicit-";

/// The session's channel to the client's person.
pub(super) struct Elicitor {
    /// Whether the client declared `elicitation` (form mode) at a revision
    /// that has it.
    enabled: AtomicBool,
    /// The client's name from `initialize`, for the record.
    client: Mutex<String>,
    /// Where requests go; `None` before the session writes and after it.
    sink: Mutex<Option<Sink>>,
    /// Requests sent and not answered, by id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Told when a request is sent, so the reader reads its answer even
    /// when every slot is taken by calls waiting for answers.
    sent: Notify,
    next: AtomicU64,
    max_waiting: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Elicitor {
    pub(super) fn new(max_waiting: u32) -> Arc<Self> {
        Arc::new(Elicitor {
            enabled: AtomicBool::new(false),
            client: Mutex::new(String::new()),
            sink: Mutex::new(None),
            waiting: Mutex::default(),
            sent: Notify::new(),
            next: AtomicU64::new(1),
            max_waiting: usize::try_from(max_waiting).unwrap_or(usize::MAX),
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

    /// The session writes to `sink` from now on (`None`: it stopped).
    pub(super) fn connect(&self, sink: Option<Sink>) {
        *lock(&self.sink) = sink;
        if lock(&self.sink).is_none() {
            // Nobody will answer now: every waiting ask is unanswered.
            lock(&self.waiting).clear();
        }
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

    /// A message with no `method`: an answer to one of warden's requests.
    /// Answers to ids warden did not send (or sent and gave up on) are
    /// dropped: a client cannot grow anything by sending them.
    pub(super) fn response(&self, message: serde_json::Map<String, Value>) {
        let Some(id) = message.get("id").and_then(Value::as_str) else {
            return;
        };
        if let Some(waiting) = lock(&self.waiting).remove(id) {
            let _ = waiting.send(Value::Object(message));
        }
    }

    fn ask(self: &Arc<Self>, question: Question) -> Asking {
        if !self.enabled.load(Ordering::Relaxed) {
            return Box::pin(async { Reply::Unanswered { why: None } });
        }
        let Some(sink) = lock(&self.sink).clone() else {
            return Box::pin(async { Reply::Unanswered { why: None } });
        };
        let id = format!("{ID_PREFIX}{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
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
        }
        let client = lock(&self.client).clone();
        // Through the session's one exit (redacted like every message).
        sink.send(json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "elicitation/create",
            "params": {
                "mode": "form",
                "message": message(&question),
                "requestedSchema": {
                    "type": "object",
                    "properties": {
                        "answer": {
                            "type": "string",
                            "title": "Your answer",
                            "description": "once: allow this call; run: allow it and every later call under the same rules in this session; deny: refuse it",
                            "enum": ["once", "run", "deny"],
                            "enumNames": ["Allow once", "Allow for the session", "Deny"],
                        }
                    },
                    "required": ["answer"],
                },
            },
        }));
        self.sent.notify_waiters();
        let forget = Forget {
            elicitor: self.clone(),
            id,
        };
        Box::pin(async move {
            let reply = match receiver.await {
                Ok(answer) => decode(&answer, &client),
                Err(_) => Reply::Unanswered {
                    why: Some("the MCP session ended before the client answered".into()),
                },
            };
            drop(forget);
            reply
        })
    }
}

/// Stops waiting for request `id` when dropped (answered, timed out).
struct Forget {
    elicitor: Arc<Elicitor>,
    id: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.elicitor.waiting).remove(&self.id);
    }
}

struct ClientApprover(Arc<Elicitor>);

impl Approver for ClientApprover {
    fn ask(&self, question: Question) -> Asking {
        self.0.ask(question)
    }
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

/// The client's answer, taken only in its exact expected shape.
fn decode(answer: &Value, client: &str) -> Reply {
    let by = Some(format!("via the MCP client `{client}`"));
    let malformed = |what: &str| Reply::Unanswered {
        why: Some(format!(
            "the MCP client's answer to elicitation/create {what}; expected {{\"action\": \"accept\", \"content\": {{\"answer\": \"once\"|\"run\"|\"deny\"}}}}"
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
        .and_then(Value::as_str);
    match answer.and_then(crate::approvals::parse_answer) {
        Some(approval) => Reply::Answered { approval, by },
        None => malformed("accepted without an `answer` of \"once\", \"run\" or \"deny\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_shape_is_taken() {
        let ok = json!({ "result": { "action": "accept", "content": { "answer": "run" } } });
        assert_eq!(
            decode(&ok, "c"),
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
                matches!(decode(&bad, "c"), Reply::Unanswered { why: Some(_) }),
                "{bad}"
            );
        }
        let declined = json!({ "result": { "action": "decline" } });
        assert!(matches!(
            decode(&declined, "c"),
            Reply::Answered {
                approval: Approval::Deny,
                ..
            }
        ));
    }
}
