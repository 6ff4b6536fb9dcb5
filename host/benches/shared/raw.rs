//! The least a store needs to run a tool on warden's bindings without a
//! gate: WASI and a resource table, and a `log` that drops the line. The
//! benches' baseline stores (`#[path = "shared/raw.rs"] mod raw;`).

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub struct Raw {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
}

impl WasiView for Raw {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl warden::bindings::agent::warden::sandbox::types::Host for Raw {}
impl warden::bindings::agent::warden::sandbox::log::Host for Raw {
    async fn log(
        &mut self,
        _: warden::bindings::agent::warden::sandbox::log::Level,
        _: String,
    ) -> wasmtime::Result<()> {
        Ok(())
    }
}
