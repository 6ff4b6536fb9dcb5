//! A model provider's HTTP API, served on 127.0.0.1 by the test itself:
//! canned replies in order, every request kept for assertions.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One canned answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
    /// Wait this long before answering.
    pub delay: Duration,
}

#[derive(Clone)]
pub enum ReplyBody {
    Json(Value),
    Raw(Vec<u8>),
    /// The request's headers, as JSON (an echo server).
    EchoHeaders,
    /// `count` chunks of `chunk`, one every `every`, with no Content-Length.
    Stream {
        chunk: Vec<u8>,
        count: usize,
        every: Duration,
    },
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: ReplyBody::Json(body),
            delay: Duration::ZERO,
        }
    }

    pub fn raw(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: ReplyBody::Raw(body.into()),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// What the server was sent.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

/// A running server.
pub struct MockModel {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
}

impl MockModel {
    /// Serve `replies` in order; past the last, every request gets a 500
    /// saying so (a test that makes too many calls fails visibly).
    pub async fn start(replies: Vec<Reply>) -> MockModel {
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockModel { url, shared }
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let echoed: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    shared.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let reply = shared.replies.lock().unwrap().pop_front();
    let Some(reply) = reply else {
        return Response::builder()
            .status(500)
            .body(Body::from("the mock model has no more replies"))
            .unwrap();
    };
    tokio::time::sleep(reply.delay).await;
    let mut response = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    let body = match reply.body {
        ReplyBody::Json(value) => {
            response = response.header("content-type", "application/json");
            Body::from(value.to_string())
        }
        ReplyBody::Raw(bytes) => Body::from(bytes),
        ReplyBody::EchoHeaders => Body::from(Value::Object(echoed).to_string()),
        ReplyBody::Stream {
            chunk,
            count,
            every,
        } => {
            let stream = async_stream(chunk, count, every);
            Body::from_stream(stream)
        }
    };
    response.body(body).unwrap()
}

fn async_stream(
    chunk: Vec<u8>,
    count: usize,
    every: Duration,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..count {
            if tx.send(Ok(Bytes::from(chunk.clone()))).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    ReceiverStream(rx)
}

struct ReceiverStream(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// OpenAI: a text answer.
pub fn openai_text(text: &str, usage: Option<(u32, u32)>) -> Reply {
    let mut body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    });
    if let Some((input, output)) = usage {
        body["usage"] = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
    }
    Reply::json(200, body)
}

/// OpenAI: one tool call.
pub fn openai_call(id: &str, name: &str, arguments: Value, usage: (u32, u32)) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1},
        }),
    )
}

/// Anthropic: a text answer.
pub fn anthropic_text(text: &str, usage: (u32, u32)) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": usage.0, "output_tokens": usage.1},
        }),
    )
}

/// Anthropic: text and one tool use.
pub fn anthropic_call(id: &str, name: &str, input: Value, usage: (u32, u32)) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-test",
            "content": [{"type": "text", "text": "I'll compute it."},
                        {"type": "tool_use", "id": id, "name": name, "input": input}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": usage.0, "output_tokens": usage.1},
        }),
    )
}
