//! `{{name}}`: a warden agent. It sends the task and the granted tools to
//! the model, runs the tool calls the model asks for, feeds each result
//! back (a refusal too, as text the model can read), and stops at the
//! first reply with no tool calls.
//!
//! It holds no authority of its own: the host's policy decides every model
//! call and every tool call, whatever this loop does.

use warden_guest::model::{self, ChatRequest, ChatResponse, Message};
use warden_guest::{Agent, Error, ToolSpec, log, tools};

/// Model turns before the agent gives up.
const MAX_STEPS: usize = 8;

const SYSTEM_PROMPT: &str = "You are a careful assistant working inside a sandbox. \
Use the tools you are given when they help. A tool result that starts with `error:` \
means the call did not happen: read the reason and adapt. When you have the answer, \
reply with it and call no tools.";

struct Component;

impl Agent for Component {
    fn run(task: String) -> Result<String, String> {
        let granted = tools::list();
        log::info(&format!("{} tool(s) granted", granted.len()));
        solve(&task, granted, model::chat, tools::call)
    }
}

/// The loop, with the host's model and tools passed in, so that a test can
/// stand in for them.
fn solve(
    task: &str,
    tools: Vec<ToolSpec>,
    mut chat: impl FnMut(&ChatRequest) -> Result<ChatResponse, Error>,
    mut call: impl FnMut(&str, &str) -> Result<String, Error>,
) -> Result<String, String> {
    let mut messages = vec![Message::system(SYSTEM_PROMPT), Message::user(task)];
    for _ in 0..MAX_STEPS {
        let request = ChatRequest::new(messages.clone()).with_tools(tools.clone());
        let reply = chat(&request)
            .map_err(|e| format!("the model call failed: {}", e.describe()))?
            .message;
        if reply.tool_calls.is_empty() {
            return Ok(reply.content);
        }
        let calls = reply.tool_calls.clone();
        messages.push(Message::assistant(&reply.content, reply.tool_calls));
        for request in calls {
            let content = match call(&request.name, &request.arguments) {
                Ok(result) => result,
                // A refusal is a value: the model reads why and adapts.
                Err(error) => format!("error: {}", error.describe()),
            };
            messages.push(Message::tool_result(&request.id, &content));
        }
    }
    Err(format!("no answer after {MAX_STEPS} model turns"))
}

warden_guest::export_agent!(Component);

#[cfg(test)]
mod tests {
    use super::*;
    use warden_guest::{FinishReason, ToolCall, Usage};

    fn reply(content: &str, calls: Vec<ToolCall>) -> ChatResponse {
        ChatResponse {
            message: Message::assistant(content, calls),
            usage: Usage {
                input_tokens: 1,
                output_tokens: 1,
            },
            finish_reason: FinishReason::Stop,
            model: "test".into(),
        }
    }

    fn calc(expression: &str) -> ToolCall {
        ToolCall {
            id: "call-1".into(),
            name: "calc".into(),
            arguments: format!(r#"{{"expression":"{expression}"}}"#),
        }
    }

    #[test]
    fn runs_the_tool_the_model_asks_for_then_answers() {
        let mut turns = vec![reply("", vec![calc("6 * 7")]), reply("42", vec![])].into_iter();
        let mut called = Vec::new();
        let answer = solve(
            "What is 6 * 7?",
            Vec::new(),
            |_| Ok(turns.next().expect("two turns")),
            |name, arguments| {
                called.push(format!("{name} {arguments}"));
                Ok("42".into())
            },
        );
        assert_eq!(answer.unwrap(), "42");
        assert_eq!(called, [r#"calc {"expression":"6 * 7"}"#]);
    }

    #[test]
    fn the_model_reads_a_refusal() {
        let mut turns = vec![reply("", vec![calc("1 / 0")]), reply("I cannot.", vec![])].into_iter();
        let mut last_request = None;
        let answer = solve(
            "1 / 0?",
            Vec::new(),
            |request| {
                last_request = Some(request.clone());
                Ok(turns.next().expect("two turns"))
            },
            |_, _| Err(Error::Denied("not granted (rule: default)".into())),
        );
        assert_eq!(answer.unwrap(), "I cannot.");
        let tool_message = last_request.unwrap().messages.pop().unwrap();
        assert_eq!(
            tool_message.content,
            "error: denied by policy: not granted (rule: default)"
        );
    }

    #[test]
    fn gives_up_after_max_steps() {
        let answer = solve(
            "loop",
            Vec::new(),
            |_| Ok(reply("", vec![calc("1")])),
            |_, _| Ok("1".into()),
        );
        assert!(answer.unwrap_err().contains("no answer after"));
    }
}
