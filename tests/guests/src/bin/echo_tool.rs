//! The smallest useful tool: `echo` returns its arguments. The benchmarks
//! call it raw and through the gate to measure what mediation costs.

use serde_json::json;
use warden_guest::{Tool, ToolSpec};

struct Echo;

impl Tool for Echo {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "echo",
            "Return the arguments unchanged.",
            json!({ "type": "object" }),
        )]
    }

    fn invoke(_name: String, arguments: String) -> Result<String, String> {
        Ok(arguments)
    }
}

warden_guest::export_tool!(Echo);

fn main() {}
