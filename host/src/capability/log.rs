//! `warden:sandbox/log`: a guest's log lines go to the audit log, within
//! the run's log budget.

use super::GuestState;
use crate::bindings::agent::warden::sandbox::log::{Host, Level};

/// The level as audit records spell it.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl<R: Send + 'static> Host for GuestState<R> {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.gate.log(&self.name, level_name(level), &message)?;
        Ok(())
    }
}
