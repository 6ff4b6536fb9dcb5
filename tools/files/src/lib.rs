//! `files`: read, list, write and search files in the directories the
//! sandbox grants. Four tools in one component:
//!
//! - `read_file`: a UTF-8 text file, up to 1 MiB.
//! - `list_dir`: a directory's entries with their kind and size, as JSON.
//! - `write_file`: create, replace or append to a file.
//! - `search_files`: lines containing a string, under a directory, as
//!   `relative/path:line: text`.
//!
//! Only `std::fs` is used: on `wasm32-wasip2` it goes through
//! wasi:filesystem, where the host mounts the granted directories as
//! preopens at guest paths such as `/workspace` (read-only or read-write).
//! The host enforces the sandbox; this component only turns its refusals
//! into messages a model can act on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;
use warden_guest::{Tool, ToolSpec, tool};

/// Largest file `read_file` returns, in bytes.
pub const MAX_READ: u64 = 1 << 20;
/// Most entries `list_dir` returns.
pub const MAX_ENTRIES: usize = 1000;
/// Deepest directory `search_files` descends to, below the one it is given.
pub const MAX_DEPTH: usize = 16;
/// Most files `search_files` reads.
pub const MAX_FILES: usize = 10_000;
/// Files larger than this are not searched.
pub const MAX_SEARCH_FILE: u64 = 8 << 20;
/// Matches `search_files` returns when the call does not say.
pub const DEFAULT_MAX_RESULTS: usize = 50;
/// Most matches a `search_files` call may ask for.
pub const MAX_RESULTS: usize = 1000;
/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Longest matching line shown, in characters; longer ones are cut around
/// the match.
pub const MAX_LINE_CHARS: usize = 300;

struct Files;

impl Tool for Files {
    fn describe() -> Vec<ToolSpec> {
        let path = |what: &str| {
            json!({
                "type": "string",
                "description": format!(
                    "{what}, as an absolute path inside a granted directory, \
                     e.g. `/workspace/notes.txt`."
                ),
            })
        };
        vec![
            ToolSpec::new(
                "read_file",
                "Read a UTF-8 text file (up to 1 MiB) and return its content.",
                json!({
                    "type": "object",
                    "properties": { "path": path("The file") },
                    "required": ["path"],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::new(
                "list_dir",
                "List a directory's entries as JSON: {path, entries: [{name, kind \
                 (file, dir, symlink or other), size (files only, in bytes)}]}.",
                json!({
                    "type": "object",
                    "properties": { "path": path("The directory") },
                    "required": ["path"],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::new(
                "write_file",
                "Write text to a file: create it, replace its content, or append to it. \
                 The directory must exist and be writable.",
                json!({
                    "type": "object",
                    "properties": {
                        "path": path("The file"),
                        "content": { "type": "string", "description": "The text to write." },
                        "append": {
                            "type": "boolean",
                            "default": false,
                            "description": "Add to the end of the file instead of replacing it.",
                        },
                    },
                    "required": ["path", "content"],
                    "additionalProperties": false,
                }),
            ),
            ToolSpec::new(
                "search_files",
                "Find the lines that contain a text (a plain substring, not a regex) in a \
                 file or in every text file under a directory. Returns one match a line: \
                 `relative/path:line: text`.",
                json!({
                    "type": "object",
                    "properties": {
                        "path": path("The directory (or file) to search"),
                        "pattern": {
                            "type": "string",
                            "description": "The text to look for.",
                            "minLength": 1,
                            "maxLength": MAX_PATTERN_LEN,
                        },
                        "ignore_case": { "type": "boolean", "default": false },
                        "max_results": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_RESULTS,
                            "default": DEFAULT_MAX_RESULTS,
                        },
                    },
                    "required": ["path", "pattern"],
                    "additionalProperties": false,
                }),
            ),
        ]
    }

    fn invoke(name: String, arguments: String) -> Result<String, String> {
        match name.as_str() {
            "read_file" => {
                let args: PathArgs = tool::parse_arguments(&name, &arguments)?;
                read_file(&args.path)
            }
            "list_dir" => {
                let args: PathArgs = tool::parse_arguments(&name, &arguments)?;
                list_dir(&args.path)
            }
            "write_file" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Args {
                    path: String,
                    content: String,
                    #[serde(default)]
                    append: bool,
                }
                let args: Args = tool::parse_arguments(&name, &arguments)?;
                write_file(&args.path, &args.content, args.append)
            }
            "search_files" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Args {
                    path: String,
                    pattern: String,
                    #[serde(default)]
                    ignore_case: bool,
                    max_results: Option<usize>,
                }
                let args: Args = tool::parse_arguments(&name, &arguments)?;
                search_files(
                    &args.path,
                    &args.pattern,
                    args.ignore_case,
                    args.max_results.unwrap_or(DEFAULT_MAX_RESULTS),
                )
            }
            other => Err(format!(
                "this component provides `read_file`, `list_dir`, `write_file` and \
                 `search_files`, not `{other}`"
            )),
        }
    }
}

warden_guest::export_tool!(Files);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    path: String,
}

/// What was being done when an I/O error happened, for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Reading a file.
    Read,
    /// Listing a directory.
    List,
    /// Writing a file.
    Write,
    /// Searching under a path.
    Search,
}

/// An I/O error on `path` in words a model can act on.
pub fn io_error(op: Op, path: &str, error: &io::Error) -> String {
    let relative_hint = if path.starts_with('/') {
        String::new()
    } else {
        format!(
            "; paths must be absolute, inside a granted directory (e.g. /workspace/{})",
            path.trim_start_matches("./")
        )
    };
    // wasi-libc's ENOTCAPABLE: the path leaves the granted directories.
    let not_capable = cfg!(target_os = "wasi") && error.raw_os_error() == Some(76);
    match error.kind() {
        _ if not_capable => {
            format!("`{path}` is outside the directories the sandbox grants{relative_hint}")
        }
        ErrorKind::NotFound if op == Op::Write => {
            let parent = Path::new(path)
                .parent()
                .map(|p| p.display().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".to_string());
            format!(
                "cannot write `{path}`: the directory `{parent}` does not exist or is not \
                 granted to the sandbox{relative_hint}; write into an existing directory \
                 (use list_dir to see one)"
            )
        }
        ErrorKind::NotFound if path.trim_end_matches('/').is_empty() => format!(
            "`{path}` is not a directory the sandbox grants: only the directories it mounts \
             (e.g. /workspace) can be used; give a path inside one of them"
        ),
        ErrorKind::NotFound => format!(
            "`{path}` does not exist (or is not inside a directory the sandbox grants)\
             {relative_hint}; use list_dir on its directory to see what is there"
        ),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem if op == Op::Write => {
            format!(
                "cannot write `{path}`: the directory is mounted read-only (the sandbox \
                 grants it for reading only)"
            )
        }
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => format!(
            "permission denied: the sandbox does not allow {} `{path}`",
            match op {
                Op::List => "listing",
                Op::Search => "searching",
                Op::Read | Op::Write => "reading",
            }
        ),
        ErrorKind::IsADirectory => match op {
            Op::Write => format!("`{path}` is a directory; give the path of a file to write"),
            _ => format!("`{path}` is a directory; use list_dir to see its entries"),
        },
        ErrorKind::NotADirectory => match op {
            Op::List => format!("`{path}` is a file, not a directory; use read_file to read it"),
            _ => format!("a part of `{path}` before the last `/` is a file, not a directory"),
        },
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            format!("cannot write `{path}`: no space is left in the directory")
        }
        ErrorKind::FileTooLarge => format!("cannot write `{path}`: the file would be too large"),
        ErrorKind::InvalidFilename | ErrorKind::InvalidInput => {
            format!("`{path}` is not a valid path")
        }
        _ => format!(
            "cannot {} `{path}`: {error}",
            match op {
                Op::Read => "read",
                Op::List => "list",
                Op::Write => "write",
                Op::Search => "search",
            }
        ),
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err(
            "`path` is empty: give an absolute path such as /workspace/notes.txt".to_string(),
        );
    }
    if path.contains('\0') {
        return Err("`path` contains a NUL character".to_string());
    }
    Ok(())
}

/// The content of the text file at `path`.
pub fn read_file(path: &str) -> Result<String, String> {
    check_path(path)?;
    let too_large = |size: u64| {
        format!(
            "`{path}` is {size} bytes; read_file reads files up to {MAX_READ} bytes (1 MiB). \
             Use search_files to find the lines you need"
        )
    };
    let metadata = fs::metadata(path).map_err(|e| io_error(Op::Read, path, &e))?;
    if metadata.is_dir() {
        return Err(format!(
            "`{path}` is a directory; use list_dir to see its entries"
        ));
    }
    if metadata.len() > MAX_READ {
        return Err(too_large(metadata.len()));
    }
    let file = File::open(path).map_err(|e| io_error(Op::Read, path, &e))?;
    let mut bytes = Vec::new();
    // The file may have grown since its metadata was read.
    file.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(Op::Read, path, &e))?;
    if bytes.len() as u64 > MAX_READ {
        return Err(too_large(bytes.len() as u64));
    }
    text(bytes).map_err(|size| {
        format!(
            "`{path}` is a binary file ({size} bytes), not UTF-8 text; read_file reads text only"
        )
    })
}

/// `bytes` as text, or their length when they are not UTF-8 text (not
/// UTF-8, or with NUL bytes).
pub fn text(bytes: Vec<u8>) -> Result<String, usize> {
    let len = bytes.len();
    if bytes.contains(&0) {
        return Err(len);
    }
    String::from_utf8(bytes).map_err(|_| len)
}

/// One entry of a `list_dir` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The entry's name.
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    /// A file's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The result of `list_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// The directory, as given.
    pub path: String,
    /// Its entries, sorted by name.
    pub entries: Vec<Entry>,
    /// How many entries there are in all, when more than the ones listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

/// The entries of the directory at `path`, as JSON.
pub fn list_dir(path: &str) -> Result<String, String> {
    check_path(path)?;
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| io_error(Op::List, path, &e))? {
        let entry = entry.map_err(|e| io_error(Op::List, path, &e))?;
        let file_type = entry.file_type().ok();
        let kind = kind_name(file_type);
        let size = match kind {
            "file" => entry.metadata().ok().map(|m| m.len()),
            _ => None,
        };
        entries.push(Entry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind,
            size,
        });
    }
    Ok(serde_json::to_string(&listing(path, entries)).expect("strings and numbers serialize"))
}

/// A listing of `entries`: sorted by name, at most [`MAX_ENTRIES`].
pub fn listing(path: &str, mut entries: Vec<Entry>) -> Listing {
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let total = entries.len();
    entries.truncate(MAX_ENTRIES);
    Listing {
        path: path.to_string(),
        entries,
        total: (total > MAX_ENTRIES).then_some(total),
    }
}

fn kind_name(file_type: Option<fs::FileType>) -> &'static str {
    match file_type {
        Some(t) if t.is_symlink() => "symlink",
        Some(t) if t.is_dir() => "dir",
        Some(t) if t.is_file() => "file",
        _ => "other",
    }
}

/// Write `content` to the file at `path`: replace it, or append when
/// `append`. Creates the file, never its directory.
pub fn write_file(path: &str, content: &str, append: bool) -> Result<String, String> {
    check_path(path)?;
    if path.ends_with('/') {
        return Err(format!(
            "`{path}` ends with `/`; give the path of a file to write"
        ));
    }
    let existed = fs::symlink_metadata(path).is_ok();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .map_err(|e| io_error(Op::Write, path, &e))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| io_error(Op::Write, path, &e))?;
    let bytes = match content.len() {
        1 => "1 byte".to_string(),
        n => format!("{n} bytes"),
    };
    Ok(match (existed, append) {
        (false, _) => format!("created `{path}` with {bytes}"),
        (true, false) => format!("replaced the content of `{path}` with {bytes}"),
        (true, true) => format!("appended {bytes} to `{path}`"),
    })
}

/// Finds a plain substring in lines, optionally ignoring case.
#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: String,
    ignore_case: bool,
}

impl Matcher {
    /// A matcher for `pattern`.
    pub fn new(pattern: &str, ignore_case: bool) -> Self {
        Matcher {
            pattern: if ignore_case {
                pattern.to_lowercase()
            } else {
                pattern.to_string()
            },
            ignore_case,
        }
    }

    /// Where in `line` the pattern starts, in characters, if it is there.
    pub fn find(&self, line: &str) -> Option<usize> {
        if self.ignore_case {
            let lower = line.to_lowercase();
            let at = lower.find(&self.pattern)?;
            Some(lower[..at].chars().count())
        } else {
            let at = line.find(&self.pattern)?;
            Some(line[..at].chars().count())
        }
    }
}

/// One match as `path:line: text`. The text is trimmed, and a line longer
/// than [`MAX_LINE_CHARS`] is cut to a window around the match (character
/// `column`), with `…` where it was cut.
pub fn format_match(path: &str, line_number: usize, line: &str, column: usize) -> String {
    let trimmed_start = line.len() - line.trim_start().len();
    let column = column.saturating_sub(line[..trimmed_start].chars().count());
    let line = line.trim();
    let count = line.chars().count();
    if count <= MAX_LINE_CHARS {
        return format!("{path}:{line_number}: {line}");
    }
    let start = column
        .saturating_sub(MAX_LINE_CHARS / 3)
        .min(count - MAX_LINE_CHARS);
    let end = start + MAX_LINE_CHARS;
    let window: String = line.chars().skip(start).take(MAX_LINE_CHARS).collect();
    format!(
        "{path}:{line_number}: {}{window}{}",
        if start > 0 { "…" } else { "" },
        if end < count { "…" } else { "" }
    )
}

/// What a search found and what it left out.
#[derive(Debug, Default)]
pub struct Search {
    /// Matches, as `path:line: text`.
    pub matches: Vec<String>,
    /// There were more matches than the ones kept.
    pub more: bool,
    /// Files read.
    pub files_searched: usize,
    /// The file limit stopped the search.
    pub file_limit: bool,
    /// Directories below the depth limit were not searched.
    pub depth_limit: bool,
    /// Files too large to search.
    pub too_large: usize,
    /// Directories or files that could not be read.
    pub unreadable: usize,
}

impl Search {
    fn done(&self) -> bool {
        self.more || self.file_limit
    }

    /// The tool's answer: the matches, then what was left out.
    pub fn report(&self, path: &str, pattern: &str, max_results: usize) -> String {
        let mut lines = self.matches.clone();
        if lines.is_empty() {
            lines.push(format!(
                "no matches for `{pattern}` in `{path}` ({} file{} searched)",
                self.files_searched,
                if self.files_searched == 1 { "" } else { "s" }
            ));
        }
        if self.more {
            lines.push(format!(
                "[stopped at {max_results} match{}: narrow the pattern or the path, or raise \
                 max_results]",
                if max_results == 1 { "" } else { "es" }
            ));
        }
        if self.file_limit {
            lines.push(format!(
                "[stopped after searching {MAX_FILES} files: search a smaller directory]"
            ));
        }
        if self.depth_limit {
            lines.push(format!(
                "[directories nested more than {MAX_DEPTH} levels deep were not searched]"
            ));
        }
        if self.too_large > 0 {
            lines.push(format!(
                "[{} file{} larger than {} MiB not searched]",
                self.too_large,
                if self.too_large == 1 { "" } else { "s" },
                MAX_SEARCH_FILE >> 20
            ));
        }
        if self.unreadable > 0 {
            lines.push(format!(
                "[{} file{} or director{} could not be read]",
                self.unreadable,
                if self.unreadable == 1 { "" } else { "s" },
                if self.unreadable == 1 { "y" } else { "ies" }
            ));
        }
        lines.join("\n")
    }

    /// Look for matches in `text`, shown as `display`.
    pub fn scan(&mut self, matcher: &Matcher, display: &str, text: &str, max_results: usize) {
        for (index, line) in text.lines().enumerate() {
            if let Some(column) = matcher.find(line) {
                if self.matches.len() == max_results {
                    self.more = true;
                    return;
                }
                self.matches
                    .push(format_match(display, index + 1, line, column));
            }
        }
    }
}

/// The lines containing `pattern` in the file at `path` or in the files
/// under the directory at `path`.
pub fn search_files(
    path: &str,
    pattern: &str,
    ignore_case: bool,
    max_results: usize,
) -> Result<String, String> {
    check_path(path)?;
    if pattern.is_empty() {
        return Err("`pattern` is empty: give the text to look for".to_string());
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!(
            "`pattern` is {} bytes long; the limit is {MAX_PATTERN_LEN}",
            pattern.len()
        ));
    }
    if max_results == 0 {
        return Err("`max_results` must be at least 1".to_string());
    }
    let max_results = max_results.min(MAX_RESULTS);
    let matcher = Matcher::new(pattern, ignore_case);
    let metadata = fs::metadata(path).map_err(|e| io_error(Op::Search, path, &e))?;
    let mut search = Search::default();
    if metadata.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| io_error(Op::Search, path, &e))?;
        walk(
            Path::new(path),
            entries,
            "",
            0,
            &matcher,
            max_results,
            &mut search,
        );
    } else {
        let name = Path::new(path)
            .file_name()
            .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
        search_file(Path::new(path), &name, &matcher, max_results, &mut search);
        if search.unreadable > 0 {
            let error = fs::File::open(path).err();
            return Err(error.map_or_else(
                || format!("`{path}` could not be read"),
                |e| io_error(Op::Search, path, &e),
            ));
        }
    }
    Ok(search.report(path, pattern, max_results))
}

/// Search the directory `dir` (whose entries are `entries`, shown under
/// `relative`), `depth` levels below the root, in name order; symlinks are
/// not followed.
fn walk(
    dir: &Path,
    entries: fs::ReadDir,
    relative: &str,
    depth: usize,
    matcher: &Matcher,
    max_results: usize,
    search: &mut Search,
) {
    let mut entries: Vec<(String, Option<fs::FileType>)> = entries
        .filter_map(|entry| match entry {
            Ok(entry) => Some((
                entry.file_name().to_string_lossy().into_owned(),
                entry.file_type().ok(),
            )),
            Err(_) => {
                search.unreadable += 1;
                None
            }
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, file_type) in entries {
        if search.done() {
            return;
        }
        let path = dir.join(&name);
        let display = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        match file_type {
            Some(t) if t.is_dir() => {
                if depth + 1 > MAX_DEPTH {
                    search.depth_limit = true;
                    continue;
                }
                match fs::read_dir(&path) {
                    Ok(entries) => walk(
                        &path,
                        entries,
                        &display,
                        depth + 1,
                        matcher,
                        max_results,
                        search,
                    ),
                    Err(_) => search.unreadable += 1,
                }
            }
            Some(t) if t.is_file() => {
                if search.files_searched == MAX_FILES {
                    search.file_limit = true;
                    return;
                }
                search_file(&path, &display, matcher, max_results, search);
            }
            // Symlinks (not followed) and special files.
            _ => {}
        }
    }
}

/// Search one file; binary files are skipped.
fn search_file(
    path: &Path,
    display: &str,
    matcher: &Matcher,
    max_results: usize,
    search: &mut Search,
) {
    let Ok(file) = File::open(path) else {
        search.unreadable += 1;
        return;
    };
    let mut bytes = Vec::new();
    if file
        .take(MAX_SEARCH_FILE + 1)
        .read_to_end(&mut bytes)
        .is_err()
    {
        search.unreadable += 1;
        return;
    }
    search.files_searched += 1;
    if bytes.len() as u64 > MAX_SEARCH_FILE {
        search.too_large += 1;
        return;
    }
    // Binary: NUL bytes near the start.
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return;
    }
    let text = String::from_utf8_lossy(&bytes);
    search.scan(matcher, display, &text, max_results);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system's temporary directory, removed
    /// when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "warden-files-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, relative: &str) -> String {
            self.0.join(relative).to_string_lossy().into_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn call(name: &str, arguments: serde_json::Value) -> Result<String, String> {
        Files::invoke(name.into(), arguments.to_string())
    }

    #[test]
    fn write_then_read() {
        let dir = TempDir::new();
        let file = dir.path("notes.txt");
        assert_eq!(
            call("write_file", json!({"path": file, "content": "one\n"})),
            Ok(format!("created `{file}` with 4 bytes"))
        );
        assert_eq!(
            call(
                "write_file",
                json!({"path": file, "content": "two\n", "append": true})
            ),
            Ok(format!("appended 4 bytes to `{file}`"))
        );
        assert_eq!(
            call("read_file", json!({"path": file})),
            Ok("one\ntwo\n".into())
        );
        assert_eq!(
            call("write_file", json!({"path": file, "content": "ü"})),
            Ok(format!("replaced the content of `{file}` with 2 bytes"))
        );
        assert_eq!(call("read_file", json!({"path": file})), Ok("ü".into()));
    }

    #[test]
    fn read_errors() {
        let dir = TempDir::new();
        let missing = dir.path("missing.txt");
        let err = read_file(&missing).unwrap_err();
        assert!(
            err.starts_with(&format!("`{missing}` does not exist")),
            "{err}"
        );
        let err = read_file(&dir.path("")).unwrap_err();
        assert!(err.contains("is a directory; use list_dir"), "{err}");
        fs::write(dir.path("bin"), b"\x89PNG\0\x01").unwrap();
        assert_eq!(
            read_file(&dir.path("bin")).unwrap_err(),
            format!(
                "`{}` is a binary file (6 bytes), not UTF-8 text; read_file reads text only",
                dir.path("bin")
            )
        );
        fs::write(dir.path("latin1"), b"caf\xe9").unwrap();
        assert!(
            read_file(&dir.path("latin1"))
                .unwrap_err()
                .contains("binary file")
        );
        fs::write(dir.path("big"), vec![b'a'; MAX_READ as usize + 1]).unwrap();
        assert!(
            read_file(&dir.path("big"))
                .unwrap_err()
                .contains("reads files up to 1048576 bytes")
        );
        fs::write(dir.path("exact"), vec![b'a'; MAX_READ as usize]).unwrap();
        assert_eq!(
            read_file(&dir.path("exact")).unwrap().len(),
            MAX_READ as usize
        );
        assert!(read_file("").unwrap_err().contains("`path` is empty"));
        let err = read_file("notes.txt").unwrap_err();
        assert!(err.contains("e.g. /workspace/notes.txt"), "{err}");
    }

    #[test]
    fn write_errors() {
        let dir = TempDir::new();
        let err = write_file(&dir.path("no/such/dir/x.txt"), "x", false).unwrap_err();
        assert!(
            err.contains(&format!(
                "the directory `{}` does not exist",
                dir.path("no/such/dir")
            )),
            "{err}"
        );
        let err = write_file(&dir.path(""), "x", false).unwrap_err();
        assert!(err.contains("give the path of a file"), "{err}");
        fs::create_dir(dir.path("sub")).unwrap();
        let err = write_file(&dir.path("sub"), "x", false).unwrap_err();
        assert!(
            err.contains("is a directory; give the path of a file"),
            "{err}"
        );
    }

    #[test]
    fn error_messages() {
        let denied = io::Error::from(ErrorKind::PermissionDenied);
        assert_eq!(
            io_error(Op::Write, "/data/x", &denied),
            "cannot write `/data/x`: the directory is mounted read-only (the sandbox grants \
             it for reading only)"
        );
        assert_eq!(
            io_error(
                Op::Write,
                "/data/x",
                &io::Error::from(ErrorKind::ReadOnlyFilesystem)
            ),
            io_error(Op::Write, "/data/x", &denied)
        );
        assert_eq!(
            io_error(Op::Read, "/secret", &denied),
            "permission denied: the sandbox does not allow reading `/secret`"
        );
        assert_eq!(
            io_error(
                Op::List,
                "/w/a.txt",
                &io::Error::from(ErrorKind::NotADirectory)
            ),
            "`/w/a.txt` is a file, not a directory; use read_file to read it"
        );
        assert_eq!(
            io_error(Op::Read, "/w", &io::Error::from(ErrorKind::IsADirectory)),
            "`/w` is a directory; use list_dir to see its entries"
        );
        assert_eq!(
            io_error(
                Op::Write,
                "/w/a/b.txt",
                &io::Error::from(ErrorKind::NotFound)
            ),
            "cannot write `/w/a/b.txt`: the directory `/w/a` does not exist or is not granted \
             to the sandbox; write into an existing directory (use list_dir to see one)"
        );
        assert_eq!(
            io_error(Op::Read, "a.txt", &io::Error::from(ErrorKind::NotFound)),
            "`a.txt` does not exist (or is not inside a directory the sandbox grants); paths \
             must be absolute, inside a granted directory (e.g. /workspace/a.txt); use \
             list_dir on its directory to see what is there"
        );
        assert_eq!(
            io_error(Op::List, "/", &io::Error::from(ErrorKind::NotFound)),
            "`/` is not a directory the sandbox grants: only the directories it mounts \
             (e.g. /workspace) can be used; give a path inside one of them"
        );
    }

    #[test]
    fn lists() {
        let dir = TempDir::new();
        fs::write(dir.path("b.txt"), "hello").unwrap();
        fs::create_dir(dir.path("a-dir")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path("b.txt"), dir.path("c-link")).unwrap();
        let listing: serde_json::Value =
            serde_json::from_str(&call("list_dir", json!({"path": dir.path("")})).unwrap())
                .unwrap();
        let mut expected = vec![
            json!({"name": "a-dir", "kind": "dir"}),
            json!({"name": "b.txt", "kind": "file", "size": 5}),
        ];
        if cfg!(unix) {
            expected.push(json!({"name": "c-link", "kind": "symlink"}));
        }
        assert_eq!(listing["entries"], json!(expected));
        assert_eq!(listing.get("total"), None);
        let err = list_dir(&dir.path("b.txt")).unwrap_err();
        assert!(err.contains("is a file, not a directory"), "{err}");
        assert!(
            list_dir(&dir.path("nope"))
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn long_listings_are_cut() {
        let entries = (0..MAX_ENTRIES + 5)
            .rev()
            .map(|i| Entry {
                name: format!("f{i:05}"),
                kind: "file",
                size: Some(1),
            })
            .collect();
        let listing = listing("/w", entries);
        assert_eq!(listing.entries.len(), MAX_ENTRIES);
        assert_eq!(listing.entries[0].name, "f00000");
        assert_eq!(listing.total, Some(MAX_ENTRIES + 5));
    }

    #[test]
    fn matcher_and_format() {
        let m = Matcher::new("Needle", false);
        assert_eq!(m.find("a Needle here"), Some(2));
        assert_eq!(m.find("a needle here"), None);
        let m = Matcher::new("Needle", true);
        assert_eq!(m.find("ünd NEEDLE"), Some(4));
        assert_eq!(
            format_match("a/b.rs", 3, "    let x = 1;\r", 8),
            "a/b.rs:3: let x = 1;"
        );
        let long = format!("{}needle{}", "x".repeat(500), "y".repeat(500));
        let shown = format_match("f", 1, &long, 500);
        assert!(shown.starts_with("f:1: …x"), "{shown}");
        assert!(shown.ends_with("y…"), "{shown}");
        assert!(shown.contains("needle"));
        assert_eq!(shown.chars().count(), "f:1: ".len() + MAX_LINE_CHARS + 2);
        let start = format!("needle{}", "z".repeat(400));
        let shown = format_match("f", 1, &start, 0);
        assert!(shown.starts_with("f:1: needle"));
        assert!(shown.ends_with("z…"));
    }

    #[test]
    fn searches() {
        let dir = TempDir::new();
        fs::create_dir_all(dir.path("src/deep")).unwrap();
        fs::write(dir.path("README.md"), "# Title\nTODO: write docs\n").unwrap();
        fs::write(
            dir.path("src/main.rs"),
            "fn main() {\n    // todo later\n}\n",
        )
        .unwrap();
        fs::write(dir.path("src/deep/x.txt"), "nothing\nTODO again\n").unwrap();
        fs::write(dir.path("src/blob.bin"), b"TODO\0binary").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path("src"), dir.path("loop")).unwrap();

        let found = search_files(&dir.path(""), "TODO", false, 50).unwrap();
        assert_eq!(
            found,
            "README.md:2: TODO: write docs\nsrc/deep/x.txt:2: TODO again"
        );
        let found = call(
            "search_files",
            json!({"path": dir.path(""), "pattern": "todo", "ignore_case": true}),
        )
        .unwrap();
        assert_eq!(
            found,
            "README.md:2: TODO: write docs\nsrc/deep/x.txt:2: TODO again\n\
             src/main.rs:2: // todo later"
        );
        let found = search_files(&dir.path(""), "todo", true, 1).unwrap();
        assert_eq!(
            found,
            "README.md:2: TODO: write docs\n[stopped at 1 match: narrow the pattern or the \
             path, or raise max_results]"
        );
        let found = search_files(&dir.path("src/main.rs"), "main", false, 50).unwrap();
        assert_eq!(found, "main.rs:1: fn main() {");
        let found = search_files(&dir.path(""), "absent", false, 50).unwrap();
        assert!(found.starts_with("no matches for `absent` in"), "{found}");
        assert!(found.ends_with("(4 files searched)"), "{found}");
        assert!(
            search_files(&dir.path(""), "", false, 50)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            search_files(&dir.path(""), "x", false, 0)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            search_files(&dir.path("nope"), "x", false, 5)
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn deep_trees_are_bounded() {
        let dir = TempDir::new();
        let mut deep = String::new();
        for i in 0..=MAX_DEPTH + 1 {
            deep.push_str(&format!("d{i}/"));
            fs::create_dir_all(dir.path(&deep)).unwrap();
            fs::write(dir.path(&format!("{deep}f.txt")), "hit").unwrap();
        }
        let found = search_files(&dir.path(""), "hit", false, 1000).unwrap();
        let hits = found.lines().filter(|l| l.ends_with(": hit")).count();
        assert_eq!(hits, MAX_DEPTH, "{found}");
        assert!(found.ends_with(&format!(
            "[directories nested more than {MAX_DEPTH} levels deep were not searched]"
        )));
    }

    #[test]
    fn tool_interface() {
        let specs = Files::describe();
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["read_file", "list_dir", "write_file", "search_files"]
        );
        for spec in &specs {
            let schema: serde_json::Value = serde_json::from_str(&spec.parameters_schema).unwrap();
            assert_eq!(schema["required"][0], "path");
        }
        let err = call("read_file", json!({"file": "/x"})).unwrap_err();
        assert!(err.contains("unknown field `file`"), "{err}");
        assert!(
            call("delete_file", json!({}))
                .unwrap_err()
                .contains("not `delete_file`")
        );
    }
}
