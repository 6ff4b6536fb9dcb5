//! `probe`: a tool that tries every side effect it is asked to, and says
//! exactly what happened. The egress, secret and file tests drive it with
//! arguments; what it reports is what a hostile tool could achieve.
//!
//! Operations (`op`): `http` {url, method?, headers?, body?, follow?},
//! `env`, `read` {path}, `write` {path, content}, `list` {path},
//! `hardlink` {target, link}, `entropy` (the time and random bytes),
//! `fields` {count, size} and `open` {path, count} (hold that many header
//! sets or open files), `remember` {value, seek} (what an earlier call
//! left in this instance's memory: see [`remember`]).
//! With `from_file` {path}, `{file}` in any string argument is replaced by
//! that file's contents first.

use serde_json::{Value, json};
use warden_guest::{Tool, ToolSpec};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

struct Probe;

impl Tool for Probe {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "probe",
            "Try a side effect and report the result.",
            json!({ "type": "object" }),
        )]
    }

    fn invoke(_name: String, arguments: String) -> Result<String, String> {
        let mut args: Value = serde_json::from_str(&arguments).map_err(|e| e.to_string())?;
        // `from_file`: `{file}` in any string argument becomes that file's
        // contents (a token the tool found in a granted directory).
        if let Some(path) = args["from_file"].as_str() {
            let contents = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            substitute(&mut args, contents.trim_end());
        }
        let text = |key: &str| args[key].as_str().unwrap_or_default().to_string();
        let result = match args["op"].as_str() {
            Some("http") => {
                let mut url = text("url");
                let follow = args["follow"].as_u64().unwrap_or(0);
                let mut hops = Vec::new();
                for _ in 0..=follow {
                    let answer = http(&url, &args);
                    let location = answer["location"].as_str().map(str::to_string);
                    hops.push(answer);
                    match location {
                        Some(next) => url = next,
                        None => break,
                    }
                }
                json!(hops)
            }
            Some("remember") => remember(&text("value"), &text("seek")),
            Some("entropy") => json!({
                "now": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                "random": wasip2::random::random::get_random_bytes(16),
                "insecure": wasip2::random::insecure::get_insecure_random_bytes(16),
            }),
            Some("env") => json!(std::env::vars().collect::<Vec<_>>()),
            Some("read") => match std::fs::read_to_string(text("path")) {
                Ok(content) => json!({ "ok": content }),
                Err(e) => json!({ "error": e.to_string() }),
            },
            Some("write") => match std::fs::write(text("path"), text("content")) {
                Ok(()) => json!({ "ok": true }),
                Err(e) => json!({ "error": e.to_string() }),
            },
            Some("list") => match std::fs::read_dir(text("path")) {
                Ok(entries) => json!({ "ok": entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>() }),
                Err(e) => json!({ "error": e.to_string() }),
            },
            // Hold `count` header-field sets of `size` bytes each, or
            // `count` open files: how many the host gave, and why it stopped.
            Some("fields") => {
                let size = args["size"].as_u64().unwrap_or(0) as usize;
                let mut held = Vec::new();
                let mut error = None;
                for _ in 0..args["count"].as_u64().unwrap_or(0) {
                    let fields = Fields::new();
                    if let Err(e) = fields.append("x-pad", &vec![b'a'; size]) {
                        error = Some(format!("{e:?}"));
                        break;
                    }
                    held.push(fields);
                }
                json!({ "held": held.len(), "error": error })
            }
            Some("open") => {
                let mut held = Vec::new();
                let mut error = None;
                for _ in 0..args["count"].as_u64().unwrap_or(0) {
                    match std::fs::File::open(text("path")) {
                        Ok(file) => held.push(file),
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                json!({ "held": held.len(), "error": error })
            }
            Some("hardlink") => match std::fs::hard_link(text("target"), text("link")) {
                Ok(()) => json!({ "ok": true }),
                Err(e) => json!({ "error": e.to_string() }),
            },
            other => return Err(format!("unknown op {other:?}")),
        };
        Ok(result.to_string())
    }
}

/// What a call before this one left behind: `LAST` (static data) and,
/// anywhere in linear memory, 4 KiB of `seek` masked (so that the plain
/// text in this call's own arguments does not count). Then leaves `value`
/// behind the same two ways, for a later call to look for. When `seek` is
/// `value`, it is left first: the scan must then see it (the check that
/// the scan works).
fn remember(value: &str, seek: &str) -> Value {
    static LAST: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let mask = |text: &str| -> Vec<u8> {
        text.bytes()
            .map(|b| b ^ 0x5a)
            .cycle()
            .take(if text.is_empty() { 0 } else { 4096 })
            .collect()
    };
    if seek == value {
        std::mem::forget(mask(value));
    }
    let needle = mask(seek);
    let mut seen_in_memory = false;
    if !needle.is_empty() {
        let size = memory_bytes();
        let own = needle.as_ptr() as usize..needle.as_ptr() as usize + needle.len();
        let window = &needle[..64];
        let mut at = 0usize;
        while at + window.len() <= size && !seen_in_memory {
            if !own.contains(&at) {
                // Every address below `memory.size` is readable memory of
                // this instance: what is there is what the host left.
                let bytes = unsafe { core::slice::from_raw_parts(at as *const u8, window.len()) };
                seen_in_memory = bytes == window;
            }
            at += 1;
        }
    }
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let before = std::mem::replace(&mut *last, value.to_string());
    // Leaked on purpose: it stays in this instance's heap.
    std::mem::forget(mask(value));
    json!({ "static": before, "seen_in_memory": seen_in_memory })
}

/// The size of this instance's linear memory (a native build of the test
/// guests, as `cargo test --workspace` makes, has none to scan).
#[cfg(target_arch = "wasm32")]
fn memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}
#[cfg(not(target_arch = "wasm32"))]
fn memory_bytes() -> usize {
    0
}

fn substitute(value: &mut Value, contents: &str) {
    match value {
        Value::String(text) => *text = text.replace("{file}", contents),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, contents)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, contents)),
        _ => {}
    }
}

/// One request; `{status, headers, body, location}` or `{error}`.
fn http(url: &str, args: &Value) -> Value {
    let Some((scheme, rest)) = url.split_once("://") else {
        return json!({ "error": "no scheme" });
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if let Some(map) = args["headers"].as_object() {
        for (name, value) in map {
            let _ = headers.append(name, value.as_str().unwrap_or_default().as_bytes());
        }
    }
    let request = OutgoingRequest::new(headers);
    let method = match args["method"].as_str().unwrap_or("GET") {
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        _ => Method::Get,
    };
    let _ = request.set_method(&method);
    let _ = request.set_scheme(Some(&match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_string()),
    }));
    if request.set_authority(Some(authority)).is_err() {
        return json!({ "error": format!("the host refused the authority {authority:?}") });
    }
    let _ = request.set_path_with_query(Some(path));
    let body = request.body().expect("the body is taken once");
    // Send first, then stream the body: the host reads it as it goes.
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return json!({ "error": code_name(&code) }),
    };
    if let Some(content) = args["body"].as_str() {
        let stream = body.write().expect("the stream is taken once");
        for chunk in content.as_bytes().chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                return json!({ "error": format!("writing the body: {e:?}") });
            }
        }
        drop(stream);
    }
    if let Err(code) = OutgoingBody::finish(body, None) {
        return json!({ "error": code_name(&code) });
    }
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return json!({ "error": code_name(&code) }),
        Some(Err(())) | None => return json!({ "error": "no response" }),
    };
    let status = response.status();
    let mut header_list = Vec::new();
    let mut location = None;
    for (name, value) in response.headers().entries() {
        let value = String::from_utf8_lossy(&value).into_owned();
        if name.eq_ignore_ascii_case("location") && (300..400).contains(&status) {
            location = Some(value.clone());
        }
        header_list.push((name, value));
    }
    let mut bytes = Vec::new();
    let mut error = None;
    if let Ok(incoming) = response.consume()
        && let Ok(stream) = incoming.stream()
    {
        loop {
            match stream.blocking_read(65536) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(wasip2::io::streams::StreamError::Closed) => break,
                Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                    error = Some(match wasip2::http::types::http_error_code(&e) {
                        Some(code) => code_name(&code),
                        None => e.to_debug_string().lines().next().unwrap_or("").to_string(),
                    });
                    break;
                }
            }
        }
    }
    // Reversed copies show what the guest itself received, which the host's
    // redaction of the tool's result would otherwise hide from the test.
    let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
    let headers_reversed: String = format!("{header_list:?}").chars().rev().collect();
    json!({
        "status": status,
        "headers": header_list,
        "body": String::from_utf8_lossy(&bytes),
        "body_reversed": String::from_utf8_lossy(&reversed),
        "headers_reversed": headers_reversed,
        "body_error": error,
        "location": location,
    })
}

/// `HttpRequestDenied`, `HttpResponseBodySize(Some(10000))`, ...
fn code_name(code: &wasip2::http::types::ErrorCode) -> String {
    let text = format!("{code:?}");
    text.strip_prefix("ErrorCode::")
        .unwrap_or(&text)
        .to_string()
}

warden_guest::export_tool!(Probe);

fn main() {}
