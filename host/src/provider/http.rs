//! The one way model providers reach the network: a JSON POST with the
//! policy's timeout, response size limit and retry budget, no redirects,
//! and error messages that say what the provider said.

use super::ProviderError;
use crate::policy::ProviderLimits;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use std::time::{Duration, SystemTime};

/// Longest wait between attempts, whatever the provider asks for. A
/// provider asking for more gets no retry: the error says how long it
/// asked for.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// First backoff when the provider does not say how long to wait; doubled
/// on each retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest time to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A provider's HTTP endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// For error messages: `openai`, `anthropic`, ...
    provider: &'static str,
    client: reqwest::Client,
    limits: ProviderLimits,
}

/// A key that must never be printed: `Debug` shows only where it came
/// from.
#[derive(Clone)]
pub struct ApiKey {
    source: String,
    value: String,
}

impl ApiKey {
    /// A key read from `source` (an environment variable's name, or
    /// `file PATH`).
    pub fn new(source: impl Into<String>, value: impl Into<String>) -> Self {
        ApiKey {
            source: source.into(),
            value: value.into(),
        }
    }

    /// Where it came from, e.g. `OPENAI_API_KEY`: safe to print.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The value, for the one header that carries it and for redaction.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// A header value marked sensitive (HTTP/2 never indexes it).
    fn header(&self, prefix: &str) -> Result<HeaderValue, ProviderError> {
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", self.value)).map_err(|_| {
            ProviderError::Config(format!(
                "the API key from {} contains characters that cannot be sent in an HTTP header (a newline?)",
                self.source
            ))
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}, redacted)", self.source)
    }
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// None (a local server).
    None,
    /// `Authorization: Bearer KEY`.
    Bearer(&'a ApiKey),
    /// The key in a header of its own, e.g. `x-api-key`.
    Header(&'static str, &'a ApiKey),
}

impl Endpoint {
    /// An endpoint for `provider` with `limits`. `loopback` turns off
    /// proxies (a local server must not be reached through one).
    pub fn new(
        provider: &'static str,
        limits: ProviderLimits,
        loopback: bool,
    ) -> Result<Self, ProviderError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(limits.timeout))
            .timeout(limits.timeout)
            // A redirect would carry the key to an address nobody chose
            // (reqwest keeps custom headers such as x-api-key across hosts).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")));
        if loopback {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| ProviderError::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Endpoint {
            provider,
            client,
            limits,
        })
    }

    /// POST `body` to `url` and parse the answer as JSON, retrying on 429,
    /// 408, 5xx and failed connections with backoff that honours
    /// `Retry-After`.
    pub async fn post_json(
        &self,
        url: &Url,
        auth: Auth<'_>,
        extra_headers: &[(&'static str, &'static str)],
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ProviderError> {
        let mut headers = HeaderMap::new();
        match auth {
            Auth::None => {}
            Auth::Bearer(key) => {
                headers.insert(reqwest::header::AUTHORIZATION, key.header("Bearer ")?);
            }
            Auth::Header(name, key) => {
                headers.insert(HeaderName::from_static(name), key.header("")?);
            }
        }
        for (name, value) in extra_headers {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let body = serde_json::to_vec(body).map_err(|e| ProviderError::Other(e.to_string()))?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let sent = self
                .client
                .post(url.clone())
                .headers(headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    let error = self.transport_error(url, &error);
                    // A request that never connected cost nothing: try
                    // again. A timeout may have been answered and billed.
                    if matches!(error, ProviderError::Connect { .. })
                        && attempt <= self.limits.max_retries
                    {
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    return Err(error);
                }
            };
            let status = response.status();
            if status.is_success() {
                let bytes = self.read_body(url, response).await?;
                return serde_json::from_slice(&bytes).map_err(|error| ProviderError::Malformed {
                    provider: self.provider,
                    error: error.to_string(),
                    start: snippet(&bytes),
                });
            }
            if status.is_redirection() {
                let to = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string();
                return Err(ProviderError::Redirect {
                    provider: self.provider,
                    status: status.as_u16(),
                    to,
                });
            }
            let wait = retry_after(response.headers());
            let retryable = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
                || status.is_server_error();
            // Read what the provider said, but never more than the limit.
            let said = match self.read_body(url, response).await {
                Ok(bytes) => provider_message(&bytes),
                Err(_) => String::new(),
            };
            let error = ProviderError::Status {
                provider: self.provider,
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or(""),
                message: said,
                attempts: attempt,
            };
            if !retryable || attempt > self.limits.max_retries {
                return Err(error);
            }
            let wait = match wait {
                Some(asked) if asked > MAX_RETRY_WAIT => {
                    return Err(ProviderError::WaitTooLong {
                        provider: self.provider,
                        asked,
                        last: Box::new(error),
                    });
                }
                Some(asked) => asked,
                None => backoff(attempt),
            };
            tracing::info!(
                provider = self.provider,
                status = status.as_u16(),
                ?wait,
                attempt,
                "retrying model request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The body, refusing more than the limit (by `Content-Length` before
    /// reading, and while reading for bodies that do not say).
    async fn read_body(
        &self,
        url: &Url,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, ProviderError> {
        let limit = self.limits.max_response;
        let too_large = || ProviderError::TooLarge {
            provider: self.provider,
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(url, &e))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, url: &Url, error: &reqwest::Error) -> ProviderError {
        let address = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        if error.is_timeout() {
            ProviderError::Timeout {
                provider: self.provider,
                after: self.limits.timeout,
            }
        } else if error.is_connect() {
            ProviderError::Connect {
                provider: self.provider,
                address,
                error: source_chain(error),
            }
        } else {
            ProviderError::Other(format!(
                "{} request to {address} failed: {}",
                self.provider,
                source_chain(error)
            ))
        }
    }
}

/// The error and its causes, without the URL reqwest prefixes (it could
/// carry a query string).
fn source_chain(error: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut next: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = next {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    if out.is_empty() {
        out = match error.url() {
            Some(url) => error.to_string().replace(url.as_str(), "<url>"),
            None => error.to_string(),
        };
    }
    out
}

/// `500ms`, `1s`, `2s`, ... up to 8 s, with up to 25% jitter so retrying
/// clients spread out.
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1).min(4));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// How long the provider asks to wait: `retry-after-ms` (OpenAI), then
/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms.min(1e9) / 1000.0));
    }
    let value = text(RETRY_AFTER.as_str())?;
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The human part of an error body: OpenAI's `error.message`, Anthropic's
/// `error.message`, or the start of the text.
fn provider_message(bytes: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let message = value
            .pointer("/error/message")
            .or_else(|| value.get("error").filter(|e| e.is_string()))
            .or_else(|| value.get("message"))
            .and_then(|m| m.as_str());
        if let Some(message) = message {
            return crate::capability::brief(message, 500);
        }
    }
    snippet(bytes)
}

/// The start of a body, for error messages.
fn snippet(bytes: &[u8]) -> String {
    crate::capability::brief(String::from_utf8_lossy(bytes).trim(), 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = SystemTime::now() + Duration::from_secs(30);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(
            backoff(1) >= Duration::from_millis(500) && backoff(1) < Duration::from_millis(700)
        );
        assert!(backoff(3) >= Duration::from_secs(2));
        assert!(backoff(40) <= Duration::from_secs(10));
    }

    #[test]
    fn provider_messages_are_found() {
        assert_eq!(
            provider_message(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#),
            "Incorrect API key provided"
        );
        assert_eq!(
            provider_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "Overloaded"
        );
        assert_eq!(
            provider_message(b"<html>Bad Gateway</html>"),
            "<html>Bad Gateway</html>"
        );
    }

    #[test]
    fn keys_do_not_print() {
        let key = ApiKey::new("OPENAI_API_KEY", "sk-secret");
        assert_eq!(format!("{key:?}"), "ApiKey(OPENAI_API_KEY, redacted)");
    }
}
