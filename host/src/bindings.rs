//! Host bindings generated from the WIT contract in `guest-sdk/wit`, the
//! only copy of it. These types stop at `capability/`: everything past it
//! speaks the host's own types.

/// The `agent` world: imports model, tools, log and limits; exports `run`.
#[allow(missing_docs)]
pub mod agent {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "agent",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The `tool` world: imports log; exports `describe` and `invoke`.
#[allow(missing_docs)]
pub mod tool {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "tool",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "warden:sandbox/types": super::agent::warden::sandbox::types,
            "warden:sandbox/log": super::agent::warden::sandbox::log,
        },
    });
}

pub use agent::warden::sandbox::types::{
    Error as WitError, FinishReason as WitFinishReason, Message as WitMessage, Role as WitRole,
    ToolCall as WitToolCall, ToolSpec as WitToolSpec, Usage as WitUsage,
};
