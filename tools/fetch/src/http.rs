//! The one place `fetch` talks to the host: a GET through wasi:http's
//! `outgoing-handler`, and reading the response body through wasi:io.
//!
//! The host decides whether the request may go out (allowed hosts, private
//! addresses, sizes, timeouts) and says no with a wasi:http `error-code`,
//! which [`describe`] turns into a sentence. These calls compile on every
//! target but only work inside a component.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingRequest, RequestOptions,
    Scheme as WasiScheme, http_error_code,
};
use wasip2::io::streams::StreamError;

use crate::url::{Scheme, Url};

const USER_AGENT: &str = concat!("warden-fetch/", env!("CARGO_PKG_VERSION"));
const ACCEPT: &str = "text/html, text/plain;q=0.9, application/json;q=0.9, */*;q=0.5";
/// Bytes asked of the stream per read.
const CHUNK: usize = 64 * 1024;
/// Timeouts asked of the host, in nanoseconds, so a stalled server becomes
/// an answer ("too slow") rather than the tool running out its wall time.
/// The host may cap them further.
const CONNECT_TIMEOUT: u64 = 20_000_000_000;
const FIRST_BYTE_TIMEOUT: u64 = 60_000_000_000;
const BETWEEN_BYTES_TIMEOUT: u64 = 30_000_000_000;

/// Why a request or a body read failed.
#[derive(Debug)]
pub enum Failure {
    /// The host's or the network's answer, as wasi:http reports it.
    Http(ErrorCode),
    /// Anything else, already in words.
    Other(String),
}

/// What `fetch` needs from a response's status line and headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`, when it is not `identity`.
    pub content_encoding: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<u64>,
    /// `Location`, for redirects.
    pub location: Option<String>,
}

/// Send a GET for `url` and wait for the response's head.
pub fn send(url: &Url) -> Result<IncomingResponse, Failure> {
    let headers = Fields::from_list(&[
        ("user-agent".to_string(), USER_AGENT.as_bytes().to_vec()),
        ("accept".to_string(), ACCEPT.as_bytes().to_vec()),
    ])
    .unwrap_or_else(|_| Fields::new());
    let request = OutgoingRequest::new(headers);
    let refused = |what: &str| Failure::Other(format!("the host refused the request's {what}"));
    request
        .set_method(&Method::Get)
        .map_err(|()| refused("method"))?;
    let scheme = match url.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| refused("scheme"))?;
    request
        .set_authority(Some(&url.authority))
        .map_err(|()| refused(&format!("host `{}`", url.authority)))?;
    request
        .set_path_with_query(Some(&url.path_and_query))
        .map_err(|()| refused(&format!("path `{}`", url.path_and_query)))?;
    // Timeouts a host does not support are left to the host.
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let _ = options.set_first_byte_timeout(Some(FIRST_BYTE_TIMEOUT));
    let _ = options.set_between_bytes_timeout(Some(BETWEEN_BYTES_TIMEOUT));
    // No body is taken: wasi:http sends an empty one.
    let future = outgoing_handler::handle(request, Some(options)).map_err(Failure::Http)?;
    loop {
        match future.get() {
            Some(Ok(Ok(response))) => return Ok(response),
            Some(Ok(Err(code))) => return Err(Failure::Http(code)),
            Some(Err(())) => {
                return Err(Failure::Other(
                    "the response was already taken (a bug in fetch)".to_string(),
                ));
            }
            None => future.subscribe().block(),
        }
    }
}

/// The status and the headers `fetch` uses.
pub fn head(response: &IncomingResponse) -> Head {
    let headers = response.headers();
    let first = |name: &str| {
        headers
            .get(name)
            .into_iter()
            .next()
            .map(|value| String::from_utf8_lossy(&value).trim().to_string())
    };
    Head {
        status: response.status(),
        content_type: first("content-type"),
        content_encoding: first("content-encoding")
            .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity")),
        content_length: first("content-length").and_then(|l| l.parse().ok()),
        location: first("location"),
    }
}

/// Read at most `limit` bytes of the body; `true` when there was more.
pub fn read_body(response: IncomingResponse, limit: usize) -> Result<(Vec<u8>, bool), Failure> {
    let no_body = || Failure::Other("the response has no readable body".to_string());
    // Dropped in reverse order: the stream before the body before the
    // response, as wasi:http requires of child resources.
    let body = response.consume().map_err(|()| no_body())?;
    let stream = body.stream().map_err(|()| no_body())?;
    let mut bytes = Vec::new();
    // One byte past the limit tells whether there was more.
    while bytes.len() <= limit {
        let want = (limit + 1 - bytes.len()).min(CHUNK);
        match stream.blocking_read(want as u64) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(error)) => {
                return Err(match http_error_code(&error) {
                    Some(code) => Failure::Http(code),
                    None => Failure::Other(format!(
                        "reading the response failed: {}",
                        error.to_debug_string()
                    )),
                });
            }
        }
    }
    let truncated = bytes.len() > limit;
    bytes.truncate(limit);
    Ok((bytes, truncated))
}

/// A wasi:http error code in words a model can act on.
pub fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => {
            "the sandbox's policy does not allow this URL; only the hosts the policy grants \
             can be fetched, so do not retry it"
                .to_string()
        }
        ErrorCode::DestinationIpProhibited => {
            "the address is private or loopback and the sandbox's policy does not allow it; \
             fetch a public URL instead"
                .to_string()
        }
        ErrorCode::HttpResponseBodySize(limit) => format!(
            "the response is larger than the sandbox's policy allows{}",
            limit.map_or(String::new(), |n| format!(" ({n} bytes)"))
        ),
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            "the server was too slow to answer (timed out); try again later or another URL"
                .to_string()
        }
        ErrorCode::ConnectionTimeout => {
            "the server was too slow to accept the connection (timed out); check the host \
             and port, or try again later"
                .to_string()
        }
        ErrorCode::ConnectionWriteTimeout => {
            "sending the request timed out; try again later".to_string()
        }
        ErrorCode::DnsTimeout => "looking up the host name timed out; try again later".to_string(),
        ErrorCode::DnsError(payload) => format!(
            "the host name could not be resolved{}; check its spelling",
            payload
                .rcode
                .as_deref()
                .map_or(String::new(), |rcode| format!(" ({rcode})"))
        ),
        ErrorCode::DestinationNotFound => {
            "the host was not found; check the host name in the URL".to_string()
        }
        ErrorCode::DestinationUnavailable => {
            "the server is unavailable; try again later".to_string()
        }
        ErrorCode::DestinationIpUnroutable => {
            "the server's address cannot be reached from the sandbox".to_string()
        }
        ErrorCode::ConnectionRefused => {
            "the server refused the connection; check the host and port".to_string()
        }
        ErrorCode::ConnectionTerminated => {
            "the server closed the connection before answering; try again later".to_string()
        }
        ErrorCode::ConnectionLimitReached => {
            "too many connections are open; try again later".to_string()
        }
        ErrorCode::TlsProtocolError | ErrorCode::TlsAlertReceived(_) => {
            "the TLS (https) handshake with the server failed".to_string()
        }
        ErrorCode::TlsCertificateError => {
            "the server's TLS certificate is not valid for this host".to_string()
        }
        ErrorCode::HttpRequestUriInvalid => "the URL is not valid".to_string(),
        ErrorCode::HttpRequestUriTooLong => "the URL is too long".to_string(),
        ErrorCode::HttpRequestMethodInvalid
        | ErrorCode::HttpRequestLengthRequired
        | ErrorCode::HttpRequestBodySize(_)
        | ErrorCode::HttpRequestHeaderSectionSize(_)
        | ErrorCode::HttpRequestHeaderSize(_)
        | ErrorCode::HttpRequestTrailerSectionSize(_)
        | ErrorCode::HttpRequestTrailerSize(_) => {
            format!("the request was refused ({code:?})")
        }
        ErrorCode::HttpResponseIncomplete => {
            "the server's response ended before it was complete; try again later".to_string()
        }
        ErrorCode::HttpResponseHeaderSectionSize(_) | ErrorCode::HttpResponseHeaderSize(_) => {
            "the server's response headers are too large".to_string()
        }
        ErrorCode::HttpResponseTrailerSectionSize(_) | ErrorCode::HttpResponseTrailerSize(_) => {
            "the server's response trailers are too large".to_string()
        }
        ErrorCode::HttpResponseTransferCoding(coding)
        | ErrorCode::HttpResponseContentCoding(coding) => format!(
            "the server sent the response in an encoding fetch cannot read{}",
            coding
                .as_deref()
                .map_or(String::new(), |c| format!(" ({c})"))
        ),
        ErrorCode::HttpUpgradeFailed | ErrorCode::HttpProtocolError => {
            "the server's answer is not valid HTTP".to_string()
        }
        ErrorCode::LoopDetected => "the request loops back on itself".to_string(),
        ErrorCode::ConfigurationError => {
            "the sandbox's HTTP configuration refused the request".to_string()
        }
        ErrorCode::InternalError(Some(message)) => format!("the request failed: {message}"),
        ErrorCode::InternalError(None) => "the request failed".to_string(),
    }
}
