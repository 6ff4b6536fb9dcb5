//! Components and files bundled in the `warden` binary: the demo agent and
//! tools (built from `agents/` and `tools/` by `build.rs`), and the demo's
//! policy, model script and task. `component = "builtin:calc"` in a policy
//! names one of these.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Names of the bundled components.
pub const NAMES: &[&str] = &["react", "calc", "text", "fetch", "files"];

/// A bundled component's bytes.
pub fn component(name: &str) -> Option<&'static [u8]> {
    hashed(name).map(|(bytes, _)| bytes)
}

/// A bundled component's bytes and their SHA-256 (hex), computed by
/// `build.rs` from the very bytes embedded: a run does not hash them again
/// (a millisecond of every start).
pub fn hashed(name: &str) -> Option<(&'static [u8], &'static str)> {
    match name {
        "react" => Some((REACT, REACT_SHA256)),
        "calc" => Some((CALC, CALC_SHA256)),
        "text" => Some((TEXT, TEXT_SHA256)),
        "fetch" => Some((FETCH, FETCH_SHA256)),
        "files" => Some((FILES, FILES_SHA256)),
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

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn each_bundled_hash_is_the_sha256_of_the_bytes_embedded() {
        for name in super::NAMES {
            let (bytes, sha256) = super::hashed(name).unwrap();
            assert_eq!(hex::encode(Sha256::digest(bytes)), sha256, "{name}");
        }
    }
}
