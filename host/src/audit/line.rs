//! Writing a record's line: the bytes `serde_json::to_vec(&record)` gives,
//! written field by field into a buffer the log reuses, `data` walked as a
//! `Value` with only its numbers going through serde_json. Every reader (`audit verify`, `audit show`,
//! `replay`, `policy learn`) parses these lines with serde, and the hash
//! chain covers their bytes, so this writer must never give other bytes
//! than serde_json would: the tests below hold it to that.

use super::{Event, Outcome, Record};
use serde_json::Value;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

impl Event {
    /// The name records carry (`decision`, `outcome`).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Decision => "decision",
            Event::Outcome => "outcome",
        }
    }
}

impl Outcome {
    /// The name records carry (`ok`, `budget-exhausted`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::BudgetExhausted => "budget-exhausted",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
            Outcome::Trap => "trap",
        }
    }
}

impl Record {
    /// Append the record's line (no newline) to `out`: the same bytes as
    /// `serde_json::to_vec(self)`. A `Value` always serializes, so this
    /// cannot fail today; if it ever did, `out` would hold a partial line.
    pub fn write_json(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(b"{\"seq\":");
        push_u64(out, self.seq);
        out.extend_from_slice(b",\"prev\":");
        push_str(out, &self.prev);
        out.extend_from_slice(b",\"ts\":");
        push_str(out, &self.ts);
        out.extend_from_slice(b",\"run\":");
        push_str(out, &self.run);
        // The enum names are plain ASCII words: nothing to escape.
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"event\":\"");
        out.extend_from_slice(self.event.as_str().as_bytes());
        out.extend_from_slice(b"\",\"subject\":");
        push_str(out, &self.subject);
        out.extend_from_slice(b",\"decision\":\"");
        out.extend_from_slice(self.decision.as_str().as_bytes());
        out.extend_from_slice(b"\",\"rule\":");
        push_str(out, &self.rule);
        out.extend_from_slice(b",\"detail\":");
        push_str(out, &self.detail);
        if let Some(outcome) = self.outcome {
            out.extend_from_slice(b",\"outcome\":\"");
            out.extend_from_slice(outcome.as_str().as_bytes());
            out.push(b'"');
        }
        if let Some(data) = &self.data {
            out.extend_from_slice(b",\"data\":");
            push_value(out, data)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// `value` as compact JSON, as serde_json writes it: object members in
/// the map's own order, strings escaped by [`push_str`], numbers by
/// serde_json itself (their text depends on its features). Recursive as
/// serde_json's own serializer is; a `Value` parsed from outside is no
/// deeper than serde_json's parser allows (128 levels).
fn push_value(out: &mut Vec<u8>, value: &Value) -> io::Result<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => serde_json::to_writer(&mut *out, number)?,
        Value::String(text) => push_str(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_str(out, key);
                out.push(b':');
                push_value(out, item)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// What serde_json writes for each byte of a string: 0 for the byte
/// itself, else the letter after the backslash (`u` for `\u00XX`). The
/// same table as serde_json's: the two quoted characters and the ASCII
/// controls; nothing else (not DEL, not U+2028) is escaped.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// `text` as a JSON string, escaped exactly as serde_json escapes it.
/// Eight bytes at a time: a word with nothing to escape is skipped whole,
/// and one with something goes straight to its first byte to escape, so
/// text dense with quotes (a tool's JSON result) costs no byte-by-byte
/// scan either.
fn push_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut start, mut at) = (0, 0);
    while let Some(word) = bytes[at..].first_chunk::<8>() {
        let found = escapes_in(u64::from_le_bytes(*word));
        if found == 0 {
            at += 8;
            continue;
        }
        // The lowest byte flagged is always one to escape (see
        // `escapes_in`); checked against the table all the same.
        at += (found.trailing_zeros() / 8) as usize;
        let byte = bytes[at];
        if ESCAPE[byte as usize] != 0 {
            out.extend_from_slice(&bytes[start..at]);
            push_escape(out, byte);
            start = at + 1;
        }
        at += 1;
    }
    for (i, &byte) in bytes.iter().enumerate().skip(at) {
        if ESCAPE[byte as usize] != 0 {
            out.extend_from_slice(&bytes[start..i]);
            push_escape(out, byte);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The escape of a byte [`ESCAPE`] does not pass through.
fn push_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPE[byte as usize] {
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(byte >> 4) as usize],
            HEX[(byte & 0xf) as usize],
        ]),
        letter => out.extend_from_slice(&[b'\\', letter]),
    }
}

/// The bytes of `word` (first byte lowest) that [`ESCAPE`] escapes, an
/// ASCII control, `"` or `\`, as the high bit of each byte: the "has a
/// byte less than n" word trick. It never misses a byte, and never flags
/// one of 0x80 or above (UTF-8 lead and continuation bytes). A borrow can
/// flag a clean byte above a flagged one, never below: the lowest flag is
/// always a byte to escape.
fn escapes_in(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let control = below(word, 0x20);
    let quote = below(word ^ (ONES * u64::from(b'"')), 1);
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    control | quote | backslash
}

/// The length of a record's `ts`: `2026-11-27T22:48:04.579859Z`.
pub const TS_LEN: usize = 27;

/// `time` as RFC 3339 in UTC with microseconds, the text
/// `humantime::format_rfc3339_micros` gives, without the formatting
/// machinery. A clock before 1970 gives the epoch (humantime would panic).
/// Years past 9999 do not fit RFC 3339 (humantime would fail): they give
/// 9999-12-31T23:59:59.999999Z.
pub fn rfc3339_micros(time: SystemTime) -> [u8; TS_LEN] {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, micros) = match since.as_secs() {
        secs if secs > LAST => (LAST, 999_999),
        secs => (secs, since.subsec_micros()),
    };
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = (secs % 86_400) as u32;
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    put(20, 6, micros);
    out
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (day 0),
/// for days from 0 on (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, Entry, JsonlFile, Kind, verify};
    use crate::policy::Verdict;
    use serde_json::{Value, json};
    use std::time::Duration;

    /// Strings a guest, a model or a tool can put in any field.
    fn hostile() -> Vec<String> {
        let mut all: Vec<String> = [
            "",
            "plain",
            "\"quoted\"",
            "back\\slash\\",
            "\\\"",
            "line\nbreak\r\n\ttab",
            "\u{0}\u{1}\u{7}\u{8}\u{b}\u{c}\u{1b}\u{1f}",
            "del \u{7f} and c1 \u{85} \u{9f}",
            "separators \u{2028} \u{2029}",
            "é 中文 🦀 \u{feff}",
            "</script><!--",
            "{\"seq\":1,\"prev\":\"forged\"}\n{\"seq\":2}",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        all.push("\"\\\u{1}é".repeat(20_000));
        all.push("x".repeat(1 << 20));
        // Every byte value that is a character by itself.
        all.push((0u8..0x80).map(char::from).collect());
        all
    }

    fn record(text: &str, outcome: Option<Outcome>, data: Option<Value>) -> Record {
        Record {
            seq: u64::MAX,
            prev: text.to_string(),
            ts: text.to_string(),
            run: text.to_string(),
            kind: Kind::Tool,
            event: Event::Outcome,
            subject: text.to_string(),
            decision: Verdict::Deny,
            rule: text.to_string(),
            detail: text.to_string(),
            outcome,
            data,
        }
    }

    fn written(record: &Record) -> Vec<u8> {
        let mut line = Vec::new();
        record.write_json(&mut line).unwrap();
        line
    }

    #[test]
    fn lines_are_the_bytes_serde_json_writes() {
        for text in hostile() {
            for data in [
                None,
                Some(json!({})),
                Some(Value::Null),
                Some(json!(text)),
                Some(json!({ "arguments": { text.clone(): text }, "sources": [], "n": -1.5e300 })),
            ] {
                let record = record(&text, Some(Outcome::Failed), data);
                let line = written(&record);
                assert_eq!(line, serde_json::to_vec(&record).unwrap());
                let back: Record = serde_json::from_slice(&line).unwrap();
                // `data: null` reads back as no data, as it always has.
                let expected = match &record.data {
                    Some(Value::Null) => None,
                    data => data.clone(),
                };
                assert_eq!(back.data, expected);
                assert_eq!(back.subject, text);
                assert_eq!(back.seq, u64::MAX);
            }
        }
    }

    /// Each byte that needs an escape, at each place in an eight-byte word
    /// and across two, among ASCII and among multi-byte characters.
    #[test]
    fn each_escaped_byte_is_found_wherever_it_falls() {
        let mut escaped: Vec<char> = (0u8..0x20).map(char::from).collect();
        escaped.extend(['"', '\\']);
        for c in escaped {
            for filler in ["a", "é", "\u{7f}", "\u{ff}", "\u{2028}"] {
                for at in 0..20 {
                    let mut text: String = filler.repeat(at);
                    text.push(c);
                    text.push_str(&filler.repeat(20 - at));
                    let mut line = Vec::new();
                    push_str(&mut line, &text);
                    assert_eq!(line, serde_json::to_vec(&text).unwrap(), "{c:?} at {at}");
                }
            }
        }
        // A byte to escape then any other: a borrow in the word trick may
        // flag the byte above a real one, which must pass through as is.
        for c in (0u8..0x20).chain([b'"', b'\\']) {
            for next in 0u8..0x80 {
                for at in 0..9 {
                    let text = format!(
                        "{}{}{}{}",
                        "a".repeat(at),
                        char::from(c),
                        char::from(next),
                        "b".repeat(9)
                    );
                    let mut line = Vec::new();
                    push_str(&mut line, &text);
                    assert_eq!(line, serde_json::to_vec(&text).unwrap(), "{text:?}");
                }
            }
        }
        // Every byte value, with no escape needed (the fast path): nothing
        // but ASCII controls, quote and backslash is escaped.
        for byte in 0x20u8..=0xff {
            let text = format!("{}", char::from(byte)).repeat(17);
            let mut line = Vec::new();
            push_str(&mut line, &text);
            assert_eq!(line, serde_json::to_vec(&text).unwrap(), "{byte:#x}");
        }
    }

    #[test]
    fn every_kind_event_verdict_and_outcome_is_written_as_serde_names_it() {
        let kinds = [
            Kind::Run,
            Kind::Model,
            Kind::Tool,
            Kind::Plan,
            Kind::Log,
            Kind::Http,
            Kind::Limit,
            Kind::Stdio,
        ];
        let outcomes = [
            None,
            Some(Outcome::Ok),
            Some(Outcome::Denied),
            Some(Outcome::BudgetExhausted),
            Some(Outcome::Invalid),
            Some(Outcome::Failed),
            Some(Outcome::Trap),
        ];
        for kind in kinds {
            for event in [Event::Decision, Event::Outcome] {
                for decision in [Verdict::Allow, Verdict::Ask, Verdict::Deny] {
                    for (seq, outcome) in outcomes.into_iter().enumerate() {
                        let record = Record {
                            seq: seq as u64 * 1_000_003,
                            kind,
                            event,
                            decision,
                            ..record("t", outcome, None)
                        };
                        assert_eq!(written(&record), serde_json::to_vec(&record).unwrap());
                    }
                }
            }
        }
    }

    #[test]
    fn a_log_of_hostile_records_verifies_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::new("r-\"\n\u{2028}").with_sink(JsonlFile::open(&path).unwrap());
        let texts = hostile();
        for text in &texts {
            for data in [None, Some(json!({})), Some(json!({ "result": text }))] {
                log.write(Entry {
                    kind: Kind::Tool,
                    event: Event::Decision,
                    subject: text.clone(),
                    decision: Verdict::Allow,
                    rule: text.clone(),
                    detail: text.clone(),
                    outcome: None,
                    data,
                })
                .unwrap();
            }
        }
        let bytes = std::fs::read(&path).unwrap();
        let report = verify(&bytes[..]).unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert_eq!(report.records, texts.len() * 3);
        assert_eq!(report.head, log.head());
        for (line, text) in bytes.split(|b| *b == b'\n').step_by(3).zip(&texts) {
            let record: Record = serde_json::from_slice(line).unwrap();
            assert_eq!(&record.detail, text);
            assert_eq!(record.run, "r-\"\n\u{2028}");
            // Each line is what serde_json writes for the record it holds.
            assert_eq!(serde_json::to_vec(&record).unwrap(), line);
        }
    }

    #[test]
    fn stamps_are_the_text_humantime_writes() {
        let mut at: u64 = 0;
        let mut secs = vec![0, 59, 86_399, 86_400, 951_782_400, 4_107_542_399];
        // Days around every month's end and leap day, 1970 to 9999, and a
        // spread of arbitrary seconds (a fixed sequence, repeatable).
        for day in (0..2_932_896u64).step_by(13) {
            secs.push(day * 86_400 + 86_399);
        }
        for _ in 0..100_000 {
            at = at.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            secs.push((at >> 11) % 253_402_300_800);
        }
        for (i, s) in secs.into_iter().enumerate() {
            let nanos = (i as u32).wrapping_mul(2_654_435_761) % 1_000_000_000;
            let time = UNIX_EPOCH + Duration::new(s, nanos);
            assert_eq!(
                std::str::from_utf8(&rfc3339_micros(time)).unwrap(),
                humantime::format_rfc3339_micros(time).to_string(),
                "{s}.{nanos:09}"
            );
        }
    }

    #[test]
    fn stamps_out_of_range_are_clamped_not_a_panic() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(&rfc3339_micros(before), b"1970-01-01T00:00:00.000000Z");
        let after = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(&rfc3339_micros(after), b"9999-12-31T23:59:59.999999Z");
    }
}
