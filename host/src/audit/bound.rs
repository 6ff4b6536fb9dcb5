//! What a record stores of any one value is bounded: a guest, a model or an
//! MCP client can hand the host megabytes (arguments, results, log lines,
//! error texts, `clientInfo`), and each would otherwise land whole in the
//! audit log, once per request.
//!
//! Each field of a record (`subject`, `detail`, and each top-level field of
//! `data`, whose names the host chooses) is kept whole up to `max` bytes of
//! JSON. A longer one is replaced by its start, its full size and the
//! SHA-256 of the whole, so whoever holds the original can still check it
//! against the record, and the record's `data.truncated_fields` (a name no
//! guest can write: guests never choose top-level keys) lists the fields
//! replaced. Bounding a bounded record changes nothing.

use super::Entry;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::io::{self, Write};

/// The host-owned field that lists which fields were cut.
pub const TRUNCATED_FIELDS: &str = "truncated_fields";

/// Room a truncation marker needs besides the start it keeps (its keys, the
/// size, the 64-digit hash, quotes and braces), with a margin.
const MARKER_OVERHEAD: usize = 160;

/// Bound every field of `entry` to `max` bytes of JSON.
pub fn bound_entry(entry: &mut Entry, max: usize) {
    let max = max.max(2 * MARKER_OVERHEAD);
    let mut cut: Vec<&'static str> = Vec::new();
    if bound_text(&mut entry.subject, max) {
        cut.push("subject");
    }
    if bound_text(&mut entry.detail, max) {
        cut.push("detail");
    }
    let mut fields: Vec<String> = Vec::new();
    match &mut entry.data {
        Some(Value::Object(map)) => {
            for (key, value) in map.iter_mut() {
                if key != TRUNCATED_FIELDS && bound_value(value, max) {
                    fields.push(key.clone());
                }
            }
        }
        Some(other) => fields.extend(bound_value(other, max).then(|| "data".to_string())),
        None => {}
    }
    if cut.is_empty() && fields.is_empty() {
        return;
    }
    let named: Vec<Value> = cut
        .into_iter()
        .map(|f| json!(f))
        .chain(fields.into_iter().map(Value::String))
        .collect();
    let data = entry.data.get_or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        // A bare value (already bounded) moves under `data.data`.
        *data = json!({ "data": data.take() });
    }
    if let Value::Object(map) = data {
        let list = map
            .entry(TRUNCATED_FIELDS)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            for name in named {
                if !list.contains(&name) {
                    list.push(name);
                }
            }
        }
    }
}

/// Whether a field of a record was cut (and so cannot be replayed or
/// compared as it was).
pub fn was_truncated(data: &Value, field: &str) -> bool {
    data.get(TRUNCATED_FIELDS)
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|f| f == field))
}

/// Cut `text` to `max` bytes of JSON; whether it was cut.
fn bound_text(text: &mut String, max: usize) -> bool {
    if escaped_fits(text, max) {
        return false;
    }
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    let bytes = text.len();
    let head = escaped_prefix(text, max - MARKER_OVERHEAD);
    *text = format!("{head}… [truncated: {bytes} bytes, sha256 {digest}]");
    true
}

/// Replace `value` by a marker if its JSON is longer than `max`; whether
/// it was replaced. A string is measured, hashed and kept as its text; any
/// other value as its compact JSON.
fn bound_value(value: &mut Value, max: usize) -> bool {
    if let Value::String(text) = value {
        if escaped_fits(text, max) {
            return false;
        }
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        let head = escaped_prefix(text, max - MARKER_OVERHEAD).to_string();
        *value = marker(text.len() as u64, digest, head);
        return true;
    }
    if json_len_at_most(value, max) {
        return false;
    }
    let mut sink = Digesting {
        hash: Sha256::new(),
        bytes: 0,
        head: Vec::new(),
        keep: max,
    };
    // Writing to memory and a hash cannot fail; a value serde cannot write
    // is recorded by its size so far.
    let _ = serde_json::to_writer(&mut sink, value);
    let head = String::from_utf8_lossy(&sink.head).into_owned();
    let head = escaped_prefix(&head, max - MARKER_OVERHEAD).to_string();
    *value = marker(sink.bytes, hex::encode(sink.hash.finalize()), head);
    true
}

fn marker(bytes: u64, sha256: String, head: String) -> Value {
    json!({ "truncated": true, "bytes": bytes, "sha256": sha256, "head": head })
}

/// The length of `text` as a JSON string body (escapes counted).
fn escaped_len(text: &str) -> usize {
    text.chars().map(escaped_char_len).sum()
}

/// Whether `text`'s JSON string body fits in `max` bytes: at once when
/// even all escapes would fit.
fn escaped_fits(text: &str, max: usize) -> bool {
    text.len().saturating_mul(6) <= max || escaped_len(text) <= max
}

fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The longest start of `text` whose JSON string body (escapes counted)
/// fits `room` bytes.
pub fn escaped_prefix(text: &str, room: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += escaped_char_len(c);
        if used > room {
            return text.get(..at).unwrap_or_default();
        }
    }
    text
}

/// Whether `value`'s compact JSON is at most `max` bytes; stops writing as
/// soon as it is not.
fn json_len_at_most(value: &Value, max: usize) -> bool {
    struct Counter {
        left: usize,
    }
    impl Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.left = self
                .left
                .checked_sub(buf.len())
                .ok_or_else(|| io::Error::other("over"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    // Most values are far below the bound: a walk that over-counts tells
    // so without writing them (every record's fields pass here).
    if worst_case_len(value, max).is_some() {
        return true;
    }
    serde_json::to_writer(&mut Counter { left: max }, value).is_ok()
}

/// Most bytes of JSON `value` can take, if that is at most `max`: each
/// byte of a string or key counted as an escape (`\u00XX`, 6), a number
/// as 32. An over-count only sends a value to the exact measure.
fn worst_case_len(value: &Value, max: usize) -> Option<usize> {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        total += match value {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 32,
            Value::String(text) => text.len().checked_mul(6)?.checked_add(3)?,
            Value::Array(items) => {
                stack.extend(items);
                items.len() + 2
            }
            Value::Object(map) => {
                let mut keys = 0usize;
                for (key, value) in map {
                    keys = keys.checked_add(key.len().checked_mul(6)?.checked_add(4)?)?;
                    stack.push(value);
                }
                keys.checked_add(2)?
            }
        };
        if total > max {
            return None;
        }
    }
    Some(total)
}

/// Hashes and counts what is written, keeping the first `keep` bytes.
struct Digesting {
    hash: Sha256,
    bytes: u64,
    head: Vec<u8>,
    keep: usize,
}

impl Write for Digesting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hash.update(buf);
        self.bytes += buf.len() as u64;
        let room = self.keep.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(buf.get(..room.min(buf.len())).unwrap_or_default());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Event, Kind};
    use crate::policy::Verdict;

    fn entry(detail: String, data: Option<Value>) -> Entry {
        Entry {
            kind: Kind::Tool,
            event: Event::Decision,
            subject: "t".into(),
            decision: Verdict::Allow,
            rule: "tools.t".into(),
            detail,
            outcome: None,
            data,
        }
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn the_quick_measure_never_counts_less_than_the_json() {
        let values = [
            json!(null),
            json!(false),
            json!(-1.797_693_134_862_315_7e308),
            json!(u64::MAX),
            json!(i64::MIN),
            json!("\u{0}\u{1f}\"\\\n\u{7f}\u{2028}é😀"),
            json!({ "\u{1}\u{2}": ["\u{3}", { "k\"": [null, true, 5e-324] }], "": {} }),
            json!([[], {}, [[[]]], "", 0]),
        ];
        for value in values {
            let exact = serde_json::to_vec(&value).unwrap().len();
            let quick = worst_case_len(&value, usize::MAX).unwrap();
            assert!(quick >= exact, "{value}: {quick} < {exact}");
            // At the exact bound it fits either way; one byte short, never.
            assert!(json_len_at_most(&value, exact));
            assert!(!json_len_at_most(&value, exact - 1), "{value}");
        }
    }

    #[test]
    fn long_fields_keep_their_start_size_and_hash() {
        let big = "x".repeat(100_000);
        let args = json!({ "pad": "y".repeat(50_000), "n": 1 });
        let mut e = entry(
            big.clone(),
            Some(json!({ "result": big, "arguments": args, "small": "ok" })),
        );
        bound_entry(&mut e, 1024);
        assert!(e.detail.len() <= 1024, "{}", e.detail.len());
        assert!(e.detail.ends_with(&format!(
            "[truncated: 100000 bytes, sha256 {}]",
            sha(big.as_bytes())
        )));
        let data = e.data.as_ref().unwrap();
        assert_eq!(data["result"]["bytes"], 100_000);
        assert_eq!(data["result"]["sha256"], sha(big.as_bytes()));
        let compact = serde_json::to_vec(&args).unwrap();
        assert_eq!(data["arguments"]["bytes"], compact.len());
        assert_eq!(data["arguments"]["sha256"], sha(&compact));
        assert_eq!(data["small"], "ok");
        assert_eq!(
            data[TRUNCATED_FIELDS],
            json!(["detail", "arguments", "result"])
        );
        for field in ["result", "arguments"] {
            assert!(serde_json::to_vec(&data[field]).unwrap().len() <= 1024);
            assert!(was_truncated(data, field));
        }
        assert!(!was_truncated(data, "small"));
        // Bounding again changes nothing.
        let once = e.clone();
        bound_entry(&mut e, 1024);
        assert_eq!(e.detail, once.detail);
        assert_eq!(e.data, once.data);
    }

    #[test]
    fn escapes_count_and_cuts_fall_on_character_boundaries() {
        // Each control character takes six bytes of JSON.
        let controls = "\u{1}".repeat(1000);
        let mut e = entry(
            String::new(),
            Some(json!({ "log": controls, "u": "é".repeat(1000) })),
        );
        bound_entry(&mut e, 512);
        let line = serde_json::to_vec(e.data.as_ref().unwrap()).unwrap();
        assert!(line.len() <= 3 * 512, "{}", line.len());
        assert_eq!(e.data.as_ref().unwrap()["log"]["bytes"], 1000);
        assert_eq!(e.data.as_ref().unwrap()["u"]["bytes"], 2000);
    }

    #[test]
    fn small_records_are_untouched() {
        let mut e = entry("fine".into(), Some(json!({ "a": [1, 2, 3] })));
        bound_entry(&mut e, 16 << 10);
        assert_eq!(e.detail, "fine");
        assert_eq!(e.data, Some(json!({ "a": [1, 2, 3] })));
    }
}
