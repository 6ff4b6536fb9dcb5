//! Model providers: where the host sends the chat requests it allowed.
//!
//! A provider works on host types ([`crate::chat`]), never WIT types, and
//! never sees the policy: the gate has decided before a provider is called.
//! Providers own their endpoints and keys; nothing of them reaches a guest.

mod scripted;

pub use scripted::ScriptedProvider;

use crate::chat::{ChatRequest, ChatResponse};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so providers can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that answers chat requests.
pub trait ModelProvider: Send + Sync {
    /// The model that answers requests naming none.
    fn default_model(&self) -> &str;

    /// What this provider is, for transcripts and audit records, e.g.
    /// `scripted:demo.script.toml (3 turns)`. Never includes a secret.
    fn describe(&self) -> String;

    /// Answer one request.
    fn chat<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
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
    /// Anything else the provider reports.
    #[error("{0}")]
    Other(String),
}

/// Why `--model SPEC` could not be turned into a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderSpecError {
    /// Unknown scheme before the `:`.
    #[error(
        "unknown model provider `{0}`: use `scripted:FILE` (a file of model turns, replayed in order)"
    )]
    UnknownScheme(String),
    /// The script file could not be read.
    #[error("cannot read the model script {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The script file is malformed.
    #[error("{0}")]
    Script(#[from] crate::diagnostic::SourceError),
}

/// Build a provider from a `--model` value such as `scripted:demo.toml`.
pub fn from_spec(spec: &str) -> Result<Arc<dyn ModelProvider>, ProviderSpecError> {
    let (scheme, rest) = spec.split_once(':').unwrap_or((spec, ""));
    match scheme {
        "scripted" => {
            let text = std::fs::read_to_string(rest).map_err(|error| ProviderSpecError::Read {
                path: rest.to_string(),
                error,
            })?;
            Ok(Arc::new(ScriptedProvider::parse(rest, &text)?))
        }
        other => Err(ProviderSpecError::UnknownScheme(other.to_string())),
    }
}
