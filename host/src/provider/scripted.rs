//! The scripted model: a file of turns replayed in order, one per chat call.
//! Deterministic and offline, for the demo, tests and reproducing a run.
//!
//! ```toml
//! [[turn]]
//! text = "Let me compute that."
//! calls = [{ tool = "calc", arguments = { expression = "6 * 7" } }]
//!
//! [[turn]]
//! text = "6 * 7 = 42."
//! ```
//!
//! A turn with `calls` asks for those tool calls; a turn without is a final
//! answer. `arguments_json` gives the arguments as raw text instead (to test
//! what a host does with malformed arguments).

use super::{BoxFuture, ModelProvider, ProviderError};
use crate::chat::{ChatRequest, ChatResponse, FinishReason, Message, Role, ToolCall};
use crate::diagnostic::{Diagnostic, SourceError, parse_toml};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The name a scripted model answers to, for `[model] allow`.
pub const SCRIPTED_MODEL: &str = "scripted";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    #[serde(default)]
    turn: Vec<RawTurn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    #[serde(default)]
    text: String,
    #[serde(default)]
    calls: Vec<Spanned<RawCall>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCall {
    tool: String,
    arguments: Option<toml::Table>,
    arguments_json: Option<String>,
    id: Option<String>,
}

/// Replays a script of model turns.
#[derive(Debug)]
pub struct ScriptedProvider {
    script: String,
    turns: Vec<Message>,
    next: AtomicUsize,
}

impl ScriptedProvider {
    /// Parse a script; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, SourceError> {
        let raw: RawScript = parse_toml(file, text)?;
        let fail = |diagnostic: Diagnostic| SourceError::single(file, text, vec![diagnostic]);
        if raw.turn.is_empty() {
            return Err(fail(
                Diagnostic::error("the script has no turns", None)
                    .with_help("add `[[turn]]` tables with `text` and optional `calls`"),
            ));
        }
        let mut turns = Vec::with_capacity(raw.turn.len());
        for (t, turn) in raw.turn.into_iter().enumerate() {
            let mut tool_calls = Vec::new();
            for (c, call) in turn.calls.into_iter().enumerate() {
                let span = call.span();
                let call = call.into_inner();
                let arguments = match (call.arguments, call.arguments_json) {
                    (Some(_), Some(_)) => {
                        return Err(fail(
                            Diagnostic::error(
                                "a call has both `arguments` and `arguments_json`",
                                Some(span),
                            )
                            .with_help("keep one of them"),
                        ));
                    }
                    (Some(table), None) => {
                        serde_json::to_string(&table).expect("a TOML table serializes as JSON")
                    }
                    (None, Some(raw)) => raw,
                    (None, None) => "{}".to_string(),
                };
                tool_calls.push(ToolCall {
                    id: call
                        .id
                        .unwrap_or_else(|| format!("call_{}_{}", t + 1, c + 1)),
                    name: call.tool,
                    arguments,
                });
            }
            turns.push(Message {
                role: Role::Assistant,
                content: turn.text,
                tool_calls,
                tool_call_id: None,
            });
        }
        Ok(ScriptedProvider {
            script: file.to_string(),
            turns,
            next: AtomicUsize::new(0),
        })
    }

    /// Turns in the script.
    pub fn turns(&self) -> usize {
        self.turns.len()
    }
}

impl ModelProvider for ScriptedProvider {
    fn default_model(&self) -> &str {
        SCRIPTED_MODEL
    }

    fn describe(&self) -> String {
        format!("scripted:{} ({} turns)", self.script, self.turns.len())
    }

    fn chat<'a>(
        &'a self,
        request: &'a crate::secrets::Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let result = match self.turns.get(index) {
            None => Err(ProviderError::ScriptExhausted {
                script: self.script.clone(),
                turns: self.turns.len(),
                asked: index + 1,
            }),
            // No usage reported: budgets see the host's estimate.
            Some(message) => Ok(ChatResponse::from_provider(
                request,
                message.clone(),
                if message.tool_calls.is_empty() {
                    FinishReason::Stop
                } else {
                    FinishReason::ToolCalls
                },
                None,
                None,
            )),
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> crate::secrets::Clean<ChatRequest> {
        crate::secrets::Secrets::default().cleaned(ChatRequest {
            messages: vec![Message::assistant("hello")],
            tools: vec![],
            model: SCRIPTED_MODEL.into(),
            max_tokens: None,
            temperature: None,
        })
    }

    #[tokio::test]
    async fn replays_in_order_then_fails_clearly() {
        let script = r#"
[[turn]]
text = "thinking"
calls = [{ tool = "calc", arguments = { expression = "1 + 1" } }, { tool = "x", arguments_json = "{bad" }]

[[turn]]
text = "2"
"#;
        let provider = ScriptedProvider::parse("s.toml", script).unwrap();
        let first = provider.chat(&request()).await.unwrap();
        assert_eq!(first.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            first.message.tool_calls[0].arguments,
            r#"{"expression":"1 + 1"}"#
        );
        assert_eq!(first.message.tool_calls[0].id, "call_1_1");
        assert_eq!(first.message.tool_calls[1].arguments, "{bad");
        let second = provider.chat(&request()).await.unwrap();
        assert_eq!(second.message.content, "2");
        assert_eq!(second.finish_reason, FinishReason::Stop);
        let err = provider.chat(&request()).await.unwrap_err().to_string();
        assert!(
            err.contains("s.toml has 2 turn(s) and the agent asked for turn 3"),
            "{err}"
        );
    }

    #[test]
    fn bad_scripts_point_at_the_text() {
        let err = ScriptedProvider::parse("s.toml", "[[turn]]\ntxt = \"x\"\n").unwrap_err();
        let out = err.render();
        assert!(
            out.contains("unknown field `txt`") && out.contains("s.toml:2:1"),
            "{out}"
        );
        let err = ScriptedProvider::parse("s.toml", "").unwrap_err();
        assert!(err.render().contains("the script has no turns"));
    }
}
