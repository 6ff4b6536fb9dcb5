//! A tool gets no authority it was not granted: no environment, no files,
//! no network, no view of the host's arguments, and nothing of the agent's.

use crate::harness::*;
use serde_json::Value;
use std::net::TcpListener;

#[tokio::test]
async fn a_tool_has_no_environment_files_or_network() {
    // SAFETY (of the test): set before any thread of ours reads it; a secret
    // in the host's environment must not reach the guest.
    unsafe { std::env::set_var("WARDEN_TEST_SECRET", "hunter2") };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();

    let policy = format!("[tools.snoop]\ncomponent = \"{}\"\n", guests::ATTACKER_TOOL);
    let args = serde_json::json!({ "connect": address.to_string() }).to_string();
    let task = serde_json::json!([{ "tool": "snoop", "args": args }]).to_string();
    let ran = run_agent(
        guests::ATTACKER,
        &policy,
        no_model(),
        &format!("calls:{task}"),
    )
    .await;
    let report = calls_report(&ran);
    let snoop: Value = serde_json::from_str(report[0]["ok"].as_str().unwrap()).unwrap();

    assert_eq!(
        snoop["env"],
        serde_json::json!([]),
        "no environment variables"
    );
    assert_eq!(snoop["args"], serde_json::json!([]), "no arguments");
    for attempt in [
        "read_root",
        "read_cwd",
        "read_passwd",
        "write_tmp",
        "connect",
        "resolve",
    ] {
        assert!(
            snoop[attempt].get("error").is_some(),
            "{attempt} should fail: {snoop}"
        );
    }
    assert!(!ran.answer().contains("hunter2"));
    // The connection attempt never reached the listener.
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    assert!(!std::path::Path::new("/tmp/warden-snoop").exists());
}

#[tokio::test]
async fn each_tool_call_gets_a_fresh_instance() {
    let policy = format!(
        "[tools.counter]\ncomponent = \"{}\"\n",
        guests::ATTACKER_TOOL
    );
    let call = r#"{"tool": "counter", "args": "{}"}"#;
    let task = format!("calls:[{call}, {call}, {call}]");
    let ran = run_agent(guests::ATTACKER, &policy, no_model(), &task).await;
    let counts: Vec<_> = calls_report(&ran).iter().map(|r| r["ok"].clone()).collect();
    // A static counter inside the tool: a reused instance would count up.
    assert_eq!(counts, ["1", "1", "1"]);
}
