//! `warden:sandbox/tools`: the agent's tool calls, decided by the policy's
//! `[tools.NAME]` entries and run in a fresh instance of the tool's
//! component, with no authority of the agent's.

use super::{AgentRole, GuestState, brief, strict_json, to_wit};
use crate::audit::{Kind, Outcome};
use crate::bindings::WitToolSpec;
use crate::bindings::agent::warden::sandbox::tools as wit;
use crate::gate::{Gate, GuestError};
use crate::policy::plan::MAX_PLAN_TOOLS;
use crate::policy::{Request, printable};
use crate::registry::{ToolFailure, ToolRegistry};
use crate::secrets::{Clean, Redactions};
use serde_json::json;
use std::io;
use std::sync::Arc;

/// What a tool call gives back to the agent or MCP client: the result or
/// the error, both through the boundary's redaction.
pub type ToolAnswer = Result<Clean<String>, Clean<GuestError>>;

/// Decide and perform one tool call. The outer `Err` means the audit log
/// failed (the guest must be stopped); the inner one goes to the guest.
/// Arguments that repeat a key are refused (see [`strict_json`]).
pub async fn call(
    gate: &Arc<Gate>,
    registry: &ToolRegistry,
    replay: Option<&crate::replay::ReplayTools>,
    name: &str,
    arguments: &str,
) -> io::Result<ToolAnswer> {
    let parsed = match strict_json::parse(arguments) {
        Ok(value) => value,
        Err(error) => {
            let error = GuestError::Invalid(if error.is_data() {
                format!(
                    "the arguments of `{}` are refused: {error}",
                    printable(name)
                )
            } else {
                format!(
                    "the arguments of `{}` are not valid JSON ({error})",
                    printable(name)
                )
            });
            let data = json!({ "arguments": brief(arguments, 1000) });
            let error =
                gate.clean(gate.refuse(Kind::Tool, name, "arguments", error, Some(data))?);
            if let Some(replay) = replay {
                replay.refused(name, &json!(arguments), &error);
            }
            return Ok(Err(error));
        }
    };
    call_parsed(gate, registry, replay, name, &parsed).await
}

/// [`call`] with the arguments already parsed, as an MCP request carries
/// them. The tool receives `parsed` serialized again: exactly the value
/// the policy decided on, never a text it might read differently.
pub async fn call_parsed(
    gate: &Arc<Gate>,
    registry: &ToolRegistry,
    replay: Option<&crate::replay::ReplayTools>,
    name: &str,
    parsed: &serde_json::Value,
) -> io::Result<ToolAnswer> {
    call_parsed_in(gate, registry, replay, name, parsed, None).await
}

/// [`call_parsed`] for an MCP session that keeps its own per-run
/// instances (`kept`), never the registry's, which another session shares.
#[tracing::instrument(level = "debug", name = "tool_call", skip_all, fields(
    tool = %crate::transcript::name(name),
))]
pub async fn call_parsed_in(
    gate: &Arc<Gate>,
    registry: &ToolRegistry,
    replay: Option<&crate::replay::ReplayTools>,
    name: &str,
    parsed: &serde_json::Value,
    kept: Option<&crate::registry::KeptInstances>,
) -> io::Result<ToolAnswer> {
    // The tool is a guest too: a secret the agent holds (its task carried
    // one) does not reach it, and the policy decides on what the tool gets.
    let mut redacted_arguments = Redactions::new();
    let cleaned;
    // Copied only when a value occurs in them: this runs on every call of
    // every run with a provider key.
    let parsed = if !gate.secrets().occurs_in_json(parsed) {
        parsed
    } else {
        cleaned = gate
            .secrets()
            .clean(parsed.clone(), &mut redacted_arguments);
        &*cleaned
    };
    let request = Request::Tool {
        name,
        arguments: parsed,
        schema: registry.schema(name),
    };
    let mut data = json!({ "arguments": parsed });
    if !redacted_arguments.is_empty() {
        data["secrets_redacted"] = json!(redacted_arguments);
    }
    let permit = match gate.check(name, &request, Some(data)).await? {
        Ok(permit) => {
            tracing::debug!(decision = "allow", rule = %permit.rule());
            permit
        }
        Err(refusal) => {
            tracing::debug!(decision = "refused");
            let refusal = gate.clean(refusal);
            if let Some(replay) = replay {
                replay.refused(name, parsed, &refusal);
            }
            return Ok(Err(refusal));
        }
    };
    // Decided: from now on its values count as the model's (never before,
    // so that no call vouches for itself).
    // Labels its argument values carry flow into its stores and result.
    let inherited = gate.flow_into_call(name, parsed);
    gate.observe_tool_call(parsed)?;
    let (outcome, http_labels) = match replay {
        // A replay returns what the tool returned then; nothing runs.
        Some(replay) => (
            replay
                .next(name, parsed, permit.rule().as_str())
                .map_err(ToolFailure::Returned),
            Vec::new(),
        ),
        None => {
            registry
                .invoke_in(name, &parsed.to_string(), gate, kept)
                .await?
        }
    };
    // Whatever the tool gives back (its result, its own error, the text of
    // a trap such as a panic message) reaches the agent: all of it is
    // redacted (an echoing server, a file holding a token) and carries the
    // tool's labels and those of the HTTP rules that served it.
    let (outcome, text) = match outcome {
        Ok(result) => (Outcome::Ok, result),
        Err(ToolFailure::Returned(message)) => (Outcome::Failed, message),
        Err(failure @ (ToolFailure::Stopped(_) | ToolFailure::Reset(..))) => {
            (Outcome::Trap, failure.to_string())
        }
    };
    let mut redacted = Redactions::new();
    let text = gate.secrets().clean(text, &mut redacted);
    // Parsed here, not under the gate's lock: it may be a megabyte.
    let declared = registry.third_party(name);
    let by_path = gate
        .policy()
        .tools
        .get(name)
        .is_some_and(|tool| tool.labels_by_path(declared));
    let json = by_path
        .then(|| serde_json::from_str::<serde_json::Value>(&text).ok())
        .flatten();
    let origin = crate::policy::ResultOrigin {
        http_labels: &http_labels,
        inherited: &inherited,
        declared,
        json: match &json {
            Some(value) => crate::policy::ResultJson::Json(value),
            None => crate::policy::ResultJson::NotJson,
        },
    };
    let labels = gate.observe_tool_result_from(name, &text, &origin)?;
    let data = if outcome == Outcome::Ok {
        json!({
            "result": *text,
            "labels_added": labels,
            "labels_inherited": inherited,
            "secrets_redacted": redacted,
        })
    } else {
        json!({
            "labels_added": labels,
            "labels_inherited": inherited,
            "secrets_redacted": redacted,
        })
    };
    let detail = brief(&text, if outcome == Outcome::Ok { 200 } else { 1000 });
    tracing::debug!(outcome = ?outcome, bytes = text.len());
    gate.complete(permit, outcome, detail, Some(data))?;
    Ok(match outcome {
        Outcome::Ok => Ok(text),
        Outcome::Failed => Err(text.map(|message| {
            GuestError::Failed(format!("tool `{name}` returned an error: {message}"))
        })),
        _ => Err(text.map(|why| GuestError::Failed(format!("tool `{name}` was stopped: {why}")))),
    })
}

/// Decide and record the agent's plan (`tools.declare-plan`): one
/// decision record before, one outcome after, like every request. The
/// record keeps at most [`MAX_PLAN_TOOLS`] names of at most 128 bytes
/// each (a longer plan or name is refused anyway) and how many there were.
pub async fn declare_plan(
    gate: &Gate,
    tools: &[String],
) -> io::Result<Result<(), Clean<GuestError>>> {
    let request = Request::Plan { tools };
    // What the record keeps is bounded before it is built: a plan that
    // long or names that long are refused anyway.
    let listed: Vec<&str> = tools
        .iter()
        .take(MAX_PLAN_TOOLS)
        .map(|name| brief_name(name))
        .collect();
    let listed = json!(listed);
    let data = json!({ "tools": listed, "listed": tools.len() });
    let decided = gate.check("agent", &request, Some(data)).await?;
    // A replay compares the plan with the recorded one (it performs
    // nothing: a plan has no effect but on later decisions).
    if let Some(replay) = gate.replay() {
        replay.planned(&listed, decided.is_ok());
    }
    match decided {
        Ok(permit) => {
            let declared = crate::policy::plan::normalized(tools);
            let detail = if declared.is_empty() {
                "no tools with effects".to_string()
            } else {
                declared
                    .iter()
                    .map(|name| printable(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            gate.complete(permit, Outcome::Ok, detail, None)?;
            Ok(Ok(()))
        }
        Err(refusal) => Ok(Err(gate.clean(refusal))),
    }
}

/// At most 128 bytes of a name, cut at a character boundary.
fn brief_name(name: &str) -> &str {
    let mut end = name.len().min(128);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl wit::Host for GuestState<AgentRole> {
    async fn list_tools(&mut self) -> wasmtime::Result<Vec<WitToolSpec>> {
        let specs: Vec<_> = self.role.tools.granted().cloned().collect();
        Ok(self
            .gate
            .clean(specs)
            .into_inner()
            .into_iter()
            .map(|spec| WitToolSpec {
                parameters_schema: spec.parameters.to_string(),
                name: spec.name,
                description: spec.description,
            })
            .collect())
    }

    async fn call(
        &mut self,
        name: String,
        arguments: String,
    ) -> wasmtime::Result<Result<String, crate::bindings::WitError>> {
        let registry = self.role.tools.clone();
        let replay = self.role.replay.clone();
        let result = call(&self.gate, &registry, replay.as_deref(), &name, &arguments).await?;
        Ok(result.map(Clean::into_inner).map_err(to_wit))
    }

    async fn declare_plan(
        &mut self,
        tools: Vec<String>,
    ) -> wasmtime::Result<Result<(), crate::bindings::WitError>> {
        let result = declare_plan(&self.gate, &tools).await?;
        Ok(result.map_err(to_wit))
    }
}
