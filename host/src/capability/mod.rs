//! One module per import family. Each decodes the guest's call into host
//! types, asks the [`Gate`], performs the effect only if allowed, and maps
//! the result back. Nothing here decides: that is the policy's job.
//!
//! A store's data is a [`GuestState`]: the WASI context (no preopens, no
//! environment, no network; stdio captured), limits, the clock that
//! measures guest execution time, and the run's gate. `R` is the role:
//! an agent can reach the model and tools, a tool only the log.

pub mod http;
pub mod limits;
pub mod log;
pub mod model;
pub mod stdio;
pub mod strict_json;
pub mod tools;

use crate::audit::{Entry, Event, Kind, Outcome};
use crate::gate::{Gate, GuestError};
use crate::policy::{Limits, MountMode, Verdict};
use crate::provider::ModelProvider;
use crate::registry::ToolRegistry;
use crate::runtime::limits::{GuestClock, GuestFailure, LimitExceeded, StoreLimiter};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use stdio::{CapturedOutput, STDIO_CAPTURE};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Most live handles (open files, streams, pollables, HTTP fields,
/// requests and responses) one instance may hold at once.
pub const MAX_HANDLES: usize = 1024;
/// Most bytes (in memory) of one set of HTTP header fields a guest builds.
pub const MAX_HTTP_FIELDS: usize = 32 << 10;

/// What an agent instance can reach besides the log.
pub struct AgentRole {
    /// The run's model provider.
    pub provider: Arc<dyn ModelProvider>,
    /// The tools the policy names.
    pub tools: Arc<ToolRegistry>,
    /// In a replay, the recorded tool results (no tool runs).
    pub replay: Option<Arc<crate::replay::ReplayTools>>,
}

/// A tool instance reaches nothing but the log.
pub struct ToolRole;

/// `[reproducible] time`: the wall clock stands still.
struct FixedClock(Duration);

impl FixedClock {
    fn at(time: std::time::SystemTime) -> Self {
        FixedClock(
            time.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

/// With a fixed wall clock, the monotonic clock advances 1 ms per reading:
/// the same sequence of readings in every run, and a guest waiting for
/// time to pass still sees it pass.
#[derive(Default)]
struct SteppingClock(std::sync::atomic::AtomicU64);

impl wasmtime_wasi::HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0
            .fetch_add(1_000_000, std::sync::atomic::Ordering::Relaxed)
    }
}

/// SplitMix64's finalizer: spreads a counter's bits over the whole word.
fn splitmix(x: u64) -> u64 {
    let x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whose grants an instance gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee<'a> {
    /// None at all (a component describing its tools).
    Nobody,
    /// The policy's `[agent]` grants.
    Agent,
    /// The grants of `[tools.NAME]`, and only those.
    Tool(&'a str),
}

/// The data of one guest's store.
pub struct GuestState<R> {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    egress: http::Egress,
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
    /// A guest with its role's imports and exactly `grantee`'s grants
    /// (environment, directories, HTTP), bounded by `limits`. The error
    /// says which grant could not be set up (e.g. a missing directory).
    pub fn new(
        name: impl Into<String>,
        gate: Arc<Gate>,
        limits: &Limits,
        role: R,
        grantee: Grantee<'_>,
    ) -> Result<Self, String> {
        let name = name.into();
        let stdout = CapturedOutput::new(STDIO_CAPTURE);
        let stderr = CapturedOutput::new(STDIO_CAPTURE);
        // Everything is denied until granted: no preopens, no environment,
        // no arguments, stdin closed, and no sockets of any kind (HTTP goes
        // through `wasi:http`, decided per request).
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let policy = gate.policy();
        let reproducible = policy.reproducible;
        if let Some(time) = reproducible.time {
            wasi.wall_clock(FixedClock::at(time));
            wasi.monotonic_clock(SteppingClock::default());
        }
        if let Some(seed) = reproducible.random_seed {
            use rand::SeedableRng;
            // Each instance its own stream, the same in every run: from the
            // run's seed, the guest's name and how many instances of it
            // came before (so a tool's second call does not repeat the
            // first one's "random" bytes).
            // (Describing, which happens only on a cache miss, is not
            // counted: its instances have a stream of their own.)
            let number = match grantee {
                Grantee::Nobody => u64::MAX,
                _ => gate.instance_number(&name),
            };
            let seed = splitmix(seed ^ fnv1a(name.as_bytes()) ^ splitmix(number));
            wasi.secure_random(rand::rngs::StdRng::seed_from_u64(seed));
            wasi.insecure_random(rand::rngs::StdRng::seed_from_u64(seed.rotate_left(17)));
            wasi.insecure_random_seed(u128::from(seed));
        }
        let (grants, key) = match grantee {
            Grantee::Nobody => (None, String::new()),
            Grantee::Agent => policy.grants_of(None),
            Grantee::Tool(tool) => policy.grants_of(Some(tool)),
        };
        // A replay touches nothing outside the host: the record holds no
        // environment and no files, and the log may be someone else's.
        let replay = gate.replay();
        if let Some(grants) = grants {
            for (var, value) in &grants.env {
                wasi.env(var, value);
            }
            if replay.is_none() {
                for var in &grants.inherit_env {
                    if let Ok(value) = std::env::var(var) {
                        wasi.env(var, value);
                    }
                }
            }
            let mounts = match replay {
                Some(replay) if !replay.read_dirs() => &[][..],
                _ => &grants.fs[..],
            };
            for mount in mounts {
                let host = gate.dir_of(mount.place.file).join(&mount.dir);
                let perms = match mount.mode {
                    MountMode::Rw if replay.is_none() => FsPerms::ReadWrite,
                    _ => FsPerms::ReadOnly,
                };
                wasi.preopened_dir(&host, &mount.guest_path, perms)
                    .map_err(|e| {
                        format!(
                            "cannot grant {} to `{name}` as {} ({key}.fs): {e:#}",
                            host.display(),
                            mount.guest_path
                        )
                    })?;
            }
        }
        let tool = match grantee {
            Grantee::Tool(tool) => Some(tool.to_string()),
            _ => None,
        };
        let egress =
            http::Egress::new(gate.clone(), tool, name.clone(), grantee != Grantee::Nobody);
        // Handles (files, streams, pollables, HTTP fields and requests) and
        // HTTP header fields are host memory a guest can ask for: bounded.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS);
        Ok(GuestState {
            wasi: wasi.build(),
            http,
            egress,
            table,
            limiter: StoreLimiter::new(limits.memory),
            clock: GuestClock::new(limits.cpu),
            stdout,
            stderr,
            gate,
            name,
            role,
        })
    }

    /// Labels the responses to this guest's HTTP requests carry.
    pub fn http_labels(&self) -> Vec<String> {
        self.egress.labels()
    }

    /// A store for this guest: memory limited, and interrupted at every
    /// epoch tick to check its CPU time and yield to other tasks.
    pub fn into_store(self, engine: &Engine) -> Store<Self> {
        let mut store = Store::new(engine, self);
        store.limiter(|state| &mut state.limiter);
        // Time in any import (a model call, a tool call, a WASI poll waiting
        // on HTTP) is the host's, not the guest's CPU.
        store.call_hook(|mut context, hook| {
            let clock = &mut context.data_mut().clock;
            if hook.entering_host() {
                clock.enter_host();
            } else {
                clock.exit_host();
            }
            Ok(())
        });
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

    /// A kept instance starts another call: its CPU limit counts from
    /// now (limits apply per call), and its epoch deadline is armed again.
    pub fn begin_call(store: &mut Store<Self>) {
        let cpu = store.data().clock.cpu_limit();
        store.data_mut().clock = GuestClock::new(cpu);
        store.set_epoch_deadline(1);
    }

    /// Bytes of linear memory the guest's store holds.
    pub fn memory_used(&self) -> u64 {
        self.limiter.used()
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
            // Drained: a kept instance records each call's output once.
            let (bytes, dropped) = output.drain();
            if bytes.is_empty() {
                continue;
            }
            // Within the run's stdio budget, shared by every instance.
            self.gate
                .stdio(format!("{}/{stream}", self.name), &bytes, dropped)?;
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
}

impl<R: Send> WasiHttpView for GuestState<R> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
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

/// A host error for the guest, as the WIT variant: only a redacted one.
fn to_wit(error: crate::secrets::Clean<GuestError>) -> crate::bindings::WitError {
    use crate::bindings::WitError;
    match error.into_inner() {
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
