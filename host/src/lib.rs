//! warden: a WebAssembly sandbox for tool-using AI agents.
//!
//! An agent scaffold (the loop that talks to a model and calls tools) and
//! each tool run as Wasm components with no ambient authority. Every model
//! call, tool call and log line a guest makes is an import the host
//! implements, and every one passes through one [`gate::Gate`]: decoded to a
//! host [`policy::Request`], decided by the pure [`policy::Policy`],
//! performed only if allowed, and recorded in the [`audit`] log before and
//! after.
//!
//! ```text
//! guest import -> capability (decode) -> Gate::check (policy, audit) -> effect -> Gate::complete (audit) -> guest
//! ```
//!
//! Embedding: build a [`runtime::Runtime`] once, read a
//! [`load::PolicyFile`], pick a [`provider::ModelProvider`], and call
//! [`run::run`]:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use warden::{audit, load, provider, run, runtime};
//!
//! let runtime = runtime::Runtime::new(runtime::RuntimeConfig::default())?;
//! let policy = load::PolicyFile::read("policies/demo.toml".as_ref())?;
//! let script = std::fs::read_to_string("agents/react/demo.script.toml")?;
//! let provider = Arc::new(provider::ScriptedProvider::parse("demo.script.toml", &script)?);
//! let log = audit::AuditLog::new(audit::new_run_id())
//!     .with_sink(audit::JsonlFile::open("audit.jsonl".as_ref())?);
//! let spec = run::RunSpec {
//!     policy,
//!     agent: load::ComponentSource::Builtin("react".into()),
//!     provider,
//!     task: "What is 6 * 7?".into(),
//!     approver: None,
//!     approve: Vec::new(),
//!     approve_from: Vec::new(),
//!     replay_tools: None,
//! };
//! let report = run::run(&runtime, spec, log).await?;
//! println!("{:?}", report.result);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod approvals;
pub mod audit;
pub mod bindings;
pub mod bundled;
pub mod call;
pub mod capability;
pub mod chat;
pub mod check;
pub mod diagnostic;
pub mod gate;
pub mod job;
pub mod load;
pub mod mcp;
pub mod policy;
pub mod provider;
pub mod registry;
pub mod remote;
pub mod replay;
pub mod run;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod transcript;
pub mod worker;
