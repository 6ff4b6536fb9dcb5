//! The tools a run's policy names: each entry bound to the component that
//! provides it, with the spec that component describes.
//!
//! Every call runs in a fresh instance of the component, with the tool's
//! own grants (never the agent's) and the policy's limits, and is dropped
//! afterwards: a tool keeps no state between calls and never runs with the
//! agent's authority. Several entries may share a component; each is its
//! own tool with its own rules.
//!
//! The one exception is an entry with `instance = "per-run"`: its instance
//! is kept in the [`KeptInstances`] of the run (or of the MCP session) and
//! called again, one call at a time. It must never outlive that run or
//! session, never serve another, and never survive a limit or trap: any
//! of those tears it down, and the next call gets a fresh one.

use crate::bindings::tool::{Tool, ToolPre};
use crate::capability::{Grantee, GuestState, ToolRole};
use crate::chat::ToolSpec;
use crate::diagnostic::SourceError;
use crate::gate::Gate;
use crate::load::{ComponentSource, PolicyFile};
use crate::policy::Verdict;
use crate::policy::args::{LabelPath, declared_third_party};
use crate::remote::{Downloader, FetchError};
use crate::runtime::Runtime;
use crate::runtime::limits::{GuestFailure, within_output};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::Store;

/// A loaded tool component.
pub struct ToolComponent {
    /// Where it came from (`builtin:calc`, a path, a URL).
    pub source: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Whether its compiled form came from the cache.
    pub cache_hit: bool,
    pre: ToolPre<GuestState<ToolRole>>,
}

struct RegisteredTool {
    spec: ToolSpec,
    /// Parts of its results its description marks as third-party.
    third_party: Vec<LabelPath>,
    schema: Arc<jsonschema::Validator>,
    component: Arc<ToolComponent>,
    granted: bool,
}

/// Why a tool call produced no result.
#[derive(Debug)]
pub enum ToolFailure {
    /// The tool returned an error of its own.
    Returned(String),
    /// A limit or trap stopped the tool.
    Stopped(GuestFailure),
    /// A limit or trap stopped a per-run tool, and its kept instance was
    /// torn down after this many calls: the next call starts afresh.
    Reset(GuestFailure, u64),
}

impl std::fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolFailure::Returned(message) => f.write_str(message),
            ToolFailure::Stopped(failure) => write!(f, "{failure}"),
            ToolFailure::Reset(failure, calls) => write!(
                f,
                "{failure}; the session was reset: its per-run instance was torn down after {calls} call{}, and the next call starts a fresh one with nothing from earlier calls",
                if *calls == 1 { "" } else { "s" }
            ),
        }
    }
}

/// The run's tools.
pub struct ToolRegistry {
    tools: BTreeMap<String, RegisteredTool>,
    instances: crate::runtime::InstanceSlots,
    /// The per-run instances of the run (or stdio MCP session) this
    /// registry serves; an HTTP MCP server passes each session's own.
    kept: KeptInstances,
}

/// The per-run instances (`instance = "per-run"`) of one run or one MCP
/// session, by tool: each kept between calls, called one call at a time,
/// torn down by any limit or trap, and all of them at [`close`].
///
/// [`close`]: KeptInstances::close
#[derive(Default)]
pub struct KeptInstances {
    tools: Mutex<HashMap<String, Arc<tokio::sync::Mutex<KeptSlot>>>>,
    closed: AtomicBool,
}

/// One per-run tool's place: its instance while kept, and how many calls
/// it has served.
#[derive(Default)]
struct KeptSlot {
    kept: Option<Kept>,
    /// Why the last instance was torn down, until a fresh one serves.
    reset: Option<String>,
}

struct Kept {
    store: Store<GuestState<ToolRole>>,
    instance: Tool,
    /// Calls it has served.
    calls: u64,
    /// Its memory as charged to the run's ledger.
    charged: u64,
    /// The pool slot it holds for as long as it is kept.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl KeptInstances {
    /// A place for the per-run instances of a new run or session.
    pub fn new() -> Self {
        KeptInstances::default()
    }

    /// A place that keeps nothing: every per-run call is refused.
    pub fn closed() -> Self {
        let kept = KeptInstances::default();
        kept.closed.store(true, Ordering::SeqCst);
        kept
    }

    /// Tear every kept instance down (the run or MCP session ended),
    /// recording what each wrote; refuse every later call. An instance
    /// busy with a call is torn down when that call returns.
    pub fn close(&self, gate: &Gate) -> io::Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        let slots: Vec<_> = lock(&self.tools).drain().collect();
        for (_, slot) in slots {
            if let Ok(mut slot) = slot.try_lock()
                && let Some(kept) = slot.kept.take()
            {
                tear_down(gate, kept, None)?;
            }
        }
        Ok(())
    }

    /// How many instances are kept now.
    pub fn kept(&self) -> usize {
        lock(&self.tools)
            .values()
            .filter(|slot| slot.try_lock().map_or(true, |s| s.kept.is_some()))
            .count()
    }

    /// Call `name` in its kept instance, starting one if there is none.
    async fn call(
        &self,
        component: &ToolComponent,
        slots: &crate::runtime::InstanceSlots,
        name: &str,
        arguments: &str,
        gate: &Arc<Gate>,
    ) -> io::Result<(Result<String, ToolFailure>, Vec<String>)> {
        let stopped = |message: String| {
            Ok((
                Err(ToolFailure::Stopped(GuestFailure::Host(message))),
                Vec::new(),
            ))
        };
        if self.closed.load(Ordering::SeqCst) {
            return stopped(format!(
                "tool `{name}` keeps its instance for the session, and the session has ended"
            ));
        }
        let limits = gate.policy().limits.clone();
        let slot = lock(&self.tools)
            .entry(name.to_string())
            .or_default()
            .clone();
        // Calls of one per-run tool take turns: never two on one store.
        let Ok(mut slot) = tokio::time::timeout(limits.wall, slot.lock_owned()).await else {
            return stopped(format!(
                "tool `{name}` keeps one instance for the run (`instance = \"per-run\"`) and runs one call at a time; another call held it for longer than limits.wall ({})",
                crate::policy::HumanDuration(limits.wall)
            ));
        };
        let mut kept = match slot.kept.take() {
            Some(kept) => kept,
            None => match start_kept(component, slots, name, gate, limits.wall).await? {
                Ok(kept) => kept,
                Err(failure) => return Ok((Err(failure), Vec::new())),
            },
        };
        let was_reset = slot.reset.take();
        if kept.calls > 0 {
            GuestState::begin_call(&mut kept.store);
        }
        let stderr = kept.store.data().stderr();
        let result = GuestState::<ToolRole>::guarded(&stderr, limits.wall, async {
            kept.instance
                .call_invoke(&mut kept.store, name, arguments)
                .await
        })
        .await;
        kept.calls += 1;
        let outcome = match within_output(result, limits.output) {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(message)) => Err(ToolFailure::Returned(message)),
            Err(failure) => Err(ToolFailure::Stopped(failure)),
        };
        let http_labels = kept.store.data().http_labels();
        match outcome {
            Err(ToolFailure::Stopped(failure)) => {
                // Its state after a limit or trap is nothing to go on from.
                let calls = kept.calls;
                tear_down(gate, kept, Some(&failure))?;
                slot.reset = Some(failure.to_string());
                Ok((Err(ToolFailure::Reset(failure, calls)), http_labels))
            }
            outcome => {
                kept.store.data().finish(None)?;
                let now = kept.store.data().memory_used();
                gate.charge_kept(kept.charged, now, false);
                kept.charged = now;
                if let Some(why) = was_reset {
                    tracing::debug!(tool = name, after = %why, "a fresh per-run instance served");
                }
                if self.closed.load(Ordering::SeqCst) {
                    tear_down(gate, kept, None)?;
                } else {
                    slot.kept = Some(kept);
                }
                Ok((outcome, http_labels))
            }
        }
    }
}

/// A fresh instance of `name` to keep: a pool slot taken for as long as it
/// lives, its store, and the instance. The outer `Err` means the audit log
/// failed.
async fn start_kept(
    component: &ToolComponent,
    slots: &crate::runtime::InstanceSlots,
    name: &str,
    gate: &Arc<Gate>,
    wall: Duration,
) -> io::Result<Result<Kept, ToolFailure>> {
    let stopped = |message: String| Ok(Err(ToolFailure::Stopped(GuestFailure::Host(message))));
    let slot = match slots.take(wall).await {
        Ok(slot) => slot,
        Err(message) => {
            return stopped(format!(
                "{message} (tool `{name}` keeps one for the whole run: `instance = \"per-run\"`)"
            ));
        }
    };
    let limits = gate.policy().limits.clone();
    let state = match GuestState::new(name, gate.clone(), &limits, ToolRole, Grantee::Tool(name)) {
        Ok(state) => state,
        Err(message) => return stopped(message),
    };
    let stderr = state.stderr();
    let pre = &component.pre;
    let mut store = state.into_store(pre.engine());
    let instance =
        GuestState::<ToolRole>::guarded(&stderr, wall, pre.instantiate_async(&mut store)).await;
    match instance {
        Ok(instance) => {
            let charged = store.data().memory_used();
            gate.charge_kept(0, charged, false);
            Ok(Ok(Kept {
                store,
                instance,
                calls: 0,
                charged,
                _slot: slot,
            }))
        }
        Err(failure) => {
            store.data().finish(Some(&failure))?;
            Ok(Err(ToolFailure::Stopped(failure)))
        }
    }
}

/// Drop a kept instance (giving back its pool slot and memory), recording
/// what it wrote and, if one did, the limit or trap that stopped it.
fn tear_down(gate: &Gate, kept: Kept, failure: Option<&GuestFailure>) -> io::Result<()> {
    let result = kept.store.data().finish(failure);
    gate.charge_kept(kept.charged, 0, failure.is_some());
    drop(kept);
    result
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every tool component a policy names, read and checked against its
/// `sha256` pin. No code of any of them has run yet.
pub struct ToolSources<'p> {
    entries: Vec<(&'p crate::policy::ToolPolicy, ComponentSource)>,
    /// Each distinct component's bytes and SHA-256.
    bytes: HashMap<ComponentSource, (std::borrow::Cow<'static, [u8]>, String)>,
}

impl<'p> ToolSources<'p> {
    /// Read (or download, with `downloader`) every component `policy`
    /// names and check every pin, so no code of a component that fails its
    /// pin ever runs (describing a tool runs it). A URL component's pin is
    /// checked before its bytes are used or cached.
    pub async fn read(
        policy: &'p PolicyFile,
        downloader: &Downloader,
    ) -> Result<Self, SourceError> {
        let mut entries = Vec::new();
        let mut bytes = HashMap::new();
        for entry in policy.policy.tools.values() {
            let Some(reference) = &entry.component else {
                continue;
            };
            let source =
                ComponentSource::parse(&reference.text, policy.dir_of(reference.place.file));
            if !bytes.contains_key(&source) {
                let read = source
                    .fetch(downloader, entry.sha256.as_deref())
                    .await
                    .map_err(|e| read_error(policy, entry, &source, e))?;
                bytes.insert(source.clone(), read);
            }
            if let Some(pin) = &entry.sha256 {
                let actual = &bytes[&source].1;
                if pin != actual {
                    return Err(read_error(
                        policy,
                        entry,
                        &source,
                        FetchError::Mismatch {
                            url: source.to_string(),
                            pinned: pin.clone(),
                            actual: actual.clone(),
                        },
                    ));
                }
            }
            entries.push((entry, source));
        }
        Ok(ToolSources { entries, bytes })
    }

    /// Each distinct component and its SHA-256, sorted by source.
    pub fn hashes(&self) -> Vec<(String, String)> {
        let mut hashes: Vec<(String, String)> = self
            .bytes
            .iter()
            .map(|(source, (_, sha256))| (source.to_string(), sha256.clone()))
            .collect();
        hashes.sort();
        hashes
    }

    /// Each distinct component's source, bytes and SHA-256, sorted by
    /// source: what [`ToolRegistry::load_sources`] compiles (a caller may
    /// compile them first, elsewhere, to report progress or to abandon).
    pub fn components(&self) -> Vec<(&ComponentSource, &[u8], &str)> {
        let mut components: Vec<_> = self
            .bytes
            .iter()
            .map(|(source, (bytes, sha256))| (source, &bytes[..], sha256.as_str()))
            .collect();
        components.sort_by_key(|(source, _, _)| source.to_string());
        components
    }
}

/// Why the component of `entry` could not be had, at its `component`.
fn read_error(
    policy: &PolicyFile,
    entry: &crate::policy::ToolPolicy,
    source: &ComponentSource,
    error: FetchError,
) -> SourceError {
    let reference = entry
        .component
        .as_ref()
        .expect("entries with sources have components");
    let name = &entry.name;
    let (message, help) = match (error, source) {
        (FetchError::Mismatch { pinned, actual, .. }, ComponentSource::Url(url)) => (
            format!(
                "`{url}` does not match the pin of [tools.{name}]:\n  sha256 in the policy:   {pinned}\n  sha256 of the download: {actual}\nnone of its code ran, and it was not kept"
            ),
            format!(
                "if the component at that URL changed on purpose (a new release), review it with `warden tools inspect {url}` and update `sha256`; otherwise it was replaced, or the pin is wrong"
            ),
        ),
        (FetchError::Mismatch { pinned, actual, .. }, _) => (
            format!(
                "`{source}` does not match the pin of [tools.{name}]:\n  sha256 in the policy: {pinned}\n  sha256 of the file:   {actual}"
            ),
            "if the component changed on purpose, review it and update `sha256`; otherwise it was replaced".into(),
        ),
        (FetchError::Failed(why), ComponentSource::Url(url)) => (
            format!("the component of [tools.{name}] cannot be downloaded from {url}: {why}"),
            "check the URL and the network; once downloaded and matched against its pin, a component is kept in the cache and later runs need no network".into(),
        ),
        (FetchError::Failed(why), ComponentSource::Builtin(_)) => (
            format!("the component of [tools.{name}] cannot be loaded: {why}"),
            "name one of those, or give the path of a .wasm file (relative to the policy file)"
                .into(),
        ),
        (FetchError::Failed(why), _) => (
            format!("the component of [tools.{name}] cannot be loaded: {why}"),
            "paths are relative to the policy file; build tools with \
             `cargo build --target wasm32-wasip2 --release`"
                .into(),
        ),
    };
    policy.error_at(&reference.place, message, Some(help))
}

impl ToolRegistry {
    /// Read, check and load every component `policy` names (see
    /// [`ToolSources::read`] and [`ToolRegistry::load_sources`]).
    pub async fn load(
        runtime: &Runtime,
        policy: &PolicyFile,
        gate: &Arc<Gate>,
    ) -> Result<Self, SourceError> {
        let sources = ToolSources::read(policy, runtime.downloader()).await?;
        Self::load_sources(runtime, policy, sources, gate).await
    }

    /// Compile the components read, ask each what it provides, and bind
    /// each `[tools.NAME]` entry to its spec. `gate` records what the
    /// components log while describing themselves.
    pub async fn load_sources(
        runtime: &Runtime,
        policy: &PolicyFile,
        sources: ToolSources<'_>,
        gate: &Arc<Gate>,
    ) -> Result<Self, SourceError> {
        let ToolSources {
            entries: sources,
            bytes,
        } = sources;
        let mut components: HashMap<ComponentSource, (Arc<ToolComponent>, Vec<ToolSpec>)> =
            HashMap::new();
        let mut tools = BTreeMap::new();
        for (entry, source) in sources {
            let reference = entry
                .component
                .as_ref()
                .expect("entries with sources have components");
            if !components.contains_key(&source) {
                let at = |message: String, help: Option<String>| {
                    policy.error_at(&reference.place, message, help)
                };
                let loaded = runtime
                    .load_hashed(&source.to_string(), &bytes[&source].0, &bytes[&source].1)
                    .map_err(|e| at(format!("`{source}` is not a valid component: {e:#}"), None))?;
                let pre = runtime.tool_pre(&loaded.component).map_err(|e| {
                    at(
                        format!("`{source}` is not a warden tool component: {e:#}"),
                        Some(
                            "a tool exports `describe` and `invoke` (world warden:sandbox/tool)"
                                .into(),
                        ),
                    )
                })?;
                let specs = describe(&pre, &source, gate)
                    .await
                    .map_err(|e| at(e, None))?;
                let component = Arc::new(ToolComponent {
                    source: source.to_string(),
                    sha256: loaded.sha256,
                    cache_hit: loaded.cache_hit,
                    pre,
                });
                components.insert(source.clone(), (component, specs));
            }
            let (component, specs) = &components[&source];
            let Some(spec) = specs.iter().find(|s| s.name == entry.name) else {
                let provided: Vec<_> = specs.iter().map(|s| format!("`{}`", s.name)).collect();
                return Err(policy.error_at(
                    &entry.place,
                    format!(
                        "`{}` does not provide a tool named `{}`",
                        component.source, entry.name
                    ),
                    Some(format!(
                        "it provides {}; name the entry after one of them",
                        provided.join(", ")
                    )),
                ));
            };
            // Arguments are checked against this before any rule, and before
            // the tool runs. Remote `$ref`s are never fetched.
            // `pattern`s run on the guest's arguments: a linear-time engine
            // (no look-around or backreferences), so no schema can make a
            // call's validation take exponential time.
            let schema = jsonschema::options()
                .with_pattern_options(
                    jsonschema::PatternOptions::regex()
                        .size_limit(1 << 20)
                        .dfa_size_limit(1 << 20),
                )
                .build(&spec.parameters)
                .map_err(|e| {
                    policy.error_at(
                        &entry.place,
                        format!(
                            "`{}` describes `{}` with an invalid JSON Schema: {e}",
                            component.source, entry.name
                        ),
                        Some("fix the tool's `describe`".into()),
                    )
                })?;
            tools.insert(
                entry.name.clone(),
                RegisteredTool {
                    third_party: declared_third_party(&spec.parameters).unwrap_or_default(),
                    schema: Arc::new(schema),
                    spec: spec.clone(),
                    component: component.clone(),
                    granted: entry.decision != Verdict::Deny,
                },
            );
        }
        check_pool(policy, runtime.instance_slots().total())?;
        Ok(ToolRegistry {
            tools,
            instances: runtime.instance_slots().clone(),
            kept: KeptInstances::new(),
        })
    }

    /// Specs of the tools the agent may call.
    pub fn granted(&self) -> impl Iterator<Item = &ToolSpec> {
        self.tools.values().filter(|t| t.granted).map(|t| &t.spec)
    }

    /// The compiled JSON Schema `name` declared for its arguments.
    pub fn schema(&self, name: &str) -> Option<&jsonschema::Validator> {
        self.tools.get(name).map(|t| &*t.schema)
    }

    /// The parts of `name`'s results its description marks as
    /// third-party (`x-warden-third-party`); what they count for is the
    /// policy's `third_party_labels`.
    pub fn third_party(&self, name: &str) -> &[LabelPath] {
        self.tools.get(name).map_or(&[], |t| &t.third_party)
    }

    /// Each granted tool's name and component.
    pub fn granted_components(&self) -> impl Iterator<Item = (&str, &ToolComponent)> {
        self.tools
            .iter()
            .filter(|(_, t)| t.granted)
            .map(|(name, t)| (name.as_str(), &*t.component))
    }

    /// The per-run instances of the run this registry serves (an HTTP MCP
    /// session keeps its own).
    pub fn kept(&self) -> &KeptInstances {
        &self.kept
    }

    /// Every distinct component loaded.
    pub fn components(&self) -> Vec<Arc<ToolComponent>> {
        let mut seen: Vec<Arc<ToolComponent>> = Vec::new();
        for tool in self.tools.values() {
            if !seen.iter().any(|c| Arc::ptr_eq(c, &tool.component)) {
                seen.push(tool.component.clone());
            }
        }
        seen
    }

    /// Run the tool `name` once, in a fresh instance with exactly its own
    /// grants, on `arguments`. The caller has already had the call allowed
    /// by the gate. Returns the outcome and the labels of the HTTP rules
    /// its requests matched. The outer `Err` means the audit log failed.
    pub async fn invoke(
        &self,
        name: &str,
        arguments: &str,
        gate: &Arc<Gate>,
    ) -> io::Result<(Result<String, ToolFailure>, Vec<String>)> {
        self.invoke_in(name, arguments, gate, None).await
    }

    /// [`invoke`](Self::invoke), keeping a per-run tool's instance in
    /// `kept` (an MCP session's own) instead of the registry's.
    pub async fn invoke_in(
        &self,
        name: &str,
        arguments: &str,
        gate: &Arc<Gate>,
        kept: Option<&KeptInstances>,
    ) -> io::Result<(Result<String, ToolFailure>, Vec<String>)> {
        let Some(tool) = self.tools.get(name) else {
            return Ok((
                Err(ToolFailure::Stopped(GuestFailure::Host(format!(
                    "tool `{name}` was allowed but is not loaded"
                )))),
                Vec::new(),
            ));
        };
        let per_run = gate
            .policy()
            .tools
            .get(name)
            .is_some_and(|t| t.instance == crate::policy::Instance::PerRun);
        if per_run {
            let kept = kept.unwrap_or(&self.kept);
            return kept
                .call(&tool.component, &self.instances, name, arguments, gate)
                .await;
        }
        let limits = gate.policy().limits.clone();
        // More calls at once than the pool holds wait for one to finish,
        // at most the tool's wall time; the slot outlives the store.
        let _slot = match self.instances.take(limits.wall).await {
            Ok(slot) => slot,
            Err(message) => {
                return Ok((
                    Err(ToolFailure::Stopped(GuestFailure::Host(message))),
                    Vec::new(),
                ));
            }
        };
        let state =
            match GuestState::new(name, gate.clone(), &limits, ToolRole, Grantee::Tool(name)) {
                Ok(state) => state,
                Err(message) => {
                    return Ok((
                        Err(ToolFailure::Stopped(GuestFailure::Host(message))),
                        Vec::new(),
                    ));
                }
            };
        let stderr = state.stderr();
        let pre = &tool.component.pre;
        let mut store = state.into_store(pre.engine());
        let result = GuestState::<ToolRole>::guarded(&stderr, limits.wall, async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_invoke(&mut store, name, arguments).await
        })
        .await;
        let outcome = match within_output(result, limits.output) {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(message)) => Err(ToolFailure::Returned(message)),
            Err(failure) => Err(ToolFailure::Stopped(failure)),
        };
        let failure = match &outcome {
            Err(ToolFailure::Stopped(failure)) => Some(failure),
            _ => None,
        };
        store.data().finish(failure)?;
        Ok((outcome, store.data().http_labels()))
    }
}

/// Refuse a policy whose per-run tools would hold so many of the
/// engine's instance slots for the whole run that the agent and one
/// per-call tool could not have one.
fn check_pool(policy: &PolicyFile, total: u32) -> Result<(), SourceError> {
    let per_run: Vec<&crate::policy::ToolPolicy> = policy
        .policy
        .tools
        .values()
        .filter(|t| t.instance == crate::policy::Instance::PerRun && t.decision != Verdict::Deny)
        .collect();
    let Some(last) = per_run.last() else {
        return Ok(());
    };
    let needed = per_run.len() as u64 + 2;
    if needed <= u64::from(total) {
        return Ok(());
    }
    Err(policy.error_at(
        &last.place,
        format!(
            "{} tools keep an instance for the whole run (`instance = \"per-run\"`), each holding one of the engine's {total} instance slots, and the agent and a per-call tool need one each: {needed} slots are needed",
            per_run.len()
        ),
        Some("raise the pool (`warden mcp --max-instances`, RuntimeConfig::max_instances), or make some of them `instance = \"per-call\"`".into()),
    ))
}

/// Most tools one component may describe.
pub const MAX_TOOLS_PER_COMPONENT: usize = 1024;
/// Longest tool name (as the model call's limit on names).
pub const MAX_TOOL_NAME: usize = crate::capability::model::MAX_NAME_LEN;
/// Longest tool description.
pub const MAX_TOOL_DESCRIPTION: usize = 16 << 10;
/// Longest parameters schema, as JSON text.
pub const MAX_TOOL_SCHEMA: usize = 256 << 10;

/// Ask a component which tools it provides, in a fresh, limited instance.
async fn describe(
    pre: &ToolPre<GuestState<ToolRole>>,
    source: &ComponentSource,
    gate: &Arc<Gate>,
) -> Result<Vec<ToolSpec>, String> {
    let limits = gate.policy().limits.clone();
    let name = format!("{}:describe", source.short_name());
    let state = GuestState::new(name, gate.clone(), &limits, ToolRole, Grantee::Nobody)?;
    let stderr = state.stderr();
    let mut store = state.into_store(pre.engine());
    let result = GuestState::<ToolRole>::guarded(&stderr, limits.wall, async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    })
    .await;
    let failure = result.as_ref().err();
    store
        .data()
        .finish(failure)
        .map_err(|e| format!("the audit log failed: {e}"))?;
    let specs = result.map_err(|f| format!("`{source}` failed while describing its tools: {f}"))?;
    if specs.len() > MAX_TOOLS_PER_COMPONENT {
        return Err(format!(
            "`{source}` describes {} tools; a component may provide at most {MAX_TOOLS_PER_COMPONENT}",
            specs.len()
        ));
    }
    let mut out: Vec<ToolSpec> = Vec::with_capacity(specs.len());
    let mut names = std::collections::HashSet::with_capacity(specs.len());
    for spec in specs {
        let name = crate::policy::printable(&spec.name);
        for (what, size, max) in [
            ("name", spec.name.len(), MAX_TOOL_NAME),
            ("description", spec.description.len(), MAX_TOOL_DESCRIPTION),
            (
                "parameters schema",
                spec.parameters_schema.len(),
                MAX_TOOL_SCHEMA,
            ),
        ] {
            if size > max {
                return Err(format!(
                    "`{source}` describes `{name}` with a {what} of {size} bytes; at most {max} are allowed"
                ));
            }
        }
        if !names.insert(spec.name.clone()) {
            return Err(format!("`{source}` describes the tool `{name}` twice"));
        }
        let parameters: serde_json::Value =
            serde_json::from_str(&spec.parameters_schema).map_err(|e| {
                format!(
                    "`{source}` describes `{}` with a parameters schema that is not JSON: {e}",
                    spec.name
                )
            })?;
        if !parameters.is_object() {
            return Err(format!(
                "`{source}` describes `{}` with a parameters schema that is not a JSON object",
                spec.name
            ));
        }
        if let Err(e) = declared_third_party(&parameters) {
            return Err(format!("`{source}` describes `{}` with {e}", spec.name));
        }
        out.push(ToolSpec {
            name: spec.name,
            description: spec.description,
            parameters,
        });
    }
    Ok(out)
}

/// What a tool component is, before anyone grants it anything.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Where it came from.
    pub source: String,
    /// SHA-256 of its bytes (what a policy's `sha256` pins).
    pub sha256: String,
    /// The tools it describes.
    pub tools: Vec<ToolSpec>,
    /// Its imports: interface name and what a policy must grant for it.
    pub imports: Vec<(String, &'static str)>,
}

/// What an import asks of the host, in a policy's words.
pub fn capability_of(import: &str) -> &'static str {
    let interface = import.split('@').next().unwrap_or(import);
    match interface {
        i if i.starts_with("wasi:http/") => "outgoing HTTP: needs an `http` grant",
        i if i.starts_with("wasi:filesystem/") => "files: sees only `fs` grants (none by default)",
        "wasi:cli/environment" => "environment: sees only `env`/`inherit_env` (none by default)",
        i if i.starts_with("wasi:sockets/") => "raw sockets: never granted (calls fail)",
        i if i.starts_with("wasi:random/") => "randomness (seeded under [reproducible])",
        i if i.starts_with("wasi:clocks/") => "clocks (fixed under [reproducible])",
        "wasi:cli/stdin" | "wasi:cli/terminal-stdin" => "stdin: closed, nothing to read",
        i if i.starts_with("wasi:cli/std") || i.starts_with("wasi:cli/terminal") => {
            "stdio: captured into the audit log, never shown"
        }
        i if i.starts_with("wasi:cli/") || i.starts_with("wasi:io/") => {
            "always available, harmless"
        }
        i if i.starts_with("warden:sandbox/") => "warden's own interface",
        _ => "unknown to warden: the component will not load",
    }
}

/// Load `source` as a tool component, run its `describe` with no grants,
/// and list what it imports. Nothing else of it runs.
pub async fn inspect(runtime: &Runtime, source: &ComponentSource) -> Result<Inspection, String> {
    // A URL is downloaded without a pin: this is how the pin is learned.
    let (bytes, sha256) = source
        .fetch(runtime.downloader(), None)
        .await
        .map_err(|e| e.to_string())?;
    let loaded = runtime
        .load_hashed(&source.to_string(), &bytes, &sha256)
        .map_err(|e| format!("`{source}` is not a valid component: {e:#}"))?;
    let mut imports: Vec<(String, &'static str)> = loaded
        .component
        .component_type()
        .imports(runtime.engine())
        .map(|(name, _)| (name.to_string(), capability_of(name)))
        .collect();
    imports.sort();
    let pre = runtime.tool_pre(&loaded.component).map_err(|e| {
        format!(
            "`{source}` is not a warden tool component (a tool exports `describe` and `invoke`, world warden:sandbox/tool): {e:#}"
        )
    })?;
    let policy = crate::policy::Policy::parse("inspect", "").map_err(|e| e.render())?;
    let gate = Arc::new(Gate::new(
        Arc::new(policy),
        crate::audit::AuditLog::new(crate::audit::new_run_id()),
    ));
    let tools = describe(&pre, source, &gate).await?;
    Ok(Inspection {
        source: source.to_string(),
        sha256: loaded.sha256,
        tools,
        imports,
    })
}
