//! `{{tool}}`: a warden tool. It works only on its arguments, so its policy
//! grants it nothing (no HTTP, files, environment or secrets).

use serde::Deserialize;
use serde_json::json;
use warden_guest::{Tool, ToolSpec, tool};

/// The longest text accepted (the schema says so too: the host refuses
/// longer arguments before the tool runs).
const MAX_TEXT: usize = 100_000;

struct Component;

impl Tool for Component {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "{{tool}}",
            "Count the words and characters of a text.",
            json!({
                "type": "object",
                "properties": {
                    "text": { "type": "string", "maxLength": MAX_TEXT },
                },
                "required": ["text"],
                "additionalProperties": false,
            }),
        )]
    }

    fn invoke(name: String, arguments: String) -> Result<String, String> {
        match name.as_str() {
            "{{tool}}" => {
                #[derive(Deserialize)]
                struct Args {
                    text: String,
                }
                let args: Args = tool::parse_arguments(&name, &arguments)?;
                count(&args.text).map(|counts| counts.to_string())
            }
            other => Err(format!("this component provides `{{tool}}`, not `{other}`")),
        }
    }
}

/// The tool's work, apart from the plumbing: easy to test.
fn count(text: &str) -> Result<serde_json::Value, String> {
    if text.trim().is_empty() {
        // An `Err` reaches the agent as "tool `{{tool}}` returned an error: ...".
        return Err("`text` is empty".into());
    }
    Ok(json!({
        "words": text.split_whitespace().count(),
        "characters": text.chars().count(),
    }))
}

warden_guest::export_tool!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words_and_characters() {
        let out = Component::invoke("{{tool}}".into(), r#"{"text": "hello warden"}"#.into());
        assert_eq!(out.unwrap(), r#"{"characters":12,"words":2}"#);
    }

    #[test]
    fn refuses_empty_text_and_unknown_tools() {
        let empty = Component::invoke("{{tool}}".into(), r#"{"text": "  "}"#.into());
        assert_eq!(empty.unwrap_err(), "`text` is empty");
        assert!(Component::invoke("nope".into(), "{}".into()).is_err());
    }

    #[test]
    fn describes_one_tool() {
        let specs = Component::describe();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "{{tool}}");
    }
}
