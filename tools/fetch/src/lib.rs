//! `fetch`: GET a URL over HTTP(S) and return its text.
//!
//! The request goes out through wasi:http's `outgoing-handler`, so the host
//! decides what may be fetched: a URL the policy does not allow comes back
//! as a wasi:http error code, which this tool turns into a sentence a model
//! can act on. Redirects are followed (each hop is a new request the host
//! checks). HTML is reduced to readable text ([`html`]); other text is
//! returned as it is; binary content is not returned, only its size.
//!
//! The result is JSON:
//! `{"url", "status", "content_type", "title"?, "text", "truncated", "note"?}`.

pub mod content;
pub mod html;
pub mod http;
pub mod url;

use serde::{Deserialize, Serialize};
use serde_json::json;
use warden_guest::{Tool, ToolSpec, tool};

use crate::content::Kind;
use crate::http::{Failure, Head};
use crate::url::Url;

/// Bytes of the body read when the call does not say.
pub const DEFAULT_MAX_BYTES: u64 = 200_000;
/// Most bytes of the body a call may ask for; larger requests are capped.
pub const MAX_BYTES: u64 = 2_000_000;
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

struct Fetch;

impl Tool for Fetch {
    fn describe() -> Vec<ToolSpec> {
        vec![ToolSpec::new(
            "fetch",
            "Fetch a URL with an HTTP GET and return its content as text, in JSON: \
             {url, status, content_type, title, text, truncated, note}. HTML pages are \
             reduced to readable text (scripts, styles and markup removed); JSON, XML and \
             other text are returned as they are; binary content (images, PDFs, archives) \
             is not returned, only its size. Redirects are followed. Only URLs the \
             sandbox's policy allows can be fetched.",
            json!({
                "type": "object",
                "properties": {
                    "url": {
                        "type": "string",
                        "description": "An absolute http:// or https:// URL, e.g. \
                                        `https://example.com/page`.",
                        "maxLength": url::MAX_URL_LEN,
                    },
                    "max_bytes": {
                        "type": "integer",
                        "description": "Read at most this many bytes of the response body; \
                                        `truncated` says when there was more.",
                        "minimum": 1,
                        "maximum": MAX_BYTES,
                        "default": DEFAULT_MAX_BYTES,
                    },
                },
                "required": ["url"],
                "additionalProperties": false,
            }),
        )]
    }

    fn invoke(name: String, arguments: String) -> Result<String, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Args {
            url: String,
            max_bytes: Option<u64>,
        }
        if name != "fetch" {
            return Err(format!("this component provides `fetch`, not `{name}`"));
        }
        let args: Args = tool::parse_arguments(&name, &arguments)?;
        let max_bytes = match args.max_bytes {
            Some(0) => return Err("`max_bytes` must be at least 1".to_string()),
            Some(n) => n.min(MAX_BYTES),
            None => DEFAULT_MAX_BYTES,
        };
        let url = url::parse(&args.url)?;
        let fetched = fetch(url, max_bytes as usize)?;
        Ok(serde_json::to_string(&fetched).expect("a struct of strings and numbers serializes"))
    }
}

warden_guest::export_tool!(Fetch);

/// The tool's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fetched {
    /// The URL fetched, after redirects.
    pub url: String,
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if the server sent one.
    pub content_type: Option<String>,
    /// An HTML page's `<title>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The content as text; empty for binary content.
    pub text: String,
    /// Whether the body was longer than `max_bytes` and cut there.
    pub truncated: bool,
    /// Why `text` is empty, when it is for a reason other than an empty body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// GET `url`, following redirects, and read at most `max_bytes` of the
/// final response's body.
fn fetch(mut url: Url, max_bytes: usize) -> Result<Fetched, String> {
    let mut redirects = 0;
    loop {
        let response = http::send(&url).map_err(|f| failure(&url, f, false))?;
        let head = http::head(&response);
        if let (true, Some(location)) = (is_redirect(head.status), &head.location) {
            if redirects == MAX_REDIRECTS {
                return Err(format!(
                    "fetching {url} failed: it redirected more than {MAX_REDIRECTS} times \
                     (last to `{location}`); fetch the final URL directly"
                ));
            }
            drop(response);
            url = url::resolve(&url, location).map_err(|e| {
                format!("{url} redirected to `{location}`, which cannot be fetched: {e}")
            })?;
            redirects += 1;
            continue;
        }
        // Binary content of a known size is not read at all.
        let skip_body = head.content_encoding.is_some()
            || (content::declared(head.content_type.as_deref()) == Some(Kind::Binary)
                && head.content_length.is_some());
        let (body, truncated) = if skip_body {
            (Vec::new(), false)
        } else {
            http::read_body(response, max_bytes).map_err(|f| failure(&url, f, true))?
        };
        return Ok(render(&url, &head, &body, truncated));
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// A failed request in words, naming the URL.
fn failure(url: &Url, failure: Failure, reading_body: bool) -> String {
    let reason = match failure {
        Failure::Http(wasip2::http::types::ErrorCode::HttpResponseBodySize(Some(limit)))
            if reading_body && limit > 1 =>
        {
            format!(
                "the response is larger than the sandbox's policy allows ({limit} bytes); \
                 ask for less with `max_bytes` below {limit}"
            )
        }
        Failure::Http(code) => http::describe(&code),
        Failure::Other(reason) => reason,
    };
    format!("fetching {url} failed: {reason}")
}

/// The result for a response with this head and (possibly truncated) body.
pub fn render(url: &Url, head: &Head, body: &[u8], truncated: bool) -> Fetched {
    let mut fetched = Fetched {
        url: url.to_string(),
        status: head.status,
        content_type: head.content_type.clone(),
        title: None,
        text: String::new(),
        truncated,
        note: None,
    };
    if let Some(encoding) = &head.content_encoding {
        fetched.note = Some(format!(
            "the server sent the content compressed ({encoding}), which fetch cannot decode"
        ));
        return fetched;
    }
    let kind = content::classify(head.content_type.as_deref(), body);
    let declared_charset = head.content_type.as_deref().and_then(content::charset);
    match kind {
        Kind::Binary => {
            let what = head
                .content_type
                .as_deref()
                .map(content::media_type)
                .unwrap_or_else(|| "no content type".to_string());
            let size = match (head.content_length, truncated) {
                (Some(length), _) => format!("{length} bytes"),
                (None, false) => format!("{} bytes", body.len()),
                (None, true) => format!("more than {} bytes", body.len()),
            };
            fetched.note = Some(format!(
                "the content is binary ({what}, {size}); fetch returns text only"
            ));
            // The size is the whole answer: nothing was cut from the text.
            fetched.truncated = false;
        }
        Kind::Text => {
            fetched.text = content::decode(body, declared_charset.as_deref());
        }
        Kind::Html => {
            let charset = declared_charset.or_else(|| content::meta_charset(body));
            let page = content::decode(body, charset.as_deref());
            fetched.title = html::title(&page);
            fetched.text = html::html_to_text(&page);
        }
    }
    fetched
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, content_type: Option<&str>) -> Head {
        Head {
            status,
            content_type: content_type.map(str::to_string),
            ..Head::default()
        }
    }

    #[test]
    fn renders_html() {
        let url = url::parse("https://example.com/a").unwrap();
        let page = b"<html><head><title>Hi &amp; bye</title></head>\
                     <body><h1>Head</h1><p>Body &mdash; text</p></body></html>";
        let fetched = render(
            &url,
            &head(200, Some("text/html; charset=utf-8")),
            page,
            false,
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&fetched).unwrap()).unwrap();
        assert_eq!(
            json,
            json!({
                "url": "https://example.com/a",
                "status": 200,
                "content_type": "text/html; charset=utf-8",
                "title": "Hi & bye",
                "text": "Head\n\nBody — text",
                "truncated": false,
            })
        );
    }

    #[test]
    fn renders_text_and_binary() {
        let url = url::parse("https://example.com/data").unwrap();
        let fetched = render(
            &url,
            &head(404, Some("application/json")),
            b"{\"a\":1}",
            true,
        );
        assert_eq!(fetched.text, "{\"a\":1}");
        assert_eq!(fetched.status, 404);
        assert!(fetched.truncated);
        assert_eq!(fetched.note, None);

        let fetched = render(&url, &head(200, None), b"\x89PNG\0\0\0", false);
        assert_eq!(fetched.text, "");
        assert_eq!(
            fetched.note.as_deref(),
            Some("the content is binary (no content type, 7 bytes); fetch returns text only")
        );

        let png = Head {
            content_length: Some(12345),
            ..head(200, Some("image/png"))
        };
        let fetched = render(&url, &png, b"", false);
        assert_eq!(
            fetched.note.as_deref(),
            Some("the content is binary (image/png, 12345 bytes); fetch returns text only")
        );
        let json = serde_json::to_string(&fetched).unwrap();
        assert!(!json.contains("title"), "{json}");

        let fetched = render(&url, &head(200, Some("application/pdf")), &[1; 10], true);
        assert!(fetched.note.unwrap().contains("more than 10 bytes"));
        assert!(!fetched.truncated);

        let gzip = Head {
            content_encoding: Some("gzip".into()),
            ..head(200, Some("text/html"))
        };
        let fetched = render(&url, &gzip, b"", false);
        assert!(fetched.note.unwrap().contains("compressed (gzip)"));
    }

    #[test]
    fn latin1_pages() {
        let url = url::parse("http://example.com/").unwrap();
        let page = b"<meta charset=iso-8859-1><p>caf\xe9</p>";
        let fetched = render(&url, &head(200, Some("text/html")), page, false);
        assert_eq!(fetched.text, "café");
    }

    #[test]
    fn error_codes_in_words() {
        use wasip2::http::types::ErrorCode;
        let url = url::parse("https://internal.example/").unwrap();
        let say = |code, reading| failure(&url, Failure::Http(code), reading);
        assert_eq!(
            say(ErrorCode::HttpRequestDenied, false),
            "fetching https://internal.example/ failed: the sandbox's policy does not allow \
             this URL; only the hosts the policy grants can be fetched, so do not retry it"
        );
        assert!(say(ErrorCode::DestinationIpProhibited, false).contains("private or loopback"));
        assert!(say(ErrorCode::ConnectionReadTimeout, false).contains("too slow"));
        assert_eq!(
            say(ErrorCode::HttpResponseBodySize(Some(1000)), false),
            "fetching https://internal.example/ failed: the response is larger than the \
             sandbox's policy allows (1000 bytes)"
        );
        assert!(
            say(ErrorCode::HttpResponseBodySize(Some(1000)), true)
                .contains("`max_bytes` below 1000")
        );
        assert!(
            say(
                ErrorCode::InternalError(Some("denied by rule x".into())),
                false
            )
            .ends_with("the request failed: denied by rule x")
        );
    }

    #[test]
    fn tool_interface() {
        let call = |args: &str| Fetch::invoke("fetch".into(), args.into());
        assert_eq!(
            call(r#"{"url": "ftp://example.com/"}"#).unwrap_err(),
            "only http:// and https:// URLs can be fetched, not `ftp:` URLs"
        );
        assert!(
            call(r#"{"url": "x", "max_bytes": 0}"#)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            call(r#"{"uri": "https://example.com"}"#)
                .unwrap_err()
                .contains("unknown field `uri`")
        );
        assert!(call(r#"{}"#).unwrap_err().contains("missing field `url`"));
        assert!(
            Fetch::invoke("get".into(), "{}".into())
                .unwrap_err()
                .contains("not `get`")
        );
        let spec = &Fetch::describe()[0];
        assert_eq!(spec.name, "fetch");
        let schema: serde_json::Value = serde_json::from_str(&spec.parameters_schema).unwrap();
        assert_eq!(schema["required"], json!(["url"]));
        assert_eq!(schema["properties"]["max_bytes"]["maximum"], MAX_BYTES);
    }
}
