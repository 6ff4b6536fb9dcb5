//! `warden call` (one tool, no agent) and `warden new` (a project that
//! builds and runs with one command), as a user runs them: the projects
//! are generated, built with the real toolchains (cargo for
//! wasm32-wasip2, componentize-py from `target/venv`, componentize-js from
//! `guest-sdk/js/node_modules`), tested with their own test command, and
//! called or run by the `warden` binary.

use crate::harness::{cache_dir, guests, repo};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `warden ARGS` in `dir`, with the tests' compile cache and audit logs
/// under `state` (the default place, `$XDG_STATE_HOME/warden/runs`).
fn warden(dir: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(dir)
        .env("WARDEN_CACHE_DIR", cache_dir())
        .env("XDG_STATE_HOME", state)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `out` exited with `code`; shows both streams when not.
fn exited(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// The audit logs written under `state`, each one's records.
fn audit_logs(state: &Path) -> Vec<(PathBuf, Vec<Value>)> {
    let Ok(entries) = std::fs::read_dir(state.join("warden/runs")) else {
        return Vec::new();
    };
    entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let records = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            (path, records)
        })
        .collect()
}

/// Run a project's own command (its build or its tests), which must pass.
fn run_ok(mut command: Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    format!("{stdout}{stderr}")
}

#[test]
fn call_runs_a_pure_tool_with_no_policy_and_refuses_what_grants_would_allow() {
    let state = tempfile::tempdir().unwrap();
    let dir = repo();

    // A pure tool needs nothing: into a pipe, the result as it is.
    let out = warden(
        &dir,
        state.path(),
        &["call", "builtin:calc", "calc", r#"{"expression": "6 * 7"}"#],
    );
    let (stdout, stderr) = exited(&out, 0);
    assert_eq!(stdout, "42\n");
    assert!(stderr.contains("audit log: "), "{stderr}");
    // An audit log is written all the same, in the default place: the
    // call's decision and outcome between a first and an end record.
    let logs = audit_logs(state.path());
    assert_eq!(logs.len(), 1, "{logs:?}");
    let records = &logs[0].1;
    assert_eq!(records[0]["data"]["call"]["tool"], "calc");
    let decision = records
        .iter()
        .find(|r| r["kind"] == "tool" && r["event"] == "decision")
        .unwrap();
    assert_eq!(
        (&decision["decision"], &decision["rule"]),
        (&Value::from("allow"), &Value::from("tools.calc"))
    );
    assert_eq!(records.last().unwrap()["outcome"], "ok");
    let verify = warden(
        &dir,
        state.path(),
        &["audit", "verify", logs[0].0.to_str().unwrap()],
    );
    exited(&verify, 0);

    // A tool that needs HTTP gets none: its request is refused (the tool
    // reports it), exit 1, with the rule and how to grant it.
    let out = warden(
        &dir,
        state.path(),
        &[
            "call",
            "builtin:fetch",
            "fetch",
            r#"{"url": "https://example.com/"}"#,
        ],
    );
    let (stdout, stderr) = exited(&out, 1);
    assert_eq!(stdout, "");
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(
        stderr.contains("http: tool `fetch` has no HTTP grant (rule: tools.fetch.http)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("with no --policy the tool is granted nothing"),
        "{stderr}"
    );

    // --json: the same, as one object for a program.
    let out = warden(
        &dir,
        state.path(),
        &[
            "call",
            "builtin:calc",
            "calc",
            r#"{"expression": "2 ^ 10"}"#,
            "--json",
        ],
    );
    let (stdout, _) = exited(&out, 0);
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["result"], "1024");
    assert_eq!(value["decision"], "allow");
    assert_eq!(value["rule"], "tools.calc");
    assert!(value.get("error").is_none(), "{value}");
}

#[test]
fn call_under_a_policy_is_decided_by_the_tools_entry_and_names_the_rule() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[tools.calc]\ncomponent = \"builtin:calc\"\nargs.expression = { matches = '[0-9 +*]+' }\n",
    )
    .unwrap();
    let policy = policy.to_str().unwrap();

    let allowed = warden(
        dir.path(),
        state.path(),
        &[
            "call",
            guests::CALC,
            "calc",
            r#"{"expression": "2 + 3"}"#,
            "-p",
            policy,
        ],
    );
    assert_eq!(exited(&allowed, 0).0, "5\n");

    // The policy's argument rule refuses: exit 1, the rule named.
    let denied = warden(
        dir.path(),
        state.path(),
        &[
            "call",
            guests::CALC,
            "calc",
            r#"{"expression": "sqrt(2)"}"#,
            "-p",
            policy,
            "--json",
        ],
    );
    let (stdout, _) = exited(&denied, 1);
    let value: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(value["decision"], "deny", "{value}");
    assert_eq!(value["rule"], "tools.calc.args.expression", "{value}");
    assert_eq!(value["kind"], "denied", "{value}");
    assert!(value.get("result").is_none(), "{value}");

    // A tool the policy has no entry for is denied by its default.
    let unknown = warden(
        dir.path(),
        state.path(),
        &[
            "call",
            "builtin:text",
            "word_count",
            r#"{"text": "a b"}"#,
            "-p",
            policy,
        ],
    );
    let (_, stderr) = exited(&unknown, 1);
    assert!(stderr.contains("(rule: default)"), "{stderr}");

    // Arguments outside the tool's schema: invalid, named by its rule.
    let invalid = warden(
        dir.path(),
        state.path(),
        &[
            "call",
            guests::CALC,
            "calc",
            r#"{"expr": "1"}"#,
            "-p",
            policy,
        ],
    );
    let (_, stderr) = exited(&invalid, 1);
    assert!(stderr.contains("rule: tools.calc.schema"), "{stderr}");
}

#[test]
fn call_refuses_bad_input_with_exit_2_naming_it() {
    let state = tempfile::tempdir().unwrap();
    let dir = repo();
    let cases: &[(&[&str], &str)] = &[
        (
            &["call", "builtin:calc", "calc", "{\"expression\": "],
            "ARGUMENTS (the third argument) is not valid JSON",
        ),
        (
            &["call", "builtin:calc", "calc", "[1, 2]"],
            "ARGUMENTS (the third argument) must be a JSON object",
        ),
        (
            &["call", "builtin:calc", "calc", r#"{"a": 1, "a": 2}"#],
            "ARGUMENTS (the third argument) is not valid JSON",
        ),
        (&["call", "nope.wasm", "calc"], "cannot read"),
        (
            &["call", "builtin:calc", "calculate"],
            "does not provide a tool named `calculate`",
        ),
        (&["call", "https://example.com/t.wasm", "t"], "is a URL"),
        (
            &["call", "builtin:calc", "calc", "-p", "no-such-policy.toml"],
            "cannot read the policy file",
        ),
    ];
    for (args, expected) in cases {
        let out = warden(&dir, state.path(), args);
        let (stdout, stderr) = exited(&out, 2);
        assert_eq!(stdout, "", "{args:?}");
        assert!(stderr.starts_with("error"), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("error: error:"), "{args:?}: {stderr}");
    }
}

#[test]
fn new_refuses_a_non_empty_directory_and_names_no_project_can_have() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    std::fs::write(dir.path().join("taken/keep.txt"), "mine").unwrap();
    let out = warden(dir.path(), state.path(), &["new", "tool", "taken"]);
    let (_, stderr) = exited(&out, 2);
    assert!(stderr.contains("exists and is not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("taken/keep.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("taken")).unwrap().count(),
        1
    );

    for name in ["Upper", "1st", "two words", "fn"] {
        let out = warden(dir.path(), state.path(), &["new", "tool", name]);
        let (_, stderr) = exited(&out, 2);
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(!dir.path().join(name).exists(), "{name}");
    }
    let out = warden(
        dir.path(),
        state.path(),
        &[
            "new",
            "tool",
            "--lang",
            "python",
            "x",
            "--sdk",
            "/nonexistent",
        ],
    );
    let (_, stderr) = exited(&out, 2);
    assert!(
        stderr.contains("pass --sdk PATH to a warden checkout"),
        "{stderr}"
    );

    // An empty directory is fine.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let out = warden(dir.path(), state.path(), &["new", "agent", "empty"]);
    exited(&out, 0);
    assert!(dir.path().join("empty/src/lib.rs").is_file());
}

/// `warden new KIND --lang LANG NAME` in a new temp dir; the project's path.
fn new_project(root: &Path, state: &Path, kind: &str, lang: &str, name: &str) -> PathBuf {
    let sdk = repo();
    let out = warden(
        root,
        state,
        &[
            "new",
            kind,
            "--lang",
            lang,
            name,
            "--sdk",
            sdk.to_str().unwrap(),
        ],
    );
    let (stdout, _) = exited(&out, 0);
    assert!(stdout.contains(&format!("cd {name}")), "{stdout}");
    let project = root.join(name);
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    // What the README says to run is what the tests below run.
    assert!(readme.contains("warden "), "{readme}");
    project
}

/// `warden check --strict policy.toml` in `project` passes with no warning.
fn check_strict(project: &Path, state: &Path) {
    let out = warden(project, state, &["check", "--strict", "policy.toml"]);
    let (stdout, stderr) = exited(&out, 0);
    assert!(stdout.contains("valid, 0 warning(s)"), "{stdout}{stderr}");
}

/// The target directory the guests of this workspace are built in: the
/// generated Rust projects build there too, so their dependencies (serde,
/// wit-bindgen) are compiled once.
fn guest_target_dir() -> PathBuf {
    Path::new(guests::CALC)
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf()
}

/// cargo for a generated project: offline (its dependencies are the
/// workspace's, already downloaded), without the outer build's flags.
fn cargo(project: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command
        .args(args)
        .arg("--offline")
        .current_dir(project)
        .env("CARGO_TARGET_DIR", guest_target_dir());
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    command
}

/// Build a generated Rust project as its README says, and put the
/// component where that build leaves it without CARGO_TARGET_DIR.
fn build_rust(project: &Path, artifact: &str) -> PathBuf {
    run_ok(
        cargo(
            project,
            &["build", "--target", "wasm32-wasip2", "--release"],
        ),
        "cargo build",
    );
    let built = guest_target_dir().join(format!("wasm32-wasip2/release/{artifact}.wasm"));
    let component = project.join(format!("target/wasm32-wasip2/release/{artifact}.wasm"));
    std::fs::create_dir_all(component.parent().unwrap()).unwrap();
    std::fs::copy(&built, &component).unwrap();
    // Its unit tests, natively. `--release`: the proc macros the wasm build
    // compiled are reused (a debug `cargo test` compiles them again, about
    // a minute on two cores); the tests are the same.
    let tests = run_ok(cargo(project, &["test", "--release"]), "cargo test");
    assert!(tests.contains("test result: ok. 3 passed"), "{tests}");
    component
}

#[test]
fn a_new_rust_tool_builds_passes_its_tests_and_answers_warden_call() {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), state.path(), "tool", "rust", "word-count");
    let cargo_toml = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(cargo_toml.contains("guest-sdk/rust"), "{cargo_toml}");
    build_rust(&project, "word_count");
    check_strict(&project, state.path());
    let out = warden(
        &project,
        state.path(),
        &[
            "call",
            "target/wasm32-wasip2/release/word_count.wasm",
            "word_count",
            r#"{"text": "hello warden"}"#,
            "--policy",
            "policy.toml",
        ],
    );
    assert_eq!(exited(&out, 0).0, "{\"characters\":12,\"words\":2}\n");
}

#[test]
fn a_new_rust_agent_builds_passes_its_tests_and_runs_under_its_policy() {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), state.path(), "agent", "rust", "helper");
    build_rust(&project, "helper");
    check_strict(&project, state.path());
    let out = warden(
        &project,
        state.path(),
        &[
            "run",
            "target/wasm32-wasip2/release/helper.wasm",
            "--policy",
            "policy.toml",
            "--task",
            "What is 6 * 7?",
            "-q",
        ],
    );
    assert_eq!(exited(&out, 0).0, "6 * 7 = 42\n");
}

fn componentize_py() -> PathBuf {
    let tool = repo().join("target/venv/bin/componentize-py");
    assert!(
        tool.exists(),
        "{} is missing: Python projects need componentize-py; run `make setup`",
        tool.display()
    );
    tool
}

/// Build a generated Python project (`sh build.sh`) and run its unit
/// tests (`python -m unittest`), with the toolchain `make setup` installed.
fn build_python(project: &Path) {
    let tool = componentize_py();
    let python = tool.with_file_name("python");
    let mut test = Command::new(&python);
    test.args(["-m", "unittest", "-v"]).current_dir(project);
    let tests = run_ok(test, "python -m unittest");
    assert!(tests.contains("Ran 3 tests"), "{tests}");
    let mut build = Command::new("sh");
    build
        .arg("build.sh")
        .current_dir(project)
        .env("COMPONENTIZE_PY", &tool);
    run_ok(build, "sh build.sh");
}

#[test]
fn a_new_python_tool_builds_passes_its_tests_and_answers_warden_call() {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), state.path(), "tool", "python", "word-count");
    build_python(&project);
    check_strict(&project, state.path());
    let out = warden(
        &project,
        state.path(),
        &[
            "call",
            "word_count.wasm",
            "word_count",
            r#"{"text": "hello warden"}"#,
            "--policy",
            "policy.toml",
        ],
    );
    assert_eq!(exited(&out, 0).0, "{\"words\": 2, \"characters\": 12}\n");
}

#[test]
fn a_new_python_agent_passes_its_tests() {
    // Its component build and run are those of the Python tool above and
    // of agents/react-py (languages.rs); the loop is tested here.
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), state.path(), "agent", "python", "helper");
    let python = componentize_py().with_file_name("python");
    let mut test = Command::new(&python);
    test.args(["-m", "unittest", "-v"]).current_dir(&project);
    let tests = run_ok(test, "python -m unittest");
    assert!(tests.contains("Ran 3 tests"), "{tests}");
}

/// `npm install` (offline: it links the SDK, whose node_modules `make
/// setup` installed), `npm test`, `npm run build`.
fn build_js(project: &Path) {
    let sdk = repo().join("guest-sdk/js/node_modules/@bytecodealliance/componentize-js");
    assert!(
        sdk.is_dir(),
        "{} is missing: JavaScript projects need componentize-js; run `make setup`",
        sdk.display()
    );
    let package = std::fs::read_to_string(project.join("package.json")).unwrap();
    let package: Value = serde_json::from_str(&package).unwrap();
    assert_eq!(package["type"], "module");
    let dependency = package["devDependencies"]["warden-guest-js"]
        .as_str()
        .unwrap();
    assert!(dependency.starts_with("file:"), "{dependency}");
    let npm = |args: &[&str]| {
        let mut command = Command::new("npm");
        command
            .args(args)
            .args(["--offline", "--no-audit", "--no-fund"])
            .current_dir(project)
            .env("WARDEN_LOG", "0");
        command
    };
    run_ok(npm(&["install"]), "npm install");
    let tests = run_ok(npm(&["test"]), "npm test");
    assert!(tests.contains("# pass 3"), "{tests}");
    assert!(tests.contains("# fail 0"), "{tests}");
    run_ok(npm(&["run", "build"]), "npm run build");
}

#[test]
fn a_new_js_tool_builds_passes_its_tests_and_answers_warden_call() {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), state.path(), "tool", "js", "word-count");
    build_js(&project);
    check_strict(&project, state.path());
    let out = warden(
        &project,
        state.path(),
        &[
            "call",
            "word_count.wasm",
            "word_count",
            r#"{"text": "hello warden"}"#,
            "--policy",
            "policy.toml",
        ],
    );
    assert_eq!(exited(&out, 0).0, "{\"words\":2,\"characters\":12}\n");
}

#[test]
fn a_new_js_agent_builds_passes_its_tests_and_runs_under_its_policy() {
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let project = new_project(root.path(), state.path(), "agent", "js", "helper");
    build_js(&project);
    check_strict(&project, state.path());
    let out = warden(
        &project,
        state.path(),
        &[
            "run",
            "helper.wasm",
            "--policy",
            "policy.toml",
            "--task",
            "What is 6 * 7?",
            "-q",
        ],
    );
    assert_eq!(exited(&out, 0).0, "6 * 7 = 42\n");
}

/// What the probe checks: where the component's engine differs from
/// Node's, each as an expression whose value (or thrown error's name) is
/// compared.
const ENGINE_PROBE: &str = r#"
const CHECKS = {
  normalize: () => typeof String.prototype.normalize,
  intl: () => typeof globalThis.Intl,
  localeCompare: () => ['b', 'a', 'B', 'é', 'ab'].sort((x, y) => x.localeCompare(y)).join() + ' ' + 'a'.localeCompare('B'),
  localeCase: () => 'İI'.toLocaleLowerCase('tr') + 'ıi'.toLocaleUpperCase('tr'),
  numbers: () => [(1234567.891).toLocaleString('de-DE'), (1e21).toLocaleString(), (12345678901234567890n).toLocaleString()].join(),
  dates: () => [0, 34567890123, -1].map((t) => { const d = new Date(t); return [d.toLocaleString(), d.toLocaleDateString(), d.toLocaleTimeString()].join('|'); }).join(),
  invalidDate: () => { const d = new Date(NaN); return [d.toLocaleString(), d.toLocaleDateString(), d.toLocaleTimeString(), String(d)].join('|'); },
  propertyEscape: () => new RegExp('\\p{L}', 'u').test('é'),
  propertyEscapeV: () => new RegExp('[\\P{L}]', 'v').test('1'),
  escapedBackslash: () => new RegExp('\\\\p{L}', 'u').test('\\p{L}'),
  noUnicodeFlag: () => new RegExp('\\p{L}').test('p{L}'),
  textEncoder: () => new TextEncoder().encode('é').length,
};
function probe() {
  const out = {};
  for (const [name, check] of Object.entries(CHECKS)) {
    try { out[name] = String(check()); } catch (e) { out[name] = `throws ${e.name}`; }
  }
  return out;
}
"#;

#[test]
fn node_under_the_sdk_hook_lacks_what_the_js_component_lacks() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sdk = repo().join("guest-sdk/js");
    let tool = format!(
        "import {{ defineTools }} from {:?};\n{ENGINE_PROBE}\nexport const {{ describe, invoke }} = defineTools([{{ name: 'probe', description: 'What the engine has.', parameters: {{ type: 'object' }}, run: probe }}]);\n",
        sdk.join("warden-tool.js")
    );
    std::fs::write(dir.path().join("probe.js"), tool).unwrap();

    // In Node, as `node --test` runs it: with the SDK's register hook.
    let mut node = Command::new("node");
    node.arg("--import")
        .arg(sdk.join("node/register.mjs"))
        .arg("--input-type=module")
        .arg("-e")
        .arg("const { invoke } = await import('./probe.js'); console.log((await invoke('probe', '{}')).val);")
        .current_dir(dir.path());
    let in_node: Value = serde_json::from_str(&run_ok(node, "node")).unwrap();
    assert_eq!(in_node["normalize"], "undefined", "{in_node}");
    assert_eq!(in_node["intl"], "undefined", "{in_node}");

    // In the component, built by the SDK's script (its WIT by default).
    let mut build = Command::new("node");
    build
        .arg(sdk.join("componentize.mjs"))
        .args(["probe.js", "tool", "probe.wasm"])
        .current_dir(dir.path());
    run_ok(build, "componentize.mjs");
    let out = warden(dir.path(), state.path(), &["call", "probe.wasm", "probe"]);
    let in_component: Value = serde_json::from_str(&exited(&out, 0).0).unwrap();
    assert_eq!(in_node, in_component);

    // A regex literal with a property escape cannot be caught in Node: the
    // build fails, at the source's line, saying what to do.
    let letters = format!(
        "import {{ defineTools }} from {:?};\n\nconst LETTER = /\\p{{L}}/u;\nexport const {{ describe, invoke }} = defineTools([{{ name: 'letter', description: 'x', parameters: {{}}, run: ({{ s }}) => LETTER.test(s) }}]);\n",
        sdk.join("warden-tool.js")
    );
    std::fs::write(dir.path().join("letters.js"), letters).unwrap();
    let out = Command::new("node")
        .arg(sdk.join("componentize.mjs"))
        .args(["letters.js", "tool", "letters.wasm"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (_, stderr) = exited(&out, 2);
    assert!(stderr.contains("letters.js:3:"), "{stderr}");
    assert!(stderr.contains("no Unicode property escapes"), "{stderr}");
}
