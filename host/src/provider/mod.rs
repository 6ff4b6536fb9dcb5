//! Model providers: where the host sends the chat requests it allowed.
//!
//! A provider works on host types ([`crate::chat`]), never WIT types, and
//! never sees the policy: the gate has decided before a provider is called.
//! Providers own their endpoints and keys; nothing of them reaches a guest.
//!
//! | spec | provider |
//! |---|---|
//! | `openai:MODEL` | OpenAI Chat Completions, key from `OPENAI_API_KEY` |
//! | `anthropic:MODEL` | Anthropic Messages, key from `ANTHROPIC_API_KEY` |
//! | `openai-compatible:URL#MODEL` | any Chat Completions server (Ollama, vLLM, ...); key only if named |
//! | `openai:URL#MODEL`, `anthropic:URL#MODEL` | the same APIs at another address |
//! | `scripted:FILE` | a file of model turns, replayed in order |
//! | `replay:FILE` | a recording made with `warden run --record FILE` |

mod anthropic;
mod http;
mod openai;
mod replay;
mod scripted;

pub use anthropic::AnthropicProvider;
pub use http::{ApiKey, Endpoint, MAX_RETRY_WAIT};
pub use openai::{Flavor, OpenAiProvider};
pub use replay::{RecordingProvider, ReplayProvider, first_difference};
pub use scripted::{SCRIPTED_MODEL, ScriptedProvider};

use crate::chat::{ChatRequest, ChatResponse};
use crate::policy::ProviderLimits;
use crate::secrets::Clean;
use reqwest::Url;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, so providers can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that answers chat requests.
pub trait ModelProvider: Send + Sync {
    /// The model that answers requests naming none.
    fn default_model(&self) -> &str;

    /// What this provider is, for transcripts and audit records, e.g.
    /// `scripted:demo.script.toml (3 turns)`. Never includes a secret.
    fn describe(&self) -> String;

    /// The key it sends, so the host can redact it from prompts.
    fn api_key(&self) -> Option<&ApiKey> {
        None
    }

    /// Answer one request. It has passed the boundary's redaction (only
    /// [`crate::secrets::Secrets::clean`] makes a `Clean` value).
    fn chat<'a>(
        &'a self,
        request: &'a Clean<ChatRequest>,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;

    /// See one exchange as it crossed the boundary, both sides redacted
    /// (the answer, or the provider's error text), e.g. to record it. An
    /// error fails the call.
    fn record(
        &self,
        _request: &Clean<ChatRequest>,
        _answer: &Result<Clean<ChatResponse>, Clean<String>>,
    ) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Why a provider could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The scripted model ran out of turns.
    #[error(
        "the model script {script} has {turns} turn(s) and the agent asked for turn {asked}; add turns to the script or make the agent stop sooner"
    )]
    ScriptExhausted {
        /// The script file.
        script: String,
        /// Turns in the script.
        turns: usize,
        /// The turn asked for (1-based).
        asked: usize,
    },
    /// The provider answered with an error status.
    #[error("{provider} answered {status} {reason}{}{}",
        if message.is_empty() { String::new() } else { format!(": {message}") },
        if *attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() })]
    Status {
        /// Which provider.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// Its reason phrase.
        reason: &'static str,
        /// What the provider said.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider asked to wait longer than the host waits.
    #[error("{last}; it asked to wait {}s before retrying, longer than warden waits ({}s)", asked.as_secs(), MAX_RETRY_WAIT.as_secs())]
    WaitTooLong {
        /// Which provider.
        provider: &'static str,
        /// How long it asked for.
        asked: Duration,
        /// The answer that asked.
        last: Box<ProviderError>,
    },
    /// No answer within the policy's `[model] timeout`.
    #[error("{provider} did not answer within {} (`[model] timeout`)", humantime::format_duration(*after))]
    Timeout {
        /// Which provider.
        provider: &'static str,
        /// The limit.
        after: Duration,
    },
    /// No connection.
    #[error("cannot connect to {provider} at {address}: {error}")]
    Connect {
        /// Which provider.
        provider: &'static str,
        /// scheme://host:port.
        address: String,
        /// Why.
        error: String,
    },
    /// The answer is larger than `[model] max_response`.
    #[error(
        "{provider}'s answer is larger than {limit} bytes (`[model] max_response`); it was not read"
    )]
    TooLarge {
        /// Which provider.
        provider: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The answer is not what the API promises.
    #[error("{provider}'s answer is not a valid response: {error} (it starts: {start})")]
    Malformed {
        /// Which provider.
        provider: &'static str,
        /// What is wrong.
        error: String,
        /// The start of the body.
        start: String,
    },
    /// A redirect, which the host never follows for model calls.
    #[error(
        "{provider} answered {status}, a redirect to {to}; warden does not follow redirects for model calls (they would carry the API key elsewhere): use the final address as the base URL"
    )]
    Redirect {
        /// Which provider.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// Location.
        to: String,
    },
    /// This run's request differs from the recording's.
    #[error(
        "the run differs from the recording {file} at model call {call}:\n  {diff}\nhelp: the agent, its task, the policy or a tool result changed since the recording was made"
    )]
    ReplayDiverged {
        /// The recording.
        file: String,
        /// Which call (1-based).
        call: usize,
        /// Where they differ.
        diff: String,
    },
    /// The recording has no more exchanges.
    #[error("the recording {file} has {recorded} model call(s) and the agent made call {asked}")]
    ReplayExhausted {
        /// The recording.
        file: String,
        /// Exchanges recorded.
        recorded: usize,
        /// The call asked for (1-based).
        asked: usize,
    },
    /// The provider is set up wrong.
    #[error("{0}")]
    Config(String),
    /// Anything else the provider reports.
    #[error("{0}")]
    Other(String),
}

/// Why `--model SPEC` could not be turned into a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderSpecError {
    /// Unknown scheme before the `:`, or a malformed spec.
    #[error(
        "{0}\nhelp: use `openai:MODEL`, `anthropic:MODEL`, `openai-compatible:URL#MODEL` (Ollama, vLLM, ...), `scripted:FILE` or `replay:FILE`"
    )]
    Spec(String),
    /// A file could not be read.
    #[error("cannot read {what} {path}: {error}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The API key is missing or unusable.
    #[error("{0}")]
    Key(String),
    /// The script file is malformed.
    #[error("{0}")]
    Script(#[from] crate::diagnostic::SourceError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Where the API key comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeySource {
    /// The provider's usual variable (`OPENAI_API_KEY`,
    /// `ANTHROPIC_API_KEY`); none for `openai-compatible`.
    #[default]
    Default,
    /// This environment variable.
    Env(String),
    /// This file (its contents, trailing newline removed).
    File(PathBuf),
    /// No key at all: a spec a client gave, naming a server the operator
    /// did not vouch for with a key.
    None,
}

/// How to build a provider from a spec.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// The API key's source.
    pub key: KeySource,
    /// Timeout, size limit, retries.
    pub limits: ProviderLimits,
    /// Relative file names in the spec are relative to this.
    pub base_dir: PathBuf,
}

/// A provider spec, parsed but not built (nothing read, no key looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `scripted:FILE`.
    Scripted(String),
    /// `replay:FILE`.
    Replay(String),
    /// An HTTP API.
    Http {
        /// Which API.
        api: Api,
        /// Its base URL.
        base: Url,
        /// The default model.
        model: String,
    },
}

/// The HTTP APIs warden speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `openai:`.
    OpenAi,
    /// `openai-compatible:`.
    OpenAiCompatible,
    /// `anthropic:`.
    Anthropic,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::OpenAiCompatible => "openai-compatible",
            Api::Anthropic => "anthropic",
        }
    }

    /// Where the API is reached when a spec names no base URL.
    fn default_base(self) -> Option<&'static str> {
        match self {
            Api::OpenAi => Some("https://api.openai.com/v1"),
            Api::Anthropic => Some("https://api.anthropic.com"),
            Api::OpenAiCompatible => None,
        }
    }

    /// Whether `base` is this API's own server (the one its usual key
    /// variable is for).
    pub fn is_own_base(self, base: &Url) -> bool {
        self.default_base()
            .and_then(|own| Url::parse(own).ok())
            .is_some_and(|own| own == *base)
    }

    /// The variable the key is read from unless another source is named.
    fn default_key_env(self) -> Option<&'static str> {
        match self {
            Api::OpenAi => Some("OPENAI_API_KEY"),
            Api::Anthropic => Some("ANTHROPIC_API_KEY"),
            // Never send a well-known key to a server nobody vouched for.
            Api::OpenAiCompatible => None,
        }
    }
}

/// Parse a spec such as `openai:gpt-4o-mini`. The error says what is
/// wrong (without the list of forms, which [`ProviderSpecError::Spec`]
/// adds).
pub fn parse_spec(spec: &str) -> Result<Spec, String> {
    let Some((scheme, rest)) = spec.split_once(':') else {
        return Err(format!("`{spec}` names no provider"));
    };
    let api = match scheme {
        "scripted" | "replay" if rest.is_empty() => {
            return Err(format!("`{scheme}:` needs a file"));
        }
        "scripted" => return Ok(Spec::Scripted(rest.to_string())),
        "replay" => return Ok(Spec::Replay(rest.to_string())),
        "openai" => Api::OpenAi,
        "openai-compatible" => Api::OpenAiCompatible,
        "anthropic" => Api::Anthropic,
        other => {
            let known = [
                "openai",
                "anthropic",
                "openai-compatible",
                "scripted",
                "replay",
            ];
            return Err(match crate::diagnostic::closest(other, known) {
                Some(known) => format!("unknown model provider `{other}`: did you mean `{known}`?"),
                None => format!("unknown model provider `{other}`"),
            });
        }
    };
    let (base, model) = match rest.rsplit_once('#') {
        Some((url, model)) if url.contains("://") => (url, model),
        _ => match api.default_base() {
            Some(own) => (own, rest),
            None => {
                return Err(format!(
                    "`{spec}` needs a base URL and a model: `openai-compatible:http://127.0.0.1:11434/v1#llama3.1`"
                ));
            }
        },
    };
    if model.is_empty() {
        return Err(format!("`{spec}` names no model"));
    }
    let base = Url::parse(base).map_err(|e| format!("`{base}` is not a URL: {e}"))?;
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        return Err(format!(
            "`{base}`: model providers are reached over http or https"
        ));
    }
    Ok(Spec::Http {
        api,
        base,
        model: model.to_string(),
    })
}

/// Build a provider from a spec such as `openai:gpt-4o-mini`.
pub fn from_spec(
    spec: &str,
    options: &ProviderOptions,
) -> Result<Arc<dyn ModelProvider>, ProviderSpecError> {
    match parse_spec(spec).map_err(ProviderSpecError::Spec)? {
        Spec::Scripted(file) => {
            let path = options.base_dir.join(file);
            let text =
                crate::load::read_text(&path, crate::load::MAX_SCRIPT_FILE).map_err(|error| {
                    ProviderSpecError::Read {
                        what: "the model script",
                        path: path.display().to_string(),
                        error,
                    }
                })?;
            Ok(Arc::new(ScriptedProvider::parse(
                &path.display().to_string(),
                &text,
            )?))
        }
        Spec::Replay(file) => Ok(Arc::new(
            ReplayProvider::open(&options.base_dir.join(file)).map_err(ProviderSpecError::Other)?,
        )),
        Spec::Http { api, base, model } => {
            let key = read_key(&options.key, api)?;
            let loopback = crate::remote::is_loopback(&base);
            if key.is_some() && base.scheme() == "http" && !loopback {
                return Err(ProviderSpecError::Key(format!(
                    "refusing to send the API key over plain http to {}: use https, or a server on this machine",
                    base.host_str().unwrap_or("?")
                )));
            }
            let endpoint = Endpoint::new(api.name(), options.limits, loopback)
                .map_err(|e| ProviderSpecError::Other(e.to_string()))?;
            Ok(match (api, key) {
                (Api::Anthropic, Some(key)) => {
                    Arc::new(AnthropicProvider::new(endpoint, base, model, key))
                }
                (Api::Anthropic, None) => {
                    return Err(ProviderSpecError::Key(format!(
                        "anthropic at {base} would be sent no API key: a model spec from a request gets the provider's key only at the provider's own server"
                    )));
                }
                (Api::OpenAi, key) => Arc::new(OpenAiProvider::new(
                    Flavor::OpenAi,
                    endpoint,
                    base,
                    model,
                    key,
                )),
                (Api::OpenAiCompatible, key) => Arc::new(OpenAiProvider::new(
                    Flavor::Compatible,
                    endpoint,
                    base,
                    model,
                    key,
                )),
            })
        }
    }
}

/// Read the key from its source; `openai-compatible` sends none unless
/// a source is named.
fn read_key(source: &KeySource, api: Api) -> Result<Option<ApiKey>, ProviderSpecError> {
    let scheme = api.name();
    let from_env = |var: &str| -> Result<ApiKey, ProviderSpecError> {
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => Ok(ApiKey::new(var, value.trim())),
            _ => Err(ProviderSpecError::Key(format!(
                "`{scheme}` needs an API key and the environment variable {var} is not set\nhelp: export {var}=..., or name another source with --api-key-env / --api-key-file or `[model] api_key_env` / `api_key_file`"
            ))),
        }
    };
    match source {
        KeySource::Default => api.default_key_env().map(from_env).transpose(),
        KeySource::Env(var) => from_env(var).map(Some),
        KeySource::None => Ok(None),
        KeySource::File(path) => {
            let text =
                crate::load::read_text(path, crate::load::MAX_SECRET_FILE).map_err(|error| {
                    ProviderSpecError::Read {
                        what: "the API key file",
                        path: path.display().to_string(),
                        error,
                    }
                })?;
            let value = text.trim();
            if value.is_empty() {
                return Err(ProviderSpecError::Key(format!(
                    "the API key file {} is empty",
                    path.display()
                )));
            }
            Ok(Some(ApiKey::new(format!("file {}", path.display()), value)))
        }
    }
}

/// `base` + `path`, keeping the base's path (`/v1` + `chat/completions`).
fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}
