//! A tool call through `warden mcp`, client to result, and what the MCP
//! layer adds to it.
//!
//! Three measurements, alternating call by call, of the echo tool:
//!
//! - `in-process`: `capability::tools::call`, the mediated call an agent
//!   makes (schema, policy, audit records to a file, fresh instance).
//! - `bare stdio`: a child process that reads a JSON-RPC line, parses it and
//!   writes a JSON-RPC answer, doing no work: the floor of any stdio server.
//! - `warden mcp`: the real server (release binary) answering `tools/call`.
//!
//! `warden mcp` minus (in-process + bare stdio) is what warden's MCP layer
//! adds over a bare stdio server doing the same mediated call.
//! The in-process call is measured on its own; the two servers alternate. Also: how
//! long `warden mcp` takes to start and answer `initialize` with the
//! compile cache warm, and cold with the Python tool (18 MiB, compiled in
//! the background), and how long it takes to exit when the client closes
//! stdin mid-compile. Run with `make bench` or
//! `cargo bench -p warden --bench mcp`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use warden::audit::{AuditLog, JsonlFile, new_run_id};
use warden::gate::Gate;
use warden::load::PolicyFile;
use warden::registry::ToolRegistry;
use warden::runtime::{Runtime, RuntimeConfig};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

const BARE: &str = "WARDEN_BENCH_BARE_STDIO";
const ARGS: &str = r#"{"text":"hello"}"#;

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn p90(samples: &[Duration]) -> Duration {
    samples[samples.len() * 9 / 10]
}

/// The bare stdio server: parse each request, answer it with its arguments.
fn bare_server() {
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lines() {
        let request: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let text = request["params"]["arguments"].to_string();
        let answer = serde_json::json!({ "jsonrpc": "2.0", "id": request["id"],
            "result": { "content": [{ "type": "text", "text": text }], "isError": false } });
        serde_json::to_writer(&mut stdout, &answer).unwrap();
        stdout.write_all(b"\n").unwrap();
        stdout.flush().unwrap();
    }
}

struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    line: String,
}

impl Peer {
    fn start(command: &mut Command) -> Peer {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Peer {
            input: child.stdin.take().unwrap(),
            output: BufReader::new(child.stdout.take().unwrap()),
            child,
            line: String::new(),
        }
    }

    /// Send one message and read one answer; the round trip.
    fn ask(&mut self, message: &str) -> Duration {
        let started = Instant::now();
        self.input.write_all(message.as_bytes()).unwrap();
        self.input.flush().unwrap();
        self.line.clear();
        self.output.read_line(&mut self.line).unwrap();
        let elapsed = started.elapsed();
        assert!(
            self.line.contains("\"result\""),
            "unexpected answer: {}",
            self.line
        );
        elapsed
    }

    /// Close stdin and wait for the exit; how long that took.
    fn stop(mut self) -> Duration {
        drop(self.input);
        let started = Instant::now();
        self.child.wait().unwrap();
        started.elapsed()
    }
}

fn call_message(id: usize) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{ARGS}}}}}\n"
    )
}

const INITIALIZE: &str = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"bench\",\"version\":\"1\"}}}\n";

fn main() {
    if std::env::var_os(BARE).is_some() {
        return bare_server();
    }
    // `cargo test --benches` runs bench targets without `--bench`: one
    // quick round so the target is exercised without taking minutes.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (samples, warmup, starts) = if quick { (20, 5, 2) } else { (4000, 300, 30) };

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "[model]\nallow = [\"scripted\"]\n[tools.echo]\ncomponent = {:?}\nmax_calls = 1_000_000\n",
            guests::ECHO_TOOL
        ),
    )
    .unwrap();

    // In-process: the mediated call.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        max_instances: 16,
    })
    .unwrap();
    let policy = PolicyFile::read(&policy_path).unwrap();
    let audit = AuditLog::new(new_run_id())
        .with_sink(JsonlFile::open(&dir.path().join("inproc.jsonl")).unwrap());
    let gate = std::sync::Arc::new(Gate::new(policy.policy.clone(), audit));
    let registry = rt
        .block_on(ToolRegistry::load(&runtime, &policy, &gate))
        .unwrap();

    let mut bare = Peer::start(Command::new(std::env::current_exe().unwrap()).env(BARE, "1"));
    let warden_mcp = |audit: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
        command
            .arg("mcp")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--audit")
            .arg(dir.path().join(audit))
            .arg("--cache-dir")
            .arg(&cache)
            .env_remove("RUST_BACKTRACE");
        command
    };
    let mut mcp = Peer::start(&mut warden_mcp("mcp.jsonl"));
    mcp.ask(INITIALIZE);

    // In-process on its own (alternating with the pipes would evict its
    // caches every call); then the two servers, alternating.
    let mut inproc_t = Vec::new();
    for i in 0..warmup + samples {
        let started = Instant::now();
        let out = rt
            .block_on(warden::capability::tools::call(
                &gate, &registry, None, "echo", ARGS,
            ))
            .unwrap()
            .unwrap();
        std::hint::black_box(out);
        if i >= warmup {
            inproc_t.push(started.elapsed());
        }
    }
    let (mut bare_t, mut mcp_t) = (Vec::new(), Vec::new());
    for i in 0..warmup + samples {
        let message = call_message(i + 1);
        let bare_time = bare.ask(&message);
        let mcp_time = mcp.ask(&message);
        if i >= warmup {
            bare_t.push(bare_time);
            mcp_t.push(mcp_time);
        }
    }
    bare.stop();
    mcp.stop();

    // Start-up: spawn, initialize, answer; cache warm (compiled above).
    let mut start_t = Vec::new();
    for _ in 0..starts {
        let started = Instant::now();
        let mut server = Peer::start(&mut warden_mcp("starts.jsonl"));
        server.ask(INITIALIZE);
        start_t.push(started.elapsed());
        server.stop();
    }

    // Cold: the Python tool compiles in the background (20-80 s); the
    // client leaves as soon as `initialize` is answered.
    let python = std::path::Path::new(guests::WORDFREQ_PY);
    let (mut cold_t, mut leave_t) = (Vec::new(), Vec::new());
    if python.exists() {
        let cold_policy = dir.path().join("cold.toml");
        std::fs::write(
            &cold_policy,
            format!(
                "[model]\nallow = [\"scripted\"]\n[tools.word_frequencies]\ncomponent = {:?}\n",
                guests::WORDFREQ_PY
            ),
        )
        .unwrap();
        for _ in 0..starts.min(10) {
            let started = Instant::now();
            let mut server = Peer::start(
                Command::new(env!("CARGO_BIN_EXE_warden"))
                    .args(["mcp", "--no-cache", "--policy"])
                    .arg(&cold_policy)
                    .arg("--audit")
                    .arg(dir.path().join("cold.jsonl")),
            );
            server.ask(INITIALIZE);
            cold_t.push(started.elapsed());
            leave_t.push(server.stop());
        }
    }

    let (i, b, m) = (
        median(&mut inproc_t),
        median(&mut bare_t),
        median(&mut mcp_t),
    );
    println!("echo tool call, {samples} samples each (the two servers alternating):");
    println!(
        "  in-process mediated call   median {i:>10.1?}  p90 {:>10.1?}",
        p90(&inproc_t)
    );
    println!(
        "  bare stdio round trip      median {b:>10.1?}  p90 {:>10.1?}",
        p90(&bare_t)
    );
    println!(
        "  warden mcp, client->result median {m:>10.1?}  p90 {:>10.1?}",
        p90(&mcp_t)
    );
    let server = m.saturating_sub(b);
    println!("  warden mcp's own time (client->result minus the bare round trip): {server:.1?}");
    if server > i {
        println!(
            "  MCP layer over a bare stdio server doing the same call: {:.1?}",
            server - i
        );
    } else {
        println!(
            "  MCP layer over a bare stdio server doing the same call: within noise ({:.1?} less than the in-process call)",
            i - server
        );
    }
    println!(
        "warden mcp start to initialize answered (cache warm), {starts} starts: median {:.1?}",
        median(&mut start_t)
    );
    if cold_t.is_empty() {
        println!(
            "(cold start not measured: {} is not built)",
            python.display()
        );
    } else {
        println!(
            "warden mcp start to initialize answered (cache cold, Python tool compiling), {} starts: median {:.1?}, max {:.1?}",
            cold_t.len(),
            median(&mut cold_t),
            cold_t.iter().max().copied().unwrap_or_default()
        );
        println!(
            "  stdin closed mid-compile to exit: median {:.1?}, max {:.1?}",
            median(&mut leave_t),
            leave_t.iter().max().copied().unwrap_or_default()
        );
    }
}
