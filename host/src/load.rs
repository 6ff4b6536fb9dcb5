//! Reading what a run is made of from disk: the policy file and the
//! components it names. The policy itself stays pure; this is where its
//! text comes from and where `component = "..."` becomes bytes (read, or
//! downloaded by [`crate::remote`]).

use crate::bundled;
use crate::diagnostic::{Diagnostic, SourceError, SourceFile};
use crate::policy::{Place, Policy};
use crate::remote::{self, Downloader, FetchError};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest policy file (or included file) read.
pub const MAX_POLICY_FILE: u64 = 4 << 20;
/// Largest secret or API key file read.
pub const MAX_SECRET_FILE: u64 = 64 << 10;
/// Largest model script, recording or policy test file read.
pub const MAX_SCRIPT_FILE: u64 = 64 << 20;
/// Largest component file read (as for downloads).
pub const MAX_COMPONENT_FILE: u64 = 256 << 20;

/// Read a file someone else may have planted, as text: see [`read_bounded`].
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text",
        )
    })
}

/// Open a file someone else may have planted, to stream it: only a
/// regular file (a FIFO would block, `/dev/zero` never end), opened
/// without blocking and checked through its descriptor.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::io::{Error, ErrorKind};
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device or directory); warden reads only regular files",
        ));
    }
    Ok(file)
}

/// Read a file someone else may have planted: only a regular file (a FIFO
/// would block the host forever, `/dev/zero` never end), and at most `max`
/// bytes (checked before reading and while reading: a file can grow). The
/// file is opened without blocking and checked through its descriptor, so
/// it cannot be swapped for a FIFO between the check and the read.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let file = open_regular(path)?;
    let metadata = file.metadata()?;
    let too_large = || {
        Error::new(
            ErrorKind::InvalidData,
            format!(
                "larger than {}, the most warden reads of such a file",
                crate::policy::ByteSize(max)
            ),
        )
    };
    if metadata.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A policy file (and the files it includes), read and validated.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// The file as the user named it.
    pub name: String,
    /// Every file loaded: the policy first, then its includes, in the
    /// order [`crate::policy::Place::file`] indexes.
    pub files: Vec<SourceFile>,
    /// The directory of each file, against which relative paths written
    /// in it are resolved.
    pub dirs: Vec<PathBuf>,
    /// SHA-256 of every file's text, in order, hex.
    pub sha256: String,
    /// The validated policy.
    pub policy: Arc<Policy>,
}

impl PolicyFile {
    /// Read and validate the policy file at `path` and what it includes.
    pub fn read(path: &Path) -> Result<Self, SourceError> {
        let path = &normalize(path);
        let name = path.display().to_string();
        let text = read_text(path, MAX_POLICY_FILE).map_err(|error| {
            SourceError::single(
                &name,
                "",
                vec![
                    Diagnostic::error(format!("cannot read the policy file: {error}"), None)
                        .with_help("check the path given to --policy"),
                ],
            )
        })?;
        Self::from_text(name, parent_dir(path), text)
    }

    /// Validate policy `text` named `name`; relative paths in it (and
    /// includes) resolve against `dir`.
    pub fn from_text(name: String, dir: PathBuf, text: String) -> Result<Self, SourceError> {
        let root = SourceFile {
            name: name.clone(),
            text,
        };
        // Directory of every file read so far, by name.
        let mut known: Vec<(String, PathBuf)> = vec![(name.clone(), dir)];
        let mut read = |from: &SourceFile, include: &str| -> Result<SourceFile, String> {
            let base = known
                .iter()
                .rev()
                .find(|(n, _)| *n == from.name)
                .map_or_else(|| PathBuf::from("."), |(_, d)| d.clone());
            let path = normalize(&base.join(include));
            let text = read_text(&path, MAX_POLICY_FILE)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path.display().to_string();
            known.push((name.clone(), parent_dir(&path)));
            Ok(SourceFile { name, text })
        };
        let (policy, files) = Policy::load(root, &mut read)?;
        let dirs = files
            .iter()
            .map(|f| {
                known
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map_or_else(|| PathBuf::from("."), |(_, d)| d.clone())
            })
            .collect();
        let mut hasher = Sha256::new();
        for file in &files {
            hasher.update(Sha256::digest(file.text.as_bytes()));
        }
        Ok(PolicyFile {
            name,
            sha256: hex::encode(hasher.finalize()),
            dirs,
            files,
            policy: Arc::new(policy),
        })
    }

    /// The directory that paths written in file `file` are relative to.
    pub fn dir_of(&self, file: usize) -> &Path {
        self.dirs.get(file).unwrap_or(&self.dirs[0])
    }

    /// An error about the text at `place`.
    pub fn error_at(&self, place: &Place, message: String, help: Option<String>) -> SourceError {
        let mut diagnostic =
            Diagnostic::error(message, Some(place.span.clone())).in_file(place.file);
        diagnostic.help = help;
        SourceError {
            files: self.files.clone(),
            diagnostics: vec![diagnostic],
        }
    }

    /// Warnings about the policy, rendered.
    pub fn render_warnings(&self) -> Vec<String> {
        self.policy
            .warnings
            .iter()
            .map(|w| {
                let file = &self.files[w.file.min(self.files.len() - 1)];
                w.render(&file.name, &file.text)
            })
            .collect()
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// `a/./b/../c` becomes `a/c`, without touching the file system, so one
/// file reached by two spellings has one name (and include cycles are seen).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Where a component's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ComponentSource {
    /// One of the components bundled in the binary (`builtin:calc`).
    Builtin(String),
    /// A `.wasm` file.
    File(PathBuf),
    /// A `.wasm` file to download (tools only, with a `sha256` pin; see
    /// [`crate::remote`]).
    Url(url::Url),
}

impl ComponentSource {
    /// `builtin:NAME`, a URL, or a path resolved against `base` when
    /// relative. Whether a URL may be downloaded from is checked when it
    /// is ([`crate::remote::check_url`]; the policy compiler checks it
    /// first).
    pub fn parse(text: &str, base: &Path) -> Self {
        if remote::is_url(text)
            && let Ok(url) = url::Url::parse(text)
        {
            return ComponentSource::Url(url);
        }
        match text.strip_prefix("builtin:") {
            Some(name) => ComponentSource::Builtin(name.to_string()),
            None => {
                let path = Path::new(text);
                // Relative to the working directory: the path as written
                // (`nope.wasm`, not `././nope.wasm`), in messages too.
                let here = base.as_os_str().is_empty() || base == Path::new(".");
                if path.is_absolute() || here {
                    ComponentSource::File(path.to_path_buf())
                } else {
                    ComponentSource::File(base.join(path))
                }
            }
        }
    }

    /// The component's bytes and their SHA-256 (hex): a file's hashed as
    /// read, a built-in's as hashed when the binary was built.
    pub fn read_hashed(&self) -> Result<(Cow<'static, [u8]>, String), String> {
        if let ComponentSource::Builtin(name) = self
            && let Some((bytes, sha256)) = bundled::hashed(name)
        {
            return Ok((Cow::Borrowed(bytes), sha256.to_string()));
        }
        let bytes = self.read()?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok((bytes, sha256))
    }

    /// The component's bytes.
    pub fn read(&self) -> Result<Cow<'static, [u8]>, String> {
        match self {
            ComponentSource::Builtin(name) => {
                bundled::component(name).map(Cow::Borrowed).ok_or_else(|| {
                    match crate::diagnostic::closest(name, bundled::NAMES.iter().copied()) {
                        Some(known) => format!(
                            "there is no built-in component `{name}`: did you mean `builtin:{known}`?"
                        ),
                        None => format!(
                            "there is no built-in component `{name}`; the built-ins are: {}",
                            bundled::NAMES.join(", ")
                        ),
                    }
                })
            }
            ComponentSource::File(path) => read_bounded(path, MAX_COMPONENT_FILE)
                .map(Cow::Owned)
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            ComponentSource::Url(url) => Err(format!(
                "{url} is a URL: only tools are downloaded (named in a policy with a `sha256` pin); download it and give its path"
            )),
        }
    }

    /// The component's bytes, downloading a URL with `downloader` (through
    /// its cache, checked against `pin` before they are used or kept).
    pub async fn fetch(
        &self,
        downloader: &Downloader,
        pin: Option<&str>,
    ) -> Result<(Cow<'static, [u8]>, String), FetchError> {
        match self {
            // The downloader hashed it already (or read it by its hash).
            ComponentSource::Url(url) => downloader
                .fetch(url, pin)
                .await
                .map(|fetched| (Cow::Owned(fetched.bytes), fetched.sha256)),
            _ => self.read_hashed().map_err(FetchError::Failed),
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
            ComponentSource::Url(url) => url
                .path_segments()
                .and_then(|mut segments| segments.next_back())
                .and_then(|last| Path::new(last).file_stem())
                .map(|stem| stem.to_string_lossy().into_owned())
                .filter(|stem| !stem.is_empty())
                .unwrap_or_else(|| url.host_str().unwrap_or("component").to_string()),
        }
    }
}

impl fmt::Display for ComponentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentSource::Builtin(name) => write!(f, "builtin:{name}"),
            ComponentSource::File(path) => write!(f, "{}", path.display()),
            ComponentSource::Url(url) => write!(f, "{url}"),
        }
    }
}
