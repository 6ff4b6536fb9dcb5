//! A policy and a request from the same input: the text before the first
//! NUL byte is the policy; the rest is a tool call's arguments (as JSON if
//! it parses, else as a string) and the data the session has seen. Every
//! tool of the policy, and an unknown one, is decided with it, before and
//! after the session gathers labels (results labelled by the policy's
//! label paths, labels flowing through calls). Deciding must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::chat::{Message, Role, Usage};
use warden::policy::{Policy, Request, Session};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let policy_text = String::from_utf8_lossy(&data[..split]);
    let rest = data.get(split + 1..).unwrap_or_default();
    let Ok(policy) = Policy::parse("fuzz.toml", &policy_text) else {
        return;
    };
    let rest_text = String::from_utf8_lossy(rest).into_owned();
    let arguments: serde_json::Value = serde_json::from_slice(rest)
        .unwrap_or_else(|_| serde_json::Value::String(rest_text.clone()));

    let mut session = Session::default();
    session.observe_task(&rest_text);
    let names: Vec<String> = policy.tools.keys().cloned().chain(["unknown".to_string()]).collect();
    let messages = [Message {
        role: Role::User,
        content: rest_text.clone(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    }];
    for round in 0..2 {
        for name in &names {
            let request = Request::Tool { name, arguments: &arguments, schema: None };
            if let warden::policy::Decision::Allow { .. } = policy.decide(&request, &session) {
                session.record(&policy, &request);
            }
            // Labels flow through the call; the result (the input, often
            // JSON) is labelled by the policy's label paths.
            let inherited = session.flow_into_call(&policy, name, &arguments);
            session.observe_tool_call(&arguments);
            let origin = warden::policy::ResultOrigin { inherited: &inherited, ..Default::default() };
            session.observe_tool_result_from(&policy, name, &rest_text, &origin);
        }
        for model in policy.model.allow.iter().map(String::as_str).chain(["other"]) {
            let request = Request::Model { model, messages: &messages, estimated_tokens: rest.len() as u64 };
            let _ = policy.decide(&request, &session);
            session.observe_model_output(&policy, &rest_text, Usage { input_tokens: 10, output_tokens: round }, model);
        }
        let _ = policy.model.redact(&rest_text);
        // Egress decisions on a URL made of the input.
        let target = warden::policy::HttpTarget {
            scheme: if round == 0 { "https".into() } else { "http".into() },
            host: rest_text.chars().take(64).collect::<String>().to_ascii_lowercase(),
            port: 443,
            path: format!("/{rest_text}"),
        };
        for name in &names {
            for method in ["GET", "POST"] {
                let request = Request::Http { tool: Some(name), method, target: &target };
                let _ = policy.decide(&request, &session);
            }
        }
    }
});
