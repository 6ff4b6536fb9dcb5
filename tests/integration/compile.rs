//! `warden compile` fills the compile cache ahead of a run, and a first
//! compile says it is happening.

use crate::harness::{guests, repo};
use std::path::Path;
use std::process::{Command, Output};

fn warden(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A policy and an agent compiled ahead: the run that follows loads the
/// agent from the cache.
#[test]
fn compile_warms_the_cache_for_the_run_that_follows() {
    let cache = tempfile::tempdir().unwrap();
    let first = warden(
        cache.path(),
        &["compile", "policies/demo.toml", "builtin:react"],
    );
    let stdout = text(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", text(&first.stderr));
    assert!(stdout.contains("builtin:calc: compiled\n"), "{stdout}");
    assert!(
        stdout.contains("builtin:react: an agent, compiled"),
        "{stdout}"
    );
    let again = warden(
        cache.path(),
        &["compile", "policies/demo.toml", "builtin:react"],
    );
    let stdout = text(&again.stdout);
    assert!(
        stdout.contains("builtin:calc: already in the cache"),
        "{stdout}"
    );
    assert!(
        stdout.contains("builtin:react: an agent, already in the cache"),
        "{stdout}"
    );
    let audit = cache.path().join("audit.jsonl");
    let run = warden(
        cache.path(),
        &["demo", "--quiet", "--audit", audit.to_str().unwrap()],
    );
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("agent loaded from the compile cache"),
        "{stderr}"
    );
}

/// What cannot be compiled is bad input, named.
#[test]
fn compile_refuses_what_it_cannot_compile() {
    let cache = tempfile::tempdir().unwrap();
    for (target, says) in [
        ("nope.wasm", "cannot read nope.wasm:"),
        ("builtin:nope", "there is no built-in component `nope`"),
        (
            "https://tools.example.com/t.wasm",
            "only with its `sha256` pin",
        ),
        ("Cargo.toml", "error: "),
    ] {
        let out = warden(cache.path(), &["compile", target]);
        assert_eq!(out.status.code(), Some(2), "{target}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{target}: {stderr}");
    }
}

/// A large component's first compile prints one line on stderr when no
/// terminal is attached (a log, CI); from the cache, nothing.
#[test]
fn a_first_compile_says_so_once_and_a_cached_one_says_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let component = guests::WORDFREQ_PY;
    assert!(
        Path::new(component).exists(),
        "{component} was not built: run `make setup`, then build again"
    );
    let first = warden(cache.path(), &["compile", component]);
    let stderr = text(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("compiling "))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].ends_with(" MiB), first time only"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no terminal codes into a pipe: {stderr:?}"
    );
    assert!(
        text(&first.stdout).contains(": a tool, compiled"),
        "{}",
        text(&first.stdout)
    );
    let again = warden(cache.path(), &["compile", component]);
    assert_eq!(text(&again.stderr), "");
    assert!(text(&again.stdout).contains(": a tool, already in the cache"));
}
