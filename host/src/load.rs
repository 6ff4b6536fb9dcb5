//! Reading what a run is made of from disk: the policy file and the
//! components it names. The policy itself stays pure; this is where its
//! text comes from and where `component = "..."` becomes bytes.

use crate::bundled;
use crate::diagnostic::{Diagnostic, SourceError};
use crate::policy::Policy;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A policy file, read and validated.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// The file as the user named it.
    pub name: String,
    /// The directory relative paths in it are resolved against.
    pub dir: PathBuf,
    /// Its text.
    pub text: String,
    /// SHA-256 of its text, hex.
    pub sha256: String,
    /// The validated policy.
    pub policy: Arc<Policy>,
}

impl PolicyFile {
    /// Read and validate the policy file at `path`.
    pub fn read(path: &Path) -> Result<Self, SourceError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| SourceError {
            file: name.clone(),
            text: String::new(),
            diagnostics: vec![
                Diagnostic::error(format!("cannot read the policy file: {error}"), None)
                    .with_help("check the path given to --policy"),
            ],
        })?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self::from_text(name, dir, text)
    }

    /// Validate policy `text` named `name`, resolving paths against `dir`.
    pub fn from_text(name: String, dir: PathBuf, text: String) -> Result<Self, SourceError> {
        let policy = Policy::parse(&name, &text)?;
        Ok(PolicyFile {
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            name,
            dir,
            text,
            policy: Arc::new(policy),
        })
    }

    /// An error about the text at `span` of this file.
    pub fn error_at(
        &self,
        span: Range<usize>,
        message: String,
        help: Option<String>,
    ) -> SourceError {
        let mut diagnostic = Diagnostic::error(message, Some(span));
        diagnostic.help = help;
        SourceError {
            file: self.name.clone(),
            text: self.text.clone(),
            diagnostics: vec![diagnostic],
        }
    }
}

/// Where a component's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ComponentSource {
    /// One of the components bundled in the binary (`builtin:calc`).
    Builtin(String),
    /// A `.wasm` file.
    File(PathBuf),
}

impl ComponentSource {
    /// `builtin:NAME`, or a path resolved against `base` when relative.
    pub fn parse(text: &str, base: &Path) -> Self {
        match text.strip_prefix("builtin:") {
            Some(name) => ComponentSource::Builtin(name.to_string()),
            None => {
                let path = Path::new(text);
                if path.is_absolute() {
                    ComponentSource::File(path.to_path_buf())
                } else {
                    ComponentSource::File(base.join(path))
                }
            }
        }
    }

    /// The component's bytes.
    pub fn read(&self) -> Result<Cow<'static, [u8]>, String> {
        match self {
            ComponentSource::Builtin(name) => {
                bundled::component(name).map(Cow::Borrowed).ok_or_else(|| {
                    format!(
                        "there is no built-in component `{name}`; the built-ins are: {}",
                        bundled::NAMES.join(", ")
                    )
                })
            }
            ComponentSource::File(path) => std::fs::read(path)
                .map(Cow::Owned)
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }

    /// A short name for transcripts: the built-in's name or the file stem.
    pub fn short_name(&self) -> String {
        match self {
            ComponentSource::Builtin(name) => name.clone(),
            ComponentSource::File(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
        }
    }
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentSource::Builtin(name) => write!(f, "builtin:{name}"),
            ComponentSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}
