//! The policy file as TOML: parsed with spans, then validated into a
//! [`Policy`]. Every problem becomes a [`Diagnostic`] that points at the text.

use super::units::{ByteSize, HumanDuration};
use super::{ComponentRef, Limits, ModelPolicy, Policy, Rule, ToolDecision, ToolPolicy};
use crate::diagnostic::{Diagnostic, Severity, SourceError, parse_toml};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

/// The largest linear memory a guest may be granted: 32-bit wasm memories
/// stop at 4 GiB, and the engine's pool reserves no more.
pub const MAX_MEMORY: u64 = 4 << 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    limits: Option<RawLimits>,
    model: Option<RawModel>,
    #[serde(default)]
    tools: BTreeMap<Spanned<String>, Spanned<RawTool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Spanned<ByteSize>>,
    cpu: Option<Spanned<HumanDuration>>,
    wall: Option<Spanned<HumanDuration>>,
    output: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    allow: Option<Vec<Spanned<String>>>,
    max_calls: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    component: Option<Spanned<String>>,
    decision: Option<Spanned<ToolDecision>>,
    max_calls: Option<Spanned<u32>>,
}

/// Parse and validate `text`, the contents of the policy file `file`.
pub(super) fn parse(file: &str, text: &str) -> Result<Policy, SourceError> {
    let raw: RawPolicy = parse_toml(file, text)?;
    let mut found = Vec::new();
    let policy = validate(raw, &mut found);
    if found.iter().any(|d| d.severity == Severity::Error) {
        return Err(SourceError {
            file: file.to_string(),
            text: text.to_string(),
            diagnostics: found,
        });
    }
    Ok(Policy {
        warnings: found,
        ..policy
    })
}

fn span_of<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    Some(value.span())
}

fn validate(raw: RawPolicy, found: &mut Vec<Diagnostic>) -> Policy {
    let limits = validate_limits(raw.limits, found);
    let model = validate_model(raw.model, found);
    let mut tools = BTreeMap::new();
    for (name, entry) in raw.tools {
        let name_span = name.span();
        let name = name.into_inner();
        let entry_span = entry.span();
        let entry = entry.into_inner();
        if !is_tool_name(&name) {
            found.push(
                Diagnostic::error(
                    format!("`{name}` is not a valid tool name"),
                    Some(name_span.clone()),
                )
                .with_help("tool names are 1 to 64 letters, digits, `_` or `-` (what model providers accept)"),
            );
            continue;
        }
        let decision = entry
            .decision
            .as_ref()
            .map_or(ToolDecision::Allow, |d| *d.get_ref());
        let component = entry.component.map(|c| ComponentRef {
            span: c.span(),
            text: c.into_inner(),
        });
        if let Some(component) = &component
            && component.text.trim().is_empty()
        {
            found.push(
                Diagnostic::error("`component` is empty", Some(component.span.clone())).with_help(
                    "give the path of the tool's .wasm file, relative to this policy file",
                ),
            );
        }
        if decision == ToolDecision::Allow && component.is_none() {
            found.push(
                Diagnostic::error(
                    format!("tool `{name}` is granted but has no `component`"),
                    Some(entry_span.clone()),
                )
                .with_help(format!(
                    "add `component = \"path/to/tool.wasm\"` under [tools.{name}], or `decision = \"deny\"`"
                )),
            );
        }
        if let Some(max) = &entry.max_calls
            && *max.get_ref() == 0
            && decision == ToolDecision::Allow
        {
            found.push(
                Diagnostic::warning(
                    format!(
                        "tool `{name}` is granted with `max_calls = 0`, so it can never be called"
                    ),
                    span_of(max),
                )
                .with_help("write `decision = \"deny\"` to deny it, or raise `max_calls`"),
            );
        }
        tools.insert(
            name.clone(),
            ToolPolicy {
                rule: Rule::new(format!("tools.{name}")),
                max_calls_rule: Rule::new(format!("tools.{name}.max_calls")),
                name,
                component,
                decision,
                max_calls: entry.max_calls.map(Spanned::into_inner),
                span: name_span,
            },
        );
    }
    Policy {
        limits,
        model,
        tools,
        warnings: Vec::new(),
        default_rule: Rule::new("default"),
        output_rule: Rule::new("limits.output"),
    }
}

/// What model providers accept as a function name.
fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn validate_limits(raw: Option<RawLimits>, found: &mut Vec<Diagnostic>) -> Limits {
    let defaults = Limits::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let memory = match raw.memory {
        Some(memory) => {
            let bytes = memory.get_ref().0;
            if bytes < (1 << 20) {
                found.push(
                    Diagnostic::error(
                        format!(
                            "`memory` is {}; guests need at least 1MiB",
                            memory.get_ref()
                        ),
                        span_of(&memory),
                    )
                    .with_help("Rust guests run in 2MiB; 64MiB suits most agents"),
                );
            } else if bytes > MAX_MEMORY {
                found.push(
                    Diagnostic::error(
                        format!(
                            "`memory` is {}; the most a guest can use is 4GiB",
                            memory.get_ref()
                        ),
                        span_of(&memory),
                    )
                    .with_help("wasm32 memories are limited to 4GiB: lower the limit"),
                );
            }
            bytes
        }
        None => defaults.memory,
    };
    let mut duration =
        |value: Option<Spanned<HumanDuration>>, key: &str, default: Duration| match value {
            Some(value) if value.get_ref().0.is_zero() => {
                found.push(
                    Diagnostic::error(
                        format!("`{key}` is zero, so no guest could run"),
                        span_of(&value),
                    )
                    .with_help("give a positive duration such as \"10s\""),
                );
                default
            }
            Some(value) => value.get_ref().0,
            None => default,
        };
    let cpu_span = raw.cpu.as_ref().map(|c| c.span());
    let cpu = duration(raw.cpu, "cpu", defaults.cpu);
    let wall = duration(raw.wall, "wall", defaults.wall);
    if cpu > wall {
        found.push(
            Diagnostic::warning(
                format!(
                    "`cpu` ({}) is longer than `wall` ({}), so the wall clock always stops a run first",
                    HumanDuration(cpu),
                    HumanDuration(wall)
                ),
                cpu_span,
            )
            .with_help("make `cpu` at most `wall`"),
        );
    }
    let output = match raw.output {
        Some(output) if output.get_ref().0 == 0 => {
            found.push(
                Diagnostic::error(
                    "`output` is zero, so no result could be returned",
                    span_of(&output),
                )
                .with_help("give a size such as \"1MiB\""),
            );
            defaults.output
        }
        Some(output) => output.get_ref().0,
        None => defaults.output,
    };
    Limits {
        memory,
        cpu,
        wall,
        output,
    }
}

fn validate_model(raw: Option<RawModel>, found: &mut Vec<Diagnostic>) -> ModelPolicy {
    let mut model = ModelPolicy {
        allow: Vec::new(),
        max_calls: None,
        allow_rule: Rule::new("model.allow"),
        max_calls_rule: Rule::new("model.max_calls"),
    };
    let Some(raw) = raw else {
        return model;
    };
    for name in raw.allow.unwrap_or_default() {
        if name.get_ref().trim().is_empty() {
            found.push(
                Diagnostic::error("an empty model name in `allow`", span_of(&name))
                    .with_help("list model names such as \"scripted\" or \"gpt-4o-mini\""),
            );
        } else {
            model.allow.push(name.into_inner());
        }
    }
    model.max_calls = raw.max_calls.map(Spanned::into_inner);
    model
}
