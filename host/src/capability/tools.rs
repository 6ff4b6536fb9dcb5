//! `warden:sandbox/tools`: the agent's tool calls, decided by the policy's
//! `[tools.NAME]` entries and run in a fresh instance of the tool's
//! component, with no authority of the agent's.

use super::{AgentRole, GuestState, brief, strict_json, to_wit};
use crate::audit::{Kind, Outcome};
use crate::bindings::WitToolSpec;
use crate::bindings::agent::warden::sandbox::tools as wit;
use crate::gate::{Gate, GuestError};
use crate::policy::{Request, printable};
use crate::registry::{ToolFailure, ToolRegistry};
use crate::secrets::Redactions;
use serde_json::json;
use std::io;
use std::sync::Arc;

/// Decide and perform one tool call. The outer `Err` means the audit log
/// failed (the guest must be stopped); the inner one goes to the guest.
/// Arguments that repeat a key are refused (see [`strict_json`]).
pub async fn call(
    gate: &Arc<Gate>,
    registry: &ToolRegistry,
    replay: Option<&crate::replay::ReplayTools>,
    name: &str,
    arguments: &str,
) -> io::Result<Result<String, GuestError>> {
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
            return gate
                .refuse(Kind::Tool, name, "arguments", error, Some(data))
                .map(Err);
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
) -> io::Result<Result<String, GuestError>> {
    let request = Request::Tool {
        name,
        arguments: parsed,
        schema: registry.schema(name),
    };
    let permit = match gate.check(name, &request, Some(json!({ "arguments": parsed })))? {
        Ok(permit) => permit,
        Err(refusal) => return Ok(Err(refusal)),
    };
    // Decided: from now on its values count as the model's (never before,
    // so that no call vouches for itself).
    gate.observe_tool_call(parsed);
    let (outcome, http_labels) = match replay {
        // A replay returns what the tool returned then; nothing runs.
        Some(replay) => (
            replay.next(name, parsed).map_err(ToolFailure::Returned),
            Vec::new(),
        ),
        None => registry.invoke(name, &parsed.to_string(), gate).await?,
    };
    match outcome {
        Ok(mut result) => {
            // A secret that reached the tool's output (an echoing server,
            // a file holding a token) goes no further.
            let mut redacted = Redactions::new();
            gate.secrets().redact_in_place(&mut result, &mut redacted);
            let labels = gate.observe_tool_result(name, &result, &http_labels);
            gate.complete(
                permit,
                Outcome::Ok,
                brief(&result, 200),
                Some(json!({
                    "result": result,
                    "labels_added": labels,
                    "secrets_redacted": redacted,
                })),
            )?;
            Ok(Ok(result))
        }
        Err(ToolFailure::Returned(message)) => {
            gate.complete(permit, Outcome::Failed, brief(&message, 1000), None)?;
            Ok(Err(GuestError::Failed(format!(
                "tool `{name}` returned an error: {message}"
            ))))
        }
        Err(ToolFailure::Stopped(failure)) => {
            let text = failure.to_string();
            gate.complete(permit, Outcome::Trap, text.clone(), None)?;
            Ok(Err(GuestError::Failed(format!(
                "tool `{name}` was stopped: {text}"
            ))))
        }
    }
}

impl wit::Host for GuestState<AgentRole> {
    async fn list_tools(&mut self) -> wasmtime::Result<Vec<WitToolSpec>> {
        Ok(self
            .role
            .tools
            .granted()
            .map(|spec| WitToolSpec {
                name: spec.name.clone(),
                description: spec.description.clone(),
                parameters_schema: spec.parameters.to_string(),
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
        Ok(result.map_err(to_wit))
    }
}
