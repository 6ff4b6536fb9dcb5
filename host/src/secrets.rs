//! Secret values the host holds and a guest must never see or send: the
//! policy's `[secrets]` and the model provider's API key.
//!
//! The host reads each value once, at the start of a run. Any occurrence
//! of a value in text leaving the host (a prompt) is replaced by
//! `[REDACTED:NAME]`; callers audit the names and counts, never a value.

use crate::load::PolicyFile;
use crate::policy::SecretSource;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The values shorter than this are not redacted: replacing every `a` of
/// a prompt would destroy it and protect nothing.
pub const MIN_REDACTED_LEN: usize = 4;

/// The values of a run's secrets.
#[derive(Default, Clone)]
pub struct Secrets {
    /// (name, value), longest value first so a secret containing another
    /// is redacted whole.
    values: Vec<(String, String)>,
    /// Secrets that could not be read, and why (names and reasons only).
    missing: Vec<(String, String)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("loaded", &self.names())
            .field("missing", &self.missing)
            .finish()
    }
}

/// What redaction replaced: secret name to count.
pub type Redactions = BTreeMap<String, usize>;

impl Secrets {
    /// Read every secret the policy declares. One that cannot be read is
    /// kept as missing (with the reason), not an error: it is only needed
    /// when something uses it.
    pub fn load(policy: &PolicyFile) -> Secrets {
        let mut secrets = Secrets::default();
        for secret in policy.policy.secrets.values() {
            let read = match &secret.source {
                SecretSource::Env(var) => std::env::var(var)
                    .map_err(|_| format!("the environment variable {var} is not set")),
                SecretSource::File(path) => {
                    let path = policy.dir_of(secret.place.file).join(path);
                    std::fs::read_to_string(&path)
                        .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                }
            };
            match read {
                Ok(value) => secrets.add(&secret.name, value),
                Err(why) => secrets.missing.push((secret.name.clone(), why)),
            }
        }
        secrets
    }

    /// Hold one more value under `name`.
    pub fn add(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        if value.is_empty() {
            return;
        }
        self.values.push((name.to_string(), value));
        self.values
            .sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
    }

    /// Names of the secrets held, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.values.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        names
    }

    /// Secrets that could not be read, and why.
    pub fn missing(&self) -> &[(String, String)] {
        &self.missing
    }

    /// The value of `name`, if held.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `text` with every secret value replaced by `[REDACTED:NAME]`,
    /// counting into `found`.
    pub fn redact<'t>(&self, text: &'t str, found: &mut Redactions) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for (name, value) in &self.values {
            if value.len() < MIN_REDACTED_LEN || !out.contains(value.as_str()) {
                continue;
            }
            let count = out.matches(value.as_str()).count();
            *found.entry(name.clone()).or_default() += count;
            out = Cow::Owned(out.replace(value.as_str(), &format!("[REDACTED:{name}]")));
        }
        out
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Redact every string (keys included) inside a JSON value.
    pub fn redact_json(&self, value: &mut serde_json::Value, found: &mut Redactions) {
        use serde_json::Value;
        match value {
            Value::String(text) => self.redact_in_place(text, found),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v, found)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let Some(mut inner) = map.remove(&key) else {
                        continue;
                    };
                    self.redact_json(&mut inner, found);
                    map.insert(self.redact(&key, found).into_owned(), inner);
                }
            }
            _ => {}
        }
    }

    /// Redact `text` in place.
    pub fn redact_in_place(&self, text: &mut String, found: &mut Redactions) {
        if let Cow::Owned(redacted) = self.redact(text, found) {
            *text = redacted;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_every_value_longest_first() {
        let mut secrets = Secrets::default();
        secrets.add("SHORT", "abcd");
        secrets.add("LONG", "xxabcdxx");
        secrets.add("TINY", "a");
        let mut found = Redactions::new();
        let out = secrets.redact("key xxabcdxx and abcd, abcd; a", &mut found);
        assert_eq!(
            out,
            "key [REDACTED:LONG] and [REDACTED:SHORT], [REDACTED:SHORT]; a"
        );
        assert_eq!(found["LONG"], 1);
        assert_eq!(found["SHORT"], 2);
        assert!(!found.contains_key("TINY"));
        let mut found = Redactions::new();
        assert!(matches!(
            secrets.redact("nothing here", &mut found),
            Cow::Borrowed(_)
        ));
        assert!(found.is_empty());
    }

    #[test]
    fn debug_shows_names_only() {
        let mut secrets = Secrets::default();
        secrets.add("API", "sk-123456");
        let shown = format!("{secrets:?}");
        assert!(
            shown.contains("API") && !shown.contains("sk-123456"),
            "{shown}"
        );
    }
}
