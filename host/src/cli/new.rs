//! `warden new`: a tool or agent project in Rust, Python or JavaScript,
//! with its build command, policy, test and README, made from the
//! templates in `host/templates/`. It writes only inside a new (or empty)
//! directory and never overwrites a file.

use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::bad_input;

#[derive(Args)]
pub(crate) struct NewArgs {
    /// What to create: a tool component (`describe` + `invoke`) or an
    /// agent (`run(task)`).
    kind: Kind,
    /// The project's directory, which must not exist or be empty; its last
    /// part names the project, and the tool (with `-` as `_`).
    path: PathBuf,
    /// The language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The warden checkout whose guest SDK and WIT contract the project
    /// uses [default: the one this warden was built from].
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Tool,
    Agent,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    Rust,
    Python,
    Js,
}

/// The checkout this binary was built from: its guest SDKs are the
/// default `--sdk`.
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// One file of a template: where it goes in the project, its text, and
/// whether it is a script to run.
struct File {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

macro_rules! template {
    ($($path:literal => $source:literal $(, $exec:ident)?);* $(;)?) => {
        &[$(File {
            path: $path,
            text: include_str!(concat!("../../templates/", $source)),
            executable: template!(@exec $($exec)?),
        }),*]
    };
    (@exec executable) => { true };
    (@exec) => { false };
}

const RUST_TOOL: &[File] = template! {
    "Cargo.toml" => "rust-tool/Cargo.toml";
    "src/lib.rs" => "rust-tool/src.lib.rs";
    "policy.toml" => "rust-tool/policy.toml";
    "README.md" => "rust-tool/README.md";
    ".gitignore" => "rust-tool/gitignore";
};
const RUST_AGENT: &[File] = template! {
    "Cargo.toml" => "rust-agent/Cargo.toml";
    "src/lib.rs" => "rust-agent/src.lib.rs";
    "policy.toml" => "rust-agent/policy.toml";
    "demo.script.toml" => "rust-agent/demo.script.toml";
    "README.md" => "rust-agent/README.md";
    ".gitignore" => "rust-agent/gitignore";
};
const PYTHON_TOOL: &[File] = template! {
    "app.py" => "python-tool/app.py";
    "test_app.py" => "python-tool/test_app.py";
    "build.sh" => "python-tool/build.sh", executable;
    "policy.toml" => "python-tool/policy.toml";
    "README.md" => "python-tool/README.md";
    ".gitignore" => "python-tool/gitignore";
};
const PYTHON_AGENT: &[File] = template! {
    "app.py" => "python-agent/app.py";
    "test_app.py" => "python-agent/test_app.py";
    "build.sh" => "python-agent/build.sh", executable;
    "policy.toml" => "python-agent/policy.toml";
    "demo.script.toml" => "python-agent/demo.script.toml";
    "README.md" => "python-agent/README.md";
    ".gitignore" => "python-agent/gitignore";
};
const JS_TOOL: &[File] = template! {
    "package.json" => "js-tool/package.json";
    "tool.js" => "js-tool/tool.js";
    "tool.test.js" => "js-tool/tool.test.js";
    "policy.toml" => "js-tool/policy.toml";
    "README.md" => "js-tool/README.md";
    ".gitignore" => "js-tool/gitignore";
};
const JS_AGENT: &[File] = template! {
    "package.json" => "js-agent/package.json";
    "agent.js" => "js-agent/agent.js";
    "agent.test.js" => "js-agent/agent.test.js";
    "policy.toml" => "js-agent/policy.toml";
    "demo.script.toml" => "js-agent/demo.script.toml";
    "README.md" => "js-agent/README.md";
    ".gitignore" => "js-agent/gitignore";
};

/// Names Rust refuses for a crate (keywords and the standard crates).
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

pub(crate) fn run(args: NewArgs) -> ExitCode {
    match create(&args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => bad_input(message),
    }
}

fn create(args: &NewArgs) -> Result<String, String> {
    let name = project_name(&args.path, args.lang)?;
    check_empty(&args.path)?;
    let sdk = sdk_root(args.sdk.as_deref(), args.lang)?;
    let snake = name.replace('-', "_");
    let guest_sdk = sdk.join("guest-sdk");
    let text = |path: PathBuf| path.display().to_string();
    let rust_sdk = text(guest_sdk.join("rust"));
    let python_sdk = text(guest_sdk.join("python"));
    let js_sdk = text(guest_sdk.join("js"));
    let wit = text(guest_sdk.join("wit"));
    let world = match args.kind {
        Kind::Tool => "tool",
        Kind::Agent => "agent",
    };
    let values: Vec<(&str, String)> = vec![
        ("name", name.clone()),
        ("tool", snake.clone()),
        ("crate", snake.clone()),
        ("world", world.into()),
        ("sdk_text", text(sdk.clone())),
        ("rust_sdk", toml_string(&rust_sdk)),
        ("rust_sdk_text", rust_sdk),
        ("python_sdk_py", json_string(&python_sdk)),
        ("python_sdk_sh", shell_word(&python_sdk)),
        ("wit_sh", shell_word(&wit)),
        ("js_sdk_json", json_string(&format!("file:{js_sdk}"))),
        ("js_sdk_text", js_sdk.clone()),
    ];
    let files = match (args.kind, args.lang) {
        (Kind::Tool, Lang::Rust) => RUST_TOOL,
        (Kind::Agent, Lang::Rust) => RUST_AGENT,
        (Kind::Tool, Lang::Python) => PYTHON_TOOL,
        (Kind::Agent, Lang::Python) => PYTHON_AGENT,
        (Kind::Tool, Lang::Js) => JS_TOOL,
        (Kind::Agent, Lang::Js) => JS_AGENT,
    };
    for file in files {
        write_file(&args.path, file, &render(file.text, &values))?;
    }

    let dir = args.path.display();
    let component = match args.lang {
        Lang::Rust => format!("target/wasm32-wasip2/release/{snake}.wasm"),
        Lang::Python | Lang::Js => format!("{snake}.wasm"),
    };
    let (build, test) = match args.lang {
        Lang::Rust => (
            "cargo build --target wasm32-wasip2 --release".to_string(),
            "cargo test",
        ),
        Lang::Python => ("sh build.sh".to_string(), "python -m unittest"),
        Lang::Js => ("npm install && npm run build".to_string(), "npm test"),
    };
    let run = match args.kind {
        Kind::Tool => format!(
            "warden call {component} {snake} '{{\"text\": \"hello warden\"}}' --policy policy.toml"
        ),
        Kind::Agent => {
            format!("warden run {component} --policy policy.toml --task \"What is 6 * 7?\"")
        }
    };
    let mut notes = String::new();
    if args.lang == Lang::Js
        && !guest_sdk
            .join("js/node_modules/@bytecodealliance/componentize-js")
            .is_dir()
    {
        notes.push_str(&format!(
            "\nnote: the JavaScript SDK at {js_sdk} has no componentize-js yet: run `make setup` in {} (or `npm ci --prefix {js_sdk}`) before building",
            sdk.display()
        ));
    }
    if args.lang == Lang::Rust {
        notes.push_str("\nnote: the Rust target is needed once: rustup target add wasm32-wasip2");
    }
    if args.lang == Lang::Python {
        notes.push_str(
            "\nnote: the build needs componentize-py: pip install componentize-py==0.25.1",
        );
    }
    let listed: Vec<&str> = files.iter().map(|f| f.path).collect();
    Ok(format!(
        "created the {world} `{name}` ({lang}) in {dir}: {}\n\nnext:\n  cd {dir}\n  {build}\n  {run}\n  {test}{notes}",
        listed.join(", "),
        lang = match args.lang {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        },
    ))
}

/// The project's name: the last part of its path, a name every toolchain
/// (cargo, npm, a policy's `[tools.NAME]`) takes as it is.
fn project_name(path: &Path, lang: Lang) -> Result<String, String> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(format!(
            "error: `{}` has no name to give the project\nhelp: name a new directory, e.g. `warden new tool --lang rust word-count`",
            path.display()
        ));
    };
    let fits = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !fits {
        return Err(format!(
            "error: `{}` cannot name a project: use lowercase letters, digits, `-` and `_`, starting with a letter (at most 64), e.g. `word-count`",
            warden::transcript::clean_line(name)
        ));
    }
    if lang == Lang::Rust && RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(format!(
            "error: `{name}` is reserved in Rust and cannot name a crate\nhelp: pick another name, e.g. `{name}-tool`"
        ));
    }
    Ok(name.to_string())
}

/// A project goes into a new directory, or an empty one: nothing is ever
/// overwritten.
fn check_empty(path: &Path) -> Result<(), String> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "error: {} exists and is not empty; warden new writes only into a new or empty directory\nhelp: pick another name, or remove what is there",
                    path.display()
                ));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) if path.exists() && !path.is_dir() => Err(format!(
            "error: {} exists and is not a directory ({error})",
            path.display()
        )),
        Err(error) => Err(format!("error: cannot read {}: {error}", path.display())),
    }
}

/// The warden checkout the project's SDK and WIT come from: `--sdk` (the
/// checkout, or its `guest-sdk`), else the one this warden was built from.
fn sdk_root(given: Option<&Path>, lang: Lang) -> Result<PathBuf, String> {
    let (root, how) = match given {
        Some(path) if path.join("wit/sandbox.wit").is_file() => (
            path.parent().unwrap_or(Path::new("..")).to_path_buf(),
            "--sdk",
        ),
        Some(path) => (path.to_path_buf(), "--sdk"),
        None => (
            PathBuf::from(BUILT_FROM),
            "the checkout warden was built from",
        ),
    };
    let language = match lang {
        Lang::Rust => "rust/Cargo.toml",
        Lang::Python => "python/warden_sdk/__init__.py",
        Lang::Js => "js/package.json",
    };
    let root = std::path::absolute(&root).unwrap_or(root);
    let root = root.canonicalize().unwrap_or(root);
    for needed in ["wit/sandbox.wit", language] {
        if !root.join("guest-sdk").join(needed).is_file() {
            return Err(format!(
                "error: {} ({how}) has no guest-sdk/{needed}, so it is not a warden checkout the project can use\nhelp: pass --sdk PATH to a warden checkout (git clone https://github.com/warden-sandbox/warden)",
                root.display()
            ));
        }
    }
    Ok(root)
}

/// `text` with every `{{key}}` of `values` replaced; nothing else is
/// touched (Rust code has `{{` of its own).
fn render(text: &str, values: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

fn write_file(dir: &Path, file: &File, text: &str) -> Result<(), String> {
    let path = dir.join(file.path);
    let fail = |error: std::io::Error| format!("error: cannot write {}: {error}", path.display());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    // `create_new`: a file that appeared meanwhile is not overwritten.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(fail)?;
    std::io::Write::write_all(&mut out, text.as_bytes()).map_err(fail)?;
    #[cfg(unix)]
    if file.executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
    }
    Ok(())
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A JSON string (also a valid Python and JavaScript string literal).
fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// One word for `sh`, single-quoted when it needs to be.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}
