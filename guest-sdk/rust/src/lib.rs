//! Write warden agents and tools in Rust.
//!
//! A warden guest is a Wasm component with no ambient authority: it can talk
//! to the model, call the tools the policy grants and write log lines, and
//! every one of those calls is decided by the host's policy. This crate wraps
//! the `warden:sandbox` WIT contract (in `guest-sdk/wit/`, the only copy) in a
//! small API.
//!
//! An agent:
//!
//! ```no_run
//! use warden_guest::{Agent, model, tools};
//!
//! struct Echo;
//!
//! impl Agent for Echo {
//!     fn run(task: String) -> Result<String, String> {
//!         let reply = model::chat(&model::ChatRequest::new(vec![model::Message::user(&task)]))
//!             .map_err(|e| e.describe())?;
//!         Ok(reply.message.content)
//!     }
//! }
//!
//! warden_guest::export_agent!(Echo);
//! ```
//!
//! A component that provides tools:
//!
//! ```no_run
//! use warden_guest::{Tool, ToolSpec, tool};
//! use serde_json::json;
//!
//! struct Upper;
//!
//! impl Tool for Upper {
//!     fn describe() -> Vec<ToolSpec> {
//!         vec![ToolSpec::new("upper", "Upper-case a text.", json!({
//!             "type": "object",
//!             "properties": { "text": { "type": "string" } },
//!             "required": ["text"],
//!         }))]
//!     }
//!
//!     fn invoke(name: String, arguments: String) -> Result<String, String> {
//!         #[derive(serde::Deserialize)]
//!         struct Args { text: String }
//!         let args: Args = tool::parse_arguments(&name, &arguments)?;
//!         Ok(args.text.to_uppercase())
//!     }
//! }
//!
//! warden_guest::export_tool!(Upper);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm`
//! that cargo writes is a component `warden run` loads directly.
#![deny(missing_docs)]

/// Raw bindings generated from the WIT contract. Prefer the wrappers in this
/// crate; these are public for the export macros and for advanced uses.
#[doc(hidden)]
pub mod bindings {
    /// The `agent` world: imports model, tools, log and limits; exports `run`.
    #[allow(missing_docs)]
    pub mod agent {
        wit_bindgen::generate!({
            path: "../wit",
            world: "agent",
            pub_export_macro: true,
            export_macro_name: "export_agent_world",
            default_bindings_module: "::warden_guest::bindings::agent",
            generate_all,
        });
    }

    /// The `tool` world: imports log; exports `describe` and `invoke`.
    #[allow(missing_docs)]
    pub mod tool {
        wit_bindgen::generate!({
            path: "../wit",
            world: "tool",
            pub_export_macro: true,
            export_macro_name: "export_tool_world",
            default_bindings_module: "::warden_guest::bindings::tool",
            with: {
                "warden:sandbox/types@0.1.1": crate::bindings::agent::warden::sandbox::types,
                "warden:sandbox/log@0.1.1": crate::bindings::agent::warden::sandbox::log,
            },
        });
    }
}

use bindings::agent::warden::sandbox as wit;

pub use wit::types::{Error, FinishReason, Role, ToolCall, ToolSpec, Usage};

impl ToolSpec {
    /// Declare a tool: its name (what policies and the model call it), a
    /// description for the model, and the JSON Schema of its arguments.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters_schema: serde_json::Value,
    ) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters_schema: parameters_schema.to_string(),
        }
    }
}

impl Error {
    /// The kind of refusal: `denied`, `budget-exhausted`, `invalid` or
    /// `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::BudgetExhausted(_) => "budget-exhausted",
            Error::Invalid(_) => "invalid",
            Error::Failed(_) => "failed",
        }
    }

    /// The host's reason, which names the policy rule when there is one.
    pub fn reason(&self) -> &str {
        match self {
            Error::Denied(r) | Error::BudgetExhausted(r) | Error::Invalid(r) | Error::Failed(r) => {
                r
            }
        }
    }

    /// One line for a model or a person to read, e.g.
    /// `denied by policy: tool `shell` is not granted (rule: default)`.
    pub fn describe(&self) -> String {
        let what = match self {
            Error::Denied(_) => "denied by policy",
            Error::BudgetExhausted(_) => "budget exhausted",
            Error::Invalid(_) => "invalid request",
            Error::Failed(_) => "failed",
        };
        format!("{what}: {}", self.reason())
    }
}

/// An agent scaffold: the loop that talks to the model and calls tools.
pub trait Agent {
    /// Run on `task`; return the final answer, or an error the host reports.
    fn run(task: String) -> Result<String, String>;
}

/// A component that provides one or more tools.
pub trait Tool {
    /// The tools this component provides.
    fn describe() -> Vec<ToolSpec>;
    /// Invoke the tool `name` (one of those in `describe`) with JSON
    /// arguments. The host has already checked the call against the policy.
    fn invoke(name: String, arguments: String) -> Result<String, String>;
}

impl<T: Agent> bindings::agent::Guest for T {
    fn run(task: String) -> Result<String, String> {
        <T as Agent>::run(task)
    }
}

impl<T: Tool> bindings::tool::Guest for T {
    fn describe() -> Vec<ToolSpec> {
        <T as Tool>::describe()
    }
    fn invoke(name: String, arguments: String) -> Result<String, String> {
        <T as Tool>::invoke(name, arguments)
    }
}

/// Export a type implementing [`Agent`] as this component's `run`.
#[macro_export]
macro_rules! export_agent {
    ($agent:ident) => {
        $crate::bindings::agent::export_agent_world!($agent with_types_in $crate::bindings::agent);
    };
}

/// Export a type implementing [`Tool`] as this component's `describe` and
/// `invoke`.
#[macro_export]
macro_rules! export_tool {
    ($tool:ident) => {
        $crate::bindings::tool::export_tool_world!($tool with_types_in $crate::bindings::tool);
    };
}

/// What a host call answers off Wasm (a unit test run by `cargo test`,
/// where there is no host to call): an error that says so, instead of an
/// abort on an import that does not exist.
#[cfg(not(target_family = "wasm"))]
fn off_wasm(what: &str) -> Error {
    Error::Failed(format!(
        "`{what}` needs the warden host: this code runs outside a component (e.g. under `cargo test`), where there is no host to call"
    ))
}

/// Talk to the model through the host.
pub mod model {
    #[cfg(target_family = "wasm")]
    use super::wit;
    pub use super::wit::model::{ChatRequest, ChatResponse};
    pub use super::wit::types::Message;
    use super::{Error, Role, ToolCall, ToolSpec};

    /// Send a chat request. The host checks it against the policy (allowed
    /// models, budgets) and forwards it to the run's provider.
    pub fn chat(request: &ChatRequest) -> Result<ChatResponse, Error> {
        #[cfg(target_family = "wasm")]
        return wit::model::chat(request);
        #[cfg(not(target_family = "wasm"))]
        {
            let _ = request;
            Err(super::off_wasm("model::chat"))
        }
    }

    impl ChatRequest {
        /// A request with these messages, no tools, and the run's default
        /// model and limits.
        pub fn new(messages: Vec<Message>) -> Self {
            ChatRequest {
                messages,
                tools: Vec::new(),
                model: None,
                max_tokens: None,
                temperature: None,
            }
        }

        /// Offer these tools to the model.
        pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
            self.tools = tools;
            self
        }
    }

    impl Message {
        fn plain(role: Role, content: &str) -> Self {
            Message {
                role,
                content: content.to_string(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            }
        }

        /// A system message.
        pub fn system(content: &str) -> Self {
            Self::plain(Role::System, content)
        }

        /// A user message.
        pub fn user(content: &str) -> Self {
            Self::plain(Role::User, content)
        }

        /// An assistant message, possibly asking for tool calls.
        pub fn assistant(content: &str, tool_calls: Vec<ToolCall>) -> Self {
            Message {
                tool_calls,
                ..Self::plain(Role::Assistant, content)
            }
        }

        /// The result of the tool call `call_id`, for the model to read.
        pub fn tool_result(call_id: &str, content: &str) -> Self {
            Message {
                tool_call_id: Some(call_id.to_string()),
                ..Self::plain(Role::Tool, content)
            }
        }
    }
}

/// Call the tools the policy grants.
pub mod tools {
    #[cfg(target_family = "wasm")]
    use super::wit;
    use super::{Error, ToolSpec};

    /// The granted tools with their JSON Schemas.
    /// (Off Wasm, as in a unit test, there is no host: no tools.)
    pub fn list() -> Vec<ToolSpec> {
        #[cfg(target_family = "wasm")]
        return wit::tools::list_tools();
        #[cfg(not(target_family = "wasm"))]
        return Vec::new();
    }

    /// Call a tool with JSON arguments given as text.
    pub fn call(name: &str, arguments: &str) -> Result<String, Error> {
        #[cfg(target_family = "wasm")]
        return wit::tools::call(name, arguments);
        #[cfg(not(target_family = "wasm"))]
        {
            let _ = arguments;
            Err(super::off_wasm(&format!("tools::call({name})")))
        }
    }

    /// Call a tool with arguments given as a JSON value.
    pub fn call_json(name: &str, arguments: &serde_json::Value) -> Result<String, Error> {
        call(name, &arguments.to_string())
    }

    /// Declare the plan: the tools with effects this run will use. The
    /// host accepts one plan, and only while the session carries no label
    /// (before the agent has read anything labeled): `Error::Denied`
    /// otherwise. Once the session is labeled, a tool with effects that is
    /// not in the plan is refused. A name that is not a granted tool is
    /// `Error::Invalid`. Whether the policy requires a plan:
    /// [`crate::limits::get`]. (Off Wasm there is no host: an error.)
    pub fn declare_plan(names: &[String]) -> Result<(), Error> {
        #[cfg(target_family = "wasm")]
        return wit::tools::declare_plan(names);
        #[cfg(not(target_family = "wasm"))]
        {
            let _ = names;
            Err(super::off_wasm("tools::declare_plan"))
        }
    }
}

/// The run's limits as the policy sets them, so an agent can stay within
/// them and knows whether it must declare a plan.
pub mod limits {
    pub use super::wit::limits::RunLimits;

    /// The run's limits: `max_steps` (model plus tool calls, `None`: the
    /// policy sets none), `max_model_calls`, `plan_required`. Off Wasm
    /// (a unit test): no limits, no plan required.
    pub fn get() -> RunLimits {
        #[cfg(target_family = "wasm")]
        return super::wit::limits::get();
        #[cfg(not(target_family = "wasm"))]
        RunLimits {
            max_steps: None,
            max_model_calls: None,
            plan_required: false,
        }
    }
}

/// Helpers for tool components.
pub mod tool {
    /// Parse a tool's JSON arguments into `T`, with an error message the
    /// model can act on.
    pub fn parse_arguments<T: serde::de::DeserializeOwned>(
        tool: &str,
        arguments: &str,
    ) -> Result<T, String> {
        serde_json::from_str(arguments)
            .map_err(|e| format!("`{tool}`: bad arguments {arguments}: {e}"))
    }
}

/// Log lines that land in the run's audit log.
pub mod log {
    pub use super::wit::log::Level;

    /// Write one log line at `level`. Off Wasm (a tool's unit tests under
    /// `cargo test`) there is no host: the line goes to stderr instead.
    pub fn write(level: Level, message: &str) {
        #[cfg(target_family = "wasm")]
        super::wit::log::log(level, message);
        #[cfg(not(target_family = "wasm"))]
        eprintln!("[{}] {message}", level_name(level));
    }

    #[cfg(not(target_family = "wasm"))]
    fn level_name(level: Level) -> &'static str {
        match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// Write one log line at `debug` level.
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }

    /// Write one log line at `info` level.
    pub fn info(message: &str) {
        write(Level::Info, message)
    }

    /// Write one log line at `warn` level.
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }

    /// Write one log line at `error` level.
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;

    #[test]
    fn off_wasm_the_host_calls_answer_instead_of_aborting() {
        // Each of these aborted the test binary (an unreachable import).
        log::info("a line from a unit test");
        log::write(log::Level::Error, "and another");
        assert!(tools::list().is_empty());
        match tools::call("calc", "{}") {
            Err(Error::Failed(why)) => assert!(why.contains("needs the warden host"), "{why}"),
            other => panic!("{other:?}"),
        }
        let request = model::ChatRequest::new(vec![model::Message::user("hi")]);
        assert!(matches!(model::chat(&request), Err(Error::Failed(_))));
        assert!(matches!(
            tools::declare_plan(&["calc".to_string()]),
            Err(Error::Failed(_))
        ));
        assert!(!limits::get().plan_required);
    }
}
