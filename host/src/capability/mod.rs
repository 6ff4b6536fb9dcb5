//! One module per import family. Each decodes the guest's call into host
//! types, asks the [`Gate`], performs the effect only if allowed, and maps
//! the result back. Nothing here decides: that is the policy's job.
//!
//! A store's data is a [`GuestState`]: the WASI context (no preopens, no
//! environment, no network; stdio captured), limits, the clock that
//! measures guest execution time, and the run's gate. `R` is the role:
//! an agent can reach the model and tools, a tool only the log.

pub mod log;
pub mod model;
pub mod stdio;
pub mod tools;

use crate::audit::{Entry, Event, Kind, Outcome};
use crate::gate::{Gate, GuestError};
use crate::policy::{Limits, Verdict};
use crate::provider::ModelProvider;
use crate::registry::ToolRegistry;
use crate::runtime::limits::{GuestClock, GuestFailure, LimitExceeded, StoreLimiter};
use serde_json::json;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stdio::{CapturedOutput, STDIO_CAPTURE};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// What an agent instance can reach besides the log.
pub struct AgentRole {
    /// The run's model provider.
    pub provider: Arc<dyn ModelProvider>,
    /// The tools the policy names.
    pub tools: Arc<ToolRegistry>,
}

/// A tool instance reaches nothing but the log.
pub struct ToolRole;

/// The data of one guest's store.
pub struct GuestState<R> {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: StoreLimiter,
    clock: GuestClock,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    gate: Arc<Gate>,
    /// Who this guest is in audit records: the agent's or the tool's name.
    name: String,
    role: R,
}

impl<R: Send + 'static> GuestState<R> {
    /// A guest with no authority beyond its role's imports, bounded by
    /// `limits`.
    pub fn new(name: impl Into<String>, gate: Arc<Gate>, limits: &Limits, role: R) -> Self {
        let stdout = CapturedOutput::new(STDIO_CAPTURE);
        let stderr = CapturedOutput::new(STDIO_CAPTURE);
        // Everything is denied until granted: no preopens, no environment,
        // no arguments, stdin closed, and no network of any kind.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: StoreLimiter::new(limits.memory),
            clock: GuestClock::new(limits.cpu),
            stdout,
            stderr,
            gate,
            name: name.into(),
            role,
        }
    }

    /// A store for this guest: memory limited, and interrupted at every
    /// epoch tick to check its CPU time and yield to other tasks.
    pub fn into_store(self, engine: &Engine) -> Store<Self> {
        let mut store = Store::new(engine, self);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|context| {
            let clock = context.data().clock;
            if clock.guest_time() >= clock.cpu_limit() {
                return Err(LimitExceeded::Cpu {
                    limit: clock.cpu_limit(),
                }
                .into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// The run's gate.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Run `call` (an instantiation or export call on this guest's store),
    /// bounded by `wall`; a trap or limit becomes a [`GuestFailure`].
    pub async fn guarded<T>(
        stderr: &CapturedOutput,
        wall: Duration,
        call: impl Future<Output = wasmtime::Result<T>>,
    ) -> Result<T, GuestFailure> {
        match tokio::time::timeout(wall, call).await {
            Err(_) => Err(GuestFailure::Limit(LimitExceeded::Wall { limit: wall })),
            Ok(Err(error)) => Err(GuestFailure::classify(&error, &stderr.contents().0)),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// The guest's captured stderr (cheap to clone).
    pub fn stderr(&self) -> CapturedOutput {
        self.stderr.clone()
    }

    /// After the guest is done: record its stdout and stderr, if any, and
    /// the limit or trap that stopped it, if one did.
    pub fn finish(&self, failure: Option<&GuestFailure>) -> io::Result<()> {
        for (stream, output) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (bytes, dropped) = output.contents();
            if bytes.is_empty() {
                continue;
            }
            let mut detail = String::from_utf8_lossy(&bytes).into_owned();
            if dropped > 0 {
                detail.push_str(&format!("\n[{dropped} more bytes dropped]"));
            }
            self.gate.note(Entry {
                kind: Kind::Stdio,
                event: Event::Outcome,
                subject: format!("{}/{stream}", self.name),
                decision: Verdict::Allow,
                rule: "stdio".into(),
                detail,
                outcome: Some(Outcome::Ok),
                data: Some(json!({ "bytes": bytes.len() as u64 + dropped })),
            })?;
        }
        if let Some(failure) = failure {
            self.gate.note(Entry {
                kind: if failure.is_limit() {
                    Kind::Limit
                } else {
                    Kind::Run
                },
                event: Event::Decision,
                subject: self.name.clone(),
                decision: Verdict::Deny,
                rule: failure.rule().into(),
                detail: failure.to_string(),
                outcome: Some(Outcome::Trap),
                data: None,
            })?;
        }
        Ok(())
    }

    /// Time a host call so it does not count as guest execution.
    async fn in_host<T>(&mut self, work: impl AsyncFnOnce(&mut Self) -> T) -> T {
        let started = Instant::now();
        let result = work(self).await;
        self.clock.add_host_time(started.elapsed());
        result
    }
}

impl<R: Send> WasiView for GuestState<R> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl<R: Send> crate::bindings::agent::warden::sandbox::types::Host for GuestState<R> {}

/// A host error for the guest, as the WIT variant.
fn to_wit(error: GuestError) -> crate::bindings::WitError {
    use crate::bindings::WitError;
    match error {
        GuestError::Denied(r) => WitError::Denied(r),
        GuestError::BudgetExhausted(r) => WitError::BudgetExhausted(r),
        GuestError::Invalid(r) => WitError::Invalid(r),
        GuestError::Failed(r) => WitError::Failed(r),
    }
}

/// Shorten `text` for a one-line `detail`, on a character boundary.
pub(crate) fn brief(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes]", &text[..end], text.len())
}
