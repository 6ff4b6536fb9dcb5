//! The engine every guest runs on, and how components are loaded into it.
//!
//! One [`Runtime`] per process: a wasmtime `Engine` with the pooling
//! allocator and epoch interruption (a ticker thread advances the epoch
//! every [`TICK`]), the linkers for the two worlds, and the compile cache.
//! It knows nothing of policies; stores get their limits from
//! [`crate::capability::GuestState`].

pub mod cache;
pub mod limits;

use crate::bindings::agent::{Agent, AgentPre};
use crate::bindings::tool::{Tool, ToolPre};
use crate::capability::{AgentRole, GuestState, ToolRole};
use crate::policy::MAX_MEMORY;
use crate::remote::Downloader;
use cache::CompileCache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of CPU limits and of
/// yielding to other tasks.
pub const TICK: Duration = Duration::from_millis(10);

/// Settings for a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are kept, and verified downloads of URL
    /// components (in `downloads/`); `None` disables both caches.
    pub cache_dir: Option<PathBuf>,
    /// Most guest instances alive at once (each agent and each running tool
    /// call is one); sizes the pooling allocator.
    pub max_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: cache::default_dir(),
            max_instances: 100,
        }
    }
}

/// A component compiled for this runtime.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component.
    pub component: Component,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Whether it came from the on-disk cache.
    pub cache_hit: bool,
    /// How long loading took (hashing, reading or compiling).
    pub load_time: Duration,
}

/// Told when a component is compiled because no cache held it: the slow
/// step of a first run (seconds, up to a minute or two for a Python or
/// JavaScript component), which a person should see happening.
pub trait CompileProgress: Send + Sync {
    /// Compiling `name` (`size` bytes) starts; `cached` says whether the
    /// result will be kept for later runs. The value returned is dropped
    /// when the compile ends, whether it succeeded or not.
    fn compiling(&self, name: &str, size: usize, cached: bool) -> Box<dyn Send>;
}

/// The process's engine, linkers and compile cache.
pub struct Runtime {
    engine: Engine,
    cache: Option<CompileCache>,
    progress: Option<Arc<dyn CompileProgress>>,
    agent_linker: Linker<GuestState<AgentRole>>,
    tool_linker: Linker<GuestState<ToolRole>>,
    loaded: Mutex<HashMap<String, Component>>,
    downloader: Downloader,
    instances: InstanceSlots,
}

/// The pool's instances as permits: a tool call takes one before it
/// instantiates and gives it back when its store is gone, so calls beyond
/// the pool wait their turn (in the order they came) instead of failing
/// at instantiation. An agent takes one without waiting ([`try_take`]):
/// it holds it for the whole run, and an agent waiting for a slot while
/// other agents' tool calls wait for theirs could stall them all.
///
/// [`try_take`]: InstanceSlots::try_take
#[derive(Clone)]
pub struct InstanceSlots {
    free: Arc<tokio::sync::Semaphore>,
    total: u32,
}

impl InstanceSlots {
    fn new(total: u32) -> Self {
        let permits = usize::try_from(total).unwrap_or(usize::MAX);
        InstanceSlots {
            free: Arc::new(tokio::sync::Semaphore::new(permits)),
            total,
        }
    }

    /// A free instance now, or `None`: for an agent, which must not wait
    /// for a slot while its tool calls might be waiting for one too (each
    /// agent holds one for its whole run).
    pub fn try_take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.free.clone().try_acquire_owned().ok()
    }

    /// How many instances the engine's pool holds.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// A free instance, waiting at most `wait` for one; the refusal says
    /// which setting bounds them.
    pub async fn take(&self, wait: Duration) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        // Free most of the time: no timer then.
        if let Ok(permit) = self.free.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let free = self.free.clone();
        match tokio::time::timeout(wait, free.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => Err(format!(
                "no instance came free within {wait:?}: all {} instances of the engine are in use by other calls (RuntimeConfig::max_instances); make fewer calls at once, or raise it",
                self.total
            )),
        }
    }
}

impl Runtime {
    /// Build the engine and linkers and start the epoch ticker.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Self> {
        let engine = Engine::new(&engine_config(config.max_instances))?;
        start_ticker(&engine);

        let mut agent_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut agent_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut agent_linker)?;
        Agent::add_to_linker::<_, HasSelf<_>>(&mut agent_linker, |state| state)?;

        let mut tool_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut tool_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut tool_linker)?;
        Tool::add_to_linker::<_, HasSelf<_>>(&mut tool_linker, |state| state)?;

        Ok(Runtime {
            // Verified downloads of URL components live beside the compiled
            // ones; no cache dir (`--no-cache`) means downloads stay in memory.
            downloader: Downloader::new(config.cache_dir.as_ref().map(|d| d.join("downloads"))),
            cache: config.cache_dir.map(|dir| CompileCache::new(dir, &engine)),
            progress: None,
            engine,
            agent_linker,
            tool_linker,
            loaded: Mutex::new(HashMap::new()),
            instances: InstanceSlots::new(config.max_instances),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The pool's instances, for tool calls to wait for.
    pub fn instance_slots(&self) -> &InstanceSlots {
        &self.instances
    }

    /// The compile cache, if enabled.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// How URL components are downloaded, and where they are kept
    /// (`<cache_dir>/downloads`).
    pub fn downloader(&self) -> &Downloader {
        &self.downloader
    }

    /// Download URL components with `downloader` instead (another cache
    /// directory, other limits).
    pub fn with_downloader(mut self, downloader: Downloader) -> Self {
        self.downloader = downloader;
        self
    }

    /// Tell `progress` of every compile from now on.
    pub fn with_progress(mut self, progress: Arc<dyn CompileProgress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Compile `bytes` (named `name` in errors), or take it from this
    /// process's memory or the on-disk cache.
    pub fn load(&self, name: &str, bytes: &[u8]) -> wasmtime::Result<LoadedComponent> {
        let started = Instant::now();
        let sha256 = hex::encode(Sha256::digest(bytes));
        let mut loaded = self.load_hashed(name, bytes, &sha256)?;
        loaded.load_time = started.elapsed();
        Ok(loaded)
    }

    /// [`load`](Self::load) for bytes whose SHA-256 (hex) the caller has
    /// already computed (reading them checked a pin): a Python component
    /// is tens of MB, and hashing it again costs milliseconds.
    #[tracing::instrument(level = "debug", name = "component_load", skip_all, fields(
        component = %crate::transcript::name(name),
        bytes = bytes.len(),
    ))]
    pub fn load_hashed(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<LoadedComponent> {
        let started = Instant::now();
        let sha256 = sha256.to_string();
        if let Some(component) = self.loaded.lock().expect("poisoned").get(&sha256) {
            return Ok(LoadedComponent {
                component: component.clone(),
                sha256,
                cache_hit: true,
                load_time: started.elapsed(),
            });
        }
        if !is_component(bytes) {
            wasmtime::bail!(
                "{name} is not a WebAssembly component (build it for wasm32-wasip2, which emits components)"
            );
        }
        let compile = || {
            let _shown = self
                .progress
                .as_ref()
                .map(|p| p.compiling(name, bytes.len(), self.cache.is_some()));
            Component::new(&self.engine, bytes)
        };
        let (component, cache_hit) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, &sha256, compile)?,
            None => (compile()?, false),
        };
        tracing::debug!(
            cache_hit,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "loaded"
        );
        self.loaded
            .lock()
            .expect("poisoned")
            .insert(sha256.clone(), component.clone());
        Ok(LoadedComponent {
            component,
            sha256,
            cache_hit,
            load_time: started.elapsed(),
        })
    }

    /// Link an agent component: resolve its imports once, for many
    /// instantiations.
    pub fn agent_pre(
        &self,
        component: &Component,
    ) -> wasmtime::Result<AgentPre<GuestState<AgentRole>>> {
        AgentPre::new(self.agent_linker.instantiate_pre(component)?)
    }

    /// Link a tool component.
    pub fn tool_pre(
        &self,
        component: &Component,
    ) -> wasmtime::Result<ToolPre<GuestState<ToolRole>>> {
        ToolPre::new(self.tool_linker.instantiate_pre(component)?)
    }
}

/// A component binary starts with the wasm magic and the component layer
/// version; a core module or anything else is refused with a clear message.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

fn engine_config(max_instances: u32) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances);
    // A component holds several core instances (a Rust guest three or four,
    // a Python one more), but usually one memory.
    pool.total_core_instances(max_instances.saturating_mul(8));
    pool.total_memories(max_instances.saturating_mul(2));
    pool.total_tables(max_instances.saturating_mul(8));
    pool.total_stacks(max_instances);
    pool.max_memory_size(MAX_MEMORY as usize);
    pool.max_tables_per_module(4);
    // A slot given back is reset to its initial contents either way (no
    // guest sees another's memory); these choose how. By default every
    // byte a guest touched is handed back to the kernel (`madvise`), and
    // the next instance in the slot faults each page in again: on this
    // path that was a third of a tool call (page faults, and TLB
    // shootdowns across the process's threads). Instead, the pages the
    // last instance dirtied (found with Linux's PAGEMAP_SCAN where the
    // kernel has it, 6.7+) are restored in place, up to a bound per slot;
    // past the bound the rest is decommitted as before. The bound is the
    // memory a slot keeps resident while idle: MEMORY_KEEP_RESIDENT x the
    // pool's memories at most (2 MiB x 200 by default).
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT);
    pool.table_keep_resident(TABLE_KEEP_RESIDENT);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Bytes of a pooled linear memory kept resident (reset in place, not
/// decommitted) when its instance ends: a small tool's whole heap and stack.
pub const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
/// The same for a pooled table.
pub const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Advance the engine's epoch every [`TICK`] until the engine is dropped.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("warden-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_waits_for_a_free_instance_at_most_its_wait() {
        let slots = InstanceSlots::new(1);
        let held = slots.take(Duration::from_secs(1)).await.unwrap();
        let refused = slots.take(Duration::from_millis(20)).await.unwrap_err();
        assert!(
            refused.contains("all 1 instances") && refused.contains("RuntimeConfig::max_instances"),
            "{refused}"
        );
        // Given back, the slot goes to the call waiting for it.
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take(Duration::from_secs(10)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(waiting.await.unwrap());
    }
}
