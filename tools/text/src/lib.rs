//! `text`: tools over text the caller passes in, two tools in one component
//! (as an MCP server provides several).
//!
//! - `word_count`: words, lines and characters of a text.
//! - `regex_search`: the lines of a text that match a regular expression.
//!
//! Both work only on their arguments: the component needs no capabilities.

use regex::RegexBuilder;
use serde::Deserialize;
use serde_json::json;
use warden_guest::{Tool, ToolSpec, tool};

/// Largest compiled regex accepted; bounds memory and time for hostile
/// patterns (the regex crate never backtracks, so time is linear anyway).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_PATTERN_LEN: usize = 1024;
const DEFAULT_MAX_MATCHES: usize = 20;
const MAX_MATCHES: usize = 1000;

struct Text;

impl Tool for Text {
    fn describe() -> Vec<ToolSpec> {
        vec![
            ToolSpec::new(
                "word_count",
                "Count the words, lines and characters of a text.",
                json!({
                    "type": "object",
                    "properties": { "text": { "type": "string" } },
                    "required": ["text"],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::new(
                "regex_search",
                "Find the lines of a text that match a regular expression (Rust regex syntax). \
                 Returns each match with its line and column.",
                json!({
                    "type": "object",
                    "properties": {
                        "text": { "type": "string" },
                        "pattern": { "type": "string", "maxLength": MAX_PATTERN_LEN },
                        "case_insensitive": { "type": "boolean", "default": false },
                        "max_matches": {
                            "type": "integer", "minimum": 1, "maximum": MAX_MATCHES,
                            "default": DEFAULT_MAX_MATCHES,
                        },
                    },
                    "required": ["text", "pattern"],
                    "additionalProperties": false,
                }),
            ),
        ]
    }

    fn invoke(name: String, arguments: String) -> Result<String, String> {
        match name.as_str() {
            "word_count" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Args {
                    text: String,
                }
                let args: Args = tool::parse_arguments(&name, &arguments)?;
                Ok(word_count(&args.text).to_string())
            }
            "regex_search" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Args {
                    text: String,
                    pattern: String,
                    #[serde(default)]
                    case_insensitive: bool,
                    max_matches: Option<usize>,
                }
                let args: Args = tool::parse_arguments(&name, &arguments)?;
                regex_search(
                    &args.text,
                    &args.pattern,
                    args.case_insensitive,
                    args.max_matches.unwrap_or(DEFAULT_MAX_MATCHES),
                )
                .map(|v| v.to_string())
            }
            other => Err(format!(
                "this component provides `word_count` and `regex_search`, not `{other}`"
            )),
        }
    }
}

warden_guest::export_tool!(Text);

/// Words are maximal runs of non-whitespace; lines are counted as an editor
/// shows them (a trailing newline does not start a new line).
pub fn word_count(text: &str) -> serde_json::Value {
    json!({
        "words": text.split_whitespace().count(),
        "lines": text.lines().count(),
        "characters": text.chars().count(),
    })
}

/// Every match of `pattern` in `text`, at most `max_matches`, each with its
/// 1-based line and column (in characters) and the whole line.
pub fn regex_search(
    text: &str,
    pattern: &str,
    case_insensitive: bool,
    max_matches: usize,
) -> Result<serde_json::Value, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "pattern is {} bytes long; the limit is {MAX_PATTERN_LEN}",
            pattern.len()
        ));
    }
    if !(1..=MAX_MATCHES).contains(&max_matches) {
        return Err(format!(
            "max_matches must be between 1 and {MAX_MATCHES}, got {max_matches}"
        ));
    }
    let regex = RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("bad pattern: {e}"))?;
    let mut matches = Vec::new();
    let mut truncated = false;
    'lines: for (index, line) in text.lines().enumerate() {
        for found in regex.find_iter(line) {
            if matches.len() == max_matches {
                truncated = true;
                break 'lines;
            }
            matches.push(json!({
                "line": index + 1,
                "column": line[..found.start()].chars().count() + 1,
                "match": found.as_str(),
                "text": line,
            }));
        }
    }
    Ok(json!({ "matches": matches, "truncated": truncated }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(
            word_count("the quick  brown\nfox\n"),
            json!({"words": 4, "lines": 2, "characters": 21})
        );
        assert_eq!(
            word_count(""),
            json!({"words": 0, "lines": 0, "characters": 0})
        );
        assert_eq!(word_count("héllo wörld")["characters"], 11);
    }

    #[test]
    fn search_reports_positions() {
        let found = regex_search("alpha beta\ngamma BETA beta", r"beta", true, 10).unwrap();
        let matches = found["matches"].as_array().unwrap();
        assert_eq!(matches.len(), 3);
        assert_eq!(matches[0]["line"], 1);
        assert_eq!(matches[0]["column"], 7);
        assert_eq!(matches[1]["match"], "BETA");
        assert_eq!(found["truncated"], false);
        let capped = regex_search("a a a a", "a", false, 2).unwrap();
        assert_eq!(capped["matches"].as_array().unwrap().len(), 2);
        assert_eq!(capped["truncated"], true);
    }

    #[test]
    fn bad_patterns_are_errors() {
        let err = regex_search("x", "(unclosed", false, 5).unwrap_err();
        assert!(err.starts_with("bad pattern:"), "{err}");
        let err = regex_search("x", r"\w{1000}{1000}", false, 5).unwrap_err();
        assert!(err.contains("size limit"), "{err}");
        assert!(regex_search("x", "x", false, 0).is_err());
    }

    #[test]
    fn unknown_tool_names_the_real_ones() {
        let err = Text::invoke("grep".into(), "{}".into()).unwrap_err();
        assert!(err.contains("`word_count` and `regex_search`"), "{err}");
    }
}
