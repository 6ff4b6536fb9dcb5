//! Per-store limits and what a guest's failure means.
//!
//! Memory is bounded by a `ResourceLimiter`, guest execution time by epoch
//! interruption, wall time by a timeout around the call, output by checking
//! what a guest returns. A limit that trips becomes a [`LimitExceeded`]
//! error inside the trap, so the host can say which limit stopped the guest.

use crate::policy::{ByteSize, HumanDuration};
use std::fmt;
use std::time::{Duration, Instant};
use wasmtime::Trap;

/// A limit that stopped a guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// The guest tried to grow its memory past the limit.
    #[error("memory limit of {} exceeded (the guest asked for {})", ByteSize(*limit), ByteSize(*requested))]
    Memory {
        /// The limit in bytes.
        limit: u64,
        /// The size the guest asked to grow to.
        requested: u64,
    },
    /// The guest executed code for longer than the limit.
    #[error("CPU limit of {} exceeded", HumanDuration(*limit))]
    Cpu {
        /// The limit.
        limit: Duration,
    },
    /// The guest ran (or waited) for longer than the limit.
    #[error("wall-clock limit of {} exceeded", HumanDuration(*limit))]
    Wall {
        /// The limit.
        limit: Duration,
    },
    /// The guest returned more than the limit.
    #[error("output limit of {} exceeded (the guest returned {})", ByteSize(*limit), ByteSize(*size))]
    Output {
        /// The limit in bytes.
        limit: u64,
        /// What the guest returned.
        size: u64,
    },
}

impl LimitExceeded {
    /// The policy key that set this limit.
    pub fn rule(&self) -> &'static str {
        match self {
            LimitExceeded::Memory { .. } => "limits.memory",
            LimitExceeded::Cpu { .. } => "limits.cpu",
            LimitExceeded::Wall { .. } => "limits.wall",
            LimitExceeded::Output { .. } => "limits.output",
        }
    }
}

/// Hold a guest's `result<string, string>` to the output limit: an answer or
/// error longer than `limit` bytes becomes an output-limit failure.
pub fn within_output(
    result: Result<Result<String, String>, GuestFailure>,
    limit: u64,
) -> Result<Result<String, String>, GuestFailure> {
    let size = match &result {
        Ok(Ok(text)) | Ok(Err(text)) => text.len() as u64,
        Err(_) => 0,
    };
    if size > limit {
        return Err(GuestFailure::Limit(LimitExceeded::Output { limit, size }));
    }
    result
}

/// Bounds linear memory and tables of one store, and counts the linear
/// memory it has (a kept instance's stays charged between calls).
pub struct StoreLimiter {
    memory: u64,
    /// Bytes of linear memory the store's memories have grown to, summed.
    used: u64,
}

/// Table elements one store may have: generous for real guests (a Python
/// component has a few thousand), small enough to matter.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl StoreLimiter {
    /// A limiter allowing `memory` bytes of linear memory (per memory).
    pub fn new(memory: u64) -> Self {
        StoreLimiter { memory, used: 0 }
    }

    /// Bytes of linear memory the store holds (every memory, summed):
    /// wasm memories never shrink, so this is also its peak.
    pub fn used(&self) -> u64 {
        self.used
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory {
            // An error (not `Ok(false)`) traps at once with this reason; a
            // refused grow would surface as an anonymous `unreachable` from
            // the guest's allocator.
            return Err(LimitExceeded::Memory {
                limit: self.memory,
                requested: desired as u64,
            }
            .into());
        }
        self.used = self
            .used
            .saturating_add((desired as u64).saturating_sub(current as u64));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Measures how long a store has spent executing guest code: the time since
/// it started, minus the time spent inside host calls (waiting for a model,
/// running a tool for the agent).
#[derive(Debug, Clone, Copy)]
pub struct GuestClock {
    started: Instant,
    in_host: Duration,
    /// Since when the host has been running (between a call into the host
    /// and its return, or before the guest was first entered).
    host_since: Option<Instant>,
    cpu_limit: Duration,
}

impl GuestClock {
    /// A clock starting now, for a guest allowed `cpu_limit` of execution.
    pub fn new(cpu_limit: Duration) -> Self {
        let started = Instant::now();
        GuestClock {
            started,
            in_host: Duration::ZERO,
            host_since: Some(started),
            cpu_limit,
        }
    }

    /// The guest called the host (any import: warden's, WASI's, HTTP), or
    /// returned to it. Driven by the store's call hook.
    pub fn enter_host(&mut self) {
        if self.host_since.is_none() {
            self.host_since = Some(Instant::now());
        }
    }

    /// The host returned to guest code.
    pub fn exit_host(&mut self) {
        if let Some(since) = self.host_since.take() {
            self.in_host += since.elapsed();
        }
    }

    /// Time spent executing guest code so far.
    pub fn guest_time(&self) -> Duration {
        let in_host = self.in_host + self.host_since.map_or(Duration::ZERO, |s| s.elapsed());
        self.started.elapsed().saturating_sub(in_host)
    }

    /// The guest's CPU limit.
    pub fn cpu_limit(&self) -> Duration {
        self.cpu_limit
    }
}

/// What stopped a guest, for people and for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFailure {
    /// A limit from the policy.
    Limit(LimitExceeded),
    /// The guest overflowed its wasm stack.
    StackOverflow,
    /// The guest panicked (Rust) with this message.
    Panic(String),
    /// Any other trap.
    Trap(String),
    /// The host failed while serving the guest (e.g. the audit log could
    /// not be written).
    Host(String),
}

impl GuestFailure {
    /// Work out what `error` (from instantiating or calling a guest) means,
    /// using what the guest wrote to stderr to recover a panic message.
    pub fn classify(error: &wasmtime::Error, stderr: &[u8]) -> Self {
        if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
            return GuestFailure::Limit(limit.clone());
        }
        if let Some(trap) = error.downcast_ref::<Trap>() {
            if *trap == Trap::StackOverflow {
                return GuestFailure::StackOverflow;
            }
            if let Some(message) = panic_message(stderr) {
                return GuestFailure::Panic(message);
            }
            return GuestFailure::Trap(trap.to_string());
        }
        // The root cause, without the wasm backtrace wasmtime attaches.
        GuestFailure::Host(error.root_cause().to_string())
    }

    /// The policy key behind this failure, if a limit.
    pub fn rule(&self) -> &'static str {
        match self {
            GuestFailure::Limit(limit) => limit.rule(),
            GuestFailure::StackOverflow => "engine.max_wasm_stack",
            GuestFailure::Panic(_) | GuestFailure::Trap(_) => "guest",
            GuestFailure::Host(_) => "host",
        }
    }

    /// Whether a limit (policy or engine) stopped the guest.
    pub fn is_limit(&self) -> bool {
        matches!(self, GuestFailure::Limit(_) | GuestFailure::StackOverflow)
    }
}

impl crate::secrets::Scrub for GuestFailure {
    fn scrub(&mut self, with: &mut crate::secrets::Scrubber<'_>) {
        match self {
            GuestFailure::Panic(text) | GuestFailure::Trap(text) | GuestFailure::Host(text) => {
                with.text(text)
            }
            GuestFailure::Limit(_) | GuestFailure::StackOverflow => {}
        }
    }
}

impl fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestFailure::Limit(limit) => write!(f, "{limit}"),
            GuestFailure::StackOverflow => f.write_str(
                "stack overflow: the guest exceeded the engine's wasm stack (recursion too deep)",
            ),
            GuestFailure::Panic(message) => write!(f, "the guest panicked: {message}"),
            GuestFailure::Trap(trap) => write!(f, "the guest trapped: {trap}"),
            GuestFailure::Host(error) => write!(f, "the host failed: {error}"),
        }
    }
}

/// Pull a Rust panic message out of a guest's stderr:
/// `thread '...' panicked at src/lib.rs:5:9:\nboom\nnote: ...`.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let start = text.find("panicked at ")? + "panicked at ".len();
    let rest = &text[start..];
    let (location, message) = rest.split_once(":\n").unwrap_or((rest, ""));
    let message = message
        .lines()
        .take_while(|line| !line.starts_with("note: "))
        .collect::<Vec<_>>()
        .join("\n");
    let out = format!("{} (at {})", message.trim(), location.trim());
    // Guest text: cut on a character boundary, never inside one.
    let mut end = out.len().min(1000);
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    Some(out[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_recovered() {
        let stderr = b"\nthread '<unnamed>' panicked at src/bin/attacker.rs:52:24:\nthe attacker panicked on purpose\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("the attacker panicked on purpose (at src/bin/attacker.rs:52:24)")
        );
        assert_eq!(panic_message(b"nothing here"), None);
        // A message whose 1000th byte falls inside a character.
        let long = format!("panicked at x.rs:1:1:\na{}\n", "é".repeat(600));
        let cut = panic_message(long.as_bytes()).unwrap();
        assert_eq!(cut.len(), 999);
        assert!(cut.ends_with('é'));
    }

    #[test]
    fn limits_name_their_rule() {
        let limit = LimitExceeded::Memory {
            limit: 64 << 20,
            requested: 65 << 20,
        };
        assert_eq!(
            limit.to_string(),
            "memory limit of 64MiB exceeded (the guest asked for 65MiB)"
        );
        assert_eq!(limit.rule(), "limits.memory");
        let error: wasmtime::Error = LimitExceeded::Cpu {
            limit: Duration::from_millis(250),
        }
        .into();
        let failure = GuestFailure::classify(&error, b"");
        assert_eq!(failure.to_string(), "CPU limit of 250ms exceeded");
        assert_eq!(failure.rule(), "limits.cpu");
    }
}
