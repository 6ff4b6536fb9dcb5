//! The desk over HTTP: a JSON API ([`router`]) and the page a person
//! answers on ([`page`]).
//!
//! Threat model. Everything an ask shows is guest- or model-written text
//! (tool arguments, reasons, values, audit log lines): the page inserts it
//! only with `textContent`, never as markup, and every response forbids
//! what an injection would need anyway: `Content-Security-Policy:
//! default-src 'none'; script-src 'self'; style-src 'self'; connect-src
//! 'self'; frame-ancestors 'none'` (no inline script, no framing),
//! `X-Content-Type-Options: nosniff`. The API authenticates with a bearer
//! token only (the page keeps the token typed in `sessionStorage` and sends
//! it as `Authorization`), and no cookie is ever set or read, so another
//! site cannot make a browser answer an ask (no CSRF). The page's own
//! files hold no data and need no token; the API routes must be mounted
//! behind the server's bearer authentication.

use super::{AnswerError, Desk, parse_answer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The largest answer body read (`{"answer": "once"}` is 18 bytes).
pub const MAX_ANSWER_BODY: usize = 4096;

/// The policy every response of the page and the API carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /approvals` (the pending asks, JSON) and `POST /approvals/{id}`
/// (`{"answer": "once"|"run"|"deny"}`). Mount it behind bearer auth
/// ([`crate::serve::router_with`]): a caller sees and answers only the
/// asks of its own runs, and is recorded as who answered. Without a
/// caller (no auth layer) the routes refuse every request.
pub fn router(desk: Desk) -> Router {
    let mut api = Router::new();
    for (_, path, route) in table() {
        api = api.route(path, route);
    }
    api.layer(DefaultBodyLimit::max(MAX_ANSWER_BODY))
        .with_state(desk)
        .layer(axum::middleware::map_response(secure))
}

/// The API's routes and handlers, as docs/openapi.json writes them (the
/// OpenAPI test checks the two against each other).
fn table() -> Vec<(
    &'static str,
    &'static str,
    axum::routing::MethodRouter<Desk>,
)> {
    vec![
        ("get", "/approvals", get(list)),
        ("post", "/approvals/{id}", post(answer)),
    ]
}

/// The approvals API's routes: (method, path), lowercase methods.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The page: `GET /ui` (HTML), `/ui/app.js`, `/ui/app.css`. Static, holding
/// no data: it needs no token (the person types theirs into it).
pub fn page() -> Router {
    Router::new()
        .route("/ui", get(|| asset("text/html; charset=utf-8", PAGE_HTML)))
        .route("/ui/", get(|| asset("text/html; charset=utf-8", PAGE_HTML)))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", PAGE_JS)),
        )
        .route(
            "/ui/app.css",
            get(|| asset("text/css; charset=utf-8", PAGE_CSS)),
        )
        .layer(axum::middleware::map_response(secure))
}

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/app.css");

async fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// The headers every response carries (see the module's threat model).
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

type Caller = Option<axum::Extension<crate::serve::auth::Caller>>;

fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "the approvals API is served only behind the server's authentication",
    )
}

async fn list(State(desk): State<Desk>, caller: Caller) -> Response {
    let Some(axum::Extension(caller)) = caller else {
        return unauthenticated();
    };
    let mut pending = desk.pending();
    pending.retain(|ask| caller.token.may_answer(&ask.owner));
    axum::Json(json!({ "pending": pending })).into_response()
}

/// Errors as the rest of the serve API writes them.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

async fn answer(
    State(desk): State<Desk>,
    Path(id): Path<String>,
    caller: Caller,
    body: Bytes,
) -> Response {
    let Some(axum::Extension(caller)) = caller else {
        return unauthenticated();
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!(
                    "the body is not JSON ({e}): send {{\"answer\": \"once\"}}, \"run\" or \"deny\""
                ),
            );
        }
    };
    let Some(text) = parsed.get("answer").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the body needs a string field `answer`: \"once\", \"run\" or \"deny\"",
        );
    };
    let Some(approval) = parse_answer(text) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!(
                "`answer` is `{}`: it must be \"once\", \"run\" or \"deny\"",
                crate::capability::brief(&crate::policy::printable(text), 40)
            ),
        );
    };
    // Only an ask of a run whose owner this token answers for; another's
    // is "not pending", as one that never was.
    let Some(owner) = desk
        .owner_of(&id)
        .filter(|owner| caller.token.may_answer(owner))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not-found",
            AnswerError::NotPending(crate::capability::brief(&id, 64)).to_string(),
        );
    };
    match desk.answer(&id, approval, caller.name(), Some(&owner)) {
        Ok(ask) => axum::Json(json!({ "answered": ask.id, "run": ask.run, "answer": text }))
            .into_response(),
        Err(e @ AnswerError::NotPending(_)) => {
            error(StatusCode::NOT_FOUND, "not-found", e.to_string())
        }
    }
}
