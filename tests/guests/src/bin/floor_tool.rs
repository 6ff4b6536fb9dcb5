//! The floor of a tool call: the `tool` world bound with wit-bindgen
//! alone, no SDK, no serde. `invoke` hands its arguments back, `describe`
//! names one tool with its schema as a literal. The mediation benchmark
//! calls it with bare wasmtime (the floor a sandbox cannot go below) and
//! through warden, so the ratio between the two is what warden costs.

mod bindings {
    wit_bindgen::generate!({
        path: "../../guest-sdk/wit",
        world: "tool",
    });
}

use bindings::warden::sandbox::types::ToolSpec;

struct Floor;

impl bindings::Guest for Floor {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "echo".into(),
            description: "Return the arguments unchanged.".into(),
            parameters_schema: r#"{"type":"object"}"#.into(),
        }]
    }

    fn invoke(_name: String, arguments: String) -> Result<String, String> {
        Ok(arguments)
    }
}

bindings::export!(Floor with_types_in bindings);

fn main() {}
