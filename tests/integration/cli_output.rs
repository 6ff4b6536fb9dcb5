//! What programs and terminals get from the `warden` binary: `--json` on
//! every command that checks or runs something (docs/cli.md), colour on
//! warden's own words only, `WARDEN_LOG` without escape codes in a pipe,
//! shell completions and the examples in `--help`.

use crate::cli::{text, warden};
use crate::harness::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// A model answer made to break out of a JSON string or take over a
/// terminal: quotes, a backslash, newlines, colour codes, a bidi override.
const HOSTILE: &str = "say \"hi\" \\ back\nline two\r\n\x1b[31mRED\x1b[0m \u{202e}evil";

/// The same, as a TOML basic string's contents.
const HOSTILE_TOML: &str = r#"say \"hi\" \\ back\nline two\r\n\u001b[31mRED\u001b[0m \u202Eevil"#;

/// `warden ARGS` in the repository, with none of the variables that
/// change colour or logging unless `env` sets them.
fn warden_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
    command.args(args).current_dir(repo());
    for var in ["NO_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "WARDEN_LOG"] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied()).output().unwrap()
}

/// The one JSON document `--json` prints: stdout is exactly one line.
fn one_json(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}{}", text(&out.stderr));
    assert!(stdout.ends_with('\n'), "{stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Nothing a terminal would obey, raw, in `--json` output: outside text
/// is escaped inside its JSON strings.
fn assert_terminal_safe(stdout: &[u8]) {
    let stdout = text(stdout);
    for c in ['\x1b', '\r', '\u{202e}', '\u{9b}'] {
        assert!(!stdout.contains(c), "{c:?} in {stdout}");
    }
}

/// A scripted model that answers `answer` at once.
fn answering(dir: &Path, answer_toml: &str) -> String {
    let script = dir.join("script.toml");
    std::fs::write(&script, format!("[[turn]]\ntext = \"{answer_toml}\"\n")).unwrap();
    format!("scripted:{}", script.display())
}

/// A demo run's audit log in `dir`.
fn demo_log(dir: &Path) -> std::path::PathBuf {
    let audit = dir.join("demo.jsonl");
    let out = warden(&["demo", "-q", "--audit", audit.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    audit
}

#[test]
fn run_json_is_one_object_and_outside_text_stays_a_json_string() {
    let dir = tempfile::tempdir().unwrap();
    let model = answering(dir.path(), HOSTILE_TOML);
    let audit = dir.path().join("a.jsonl");
    let out = warden(&[
        "run",
        "builtin:react",
        "-p",
        "policies/demo.toml",
        "-t",
        "answer",
        "-m",
        &model,
        "--json",
        "--audit",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_terminal_safe(&out.stdout);
    let value = one_json(&out);
    assert_eq!(value["exit"], 0);
    assert_eq!(value["answer"], HOSTILE, "the answer as the model gave it");
    assert!(value.get("error").is_none(), "{value}");
    assert!(
        value["run_id"].as_str().unwrap().starts_with("r-"),
        "{value}"
    );
    assert_eq!(value["audit_log"], audit.to_str().unwrap());
    let log = std::fs::read(&audit).unwrap();
    assert_eq!(
        value["audit_head"],
        warden::audit::verify(&log[..]).unwrap().head
    );
    let summary = &value["summary"];
    assert_eq!(summary["model_calls"], 1, "{value}");
    assert_eq!(summary["tool_calls"], 0, "{value}");
    assert_eq!(summary["refused"], 0, "{value}");
    assert!(summary["tokens"].as_u64().unwrap() > 0, "{value}");
    for key in ["cost_usd", "elapsed_ms", "labels"] {
        assert!(summary.get(key).is_some(), "{key} in {value}");
    }

    // No answer: `error` instead, and exit 1 in the object and the status.
    let policy = dir.path().join("tight.toml");
    std::fs::write(&policy, "[limits]\ncpu = \"100ms\"\n").unwrap();
    let out = warden(&[
        "run",
        guests::ATTACKER,
        "-p",
        policy.to_str().unwrap(),
        "-t",
        "loop",
        "-m",
        &model,
        "--json",
        "--audit",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let value = one_json(&out);
    assert_eq!(value["exit"], 1);
    assert!(value.get("answer").is_none(), "{value}");
    assert!(
        value["error"]
            .as_str()
            .unwrap()
            .contains("CPU limit of 100ms exceeded"),
        "{value}"
    );
}

#[test]
fn check_json_has_the_grants_or_each_error_with_its_place() {
    let out = warden(&["check", "--json", "policies/demo.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let value = one_json(&out);
    assert_eq!(value["exit"], 0);
    assert_eq!(value["valid"], true);
    assert_eq!(value["policy"], "policies/demo.toml");
    assert_eq!(value["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(value["errors"], serde_json::json!([]));
    let tools = value["tools"].as_array().unwrap();
    assert!(
        tools.contains(&serde_json::json!({
            "name": "regex_search", "component": "builtin:text", "decision": "deny"
        })),
        "{value}"
    );
    let components = value["components"].as_array().unwrap();
    assert!(
        components
            .iter()
            .any(|c| c["source"] == "builtin:calc" && c["sha256"].as_str().unwrap().len() == 64),
        "{value}"
    );
    let out = warden(&["check", "--json", "--no-load", "policies/demo.toml"]);
    assert_eq!(one_json(&out)["components"], Value::Null);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[tools.calc]\ndecision = \"maybe\"\n").unwrap();
    let out = warden(&["check", "--json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let value = one_json(&out);
    assert_eq!(
        (value["exit"].clone(), value["valid"].clone()),
        (1.into(), false.into())
    );
    let error = &value["errors"][0];
    assert_eq!(error["severity"], "error");
    assert_eq!(error["file"], bad.to_str().unwrap());
    assert_eq!(
        (error["line"].clone(), error["column"].clone()),
        (2.into(), 12.into())
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown variant `maybe`"),
        "{value}"
    );

    // Warnings are listed; under --strict they fail the check.
    let risky = dir.path().join("risky.toml");
    std::fs::write(&risky, "[model]\nallow = [\"scripted\"]\n").unwrap();
    let out = warden(&["check", "--json", "--strict", risky.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let value = one_json(&out);
    assert_eq!(
        (value["exit"].clone(), value["valid"].clone()),
        (1.into(), true.into())
    );
    assert!(
        value["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("model calls have no budget"),
        "{value}"
    );
}

#[test]
fn policy_test_json_reports_each_case() {
    let out = warden_env(
        &[
            "policy",
            "test",
            "policies/demo.toml",
            "policies/tests/demo.toml",
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let value = one_json(&out);
    assert_eq!(
        (value["passed"].clone(), value["failed"].clone()),
        (7.into(), 0.into())
    );
    assert_eq!(value["cases"], "policies/tests/demo.toml");

    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"shell is \\\"allowed\\\"\"\ntool = \"shell\"\nexpect = \"allow\"\n",
    )
    .unwrap();
    let out = warden_env(
        &[
            "policy",
            "test",
            "policies/demo.toml",
            cases.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let value = one_json(&out);
    assert_eq!(value["exit"], 1);
    let result = &value["results"][0];
    assert_eq!(result["name"], "shell is \"allowed\"");
    assert_eq!(result["pass"], false);
    assert!(
        result["failure"]
            .as_str()
            .unwrap()
            .contains("got:      deny (default)"),
        "{value}"
    );
}

#[test]
fn audit_show_json_is_the_records_kept_and_verify_json_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let model = answering(dir.path(), HOSTILE_TOML);
    let audit = dir.path().join("a.jsonl");
    let out = warden(&[
        "run",
        "builtin:react",
        "-p",
        "policies/demo.toml",
        "-t",
        "answer",
        "-m",
        &model,
        "-q",
        "--audit",
        audit.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logged: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let out = warden_env(&["audit", "show", audit.to_str().unwrap(), "--json"], &[]);
    assert!(out.status.success());
    assert_terminal_safe(&out.stdout);
    let shown: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown, logged, "every record, as the log holds it");
    let end = shown.last().unwrap();
    assert_eq!(end["data"]["answer"], HOSTILE);

    let out = warden_env(
        &[
            "audit",
            "show",
            audit.to_str().unwrap(),
            "--json",
            "--kind",
            "model",
        ],
        &[],
    );
    let kept: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "a decision and an outcome: {kept:?}");
    assert!(kept.iter().all(|r| r["kind"] == "model"));

    let out = warden_env(&["audit", "verify", audit.to_str().unwrap(), "--json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let value = one_json(&out);
    assert_eq!(value["intact"], true);
    assert_eq!(value["records"], logged.len());
    assert_eq!(value["head_matches"], Value::Null);
    assert_eq!(value["runs"][0]["finished"], true);
    let head = value["head"].as_str().unwrap().to_string();
    let out = warden_env(
        &[
            "audit",
            "verify",
            audit.to_str().unwrap(),
            "--json",
            "--head",
            &head[..16],
        ],
        &[],
    );
    assert_eq!(one_json(&out)["head_matches"], true);

    // An edited record: exit 1, and the line it shows at.
    let original = std::fs::read_to_string(&audit).unwrap();
    let edited = original.replacen("\"allow\"", "\"deny\"", 1);
    assert_ne!(edited, original);
    std::fs::write(&audit, edited).unwrap();
    let out = warden_env(&["audit", "verify", audit.to_str().unwrap(), "--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let value = one_json(&out);
    assert_eq!(
        (value["exit"].clone(), value["intact"].clone()),
        (1.into(), false.into())
    );
    assert!(
        value["problems"][0]["line"].as_u64().unwrap() >= 1,
        "{value}"
    );
}

#[test]
fn replay_json_says_same_or_the_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let audit = demo_log(dir.path());
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", "--trust-log", "--json", audit.to_str().unwrap()];
        args.extend_from_slice(extra);
        warden_env(&args, &[])
    };
    let out = replay(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let value = one_json(&out);
    assert_eq!(value["same"], true);
    assert_eq!(value["divergence"], Value::Null);
    assert_eq!(
        (
            value["model_answers"].clone(),
            value["tool_results"].clone()
        ),
        // Refused calls are steps of the record too: 2 allowed, 2 denied.
        (4.into(), 4.into())
    );
    assert_eq!(value["answer"], value["recorded_answer"]);

    let policy = dir.path().join("stricter.toml");
    let demo = std::fs::read_to_string(repo().join("policies/demo.toml")).unwrap();
    std::fs::write(
        &policy,
        demo.replace(
            "[tools.calc]\ncomponent = \"builtin:calc\"",
            "[tools.calc]\ncomponent = \"builtin:calc\"\ndecision = \"deny\"",
        ),
    )
    .unwrap();
    let out = replay(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let value = one_json(&out);
    assert_eq!(
        (value["exit"].clone(), value["same"].clone()),
        (1.into(), false.into())
    );
    assert!(
        value["divergence"]
            .as_str()
            .unwrap()
            .contains("model call 1"),
        "{value}"
    );
}

/// A painted word of the transcript, as the demo shows it.
const DENY_IN_RED: &str = "\x1b[1;31mDENY\x1b[0m";

#[test]
fn colour_with_color_always_or_clicolor_force_and_never_with_no_color_or_into_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("a.jsonl");
    let audit = audit.to_str().unwrap();
    let demo = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["demo", "--audit", audit];
        args.extend_from_slice(flags);
        let out = warden_env(&args, env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    for (flags, env) in [
        (&["--color", "always"][..], &[][..]),
        (&["--color=always"][..], &[("NO_COLOR", "1")][..]),
        (&[][..], &[("CLICOLOR_FORCE", "1")][..]),
    ] {
        let shown = demo(flags, env);
        assert!(shown.contains(DENY_IN_RED), "{flags:?} {env:?}: {shown}");
        assert!(shown.contains("\x1b[32mallow\x1b[0m"), "{shown}");
    }
    for (flags, env) in [
        (&[][..], &[][..]),
        (&[][..], &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")][..]),
        (&["--color", "never"][..], &[("CLICOLOR_FORCE", "1")][..]),
    ] {
        let shown = demo(flags, env);
        assert!(!shown.contains('\x1b'), "{flags:?} {env:?}: {shown}");
        assert!(shown.contains("DENY (tools.regex_search)"), "{shown}");
    }

    // On a terminal (`script` gives one), colour comes by itself, unless
    // NO_COLOR says no.
    let in_terminal = |no_color: bool| {
        let command = format!(
            "{}{} demo --audit {audit} --cache-dir {}",
            if no_color { "NO_COLOR=1 " } else { "" },
            env!("CARGO_BIN_EXE_warden"),
            cache_dir().display()
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .env("TERM", "xterm")
            .current_dir(repo())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("`script` (util-linux) runs the host in a pseudo-terminal");
        text(&out.stdout)
    };
    assert!(in_terminal(false).contains(DENY_IN_RED));
    let plain = in_terminal(true);
    assert!(!plain.contains('\x1b') && plain.contains("DENY"), "{plain}");
}

#[test]
fn outside_text_cannot_colour_the_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let model = answering(dir.path(), HOSTILE_TOML);
    let audit = dir.path().join("a.jsonl");
    let out = warden_env(
        &[
            "run",
            "builtin:react",
            "-p",
            "policies/demo.toml",
            "-t",
            "answer",
            "-m",
            &model,
            "--color",
            "always",
            "--audit",
            audit.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    // The model's codes are shown as text, where the answer is quoted.
    assert!(shown.contains("\\u{1b}[31mRED\\u{1b}[0m"), "{shown}");
    assert!(shown.contains("\x1b[1;32manswer:\x1b[0m"), "{shown}");
    for line in shown.lines() {
        if line.starts_with("  │") {
            assert!(
                !line.contains('\x1b'),
                "a quoted line is coloured: {line:?}"
            );
        }
        // Every escape is one of warden's colours.
        let mut rest = line;
        while let Some(at) = rest.find('\x1b') {
            rest = &rest[at..];
            let code = warden::transcript::PALETTE
                .iter()
                .find(|code| rest.starts_with(**code))
                .unwrap_or_else(|| panic!("not warden's colour: {line:?}"));
            rest = &rest[code.len()..];
        }
    }
}

#[test]
fn warden_log_into_a_pipe_has_no_escape_codes_and_has_warden_s_spans() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("a.jsonl");
    let out = warden_env(
        &["demo", "-q", "--audit", audit.to_str().unwrap()],
        &[("WARDEN_LOG", "debug")],
    );
    assert!(out.status.success());
    let err = text(&out.stderr);
    assert!(!err.contains("\x1b["), "{err}");
    for span in [
        "run{run=r-",
        "component_load{component=builtin:calc",
        "model_call{model=scripted",
        "tool_call{tool=calc}",
    ] {
        assert!(err.contains(span), "{span} in {err}");
    }
    assert!(
        err.contains("tool_call{tool=regex_search}") && err.contains("decision=\"refused\""),
        "{err}"
    );
    assert!(
        err.contains("close time.busy="),
        "spans say how long they took: {err}"
    );
}

#[test]
fn completions_name_every_command_and_bash_accepts_the_script() {
    let out = warden_env(&["completions", "bash"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    for command in [
        "run",
        "demo",
        "check",
        "policy",
        "replay",
        "tools",
        "audit",
        "mcp",
        "completions",
    ] {
        assert!(script.contains(command), "{command} in the bash script");
    }
    assert!(script.contains("--json") && script.contains("--color"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    for shell in ["zsh", "fish"] {
        let out = warden_env(&["completions", shell], &[]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("replay"), "{shell}");
    }
    let out = warden_env(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_command_s_help_shows_examples_of_itself() {
    for command in [
        &["run"][..],
        &["demo"],
        &["check"],
        &["policy", "test"],
        &["policy", "schema"],
        &["replay"],
        &["tools"],
        &["audit", "verify"],
        &["audit", "show"],
        &["mcp"],
        &["completions"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = warden_env(&args, &[]);
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        let examples = help
            .split_once("Examples:\n")
            .unwrap_or_else(|| panic!("no examples in {args:?}: {help}"))
            .1;
        assert!(
            examples.contains(&format!("  warden {}", command.join(" "))),
            "{args:?}: {examples}"
        );
    }
}

/// `check --json` says what a tool's labels are beyond the default: its
/// label paths, the labels it gives declared third-party parts, flows off.
#[test]
fn check_json_shows_label_paths_and_flows() {
    let out = warden(&["check", "--json", "--no-load", "tests/ui/check/labels.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let value = one_json(&out);
    let tools = value["tools"].as_array().unwrap();
    assert_eq!(
        tools[0],
        serde_json::json!({
            "name": "bank", "component": "bank.wasm", "decision": "allow",
            "label_paths": { "/transactions/*/subject": ["untrusted"], "/**/note": ["untrusted"] },
            "third_party_labels": ["untrusted"],
        })
    );
    assert_eq!(tools[1]["labels_flow"], false, "{value}");
    assert_eq!(tools[2].get("labels_flow"), None, "{value}");
}
