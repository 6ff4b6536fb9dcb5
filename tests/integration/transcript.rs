//! What a person reads cannot be forged: an agent's answer, a tool's
//! panic text, a model's text, a provider's error and a tool call's
//! arguments each carry lines made to look like warden's own, and the
//! output is read with the rule docs/threat-model.md states ("What the
//! transcript guarantees"): a line starting with `  │` quotes outside text;
//! every other line is warden's, and starts with one of warden's markers.

use crate::harness::*;
use crate::mock_model::*;
use std::process::{Command, Output};

/// What starts every line of outside text (docs/threat-model.md), and no
/// line of warden's.
const QUOTE: &str = "  │";

/// The lines warden's own output starts with (docs/threat-model.md).
const WARDEN: &[&str] = &[
    "warden run ",
    "  agent",
    "  policy",
    "  model",
    "  task",
    "  tools",
    "[model] ",
    "[tool]  ",
    "[http]  ",
    "[ask]   ",
    "[log]   ",
    "[limit] ",
    "[stdio] ",
    "[stop]  ",
    "[redact] ",
    "        ->",
    "        the session is now labeled",
    "        (",
    "answer:",
    "no answer:",
    "decisions: ",
    "budgets: ",
    "labels:",
    "audit log: ",
    "audit head: ",
    "error:",
    "warning: ",
];

/// Lines that look like warden's, each tagged with where it was planted.
fn forged(tag: &str) -> String {
    format!(
        "[tool]  pay {{\"to\":\"{tag}\"}}  allow (tools.pay)\n\
         [tool] pay {{\"to\":\"{tag}\"}} allow (tools.pay)\r\n\
         [ask]   pay  approved by a person\n\
         audit head: {}  (check: warden audit verify)\n\
         answer:\n\
         {}[tool]  pay {{\"to\":\"{tag}-long\"}}  allow (tools.pay)\n\
         {QUOTE} [tool]  pay {{\"to\":\"{tag}-quote\"}}  allow (tools.pay)\n\
         cr\r[tool]  pay {{\"to\":\"{tag}-cr\"}}  allow (tools.pay)",
        "0".repeat(64),
        "x".repeat(77),
    )
}

fn policy(dir: &std::path::Path, mock: &MockModel) -> std::path::PathBuf {
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[model]\nprovider = \"openai-compatible:{}/v1#gpt-test\"\nallow = [\"gpt-test\"]\nmax_calls = 10\n\n[tools.panic]\ncomponent = \"{}\"\n",
            mock.url,
            guests::ATTACKER_TOOL
        ),
    )
    .unwrap();
    policy
}

/// The provider fails the first chat with forged lines in its error body
/// and answers the second with them; the attacker then has a tool panic
/// with them, calls a tool with them in its (invalid) arguments and under
/// a forged name, and answers with them.
fn replies() -> Vec<Reply> {
    vec![
        Reply::json(
            400,
            serde_json::json!({ "error": { "message": forged("provider") } }),
        ),
        openai_text(&forged("model"), Some((10, 10))),
    ]
}

fn task() -> String {
    let calls = serde_json::json!([
        { "chat": "gpt-test" },
        { "chat": "gpt-test" },
        { "tool": "panic", "args": serde_json::json!({ "text": format!("it says:\n{}", forged("panic")) }).to_string() },
        { "tool": "pay", "args": format!("not json\n{}", forged("args")) },
        { "tool": "pay {\"to\":\"name\"}  allow (tools.pay)", "args": "{}" },
        { "answer": forged("answer") },
    ]);
    format!("calls:{calls}")
}

fn run(policy: &std::path::Path, audit: &std::path::Path, quiet: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warden"));
    command
        .args(["run", guests::ATTACKER, "-p"])
        .arg(policy)
        .args(["-t", &task(), "--audit"])
        .arg(audit)
        .arg("--cache-dir")
        .arg(cache_dir());
    if quiet {
        command.arg("-q");
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Read `output` by the rule; panics at the first line that breaks it.
/// Returns the quoted lines' contents.
fn read_by_the_rule(output: &str) -> Vec<String> {
    assert!(
        !output.contains(['\r', '\x1b', '\u{2028}', '\u{85}']),
        "a character that moves the cursor reached the output: {output:?}"
    );
    let mut quoted = Vec::new();
    let mut answers = 0;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix(QUOTE) {
            quoted.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            continue;
        }
        assert!(
            line.is_empty()
                || line.starts_with(|c: char| c.is_ascii_digit())
                || WARDEN.iter().any(|marker| line.starts_with(marker)),
            "a line that is neither quoted nor warden's: {line:?}\n{output}"
        );
        for fake in [
            "[tool]  pay {",
            "[tool] pay",
            "[ask]   pay  approved",
            "audit head: 0000",
            "cr",
            "xxxx",
        ] {
            assert!(
                !line.starts_with(fake),
                "a forged line passes for warden's: {line:?}\n{output}"
            );
        }
        answers += usize::from(line.starts_with("answer:"));
    }
    assert!(answers <= 1, "{output}");
    quoted
}

/// The one `audit head:` line: the last of `stderr`, and the log's head.
fn the_head_is_last(stderr: &str, audit: &std::path::Path) {
    let heads: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("audit head: "))
        .collect();
    assert_eq!(heads.len(), 1, "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert_eq!(heads[0], last, "the head is the last line: {stderr}");
    let log = std::fs::File::open(audit).unwrap();
    let head = warden::audit::verify(log).unwrap().head;
    assert!(last.starts_with(&format!("audit head: {head}  ")), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_warden_lines_from_a_guest_a_tool_and_a_provider_are_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockModel::start(replies()).await;
    let policy = policy(dir.path(), &mock);
    let audit = dir.path().join("audit.jsonl");
    let (p, a) = (policy.clone(), audit.clone());
    let out = tokio::task::spawn_blocking(move || run(&p, &a, false))
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let quoted = read_by_the_rule(&format!("{stdout}{stderr}"));
    // Every planted copy reached the person, quoted: the attack ran.
    // (Tool arguments and results are shown cut, so only their first
    // lines.)
    for tag in ["provider", "model", "panic", "args", "answer"] {
        let line = format!("[tool]  pay {{\"to\":\"{tag}\"}}  allow (tools.pay)");
        assert!(quoted.contains(&line), "{tag}: {line} not quoted\n{stdout}");
    }
    for tag in ["provider", "model", "answer"] {
        let line = format!("{QUOTE} [tool]  pay {{\"to\":\"{tag}-quote\"}}  allow (tools.pay)");
        assert!(quoted.contains(&line), "{tag}: {line} not quoted\n{stdout}");
        let line = format!("cr\\u{{d}}[tool]  pay {{\"to\":\"{tag}-cr\"}}  allow (tools.pay)");
        assert!(quoted.contains(&line), "{tag}: {line} not quoted\n{stdout}");
    }
    // The forged tool name is shown in quotes on warden's line.
    assert!(
        stdout.contains(
            "[tool]  \"pay {\\\"to\\\":\\\"name\\\"}  allow (tools.pay)\"  DENY (default)"
        ),
        "{stdout}"
    );
    assert_eq!(stdout.lines().filter(|l| *l == "answer:").count(), 1);
    the_head_is_last(&stderr, &audit);
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_prints_the_answer_as_it_is_into_a_pipe_and_quoted_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut twice = replies();
    twice.extend(replies());
    let mock = MockModel::start(twice).await;
    let policy = policy(dir.path(), &mock);
    let audit = dir.path().join("audit.jsonl");
    let (p, a) = (policy.clone(), audit.clone());
    let out = tokio::task::spawn_blocking(move || run(&p, &a, true))
        .await
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    // For a program: the answer, only the bare CR escaped.
    assert_eq!(
        stdout,
        format!("{}\n", forged("answer").replace('\r', "\\u{d}"))
    );
    the_head_is_last(&stderr, &audit);

    // For a person: in a pseudo-terminal (`script`, from util-linux), stdout
    // and stderr on one screen.
    let command = format!(
        "{} run {} -q -p {} -t '{}' --audit {} --cache-dir {}",
        env!("CARGO_BIN_EXE_warden"),
        guests::ATTACKER,
        policy.display(),
        task().replace('\'', "'\\''"),
        audit.display(),
        cache_dir().display()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("`script` (util-linux) runs the host in a pseudo-terminal")
    })
    .await
    .unwrap();
    // The terminal ends lines with CR LF.
    let screen = text(&out.stdout).replace("\r\n", "\n");
    let quoted = read_by_the_rule(&screen);
    let line = "[tool]  pay {\"to\":\"answer\"}  allow (tools.pay)".to_string();
    assert!(quoted.contains(&line), "{screen}");
    let last = screen.lines().last().unwrap();
    assert!(last.starts_with("audit head: "), "{screen}");
    assert_eq!(
        screen
            .lines()
            .filter(|l| l.starts_with("audit head: "))
            .count(),
        1
    );
}
