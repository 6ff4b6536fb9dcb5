//! JSON from a guest, parsed so that no two readers can see different
//! values in one text. A key repeated in an object is an error at any
//! depth: serde_json (and so the policy) would keep the last value, while
//! the tool's parser may keep the first, and the policy would decide on
//! arguments the tool never acts on. Nesting is bounded ([`MAX_DEPTH`]) so
//! that hostile input cannot exhaust the host's stack, and so is the
//! number of values ([`MAX_VALUES`]): a parsed value takes up to ten times
//! the bytes of its text (`[0,0,...]` is 2 bytes a value in the text, 32
//! and more in memory), so that bound, not the text's length, keeps what
//! one message costs the host small.
//!
//! Callers pass the parsed value on (re-serialized), never the raw text.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// Deepest nesting of arrays and objects accepted, like serde_json's own
/// parser (which stops one level earlier by itself); this bound holds
/// whatever deserializer feeds the visitor.
pub const MAX_DEPTH: usize = 128;

/// Most values (each number, string, boolean, null, array, object, and
/// each object key) one text may hold: far more than any tool's arguments
/// need (bulk data travels as one string, which counts once), and at most
/// some 30 MiB of host memory when parsed.
pub const MAX_VALUES: usize = 1 << 18;

/// Parse one JSON value, refusing repeated keys and nesting deeper than
/// [`MAX_DEPTH`]. The error says what and where (line and column); a
/// repeated key or too deep a nesting is a data error
/// ([`serde_json::Error::is_data`]), anything else a syntax error.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    parse_slice(text.as_bytes())
}

/// [`parse`] for bytes (which must be UTF-8 JSON).
pub fn parse_slice(text: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let left = Cell::new(MAX_VALUES);
    let value = Strict {
        levels_left: MAX_DEPTH,
        values_left: &left,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Builds a [`Value`] like serde_json's own, with the checks.
#[derive(Clone, Copy)]
struct Strict<'a> {
    levels_left: usize,
    /// Shared by every level: values the text may still hold.
    values_left: &'a Cell<usize>,
}

impl Strict<'_> {
    /// The seed for what is inside an array or object.
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        match self.levels_left.checked_sub(1) {
            Some(levels_left) => Ok(Strict {
                levels_left,
                ..self
            }),
            None => Err(E::custom(format_args!(
                "arrays and objects are nested more than {MAX_DEPTH} levels deep"
            ))),
        }
    }

    /// Count one value (or key) against [`MAX_VALUES`].
    fn count<E: de::Error>(self) -> Result<(), E> {
        match self.values_left.get().checked_sub(1) {
            Some(left) => {
                self.values_left.set(left);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "more than {MAX_VALUES} values in one text (send bulk data as one string)"
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.count()?;
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.count()?;
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key `{}` appears twice in one object (each key may appear once, so that the policy and the tool read the same value)",
                    crate::policy::printable(&key)
                )));
            }
            let value = map.next_value_seed(inner)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_like_serde_json() {
        let text =
            r#"{"a": [1, -2, 9007199254740993, 1.5, "x\u0041", true, null, {}], "b": {"c": []}}"#;
        assert_eq!(
            parse(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(parse(" 7 ").unwrap(), json!(7));
        assert!(parse("{} x").unwrap_err().is_syntax());
        assert!(parse("{\"a\": }").unwrap_err().is_syntax());
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        let error = parse(r#"{"to":"friend@example.com","to":"attacker@evil.com"}"#).unwrap_err();
        assert!(error.is_data(), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("the key `to` appears twice in one object"),
            "{error}"
        );
        assert!(error.to_string().contains("line 1 column"), "{error}");
        let nested = r#"{"a": [{"b": {"c": 1, "c": 1}}]}"#;
        assert!(parse(nested).unwrap_err().is_data());
        // The same key in sibling objects is fine.
        assert!(parse(r#"[{"a": 1}, {"a": 2}, {"x": {"a": 3}, "a": 4}]"#).is_ok());
        // Keys compare after unescaping.
        assert!(parse(r#"{"to": 1, "t\u006f": 2}"#).unwrap_err().is_data());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&deep(100)).is_ok());
        assert!(parse(&deep(MAX_DEPTH + 1)).is_err());
        assert!(parse(&deep(100_000)).is_err());
        let objects = format!(
            "{}1{}",
            "{\"a\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(&objects).is_err());
        // The visitor's own bound, fed by a deserializer without one.
        let mut value = json!(1);
        for _ in 0..MAX_DEPTH {
            value = json!([value]);
        }
        let left = Cell::new(MAX_VALUES);
        let seed = Strict {
            levels_left: MAX_DEPTH,
            values_left: &left,
        };
        assert!(seed.deserialize(value.clone()).is_ok());
        let error = seed.deserialize(json!([value])).unwrap_err();
        assert!(
            error.to_string().contains("nested more than 128 levels"),
            "{error}"
        );
    }

    #[test]
    fn the_number_of_values_is_bounded_not_only_the_bytes() {
        // 2 bytes a value in the text, ten times that once parsed.
        let array = |n: usize| format!("[{}0]", "0,".repeat(n - 1));
        assert!(parse(&array(MAX_VALUES - 1)).is_ok());
        let error = parse(&array(MAX_VALUES)).unwrap_err();
        assert!(error.is_data(), "{error}");
        assert!(
            error.to_string().contains("more than 262144 values"),
            "{error}"
        );
        // Keys count too.
        let keys: Vec<String> = (0..MAX_VALUES / 2).map(|i| format!("\"k{i}\":0")).collect();
        assert!(parse(&format!("{{{}}}", keys.join(","))).is_err());
        // A long string is one value.
        assert!(parse(&format!("{{\"text\":\"{}\"}}", "x".repeat(8 << 20))).is_ok());
    }
}
