//! The tools of an MCP session, loaded in the background: `initialize` and
//! `ping` are answered at once while the components compile, and requests
//! that need the tools wait for them (holding their slot, so the waiting
//! is bounded like everything else a client sends).
//!
//! Loading runs on a thread of its own, with a small async runtime of its
//! own for downloads and `describe`: compiling a Python or JavaScript
//! component takes 20-80 s of CPU, which must not stall the protocol. When
//! the session ends first, loading is abandoned, never waited for: the
//! thread finishes its compile unobserved (or dies with the process) and
//! writes nothing more. Every record it writes is written holding
//! [`ToolSet::stop`]'s lock, which the session's end takes before its end
//! record, so no record of the loader ever follows the end record.

use super::Gauge;
use crate::diagnostic::SourceError;
use crate::gate::Gate;
use crate::load::PolicyFile;
use crate::policy::Verdict;
use crate::registry::{ToolRegistry, ToolSources};
use crate::run::{RunError, record_granted};
use crate::runtime::Runtime;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, watch};

/// Where the tools are.
#[derive(Clone)]
pub(super) enum State {
    /// `compiled` of `total` components done (`total` is 0 until the
    /// components have been read); `current` is the one compiling.
    Loading {
        compiled: usize,
        total: usize,
        current: Option<String>,
    },
    Ready(Arc<ToolRegistry>),
    /// Loading failed: what every request that needs the tools is told.
    Failed(Arc<Refusal>),
    /// The session ended before the tools were loaded.
    Abandoned {
        compiled: usize,
        total: usize,
    },
}

/// A request that needs the tools, refused: a JSON-RPC error.
pub(super) struct Refusal {
    pub(super) message: String,
    pub(super) data: Option<Value>,
}

/// What loading came to, for the operator (the CLI prints it on stderr).
pub enum ToolsLoaded<'a> {
    /// Every component loaded; the tools the policy grants.
    Ready {
        /// The granted tools' names.
        granted: Vec<String>,
        /// From the session's start.
        elapsed: Duration,
    },
    /// A component could not be read, compiled or described (or the audit
    /// log failed): requests that need the tools are refused with it.
    Failed(&'a RunError),
}

/// Told once, when the tools are ready or could not be loaded.
pub type OnTools = Arc<dyn Fn(&ToolsLoaded<'_>) + Send + Sync>;

/// How far loading got, for [`Gauge::tools`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolsStatus {
    /// Reading and compiling the components.
    Loading,
    /// Loaded; requests that need them are served.
    Ready,
    /// Loading failed; requests that need them are refused.
    Failed,
    /// The session ended first.
    Abandoned,
}

/// The session's tools: loading, loaded, failed or abandoned.
pub(super) struct ToolSet {
    state: watch::Sender<State>,
    /// Held by the loader while it writes records, and by the session's
    /// end from before the end record on.
    records: Arc<AsyncMutex<()>>,
    error: Mutex<Option<RunError>>,
    gauge: Gauge,
    on_tools: Option<OnTools>,
    started: Instant,
}

impl ToolSet {
    /// Start loading `policy`'s tools on a thread of their own. `runtime`
    /// is `'static` because an abandoned compile goes on using it after
    /// the session has ended.
    pub(super) fn start(
        runtime: &'static Runtime,
        policy: Arc<PolicyFile>,
        gate: Arc<Gate>,
        gauge: Gauge,
        on_tools: Option<OnTools>,
    ) -> Arc<ToolSet> {
        let set = Arc::new(ToolSet {
            state: watch::Sender::new(State::Loading {
                compiled: 0,
                total: 0,
                current: None,
            }),
            records: Arc::default(),
            error: Mutex::default(),
            gauge,
            on_tools,
            started: Instant::now(),
        });
        set.gauge.set_tools(ToolsStatus::Loading);
        let (loader, loader_gate) = (set.clone(), gate.clone());
        let spawned = std::thread::Builder::new()
            .name("warden-mcp-load".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(loader.load(runtime, &policy, &loader_gate)),
                    Err(error) => loader.failed_to_start(&loader_gate, "runtime", &error),
                }
            });
        if let Err(error) = spawned {
            set.failed_to_start(&gate, "thread", &error);
        }
        set
    }

    /// No thread, or no runtime on it, to load the tools on.
    fn failed_to_start(&self, gate: &Gate, what: &str, error: &std::io::Error) {
        // Held only by the session's end: then nothing more is written.
        let Ok(_records) = self.records.try_lock() else {
            return;
        };
        let message = format!("the tools could not be loaded: no {what} to load them on ({error})");
        let note = gate.note(failure_entry(&message));
        self.failed(note.err(), RunError::Agent(message));
    }

    async fn load(&self, runtime: &Runtime, policy: &PolicyFile, gate: &Arc<Gate>) {
        let sources = match ToolSources::read(policy, runtime.downloader()).await {
            Ok(sources) => sources,
            Err(error) => return self.fail(gate, error).await,
        };
        let components = sources.components();
        let total = components.len();
        for (compiled, (source, bytes, sha256)) in components.iter().enumerate() {
            let current = format!("compiling {source} ({})", size(bytes.len()));
            if !self.progress(compiled, total, Some(current)) {
                return;
            }
            // The slow part, done outside `load_sources` so it can report
            // progress and be abandoned. A failure is reported by
            // `load_sources` below, at the entry's place in the policy.
            let _ = runtime.load_hashed(&source.to_string(), bytes, sha256);
        }
        drop(components);
        if !self.progress(total, total, None) {
            return;
        }
        let _records = self.records.lock().await;
        if !self.loading() {
            return;
        }
        // Compiled above: linking, `describe` in a fresh instance under the
        // policy's limits, and binding each entry; milliseconds.
        match ToolRegistry::load_sources(runtime, policy, sources, gate).await {
            Ok(tools) => {
                if let Err(error) = record_granted(gate, &tools) {
                    return self.failed(None, RunError::Audit(error));
                }
                let granted: Vec<String> = tools.granted().map(|t| t.name.clone()).collect();
                self.state.send_replace(State::Ready(Arc::new(tools)));
                self.gauge.set_tools(ToolsStatus::Ready);
                if let Some(on_tools) = &self.on_tools {
                    on_tools(&ToolsLoaded::Ready {
                        granted,
                        elapsed: self.started.elapsed(),
                    });
                }
            }
            Err(error) => {
                let note = note_failure(gate, &error);
                self.failed(note.err(), RunError::Policy(error));
            }
        }
    }

    /// Loading failed before the loader held the records' lock.
    async fn fail(&self, gate: &Gate, error: SourceError) {
        let _records = self.records.lock().await;
        if !self.loading() {
            return;
        }
        let note = note_failure(gate, &error);
        self.failed(note.err(), RunError::Policy(error));
    }

    /// Record `error` as the reason requests that need the tools are
    /// refused (an audit failure, `audit`, wins: nothing more may happen).
    fn failed(&self, audit: Option<std::io::Error>, error: RunError) {
        let error = match audit {
            Some(audit) => RunError::Audit(audit),
            None => error,
        };
        let refusal = refusal(&error);
        let mut kept = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(on_tools) = &self.on_tools {
            on_tools(&ToolsLoaded::Failed(&error));
        }
        *kept = Some(error);
        drop(kept);
        self.state.send_replace(State::Failed(Arc::new(refusal)));
        self.gauge.set_tools(ToolsStatus::Failed);
    }

    /// Report `compiled` of `total`; `false` once loading was abandoned.
    fn progress(&self, compiled: usize, total: usize, current: Option<String>) -> bool {
        self.state.send_if_modified(|state| match state {
            State::Loading { .. } => {
                *state = State::Loading {
                    compiled,
                    total,
                    current,
                };
                true
            }
            _ => false,
        })
    }

    fn loading(&self) -> bool {
        matches!(*self.state.borrow(), State::Loading { .. })
    }

    /// The tools, if loaded.
    pub(super) fn loaded(&self) -> Option<Arc<ToolRegistry>> {
        match &*self.state.borrow() {
            State::Ready(tools) => Some(tools.clone()),
            _ => None,
        }
    }

    /// Wait for the tools. `progress(compiled, total, current)` is called
    /// whenever more components are done (and once at first), while
    /// loading.
    pub(super) async fn ready(
        &self,
        mut progress: impl FnMut(usize, usize, Option<&str>),
    ) -> Result<Arc<ToolRegistry>, Arc<Refusal>> {
        let mut state = self.state.subscribe();
        let mut reported: Option<usize> = None;
        loop {
            let now = state.borrow_and_update().clone();
            match now {
                State::Ready(tools) => return Ok(tools),
                State::Failed(refusal) => return Err(refusal),
                State::Abandoned { compiled, total } => {
                    return Err(Arc::new(Refusal {
                        message: format!(
                            "the session ended before the tools were loaded ({compiled} of {total} components compiled)"
                        ),
                        data: None,
                    }));
                }
                State::Loading {
                    compiled,
                    total,
                    current,
                } => {
                    // Nothing to count until the components are read.
                    if total > 0 && reported.is_none_or(|before| compiled > before) {
                        progress(compiled, total, current.as_deref());
                        reported = Some(compiled);
                    }
                }
            }
            // The sender lives as long as `self`: this never fails.
            if state.changed().await.is_err() {
                return Err(Arc::new(Refusal {
                    message: "the tools' loading stopped".into(),
                    data: None,
                }));
            }
        }
    }

    /// The session is ending: abandon loading if it is not done (requests
    /// waiting for the tools are refused at once), and hold the records'
    /// lock until the end record is written. Waits at most for the
    /// loader's `describe` calls, never for a compile.
    pub(super) async fn stop(&self) -> OwnedMutexGuard<()> {
        let records = self.records.clone().lock_owned().await;
        let abandoned = self.state.send_if_modified(|state| match state {
            State::Loading {
                compiled, total, ..
            } => {
                *state = State::Abandoned {
                    compiled: *compiled,
                    total: *total,
                };
                true
            }
            _ => false,
        });
        if abandoned {
            self.gauge.set_tools(ToolsStatus::Abandoned);
        }
        records
    }

    /// For the end record: what became of the tools, and why loading
    /// failed (taken: asked once).
    pub(super) fn outcome(&self) -> (Value, Option<RunError>) {
        let error = self.error.lock().unwrap_or_else(|e| e.into_inner()).take();
        let note = match &*self.state.borrow() {
            State::Ready(_) => json!("loaded"),
            State::Failed(refusal) => json!({ "failed": refusal.message }),
            State::Abandoned { compiled, total }
            | State::Loading {
                compiled, total, ..
            } => {
                json!({ "abandoned": { "compiled": compiled, "components": total } })
            }
        };
        (note, error)
    }
}

/// The audit record of a failed load: not an end record (the session goes
/// on, refusing what needs the tools), but the reason for what follows.
fn note_failure(gate: &Gate, error: &SourceError) -> std::io::Result<u64> {
    gate.note(failure_entry(&error.render()))
}

fn failure_entry(detail: &str) -> crate::audit::Entry {
    crate::audit::Entry {
        kind: crate::audit::Kind::Run,
        event: crate::audit::Event::Decision,
        subject: "tools".into(),
        decision: Verdict::Deny,
        rule: "policy".into(),
        detail: detail.to_string(),
        outcome: None,
        data: None,
    }
}

/// What a client is told when a request needs tools that could not be
/// loaded: the first error's message and place, and all of them rendered.
fn refusal(error: &RunError) -> Refusal {
    match error {
        RunError::Policy(error) => {
            let first = error.diagnostics.first();
            let place = first.and_then(|d| {
                let file = error.files.get(d.file)?;
                let (line, column) = d.line_col(&file.text)?;
                Some(format!(" ({}:{line}:{column})", file.name))
            });
            Refusal {
                message: format!(
                    "the tools could not be loaded: {}{}",
                    first.map_or("?", |d| d.message.as_str()),
                    place.unwrap_or_default()
                ),
                data: Some(json!({ "detail": error.render() })),
            }
        }
        other => Refusal {
            message: other.to_string(),
            data: None,
        },
    }
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}
