//! The Anthropic Messages API with tool use.

use super::http::{ApiKey, Auth, Endpoint};
use super::{BoxFuture, ModelProvider, ProviderError};
use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The API version warden speaks.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the API; this is used when neither the
/// agent nor the policy sets one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A Messages API endpoint.
#[derive(Debug)]
pub struct AnthropicProvider {
    endpoint: Endpoint,
    base: Url,
    url: Url,
    model: String,
    key: ApiKey,
}

impl AnthropicProvider {
    /// A provider for `model` at `base` (e.g. `https://api.anthropic.com`;
    /// a base ending in `/v1` works too).
    pub fn new(endpoint: Endpoint, base: Url, model: String, key: ApiKey) -> Self {
        let path = if base.path().trim_end_matches('/').ends_with("/v1") {
            "messages"
        } else {
            "v1/messages"
        };
        let url = super::join(&base, path);
        AnthropicProvider {
            endpoint,
            base,
            url,
            model,
            key,
        }
    }
}

impl ModelProvider for AnthropicProvider {
    fn default_model(&self) -> &str {
        &self.model
    }

    fn describe(&self) -> String {
        format!(
            "anthropic:{} at {} (key from {})",
            self.model,
            self.base,
            self.key.source()
        )
    }

    fn api_key(&self) -> Option<&ApiKey> {
        Some(&self.key)
    }

    fn chat<'a>(
        &'a self,
        request: &'a crate::secrets::Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let body = encode(request);
            let answer = self
                .endpoint
                .post_json(
                    &self.url,
                    Auth::Header("x-api-key", &self.key),
                    &[("anthropic-version", API_VERSION)],
                    &body,
                )
                .await?;
            decode(&answer, request)
        })
    }
}

/// The request body: system messages go to the top-level `system`; tool
/// results become `tool_result` blocks of a user turn; consecutive turns
/// of one role are merged (the API wants them alternating).
pub fn encode(request: &ChatRequest) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, blocks) = match message.role {
            Role::System => {
                system.push(message.content.as_str());
                continue;
            }
            Role::User => ("user", text_block(&message.content)),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.as_deref().unwrap_or(""),
                    "content": message.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks = text_block(&message.content);
                for call in &message.tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": tool_input(&call.arguments),
                    }));
                }
                ("assistant", blocks)
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                let schema = if tool.parameters.is_object() {
                    tool.parameters.clone()
                } else {
                    json!({ "type": "object" })
                };
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": schema,
                })
            })
            .collect();
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    body
}

/// The API rejects empty text blocks.
fn text_block(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({ "type": "text", "text": text })]
    }
}

/// `tool_use.input` must be an object; arguments the model wrote that are
/// not one are kept under `_raw` so nothing is silently lost.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(map)) => Value::Object(map),
        _ => {
            let mut map = Map::new();
            map.insert("_raw".into(), json!(arguments));
            Value::Object(map)
        }
    }
}

#[derive(Deserialize)]
struct WireMessage {
    content: Vec<Block>,
    model: Option<String>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
}

/// The answer, from the response body.
pub fn decode(body: &Value, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
    let wire = WireMessage::deserialize(body).map_err(|e| ProviderError::Malformed {
        provider: "anthropic",
        error: e.to_string(),
        start: crate::capability::brief(&body.to_string(), 200),
    })?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in wire.content {
        match block {
            Block::Text { text } => {
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(&text);
            }
            Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: input.to_string(),
            }),
            Block::Other => {}
        }
    }
    let finish_reason = match wire.stop_reason.as_deref() {
        Some("end_turn" | "stop_sequence") | None => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    };
    let message = Message {
        role: Role::Assistant,
        content,
        tool_calls,
        tool_call_id: None,
    };
    let usage = wire
        .usage
        .and_then(|u| Some((u.input_tokens?, u.output_tokens?)));
    Ok(ChatResponse::from_provider(
        request,
        message,
        finish_reason,
        usage,
        wire.model,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolSpec;

    fn message(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: None,
        }
    }

    #[test]
    fn encodes_system_tool_use_and_merged_results() {
        let mut assistant = message(Role::Assistant, "");
        assistant.tool_calls = vec![
            ToolCall {
                id: "t1".into(),
                name: "calc".into(),
                arguments: r#"{"expression":"1+1"}"#.into(),
            },
            ToolCall {
                id: "t2".into(),
                name: "calc".into(),
                arguments: "not json".into(),
            },
        ];
        let mut r1 = message(Role::Tool, "2");
        r1.tool_call_id = Some("t1".into());
        let mut r2 = message(Role::Tool, "error: bad");
        r2.tool_call_id = Some("t2".into());
        let request = ChatRequest {
            messages: vec![
                message(Role::System, "be brief"),
                message(Role::User, "add"),
                assistant,
                r1,
                r2,
            ],
            tools: vec![ToolSpec {
                name: "calc".into(),
                description: "math".into(),
                parameters: json!("not a schema"),
            }],
            model: "claude-x".into(),
            max_tokens: None,
            temperature: Some(0.0),
        };
        let body = encode(&request);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{body}");
        assert_eq!(messages[1]["content"].as_array().unwrap().len(), 2);
        assert_eq!(messages[1]["content"][0]["input"]["expression"], "1+1");
        assert_eq!(messages[1]["content"][1]["input"]["_raw"], "not json");
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(messages[2]["content"][1]["tool_use_id"], "t2");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    }

    #[test]
    fn decodes_blocks() {
        let body = json!({"id": "m", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "..."}, {"type": "text", "text": "Let me add."},
                        {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"expression": "1+1"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 12, "output_tokens": 7}});
        let request = ChatRequest {
            messages: vec![],
            tools: vec![],
            model: "claude-x".into(),
            max_tokens: None,
            temperature: None,
        };
        let answer = decode(&body, &request).unwrap();
        assert_eq!(answer.message.content, "Let me add.");
        assert_eq!(
            answer.message.tool_calls[0].arguments,
            r#"{"expression":"1+1"}"#
        );
        assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
        assert_eq!(answer.usage.total(), 19);
        assert!(answer.usage_reported);
    }
}
