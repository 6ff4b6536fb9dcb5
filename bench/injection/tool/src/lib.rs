//! `injection-tool`: every tool of every scenario of `bench/injection`, in
//! one component, served from data.
//!
//! - The tools' names, descriptions and schemas are `tools.json` (compiled
//!   in: `describe` runs with no grants). Each scenario's policy grants the
//!   few it uses.
//! - A call of tool `T` answers from `/data/T.json` (the scenario's data,
//!   granted read-only): a list of `{ "when": { ARG: VALUE }, "result": R }`;
//!   the first case whose every `when` argument equals the call's (as text,
//!   case folded) gives `R` (a string as it is, anything else as JSON).
//! - A tool marked `"effect": true` first appends `{"tool", "args"}` as one
//!   JSON line to `/effects/effects.jsonl` (granted read-write), so the
//!   runner judges what really happened, not what the model said.
//!
//! The host decides every call before this code runs; this component holds
//! no rule of its own.

use serde_json::{Value, json};
use std::io::Write;
use warden_guest::{Tool, ToolSpec};

const CATALOG: &str = include_str!("../tools.json");

/// Where a scenario's data is mounted.
pub const DATA_DIR: &str = "/data";
/// The file every side effect is appended to.
pub const EFFECTS_FILE: &str = "/effects/effects.jsonl";

/// The catalog's entries: (name, description, schema, whether it has an
/// effect).
pub fn catalog() -> Result<Vec<(String, String, Value, bool)>, String> {
    let entries: Vec<Value> =
        serde_json::from_str(CATALOG).map_err(|e| format!("tools.json: {e}"))?;
    entries
        .into_iter()
        .map(|entry| {
            let text = |key: &str| {
                entry[key]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("tools.json: an entry has no `{key}`"))
            };
            Ok((
                text("name")?,
                text("description")?,
                entry["parameters"].clone(),
                entry["effect"].as_bool().unwrap_or(false),
            ))
        })
        .collect()
}

/// A case's `when` value against the argument: equal as text, case folded.
fn same(expected: &Value, actual: Option<&Value>) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => s.trim().to_lowercase(),
        other => other.to_string().to_lowercase(),
    };
    actual.is_some_and(|actual| text(expected) == text(actual))
}

/// The answer of the first case in `cases` that the arguments match.
pub fn answer(tool: &str, cases: &Value, args: &Value) -> Result<String, String> {
    let cases = cases
        .as_array()
        .ok_or_else(|| format!("the data of `{tool}` is not a list of cases"))?;
    for case in cases {
        let matches = case["when"].as_object().is_none_or(|when| {
            when.iter()
                .all(|(key, expected)| same(expected, args.get(key)))
        });
        if matches {
            return Ok(match &case["result"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
    }
    // Not the arguments: an error text is indexed with the tool's labels,
    // and echoing them would vouch for whatever the agent passed in.
    Err(format!("not found: `{tool}` has no such record"))
}

struct Fixture;

impl Tool for Fixture {
    fn describe() -> Vec<ToolSpec> {
        catalog()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, description, schema, _)| ToolSpec::new(name, description, schema))
            .collect()
    }

    fn invoke(name: String, arguments: String) -> Result<String, String> {
        let args: Value = serde_json::from_str(&arguments).map_err(|e| e.to_string())?;
        let effect = catalog()?
            .into_iter()
            .find(|(n, ..)| *n == name)
            .map(|(.., effect)| effect)
            .ok_or_else(|| format!("no tool `{name}`"))?;
        if effect {
            let line = json!({ "tool": name, "args": args }).to_string();
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(EFFECTS_FILE)
                .and_then(|mut file| writeln!(file, "{line}"))
                .map_err(|e| format!("could not record the effect: {e}"))?;
        }
        let data = format!("{DATA_DIR}/{name}.json");
        match std::fs::read_to_string(&data) {
            Ok(text) => {
                let cases: Value =
                    serde_json::from_str(&text).map_err(|e| format!("{data}: {e}"))?;
                answer(&name, &cases, &args)
            }
            Err(_) if effect => Ok(json!({ "ok": true }).to_string()),
            Err(e) => Err(format!("{data}: {e}")),
        }
    }
}

warden_guest::export_tool!(Fixture);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_names_are_unique() {
        let tools = catalog().unwrap();
        let mut names: Vec<_> = tools.iter().map(|(n, ..)| n.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), tools.len());
        assert!(
            tools
                .iter()
                .all(|(_, _, schema, _)| schema["type"] == "object")
        );
    }

    #[test]
    fn the_first_matching_case_answers() {
        let cases = json!([
            { "when": { "id": "T-1" }, "result": "one" },
            { "result": { "all": true } }
        ]);
        assert_eq!(
            answer("t", &cases, &json!({ "id": "t-1 " })).unwrap(),
            "one"
        );
        assert_eq!(
            answer("t", &cases, &json!({ "id": "T-2" })).unwrap(),
            r#"{"all":true}"#
        );
        let only = json!([{ "when": { "id": "T-1" }, "result": "one" }]);
        assert!(
            answer("t", &only, &json!({}))
                .unwrap_err()
                .starts_with("not found")
        );
    }
}
