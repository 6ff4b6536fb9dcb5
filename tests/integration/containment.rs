//! The host stays alive, bounded and responsive whatever a guest, a model
//! or a file sends it: attacks on the host's own resources (issue "Seal
//! the boundary, part 2"). Each test is an attack that hung or crashed the
//! host before the mechanism it names.

use crate::harness::*;
use std::process::Command;
use std::time::{Duration, Instant};
use warden::run::RunError;

/// What the run refused at load, as `warden` shows it, and the records.
async fn refused_at_load(policy: &str) -> (String, Vec<warden::audit::Record>) {
    let (result, records) = try_run("builtin:react", policy, no_model(), "x").await;
    let Err(RunError::Policy(error)) = result else {
        panic!("{result:?}");
    };
    (error.render(), records)
}

#[tokio::test]
async fn a_component_describing_100000_tools_is_refused_at_once() {
    let policy = format!(
        "[tools.t1]\ncomponent = \"{}\"\n",
        guests::DESCRIBE_FLOOD_TOOL
    );
    let started = Instant::now();
    let (shown, records) = refused_at_load(&policy).await;
    assert!(
        shown.contains("describes 100000 tools; a component may provide at most 1024"),
        "{shown}"
    );
    // The checks are linear: the old pairwise check took minutes.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        serde_json::to_value(records.last().unwrap().kind).unwrap(),
        "run",
        "the session ends with a record"
    );
}

fn mkfifo(path: &std::path::Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

#[test]
fn a_fifo_or_an_endless_file_named_by_a_policy_is_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("base.toml");
    mkfifo(&fifo);
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "include = [\"base.toml\"]\n").unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("check")
        .arg(&policy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("base.toml"), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A huge include is refused by size, naming the limit.
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; (4 << 20) + 1]).unwrap();
    std::fs::write(&policy, "include = [\"big.toml\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("check")
        .arg(&policy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("larger than 4MiB"), "{stderr}");
}

#[tokio::test]
async fn a_secret_read_from_a_device_or_fifo_is_missing_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    mkfifo(&fifo);
    let policy = format!(
        "[model]\nallow = [\"scripted\"]\n\n[secrets.ZERO]\nfrom_file = \"/dev/zero\"\n\n[secrets.FIFO]\nfrom_file = {:?}\n",
        fifo.display().to_string()
    );
    let started = Instant::now();
    let ran = run_agent(
        "builtin:react",
        &policy,
        Recording::new("[[turn]]\ntext = \"done\"\n"),
        "x",
    )
    .await;
    assert_eq!(ran.answer(), "done");
    assert!(started.elapsed() < Duration::from_secs(60));
    let missing = &ran.records[0].data.as_ref().unwrap()["secrets"]["missing"];
    let text = missing.to_string();
    assert!(text.contains("ZERO") && text.contains("FIFO"), "{text}");
    assert!(text.contains("not a regular file"), "{text}");
}

#[tokio::test]
async fn a_tool_schema_whose_pattern_backtracks_is_refused_at_load() {
    let policy = format!(
        "[tools.backtrack]\ncomponent = \"{}\"\n",
        guests::ATTACKER_TOOL
    );
    let (shown, _) = refused_at_load(&policy).await;
    assert!(
        shown.contains("describes `backtrack` with an invalid JSON Schema"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_flooding_headers_is_cut_off() {
    use crate::boundary::{RawServer, response};
    let many: Vec<Vec<u8>> = (0..150)
        .map(|i| format!("x-h{i}: v").into_bytes())
        .collect();
    let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
    let long = format!("x-long: {}", "v".repeat(70 << 10)).into_bytes();
    let server = RawServer::start(vec![
        response(&many, b"ok"),
        response(&[&long], b"ok"),
        response(&[b"x-fine: yes"], b"ok"),
    ])
    .await;
    let policy = probe_policy(&format!(
        "http = {{ allow = [{{ url = \"{}/**\", private = true }}] }}",
        server.url
    ));
    for path in ["many", "long", "fine"] {
        let (result, _) = run_probe(
            &policy,
            serde_json::json!({ "op": "http", "url": format!("{}/{path}", server.url) }),
        )
        .await;
        if path == "fine" {
            assert_eq!(result[0]["status"], 200, "{result}");
        } else {
            assert_eq!(result[0]["error"], "HttpProtocolError", "{path}: {result}");
        }
    }
}

#[tokio::test]
async fn a_tool_hoarding_handles_or_header_fields_is_stopped_and_the_host_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let policy = probe_policy(&format!(
        "fs = {{ \"/d\" = {{ dir = {:?}, mode = \"ro\" }} }}",
        dir.path().display().to_string()
    ));
    let calls = [
        (
            "probe",
            serde_json::json!({ "op": "fields", "count": 100000, "size": 100 }),
        ),
        (
            "probe",
            serde_json::json!({ "op": "fields", "count": 1, "size": 64 << 10 }),
        ),
        (
            "probe",
            serde_json::json!({ "op": "open", "path": "/d/f", "count": 100000 }),
        ),
        (
            "probe",
            serde_json::json!({ "op": "open", "path": "/d/f", "count": 10 }),
        ),
    ];
    let (results, ran) = run_calls(&policy, &calls).await;
    // The hoard is cut off at the handle limit, whether as an error the
    // guest sees or a trap that stops it; never 100,000 handles.
    for (i, result) in results.iter().enumerate().take(3) {
        match result {
            Ok(text) => {
                let report: serde_json::Value = serde_json::from_str(text).unwrap();
                assert!(report["held"].as_u64().unwrap() < 1024, "{i}: {report}");
                assert!(report["error"].is_string(), "{i}: {report}");
            }
            // Stopped: the detail says why (the table or a field is full).
            Err(why) => assert!(!why.is_empty(), "{i}"),
        }
    }
    // A tool within the limit still works: the host is fine.
    let last: serde_json::Value = serde_json::from_str(results[3].as_ref().unwrap()).unwrap();
    assert_eq!(last["held"], 10, "{last}");
    assert_eq!(ran.answer(), "done");
}

#[test]
fn replay_of_a_crafted_log_does_not_panic_on_a_hash_that_is_not_hex() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let warden = || Command::new(env!("CARGO_BIN_EXE_warden"));
    let demo = warden()
        .args(["demo", "-q", "--audit"])
        .arg(&audit)
        .arg("--cache-dir")
        .arg(cache_dir())
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(demo.status.success());
    // The policy's hash, as someone else wrote it: 12 bytes in falls
    // inside a character.
    let text = std::fs::read_to_string(&audit).unwrap();
    let mut records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    records[0]["data"]["policy"]["sha256"] = serde_json::json!(format!("a{}", "é".repeat(40)));
    let crafted: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&audit, crafted).unwrap();
    // Edited without re-hashing the chain: replayed only when forced.
    let out = warden()
        .args(["replay", "-q", "--trust-log", "--force"])
        .arg(&audit)
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "warden panicked: {stderr}");
    assert!(stderr.contains("has changed since run"), "{stderr}");
}
