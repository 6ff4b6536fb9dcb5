//! `warden replay` on logs it did not write: it performs no effect (no
//! HTTP, no file, no tool), refuses a broken chain unless forced, takes the
//! agent and policy from a log only when told to trust it, never grants a
//! directory the person did not ask for, and compares what the agent sent,
//! not only what it got back.

use crate::harness::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .env("WARDEN_REPLAY_PROBE", "a value of the host's")
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A loopback HTTP server that answers `200 ok` to every request and
/// counts them.
fn counting_server() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (url, count)
}

/// Run the effects agent on `task` (its JSON list of operations) under
/// `policy`, the model answering `script`; the audit log's path.
fn record(dir: &Path, policy: &str, script: &str, task: &str) -> (PathBuf, PathBuf) {
    record_agent(dir, guests::EFFECTS_AGENT, policy, script, task)
}

/// [`record`] with another agent.
fn record_agent(
    dir: &Path,
    agent: &str,
    policy: &str,
    script: &str,
    task: &str,
) -> (PathBuf, PathBuf) {
    let policy_path = dir.join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let script_path = dir.join("script.toml");
    std::fs::write(&script_path, script).unwrap();
    let audit = dir.join("audit.jsonl");
    let out = warden(&[
        "run",
        agent,
        "-q",
        "--policy",
        policy_path.to_str().unwrap(),
        "--task",
        task,
        "--model",
        &format!("scripted:{}", script_path.display()),
        "--audit",
        audit.to_str().unwrap(),
        "--cache-dir",
        cache_dir().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (audit, policy_path)
}

fn replay(audit: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["replay", "-q", audit.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = warden(&args);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The records of a log, to edit.
fn records(audit: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Write `records` as a log whose chain holds again (what anyone who can
/// write the file can do).
fn write_rehashed(audit: &Path, records: &mut [serde_json::Value]) {
    let mut prev = warden::audit::GENESIS.to_string();
    let mut out = String::new();
    for record in records.iter_mut() {
        record["prev"] = serde_json::json!(prev);
        let line = record.to_string();
        prev = warden::audit::line_hash(line.as_bytes());
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(audit, out).unwrap();
}

const MODEL_ONLY: &str = "[model]\nallow = [\"scripted\"]\n";

#[test]
fn replay_does_not_send_the_agents_http_request_again() {
    let (url, count) = counting_server();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "{MODEL_ONLY}\n[agent]\nhttp = {{ allow = [{{ url = \"{url}/**\", private = true }}] }}\n"
    );
    let task = format!(r#"[{{"http":"{url}/hook"}}]"#);
    let (audit, policy) = record(dir.path(), &policy, "[[turn]]\ntext = \"x\"\n", &task);
    assert_eq!(count.load(Ordering::SeqCst), 1, "the run sent it once");

    let (code, out, err) = replay(
        &audit,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--agent",
            guests::EFFECTS_AGENT,
        ],
    );
    assert_eq!(count.load(Ordering::SeqCst), 1, "the replay sent it again");
    // The response is not in the record, so the run cannot go the same way.
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("DIVERGED") && out.contains("GET") && out.contains("sends no HTTP"),
        "{out}"
    );
}

/// The agent's own HTTP responses label the session as a tool's do: a
/// page fetched under a rule with `labels` taints what follows (plans,
/// `*_when_labeled`), and the run's end record says so.
#[test]
fn the_agents_own_http_responses_label_the_session() {
    let (url, _count) = counting_server();
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "{MODEL_ONLY}\n[agent]\nhttp = {{ allow = [{{ url = \"{url}/**\", private = true, labels = [\"untrusted\"] }}] }}\n"
    );
    let task = format!(r#"[{{"http":"{url}/page"}}]"#);
    let (audit, _) = record(dir.path(), &policy, "[[turn]]\ntext = \"x\"\n", &task);
    let end = records(&audit)
        .into_iter()
        .rfind(|r| r["kind"] == "run" && r["event"] == "outcome")
        .unwrap();
    assert_eq!(
        end["data"]["labels"],
        serde_json::json!(["untrusted"]),
        "{end}"
    );
}

#[test]
fn a_crafted_log_cannot_make_replay_write_outside_any_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let (audit, _) = record(
        dir.path(),
        MODEL_ONLY,
        "[[turn]]\ntext = \"x\"\n",
        r#"[{"chat":"hi"}]"#,
    );
    // Someone else's policy, granting a directory no workspace holds, and
    // a log that names it, the effects agent, and a task that writes there.
    let outside = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil.toml");
    std::fs::write(
        &evil,
        format!(
            "{MODEL_ONLY}\n[agent]\nfs = {{ \"/out\" = {{ dir = {:?}, mode = \"rw\" }} }}\n",
            outside.path().display().to_string()
        ),
    )
    .unwrap();
    let mut crafted = records(&audit);
    let start = &mut crafted[0]["data"];
    start["policy"]["file"] = serde_json::json!(evil.display().to_string());
    start["agent"]["source"] = serde_json::json!(guests::EFFECTS_AGENT);
    start["task"] = serde_json::json!(r#"[{"write":"/out/pwned","content":"x"}]"#);
    write_rehashed(&audit, &mut crafted);
    let pwned = outside.path().join("pwned");

    // Taken from the log, the agent and policy are shown, not run.
    let (code, out, err) = replay(&audit, &[]);
    assert!(!pwned.exists(), "the replay wrote {}", pwned.display());
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains(&evil.display().to_string())
            && err.contains(guests::EFFECTS_AGENT)
            && err.contains(&outside.path().display().to_string())
            && err.contains("--trust-log"),
        "{err}"
    );

    // Trusted, it runs, but no directory is granted: the write fails and
    // nothing lands outside.
    let (code, out, err) = replay(&audit, &["--trust-log"]);
    assert!(!pwned.exists(), "the replay wrote {}", pwned.display());
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no directory is granted"), "{err}");
    assert!(
        out.contains("DIVERGED") && out.contains("No such file or directory"),
        "{out}"
    );

    // Asked for, the policy's directories are granted read-only.
    let (code, out, err) = replay(&audit, &["--trust-log", "--read-dirs"]);
    assert!(!pwned.exists(), "the replay wrote {}", pwned.display());
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("granted read-only"), "{err}");
    assert!(out.contains("Operation not permitted"), "{out}");
}

#[test]
fn a_log_whose_chain_is_broken_is_replayed_only_when_forced() {
    let dir = tempfile::tempdir().unwrap();
    let (audit, policy) = record(
        dir.path(),
        MODEL_ONLY,
        "[[turn]]\ntext = \"x\"\n",
        r#"[{"chat":"hi"}]"#,
    );
    let trusted = [
        "--policy",
        policy.to_str().unwrap(),
        "--agent",
        guests::EFFECTS_AGENT,
    ];
    let (code, out, err) = replay(&audit, &trusted);
    assert_eq!(code, Some(0), "{out}{err}");

    // One answer changed, the chain left as it was.
    let mut edited = records(&audit);
    let at = edited
        .iter()
        .position(|r| r["kind"] == "model" && r["event"] == "outcome")
        .unwrap();
    edited[at]["data"]["text"] = serde_json::json!("y");
    let lines: String = edited.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&audit, lines).unwrap();

    let (code, out, err) = replay(&audit, &trusted);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("hash chain is broken")
            && err.contains(&format!("line {}", at + 2))
            && err.contains("--force"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    let mut forced = trusted.to_vec();
    forced.push("--force");
    let (code, out, err) = replay(&audit, &forced);
    assert!(err.contains("replaying anyway"), "{err}");
    // It ran: the edited answer is what the agent now gives.
    assert!(out.contains("run r-"), "{out}{err}");
    assert_ne!(code, Some(101), "{out}{err}");
}

#[test]
fn an_agent_that_sends_a_different_prompt_diverges_even_with_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (audit, policy) = record(
        dir.path(),
        MODEL_ONLY,
        "[[turn]]\ntext = \"same\"\n",
        r#"[{"chat":"hello","nonce":true}]"#,
    );
    let trusted = [
        "--policy",
        policy.to_str().unwrap(),
        "--agent",
        guests::EFFECTS_AGENT,
    ];
    // One message each time, the same answer, the same final answer: only
    // what was sent differs.
    let (code, out, err) = replay(&audit, &trusted);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("DIVERGED")
            && out.contains("model call 1")
            && out.contains("a different request"),
        "{out}"
    );

    // A log from before requests were hashed compares what it can, and
    // says so.
    let mut old = records(&audit);
    for record in &mut old {
        if let Some(data) = record["data"].as_object_mut() {
            data.remove("request_sha256");
        }
    }
    write_rehashed(&audit, &mut old);
    let (code, out, err) = replay(&audit, &trusted);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("holds no hash of the model requests"), "{err}");
}

#[test]
fn replay_downloads_no_component() {
    let (url, count) = counting_server();
    let dir = tempfile::tempdir().unwrap();
    let (audit, _) = record(
        dir.path(),
        MODEL_ONLY,
        "[[turn]]\ntext = \"x\"\n",
        r#"[{"chat":"hi"}]"#,
    );
    // A policy naming a tool at a URL (pinned to something never cached).
    let policy = dir.path().join("remote.toml");
    std::fs::write(
        &policy,
        format!(
            "{MODEL_ONLY}\n[tools.remote]\ncomponent = \"{url}/tool.wasm\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let (code, out, err) = replay(
        &audit,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--agent",
            guests::EFFECTS_AGENT,
        ],
    );
    assert_eq!(count.load(Ordering::SeqCst), 0, "the replay downloaded");
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("a replay downloads nothing"), "{err}");
}

#[test]
fn replay_passes_the_agent_no_environment_of_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!("{MODEL_ONLY}\n[agent]\ninherit_env = [\"WARDEN_REPLAY_PROBE\"]\n");
    let (audit, policy) = record(
        dir.path(),
        &policy,
        "[[turn]]\ntext = \"x\"\n",
        r#"[{"env":"WARDEN_REPLAY_PROBE"}]"#,
    );
    let recorded = std::fs::read_to_string(&audit).unwrap();
    assert!(recorded.contains("a value of the host's"), "the run had it");
    let (code, out, err) = replay(
        &audit,
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--agent",
            guests::EFFECTS_AGENT,
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("the answer differs") && out.contains("now Some(\"[{\\\"error\\\""),
        "{out}"
    );
}

/// The verdict's reason, unwrapped from its quoted block (`  │ ` lines).
fn divergence(out: &str) -> String {
    out.lines()
        .filter_map(|line| line.strip_prefix("  │ "))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_decision_that_changed_is_reported_as_the_decision_not_as_another_call() {
    // The model asks for the same three calls each time; the second is
    // denied by an argument rule in one policy and allowed in the other.
    let narrow = format!(
        "{MODEL_ONLY}max_calls = 5\n[tools.regex_search]\ncomponent = \"builtin:text\"\n[tools.word_count]\ncomponent = \"builtin:text\"\nargs.text = {{ max_len = 1 }}\n"
    );
    let wide = narrow.replace("args.text = { max_len = 1 }\n", "");
    let script = r#"[[turn]]
calls = [
  { tool = "regex_search", arguments = { text = "a", pattern = "a" } },
  { tool = "word_count", arguments = { text = "a b" } },
  { tool = "regex_search", arguments = { text = "b", pattern = "b" } },
]
[[turn]]
text = "done"
"#;
    for (then, now, expected) in [
        (
            &narrow,
            &wide,
            "tool call 2 (`word_count`) was denied in the recorded run (rule tools.word_count.args.text) and is allowed now (rule tools.word_count); it did not run then, so the record holds no result",
        ),
        (
            &wide,
            &narrow,
            "tool call 2 (`word_count`) was allowed in the recorded run (rule tools.word_count) and is denied now: `text` is `a b`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (audit, _) = record_agent(dir.path(), "builtin:react", then, script, "count");
        let other = dir.path().join("other.toml");
        std::fs::write(&other, now).unwrap();
        let args = [
            "--policy",
            other.to_str().unwrap(),
            "--agent",
            "builtin:react",
        ];
        let (code, out, err) = replay(&audit, &args);
        assert_eq!(code, Some(1), "{out}{err}");
        let reason = divergence(&out);
        assert!(out.contains("DIVERGED"), "{out}");
        assert!(reason.contains(expected), "{reason}");
        // The agent called the same tool both times.
        assert!(!reason.contains("the recorded run called"), "{reason}");
    }

    // Under the policy it was recorded with, the refusal is replayed as one.
    let dir = tempfile::tempdir().unwrap();
    let (audit, policy) = record_agent(dir.path(), "builtin:react", &narrow, script, "count");
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--agent",
        "builtin:react",
    ];
    let (code, out, err) = replay(&audit, &args);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 tool result(s) replayed"), "{out}");
}

#[test]
fn an_mcp_session_log_is_refused_as_having_no_agent() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[tools.calc]\ncomponent = \"builtin:calc\"\n").unwrap();
    let audit = dir.path().join("mcp.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["mcp", "--policy", policy.to_str().unwrap(), "--audit"])
        .arg(&audit)
        .arg("--cache-dir")
        .arg(cache_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } },
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{initialize}\n").as_bytes())
        .unwrap();
    let served = child.wait_with_output().unwrap();
    assert!(served.status.success(), "{}", text(&served.stderr));

    let (code, out, err) = replay(&audit, &["--trust-log"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("is a `warden mcp` session")
            && err.contains("ran no agent, so there is nothing to replay")
            && err.contains(&format!("help: `warden audit show {}`", audit.display())),
        "{err}"
    );
    assert!(!err.contains("cannot read"), "{err}");
}
