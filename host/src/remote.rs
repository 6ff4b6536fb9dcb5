//! Tool components named by URL: which URLs are accepted, how they are
//! downloaded, and the cache that makes a second run offline.
//!
//! A URL component must carry a `sha256` pin (the policy compiler refuses
//! one without). The pin is checked against the downloaded bytes before
//! they are used or written anywhere; a mismatch leaves nothing behind.
//! Verified downloads are kept in `<cache dir>/downloads/<sha256>.wasm`,
//! named by their own hash and hashed again on every read, so a file
//! changed at rest is discarded and downloaded again, never used.
//!
//! Only `https://` is downloaded from, and `http://` to this machine
//! (127.0.0.1, `[::1]`, `localhost`: tests and local registries). No
//! credentials are sent (URLs with a user name or password are refused);
//! redirects are followed at most [`MAX_REDIRECTS`] times and only to URLs
//! that pass the same check; every download has a connect timeout, a
//! timeout for the whole transfer, and a size cap.

use crate::policy::{ByteSize, HumanDuration};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Largest component downloaded. Tool components are usually well under
/// 10 MiB (one bundling a Python interpreter is about 40 MiB); the whole
/// download is held in memory to be hashed before use, so this also bounds
/// what a hostile server can make the host allocate.
pub const MAX_DOWNLOAD: u64 = 256 * 1024 * 1024;

/// Longest wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a whole download may take, redirects included: a server that
/// sends a byte a second is cut off here, not waited for.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Most redirects followed for one download.
pub const MAX_REDIRECTS: usize = 5;

/// Whether a `component` value is written as a URL rather than a path or
/// `builtin:NAME`: it starts with a scheme of two or more characters and a
/// colon (one letter is a Windows drive, `C:\tools\x.wasm`).
pub fn is_url(text: &str) -> bool {
    let Some((scheme, _)) = text.trim_start().split_once(':') else {
        return false;
    };
    scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !scheme.eq_ignore_ascii_case("builtin")
}

/// Why a URL is not downloaded from: what is wrong, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What is wrong.
    pub message: String,
    /// What to do instead.
    pub help: String,
}

/// The URL `text` names, if warden downloads from it: `https://`, or
/// `http://` to this machine, with a host and no user name or password.
pub fn check_url(text: &str) -> Result<Url, Refused> {
    let refused = |message: String, help: &str| Refused {
        message,
        help: help.into(),
    };
    let url = Url::parse(text).map_err(|e| {
        refused(
            format!("`{text}` is not a valid URL: {e}"),
            "write an https:// URL, a path relative to this policy file, or `builtin:NAME`",
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(refused(
                format!(
                    "components are not downloaded over plain http from `{}`",
                    url.host_str().unwrap_or("")
                ),
                "use https (plain http is allowed only for a server on this machine: 127.0.0.1, [::1] or localhost)",
            ));
        }
        "file" => {
            return Err(refused(
                "`file:` URLs are not supported".into(),
                "write the path itself, relative to this policy file (or absolute)",
            ));
        }
        scheme => {
            return Err(refused(
                format!("`{scheme}:` is not a supported component source"),
                "a component is a path relative to this policy file, `builtin:NAME`, or an https:// URL",
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refused(
            format!("`{text}` names no host"),
            "write the URL in full: https://HOST/PATH",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused(
            "a component URL may not contain a user name or password".into(),
            "warden sends no credentials with downloads; the `sha256` pin, not the server, is what makes the download safe",
        ));
    }
    Ok(url)
}

/// Whether a redirect from `from` to `to` may be followed: `to` passes
/// [`check_url`], and plain http to this machine is reached only from this
/// machine (a remote server cannot point the host at a local service).
pub fn check_redirect(from: &Url, to: &Url) -> Result<(), String> {
    let refuse = |why: String| format!("refusing the redirect from {from} to {to}: {why}");
    check_url(to.as_str()).map_err(|r| refuse(r.message))?;
    if to.scheme() == "http" && !is_loopback(from) {
        return Err(refuse(
            "a server elsewhere may not redirect to this machine".into(),
        ));
    }
    Ok(())
}

/// Whether a URL names this machine: `localhost`, 127.0.0.0/8 or `[::1]`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A component's bytes, downloaded or read from the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Their SHA-256, hex.
    pub sha256: String,
    /// Whether they came from the download cache (no request was made).
    pub from_cache: bool,
}

/// Why a URL component could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The download's hash is not the pin. Nothing was kept.
    Mismatch {
        /// The URL asked for.
        url: String,
        /// The pin.
        pinned: String,
        /// The hash of what the server sent.
        actual: String,
    },
    /// The download failed or was refused.
    Failed(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Mismatch {
                url,
                pinned,
                actual,
            } => write!(
                f,
                "`{url}` does not match its pin:\n  sha256 in the policy:  {pinned}\n  sha256 of the download: {actual}\nit was not kept"
            ),
            FetchError::Failed(why) => f.write_str(why),
        }
    }
}

/// Downloads URL components, within limits, through a content-addressed
/// cache.
#[derive(Debug, Clone)]
pub struct Downloader {
    /// Where verified downloads are kept, by SHA-256 (`None`: nowhere,
    /// every run downloads again, as with `--no-cache`).
    pub dir: Option<PathBuf>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest a whole download may take, redirects included.
    pub timeout: Duration,
    /// Largest download accepted.
    pub max_size: u64,
    /// Use only the cache, never the network (a replay downloads nothing).
    pub offline: bool,
}

impl Downloader {
    /// A downloader keeping verified downloads in `dir`, with the default
    /// limits.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Downloader {
            dir,
            connect_timeout: CONNECT_TIMEOUT,
            timeout: DOWNLOAD_TIMEOUT,
            max_size: MAX_DOWNLOAD,
            offline: false,
        }
    }

    /// Where a verified download with this SHA-256 is kept.
    pub fn cached_path(&self, sha256: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{sha256}.wasm")))
    }

    /// The component at `url`. With a `pin`, the cache is tried first and a
    /// download must match the pin before it is returned or cached.
    /// Without one (`warden tools inspect`), it is always downloaded, and
    /// cached under its own hash: the cache is content-addressed and every
    /// read is checked against the pin that asks for it, so keeping it
    /// trusts nothing, and a run pinned to what was inspected need not
    /// download again.
    pub async fn fetch(&self, url: &Url, pin: Option<&str>) -> Result<Fetched, FetchError> {
        check_url(url.as_str())
            .map_err(|r| FetchError::Failed(format!("{}; {}", r.message, r.help)))?;
        if let Some(pin) = pin
            && let Some(bytes) = self.read_cached(pin)
        {
            return Ok(Fetched {
                bytes,
                sha256: pin.to_string(),
                from_cache: true,
            });
        }
        if self.offline {
            return Err(FetchError::Failed(format!(
                "{url} is not in the download cache, and a replay downloads nothing; `warden run` (or `warden tools inspect`) caches it"
            )));
        }
        let bytes = self.download(url).await.map_err(FetchError::Failed)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(pin) = pin
            && pin != sha256
        {
            return Err(FetchError::Mismatch {
                url: url.to_string(),
                pinned: pin.to_string(),
                actual: sha256,
            });
        }
        if let Some(path) = self.cached_path(&sha256)
            && let Err(error) = store(&path, &bytes)
        {
            tracing::warn!(
                "could not keep the download of {url} at {}: {error}",
                path.display()
            );
        }
        Ok(Fetched {
            bytes,
            sha256,
            from_cache: false,
        })
    }

    /// The cached bytes pinned to `sha256`, if they are there and still
    /// hash to it; a file that does not is removed.
    fn read_cached(&self, sha256: &str) -> Option<Vec<u8>> {
        let path = self.cached_path(sha256)?;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!("downloading again: cannot read {}: {error}", path.display());
                return None;
            }
        };
        if hex::encode(Sha256::digest(&bytes)) == sha256 {
            return Some(bytes);
        }
        tracing::warn!(
            "downloading again: {} was changed since it was cached (its hash is no longer its name)",
            path.display()
        );
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {error}", path.display());
        }
        None
    }

    /// Download `url`, following allowed redirects, within the limits.
    async fn download(&self, url: &Url) -> Result<Vec<u8>, String> {
        let work = async {
            let mut current = url.clone();
            let mut redirects = 0;
            loop {
                let response = self
                    .client(&current)?
                    .get(current.clone())
                    .send()
                    .await
                    .map_err(|e| transport_error(&current, &e, self.connect_timeout))?;
                let status = response.status();
                if status.is_redirection() {
                    let location = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .ok_or_else(|| {
                            format!("{current} answered {status} without a usable Location")
                        })?;
                    let next = current.join(location).map_err(|e| {
                        format!("{current} redirects to `{location}`, which is not a URL: {e}")
                    })?;
                    if redirects == MAX_REDIRECTS {
                        return Err(format!(
                            "more than {MAX_REDIRECTS} redirects (the last to {next})"
                        ));
                    }
                    check_redirect(&current, &next)?;
                    redirects += 1;
                    current = next;
                    continue;
                }
                if !status.is_success() {
                    return Err(format!("{current} answered {status}"));
                }
                return self.read_body(&current, response).await;
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "the download did not finish within {} (the download timeout)",
                HumanDuration(self.timeout)
            )),
        }
    }

    fn client(&self, url: &Url) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")));
        if is_loopback(url) {
            // A server on this machine is never reached through a proxy.
            builder = builder.no_proxy();
        }
        builder
            .build()
            .map_err(|e| format!("cannot set up HTTP: {e}"))
    }

    /// The body, refusing more than `max_size` (by `Content-Length` before
    /// reading, and while reading for bodies that do not say).
    async fn read_body(
        &self,
        url: &Url,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, String> {
        let limit = self.max_size;
        let too_large = || {
            format!(
                "{url} sends more than {} (the download size limit): refused",
                ByteSize(limit)
            )
        };
        let declared = response.content_length();
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(url, &e, self.connect_timeout))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A reqwest error in words, with its causes.
fn transport_error(url: &Url, error: &reqwest::Error, connect_timeout: Duration) -> String {
    let address = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    if error.is_connect() && error.is_timeout() {
        return format!(
            "cannot connect to {address} within {}",
            HumanDuration(connect_timeout)
        );
    }
    let mut causes = Vec::new();
    let mut next: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    let why = if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    };
    if error.is_connect() {
        format!("cannot connect to {address}: {why}")
    } else {
        format!("the download from {address} failed: {why}")
    }
}

/// Write atomically (a temporary file, then a rename): a reader sees the
/// whole file or none.
fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::runtime::cache::create_private_dir(dir)?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let temp = dir.join(format!(".tmp-{}", hex::encode(nonce)));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths_and_builtins() {
        assert!(is_url("https://example.com/x.wasm"));
        assert!(is_url("http://127.0.0.1:8080/x.wasm"));
        assert!(is_url("file:///tmp/x.wasm"));
        assert!(is_url("ftp://example.com/x.wasm"));
        assert!(!is_url("builtin:calc"));
        assert!(!is_url("tools/x.wasm"));
        assert!(!is_url("/abs/x.wasm"));
        assert!(!is_url("C:\\tools\\x.wasm"));
        assert!(!is_url("./a:b.wasm"));
    }

    #[test]
    fn only_https_and_loopback_http_without_credentials() {
        assert!(check_url("https://example.com/x.wasm").is_ok());
        for local in [
            "http://127.0.0.1:9/x.wasm",
            "http://[::1]:9/x.wasm",
            "http://localhost/x.wasm",
        ] {
            assert!(check_url(local).is_ok(), "{local}");
        }
        let plain = check_url("http://example.com/x.wasm").unwrap_err();
        assert!(plain.message.contains("plain http"), "{plain:?}");
        assert!(plain.help.contains("use https"), "{plain:?}");
        let file = check_url("file:///tmp/x.wasm").unwrap_err();
        assert!(file.message.contains("`file:` URLs are not supported"));
        let ftp = check_url("ftp://example.com/x.wasm").unwrap_err();
        assert!(ftp.message.contains("`ftp:` is not a supported"));
        for credentials in [
            "https://user@example.com/x.wasm",
            "https://user:secret@example.com/x.wasm",
            "https://:secret@example.com/x.wasm",
        ] {
            let error = check_url(credentials).unwrap_err();
            assert!(error.message.contains("user name or password"), "{error:?}");
        }
        assert!(check_url("https://exa mple.com/").is_err());
    }

    #[test]
    fn redirects_stay_on_https_and_off_this_machine() {
        let remote = Url::parse("https://example.com/a.wasm").unwrap();
        let local = Url::parse("http://127.0.0.1:9/a.wasm").unwrap();
        let https = Url::parse("https://cdn.example.net/a.wasm").unwrap();
        let http = Url::parse("http://cdn.example.net/a.wasm").unwrap();
        assert!(check_redirect(&remote, &https).is_ok());
        assert!(check_redirect(&local, &local).is_ok());
        assert!(check_redirect(&local, &https).is_ok());
        let error = check_redirect(&remote, &http).unwrap_err();
        assert!(error.contains("plain http"), "{error}");
        let error = check_redirect(&remote, &local).unwrap_err();
        assert!(
            error.contains("may not redirect to this machine"),
            "{error}"
        );
    }
}
