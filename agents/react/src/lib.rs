//! `react`: a ReAct-style agent loop.
//!
//! Send the task and the granted tools to the model; run every tool call the
//! model asks for through the host; feed each result back (a refusal too, as
//! text the model can read and work around); stop at the first answer with
//! no tool calls, or after `MAX_STEPS` model turns.
//!
//! The agent holds no authority of its own: what the model may ask for is
//! decided by the host's policy on every call, whatever this loop does.

use warden_guest::model::{self, ChatRequest, Message};
use warden_guest::{Agent, Error, log, tools};

/// Model turns before the agent gives up.
const MAX_STEPS: usize = 12;

const SYSTEM_PROMPT: &str = "You are a careful assistant working inside a sandbox. \
Use the tools you are given when they help; call several at once when they are independent. \
A tool result that starts with `error:` means the call did not happen; read the reason and \
adapt (another tool, other arguments, or answer without it). Do not ask for tools you were \
not given. When you have the answer, reply with it and call no tools.";

struct React;

impl Agent for React {
    fn run(task: String) -> Result<String, String> {
        let tools = tools::list();
        log::info(&format!(
            "starting with {} tool(s): {}",
            tools.len(),
            tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut messages = vec![Message::system(SYSTEM_PROMPT), Message::user(&task)];

        for step in 1..=MAX_STEPS {
            let request = ChatRequest::new(messages.clone()).with_tools(tools.clone());
            let response = match model::chat(&request) {
                Ok(response) => response,
                Err(Error::BudgetExhausted(reason)) => {
                    return Err(format!(
                        "stopped after {} model turn(s): the model budget is spent ({reason})",
                        step - 1
                    ));
                }
                Err(other) => return Err(format!("the model call failed: {}", other.describe())),
            };
            let reply = response.message;
            if reply.tool_calls.is_empty() {
                return Ok(reply.content);
            }
            let calls = reply.tool_calls.clone();
            messages.push(Message::assistant(&reply.content, reply.tool_calls));
            for call in calls {
                let content = match tools::call(&call.name, &call.arguments) {
                    Ok(result) => result,
                    Err(error) => {
                        let text = error.describe();
                        log::warn(&format!("tool `{}`: {text}", call.name));
                        format!("error: {text}")
                    }
                };
                messages.push(Message::tool_result(&call.id, &content));
            }
        }
        Err(format!(
            "no final answer after {MAX_STEPS} model turns (the agent's step limit)"
        ))
    }
}

warden_guest::export_agent!(React);
