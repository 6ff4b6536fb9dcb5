//! Guests that misbehave are stopped by the limit they hit, with an error
//! that names it; the host stays up and the audit log says what happened.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;
use warden::audit::{Kind, Outcome};
use warden::policy::Verdict;
use warden::run::RunFailure;
use warden::runtime::limits::{GuestFailure, LimitExceeded};

fn limits(extra: &str) -> String {
    format!(
        "[limits]\nmemory = \"32MiB\"\ncpu = \"1s\"\nwall = \"20s\"\noutput = \"64KiB\"\n{extra}"
    )
}

async fn attack(task: &str, policy: &str) -> Ran {
    run_agent(guests::ATTACKER, policy, no_model(), task).await
}

fn stopped(ran: &Ran) -> &GuestFailure {
    match &ran.report.result {
        Err(RunFailure::Stopped(failure)) => failure,
        other => panic!("expected the agent to be stopped, got {other:?}"),
    }
}

/// The record that names the limit or trap that stopped `subject`.
fn stop_record<'a>(ran: &'a Ran, subject: &str) -> &'a warden::audit::Record {
    ran.records
        .iter()
        .find(|r| {
            r.subject == subject && r.outcome == Some(Outcome::Trap) && r.decision == Verdict::Deny
        })
        .unwrap_or_else(|| panic!("no stop record for {subject}: {:#?}", ran.records))
}

/// After any attack, the same runtime still runs a well-behaved agent.
async fn host_still_serves() {
    let model = Recording::new("[[turn]]\ntext = \"still here\"\n");
    let ran = run_agent(
        "builtin:react",
        "[model]\nallow = [\"scripted\"]\n",
        model,
        "ping",
    )
    .await;
    assert_eq!(ran.answer(), "still here");
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_cpu_limit() {
    let ran = attack("loop", &limits("")).await;
    assert_eq!(
        stopped(&ran),
        &GuestFailure::Limit(LimitExceeded::Cpu {
            limit: Duration::from_secs(1)
        })
    );
    let record = stop_record(&ran, "attacker");
    assert_eq!(
        (record.kind, record.rule.as_str()),
        (Kind::Limit, "limits.cpu")
    );
    assert_eq!(record.detail, "CPU limit of 1s exceeded");
    assert!(ran.report.elapsed < Duration::from_secs(10));
    host_still_serves().await;
}

#[tokio::test]
async fn a_guest_blocked_in_the_host_is_stopped_by_the_wall_clock() {
    let policy = "[limits]\ncpu = \"200ms\"\nwall = \"500ms\"\n";
    let ran = attack("sleep:600000", policy).await;
    // Sleeping costs no CPU: the wall clock is what stops it.
    assert_eq!(
        stopped(&ran),
        &GuestFailure::Limit(LimitExceeded::Wall {
            limit: Duration::from_millis(500)
        })
    );
    assert_eq!(stop_record(&ran, "attacker").rule, "limits.wall");
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_by_the_memory_limit() {
    let ran = attack("bomb", &limits("")).await;
    match stopped(&ran) {
        GuestFailure::Limit(LimitExceeded::Memory { limit, requested }) => {
            assert_eq!(*limit, 32 << 20);
            assert!(*requested > 32 << 20);
        }
        other => panic!("{other:?}"),
    }
    let record = stop_record(&ran, "attacker");
    assert_eq!(
        (record.kind, record.rule.as_str()),
        (Kind::Limit, "limits.memory")
    );
    assert!(
        record.detail.starts_with("memory limit of 32MiB exceeded"),
        "{}",
        record.detail
    );
    host_still_serves().await;
}

#[tokio::test]
async fn a_stack_overflow_is_a_clear_trap() {
    let ran = attack("stack", &limits("")).await;
    assert_eq!(stopped(&ran), &GuestFailure::StackOverflow);
    let record = stop_record(&ran, "attacker");
    assert_eq!(record.rule, "engine.max_wasm_stack");
    assert!(record.detail.starts_with("stack overflow"));
    host_still_serves().await;
}

#[tokio::test]
async fn a_shadow_stack_overflow_is_contained() {
    // Rust keeps big locals on a stack inside linear memory; overflowing it
    // runs off the bottom of memory, which the engine's bounds checks stop.
    let ran = attack("shadow-stack", &limits("")).await;
    assert_eq!(
        stopped(&ran),
        &GuestFailure::Trap("wasm trap: out of bounds memory access".into())
    );
    assert_eq!(stop_record(&ran, "attacker").rule, "guest");
    host_still_serves().await;
}

#[tokio::test]
async fn a_panic_reports_the_guests_message() {
    let ran = attack("panic", &limits("")).await;
    match stopped(&ran) {
        GuestFailure::Panic(message) => {
            assert!(
                message.starts_with("the attacker panicked on purpose (at "),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The panic text was captured from stderr into the audit log.
    let stderr = ran
        .records
        .iter()
        .find(|r| r.subject == "attacker/stderr")
        .unwrap();
    assert!(stderr.detail.contains("panicked at"));
    host_still_serves().await;
}

#[tokio::test]
async fn an_oversized_answer_hits_the_output_limit() {
    let ran = attack("answer:100000", &limits("")).await;
    assert_eq!(
        stopped(&ran),
        &GuestFailure::Limit(LimitExceeded::Output {
            limit: 64 << 10,
            size: 100_000
        })
    );
    assert_eq!(stop_record(&ran, "attacker").rule, "limits.output");
}

#[tokio::test]
async fn misbehaving_tools_are_stopped_and_the_agent_carries_on() {
    let tool = guests::ATTACKER_TOOL;
    let policy = limits(&format!(
        r#"
[tools.spin]
component = "{tool}"
[tools.bomb]
component = "{tool}"
[tools.recurse]
component = "{tool}"
[tools.crash]
component = "{tool}"
[tools.flood]
component = "{tool}"
"#
    ));
    let task = r#"calls:[
        {"tool": "spin", "args": "{}"},
        {"tool": "bomb", "args": "{}"},
        {"tool": "recurse", "args": "{}"},
        {"tool": "crash", "args": "{}"},
        {"tool": "flood", "args": "{\"bytes\": 1000000}"},
        {"tool": "flood", "args": "{\"bytes\": 10}"}
    ]"#;
    let ran = attack(task, &policy).await;
    let report = calls_report(&ran);
    let reasons: Vec<&str> = report[..5]
        .iter()
        .map(|r| {
            assert_eq!(r["error"]["kind"], "failed", "{r}");
            r["error"]["reason"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        reasons[0],
        "tool `spin` was stopped: CPU limit of 1s exceeded"
    );
    assert!(reasons[1].starts_with("tool `bomb` was stopped: memory limit of 32MiB exceeded"));
    assert!(reasons[2].starts_with("tool `recurse` was stopped: stack overflow"));
    assert!(
        reasons[3].starts_with(
            "tool `crash` was stopped: the guest panicked: the tool crashed on purpose"
        )
    );
    assert_eq!(
        reasons[4],
        "tool `flood` was stopped: output limit of 64KiB exceeded (the guest returned 976.6KiB)"
    );
    assert_eq!(report[5], json!({"ok": "ffffffffff"}));
    let rules: Vec<&str> = ran
        .records
        .iter()
        .filter(|r| r.kind == Kind::Limit)
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(
        rules,
        [
            "limits.cpu",
            "limits.memory",
            "engine.max_wasm_stack",
            "limits.output"
        ]
    );
}

#[tokio::test]
async fn a_log_flood_cannot_flood_the_audit_log() {
    let ran = attack("log:100000:100", &limits("")).await;
    assert_eq!(ran.answer(), "logged 100000 lines");
    // 64 KiB of 100-byte lines fit; then one refusal, then silence.
    let logs = ran.records.iter().filter(|r| r.kind == Kind::Log).count();
    assert_eq!(logs, 2 * 655 + 2);
    let refusal = ran
        .records
        .iter()
        .find(|r| r.kind == Kind::Log && r.decision == Verdict::Deny)
        .unwrap();
    assert_eq!(refusal.rule, "limits.output");
    assert_eq!(ran.report.logs_dropped, 100_000 - 655);
}

#[tokio::test]
async fn guest_stdout_and_stderr_are_captured_not_printed() {
    let ran = attack("stdio:200000", &limits("")).await;
    assert_eq!(ran.answer(), "wrote to stdio");
    for stream in ["attacker/stdout", "attacker/stderr"] {
        let record = ran.records.iter().find(|r| r.subject == stream).unwrap();
        assert_eq!(record.kind, Kind::Stdio);
        assert_eq!(record.data.as_ref().unwrap()["bytes"], 200_000);
        assert!(
            record.detail.ends_with("more bytes not recorded]"),
            "{}",
            &record.detail[record.detail.len() - 60..]
        );
    }
}

/// More tool calls at once than the engine's pool holds: the calls past it
/// wait for an instance to come free and then run, instead of failing at
/// instantiation ("maximum concurrent limit of 2 for component instances
/// reached"), and no more than the pool runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_instance_pool_wait_their_turn() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Each request is answered after 100 ms; the server counts how many
    // it held at once (each is one tool instance waiting on it).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, m) = (open.clone(), most.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (open, most) = (o.clone(), m.clone());
            tokio::spawn(async move {
                most.fetch_max(open.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let runtime = warden::runtime::Runtime::new(warden::runtime::RuntimeConfig {
        cache_dir: Some(cache_dir().to_path_buf()),
        max_instances: 2,
    })
    .unwrap();
    let policy = policy(&probe_policy(&format!(
        "http = {{ allow = [{{ url = \"http://127.0.0.1:{port}/**\", private = true }}] }}"
    )));
    let gate = Arc::new(warden::gate::Gate::new(
        policy.policy.clone(),
        warden::audit::AuditLog::new("r-pool"),
    ));
    let registry = Arc::new(
        warden::registry::ToolRegistry::load(&runtime, &policy, &gate)
            .await
            .unwrap(),
    );
    let args = json!({ "op": "http", "url": format!("http://127.0.0.1:{port}/x") }).to_string();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (gate, registry, args) = (gate.clone(), registry.clone(), args.clone());
        calls.spawn(async move {
            warden::capability::tools::call(&gate, &registry, None, "probe", &args).await
        });
    }
    while let Some(answer) = calls.join_next().await {
        let text = match answer.unwrap().unwrap() {
            Ok(text) => text.into_inner(),
            Err(error) => panic!("{}", error.into_inner()),
        };
        assert!(text.contains("\"status\":200"), "{text}");
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

/// An agent's instance counts against the pool too, and it never waits
/// for one: with every slot taken (by other runs or calls), a run is
/// refused at once naming the setting, and runs again once one is free.
#[tokio::test]
async fn an_agent_takes_a_slot_of_the_pool_and_is_refused_at_once_when_none_is_free() {
    use std::sync::Arc;
    let runtime = warden::runtime::Runtime::new(warden::runtime::RuntimeConfig {
        cache_dir: Some(cache_dir().to_path_buf()),
        max_instances: 1,
    })
    .unwrap();
    let spec = || warden::run::RunSpec {
        policy: policy("[model]\nallow = [\"scripted\"]\n"),
        agent: warden::load::ComponentSource::File(guests::ROUNDTRIP_AGENT.into()),
        provider: Arc::new(
            warden::provider::ScriptedProvider::parse("s", "[[turn]]\ntext = \"x\"\n").unwrap(),
        ),
        task: "0".into(),
        approver: None,
        approve: Vec::new(),
        approve_from: Vec::new(),
        replay_tools: None,
    };
    let held = runtime.instance_slots().try_take().unwrap();
    let started = std::time::Instant::now();
    let refused = warden::run::run(&runtime, spec(), warden::audit::AuditLog::new("r-full")).await;
    match refused {
        Err(warden::run::RunError::Agent(message)) => {
            assert!(message.contains("max_instances"), "{message}")
        }
        other => panic!("not refused: {:?}", other.map(|r| r.result)),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
    drop(held);
    let report = warden::run::run(&runtime, spec(), warden::audit::AuditLog::new("r-free"))
        .await
        .unwrap();
    assert!(report.result.is_ok(), "{:?}", report.result);
    // Its slot is given back when the run ends.
    assert!(runtime.instance_slots().try_take().is_some());
}
