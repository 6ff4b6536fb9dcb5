//! The `python` tool served by `warden mcp` to the official MCP Python SDK
//! (`tests/mcp/python_tool.py`): listed, called (what it printed and the
//! value of its last expression), a denial as an `isError` result, and with
//! `instance = "per-run"` a variable kept within one MCP session and never
//! seen by another.

use crate::harness::{cache_dir, guests, repo};
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn python() -> PathBuf {
    let python = std::env::var_os("WARDEN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: this test needs the pinned `mcp` package; run `make setup` (or set WARDEN_PYTHON)",
        python.display()
    );
    python
}

/// The policy file (python kept per MCP session, calc denied) and where
/// the audit log goes.
fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[model]\nallow = [\"scripted\"]\n\n[limits]\nmemory = \"128MiB\"\ncpu = \"5s\"\n\n[tools.python]\ncomponent = {:?}\neffects = \"none\"\ninstance = \"per-run\"\n\n[tools.calc]\ncomponent = \"builtin:calc\"\ndecision = \"deny\"\n",
            guests::PYTHON_EXEC
        ),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    (dir, policy, audit)
}

/// What the client printed, by `what`.
fn seen(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn find<'a>(seen: &'a [Value], what: &str) -> &'a Value {
    seen.iter()
        .find(|s| s["what"] == what)
        .unwrap_or_else(|| panic!("no `{what}` in {seen:#?}"))
}

/// The tool's JSON report in a result's text.
fn report(result: &Value) -> Value {
    assert_eq!(result["is_error"], false, "{result}");
    serde_json::from_str(result["text"].as_str().unwrap()).unwrap()
}

#[test]
fn the_python_sdk_calls_the_python_tool_over_stdio_and_keeps_its_session() {
    let (_dir, policy, audit) = files();
    let out = Command::new(python())
        .arg(repo().join("tests/mcp/python_tool.py"))
        .arg(env!("CARGO_BIN_EXE_warden"))
        .arg(&policy)
        .arg(&audit)
        .env("WARDEN_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let seen = seen(&out);
    assert_eq!(
        find(&seen, "tools")["names"],
        serde_json::json!(["python"]),
        "only the granted tool is listed"
    );
    let computed = report(find(&seen, "computed"));
    assert_eq!(computed["stdout"], "sum is 45\n");
    assert_eq!(computed["value"], "90");
    let denied = find(&seen, "denied");
    assert_eq!(denied["is_error"], true, "{denied}");
    assert!(
        denied["text"]
            .as_str()
            .unwrap()
            .contains("rule: tools.calc"),
        "{denied}"
    );
    assert_eq!(report(find(&seen, "set"))["error"], Value::Null);
    assert_eq!(report(find(&seen, "kept"))["value"], "42");

    // The audit log verifies, and its end record saw the kept instance.
    let log = std::fs::read_to_string(&audit).unwrap();
    let verified = warden::audit::verify(log.as_bytes()).unwrap();
    assert!(verified.is_intact(), "{:?}", verified.problems);
    let end: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(end["subject"], "mcp");
    assert!(end["data"]["ledger"]["kept_memory_peak"].as_u64().unwrap() > 0);
}

#[test]
fn two_mcp_sessions_over_http_never_share_a_per_run_instance() {
    let (_dir, policy, audit) = files();
    let mut server = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["mcp", "--http", "127.0.0.1:0", "--policy"])
        .arg(&policy)
        .arg("--audit")
        .arg(&audit)
        .env("WARDEN_CACHE_DIR", cache_dir())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(server.stderr.take().unwrap());
    let mut url = None;
    let mut line = String::new();
    while url.is_none() && stderr.read_line(&mut line).unwrap() > 0 {
        url = line
            .trim()
            .strip_prefix("warden mcp: listening on ")
            .map(str::to_string);
        line.clear();
    }
    let url = url.expect("warden mcp says where it listens");
    let out = Command::new(python())
        .arg(repo().join("tests/mcp/python_tool.py"))
        .arg(&url)
        .output()
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = server.wait().unwrap();
    let seen = seen(&out);
    assert!(status.success());
    let other = report(find(&seen, "second-reads"));
    assert!(
        other["error"].as_str().unwrap().contains("NameError"),
        "a session saw another session's variable: {other}"
    );
    assert_eq!(report(find(&seen, "first-reads"))["value"], "42");
    let log = std::fs::read_to_string(&audit).unwrap();
    let verified = warden::audit::verify(log.as_bytes()).unwrap();
    assert!(verified.is_intact(), "{:?}", verified.problems);
}
