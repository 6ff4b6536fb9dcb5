//! Asks as NATS requests: the worker sends the question on the run's
//! approve subject and whoever serves approvals (`warden serve --nats`
//! relaying to its desk, or any client) answers. No responder means nobody
//! can be asked; no answer in time is a denial. The question holds only
//! what the gate already redacted; the answer is one of three words, or
//! `unanswered` with why (the relay's person did not answer in time).

use crate::gate::{Approval, Approver, Asking, Question, Reply};
use crate::policy::Rule;
use crate::policy::explain::Explanation;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest answer read.
const MAX_ANSWER: usize = 1024;

/// Longest question a relay reads.
pub const MAX_QUESTION: usize = 256 << 10;

/// What an approver answers on the approve subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// `once`, `run`, `deny`, or `unanswered` (nobody answered: the ask is
    /// refused as unanswered, with `why`).
    pub answer: String,
    /// Who answered, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why nobody answered (with `unanswered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Answer {
    /// The answer that carries `reply` back to the asking worker.
    pub fn of(reply: &Reply) -> Self {
        match reply {
            Reply::Answered { approval, by } => Answer {
                answer: match approval {
                    Approval::Once => "once",
                    Approval::ForRun => "run",
                    Approval::Deny => "deny",
                }
                .into(),
                by: by.clone(),
                why: None,
            },
            Reply::Unanswered { why } => Answer {
                answer: "unanswered".into(),
                by: None,
                why: why.clone(),
            },
        }
    }
}

/// The question as [`NatsApprover::payload`] sent it (what a relay reads).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sent {
    run_id: String,
    kind: crate::audit::Kind,
    subject: String,
    rules: Vec<String>,
    reason: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    explained: Explanation,
    #[serde(default)]
    not_vouched: Option<String>,
    timeout_ms: u64,
}

/// A question read back from the approve subject of `run_id`, for a
/// relay to put before a person: refused when it is too large, not a
/// question, or names another run.
pub fn question_from_relay(run_id: &str, payload: &[u8]) -> Result<Question, String> {
    if payload.len() > MAX_QUESTION {
        return Err(format!(
            "a question of {} bytes is larger than {MAX_QUESTION}",
            payload.len()
        ));
    }
    let sent: Sent = serde_json::from_slice(payload).map_err(|e| format!("not a question: {e}"))?;
    if sent.run_id != run_id {
        return Err("the question names another run".into());
    }
    Ok(Question {
        kind: sent.kind,
        subject: sent.subject,
        rules: sent.rules.into_iter().map(Rule::new).collect(),
        reason: sent.reason,
        data: sent.data,
        labels: sent.labels,
        explained: sent.explained,
        not_vouched: sent.not_vouched,
        timeout: Duration::from_millis(sent.timeout_ms),
    })
}

/// Asks over NATS request/reply.
pub struct NatsApprover {
    client: async_nats::Client,
    run_id: String,
    timeout: Duration,
}

impl NatsApprover {
    /// Ask on [`super::approve_subject`] of `run_id`, waiting `timeout`.
    pub fn new(client: async_nats::Client, run_id: &str, timeout: Duration) -> Self {
        NatsApprover {
            client,
            run_id: run_id.to_string(),
            timeout,
        }
    }

    /// The question as sent (every field from the gate: redacted).
    pub fn payload(&self, question: &Question) -> serde_json::Value {
        question_payload(&self.run_id, self.timeout, question)
    }
}

/// `question` of `run_id` as it travels on the approve subject, its
/// timeout the shorter of `timeout` and the policy's.
pub fn question_payload(run_id: &str, timeout: Duration, question: &Question) -> serde_json::Value {
    serde_json::json!({
        "run_id": run_id,
        "kind": question.kind.as_str(),
        "subject": question.subject,
        "rules": question.rules.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "reason": question.reason,
        "data": question.data,
        "labels": question.labels,
        "explained": question.explained,
        "not_vouched": question.not_vouched,
        "timeout_ms": timeout.min(question.timeout).as_millis() as u64,
    })
}

/// Send `payload` on the run's approve subject and read the answer.
async fn request(
    client: async_nats::Client,
    run_id: String,
    timeout: Duration,
    payload: Vec<u8>,
) -> Reply {
    let subject = super::approve_subject(&run_id);
    let asked = tokio::time::timeout(timeout, client.request(subject, payload.into())).await;
    let nobody_in_time = || Reply::Unanswered {
        why: Some("nobody answered on the run's approve subject in time".to_string()),
    };
    let reply = match asked {
        Err(_) => return nobody_in_time(),
        Ok(Err(error)) => {
            return match error.kind() {
                async_nats::client::RequestErrorKind::TimedOut => nobody_in_time(),
                // No responders, a subject or payload NATS refuses:
                // nobody can be asked.
                _ => Reply::Unanswered { why: None },
            };
        }
        Ok(Ok(reply)) => reply,
    };
    reply_of(&reply.payload)
}

/// The reply an answer's payload gives; anything but an answer is a
/// denial.
fn reply_of(payload: &[u8]) -> Reply {
    let deny = |by| Reply::Answered {
        approval: Approval::Deny,
        by,
    };
    if payload.len() > MAX_ANSWER {
        return deny(None);
    }
    match serde_json::from_slice::<Answer>(payload) {
        Ok(answer) => {
            // The gate makes `by` printable and cuts it where it records it.
            let by = answer.by;
            match answer.answer.as_str() {
                "once" => Reply::Answered {
                    approval: Approval::Once,
                    by,
                },
                "run" => Reply::Answered {
                    approval: Approval::ForRun,
                    by,
                },
                "unanswered" => Reply::Unanswered {
                    why: Some(answer.why.unwrap_or_else(|| "nobody answered".into())),
                },
                _ => deny(by),
            }
        }
        Err(_) => deny(None),
    }
}

impl Approver for NatsApprover {
    fn ask(&self, question: Question) -> Asking {
        let Ok(payload) = serde_json::to_vec(&self.payload(&question)) else {
            return Box::pin(std::future::ready(Reply::Unanswered {
                why: Some("the question could not be written as JSON".to_string()),
            }));
        };
        let timeout = self.timeout.min(question.timeout);
        Box::pin(request(
            self.client.clone(),
            self.run_id.clone(),
            timeout,
            payload,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::explain::ValueSeen;

    fn question() -> Question {
        Question {
            kind: crate::audit::Kind::Tool,
            subject: "send_email".into(),
            rules: vec![Rule::new("tools.send_email.args.to")],
            reason: "a value the agent was given by a tool".into(),
            data: Some(serde_json::json!({ "arguments": { "to": "x@example.com" } })),
            labels: vec!["untrusted".into()],
            explained: Explanation {
                values: vec![ValueSeen {
                    field: "to".into(),
                    value: "x@example.com".into(),
                    rules: vec!["tools.send_email.args.to".into()],
                    seen: "in the result of `fetch`".into(),
                }],
                labels: Vec::new(),
                unlisted: 0,
            },
            not_vouched: None,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_relay_reads_back_the_question_the_worker_sent() {
        let payload = question_payload("r-1", Duration::from_secs(300), &question());
        let sent = serde_json::to_vec(&payload).unwrap();
        let read = question_from_relay("r-1", &sent).unwrap();
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::to_value(question()).unwrap()
        );
        assert!(
            question_from_relay("r-2", &sent)
                .unwrap_err()
                .contains("another run")
        );
        assert!(question_from_relay("r-1", b"{}").is_err());
        let huge = vec![b' '; MAX_QUESTION + 1];
        assert!(
            question_from_relay("r-1", &huge)
                .unwrap_err()
                .contains("larger")
        );
    }

    #[test]
    fn every_reply_travels_as_an_answer_and_back() {
        for reply in [
            Reply::Answered {
                approval: Approval::Once,
                by: Some("alice".into()),
            },
            Reply::Answered {
                approval: Approval::ForRun,
                by: None,
            },
            Reply::Answered {
                approval: Approval::Deny,
                by: Some("bob".into()),
            },
            Reply::Unanswered {
                why: Some("the ask timed out on the desk".into()),
            },
        ] {
            let answer = Answer::of(&reply);
            let back = reply_of(&serde_json::to_vec(&answer).unwrap());
            assert_eq!(back, reply);
        }
    }
}
