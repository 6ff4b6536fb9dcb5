//! warden's integration tests: one binary, real components built from
//! source by host/build.rs (never committed), real files in temp dirs.

mod harness;

mod adversarial;
mod agent_loop;
mod approvals;
mod approvals_web;
mod boundary;
mod cli;
mod cli_output;
mod codeact;
mod compile;
mod containment;
mod egress;
mod files;
mod injection;
mod isolation;
mod languages;
mod ledger;
mod limits;
mod loading;
mod mcp;
mod mcp_elicit_http;
mod mcp_python;
mod mcp_startup;
mod mock_model;
mod nats;
mod nats_front;
mod plan;
mod policies;
mod policy;
mod providers;
mod real_tools;
mod remote;
mod replay;
mod scaffold;
mod serve;
mod sessions;
mod transcript;
