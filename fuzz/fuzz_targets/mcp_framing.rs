//! The MCP server's stdio transport: arbitrary bytes as the client's side
//! of a whole session, read by `warden::mcp::serve` (line framing, JSON-RPC
//! parsing, dispatch, answers through the one exit to the client). The
//! policy serves one tool whose every call is denied, so no guest ever
//! runs: what is fuzzed is the host's own handling of client input.
//!
//! Asserted, beyond not panicking and ending when the input ends:
//! - every answer is one line holding a JSON-RPC 2.0 response (`id`, and
//!   exactly one of `result` or an `error` with an integer `code` and a
//!   string `message`);
//! - every request with a valid id gets exactly one answer with that id
//!   (at most one if the client cancelled it), notifications and responses
//!   get none, and every malformed message gets one error with id `null`
//!   (or its own id when it had a valid one); no answer carries an id the
//!   client never sent;
//! - output is bounded: an answer is at most `ANSWER_SLACK` bytes beyond the
//!   id it echoes, and the audit log grows by at most `AUDIT_PER_LINE`
//!   bytes per message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use tokio::io::AsyncReadExt;
use warden::audit::{AuditLog, MemorySink, new_run_id};
use warden::load::PolicyFile;
use warden::mcp::{ServeSpec, serve};
use warden::runtime::{Runtime, RuntimeConfig};

const POLICY: &str = r#"
[tools.calc]
component = "builtin:calc"
decision = "deny"
"#;

/// Bytes an answer may take beyond the id it echoes.
const ANSWER_SLACK: usize = 4096;
/// Audit bytes one message may add (records carry capped fields).
const AUDIT_PER_LINE: usize = 16 * 1024;
/// Audit bytes of opening and closing a session.
const AUDIT_BASE: usize = 64 * 1024;

struct Fixture {
    runtime: Runtime,
    tokio: tokio::runtime::Runtime,
    policy: PolicyFile,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        runtime: Runtime::new(RuntimeConfig {
            cache_dir: None,
            max_instances: 2,
        })
        .expect("an engine"),
        tokio: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
        policy: PolicyFile::from_text("fuzz.toml".into(), "/nonexistent".into(), POLICY.into())
            .expect("the fuzz policy loads"),
    })
}

/// What JSON-RPC 2.0 requires of the answers to the input's messages.
#[derive(Default)]
struct Expected {
    /// Answers per id (its JSON text).
    by_id: HashMap<String, usize>,
    /// Answers with id `null`.
    null: usize,
    /// Ids the client cancelled (`notifications/cancelled`): those may go
    /// unanswered.
    cancelled: HashSet<String>,
    /// Messages read.
    lines: usize,
}

fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// Messages as the stdio transport frames them: split at `\n`, blank lines
/// skipped, a last line without its newline still a message.
fn expected(input: &[u8]) -> Expected {
    let mut expected = Expected::default();
    for line in input.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        expected.lines += 1;
        let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(line) else {
            expected.null += 1;
            continue;
        };
        let id = message.get("id");
        let answer_to = |expected: &mut Expected, id: Option<&Value>| match id {
            Some(id) if valid_id(id) => *expected.by_id.entry(id.to_string()).or_default() += 1,
            _ => expected.null += 1,
        };
        if message.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            answer_to(&mut expected, id);
            continue;
        }
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            if !(message.contains_key("result") || message.contains_key("error")) {
                answer_to(&mut expected, id);
            }
            continue;
        };
        match id {
            None => {
                if method == "notifications/cancelled"
                    && let Some(cancelled) = message.get("params").and_then(|p| p.get("requestId"))
                {
                    expected.cancelled.insert(cancelled.to_string());
                }
            }
            Some(id) if valid_id(id) => answer_to(&mut expected, Some(id)),
            Some(_) => expected.null += 1,
        }
    }
    expected
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let memory = MemorySink::default();
    let audit = AuditLog::new(new_run_id()).with_sink(memory.clone());
    let spec = ServeSpec {
        concurrency: 2,
        queue: 2,
        ..ServeSpec::new(fixture.policy.clone())
    };
    let input = data.to_vec();
    let (report, out) = fixture.tokio.block_on(async {
        let (output, mut client_end) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = client_end.read_to_end(&mut out).await;
            out
        });
        let served = serve(
            &fixture.runtime,
            spec,
            audit,
            tokio::io::BufReader::new(&input[..]),
            output,
            std::future::pending(),
        )
        .await;
        (served, reader.await.unwrap_or_default())
    });
    let report = report.unwrap_or_else(|e| panic!("the session failed: {e}"));

    let want = expected(data);
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut null = 0;
    assert!(
        out.is_empty() || out.ends_with(b"\n"),
        "the last answer is not a whole line"
    );
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let answer: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "an answer is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            )
        });
        let shown = || String::from_utf8_lossy(line).into_owned();
        assert_eq!(
            answer.get("jsonrpc").and_then(Value::as_str),
            Some("2.0"),
            "{}",
            shown()
        );
        // Progress of a request waiting for the tools (it gave a token of
        // at most 256 bytes): not an answer, and small.
        if answer.get("method").and_then(Value::as_str) == Some("notifications/progress") {
            assert!(answer.get("id").is_none(), "{}", shown());
            assert!(line.len() <= ANSWER_SLACK, "{}", shown());
            continue;
        }
        let id = answer
            .get("id")
            .unwrap_or_else(|| panic!("an answer without an id: {}", shown()));
        let (result, error) = (answer.get("result"), answer.get("error"));
        assert!(
            result.is_some() != error.is_some(),
            "not exactly one of result and error: {}",
            shown()
        );
        if let Some(error) = error {
            assert!(error.get("code").is_some_and(Value::is_i64), "{}", shown());
            assert!(
                error.get("message").is_some_and(Value::is_string),
                "{}",
                shown()
            );
        }
        let id_bytes = id.to_string().len();
        assert!(
            line.len() <= ANSWER_SLACK + id_bytes,
            "an answer of {} bytes for an id of {id_bytes}: {}",
            line.len(),
            shown().chars().take(300).collect::<String>()
        );
        if id.is_null() {
            null += 1;
        } else {
            *by_id.entry(id.to_string()).or_default() += 1;
        }
    }
    assert_eq!(null, want.null, "answers with id null");
    for (id, count) in &by_id {
        let asked = want.by_id.get(id).copied().unwrap_or(0);
        assert!(
            *count <= asked,
            "{count} answers to id {id}, asked {asked} times"
        );
    }
    for (id, asked) in &want.by_id {
        let got = by_id.get(id).copied().unwrap_or(0);
        assert!(
            got == *asked || (got < *asked && want.cancelled.contains(id)),
            "id {id} asked {asked} times, answered {got} times"
        );
    }
    let audit_bytes: usize = memory
        .records()
        .iter()
        .map(|r| serde_json::to_vec(r).map_or(0, |v| v.len()))
        .sum();
    assert!(
        audit_bytes <= AUDIT_BASE + AUDIT_PER_LINE * want.lines,
        "{audit_bytes} audit bytes for {} messages",
        want.lines
    );
    assert!(!report.audit_head.is_empty());
});
