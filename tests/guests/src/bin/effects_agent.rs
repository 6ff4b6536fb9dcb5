//! An agent with side effects of its own, for the replay tests: a replay
//! must perform none of them. `run(task)` reads the task as a JSON list of
//! operations and answers with a JSON list of what each gave:
//!
//! - `{"http": URL}`: a GET through `wasi:http` (the agent's own egress).
//! - `{"write": PATH, "content": TEXT}`: write a file (a granted directory).
//! - `{"env": NAME}`: read an environment variable.
//! - `{"chat": TEXT}`: ask the model, with one user message TEXT; with
//!   `"nonce": true` the message ends with 8 random bytes, so every run
//!   sends a different prompt.

use serde_json::{Value, json};
use warden_guest::Agent;
use warden_guest::model::{self, ChatRequest, Message};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

struct Effects;

impl Agent for Effects {
    fn run(task: String) -> Result<String, String> {
        let ops: Vec<Value> = serde_json::from_str(&task).map_err(|e| e.to_string())?;
        let mut report = Vec::new();
        for op in &ops {
            let result = if let Some(url) = op["http"].as_str() {
                get(url)
            } else if let Some(path) = op["write"].as_str() {
                match std::fs::write(path, op["content"].as_str().unwrap_or_default()) {
                    Ok(()) => json!({ "ok": true }),
                    Err(e) => json!({ "error": e.to_string() }),
                }
            } else if let Some(name) = op["env"].as_str() {
                match std::env::var(name) {
                    Ok(value) => json!({ "ok": value }),
                    Err(e) => json!({ "error": e.to_string() }),
                }
            } else if let Some(text) = op["chat"].as_str() {
                let mut text = text.to_string();
                if op["nonce"].as_bool() == Some(true) {
                    let nonce = wasip2::random::random::get_random_bytes(8);
                    text.push_str(&format!(" {nonce:?}"));
                }
                match model::chat(&ChatRequest::new(vec![Message::user(&text)])) {
                    Ok(response) => json!({ "ok": response.message.content }),
                    Err(e) => json!({ "error": e.reason() }),
                }
            } else {
                json!({ "error": format!("unknown op {op}") })
            };
            report.push(result);
        }
        Ok(Value::Array(report).to_string())
    }
}

/// GET `url`: the status, or the error code's name.
fn get(url: &str) -> Value {
    let Some((scheme, rest)) = url.split_once("://") else {
        return json!({ "error": "no scheme" });
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&match scheme {
        "https" => Scheme::Https,
        _ => Scheme::Http,
    }));
    if request.set_authority(Some(authority)).is_err() {
        return json!({ "error": "bad authority" });
    }
    let _ = request.set_path_with_query(Some(path));
    let Ok(body) = request.body() else {
        return json!({ "error": "no body" });
    };
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return json!({ "error": format!("{code:?}") }),
    };
    if let Err(code) = OutgoingBody::finish(body, None) {
        return json!({ "error": format!("{code:?}") });
    }
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => json!({ "status": response.status() }),
        Some(Ok(Err(code))) => json!({ "error": format!("{code:?}") }),
        Some(Err(())) | None => json!({ "error": "no response" }),
    }
}

warden_guest::export_agent!(Effects);

fn main() {}
