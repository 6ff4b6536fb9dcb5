//! Record a run's model exchanges, and replay them offline.
//!
//! A recording is JSON Lines: a header naming the provider, then one line
//! per model call with the request exactly as it left the host (after
//! redaction: no secret is ever recorded) and the provider's answer or
//! error. Replaying answers each request with the recorded answer, after
//! checking the request is the one recorded; the first that differs stops
//! the replay with a readable diff.

use super::{BoxFuture, ModelProvider, ProviderError};
use crate::chat::{ChatRequest, ChatResponse};
use crate::secrets::Clean;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Format version written in the header.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    warden_recording: u32,
    provider: String,
    default_model: String,
}

#[derive(Serialize, Deserialize)]
struct Exchange {
    request: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<ChatResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Wraps a provider and writes every exchange to a file, flushed per call.
pub struct RecordingProvider {
    inner: std::sync::Arc<dyn ModelProvider>,
    path: PathBuf,
    file: Mutex<File>,
}

impl RecordingProvider {
    /// Record `inner`'s exchanges to `path` (created or truncated).
    pub fn create(inner: std::sync::Arc<dyn ModelProvider>, path: &Path) -> std::io::Result<Self> {
        let mut file = File::create(path)?;
        let header = Header {
            warden_recording: FORMAT,
            provider: inner.describe(),
            default_model: inner.default_model().to_string(),
        };
        writeln!(file, "{}", serde_json::to_string(&header)?)?;
        file.flush()?;
        Ok(RecordingProvider {
            inner,
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    fn write(&self, exchange: &Exchange) -> Result<(), ProviderError> {
        let line =
            serde_json::to_string(exchange).map_err(|e| ProviderError::Other(e.to_string()))?;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(file, "{line}")
            .and_then(|()| file.flush())
            .map_err(|e| {
                ProviderError::Other(format!(
                    "cannot write the recording {}: {e}",
                    self.path.display()
                ))
            })
    }
}

impl ModelProvider for RecordingProvider {
    fn default_model(&self) -> &str {
        self.inner.default_model()
    }

    fn describe(&self) -> String {
        format!(
            "{}, recorded to {}",
            self.inner.describe(),
            self.path.display()
        )
    }

    fn api_key(&self) -> Option<&super::ApiKey> {
        self.inner.api_key()
    }

    fn chat<'a>(
        &'a self,
        request: &'a Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        self.inner.chat(request)
    }

    /// The exchange is written as it crossed the boundary: the request as
    /// sent and the answer or error as the agent got them, both redacted.
    fn record(
        &self,
        request: &Clean<ChatRequest>,
        answer: &Result<Clean<ChatResponse>, Clean<String>>,
    ) -> Result<(), ProviderError> {
        let exchange = Exchange {
            request: serde_json::to_value(&**request)
                .map_err(|e| ProviderError::Other(e.to_string()))?,
            response: answer.as_ref().ok().map(|r| (**r).clone()),
            error: answer.as_ref().err().map(|e| (**e).clone()),
        };
        self.write(&exchange)
    }
}

/// Answers from a recording.
#[derive(Debug)]
pub struct ReplayProvider {
    file: String,
    provider: String,
    default_model: String,
    exchanges: Vec<(Value, Result<ChatResponse, String>)>,
    next: AtomicUsize,
}

impl ReplayProvider {
    /// Read a recording.
    pub fn open(path: &Path) -> Result<Self, String> {
        let name = path.display().to_string();
        let file =
            File::open(path).map_err(|e| format!("cannot read the recording {name}: {e}"))?;
        let mut lines = BufReader::new(file).lines().enumerate();
        let bad = |line: usize, why: String| {
            format!(
                "{name}:{line}: {why}\nhelp: a recording is written by `warden run --record FILE`"
            )
        };
        let header: Header = match lines.next() {
            Some((_, Ok(line))) => serde_json::from_str(&line)
                .map_err(|e| bad(1, format!("not a warden recording header: {e}")))?,
            Some((_, Err(e))) => return Err(bad(1, e.to_string())),
            None => return Err(bad(1, "the file is empty".into())),
        };
        if header.warden_recording != FORMAT {
            return Err(bad(
                1,
                format!(
                    "recording format {} is not supported (this warden reads format {FORMAT})",
                    header.warden_recording
                ),
            ));
        }
        let mut exchanges = Vec::new();
        for (index, line) in lines {
            let line = line.map_err(|e| bad(index + 1, e.to_string()))?;
            if line.trim().is_empty() {
                continue;
            }
            let exchange: Exchange =
                serde_json::from_str(&line).map_err(|e| bad(index + 1, e.to_string()))?;
            let answer = match (exchange.response, exchange.error) {
                (Some(response), None) => Ok(response),
                (None, Some(error)) => Err(error),
                _ => {
                    return Err(bad(
                        index + 1,
                        "an exchange needs exactly one of `response` and `error`".into(),
                    ));
                }
            };
            exchanges.push((exchange.request, answer));
        }
        Ok(ReplayProvider {
            file: name,
            provider: header.provider,
            default_model: header.default_model,
            exchanges,
            next: AtomicUsize::new(0),
        })
    }

    /// Exchanges in the recording.
    pub fn len(&self) -> usize {
        self.exchanges.len()
    }

    /// Whether the recording has no exchanges.
    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }
}

impl ModelProvider for ReplayProvider {
    fn default_model(&self) -> &str {
        &self.default_model
    }

    fn describe(&self) -> String {
        format!(
            "replay:{} ({} exchanges recorded from {})",
            self.file,
            self.exchanges.len(),
            self.provider
        )
    }

    fn chat<'a>(
        &'a self,
        request: &'a crate::secrets::Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let result = match self.exchanges.get(index) {
            None => Err(ProviderError::ReplayExhausted {
                file: self.file.clone(),
                recorded: self.exchanges.len(),
                asked: index + 1,
            }),
            Some((recorded, answer)) => {
                let now = serde_json::to_value(request).unwrap_or(Value::Null);
                match first_difference(recorded, &now, String::new()) {
                    Some(diff) => Err(ProviderError::ReplayDiverged {
                        file: self.file.clone(),
                        call: index + 1,
                        diff,
                    }),
                    None => answer.clone().map_err(ProviderError::Other),
                }
            }
        };
        Box::pin(std::future::ready(result))
    }
}

/// The first place where `now` differs from `recorded`, as
/// `path: recorded X, now Y`.
pub fn first_difference(recorded: &Value, now: &Value, path: String) -> Option<String> {
    let at = |path: &str| {
        if path.is_empty() {
            "the request".to_string()
        } else {
            path.to_string()
        }
    };
    match (recorded, now) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get(key) {
                    Some(other) => {
                        if let Some(diff) = first_difference(value, other, here) {
                            return Some(diff);
                        }
                    }
                    None => return Some(format!("{here}: recorded {}, now missing", show(value))),
                }
            }
            b.iter()
                .find(|(key, _)| !a.contains_key(*key))
                .map(|(key, value)| {
                    let here = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    format!("{here}: not recorded, now {}", show(value))
                })
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                if let Some(diff) = first_difference(x, y, format!("{path}[{i}]")) {
                    return Some(diff);
                }
            }
            (a.len() != b.len()).then(|| {
                format!(
                    "{}: recorded {} item(s), now {}",
                    at(&path),
                    a.len(),
                    b.len()
                )
            })
        }
        (Value::String(a), Value::String(b)) if a != b => Some(string_difference(&at(&path), a, b)),
        (a, b) if a != b => Some(format!(
            "{}: recorded {}, now {}",
            at(&path),
            show(a),
            show(b)
        )),
        _ => None,
    }
}

/// Two texts that differ, shown around the first differing character.
fn string_difference(path: &str, a: &str, b: &str) -> String {
    let common = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let mut start = common.saturating_sub(30);
    while !a.is_char_boundary(start) {
        start -= 1;
    }
    let excerpt = |s: &str| {
        let tail: String = s[start..].chars().take(70).collect();
        let more = s[start..].chars().count() > 70;
        format!(
            "{}{:?}{}",
            if start > 0 { "…" } else { "" },
            tail,
            if more { "…" } else { "" }
        )
    };
    format!(
        "{path} differs at character {}:\n    recorded: {}\n    now:      {}",
        a[..common].chars().count() + 1,
        excerpt(a),
        excerpt(b)
    )
}

fn show(value: &Value) -> String {
    crate::capability::brief(&value.to_string(), 80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs_name_the_first_difference() {
        let a = json!({"model": "m", "messages": [{"role": "user", "content": "What is 6 * 7? Please answer."}]});
        let b = json!({"model": "m", "messages": [{"role": "user", "content": "What is 6 * 8? Please answer."}]});
        let diff = first_difference(&a, &b, String::new()).unwrap();
        assert!(
            diff.starts_with("messages[0].content differs at character 13"),
            "{diff}"
        );
        assert!(diff.contains(r#"recorded: "What is 6 * 7?"#), "{diff}");
        let c = json!({"model": "m", "messages": []});
        let diff = first_difference(&a, &c, String::new()).unwrap();
        assert_eq!(diff, "messages: recorded 1 item(s), now 0");
        let d = json!({"model": "n", "messages": []});
        assert_eq!(
            first_difference(&c, &d, String::new()).unwrap(),
            r#"model differs at character 1:
    recorded: "m"
    now:      "n""#
        );
        assert_eq!(first_difference(&a, &a, String::new()), None);
    }
}
