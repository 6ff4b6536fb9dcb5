//! Components and files bundled in the `warden` binary: the demo agent and
//! tools (built from `agents/` and `tools/` by `build.rs`), and the demo's
//! policy, model script and task. `component = "builtin:calc"` in a policy
//! names one of these.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Names of the bundled components.
pub const NAMES: &[&str] = &["react", "calc", "text", "fetch", "files"];

/// A bundled component's bytes.
pub fn component(name: &str) -> Option<&'static [u8]> {
    match name {
        "react" => Some(REACT),
        "calc" => Some(CALC),
        "text" => Some(TEXT),
        "fetch" => Some(FETCH),
        "files" => Some(FILES),
        _ => None,
    }
}

/// The demo policy, as committed in `policies/demo.toml`.
pub const DEMO_POLICY: &str = include_str!("../../policies/demo.toml");
/// Where the demo policy lives in the repository, for messages.
pub const DEMO_POLICY_NAME: &str = "policies/demo.toml";
/// The demo's model script, as committed in `agents/react/demo.script.toml`.
pub const DEMO_SCRIPT: &str = include_str!("../../agents/react/demo.script.toml");
/// Where the demo script lives in the repository, for messages.
pub const DEMO_SCRIPT_NAME: &str = "agents/react/demo.script.toml";
/// The demo's task.
pub const DEMO_TASK: &str = "What is (17 * 23) + 4, how many words are in \"the quick brown fox jumps over the lazy dog\", and which lines of the poem below mention a fox?\n\nThe fox at dawn\nA hen at noon\nThe fox again by moonlight";
