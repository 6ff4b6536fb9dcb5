//! A tool component that describes 100,000 tools: the host must refuse it
//! at once, not spend quadratic time checking the names.

use serde_json::json;
use warden_guest::{Tool, ToolSpec};

struct DescribeFlood;

impl Tool for DescribeFlood {
    fn describe() -> Vec<ToolSpec> {
        (0..100_000)
            .map(|i| ToolSpec::new(format!("t{i}"), "", json!({ "type": "object" })))
            .collect()
    }

    fn invoke(_name: String, _arguments: String) -> Result<String, String> {
        Ok(String::new())
    }
}

warden_guest::export_tool!(DescribeFlood);

fn main() {}
