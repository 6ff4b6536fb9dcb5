//! Tools for policy tests: a web page reader (returns whatever text the
//! page "has", injected instructions included), the user's bank records
//! and a statement (JSON, with a subject an outsider wrote),
//! and two sinks that change the world: `pay` and `send_email`. Every
//! invocation logs its tool name, so a test can see whether a tool ran.

use serde_json::{Value, json};
use warden_guest::{Tool, ToolSpec, log};

struct Fixture;

impl Tool for Fixture {
    fn describe() -> Vec<ToolSpec> {
        vec![
            ToolSpec::new(
                "read_page",
                "Read a web page.",
                json!({
                    "type": "object",
                    "properties": { "url": { "type": "string" }, "content": { "type": "string" } },
                    "required": ["url", "content"],
                }),
            ),
            // A bank statement: the bank's own fields, and a subject the
            // payer wrote, which the tool's description marks third-party.
            ToolSpec::new(
                "read_statement",
                "Read the latest bank statement.",
                json!({
                    "type": "object",
                    "properties": { "subject": { "type": "string" } },
                    "required": ["subject"],
                    "x-warden-third-party": ["/**/subject"],
                }),
            ),
            ToolSpec::new(
                "read_records",
                "Read the user's bank records.",
                json!({ "type": "object", "additionalProperties": false }),
            ),
            ToolSpec::new(
                "pay",
                "Pay an amount to an account.",
                json!({
                    "type": "object",
                    "properties": {
                        "account": { "type": "string" },
                        "amount": { "type": "number", "exclusiveMinimum": 0 },
                    },
                    "required": ["account", "amount"],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::new(
                "send_email",
                "Send an e-mail.",
                json!({
                    "type": "object",
                    "properties": {
                        "to": { "type": "string" },
                        "subject": { "type": "string" },
                        "body": { "type": "string" },
                    },
                    "required": ["to", "subject"],
                }),
            ),
        ]
    }

    fn invoke(name: String, arguments: String) -> Result<String, String> {
        log::info(&format!("{name} invoked"));
        let args: Value = serde_json::from_str(&arguments).map_err(|e| e.to_string())?;
        match name.as_str() {
            "read_page" => Ok(args["content"].as_str().unwrap_or("").to_string()),
            "read_statement" => Ok(json!({
                "entries": [{
                    "account": "DE89-3704-0044-0532",
                    "amount": 900,
                    "subject": args["subject"].as_str().unwrap_or(""),
                }]
            })
            .to_string()),
            "read_records" => Ok("Landlord: Jan Novak, account DE89-3704-0044-0532".into()),
            "pay" => Ok(format!(
                "paid {} to {}",
                args["amount"],
                args["account"].as_str().unwrap_or("?")
            )),
            "send_email" => Ok(format!("sent to {}", args["to"].as_str().unwrap_or("?"))),
            other => Err(format!("no tool `{other}`")),
        }
    }
}

warden_guest::export_tool!(Fixture);

fn main() {}
