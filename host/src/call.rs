//! One tool call with no agent (`warden call`): a component's tool called
//! once, by a person or a script, through the same path an agent's call
//! takes ([`capability::tools::call_parsed`]: schema, rules, budgets, a
//! fresh instance with the entry's grants, redaction, audit records).
//!
//! It never grants more than a policy says: with no policy, the tool's
//! entry grants nothing at all (no HTTP, no files, no environment, no
//! secrets), so a pure tool works and anything else is refused as it
//! would be in a run.
//!
//! [`capability::tools::call_parsed`]: crate::capability::tools::call_parsed

use crate::audit::{AuditLog, AuditSink, Event, Kind, Outcome, Record};
use crate::capability::tools;
use crate::diagnostic::SourceError;
use crate::gate::{Approver, Gate, GuestError};
use crate::load::PolicyFile;
use crate::policy::{ComponentRef, Verdict};
use crate::run::{Opening, RunError, end_record, open_session, summary};
use crate::runtime::Runtime;
use crate::secrets::{Clean, Secrets};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name of the policy `warden call` uses when none is given.
pub const NO_POLICY: &str = "(no policy: the tool is granted nothing)";

/// What to call.
pub struct CallSpec {
    /// The policy deciding the call, already narrowed to the one tool by
    /// [`policy_for`].
    pub policy: PolicyFile,
    /// The tool's name.
    pub tool: String,
    /// Its arguments (a JSON object).
    pub arguments: Value,
    /// Who is asked about `ask` decisions; `None`: nobody.
    pub approver: Option<Arc<dyn Approver>>,
    /// Rules approved in advance (`--approve RULE`).
    pub approve: Vec<String>,
}

/// What came of the call.
#[derive(Debug)]
pub struct CallReport {
    /// The session's id (in every audit record).
    pub run_id: String,
    /// The tool's result, or why there is none; through the boundary's
    /// redaction.
    pub result: Result<String, GuestError>,
    /// The policy's decision on the call and the rule that gave it (`None`
    /// if no decision was recorded).
    pub decision: Option<(Verdict, String)>,
    /// What the tool itself asked for and the policy refused (HTTP
    /// requests), as the audit log words it; at most [`MAX_REFUSED`].
    pub refused: Vec<String>,
    /// How long it took, loading included.
    pub elapsed: Duration,
    /// The hash of the session's last audit record.
    pub audit_head: String,
}

/// The policy one call runs under: `policy` with only the entry of `tool`
/// kept, its component replaced by `component` (a pin it carries still
/// applies), or, with no policy, an entry for `tool` that grants nothing.
/// A tool the policy has no entry for keeps none: the call is denied by
/// the policy's default, as an agent's would be.
pub fn policy_for(
    policy: Option<PolicyFile>,
    component: &Path,
    tool: &str,
) -> Result<PolicyFile, SourceError> {
    let component_text = component.display().to_string();
    let Some(mut file) = policy else {
        // Quoted as TOML strings, so any name or path stays one key and one
        // value.
        let text = format!(
            "[tools.{}]\ncomponent = {}\n",
            toml::Value::String(tool.to_string()),
            toml::Value::String(component_text),
        );
        return PolicyFile::from_text(NO_POLICY.into(), ".".into(), text);
    };
    let mut policy = (*file.policy).clone();
    policy.tools.retain(|name, _| name == tool);
    if let Some(entry) = policy.tools.get_mut(tool) {
        let place = entry
            .component
            .as_ref()
            .map_or_else(|| entry.place.clone(), |c| c.place.clone());
        entry.component = Some(ComponentRef {
            text: component_text,
            place,
        });
    }
    file.policy = Arc::new(policy);
    Ok(file)
}

/// Call `spec.tool` once on `runtime`, recording to `audit`: the first
/// record names the policy and the component, then the call's decision and
/// outcome, then the end record.
pub async fn call(
    runtime: &Runtime,
    spec: CallSpec,
    audit: AuditLog,
) -> Result<CallReport, RunError> {
    let started = Instant::now();
    let decided = Decided::default();
    let audit = audit.with_sink(Decided {
        subject: crate::policy::printable(&spec.tool),
        seen: decided.seen.clone(),
        refused: decided.refused.clone(),
    });
    let gate = Gate::new(spec.policy.policy.clone(), audit)
        .with_approvals(spec.approver.clone(), &spec.approve)
        .with_secrets(Secrets::load(&spec.policy));
    let opening = Opening {
        subject: "call".into(),
        detail: format!(
            "calling {} once, with no agent (warden call)",
            crate::capability::brief(&spec.tool, 100)
        ),
        data: json!({ "call": { "tool": spec.tool, "arguments": spec.arguments } }),
    };
    let (gate, registry) = open_session(runtime, &spec.policy, gate, opening).await?;
    let answer = tools::call_parsed(&gate, &registry, None, &spec.tool, &spec.arguments).await?;
    let result = answer.map(Clean::into_inner).map_err(Clean::into_inner);
    let elapsed = started.elapsed();
    let (outcome, detail) = match &result {
        Ok(_) => (Outcome::Ok, "the tool answered".to_string()),
        Err(error) => (error.outcome(), error.to_string()),
    };
    let mut data = json!({});
    summary(&gate, elapsed, &mut data);
    end_record(&gate, "call", outcome, detail, data)?;
    let audit_head = gate.finish_audit()?;
    let decision = decided
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let refused = std::mem::take(&mut *decided.refused.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(CallReport {
        run_id: gate.run_id().to_string(),
        result,
        decision,
        refused,
        elapsed,
        audit_head,
    })
}

/// Most refusals of the tool's own requests a [`CallReport`] keeps.
pub const MAX_REFUSED: usize = 5;

/// Keeps the decision on the call (its first tool decision record), and
/// the first [`MAX_REFUSED`] refusals of what the tool itself asked for:
/// bounded, whatever else is recorded.
#[derive(Default)]
struct Decided {
    /// The tool's name as records carry it.
    subject: String,
    seen: Arc<Mutex<Option<(Verdict, String)>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl AuditSink for Decided {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        if record.event != Event::Decision {
            return Ok(());
        }
        if record.kind == Kind::Tool {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.is_none() && record.subject == self.subject {
                *seen = Some((record.decision, record.rule.clone()));
            }
        } else if record.kind == Kind::Http && record.decision == Verdict::Deny {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            if refused.len() < MAX_REFUSED {
                refused.push(format!(
                    "{}: {}",
                    record.kind.as_str(),
                    crate::capability::brief(&record.detail, 300)
                ));
            }
        }
        Ok(())
    }
}

/// The kind of a call's error, as `--json` and the WIT name it.
pub fn error_kind(error: &GuestError) -> &'static str {
    match error {
        GuestError::Denied(_) => "denied",
        GuestError::BudgetExhausted(_) => "budget-exhausted",
        GuestError::Invalid(_) => "invalid",
        GuestError::Failed(_) => "failed",
    }
}
