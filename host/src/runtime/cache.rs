//! Precompiled components on disk, so a second run does not recompile.
//!
//! A file is named by the SHA-256 of the component's bytes and a hash of
//! everything that makes compiled code compatible: the wasmtime version and
//! the engine's settings (`Engine::precompile_compatibility_hash`).
//!
//! What runs is what was pinned: native code is deserialized without
//! wasmtime checking it, so each file starts with a tag, keyed BLAKE3 (a
//! MAC) under a per-user key (`.key` in the cache directory, 32 random
//! bytes, 0600) over the component's SHA-256, the engine key and the
//! compiled bytes. Every run verifies megabytes of compiled code, and
//! BLAKE3 does it about four times faster than HMAC-SHA256 did. A
//! file whose tag does not verify (swapped for another component's code,
//! copied from another machine, corrupt) is recompiled and replaced; the
//! bytes verified are the bytes deserialized (no second read). The
//! directory is created 0700, files 0600, and a directory (or key) that
//! others can write or read is not used at all: compiling every time is
//! safe, loading someone else's native code is not.

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
    /// The MAC key, once read or made; `Err` says why the cache is off.
    key: std::sync::OnceLock<Result<[u8; KEY_LEN], String>>,
}

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// Largest cached file read: compiled code is a few times its component.
const MAX_CACHED_FILE: u64 = crate::load::MAX_COMPONENT_FILE * 4;

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

/// Keyed BLAKE3 of `parts`, in order: a MAC under `key`.
fn mac(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    for part in parts {
        // Given the compiled code whole, BLAKE3 hashes many chunks at once
        // (SIMD): feed it no smaller pieces.
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Names the tag's algorithm in every file's name (through the engine
/// key): files tagged by an older warden (HMAC-SHA256) are not read, and
/// are compiled again instead of failing to verify.
const TAG_FORMAT: &[u8] = b"tag: keyed blake3";

/// Equal in time independent of where they differ.
fn same_tag(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl CompileCache {
    /// A cache in `dir` for components compiled by `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(TAG_FORMAT);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        CompileCache {
            dir,
            engine_key,
            key: std::sync::OnceLock::new(),
        }
    }

    /// The directory holding the compiled files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The MAC key, made on first use; an error says why the cache cannot
    /// be trusted (and so is not used).
    fn key(&self) -> Result<&[u8; KEY_LEN], &str> {
        self.key
            .get_or_init(|| private_key(&self.dir))
            .as_ref()
            .map_err(String::as_str)
    }

    fn tag(&self, key: &[u8; KEY_LEN], sha256: &str, compiled: &[u8]) -> [u8; TAG_LEN] {
        mac(
            key,
            &[
                sha256.as_bytes(),
                b"\0",
                self.engine_key.as_bytes(),
                b"\0",
                compiled,
            ],
        )
    }

    /// The compiled component whose bytes hash to `sha256`, from the cache
    /// if present and its tag verifies, else from `compile` (and then
    /// stored); returns whether it was a hit.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<(Component, bool)> {
        let key = match self.key() {
            Ok(key) => *key,
            Err(why) => {
                warn_once(why);
                return Ok((compile()?, false));
            }
        };
        let path = self.path_for(sha256);
        if let Some(component) = self.load(engine, &key, sha256, &path) {
            return Ok((component, true));
        }
        let component = compile()?;
        if let Err(error) = self.store(&key, sha256, &path, &component) {
            tracing::warn!(
                "could not write the compile cache at {}: {error:#}",
                path.display()
            );
        }
        Ok((component, false))
    }

    /// A cached file whose tag verifies, deserialized from the bytes that
    /// were verified.
    fn load(
        &self,
        engine: &Engine,
        key: &[u8; KEY_LEN],
        sha256: &str,
        path: &Path,
    ) -> Option<Component> {
        #[cfg(target_os = "linux")]
        match self.load_sealed(engine, key, sha256, path) {
            Ok(loaded) => return loaded,
            // No memfd here (an old kernel, a sandbox that forbids it, no
            // /proc): read the file into memory instead.
            Err(error) => tracing::debug!("sealed load of {}: {error}", path.display()),
        }
        let file = crate::load::read_bounded(path, MAX_CACHED_FILE).ok()?;
        let (tag, compiled) = file.split_at_checked(TAG_LEN)?;
        if !same_tag(tag, &self.tag(key, sha256, compiled)) {
            tracing::warn!(
                "recompiling {}: its tag does not verify (not written by this cache for this component)",
                path.display()
            );
            return None;
        }
        // SAFETY: these bytes were written by `store` below, from
        // `Component::serialize` of an engine with the same compatibility
        // hash (in the file name), for the component with this SHA-256: the
        // tag under this user's key says so, and these are the bytes it
        // covers. `deserialize` also validates the header and version.
        match unsafe { Component::deserialize(engine, compiled) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(
                    "recompiling {}: the cached file is unusable: {error:#}",
                    path.display()
                );
                None
            }
        }
    }

    /// [`load`](Self::load) without copying the compiled code into this
    /// process twice (once read, once copied by `deserialize`): the code
    /// is copied by the kernel into a memfd that is then sealed, so that
    /// nobody, this process included, can change it any more; the tag is
    /// checked over the sealed bytes, and wasmtime maps those same bytes.
    /// `Err`: this system cannot do it, and the caller reads the file.
    #[cfg(target_os = "linux")]
    fn load_sealed(
        &self,
        engine: &Engine,
        key: &[u8; KEY_LEN],
        sha256: &str,
        path: &Path,
    ) -> std::io::Result<Option<Component>> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let source = match crate::load::open_regular(path) {
            Ok(source) => source,
            // Not cached (or not a file we read): compile, as `load` would.
            Err(_) => return Ok(None),
        };
        let len = source.metadata()?.len();
        if len > MAX_CACHED_FILE || len < TAG_LEN as u64 {
            return Ok(None);
        }
        let mut tag = [0u8; TAG_LEN];
        std::os::unix::fs::FileExt::read_exact_at(&source, &mut tag, 0)?;
        // SAFETY: a C string literal and flags; returns a new descriptor or -1.
        let create = |flags| unsafe { libc::memfd_create(c"warden-compiled".as_ptr(), flags) };
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // Executable, said so: wasmtime maps the code from it, and where
        // `vm.memfd_noexec` is 1 a memfd is otherwise sealed against it.
        // Kernels before 6.3 know no such flag (EINVAL), and need none.
        let mut fd = create(flags | libc::MFD_EXEC);
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            fd = create(flags);
        }
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let sealed = unsafe { std::fs::File::from_raw_fd(fd) };
        // The compiled code, after the tag; at most the length seen above,
        // however the file changes meanwhile (a change fails the tag).
        let mut offset = TAG_LEN as libc::off_t;
        let mut left = (len - TAG_LEN as u64) as usize;
        while left > 0 {
            // SAFETY: two open descriptors, and an offset this call updates.
            let sent = unsafe { libc::sendfile(fd, source.as_raw_fd(), &mut offset, left) };
            match sent {
                0 => break,
                n if n > 0 => left -= n as usize,
                _ => {
                    let error = std::io::Error::last_os_error();
                    if error.kind() != std::io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let size = sealed.metadata()?.len() as usize;
        if size == 0 {
            return Ok(None);
        }
        // SAFETY: a read-only shared mapping of `size` bytes of a sealed
        // memfd of that size: it cannot shrink under the mapping, nor
        // change. Unmapped below, before anything else maps it.
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `mapped` is `size` readable bytes until the munmap.
        let compiled = unsafe { std::slice::from_raw_parts(mapped.cast::<u8>(), size) };
        let verified = same_tag(&tag, &self.tag(key, sha256, compiled));
        // SAFETY: the mapping made above, no longer borrowed.
        unsafe { libc::munmap(mapped, size) };
        if !verified {
            tracing::warn!(
                "recompiling {}: its tag does not verify (not written by this cache for this component)",
                path.display()
            );
            return Ok(None);
        }
        // SAFETY: as in `load`: the tag under this user's key says these
        // bytes were written by `store` for this component and an engine
        // with this compatibility hash; the memfd is sealed, so the bytes
        // wasmtime maps are the bytes verified. A missing /proc fails to
        // open, before anything is deserialized.
        // Any failure here (no /proc, a mapping this system refuses) sends
        // the caller to read the file instead, which recompiles only if
        // that fails too.
        unsafe { Component::deserialize_file(engine, format!("/proc/self/fd/{fd}")) }
            .map(Some)
            .map_err(|error| std::io::Error::other(format!("{error:#}")))
    }

    /// Write atomically (a reader sees the whole file or none), 0600.
    fn store(
        &self,
        key: &[u8; KEY_LEN],
        sha256: &str,
        path: &Path,
        component: &Component,
    ) -> wasmtime::Result<()> {
        let serialized = component.serialize()?;
        let tag = self.tag(key, sha256, &serialized);
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| wasmtime::format_err!("random: {e}"))?;
        let temp = self.dir.join(format!(".tmp-{}", hex::encode(nonce)));
        let mut file = private_file(&temp)?;
        file.write_all(&tag)?;
        file.write_all(&serialized)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        Ok(())
    }
}

fn warn_once(why: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| tracing::warn!("the compile cache is off: {why}"));
}

/// A new file readable and writable only by the user.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Read (or make) the cache's key, after checking that nobody else can
/// write the directory or read the key.
fn private_key(dir: &Path) -> Result<[u8; KEY_LEN], String> {
    create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    check_private(dir, 0o022, "written by other users")?;
    let path = dir.join(".key");
    let mut key = [0u8; KEY_LEN];
    match crate::load::read_bounded(&path, KEY_LEN as u64) {
        Ok(bytes) => {
            check_private(&path, 0o077, "read or written by other users")?;
            key = bytes
                .try_into()
                .map_err(|_| format!("{} is not a key this cache wrote", path.display()))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            getrandom::fill(&mut key).map_err(|e| format!("random: {e}"))?;
            // Two processes making the key at once: one wins, the other
            // reads its key.
            match private_file(&path).and_then(|mut file| {
                file.write_all(&key)?;
                file.sync_all()
            }) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return private_key(dir),
                Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
            }
        }
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    }
    Ok(key)
}

/// Refuse `path` if its mode has any of `bits` or another user owns it.
fn check_private(path: &Path, bits: u32, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::symlink_metadata(path)
            .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if metadata.uid() != me || metadata.mode() & bits != 0 {
            return Err(format!(
                "{} can be {what} (mode {:o}, owner {}): fix it with `chmod go-rwx` or use another --cache-dir",
                path.display(),
                metadata.mode() & 0o777,
                metadata.uid()
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const COMPONENT: &str = r#"(component (core module (func (export "f"))))"#;

    #[test]
    fn a_cached_file_is_loaded_only_while_its_tag_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = CompileCache::new(dir.path().join("components"), &engine);
        let sha256 = "ab".repeat(32);
        let compile = || Component::new(&engine, COMPONENT);
        let (_, hit) = cache.load_or_compile(&engine, &sha256, compile).unwrap();
        assert!(!hit);
        let key = *cache.key().unwrap();
        let path = cache.path_for(&sha256);
        // The sealed copy is how it loads on Linux, not the fallback.
        #[cfg(target_os = "linux")]
        assert!(matches!(
            cache.load_sealed(&engine, &key, &sha256, &path),
            Ok(Some(_))
        ));
        assert!(cache.load(&engine, &key, &sha256, &path).is_some());
        // Under another component's hash, the same file does not verify.
        let other = "cd".repeat(32);
        assert!(cache.load(&engine, &key, &other, &path).is_none());

        // One bit of the compiled code changed: not loaded.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        #[cfg(target_os = "linux")]
        assert!(matches!(
            cache.load_sealed(&engine, &key, &sha256, &path),
            Ok(None)
        ));
        assert!(cache.load(&engine, &key, &sha256, &path).is_none());
        let (_, hit) = cache.load_or_compile(&engine, &sha256, compile).unwrap();
        assert!(!hit, "a changed file was trusted");
        let (_, hit) = cache.load_or_compile(&engine, &sha256, compile).unwrap();
        assert!(hit, "the recompiled file is trusted again");
    }
}
