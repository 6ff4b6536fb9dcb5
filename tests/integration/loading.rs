//! Loading what a run is made of: bad policies, missing or wrong
//! components, and the compile cache.

use crate::harness::*;
use warden::load::PolicyFile;
use warden::run::RunError;
use warden::runtime::{Runtime, RuntimeConfig};

#[tokio::test]
async fn a_bad_policy_file_names_file_line_and_column() {
    let error = PolicyFile::from_text(
        "bad.toml".into(),
        repo(),
        "[model]\nallow = [\"scripted\"]\n\n[tools.calc]\ncomponent = \"builtin:calc\"\nmax_cals = 3\n".into(),
    )
    .unwrap_err()
    .render();
    assert!(
        error.contains("unknown field `max_cals`, expected one of `component`, `sha256`"),
        "{error}"
    );
    assert!(error.contains("help: did you mean `max_calls`?"), "{error}");
    assert!(error.contains("--> bad.toml:6:1"), "{error}");
    assert!(error.contains("6 | max_cals = 3"), "{error}");
}

#[tokio::test]
async fn a_missing_component_file_is_a_clear_error() {
    let policy = "[tools.calc]\ncomponent = \"tools/missing.wasm\"\n";
    let (result, _) = try_run("builtin:react", policy, no_model(), "x").await;
    let Err(RunError::Policy(error)) = result else {
        panic!("expected a policy error, got {result:?}");
    };
    let text = error.render();
    assert!(
        text.contains("the component of [tools.calc] cannot be loaded: cannot read"),
        "{text}"
    );
    assert!(
        text.contains("tools/missing.wasm: No such file or directory"),
        "{text}"
    );
    assert!(text.contains("--> test-policy.toml:2:13"), "{text}");
    assert!(
        text.contains("help: paths are relative to the policy file"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_agent_file_is_a_clear_error() {
    let (result, records) = try_run("agents/none.wasm", "", no_model(), "x").await;
    let Err(RunError::Agent(error)) = result else {
        panic!("expected an agent error, got {result:?}");
    };
    assert!(
        error.starts_with("the agent cannot be loaded: cannot read"),
        "{error}"
    );
    assert!(
        error.ends_with("agents/none.wasm: No such file or directory (os error 2)"),
        "{error}"
    );
    assert!(records.is_empty(), "nothing ran, so nothing is recorded");
}

#[tokio::test]
async fn a_tool_the_component_does_not_provide_is_refused_at_load() {
    let policy = "[tools.grep]\ncomponent = \"builtin:text\"\n";
    let (result, _) = try_run("builtin:react", policy, no_model(), "x").await;
    let Err(RunError::Policy(error)) = result else {
        panic!("{result:?}");
    };
    let text = error.render();
    assert!(
        text.contains("`builtin:text` does not provide a tool named `grep`"),
        "{text}"
    );
    assert!(
        text.contains("help: it provides `word_count`, `regex_search`"),
        "{text}"
    );
    assert!(text.contains("--> test-policy.toml:1:8"), "{text}");
}

#[tokio::test]
async fn components_of_the_wrong_kind_are_refused() {
    let (result, _) = try_run("builtin:calc", "", no_model(), "x").await;
    let Err(RunError::Agent(error)) = result else {
        panic!("{result:?}");
    };
    assert!(
        error.starts_with("`builtin:calc` is not a warden agent"),
        "{error}"
    );

    let policy = "[tools.calc]\ncomponent = \"builtin:react\"\n";
    let (result, _) = try_run("builtin:react", policy, no_model(), "x").await;
    let Err(RunError::Policy(error)) = result else {
        panic!("{result:?}");
    };
    assert!(
        error
            .render()
            .contains("`builtin:react` is not a warden tool component")
    );

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (result, _) = try_run(core.to_str().unwrap(), "", no_model(), "x").await;
    let Err(RunError::Agent(error)) = result else {
        panic!("{result:?}");
    };
    assert!(error.contains("is not a WebAssembly component"), "{error}");
}

#[test]
fn a_second_load_comes_from_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 4,
    };
    let bytes = std::fs::read(guests::ECHO_TOOL).unwrap();
    {
        let first = Runtime::new(config.clone())
            .unwrap()
            .load("echo", &bytes)
            .unwrap();
        assert!(!first.cache_hit);
        // A new runtime (as a new process would have) finds the compiled file.
        let second = Runtime::new(config.clone())
            .unwrap()
            .load("echo", &bytes)
            .unwrap();
        assert!(second.cache_hit);
        assert_eq!(first.sha256, second.sha256);
    }
    // A cache file corrupted at rest is recompiled, not trusted. (Cached
    // files are mapped while in use; warden only ever replaces them by
    // rename, never rewrites them in place.)
    for path in compiled_files(dir.path()) {
        std::fs::write(path, b"garbage").unwrap();
    }
    let third = Runtime::new(config).unwrap().load("echo", &bytes).unwrap();
    assert!(!third.cache_hit);
}

fn compiled_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_cache_file_swapped_for_another_components_code_is_not_run() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 4,
    };
    let echo = std::fs::read(guests::ECHO_TOOL).unwrap();
    let probe = std::fs::read(guests::PROBE_TOOL).unwrap();
    let runtime = Runtime::new(config.clone()).unwrap();
    let echo_sha = runtime.load("echo", &echo).unwrap().sha256;
    runtime.load("probe", &probe).unwrap();
    drop(runtime);
    // Every file is the user's alone.
    for path in compiled_files(dir.path())
        .iter()
        .chain([&dir.path().join(".key")])
    {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    // The attacker puts the probe's compiled code where echo's belongs.
    let files = compiled_files(dir.path());
    let (echo_file, probe_file): (Vec<_>, Vec<_>) = files.iter().partition(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&echo_sha)
    });
    std::fs::copy(probe_file[0], echo_file[0]).unwrap();
    let loaded = Runtime::new(config.clone())
        .unwrap()
        .load("echo", &echo)
        .unwrap();
    assert!(!loaded.cache_hit, "the swapped file was trusted");
    // The recompiled file is echo's again, and trusted next time.
    let again = Runtime::new(config.clone())
        .unwrap()
        .load("echo", &echo)
        .unwrap();
    assert!(again.cache_hit);

    // A cache directory others may write is not used at all.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let shared = Runtime::new(config).unwrap().load("echo", &echo).unwrap();
    assert!(!shared.cache_hit);
}
