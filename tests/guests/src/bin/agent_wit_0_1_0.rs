//! An agent built against the frozen 0.1.0 WIT (`tests/guests/wit-0.1.0`),
//! not the SDK's current one: it imports `warden:sandbox/tools@0.1.0` and
//! friends, which a 0.1.1 host must still satisfy. It lists the tools,
//! calls the first with the task as its arguments, asks the model once,
//! and answers with what it saw.

mod bindings {
    wit_bindgen::generate!({
        path: "wit-0.1.0",
        world: "agent",
    });
}

use bindings::warden::sandbox::model::{self, ChatRequest};
use bindings::warden::sandbox::tools;
use bindings::warden::sandbox::types::{Message, Role};

struct OldAgent;

impl bindings::Guest for OldAgent {
    fn run(task: String) -> Result<String, String> {
        let specs = tools::list_tools();
        let first = specs.first().map(|t| t.name.clone()).unwrap_or_default();
        let result = match tools::call(&first, &task) {
            Ok(text) => text,
            Err(error) => format!("error: {error:?}"),
        };
        let request = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: result.clone(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            }],
            tools: specs,
            model: None,
            max_tokens: None,
            temperature: None,
        };
        let reply = model::chat(&request).map_err(|e| format!("{e:?}"))?;
        Ok(format!(
            "{first} -> {result}; model: {}",
            reply.message.content
        ))
    }
}

bindings::export!(OldAgent with_types_in bindings);

fn main() {}
