//! How long a whole `warden` process takes to start, run the demo and
//! exit, with the compile cache warm, against the floors of any process.
//!
//! Variants, interleaved run by run so the machine's load falls on all of
//! them alike (the release binary, a fresh cache and state directory in a
//! temp dir, one cold run of each first to fill the cache):
//!
//! - `/bin/true`: spawning a process that does nothing.
//! - `warden --version`: warden's own process start (dynamic linking,
//!   Rust's runtime, argument parsing) with no work.
//! - `warden demo -q`: the bundled demo (three components, four model
//!   turns, four tool calls, two refused), its audit log fsynced.
//! - `warden run builtin:react -p policies/demo.toml ...`: the same run
//!   through `run`, reading the policy and the model script from files.
//!
//! For the two runs it also reads, from each run's end audit record, how
//! long after warden's `main` began the agent's first instruction ran
//! (`first_instruction_us`); and, in this process, how long building the
//! engine and the async runtime take. Run with `make bench` or
//! `cargo bench -p warden --bench start`; `WARDEN_BENCH_RUNS` sets the
//! number of runs of each (default 200).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Variant {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    /// Whether the run writes an audit log to read the start time from.
    audited: bool,
    wall: Vec<Duration>,
    /// User plus system CPU time of the process: less at the mercy of the
    /// machine's other work than the wall time.
    cpu: Vec<Duration>,
    first_instruction: Vec<Duration>,
}

/// CPU time (user + system) used by this process's waited-for children.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given, nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn percentile(samples: &mut [Duration], percent: usize) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() * percent / 100).min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The end record's `first_instruction_us`, in the audit log at `path`
/// (a binary from before it was recorded has none).
fn first_instruction(path: &Path) -> Option<Duration> {
    let log = std::fs::read_to_string(path).expect("the run's audit log");
    let last: serde_json::Value =
        serde_json::from_str(log.lines().last().expect("a record")).expect("a JSON record");
    last["data"]["first_instruction_us"]
        .as_u64()
        .map(Duration::from_micros)
}

fn main() {
    let runs: usize = std::env::var("WARDEN_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let warden = PathBuf::from(env!("CARGO_BIN_EXE_warden"));
    let task = "What is (17 * 23) + 4, how many words are in \"the quick brown fox jumps over the lazy dog\", and which lines of the poem below mention a fox?\n\nThe fox at dawn\nA hen at noon\nThe fox again by moonlight";
    let variant = |name: String, program: &Path, args: &[&str], audited: bool| Variant {
        name,
        program: program.to_path_buf(),
        args: args.iter().map(|a| a.to_string()).collect(),
        audited,
        wall: Vec::new(),
        cpu: Vec::new(),
        first_instruction: Vec::new(),
    };
    let mut variants = vec![
        variant("/bin/true".into(), Path::new("/bin/true"), &[], false),
        variant("warden --version".into(), &warden, &["--version"], false),
    ];
    // The binary measured, and a binary from before a change to compare it
    // with in the same run (`WARDEN_BENCH_BEFORE=path/to/warden`).
    let mut binaries = vec![("", warden.clone())];
    if let Some(before) = std::env::var_os("WARDEN_BENCH_BEFORE") {
        binaries.push(("before: ", PathBuf::from(before)));
    }
    for (label, binary) in &binaries {
        variants.push(variant(
            format!("{label}warden demo -q"),
            binary,
            &["demo", "-q"],
            true,
        ));
        variants.push(variant(
            format!("{label}warden run builtin:react (demo)"),
            binary,
            &[
                "run",
                "builtin:react",
                "-p",
                "policies/demo.toml",
                "-m",
                "scripted:agents/react/demo.script.toml",
                "-q",
                "-t",
                task,
            ],
            true,
        ));
    }
    let spawn = |variant: &Variant, audit: &Path| -> (Duration, Duration) {
        let mut command = Command::new(&variant.program);
        command
            .args(&variant.args)
            .current_dir(repo)
            .env("WARDEN_CACHE_DIR", dir.path().join("cache"))
            .env("XDG_CACHE_HOME", dir.path().join("xdg-cache"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env_remove("WARDEN_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if variant.audited {
            command.arg("--audit").arg(audit);
        }
        let cpu = children_cpu();
        let started = Instant::now();
        let status = command.status().expect("spawn");
        let took = started.elapsed();
        assert!(status.success(), "{} exited with {status}", variant.name);
        (took, children_cpu() - cpu)
    };

    // Cold: the compile cache is filled by the first run.
    for variant in &variants {
        let (took, _) = spawn(variant, &dir.path().join("cold.jsonl"));
        println!("{:<44} cold: {}", variant.name, ms(took));
    }
    for i in 0..runs {
        for variant in &mut variants {
            // A new log per run: one that exists is continued, and reading
            // it back would grow with the runs.
            let audit = dir.path().join(format!("run-{i}.jsonl"));
            let (took, cpu) = spawn(variant, &audit);
            variant.wall.push(took);
            variant.cpu.push(cpu);
            if variant.audited {
                variant.first_instruction.extend(first_instruction(&audit));
                std::fs::remove_file(&audit).unwrap();
            }
        }
    }

    // Pieces of a start measured in this process: the engine (pooling
    // allocator sized for 100 instances, both linkers, the epoch ticker
    // thread) and the async runtime `warden run` builds.
    let mut engine = Vec::new();
    let mut tokio = Vec::new();
    for _ in 0..runs.min(50) {
        let started = Instant::now();
        let runtime = warden::runtime::Runtime::new(warden::runtime::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        })
        .unwrap();
        engine.push(started.elapsed());
        drop(runtime);
        let started = Instant::now();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {});
        tokio.push(started.elapsed());
    }
    println!(
        "\nin-process, median: Runtime::new {}, tokio multi-thread runtime {}",
        ms(percentile(&mut engine, 50)),
        ms(percentile(&mut tokio, 50))
    );

    println!("\n{runs} runs of each, interleaved, cache warm:\n");
    println!(
        "{:<44} {:>10} {:>10} {:>10}   {:>22}",
        "", "median", "p90", "CPU", "first instruction (median / p90)"
    );
    for variant in &mut variants {
        let wall = (
            percentile(&mut variant.wall, 50),
            percentile(&mut variant.wall, 90),
        );
        let first = if variant.first_instruction.is_empty() {
            String::new()
        } else {
            format!(
                "{} / {}",
                ms(percentile(&mut variant.first_instruction, 50)),
                ms(percentile(&mut variant.first_instruction, 90))
            )
        };
        println!(
            "{:<44} {:>10} {:>10} {:>10}   {:>22}",
            variant.name,
            ms(wall.0),
            ms(wall.1),
            ms(percentile(&mut variant.cpu, 50)),
            first
        );
    }
}
