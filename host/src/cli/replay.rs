//! `warden replay`.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use warden::audit::{AuditLog, new_run_id};
use warden::load::{ComponentSource, PolicyFile};
use warden::run::RunSpec;
use warden::transcript::field;

use super::{EXIT_NO_ANSWER, bad_input, print_json, start_runtime};

#[derive(Args)]
#[command(after_help = "Examples:
  warden replay run.jsonl --trust-log                         # the agent and policy the log names
  warden replay run.jsonl --agent builtin:react -p policy.toml
  warden replay run.jsonl --trust-log -p stricter.toml -q     # would the new policy change the run?
  warden replay run.jsonl --trust-log --json | jq .divergence")]
pub(crate) struct ReplayArgs {
    /// The audit log of the run.
    log: PathBuf,
    /// Which run in the log [default: the last].
    #[arg(long)]
    run: Option<String>,
    /// Enforce this policy instead of the recorded one.
    #[arg(long, short)]
    policy: Option<PathBuf>,
    /// Run this agent instead of the recorded one.
    #[arg(long)]
    agent: Option<String>,
    /// Use the agent and policy the log names (shown first). Anyone who can
    /// write the log can name them: without this flag a replay runs only
    /// what --agent and --policy name.
    #[arg(long)]
    trust_log: bool,
    /// Grant the agent the policy's directories, read-only (shown first).
    /// Without it, a replay grants no directory.
    #[arg(long)]
    read_dirs: bool,
    /// Replay a log whose hash chain is broken (it was edited): its
    /// answers may be forged.
    #[arg(long)]
    force: bool,
    /// Print only the verdict, not the transcript.
    #[arg(long, short)]
    quiet: bool,
    /// Print no transcript; print one JSON object at the end: same or
    /// diverged, the first divergence, the counts (docs/cli.md).
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
}

pub(crate) async fn run(args: ReplayArgs) -> ExitCode {
    use warden::audit::MemorySink;
    use warden::replay::{Divergence, ReplayModel, ReplayTools};
    let ReplayArgs {
        log,
        run: run_id,
        policy,
        agent,
        trust_log,
        read_dirs,
        force,
        quiet,
        json,
    } = args;
    // The chain first: a log that is not what warden wrote is refused
    // before anything in it is believed.
    let report = match std::fs::File::open(&log).and_then(warden::audit::verify) {
        Ok(report) => report,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", log.display())),
    };
    if !report.is_intact() {
        let mut message = format!(
            "{}: the hash chain is broken: the log is not what warden wrote, so its answers may be forged:",
            log.display()
        );
        for problem in report.problems.iter().take(5) {
            message.push_str(&format!(
                "\n  line {}: {}",
                problem.line,
                warden::transcript::clean(&problem.message)
            ));
        }
        let more = report.problems.len().saturating_sub(5) + report.more_problems;
        if more > 0 {
            message.push_str(&format!("\n  ... and {more} more"));
        }
        if !force {
            return bad_input(format!(
                "error: {message}\nhelp: `warden audit verify {}` shows every break; replay it anyway with --force",
                log.display()
            ));
        }
        eprintln!("warning: {message}\nreplaying anyway (--force)");
    }
    for line in &report.torn {
        eprintln!(
            "note: {}:{line}: an incomplete record (the host was stopped while writing it)",
            log.display()
        );
    }
    // Only the run replayed is held, a line at a time: the log may be
    // large (or made to be).
    let Some(run_id) = run_id.or_else(|| report.runs.last().map(|(run, _, _)| run.clone())) else {
        return bad_input(format!("error: {}: the log holds no run", log.display()));
    };
    let records = match std::fs::File::open(&log).and_then(|file| records_of(file, &run_id)) {
        Ok(records) => records,
        Err(error) => return bad_input(format!("error: cannot read {}: {error}", log.display())),
    };
    let recorded = match warden::replay::read(&records, Some(&run_id)) {
        Ok(recorded) => recorded,
        Err(error) if warden::replay::is_mcp_session(&records, &run_id) => {
            return bad_input(format!(
                "error: {}: {error}\nhelp: `warden audit show {}` shows what the client called",
                log.display(),
                log.display()
            ));
        }
        Err(error) => return bad_input(format!("error: {}: {error}", log.display())),
    };
    let clean = warden::transcript::clean;
    let from_log = agent.is_none() || policy.is_none();
    let policy_path = policy
        .clone()
        .unwrap_or_else(|| PathBuf::from(&recorded.policy));
    let policy_file = match PolicyFile::read(&policy_path) {
        Ok(policy) => policy,
        Err(error) => {
            return bad_input(format!(
                "{error}\nhelp: the run used {}; pass --policy FILE if it moved",
                clean(&recorded.policy)
            ));
        }
    };
    let agent_text = agent.clone().unwrap_or_else(|| recorded.agent.clone());
    // What will run, shown before anything does: from a log, these are
    // whatever its writer put there.
    let whence = |given: bool| if given { "given" } else { "from the log" };
    let mut shown = format!(
        "replay of run {}:\n  agent:  {} ({})\n  policy: {} ({})",
        clean(&recorded.run),
        clean(&agent_text),
        whence(agent.is_some()),
        clean(&policy_path.display().to_string()),
        whence(policy.is_some()),
    );
    let (grants, _) = policy_file.policy.grants_of(None);
    let mounts = grants.map(|g| g.fs.as_slice()).unwrap_or_default();
    if mounts.is_empty() {
        shown.push_str("\n  directories: the policy grants the agent none");
    } else {
        shown.push_str(if read_dirs {
            "\n  directories, granted read-only (--read-dirs):"
        } else {
            "\n  directories the policy grants the agent (no directory is granted; --read-dirs grants them read-only):"
        });
        for mount in mounts {
            shown.push_str(&format!(
                "\n    {} = {} ({} in the policy)",
                clean(&mount.guest_path),
                clean(
                    &policy_file
                        .dir_of(mount.place.file)
                        .join(&mount.dir)
                        .display()
                        .to_string()
                ),
                match mount.mode {
                    warden::policy::MountMode::Ro => "ro",
                    warden::policy::MountMode::Rw => "rw",
                },
            ));
        }
    }
    eprintln!("{shown}");
    if from_log && !trust_log {
        return bad_input(
            "error: the agent and policy above come from the log where not given, and anyone who can write the log can name them\nhelp: check them, then pass --trust-log; or name your own with --agent and --policy",
        );
    }
    if policy_file.sha256 != recorded.policy_sha256 {
        eprintln!(
            "note: {} has changed since run {} (sha256 {} then, {} now): differences may come from the policy",
            policy_path.display(),
            warden::transcript::name(&recorded.run),
            // From a log someone else may have written: not necessarily hex.
            warden::transcript::clean_line(
                &recorded.policy_sha256.chars().take(12).collect::<String>()
            ),
            &policy_file.sha256[..12]
        );
    }
    if recorded.model.iter().any(|s| s.request_sha256.is_none()) {
        eprintln!(
            "note: the log holds no hash of the model requests (it was written before warden recorded them): only the number of messages sent is compared"
        );
    }
    let agent = ComponentSource::parse(&agent_text, Path::new("."));
    let runtime = match start_runtime(None, false) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Tool components come from files or the download cache, never the
    // network.
    let offline = warden::remote::Downloader {
        offline: true,
        ..runtime.downloader().clone()
    };
    let runtime = runtime.with_downloader(offline);
    let divergence = Arc::new(Divergence::default());
    let tools = Arc::new(ReplayTools::new(&recorded, divergence.clone()).with_read_dirs(read_dirs));
    let sink = MemorySink::default();
    let mut audit = AuditLog::new(new_run_id()).with_sink(sink.clone());
    if !quiet && !json {
        audit = audit.with_sink(super::stdout_transcript());
    }
    let spec = RunSpec {
        policy: policy_file,
        agent,
        provider: Arc::new(ReplayModel::new(&recorded, divergence.clone())),
        task: recorded.task.clone(),
        approver: None,
        approve: recorded.approved.clone(),
        approve_from: Vec::new(),
        replay_tools: Some(tools.clone()),
    };
    let report = match warden::run::run(&runtime, spec, audit).await {
        Ok(report) => report,
        // Rendered with its file and line, `error:` included.
        Err(warden::run::RunError::Policy(error)) => return bad_input(error),
        Err(error) => return bad_input(field("error:", &error.to_string())),
    };
    if let Some(sha) = sink.records().first().and_then(|r| {
        r.data
            .as_ref()?
            .pointer("/agent/sha256")?
            .as_str()
            .map(str::to_string)
    }) && sha != recorded.agent_sha256
    {
        eprintln!(
            "note: the agent component has changed since run {} (sha256 differs)",
            warden::transcript::name(&recorded.run)
        );
    }
    let answer = report.result.as_ref().ok().cloned();
    let verdict = match divergence.first() {
        Some(what) => Some(what),
        None if tools.left() > 0 => Some(format!(
            "the agent stopped with {} recorded tool call(s) not made",
            tools.left()
        )),
        None if answer != recorded.answer => Some(format!(
            "the answer differs: recorded {:?}, now {:?}",
            recorded.answer, answer
        )),
        None => None,
    };
    if json {
        let value = serde_json::json!({
            "exit": if verdict.is_some() { EXIT_NO_ANSWER } else { 0 },
            "same": verdict.is_none(),
            "run_id": recorded.run,
            "divergence": verdict,
            "model_answers": recorded.model.len(),
            "tool_results": recorded.tools.len(),
            "recorded_answer": recorded.answer,
            "answer": answer,
        });
        let code = match verdict {
            None => ExitCode::SUCCESS,
            Some(_) => ExitCode::from(EXIT_NO_ANSWER),
        };
        return print_json(&value, code);
    }
    match verdict {
        Some(what) => {
            println!(
                "{}",
                field(
                    &format!(
                        "DIVERGED from run {}:",
                        warden::transcript::name(&recorded.run)
                    ),
                    &what
                )
            );
            ExitCode::from(EXIT_NO_ANSWER)
        }
        None => {
            println!(
                "SAME as run {}: {} model answer(s) and {} tool result(s) replayed, same answer",
                warden::transcript::name(&recorded.run),
                recorded.model.len(),
                recorded.tool_results()
            );
            ExitCode::SUCCESS
        }
    }
}

/// The records of run `run` in an audit log, read a line at a time; a line
/// longer than any record warden writes is skipped without being held.
fn records_of(file: std::fs::File, run: &str) -> std::io::Result<Vec<warden::audit::Record>> {
    use std::io::{BufRead as _, Read as _};
    let max = warden::audit::verify::MAX_LINE;
    let mut reader = std::io::BufReader::new(file);
    let mut records = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if (&mut reader)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut line)?
            == 0
        {
            return Ok(records);
        }
        if line.len() > max && line.last() != Some(&b'\n') {
            let mut byte = [0u8; 1];
            while reader.read(&mut byte)? == 1 && byte[0] != b'\n' {}
            continue;
        }
        if let Ok(record) = serde_json::from_slice::<warden::audit::Record>(&line)
            && record.run == run
        {
            records.push(record);
        }
    }
}
