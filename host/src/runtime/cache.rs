//! Precompiled components on disk, so a second run does not recompile.
//!
//! A file is named by the SHA-256 of the component's bytes and a hash of
//! everything that makes compiled code compatible: the wasmtime version and
//! the engine's settings (`Engine::precompile_compatibility_hash`). Only
//! files this cache wrote are loaded, and wasmtime checks each one's header
//! against the engine before use; a corrupt or stale file is recompiled and
//! replaced. Whoever can write the cache directory can run native code as
//! the user, as with any compiler cache: keep it private (it is created
//! 0700).

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The on-disk cache of compiled components.
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, so the key is stable across Rust
/// versions (unlike `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is taken from the inner state.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    /// A cache in `dir` for components compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        CompileCache { dir, engine_key }
    }

    /// The directory holding the compiled files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes` (whose hash is `sha256`), from the
    /// cache if present; returns whether it was a hit.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.path_for(sha256);
        if path.is_file() {
            // SAFETY: the file is named by the hash of the engine's
            // compatibility settings and was written by `store` below from
            // `Component::serialize` of an engine with those settings;
            // `deserialize_file` also validates its header and version.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(error) => tracing::warn!(
                    "recompiling {}: the cached file is unusable: {error:#}",
                    path.display()
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = self.store(&path, &component) {
            tracing::warn!(
                "could not write the compile cache at {}: {error:#}",
                path.display()
            );
        }
        Ok((component, false))
    }

    /// Write atomically: a reader sees the whole file or none.
    fn store(&self, path: &Path, component: &Component) -> wasmtime::Result<()> {
        create_private_dir(&self.dir)?;
        let serialized = component.serialize()?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| wasmtime::format_err!("random: {e}"))?;
        let temp = self.dir.join(format!(".tmp-{}", hex::encode(nonce)));
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&serialized)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        Ok(())
    }
}

/// Create `dir` (and its parents), readable only by the user.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// `$WARDEN_CACHE_DIR`, else `$XDG_CACHE_HOME/warden`, else
/// `~/.cache/warden`; `components/` inside it.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("WARDEN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("warden")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/warden")))?;
    Some(base.join("components"))
}
