//! `warden:sandbox/model`: the agent's chat requests, decided by the
//! policy's `[model]` section and answered by the run's provider.

use super::{AgentRole, GuestState, brief, to_wit};
use crate::audit::{Kind, Outcome};
use crate::bindings::agent::warden::sandbox::model as wit;
use crate::bindings::{WitFinishReason, WitMessage, WitRole, WitToolCall, WitUsage};
use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall, ToolSpec};
use crate::gate::{Gate, GuestError};
use crate::policy::Request;
use crate::provider::ModelProvider;
use crate::secrets::{Clean, Redactions};
use serde_json::json;
use std::io;

/// Longest tool-call id a request may carry (providers' ids are ~30 bytes).
pub const MAX_ID_LEN: usize = 256;
/// Longest tool or model name a request may carry.
pub const MAX_NAME_LEN: usize = 128;

/// Decide and perform one chat request: check its ids and names are of
/// sane length, pass it through the one redaction path (secret values,
/// then the policy's patterns), clamp the output allowance, decide
/// (allowed model, deny patterns, budgets against an estimate that counts
/// every byte), call the provider, redact the answer or error the same
/// way, count the usage, and label and index what the agent receives. The
/// outer `Err` means the audit log failed (the guest must be stopped); the
/// inner one goes to the guest.
#[tracing::instrument(level = "debug", name = "model_call", skip_all, fields(
    model = %crate::transcript::name(&request.model),
    messages = request.messages.len(),
))]
pub async fn chat(
    gate: &Gate,
    provider: &dyn ModelProvider,
    request: ChatRequest,
) -> io::Result<Result<Clean<ChatResponse>, Clean<GuestError>>> {
    if let Some(why) = oversized_field(&request) {
        let error = gate.refuse(
            Kind::Model,
            &request.model,
            "model.request",
            GuestError::Invalid(why),
            None,
        )?;
        return Ok(Err(gate.clean(error)));
    }
    let policy = &gate.policy().model;
    // Secret values first (the key, `[secrets]`), then the policy's
    // patterns: nothing either names leaves the host.
    let mut secrets_redacted = Redactions::new();
    let mut redactions = 0;
    let request = gate
        .secrets()
        .clean(request, &mut secrets_redacted)
        .map(|mut request| {
            for message in &mut request.messages {
                redactions += policy_redact(policy, &mut message.content);
                for call in &mut message.tool_calls {
                    redactions += policy_redact(policy, &mut call.arguments);
                }
            }
            if let Some(cap) = policy.max_tokens_per_call {
                request.max_tokens = Some(request.max_tokens.map_or(cap, |asked| asked.min(cap)));
            }
            request
        });
    let estimated = estimate_tokens(&request);
    // Outside any lock: a request can be large.
    let request_sha256 = request.sha256();
    let decision_data = json!({
        "messages": request.messages.len(),
        "request_sha256": request_sha256,
        "tools": request.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "max_tokens": request.max_tokens,
        "estimated_tokens": estimated,
        "redactions": redactions,
        "secrets_redacted": secrets_redacted,
    });
    let permit = match gate
        .check(
            &request.model,
            &Request::Model {
                model: &request.model,
                messages: &request.messages,
                estimated_tokens: estimated,
            },
            Some(decision_data),
        )
        .await?
    {
        Ok(permit) => {
            tracing::debug!(decision = "allow", rule = %permit.rule(), estimated);
            permit
        }
        Err(refusal) => {
            tracing::debug!(decision = "refused");
            return Ok(Err(gate.clean(refusal)));
        }
    };
    // What comes back (an answer, or a provider's error page that may echo
    // the key) takes the same path as what went out.
    let mut answer_redacted = Redactions::new();
    let answer = match provider.chat(&request).await {
        Ok(response) => Ok(gate.secrets().clean(response, &mut answer_redacted)),
        Err(error) => Err(gate
            .secrets()
            .clean(error.to_string(), &mut answer_redacted)),
    };
    let recorded = provider.record(&request, &answer);
    match answer {
        Ok(response) => {
            let message = &response.message;
            // Only the text: the arguments of the tool calls it asks for are
            // indexed once each call is decided (capability::tools), or a
            // call would be the source of its own values.
            let labels =
                gate.observe_model_output(&request.model, &message.content, response.usage)?;
            let detail = if message.tool_calls.is_empty() {
                brief(&message.content, 200)
            } else {
                let names: Vec<_> = message.tool_calls.iter().map(|c| c.name.as_str()).collect();
                format!("asks for {}", names.join(", "))
            };
            gate.complete(
                permit,
                Outcome::Ok,
                detail,
                Some(json!({
                    "model": response.model,
                    "text": message.content,
                    "tool_calls": message.tool_calls,
                    "usage": response.usage,
                    "usage_reported": response.usage_reported,
                    "finish_reason": response.finish_reason,
                    "labels_added": labels,
                    "secrets_redacted": answer_redacted,
                })),
            )?;
            match recorded {
                Ok(()) => Ok(Ok(response)),
                Err(error) => Ok(Err(gate.clean(GuestError::Failed(error.to_string())))),
            }
        }
        Err(error) => {
            let error =
                error.map(|text| GuestError::Failed(format!("the model provider failed: {text}")));
            // A provider's error text reaches the agent too: it carries the
            // model's labels like an answer would.
            let labels =
                gate.observe_model_output(&request.model, error.reason(), Default::default())?;
            gate.complete(
                permit,
                Outcome::Failed,
                error.reason(),
                Some(json!({ "labels_added": labels, "secrets_redacted": answer_redacted })),
            )?;
            Ok(Err(error))
        }
    }
}

/// Replace matches of the policy's `[model] redact` patterns (fixed text
/// in, nothing from outside); how many were replaced.
fn policy_redact(policy: &crate::policy::ModelPolicy, text: &mut String) -> usize {
    let (redacted, count) = policy.redact(text);
    if count > 0 {
        *text = redacted.into_owned();
    }
    count
}

/// Ids and names are bounded, so no field but the content can carry bulk
/// (the estimate counts them all the same).
fn oversized_field(request: &ChatRequest) -> Option<String> {
    let too_long = |what: &str, text: &str, max: usize| {
        (text.len() > max)
            .then(|| format!("{what} is {} bytes; at most {max} are allowed", text.len()))
    };
    if let Some(why) = too_long("the model name", &request.model, MAX_NAME_LEN) {
        return Some(why);
    }
    for tool in &request.tools {
        if let Some(why) = too_long("a tool name", &tool.name, MAX_NAME_LEN) {
            return Some(why);
        }
    }
    for message in &request.messages {
        if let Some(id) = &message.tool_call_id
            && let Some(why) = too_long("a tool_call_id", id, MAX_ID_LEN)
        {
            return Some(why);
        }
        for call in &message.tool_calls {
            if let Some(why) = too_long("a tool call's id", &call.id, MAX_ID_LEN)
                .or_else(|| too_long("a tool call's name", &call.name, MAX_NAME_LEN))
            {
                return Some(why);
            }
        }
    }
    None
}

/// The most tokens a request could use: its text at four bytes a token,
/// plus the output it allows (or 1024 when it sets no limit). Budgets are
/// checked against this before the call, and against the provider's own
/// count after it.
pub fn estimate_tokens(request: &ChatRequest) -> u64 {
    request.text_len().div_ceil(4) as u64 + u64::from(request.max_tokens.unwrap_or(1024))
}

impl wit::Host for GuestState<AgentRole> {
    async fn chat(
        &mut self,
        request: wit::ChatRequest,
    ) -> wasmtime::Result<Result<wit::ChatResponse, crate::bindings::WitError>> {
        let provider = self.role.provider.clone();
        let request = decode_request(request, provider.default_model());
        let result = chat(&self.gate, &*provider, request).await?;
        Ok(result.map(encode_response).map_err(to_wit))
    }
}

fn decode_request(request: wit::ChatRequest, default_model: &str) -> ChatRequest {
    ChatRequest {
        messages: request.messages.into_iter().map(decode_message).collect(),
        tools: request
            .tools
            .into_iter()
            .map(|spec| ToolSpec {
                // A guest may send a schema that is not JSON (or too many
                // values to hold parsed); keep it as text rather than
                // refuse: the provider decides what to do.
                parameters: super::strict_json::parse(&spec.parameters_schema)
                    .ok()
                    .unwrap_or(serde_json::Value::String(spec.parameters_schema)),
                name: spec.name,
                description: spec.description,
            })
            .collect(),
        model: request.model.unwrap_or_else(|| default_model.to_string()),
        max_tokens: request.max_tokens,
        temperature: request.temperature,
    }
}

fn decode_message(message: WitMessage) -> Message {
    Message {
        role: match message.role {
            WitRole::System => Role::System,
            WitRole::User => Role::User,
            WitRole::Assistant => Role::Assistant,
            WitRole::Tool => Role::Tool,
        },
        content: message.content,
        tool_calls: message
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: message.tool_call_id,
    }
}

fn encode_response(response: Clean<ChatResponse>) -> wit::ChatResponse {
    let response = response.into_inner();
    let message = response.message;
    wit::ChatResponse {
        message: WitMessage {
            role: match message.role {
                Role::System => WitRole::System,
                Role::User => WitRole::User,
                Role::Assistant => WitRole::Assistant,
                Role::Tool => WitRole::Tool,
            },
            content: message.content,
            tool_calls: message
                .tool_calls
                .into_iter()
                .map(|c| WitToolCall {
                    id: c.id,
                    name: c.name,
                    arguments: c.arguments,
                })
                .collect(),
            tool_call_id: message.tool_call_id,
        },
        usage: WitUsage {
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
        },
        finish_reason: match response.finish_reason {
            FinishReason::Stop => WitFinishReason::Stop,
            FinishReason::ToolCalls => WitFinishReason::ToolCalls,
            FinishReason::Length => WitFinishReason::Length,
            FinishReason::ContentFilter => WitFinishReason::ContentFilter,
            FinishReason::Other => WitFinishReason::Other,
        },
        model: response.model,
    }
}
