//! `warden:sandbox/limits`: what an agent may know of its run's limits, so
//! it can plan within them (its step limit, whether it must declare a
//! plan). Read from the fixed policy; nothing is decided or changed here,
//! and nothing secret is in it.

use super::{AgentRole, GuestState};
use crate::bindings::agent::warden::sandbox::limits as wit;

impl wit::Host for GuestState<AgentRole> {
    async fn get(&mut self) -> wasmtime::Result<wit::RunLimits> {
        let policy = self.gate.policy();
        Ok(wit::RunLimits {
            max_steps: policy.limits.max_steps,
            max_model_calls: policy.model.max_calls,
            plan_required: policy.plan.required,
        })
    }
}
