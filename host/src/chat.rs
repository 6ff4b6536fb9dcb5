//! The host's own vocabulary for talking to models: messages, tool calls,
//! tool specs, usage. Providers, the policy and the audit log speak these
//! types; the WIT-generated ones stop at `capability::model`.

use crate::secrets::{Scrub, Scrubber};
use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the agent's author.
    System,
    /// The task, or anything else from the user's side.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// The model asks for a tool to be called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Opaque id, echoed by the tool message that answers it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Arguments as JSON text (as the model wrote them: maybe not valid).
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// Tool calls (assistant messages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call this answers (tool messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// Bytes of text the message carries, every field counted (content,
    /// tool-call ids, names and arguments, the id it answers): what token
    /// estimates count, so no field carries text past a budget.
    pub fn text_len(&self) -> usize {
        self.content.len()
            + self.tool_call_id.as_ref().map_or(0, String::len)
            + self
                .tool_calls
                .iter()
                .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                .sum::<usize>()
    }

    /// An assistant message with plain text.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool as offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name.
    pub name: String,
    /// When to use it.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// Tokens a call used, as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishReason {
    /// A complete answer.
    Stop,
    /// It wants its tool calls run.
    ToolCalls,
    /// Cut at the token limit.
    Length,
    /// Filtered by the provider.
    ContentFilter,
    /// Anything else.
    Other,
}

/// A chat request after the host resolved the model name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools the model may ask for.
    pub tools: Vec<ToolSpec>,
    /// The model that should answer.
    pub model: String,
    /// Most tokens in the answer.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
}

impl ChatRequest {
    /// The SHA-256 of the request as JSON, as it leaves the host (after
    /// redaction). The audit records it for every model call, so a replay
    /// can tell that an agent sent something else even when the answers
    /// are the same.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        /// Hashes what is written, without holding it.
        struct Hashing(sha2::Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.update(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut hashing = Hashing(sha2::Sha256::new());
        // Host types into a writer that never fails: serializing cannot
        // fail (a NaN temperature is written as `null`).
        let _ = serde_json::to_writer(&mut hashing, self);
        hex::encode(hashing.0.finalize())
    }

    /// Bytes of text the request carries, every field counted: messages,
    /// tool names, descriptions and schemas, the model's name.
    pub fn text_len(&self) -> usize {
        self.messages.iter().map(Message::text_len).sum::<usize>()
            + self
                .tools
                .iter()
                .map(|t| t.name.len() + t.description.len() + json_len(&t.parameters))
                .sum::<usize>()
            + self.model.len()
    }
}

/// Length of `value` as compact JSON, without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message, possibly with tool calls.
    pub message: Message,
    /// Tokens used.
    pub usage: Usage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// The model that answered.
    pub model: String,
    /// Whether `usage` is the provider's own count (false: the host
    /// estimated it, because the provider reported none).
    #[serde(default = "reported")]
    pub usage_reported: bool,
}

fn reported() -> bool {
    true
}

impl ChatResponse {
    /// An answer as a provider gave it: its token counts when it reported
    /// both (else an estimate, marked as one), and the model that answered
    /// (else the one asked for).
    pub fn from_provider(
        request: &ChatRequest,
        message: Message,
        finish_reason: FinishReason,
        usage: Option<(u32, u32)>,
        model: Option<String>,
    ) -> Self {
        let (usage, usage_reported) = match usage {
            Some((input_tokens, output_tokens)) => (
                Usage {
                    input_tokens,
                    output_tokens,
                },
                true,
            ),
            None => (Usage::estimate(request, &message), false),
        };
        ChatResponse {
            message,
            usage,
            finish_reason,
            model: model.unwrap_or_else(|| request.model.clone()),
            usage_reported,
        }
    }
}

impl Usage {
    /// A rough count for a provider that reports none: four bytes a token
    /// for the request's messages and the answer.
    pub fn estimate(request: &ChatRequest, answer: &Message) -> Usage {
        let tokens = |bytes: usize| u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX);
        Usage {
            input_tokens: tokens(request.messages.iter().map(Message::text_len).sum()),
            output_tokens: tokens(answer.text_len()),
        }
    }

    /// Input and output together.
    pub fn total(&self) -> u64 {
        u64::from(self.input_tokens) + u64::from(self.output_tokens)
    }
}

// Every string field goes to the scrubber; the patterns are exhaustive so
// that a new field does not compile until it is scrubbed too.
impl Scrub for ToolCall {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        let ToolCall {
            id,
            name,
            arguments,
        } = self;
        with.text(id);
        with.text(name);
        with.text(arguments);
    }
}

impl Scrub for Message {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        let Message {
            role: _,
            content,
            tool_calls,
            tool_call_id,
        } = self;
        with.text(content);
        tool_calls.scrub(with);
        tool_call_id.scrub(with);
    }
}

impl Scrub for ToolSpec {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        let ToolSpec {
            name,
            description,
            parameters,
        } = self;
        with.text(name);
        with.text(description);
        with.json(parameters);
    }
}

impl Scrub for ChatRequest {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        let ChatRequest {
            messages,
            tools,
            model,
            max_tokens: _,
            temperature: _,
        } = self;
        messages.scrub(with);
        tools.scrub(with);
        with.text(model);
    }
}

impl Scrub for ChatResponse {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        let ChatResponse {
            message,
            usage: _,
            finish_reason: _,
            model,
            usage_reported: _,
        } = self;
        message.scrub(with);
        with.text(model);
    }
}
