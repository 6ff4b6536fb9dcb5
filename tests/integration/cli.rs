//! The `warden` binary as a user runs it.

use crate::harness::*;
use std::process::{Command, Output};

pub(crate) fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache_dir())
        .current_dir(repo())
        .output()
        .unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_demo_allows_denies_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let out = warden(&["demo", "--audit", audit.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "[tool]  calc  allow (tools.calc)  {\"expression\":\"(17 * 23) + 4\"}\n        -> 395"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("DENY (tools.regex_search)"), "{stdout}");
    assert!(
        stdout.contains("[tool]  shell  DENY (default)  {\"command\":\"grep -n fox poem.txt\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("answer:\n  │ (17 * 23) + 4 = 395"),
        "{stdout}"
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let denied = records
        .iter()
        .filter(|r| r["kind"] == "tool" && r["event"] == "decision" && r["decision"] == "deny")
        .count();
    assert_eq!(denied, 2);
    assert_eq!(records.last().unwrap()["outcome"], "ok");
    // The first record names the policy's and every component's hash.
    let first = &records[0]["data"];
    assert_eq!(first["policy"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(first["agent"]["sha256"].as_str().unwrap().len(), 64);
    let components = first["components"].as_array().unwrap();
    assert_eq!(components[0]["source"], "builtin:calc");
    assert_eq!(components[0]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn a_run_says_how_long_after_warden_started_the_agent_started() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let spawned = std::time::Instant::now();
    let out = warden(&["demo", "--audit", audit.to_str().unwrap()]);
    let lifetime = spawned.elapsed();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let log = std::fs::read_to_string(&audit).unwrap();
    let end: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let first = end["data"]["first_instruction_us"]
        .as_u64()
        .unwrap_or_else(|| panic!("no first_instruction_us in {end}"));
    // After main began and before the process ended; the agent runs after
    // every component is loaded, so it cannot be the run's first instant.
    assert!(first > 0, "{end}");
    assert!(
        u128::from(first) < lifetime.as_micros(),
        "{first} us, in a process that lived {lifetime:?}"
    );
    let summary = format!(
        "; agent started {:.1} ms after warden\n",
        first as f64 / 1000.0
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(" tool call(s), "))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    assert!(format!("{line}\n").ends_with(&summary), "{line}");

    let out = warden(&["demo", "--json", "--audit", audit.to_str().unwrap()]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let log = std::fs::read_to_string(&audit).unwrap();
    let end: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(
        value["summary"]["first_instruction_us"], end["data"]["first_instruction_us"],
        "{value}"
    );
}

#[test]
fn run_prints_a_transcript_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.toml");
    std::fs::write(&script, "[[turn]]\ncalls = [{ tool = \"calc\", arguments = { expression = \"2 ^ 10\" } }]\n[[turn]]\ntext = \"1024\"\n").unwrap();
    let model = format!("scripted:{}", script.display());
    let audit = dir.path().join("a.jsonl");
    let out = warden(&[
        "run",
        "builtin:react",
        "--policy",
        "policies/demo.toml",
        "--task",
        "2^10?",
        "--model",
        &model,
        "--audit",
        audit.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("-> 1024"), "{stdout}");
    assert!(text(&out.stderr).contains(&format!("audit log: {}", audit.display())));

    // --quiet prints the answer alone.
    let out = warden(&[
        "run",
        "builtin:react",
        "-p",
        "policies/demo.toml",
        "-t",
        "2^10?",
        "-m",
        &model,
        "-q",
        "--audit",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(text(&out.stdout), "1024\n");

    // An agent stopped by a limit exits 1 with the reason.
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
        "--audit",
        audit.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: the agent was stopped: CPU limit of 100ms exceeded"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout)
            .contains("[limit] attacker stopped (limits.cpu): CPU limit of 100ms exceeded")
    );
}

#[test]
fn bad_input_exits_2_with_a_located_message() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("bad.toml");
    std::fs::write(&policy, "[limits]\nmemory = \"lots\"\n").unwrap();
    let out = warden(&[
        "run",
        "builtin:react",
        "-p",
        policy.to_str().unwrap(),
        "-t",
        "x",
        "-m",
        "scripted:none",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`lots` is not a size"), "{stderr}");
    assert!(stderr.contains("bad.toml:2:10"), "{stderr}");

    let out = warden(&[
        "run",
        "builtin:react",
        "-p",
        "policies/demo.toml",
        "-t",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no model provider given"));

    let out = warden(&[
        "run",
        "builtin:react",
        "-p",
        "policies/demo.toml",
        "-t",
        "x",
        "-m",
        "gpt:4o",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown model provider `gpt`"));

    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "run",
            "builtin:react",
            "-p",
            "policies/demo.toml",
            "-t",
            "x",
        ])
        .args(["-m", "openai:gpt-4o-mini"])
        .env_remove("OPENAI_API_KEY")
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the environment variable OPENAI_API_KEY is not set"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policys_provider_is_recorded_and_replayed_offline() {
    use crate::mock_model::*;
    let mock = MockModel::start(vec![
        openai_call(
            "c1",
            "calc",
            serde_json::json!({"expression": "12 * 12"}),
            (80, 9),
        ),
        openai_text("12 * 12 = 144", Some((90, 7))),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[model]\nprovider = \"openai-compatible:{}/v1#gpt-test\"\nallow = [\"gpt-test\"]\n\n[tools.calc]\ncomponent = \"builtin:calc\"\n",
            mock.url
        ),
    )
    .unwrap();
    let recording = dir.path().join("run.jsonl");
    let (p, r) = (policy.clone(), recording.clone());
    let out = tokio::task::spawn_blocking(move || {
        warden(&[
            "run",
            "builtin:react",
            "-q",
            "-p",
            p.to_str().unwrap(),
            "-t",
            "What is 12 * 12?",
            "--record",
            r.to_str().unwrap(),
            "--audit",
            "/dev/null",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "12 * 12 = 144\n");
    assert_eq!(mock.seen().len(), 2);

    let replay = format!("replay:{}", recording.display());
    let out = tokio::task::spawn_blocking(move || {
        warden(&[
            "run",
            "builtin:react",
            "-q",
            "-p",
            policy.to_str().unwrap(),
            "-t",
            "What is 12 * 12?",
            "-m",
            &replay,
            "--audit",
            "/dev/null",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "12 * 12 = 144\n");
    assert_eq!(mock.seen().len(), 2, "the replay is offline");
}

#[test]
fn check_describes_a_policy_and_rejects_a_bad_one() {
    let out = warden(&["check", "policies/demo.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Model: may use scripted; at most 8 calls per run."),
        "{stdout}"
    );
    assert!(
        stdout.contains("regex_search (builtin:text): denied."),
        "{stdout}"
    );
    assert!(stdout.contains("Everything else is denied."), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[tools.calc]\ndecision = \"maybe\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("unknown variant `maybe`, expected one of `allow`, `ask`, `deny`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_strict_fails_on_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let risky = dir.path().join("risky.toml");
    std::fs::write(&risky, "[model]\nallow = [\"scripted\"]\n").unwrap();
    let check = |strict: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
        command.arg("check");
        if strict {
            command.arg("--strict");
        }
        command.arg(&risky).output().unwrap()
    };
    let out = check(false);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("warning: model calls have no budget"));
    let out = check(true);
    // Warnings under --strict fail the check (1), like an invalid policy.
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--strict: 1 warning(s)"));
}

#[test]
fn policy_test_reports_each_case_and_fails_on_any() {
    let run = |cases: &str| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["policy", "test", "policies/demo.toml", cases])
            .current_dir(repo())
            .output()
            .unwrap()
    };
    let out = run("policies/tests/demo.toml");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("PASS regex_search is denied by its entry"));
    assert!(text(&out.stdout).ends_with("policies/tests/demo.toml: 7 passed, 0 failed\n"));

    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"shell is allowed\"\ntool = \"shell\"\nexpect = \"allow\"\n\n[[case]]\nname = \"calc\"\ntool = \"calc\"\nexpect = \"allow\"\n",
    )
    .unwrap();
    let out = run(cases.to_str().unwrap());
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL shell is allowed\n  expected: allow\n  got:      deny (default)\n  because: tool `shell` is not granted"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS calc"), "{stdout}");
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");

    // Input it cannot test is bad input (2), not a failing case (1).
    let missing = dir.path().join("missing.toml");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "# no cases\n").unwrap();
    let malformed = dir.path().join("malformed.toml");
    std::fs::write(&malformed, "[[case]\n").unwrap();
    for (cases, says) in [
        (&missing, "cannot read"),
        (&empty, "has no `[[case]]`"),
        (&malformed, "malformed.toml"),
    ] {
        let out = run(cases.to_str().unwrap());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", cases.display());
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn the_schema_command_prints_the_committed_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["policy", "schema"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo().join("policies/policy.schema.json")).unwrap();
    assert_eq!(text(&out.stdout), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_leaves_a_verifiable_log_and_tampering_is_found() {
    use crate::mock_model::*;
    // A model that keeps calling calc, slowly, so the host is mid-run.
    let turns: Vec<Reply> = (0..40)
        .map(|i| {
            openai_call(
                &format!("c{i}"),
                "calc",
                serde_json::json!({"expression": "1 + 1"}),
                (10, 2),
            )
            .after(std::time::Duration::from_millis(100))
        })
        .collect();
    let mock = MockModel::start(turns).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args([
            "run",
            "builtin:react",
            "-q",
            "-p",
            "policies/demo.toml",
            "-t",
            "loop",
        ])
        .args(["-m", &format!("openai-compatible:{}#scripted", mock.url)])
        .arg("--audit")
        .arg(&audit)
        .arg("--cache-dir")
        .arg(cache_dir())
        .current_dir(repo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a few model calls have happened, then SIGKILL.
    let started = std::time::Instant::now();
    while mock.seen().len() < 4 && started.elapsed() < std::time::Duration::from_secs(60) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let verify = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["audit", "verify"])
            .arg(&audit)
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout))
    };
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("chain intact"), "{out}");
    assert!(out.contains("has no end record"), "{out}");

    // Edit one record in the middle: the next line says so.
    let original = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 6, "{original}");
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[3] = edited[3].replace("\"allow\"", "\"deny\"");
    assert_ne!(edited[3], lines[3], "the edit changed something");
    std::fs::write(&audit, edited.join("\n") + "\n").unwrap();
    let (code, out) = verify(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(":5: line 5"), "{out}");
    assert!(out.contains("line 4 was edited"), "{out}");

    // Cutting the end is found against the head.
    std::fs::write(
        &audit,
        original
            .lines()
            .take(lines.len() - 1)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
    .unwrap();
    let head = warden::audit::verify(original.as_bytes()).unwrap().head;
    let (code, out) = verify(&["--head", &head[..16]]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("records were cut from or edited at the end"),
        "{out}"
    );
}

#[test]
fn audit_show_renders_and_filters_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let out = warden(&["demo", "-q", "--audit", audit.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("audit head: "),
        "{}",
        text(&out.stderr)
    );
    let show = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["audit", "show"])
            .arg(&audit)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        text(&out.stdout)
    };
    let all = show(&[]);
    assert!(
        all.contains("[tool]  calc  allow (tools.calc)  {\"expression\":\"(17 * 23) + 4\"}"),
        "{all}"
    );
    assert!(all.contains("answer:\n  │ (17 * 23) + 4 = 395"), "{all}");
    let denied = show(&["--decision", "deny"]);
    assert!(
        denied.contains("regex_search") && !denied.contains("[model]"),
        "{denied}"
    );
    let calc = show(&["--tool", "calc", "--kind", "tool"]);
    assert!(
        calc.contains("calc") && !calc.contains("word_count"),
        "{calc}"
    );
    // A misspelled filter is an error that lists what is valid, not an
    // empty timeline.
    for (flag, typo, valid) in [
        (
            "--kind",
            "tools",
            "run, model, tool, http, log, limit, stdio",
        ),
        ("--decision", "denied", "allow, ask, deny"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["audit", "show"])
            .arg(&audit)
            .args([flag, typo])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("invalid value '{typo}'")), "{err}");
        assert!(err.contains(valid), "{err}");
    }
    let (code, out) = {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["audit", "verify"])
            .arg(&audit)
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout))
    };
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn replay_reruns_a_recorded_run_offline_and_finds_the_first_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let out = warden(&["demo", "-q", "--audit", audit.to_str().unwrap()]);
    assert!(out.status.success());
    let replay = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["replay", "-q", "--trust-log"])
            .arg(&audit)
            .args(extra)
            .current_dir(repo())
            .output()
            .unwrap();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = replay(&[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("SAME as run r-"), "{out}");
    assert!(
        out.contains("4 model answer(s) and 2 tool result(s) replayed"),
        "{out}"
    );

    // The same run under a policy that now denies calc goes another way.
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
    let (code, out, err) = replay(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    // What the agent sent differs first: calc is no longer offered. (The
    // reason quotes log-derived text, wrapped under `  │ `.)
    let quoted: Vec<&str> = out
        .lines()
        .filter_map(|line| line.strip_prefix("  │ "))
        .collect();
    let reason = quoted.join(" ");
    assert!(
        out.contains("DIVERGED")
            && reason.contains("model call 1: the agent sent a different request")
            && reason.contains("offered the tools [\"word_count\"]")
            && reason.contains("the recorded run offered [\"calc\", \"word_count\"]"),
        "{out}"
    );
    assert!(err.contains("has changed since run"), "{err}");
}

#[test]
fn audit_show_follow_prints_records_as_they_arrive_and_stops_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.jsonl");
    assert!(
        warden(&["demo", "-q", "--audit", full.to_str().unwrap()])
            .status
            .success()
    );
    let recorded = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = recorded.lines().collect();
    let live = dir.path().join("live.jsonl");
    let half = lines.len() / 2;
    std::fs::write(&live, lines[..half].join("\n") + "\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "show", "--follow"])
        .arg(&live)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits for the run to end"
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    std::io::Write::write_all(&mut file, (lines[half..].join("\n") + "\n").as_bytes()).unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "it stops at the run's end"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let shown = text(&out.stdout);
    assert!(
        shown.contains("[tool]  calc") && shown.contains("answer:"),
        "{shown}"
    );
}

/// `warden run` in a pseudo-terminal (`script`, from util-linux), with
/// `answer` typed at the prompt; the audit records.
fn run_in_terminal(dir: &std::path::Path, answer: &str) -> (String, Vec<serde_json::Value>) {
    run_in_terminal_asking(dir, answer, "6 * 7")
}

/// [`run_in_terminal`], the model asking calc for `expression` (a TOML
/// basic string's contents).
fn run_in_terminal_asking(
    dir: &std::path::Path,
    answer: &str,
    expression: &str,
) -> (String, Vec<serde_json::Value>) {
    let script = dir.join("s.toml");
    std::fs::write(&script, format!("[[turn]]\ncalls = [{{ tool = \"calc\", arguments = {{ expression = \"{expression}\" }} }}]\n[[turn]]\ntext = \"done\"\n")).unwrap();
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "[model]\nallow = [\"scripted\"]\nmax_calls = 4\n[tools.calc]\ncomponent = \"builtin:calc\"\ndecision = \"ask\"\n").unwrap();
    let audit = dir.join(format!("{answer}.jsonl"));
    let command = format!(
        "{} run builtin:react -p {} -t x -m scripted:{} --audit {} --cache-dir {} --color never",
        env!("CARGO_BIN_EXE_warden"),
        policy.display(),
        script.display(),
        audit.display(),
        cache_dir().display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs the host in a pseudo-terminal");
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{answer}\n").as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let records = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text(&out.stdout), records)
}

#[test]
fn a_person_at_the_terminal_approves_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (shown, records) = run_in_terminal(dir.path(), "y");
    assert!(shown.contains("warden: approval needed"), "{shown}");
    assert!(shown.contains("rule: tools.calc"), "{shown}");
    assert!(
        shown.contains("[ask]   calc  approved by a person, once"),
        "{shown}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["data"]["approved_by"] == "a person, once")
    );
    assert!(
        records
            .iter()
            .any(|r| r["subject"] == "calc" && r["outcome"] == "ok")
    );

    let (shown, records) = run_in_terminal(dir.path(), "n");
    assert!(shown.contains("a person refused this call"), "{shown}");
    assert!(
        !records
            .iter()
            .any(|r| r["subject"] == "calc" && r["outcome"] == "ok")
    );
}

#[test]
fn the_approval_prompt_shows_bidi_controls_escaped() {
    // Shown as it is, U+202E makes "10000" display as "00001": the person
    // would approve ten thousand reading one.
    let dir = tempfile::tempdir().unwrap();
    let (shown, _) = run_in_terminal_asking(dir.path(), "n", "pay \\u202E10000\\u202C to alice");
    assert!(shown.contains("warden: approval needed"), "{shown}");
    assert!(
        shown.contains("pay \\u{202e}10000\\u{202c} to alice"),
        "{shown}"
    );
    assert!(
        !shown.contains(['\u{202e}', '\u{202c}']),
        "a bidi control reached the terminal: {shown:?}"
    );
}

#[test]
fn tools_inspect_shows_specs_imports_and_the_pin() {
    let out = warden(&["tools", "inspect", guests::PROBE_TOOL, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    use sha2::Digest;
    let bytes = std::fs::read(guests::PROBE_TOOL).unwrap();
    assert_eq!(report["sha256"], hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(report["tools"][0]["name"], "probe");
    let imports = report["imports"].as_array().unwrap();
    let needs = |prefix: &str| {
        imports
            .iter()
            .find(|i| i["name"].as_str().unwrap().starts_with(prefix))
            .map(|i| i["needs"].as_str().unwrap().to_string())
    };
    assert!(
        needs("wasi:http/outgoing-handler")
            .unwrap()
            .contains("`http` grant")
    );
    assert!(
        needs("wasi:filesystem/preopens")
            .unwrap()
            .contains("`fs` grants")
    );

    let out = warden(&["tools", "inspect", "builtin:calc"]);
    assert!(text(&out.stdout).contains("  calc:\n  │ Evaluate an arithmetic expression"));
    let out = warden(&["tools", "inspect", "builtin:react"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not a warden tool component"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn inspect_into_a_closed_pipe_is_not_a_crash() {
    // `warden tools inspect TOOL | head -1`: the reader is gone before
    // warden writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["tools", "inspect", "builtin:text", "--cache-dir"])
        .arg(cache_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn approving_a_rule_the_policy_does_not_have_is_a_warning() {
    let out = warden(&[
        "run",
        "builtin:react",
        "-q",
        "-p",
        "policies/demo.toml",
        "-t",
        "x",
        "-m",
        "scripted:agents/react/demo.script.toml",
        "--audit",
        "/dev/null",
        "--approve",
        "tools.shell",
    ]);
    assert!(
        text(&out.stderr)
            .contains("warning: --approve tools.shell names no tool of policies/demo.toml"),
        "{}",
        text(&out.stderr)
    );
}

/// Each policy `warden run` refuses for a component it names, beside what
/// the refusal must say (and where: the policy file, line and column).
fn refused_components() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "missing file",
            "[tools.calc]\ncomponent = \"missing.wasm\"\n",
            vec![
                "p.toml:2:13",
                "the component of [tools.calc] cannot be loaded: cannot read",
                "missing.wasm",
            ],
        ),
        (
            "tool the component does not provide",
            "[tools.calc]\ncomponent = \"builtin:calc\"\n\n[tools.nope]\ncomponent = \"builtin:calc\"\n",
            vec![
                "p.toml:4:8",
                "`builtin:calc` does not provide a tool named `nope`",
                "it provides `calc`",
            ],
        ),
        (
            "unknown builtin",
            "[tools.calc]\ncomponent = \"builtin:nosuch\"\n",
            vec![
                "p.toml:2:13",
                "there is no built-in component `nosuch`",
                "the built-ins are:",
                "help: name one of those, or give the path of a .wasm file",
            ],
        ),
        (
            "memory limit too small",
            "[limits]\nmemory = \"1MiB\"\n\n[tools.calc]\ncomponent = \"builtin:calc\"\n",
            vec![
                "p.toml:5:13",
                "`builtin:calc` failed while describing its tools",
            ],
        ),
    ]
}

#[test]
fn check_refuses_every_component_run_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    let script = dir.path().join("script.toml");
    std::fs::write(&script, "[[turn]]\ntext = \"hi\"\n").unwrap();
    let model = format!("scripted:{}", script.display());
    for (case, body, expected) in refused_components() {
        std::fs::write(&policy, body).unwrap();
        let check = warden(&["check", policy.to_str().unwrap()]);
        let stderr = text(&check.stderr);
        assert_eq!(check.status.code(), Some(1), "{case}: {stderr}");
        for part in &expected {
            assert!(stderr.contains(part), "{case}: no `{part}` in\n{stderr}");
        }
        assert!(!text(&check.stdout).contains("valid"), "{case}");
        // The same words as `warden run`'s refusal: one loading path.
        let run = warden(&[
            "run",
            "--policy",
            policy.to_str().unwrap(),
            "--model",
            &model,
            "--audit",
            dir.path().join("audit.jsonl").to_str().unwrap(),
            "--task",
            "hi",
            "builtin:react",
        ]);
        assert_eq!(run.status.code(), Some(2), "{case}: {}", text(&run.stderr));
        let refusal = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
        assert!(
            text(&run.stderr).contains(refusal),
            "{case}: run and check disagree:\ncheck: {stderr}\nrun: {}",
            text(&run.stderr)
        );
    }
}

#[test]
fn check_no_load_reads_only_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    for (case, body, _) in refused_components() {
        std::fs::write(&policy, body).unwrap();
        let out = warden(&["check", "--no-load", policy.to_str().unwrap()]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{case}: {}", text(&out.stderr));
        assert!(stdout.contains("p.toml: valid"), "{case}: {stdout}");
        assert!(
            stdout.contains("Components: not loaded (--no-load)"),
            "{case}: {stdout}"
        );
    }
}

#[test]
fn check_loads_and_describes_the_components_it_names() {
    let out = warden(&["check", "policies/demo.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("Components, loaded and described with no grants:"),
        "{stdout}"
    );
    assert!(stdout.contains("  builtin:calc: sha256 "), "{stdout}");
    assert!(stdout.contains("  builtin:text: sha256 "), "{stdout}");
}

/// `warden ARGS` with nothing added (commands without a compile cache).
fn bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn a_policy_learned_from_real_runs_loads_strictly_and_replays_them_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let demo_log = dir.path().join("demo.jsonl");
    assert!(
        warden(&["demo", "-q", "--audit", demo_log.to_str().unwrap()])
            .status
            .success()
    );
    // A second run of the bundled agent, with another task and model turns.
    let script = dir.path().join("turns.toml");
    std::fs::write(
        &script,
        "[[turn]]\ncalls = [{ tool = \"calc\", arguments = { expression = \"2 + 2\" } }]\n\n[[turn]]\ntext = \"4\"\n",
    )
    .unwrap();
    let second_log = dir.path().join("second.jsonl");
    let model = format!("scripted:{}", script.display());
    let out = warden(&[
        "run",
        "builtin:react",
        "-p",
        "policies/demo.toml",
        "-t",
        "What is 2 + 2?",
        "-m",
        &model,
        "-q",
        "--audit",
        second_log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = bare(&[
        "policy",
        "learn",
        demo_log.to_str().unwrap(),
        second_log.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let learned = text(&out.stdout);
    // Exactly the tools that ran, pinned, with rules from what they got.
    assert!(
        learned.contains("[tools.calc]\ncomponent = \"builtin:calc\""),
        "{learned}"
    );
    assert!(learned.contains("args.expression = [{ from = [\"task\"], decision = \"ask\" }, { one_of = [\"(17 * 23) + 4\", \"2 + 2\"], decision = \"ask\" }]"), "{learned}");
    assert!(
        learned.contains("[tools.regex_search]\ndecision = \"deny\""),
        "{learned}"
    );
    assert!(!learned.contains("[tools.shell]"), "{learned}");
    assert!(
        learned
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
            .all(|l| l.contains("  # ")),
        "every line says why:\n{learned}"
    );
    let policy = dir.path().join("learned.toml");
    std::fs::write(&policy, &learned).unwrap();

    let out = warden(&["check", "--strict", policy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for log in [&demo_log, &second_log] {
        let out = bare(&[
            "replay",
            "-q",
            "--trust-log",
            log.to_str().unwrap(),
            "--policy",
            policy.to_str().unwrap(),
        ]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("SAME as run r-"),
            "{stdout}{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn policy_learn_refuses_an_edited_log_and_a_file_that_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.jsonl");
    assert!(
        warden(&["demo", "-q", "--audit", log.to_str().unwrap()])
            .status
            .success()
    );
    let edited =
        std::fs::read_to_string(&log)
            .unwrap()
            .replacen("(17 * 23) + 4", "(17 * 23) + 5", 1);
    std::fs::write(&log, edited).unwrap();
    let out = bare(&["policy", "learn", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("is not intact") && err.contains("--force"),
        "{err}"
    );
    assert!(
        bare(&["policy", "learn", "--force", log.to_str().unwrap()])
            .status
            .success()
    );

    let not_a_log = dir.path().join("notes.txt");
    std::fs::write(&not_a_log, "hello\n").unwrap();
    let out = bare(&["policy", "learn", "--force", not_a_log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("holds no audit records"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn policy_diff_says_what_each_side_allows_in_words_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(repo().join("policies/demo.toml")).unwrap();
    let wider = dir.path().join("wider.toml");
    std::fs::write(
        &wider,
        demo.replace(
            "[tools.regex_search]\ncomponent = \"builtin:text\"\ndecision = \"deny\"",
            "[tools.regex_search]\ncomponent = \"builtin:text\"",
        ),
    )
    .unwrap();
    // Through an include, with nothing changed: the same policy.
    let layered = dir.path().join("layered.toml");
    std::fs::write(
        &layered,
        format!(
            "include = [{:?}]\n",
            repo().join("policies/demo.toml").display().to_string()
        ),
    )
    .unwrap();
    let out = bare(&[
        "policy",
        "diff",
        "policies/demo.toml",
        layered.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("allow the same"));

    let out = bare(&[
        "policy",
        "diff",
        "policies/demo.toml",
        wider.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("allows what policies/demo.toml does not:\n  tools.regex_search: added tool regex_search"),
        "{stdout}"
    );
    let out = bare(&[
        "policy",
        "diff",
        "--json",
        wider.to_str().unwrap(),
        "policies/demo.toml",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["exit"], 1);
    assert_eq!(
        value["differences"][0],
        serde_json::json!({ "direction": "narrows", "key": "tools.regex_search", "text": "removed tool regex_search" })
    );
}
