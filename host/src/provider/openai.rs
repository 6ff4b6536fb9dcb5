//! OpenAI Chat Completions, and every server that speaks it (Ollama,
//! vLLM, llama.cpp's server, OpenRouter, LM Studio) through a base URL.

use super::http::{ApiKey, Auth, Endpoint};
use super::{BoxFuture, ModelProvider, ProviderError};
use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall};
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};

/// Which dialect of Chat Completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// api.openai.com: `max_completion_tokens`, key required.
    OpenAi,
    /// Anything else speaking the format: `max_tokens`, key optional.
    Compatible,
}

/// A Chat Completions endpoint.
#[derive(Debug)]
pub struct OpenAiProvider {
    flavor: Flavor,
    endpoint: Endpoint,
    base: Url,
    url: Url,
    model: String,
    key: Option<ApiKey>,
}

impl OpenAiProvider {
    /// A provider for `model` at `base` (e.g. `https://api.openai.com/v1`).
    pub fn new(
        flavor: Flavor,
        endpoint: Endpoint,
        base: Url,
        model: String,
        key: Option<ApiKey>,
    ) -> Self {
        let url = super::join(&base, "chat/completions");
        OpenAiProvider {
            flavor,
            endpoint,
            base,
            url,
            model,
            key,
        }
    }
}

impl ModelProvider for OpenAiProvider {
    fn default_model(&self) -> &str {
        &self.model
    }

    fn describe(&self) -> String {
        let scheme = match self.flavor {
            Flavor::OpenAi => "openai",
            Flavor::Compatible => "openai-compatible",
        };
        let key = match &self.key {
            Some(key) => format!("key from {}", key.source()),
            None => "no key".into(),
        };
        format!("{scheme}:{} at {} ({key})", self.model, self.base)
    }

    fn api_key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    fn chat<'a>(
        &'a self,
        request: &'a crate::secrets::Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let body = encode(request, self.flavor);
            let auth = self.key.as_ref().map_or(Auth::None, Auth::Bearer);
            let answer = self.endpoint.post_json(&self.url, auth, &[], &body).await?;
            decode(&answer, request)
        })
    }
}

/// The request body.
pub fn encode(request: &ChatRequest, flavor: Flavor) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(encode_message).collect();
    let mut body = json!({ "model": request.model, "messages": messages });
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }
                })
            })
            .collect();
    }
    if let Some(max) = request.max_tokens {
        let key = match flavor {
            Flavor::OpenAi => "max_completion_tokens",
            Flavor::Compatible => "max_tokens",
        };
        body[key] = json!(max);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    body
}

fn encode_message(message: &Message) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = json!({ "role": role, "content": message.content });
    if !message.tool_calls.is_empty() {
        if message.content.is_empty() {
            out["content"] = Value::Null;
        }
        out["tool_calls"] = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments },
                })
            })
            .collect();
    }
    if let Some(id) = &message.tool_call_id {
        out["tool_call_id"] = json!(id);
    }
    out
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: WireMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// A string of JSON by the spec; an object from some servers.
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

/// The answer, from the response body.
pub fn decode(body: &Value, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
    let malformed = |error: String| ProviderError::Malformed {
        provider: "openai",
        error,
        start: crate::capability::brief(&body.to_string(), 200),
    };
    let completion = Completion::deserialize(body).map_err(|e| malformed(e.to_string()))?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err(malformed("the answer has no `choices`".into()));
    };
    let content = match choice.message.content {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => parts.into_iter().filter_map(|p| p.text).collect(),
    };
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{}", i + 1)),
            name: call.function.name,
            arguments: match call.function.arguments {
                Value::String(text) => text,
                Value::Null => "{}".into(),
                other => other.to_string(),
            },
        })
        .collect();
    let finish_reason = match choice.finish_reason.as_deref() {
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        // Some servers (Ollama) say `stop` even with tool calls.
        _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
        Some("stop") | None => FinishReason::Stop,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some(_) => FinishReason::Other,
    };
    let message = Message {
        role: Role::Assistant,
        content,
        tool_calls,
        tool_call_id: None,
    };
    let usage = completion
        .usage
        .and_then(|u| Some((u.prompt_tokens?, u.completion_tokens?)));
    Ok(ChatResponse::from_provider(
        request,
        message,
        finish_reason,
        usage,
        completion.model,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolSpec;

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![
                Message {
                    role: Role::System,
                    content: "be brief".into(),
                    tool_calls: vec![],
                    tool_call_id: None,
                },
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "calc".into(),
                        arguments: r#"{"expression":"1+1"}"#.into(),
                    }],
                    tool_call_id: None,
                },
                Message {
                    role: Role::Tool,
                    content: "2".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("c1".into()),
                },
            ],
            tools: vec![ToolSpec {
                name: "calc".into(),
                description: "math".into(),
                parameters: json!({"type": "object"}),
            }],
            model: "gpt-x".into(),
            max_tokens: Some(100),
            temperature: None,
        }
    }

    #[test]
    fn encodes_the_wire_format() {
        let body = encode(&request(), Flavor::OpenAi);
        assert_eq!(body["max_completion_tokens"], 100);
        assert_eq!(body["messages"][1]["content"], Value::Null);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["name"],
            "calc"
        );
        assert_eq!(body["messages"][2]["tool_call_id"], "c1");
        assert_eq!(body["tools"][0]["type"], "function");
        assert!(body.get("temperature").is_none());
        let body = encode(&request(), Flavor::Compatible);
        assert_eq!(body["max_tokens"], 100);
    }

    #[test]
    fn decodes_lenient_servers() {
        // Ollama-style: arguments as an object, no id, no usage.
        let body = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"function": {"name": "calc", "arguments": {"expression": "2"}}}]},
            "finish_reason": "stop"}]});
        let answer = decode(&body, &request()).unwrap();
        assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
        assert_eq!(answer.message.tool_calls[0].id, "call_1");
        assert_eq!(
            answer.message.tool_calls[0].arguments,
            r#"{"expression":"2"}"#
        );
        assert!(!answer.usage_reported);
        assert_eq!(answer.model, "gpt-x");
        let err = decode(&json!({"choices": []}), &request()).unwrap_err();
        assert!(err.to_string().contains("no `choices`"), "{err}");
    }
}
