//! Asks as NATS requests: the worker sends the question on the run's
//! approve subject and whoever serves approvals (`warden serve --nats`
//! relaying to its desk, or any client) answers. No responder means nobody
//! can be asked; no answer in time is a denial. The question holds only
//! what the gate already redacted; the answer is one of three words.

use crate::gate::{Approval, Approver, Asking, Question, Reply};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest answer read.
const MAX_ANSWER: usize = 1024;

/// What an approver answers on the approve subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// `once`, `run` or `deny`.
    pub answer: String,
    /// Who answered, for the record.
    #[serde(default)]
    pub by: Option<String>,
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
        serde_json::json!({
            "run_id": self.run_id,
            "kind": question.kind.as_str(),
            "subject": question.subject,
            "rules": question.rules.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "reason": question.reason,
            "data": question.data,
            "labels": question.labels,
            "explained": question.explained,
            "not_vouched": question.not_vouched,
            "timeout_ms": self.timeout.min(question.timeout).as_millis() as u64,
        })
    }
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
    let deny = |by| Reply::Answered {
        approval: Approval::Deny,
        by,
    };
    if reply.payload.len() > MAX_ANSWER {
        return deny(None);
    }
    match serde_json::from_slice::<Answer>(&reply.payload) {
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
