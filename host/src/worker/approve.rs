//! Asks as NATS requests: the worker sends the question on the run's
//! approve subject and whoever serves approvals (`warden serve --nats`
//! relaying to its desk, or any client) answers. No responder means nobody
//! can be asked; no answer in time is a denial. The question holds only
//! what the gate already redacted; the answer is one of three words.

use crate::gate::{Approval, Approver, Question};
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
    pub fn payload(&self, question: &Question<'_>) -> serde_json::Value {
        serde_json::json!({
            "run_id": self.run_id,
            "kind": question.kind.as_str(),
            "subject": question.subject,
            "rules": question.rules.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "reason": question.reason,
            "data": question.data,
            "labels": question.labels,
            "not_vouched": question.not_vouched,
            "timeout_ms": self.timeout.as_millis() as u64,
        })
    }

    async fn request(&self, payload: Vec<u8>) -> Option<Approval> {
        let subject = super::approve_subject(&self.run_id);
        let asked =
            tokio::time::timeout(self.timeout, self.client.request(subject, payload.into())).await;
        let reply = match asked {
            // No answer in time: refused.
            Err(_) => return Some(Approval::Deny),
            Ok(Err(error)) => {
                return match error.kind() {
                    async_nats::client::RequestErrorKind::TimedOut => Some(Approval::Deny),
                    // No responders, a subject or payload NATS refuses:
                    // nobody can be asked.
                    _ => None,
                };
            }
            Ok(Ok(reply)) => reply,
        };
        if reply.payload.len() > MAX_ANSWER {
            return Some(Approval::Deny);
        }
        match serde_json::from_slice::<Answer>(&reply.payload) {
            Ok(answer) => Some(match answer.answer.as_str() {
                "once" => Approval::Once,
                "run" => Approval::ForRun,
                _ => Approval::Deny,
            }),
            Err(_) => Some(Approval::Deny),
        }
    }
}

impl Approver for NatsApprover {
    fn ask(&self, question: &Question<'_>) -> Option<Approval> {
        let payload = serde_json::to_vec(&self.payload(question)).ok()?;
        // The gate calls this inside `block_in_place` on a multi-thread
        // runtime; elsewhere there is no runtime to wait on.
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        handle.block_on(self.request(payload))
    }
}
