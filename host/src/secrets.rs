//! Secret values the host holds and a guest must never see or send: the
//! policy's `[secrets]` and the model provider's API key.
//!
//! The host reads each value once, at the start of a run. The rule: a
//! value is redacted from every string that crosses the boundary, in either
//! direction, by one function, [`Secrets::clean`]. Its result is a
//! [`Clean`] value, which only that function can make, and every writer
//! across the boundary takes only `Clean` values: the provider
//! ([`crate::provider::ModelProvider::chat`]), the guest (the capability
//! modules' results), the MCP client, recordings. The audit log has its own
//! exit ([`crate::gate::Gate`] scrubs every record it writes), and so do
//! HTTP responses to tools holding a secret ([`Secrets::redact_bytes`],
//! on bytes: bodies and header values need not be UTF-8).
//!
//! Each occurrence of a value is replaced by `[REDACTED:NAME]`; callers
//! audit the names and counts, never a value.

use crate::load::PolicyFile;
use crate::policy::SecretSource;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Deref;

/// The values shorter than this are not redacted: replacing every `a` of
/// a prompt would destroy it and protect nothing.
pub const MIN_REDACTED_LEN: usize = 4;

/// The values of a run's secrets.
#[derive(Default, Clone)]
pub struct Secrets {
    /// (name, value), longest value first so a secret containing another
    /// is redacted whole.
    values: Vec<(String, String)>,
    /// For each value (same order), a searcher for the part of its start
    /// that marks an occurrence ([`head_len`]), built once: redaction runs
    /// on every string crossing the boundary.
    finders: Vec<memchr::memmem::Finder<'static>>,
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

/// Values up to this long are only replaced whole; longer ones whenever
/// their first half shows (an excerpt cut inside one).
pub const WHOLE_MATCH_LEN: usize = 8;

/// How much of the start of a value of `len` bytes marks an occurrence.
fn head_len(len: usize) -> usize {
    if len <= WHOLE_MATCH_LEN {
        len
    } else {
        len.div_ceil(2).max(WHOLE_MATCH_LEN)
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
                    crate::load::read_text(&path, crate::load::MAX_SECRET_FILE)
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
        self.finders = self
            .values
            .iter()
            .map(|(_, value)| {
                let head = &value.as_bytes()[..head_len(value.len())];
                memchr::memmem::Finder::new(head).into_owned()
            })
            .collect();
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
    /// counting into `found`. A value cut short (an excerpt that ends inside
    /// it) is replaced too, as long as at least half of it shows.
    pub fn redact<'t>(&self, text: &'t str, found: &mut Redactions) -> Cow<'t, str> {
        match self.redact_bytes(text.as_bytes(), found) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Matches start at a character (a value's first byte is one) and
            // the marker is ASCII; a match that ends inside a character of
            // the text (it shares the value's first bytes of it) leaves a
            // broken character, shown as U+FFFD.
            Cow::Owned(bytes) => Cow::Owned(match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
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
                // Keys rarely hold a secret: only those that do are moved.
                let keys: Vec<String> = map
                    .keys()
                    .filter(|key| matches!(self.redact(key, &mut Redactions::new()), Cow::Owned(_)))
                    .cloned()
                    .collect();
                for key in keys {
                    if let Some(inner) = map.remove(&key) {
                        map.insert(self.redact(&key, found).into_owned(), inner);
                    }
                }
                map.values_mut().for_each(|v| self.redact_json(v, found));
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

    /// `value` with every secret removed from every string inside it:
    /// the one function text passes to cross the boundary.
    pub fn clean<T: Scrub>(&self, mut value: T, found: &mut Redactions) -> Clean<T> {
        if !self.is_empty() {
            value.scrub(&mut Scrubber {
                secrets: self,
                found,
            });
        }
        Clean(value)
    }

    /// [`Secrets::clean`], not counting what was found.
    pub fn cleaned<T: Scrub>(&self, value: T) -> Clean<T> {
        self.clean(value, &mut Redactions::new())
    }

    /// `bytes` with every secret value replaced, whether or not they are
    /// UTF-8 (HTTP bodies and header values). What is replaced: each run of
    /// the text that matches the start of a value for at least half its
    /// length (values up to [`WHOLE_MATCH_LEN`] bytes: all of it), so that
    /// a value cut short by an excerpt goes too; at most half of a value
    /// can ever show.
    pub fn redact_bytes<'b>(&self, bytes: &'b [u8], found: &mut Redactions) -> Cow<'b, [u8]> {
        let mut out = Cow::Borrowed(bytes);
        for ((name, value), finder) in self.values.iter().zip(&self.finders) {
            let value = value.as_bytes();
            if value.len() < MIN_REDACTED_LEN {
                continue;
            }
            if finder.find(&out).is_none() {
                continue;
            }
            let marker = format!("[REDACTED:{name}]");
            let mut replaced = Vec::with_capacity(out.len());
            let mut last = 0;
            let mut count = 0;
            for at in finder.find_iter(&out) {
                if at < last {
                    continue;
                }
                let matched = out[at..]
                    .iter()
                    .zip(value)
                    .take_while(|(a, b)| a == b)
                    .count();
                replaced.extend_from_slice(&out[last..at]);
                replaced.extend_from_slice(marker.as_bytes());
                last = at + matched;
                count += 1;
            }
            replaced.extend_from_slice(&out[last..]);
            *found.entry(name.clone()).or_default() += count;
            out = Cow::Owned(replaced);
        }
        out
    }

    /// Whether [`Secrets::occurs_in`] holds for any string (key or value)
    /// inside `value`: lets a caller skip copying a value that needs no
    /// redaction.
    pub fn occurs_in_json(&self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::String(text) => self.occurs_in(text.as_bytes()),
            Value::Array(items) => items.iter().any(|v| self.occurs_in_json(v)),
            Value::Object(map) => map
                .iter()
                .any(|(key, v)| self.occurs_in(key.as_bytes()) || self.occurs_in_json(v)),
            _ => false,
        }
    }

    /// Whether any held value (or at least half of one, from its start:
    /// what [`Secrets::redact_bytes`] replaces) occurs in `bytes`.
    pub fn occurs_in(&self, bytes: &[u8]) -> bool {
        self.values
            .iter()
            .zip(&self.finders)
            .any(|((_, value), finder)| {
                value.len() >= MIN_REDACTED_LEN && finder.find(bytes).is_some()
            })
    }
}

/// A value whose every string has passed [`Secrets::clean`]. Only
/// `Secrets::clean` makes one, and the writers that carry text across the
/// boundary (to a provider, a guest, an MCP client, a recording) accept
/// only this type, so no path can forget to redact.
#[derive(Debug, Clone, PartialEq)]
pub struct Clean<T>(T);

impl<T> Clean<T> {
    /// The value, to hand to the writer.
    pub fn into_inner(self) -> T {
        self.0
    }

    /// Change the value with `f`, which must not bring in outside text
    /// (e.g. wrapping it in a type, or replacing matches of the policy's
    /// own patterns with fixed text).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Clean<U> {
        Clean(f(self.0))
    }
}

impl<T: std::fmt::Display> std::fmt::Display for Clean<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: serde::Serialize> serde::Serialize for Clean<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<T> Deref for Clean<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Redacts the strings of one value, counting what it finds.
pub struct Scrubber<'s> {
    secrets: &'s Secrets,
    found: &'s mut Redactions,
}

impl Scrubber<'_> {
    /// Redact one string in place.
    pub fn text(&mut self, text: &mut String) {
        self.secrets.redact_in_place(text, self.found);
    }

    /// Redact every string (keys included) of a JSON value in place.
    pub fn json(&mut self, value: &mut serde_json::Value) {
        self.secrets.redact_json(value, self.found);
    }
}

/// Something holding text that may carry a secret: each implementation
/// passes every string field to the scrubber, so a new field cannot be
/// forgotten without a change here.
pub trait Scrub {
    /// Redact every string inside.
    fn scrub(&mut self, with: &mut Scrubber<'_>);
}

impl Scrub for String {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        with.text(self);
    }
}

impl Scrub for serde_json::Value {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        with.json(self);
    }
}

impl<T: Scrub> Scrub for Option<T> {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        if let Some(value) = self {
            value.scrub(with);
        }
    }
}

impl<T: Scrub> Scrub for Vec<T> {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        for value in self {
            value.scrub(with);
        }
    }
}

impl<T: Scrub, E: Scrub> Scrub for Result<T, E> {
    fn scrub(&mut self, with: &mut Scrubber<'_>) {
        match self {
            Ok(value) => value.scrub(with),
            Err(error) => error.scrub(with),
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
    fn a_value_cut_short_is_redacted_if_half_of_it_shows() {
        let mut secrets = Secrets::default();
        secrets.add("KEY", "sk-0123456789abcdef");
        let mut found = Redactions::new();
        // An excerpt that ends inside the key (11 of its 19 bytes show).
        assert_eq!(
            secrets.redact("bad key sk-01234567… [300 bytes]", &mut found),
            "bad key [REDACTED:KEY]… [300 bytes]"
        );
        // Less than half: what shows is no more than half the value.
        assert_eq!(secrets.redact("sk-01234", &mut found), "sk-01234");
        // Whole values, side by side, are each replaced whole.
        assert_eq!(
            secrets.redact("sk-0123456789abcdefsk-0123456789abcdef!", &mut found),
            "[REDACTED:KEY][REDACTED:KEY]!"
        );
        assert_eq!(found["KEY"], 3);
    }

    #[test]
    fn bytes_are_redacted_whatever_their_encoding() {
        let mut secrets = Secrets::default();
        secrets.add("TOKEN", "tok-123456");
        let mut found = Redactions::new();
        let body = b"\xff\xfe tok-123456 and tok-123456\x00";
        let out = secrets.redact_bytes(body, &mut found);
        assert_eq!(
            &*out,
            b"\xff\xfe [REDACTED:TOKEN] and [REDACTED:TOKEN]\x00".as_slice()
        );
        assert_eq!(found["TOKEN"], 2);
        assert!(secrets.occurs_in(body));
        assert!(!secrets.occurs_in(&out));
    }

    #[test]
    fn clean_reaches_every_string_of_a_value() {
        let mut secrets = Secrets::default();
        secrets.add("KEY", "sk-abcdef");
        let value: Result<Vec<String>, serde_json::Value> =
            Err(serde_json::json!({ "sk-abcdef": ["x sk-abcdef"] }));
        assert!(secrets.occurs_in_json(&serde_json::json!({ "a": [1, { "sk-abcdef": 2 }] })));
        assert!(!secrets.occurs_in_json(&serde_json::json!({ "a": ["sk-abc", 1] })));
        let mut found = Redactions::new();
        let clean = secrets.clean(value, &mut found);
        assert_eq!(
            clean.into_inner(),
            Err(serde_json::json!({ "[REDACTED:KEY]": ["x [REDACTED:KEY]"] }))
        );
        assert_eq!(found["KEY"], 2);
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
