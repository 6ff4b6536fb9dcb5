//! `warden run` and `warden demo`.

use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use warden::bundled;
use warden::gate::{Approval, Approver, Asking, Question, Reply};
use warden::load::{ComponentSource, PolicyFile};
use warden::provider::{
    self, KeySource, ModelProvider, ProviderOptions, RecordingProvider, ScriptedProvider,
};
use warden::run::{RunError, RunSpec};
use warden::transcript::{field, quote};

use super::{EXIT_NO_ANSWER, bad_input, open_audit, print_json, print_warnings, start_runtime};

#[derive(Args)]
#[command(after_help = "Examples:
  warden run builtin:react -p policies/demo.toml -t \"What is 17 * 23?\" -m openai:gpt-4o-mini
  warden run agent.wasm -p policy.toml -t \"Summarize README.md\" -m openai-compatible:http://localhost:11434/v1#llama3.2
  warden run builtin:react -p policy.toml -t task -m scripted:turns.toml -q
  warden run builtin:react -p policy.toml -t task --approve tools.send_email --record run.jsonl
  warden run builtin:react -p policy.toml -t \"Pay the bill in bill.txt\" --approve-from tool:read_file
  warden run builtin:react -p policy.toml -t task --json | jq -r .answer")]
pub(crate) struct RunArgs {
    /// The agent: a .wasm component, or `builtin:react`.
    agent: String,
    /// The policy file to enforce.
    #[arg(long, short)]
    policy: PathBuf,
    /// The task given to the agent.
    #[arg(long, short)]
    task: String,
    /// Who answers the agent's model calls [default: the policy's
    /// `[model] provider`]: `openai:MODEL`, `anthropic:MODEL`,
    /// `openai-compatible:URL#MODEL` (Ollama, vLLM, llama.cpp, ...),
    /// `scripted:FILE` (model turns replayed in order) or `replay:FILE` (a
    /// recording).
    #[arg(long, short)]
    model: Option<String>,
    /// Read the provider's API key from this environment variable
    /// [default: OPENAI_API_KEY or ANTHROPIC_API_KEY].
    #[arg(long, value_name = "VAR", conflicts_with = "api_key_file")]
    api_key_env: Option<String>,
    /// Read the provider's API key from this file.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Approve in advance every request the rule RULE asks about (e.g.
    /// `tools.send_email`, `tools.pay.args.amount`); repeatable.
    #[arg(long, value_name = "RULE")]
    approve: Vec<String>,
    /// Approve an ask, once per call, when every value that triggered it
    /// came from SOURCE: `task`, `unlabeled`, `model`, `tool:NAME` or
    /// `label:NAME`, as in a `from` rule; repeatable (any of them).
    #[arg(long, value_name = "SOURCE", value_parser = super::parse_approve_from)]
    approve_from: Vec<warden::policy::explain::ApproveFrom>,
    /// Save every model exchange to FILE (JSON Lines), to replay the run
    /// later with `--model replay:FILE`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
pub(crate) struct OutputArgs {
    /// Write the audit log (JSON Lines) here [default: a new file under
    /// $XDG_STATE_HOME/warden/runs/].
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Print only the answer, not the transcript.
    #[arg(long, short)]
    quiet: bool,
    /// Print no transcript; print one JSON object when the run is over:
    /// the answer or error, exit status, run id, audit log and head,
    /// counts (docs/cli.md).
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Keep compiled components here [default: $WARDEN_CACHE_DIR/components,
    /// or ~/.cache/warden/components].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh; do not read or write the cache.
    #[arg(long)]
    no_cache: bool,
}

pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let policy = match PolicyFile::read(&args.policy) {
        Ok(policy) => policy,
        Err(error) => return bad_input(error),
    };
    print_warnings(&policy);
    let provider = match choose_provider(&args, &policy) {
        Ok(provider) => provider,
        Err(message) => return bad_input(message),
    };
    for rule in &args.approve {
        let names_a_tool = rule
            .strip_prefix("tools.")
            .and_then(|rest| rest.split('.').next())
            .is_some_and(|tool| policy.policy.tools.contains_key(tool));
        if !names_a_tool {
            eprintln!(
                "warning: --approve {rule} names no tool of {}: rules that ask look like `tools.NAME`, `tools.NAME.args.FIELD` or `tools.NAME.ask_when_labeled`",
                policy.name
            );
        }
    }
    super::warn_approve_from(&policy, &args.approve_from);
    let agent = ComponentSource::parse(&args.agent, Path::new("."));
    execute(
        policy,
        agent,
        provider,
        args.task,
        (args.approve, args.approve_from),
        args.output,
    )
    .await
}

/// The provider: `--model`, else the policy's `[model] provider`; the key
/// from `--api-key-env`/`--api-key-file`, else the policy's source (when
/// the provider is the policy's), else the provider's usual variable.
fn choose_provider(args: &RunArgs, policy: &PolicyFile) -> Result<Arc<dyn ModelProvider>, String> {
    let limits = policy.policy.model.limits;
    let cli_key = match (&args.api_key_env, &args.api_key_file) {
        (Some(var), _) => Some(KeySource::Env(var.clone())),
        (None, Some(file)) => Some(KeySource::File(file.clone())),
        (None, None) => None,
    };
    let options = match (&args.model, &policy.policy.model.provider) {
        (Some(spec), _) => (
            spec.clone(),
            ProviderOptions {
                key: cli_key.unwrap_or_default(),
                limits,
                base_dir: PathBuf::new(),
            },
        ),
        (None, Some(choice)) => {
            let policy_key = match (&choice.api_key_env, &choice.api_key_file) {
                (Some(var), _) => KeySource::Env(var.clone()),
                (None, Some((file, place))) => {
                    KeySource::File(policy.dir_of(place.file).join(file))
                }
                (None, None) => KeySource::Default,
            };
            (
                choice.spec.clone(),
                ProviderOptions {
                    key: cli_key.unwrap_or(policy_key),
                    limits,
                    base_dir: policy.dir_of(choice.place.file).to_path_buf(),
                },
            )
        }
        (None, None) => {
            return Err(format!(
                "error: no model provider given\n\
                 help: pass `--model openai:MODEL`, `--model anthropic:MODEL`, `--model openai-compatible:URL#MODEL` or `--model scripted:FILE`, or set `[model] provider` in {}",
                policy.name
            ));
        }
    };
    let (spec, options) = options;
    let provider = provider::from_spec(&spec, &options).map_err(|e| format!("error: {e}"))?;
    match &args.record {
        None => Ok(provider),
        Some(path) => match RecordingProvider::create(provider, path) {
            Ok(recorder) => Ok(Arc::new(recorder)),
            Err(error) => Err(format!(
                "error: cannot create the recording {}: {error}",
                path.display()
            )),
        },
    }
}

pub(crate) async fn demo(output: OutputArgs) -> ExitCode {
    let policy = match PolicyFile::from_text(
        bundled::DEMO_POLICY_NAME.into(),
        PathBuf::from("."),
        bundled::DEMO_POLICY.into(),
    ) {
        Ok(policy) => policy,
        Err(error) => return bad_input(error),
    };
    let provider = match ScriptedProvider::parse(bundled::DEMO_SCRIPT_NAME, bundled::DEMO_SCRIPT) {
        Ok(provider) => Arc::new(provider),
        Err(error) => return bad_input(error),
    };
    let agent = ComponentSource::Builtin("react".into());
    execute(
        policy,
        agent,
        provider,
        bundled::DEMO_TASK.into(),
        (Vec::new(), Vec::new()),
        output,
    )
    .await
}

async fn execute(
    policy: PolicyFile,
    agent: ComponentSource,
    provider: Arc<dyn ModelProvider>,
    task: String,
    (approve, approve_from): (Vec<String>, Vec<warden::policy::explain::ApproveFrom>),
    output: OutputArgs,
) -> ExitCode {
    let runtime = match start_runtime(output.cache_dir, output.no_cache) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let (audit_path, mut log) = match open_audit(output.audit) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    if !output.quiet && !output.json {
        log = log.with_sink(super::stdout_transcript());
    }
    let run_id = log.run().to_string();
    // A person is asked only when one is at the terminal; stdin is the
    // host's (guests have none), and guests' stdout is never shown.
    let approver: Option<Arc<dyn Approver>> =
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            Some(Arc::new(TerminalApprover))
        } else {
            None
        };
    let spec = RunSpec {
        policy,
        agent,
        provider,
        task,
        approver,
        approve,
        approve_from,
        replay_tools: None,
    };
    let report = match warden::run::run(&runtime, spec, log).await {
        Ok(report) => report,
        Err(RunError::Audit(error)) => {
            let message = format!(
                "the audit log {} could not be written, so the run was stopped: {error}",
                audit_path.display()
            );
            eprintln!("error: {message}");
            if output.json {
                let value = serde_json::json!({
                    "exit": EXIT_NO_ANSWER,
                    "error": message,
                    "run_id": run_id,
                    "audit_log": audit_path.display().to_string(),
                });
                return print_json(&value, ExitCode::from(EXIT_NO_ANSWER));
            }
            return ExitCode::from(EXIT_NO_ANSWER);
        }
        // A policy error renders itself, `error:` included.
        Err(RunError::Policy(error)) => return bad_input(error),
        Err(error) => return bad_input(field("error:", &error.to_string())),
    };
    let code = match &report.result {
        Ok(_) if output.json => ExitCode::SUCCESS,
        Ok(answer) => {
            if output.quiet {
                print_answer(answer);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{}", field("error:", &failure.to_string()));
            ExitCode::from(EXIT_NO_ANSWER)
        }
    };
    // Last, on stderr, once no guest code runs: nothing a guest, model or
    // tool wrote can come after it, and none of it starts like it.
    eprintln!(
        "audit log: {}  (agent {} in {:.2?})\naudit head: {}  (check: warden audit verify {} --head {})",
        audit_path.display(),
        if report.agent_cache_hit {
            "loaded from the compile cache"
        } else {
            "compiled"
        },
        report.agent_load_time,
        report.audit_head,
        audit_path.display(),
        &report.audit_head[..16],
    );
    if output.json {
        return print_json(&run_json(&report, &audit_path), code);
    }
    code
}

/// `run --json`'s object (docs/cli.md): `answer` or `error`, never both.
fn run_json(report: &warden::run::RunReport, audit_path: &Path) -> serde_json::Value {
    let mut summary = report.summary();
    summary["first_instruction_us"] =
        serde_json::json!(report.first_instruction.map(|d| d.as_micros() as u64));
    let mut value = serde_json::json!({
        "exit": if report.result.is_ok() { 0 } else { EXIT_NO_ANSWER },
        "run_id": report.run_id,
        "audit_log": audit_path.display().to_string(),
        "audit_head": report.audit_head,
        "summary": summary,
    });
    match &report.result {
        Ok(answer) => value["answer"] = answer.as_str().into(),
        Err(failure) => value["error"] = failure.to_string().into(),
    }
    value
}

/// `--quiet`'s answer. On a terminal, where a person reads it next to
/// warden's own lines on stderr, it is quoted like every outside text;
/// into a pipe or a file, where a program reads it, it is the answer as it
/// is, with only the characters that [`warden::transcript::hides`] escaped.
fn print_answer(answer: &str) {
    if std::io::stdout().is_terminal() {
        println!("{}", quote(answer));
    } else {
        println!("{}", warden::transcript::clean(answer));
    }
}

/// The values that triggered an ask and where each was seen, and each
/// label with what brought it, as lines of the prompt. Fields and values
/// are guest text: each sits after warden's own lead, JSON-quoted (so it
/// cannot end early or take a second line); where it was seen is warden's
/// words naming the policy's sources.
fn explained_lines(question: &Question) -> String {
    use warden::transcript::name;
    let explained = &question.explained;
    let mut out = String::new();
    for seen in &explained.values {
        let value = serde_json::Value::String(seen.value.clone()).to_string();
        out.push('\n');
        out.push_str(&field(&format!("  value {}:", name(&seen.field)), &value));
        out.push_str(&format!("\n      seen: {}", seen.seen));
    }
    if explained.unlisted > 0 {
        out.push_str(&format!(
            "\n  and {} more values, not shown",
            explained.unlisted
        ));
    }
    for label in &explained.labels {
        out.push_str(&format!(
            "\n  label {}: brought by {}",
            name(&label.label),
            label.brought_by.join(", ")
        ));
    }
    if let Some(not) = &question.not_vouched {
        out.push('\n');
        out.push_str(&field("  note:", not));
    }
    out
}

/// Asks the person at the terminal (stderr and stdin, which no guest can
/// reach) about each `ask` decision.
pub(crate) struct TerminalApprover;

impl Approver for TerminalApprover {
    fn ask(&self, question: Question) -> Asking {
        // The prompt reads stdin, which blocks: on a blocking thread, one
        // prompt at a time, so the async runtime's threads stay free.
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
                let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
                Reply::from(prompt(&question))
            })
            .await
            .unwrap_or(Reply::Unanswered { why: None })
        })
    }
}

/// Ask at the terminal; `None` when stdin ended.
fn prompt(question: &Question) -> Option<Approval> {
    use std::io::{BufRead, Write};
    use warden::transcript::name;
    let what = question
        .data
        .as_ref()
        .map(|d| d.get("arguments").unwrap_or(d).to_string())
        .unwrap_or_default();
    let labels = if question.labels.is_empty() {
        "none".to_string()
    } else {
        question.labels.join(", ")
    };
    let bold = if super::color_for(true) {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut err = std::io::stderr().lock();
    let rules = question
        .rules
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        err,
        "\n{}warden: approval needed{}\n{}\n{}\n{}\n{}{}\n  [y] allow once  [a] allow for the rest of the run (these rules)  [N] deny: ",
        bold.0,
        bold.1,
        field(&format!("  {} ", name(&question.subject)), &what),
        field("  rule:", &rules),
        field("  why:", &question.reason),
        field("  session labels:", &labels),
        explained_lines(question),
    );
    let _ = err.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).ok()? == 0 {
        return None;
    }
    Some(match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Approval::Once,
        "a" | "always" => Approval::ForRun,
        _ => Approval::Deny,
    })
}
