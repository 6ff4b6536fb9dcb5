//! `warden:sandbox/model`: the agent's chat requests, decided by the
//! policy's `[model]` section and answered by the run's provider.

use super::{AgentRole, GuestState, brief, to_wit};
use crate::audit::Outcome;
use crate::bindings::agent::warden::sandbox::model as wit;
use crate::bindings::{WitFinishReason, WitMessage, WitRole, WitToolCall, WitUsage};
use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall, ToolSpec};
use crate::gate::{Gate, GuestError};
use crate::policy::Request;
use crate::provider::ModelProvider;
use crate::secrets::Redactions;
use serde_json::json;
use std::io;

/// Decide and perform one chat request: redact what the policy redacts,
/// clamp the output allowance, decide (allowed model, deny patterns,
/// budgets against an estimate), call the provider, count the usage, and
/// label and index the answer. The outer `Err` means the audit log failed
/// (the guest must be stopped); the inner one goes to the guest.
pub async fn chat(
    gate: &Gate,
    provider: &dyn ModelProvider,
    mut request: ChatRequest,
) -> io::Result<Result<ChatResponse, GuestError>> {
    let policy = &gate.policy().model;
    // Secret values first (the key, `[secrets]`), then the policy's
    // patterns: nothing either names leaves the host.
    let secrets = gate.secrets();
    let mut secrets_redacted = Redactions::new();
    let mut redactions = 0;
    for message in &mut request.messages {
        secrets.redact_in_place(&mut message.content, &mut secrets_redacted);
        let (text, count) = policy.redact(&message.content);
        if count > 0 {
            redactions += count;
            message.content = text.into_owned();
        }
        for call in &mut message.tool_calls {
            secrets.redact_in_place(&mut call.arguments, &mut secrets_redacted);
            let (text, count) = policy.redact(&call.arguments);
            if count > 0 {
                redactions += count;
                call.arguments = text.into_owned();
            }
        }
    }
    for tool in &mut request.tools {
        secrets.redact_in_place(&mut tool.description, &mut secrets_redacted);
    }
    if let Some(cap) = policy.max_tokens_per_call {
        request.max_tokens = Some(request.max_tokens.map_or(cap, |asked| asked.min(cap)));
    }
    let estimated = estimate_tokens(&request);
    let decision_data = json!({
        "messages": request.messages.len(),
        "tools": request.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "max_tokens": request.max_tokens,
        "estimated_tokens": estimated,
        "redactions": redactions,
        "secrets_redacted": secrets_redacted,
    });
    let permit = match gate.check(
        &request.model,
        &Request::Model {
            model: &request.model,
            messages: &request.messages,
            estimated_tokens: estimated,
        },
        Some(decision_data),
    )? {
        Ok(permit) => permit,
        Err(refusal) => return Ok(Err(refusal)),
    };
    match provider.chat(&request).await {
        Ok(response) => {
            let message = &response.message;
            // Only the text: the arguments of the tool calls it asks for are
            // indexed once each call is decided (capability::tools), or a
            // call would be the source of its own values.
            let labels =
                gate.observe_model_output(&request.model, &message.content, response.usage);
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
                })),
            )?;
            Ok(Ok(response))
        }
        Err(error) => {
            let error = GuestError::Failed(format!("the model provider failed: {error}"));
            gate.complete(permit, Outcome::Failed, error.reason(), None)?;
            Ok(Err(error))
        }
    }
}

/// The most tokens a request could use: its text at four bytes a token,
/// plus the output it allows (or 1024 when it sets no limit). Budgets are
/// checked against this before the call, and against the provider's own
/// count after it.
pub fn estimate_tokens(request: &ChatRequest) -> u64 {
    let bytes: usize = request
        .messages
        .iter()
        .map(Message::text_len)
        .sum::<usize>()
        + request
            .tools
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.to_string().len())
            .sum::<usize>();
    bytes.div_ceil(4) as u64 + u64::from(request.max_tokens.unwrap_or(1024))
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
                // A guest may send a schema that is not JSON; keep it as text
                // rather than refuse: the provider decides what to do.
                parameters: serde_json::from_str(&spec.parameters_schema)
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

fn encode_response(response: ChatResponse) -> wit::ChatResponse {
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
