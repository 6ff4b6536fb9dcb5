//! Builds every guest in the workspace (agents, tools, attack guests) from
//! source for `wasm32-wasip2`, once, into `<target>/guests`.
//!
//! - The bundled demo guests (`agents/react`, `tools/calc`, `tools/text`) are
//!   embedded in the `warden` binary as `builtin:NAME` components.
//! - Every guest's path is written to `$OUT_DIR/guests.rs`, which the
//!   integration tests and benches include, so no `.wasm` is ever committed.
//!
//! The nested cargo uses its own target directory so it never waits on the
//! lock of the build that runs this script.
//!
//! The Python and JavaScript guests need componentize-py and
//! componentize-js, which only `make setup` installs (`make demo` and the
//! `warden` binary need only Rust). Installing them must make the next
//! build build those guests, so this script watches `target/guest-tools.stamp`,
//! which `make setup` touches after it (re)installs either tool.
//!
//! `WARDEN_GUESTS_DIR` names a directory of guests already built (the
//! `wasm32-wasip2/release` directory of a guest build); then nothing is
//! built here. `make fuzz` uses it: the fuzzers build with a nightly
//! toolchain that may have no wasm32-wasip2 standard library.

use sha2::Digest as _;
use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// (package, artifact) of the guests embedded in the binary.
const BUNDLED: &[(&str, &str)] = &[
    ("react", "react"),
    ("calc", "calc"),
    ("text", "text"),
    ("fetch", "fetch"),
    ("files", "files"),
];
const TEST_GUESTS_PACKAGE: &str = "warden-test-guests";
/// (package, artifact) of the benchmarks' fixture guests (`bench/`).
const BENCH_GUESTS: &[(&str, &str)] = &[("injection-tool", "injection_tool")];

/// Python guests, built with componentize-py: (source dir, module, world,
/// artifact).
const PYTHON_GUESTS: &[(&str, &str, &str, &str)] = &[
    ("tools/wordfreq-py", "app", "tool", "wordfreq_py"),
    ("tools/python-exec", "app", "tool-http", "python_exec"),
    ("agents/react-py", "app", "agent", "react_py"),
    ("agents/codeact-py", "app", "agent", "codeact_py"),
];
/// JavaScript guests, built with componentize-js: (source file, world,
/// artifact).
const JS_GUESTS: &[(&str, &str, &str)] = &[("tools/jsonpath-js/tool.js", "tool", "jsonpath_js")];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root")
        .to_path_buf();

    // Every source file, not whole directories: the Python builder writes
    // `__pycache__` into its source directories, guest-sdk/js holds a
    // large node_modules, and the JS build makes a scratch directory there.
    for watched in [
        "guest-sdk",
        "agents",
        "tools",
        "tests/guests",
        "bench/injection/tool",
    ] {
        watch(&workspace.join(watched));
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=WARDEN_GUEST_TARGET_DIR");
    println!("cargo:rerun-if-env-changed=WARDEN_GUESTS_DIR");
    println!("cargo:rerun-if-env-changed=WARDEN_COMPONENTIZE_PY");
    watch_setup_stamp(&workspace);
    let test_guests = test_guest_names(&workspace.join("tests/guests/src/bin"));
    let (artifacts, other) = match env::var_os("WARDEN_GUESTS_DIR") {
        Some(prebuilt) => (PathBuf::from(prebuilt.clone()), PathBuf::from(prebuilt)),
        None => {
            let artifacts = build_guests(&out_dir, &workspace);
            let other = guest_target_dir(&out_dir).join("other");
            let mut skipped = build_python_guests(&workspace, &other);
            skipped.extend(build_js_guests(&workspace, &other));
            warn_skipped(&skipped);
            (artifacts, other)
        }
    };
    write_outputs(&out_dir, &artifacts, test_guests, &other);
}

/// Where `make setup` records that it installed the guest tools, relative to
/// the workspace (beside `target/venv`).
const SETUP_STAMP: &str = "target/guest-tools.stamp";

/// Rerun this script when `make setup` has installed componentize-py or
/// componentize-js. cargo reruns a script on every build while a watched
/// path is missing (which would recompile the host each time), so a missing
/// stamp is created here, dated 1970 so that it does not look changed since
/// this run; then `make setup` (whose rule is older than its markers) touches
/// it once the tools are in. If it cannot be created, it is not watched: a
/// build after `make setup` then needs `touch host/build.rs`.
fn watch_setup_stamp(workspace: &Path) {
    let stamp = workspace.join(SETUP_STAMP);
    let exists = stamp.exists()
        || stamp.parent().is_some_and(|dir| {
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::File::create(&stamp))
                .and_then(|file| file.set_modified(std::time::SystemTime::UNIX_EPOCH))
                .is_ok()
        });
    if exists {
        println!("cargo:rerun-if-changed={}", stamp.display());
    }
}

/// One line for every guest not built because its tool is missing: that is
/// expected before `make setup`, not a failure.
fn warn_skipped(skipped: &[&str]) {
    if !skipped.is_empty() {
        println!(
            "cargo:warning=the Python and JavaScript guests ({}) are skipped until `make setup` installs componentize-py and componentize-js; `make demo` and the warden binary need only Rust (`make test` runs setup itself)",
            skipped.join(", ")
        );
    }
}

/// Build the Python guests with componentize-py, installed by `make setup`
/// into `target/venv` (or named by `WARDEN_COMPONENTIZE_PY`). Returns the
/// guests skipped because it is missing: the tests that need them say to
/// run `make setup`.
fn build_python_guests(workspace: &Path, out: &Path) -> Vec<&'static str> {
    let tool = env::var_os("WARDEN_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/venv/bin/componentize-py"));
    if tool.exists() {
        // A reinstalled (upgraded) tool rebuilds the guests too.
        println!("cargo:rerun-if-changed={}", tool.display());
    }
    let sdk = workspace.join("guest-sdk/python");
    let mut skipped = Vec::new();
    for (dir, module, world, artifact) in PYTHON_GUESTS {
        let output = out.join(format!("{artifact}.wasm"));
        let sources = [
            workspace.join(dir),
            sdk.clone(),
            workspace.join("guest-sdk/wit"),
        ];
        if is_fresh(&output, &sources) {
            continue;
        }
        if !tool.exists() {
            skipped.push(*dir);
            continue;
        }
        std::fs::create_dir_all(out).expect("create the guests directory");
        let mut command = Command::new(&tool);
        command
            .current_dir(workspace)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .args([
                "-d",
                "guest-sdk/wit",
                "-w",
                world,
                "componentize",
                "-p",
                dir,
                "-p",
            ])
            .arg(&sdk)
            .arg(module)
            .arg("-o")
            .arg(&output);
        run_builder(command, dir);
    }
    skipped
}

/// Build the JavaScript guests with componentize-js, installed by `make
/// setup` into `guest-sdk/js/node_modules`. Returns the guests skipped
/// because it is missing.
fn build_js_guests(workspace: &Path, out: &Path) -> Vec<&'static str> {
    let sdk = workspace.join("guest-sdk/js");
    let installed = sdk.join("node_modules/@bytecodealliance/componentize-js");
    if installed.is_dir() {
        println!(
            "cargo:rerun-if-changed={}",
            installed.join("package.json").display()
        );
    }
    let mut skipped = Vec::new();
    for (source, world, artifact) in JS_GUESTS {
        let output = out.join(format!("{artifact}.wasm"));
        let dir = Path::new(source)
            .parent()
            .expect("a source file has a directory");
        let sources = [
            workspace.join(dir),
            sdk.join("warden-tool.js"),
            sdk.join("componentize.mjs"),
            sdk.join("disabled"),
            sdk.join("package-lock.json"),
            workspace.join("guest-sdk/wit"),
        ];
        if is_fresh(&output, &sources) {
            continue;
        }
        if !installed.is_dir() {
            skipped.push(*source);
            continue;
        }
        std::fs::create_dir_all(out).expect("create the guests directory");
        let mut command = Command::new("node");
        command
            .current_dir(workspace)
            .arg(sdk.join("componentize.mjs"))
            .args([source, "guest-sdk/wit", world])
            .arg(&output);
        run_builder(command, source);
    }
    skipped
}

fn run_builder(mut command: Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run the builder of {what}: {e}"));
    if !output.status.success() {
        panic!(
            "building {what} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Tell cargo to rerun this script when a source file under `dir` changes.
/// A directory is watched as a whole (which also notices files added to
/// it) only when nothing generated lives anywhere under it, since cargo
/// would scan that too. Returns whether `dir` was watched whole.
fn watch(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut files = Vec::new();
    let mut whole = true;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if skipped(&entry.file_name().to_string_lossy()) {
            whole = false;
        } else if path.is_dir() {
            whole &= watch(&path);
        } else {
            files.push(path);
        }
    }
    if whole {
        println!("cargo:rerun-if-changed={}", dir.display());
    } else {
        for file in files {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
    whole
}

/// Directories that are generated or installed, not sources.
fn skipped(name: &str) -> bool {
    name.starts_with('.') || name == "__pycache__" || name == "node_modules" || name == "target"
}

/// Whether `output` exists and is newer than every file under `sources`.
fn is_fresh(output: &Path, sources: &[PathBuf]) -> bool {
    let Ok(built) = output.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    sources
        .iter()
        .all(|source| newest(source).is_none_or(|t| t <= built))
}

fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| !skipped(&entry.file_name().to_string_lossy()))
        .filter_map(|entry| newest(&entry.path()))
        .max()
}

/// Build every guest; returns the directory holding the `.wasm` files.
fn build_guests(out_dir: &Path, workspace: &Path) -> PathBuf {
    check_target_installed();
    let target_dir = guest_target_dir(out_dir);

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (package, _) in BUNDLED {
        command.args(["-p", package]);
    }
    command.args(["-p", TEST_GUESTS_PACKAGE]);
    for (package, _) in BENCH_GUESTS {
        command.args(["-p", package]);
    }
    // The outer build's flags and wrappers (clippy-driver, coverage, -D
    // warnings for the host) are not meant for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo to build the guests: {e}"));
    if !output.status.success() {
        panic!(
            "building the guests for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    target_dir.join(TARGET).join("release")
}

fn write_outputs(out_dir: &Path, artifacts: &Path, test_guests: Vec<String>, other: &Path) {
    let mut bundled = String::from("// Generated by host/build.rs.\n");
    // Each bundled component is hashed here, once, instead of on every run
    // (its pin and compile-cache key). The binary embeds the copy in
    // OUT_DIR that was hashed, so the hash is of the very bytes embedded,
    // even if the guest is rebuilt meanwhile.
    let copies = out_dir.join("bundled");
    std::fs::create_dir_all(&copies).expect("create OUT_DIR/bundled");
    for (_, artifact) in BUNDLED {
        let path = artifacts.join(format!("{artifact}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} was not built: {e}", path.display()));
        let copy = copies.join(format!("{artifact}.wasm"));
        std::fs::write(&copy, &bytes).expect("copy a bundled component");
        let sha256: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = artifact.to_uppercase();
        writeln!(
            bundled,
            "pub(crate) const {name}: &[u8] = include_bytes!({copy:?});\npub(crate) const {name}_SHA256: &str = {sha256:?};",
        )
        .expect("writing to a String");
    }
    std::fs::write(out_dir.join("bundled.rs"), bundled).expect("write bundled.rs");

    let mut paths =
        String::from("// Generated by host/build.rs: paths of the guests built from source.\n");
    let all = BUNDLED
        .iter()
        .chain(BENCH_GUESTS)
        .map(|(_, artifact)| artifact.to_string())
        .chain(test_guests);
    for name in all {
        let path = artifacts.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        writeln!(
            paths,
            "#[allow(dead_code)]\npub const {}: &str = {:?};",
            name.to_uppercase(),
            path
        )
        .expect("writing to a String");
    }
    // Python and JavaScript guests: their paths, built or not (a test that
    // needs a missing one says to run `make setup`).
    let others = PYTHON_GUESTS
        .iter()
        .map(|(_, _, _, artifact)| *artifact)
        .chain(JS_GUESTS.iter().map(|(_, _, artifact)| *artifact));
    for name in others {
        writeln!(
            paths,
            "#[allow(dead_code)]\npub const {}: &str = {:?};",
            name.to_uppercase(),
            other.join(format!("{name}.wasm"))
        )
        .expect("writing to a String");
    }
    std::fs::write(out_dir.join("guests.rs"), paths).expect("write guests.rs");
}

/// Where guests are built: `WARDEN_GUEST_TARGET_DIR`, else `<target>/guests`.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    env::var_os("WARDEN_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_target_dir(out_dir).join("guests"))
}

/// The target directory of the build running this script: the nearest
/// ancestor of `OUT_DIR` that cargo marked as one. cargo writes
/// `CACHEDIR.TAG` only when it creates the directory itself (not when
/// `make setup` made `target/venv` first), but `.rustc_info.json` on every
/// build.
fn cargo_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file() || dir.join(".rustc_info.json").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("target"))
}

fn test_guest_names(bin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bin_dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", bin_dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if !libdir.is_some_and(|dir| dir.is_dir()) {
        panic!(
            "the Rust target {TARGET} is not installed; warden builds its guests for it.\n\
             Run `rustup target add {TARGET}` (or `make setup`) and build again."
        );
    }
}
