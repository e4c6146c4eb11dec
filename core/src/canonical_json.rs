//! RFC 8785 (JCS) canonical JSON for the values our wire formats carry: objects, arrays,
//! strings, integers, booleans and null. Floats are refused: batch payloads carry none
//! (design §5.4), so a float is a bug upstream, not something to round.
//!
//! Canonical bytes make a batch rebuilt after a crash byte-identical, so its signature
//! and its hash in the chain are too.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("number {0} is not an integer; canonical payloads carry integers only")]
    NotAnInteger(String),
    #[error("integer {0} is outside ±(2^53 − 1), the range every JSON reader keeps exact")]
    UnsafeInteger(String),
}

/// Largest integer an IEEE-754 double (and so every JSON reader) holds exactly.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Serialises `value` canonically: keys sorted by UTF-16 code units, no whitespace,
/// strings escaped as ECMAScript's JSON.stringify does.
pub fn to_canonical_json(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            let integer = number
                .as_i64()
                .ok_or_else(|| CanonicalError::NotAnInteger(number.to_string()))?;
            if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&integer) {
                return Err(CanonicalError::UnsafeInteger(number.to_string()));
            }
            out.push_str(&integer.to_string());
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            // RFC 8785 §3.2.3: compare keys as arrays of UTF-16 code units.
            sorted.sort_by(|(left, _), (right, _)| left.encode_utf16().cmp(right.encode_utf16()));
            out.push('{');
            for (index, (key, member)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(member, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            control if u32::from(control) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(control)));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn rfc8785_sorting_example() {
        // RFC 8785 §3.2.3: keys sort by UTF-16 code units, so the emoji (a surrogate pair
        // starting 0xD83D) sorts before U+FB33 although its code point is larger.
        let input: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .expect("json");
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(to_canonical_json(&input).expect("canonical"), expected);
    }

    #[test]
    fn string_escapes_follow_json_stringify() {
        // RFC 8785 §3.2.2.2: only " \ and controls are escaped; controls without a short
        // form use lowercase \u00xx; '/' and non-ASCII stay literal.
        let value = json!({"s": "\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/€ "});
        assert_eq!(
            to_canonical_json(&value).expect("canonical"),
            "{\"s\":\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\\"\\\\/€ \"}"
        );
    }

    #[test]
    fn nesting_literals_and_integers() {
        let value = json!({"b": [true, false, null, -7, 0], "a": {"z": 1, "y": "x"}});
        assert_eq!(
            to_canonical_json(&value).expect("canonical"),
            r#"{"a":{"y":"x","z":1},"b":[true,false,null,-7,0]}"#
        );
    }

    #[test]
    fn floats_and_unsafe_integers_are_refused() {
        assert!(matches!(
            to_canonical_json(&json!({"x": 1.5})),
            Err(CanonicalError::NotAnInteger(_))
        ));
        assert!(matches!(
            to_canonical_json(&json!(9_007_199_254_740_992_i64)),
            Err(CanonicalError::UnsafeInteger(_))
        ));
        assert_eq!(
            to_canonical_json(&json!(9_007_199_254_740_991_i64)).expect("max"),
            "9007199254740991"
        );
    }

    proptest! {
        #[test]
        fn canonical_text_parses_back_to_the_same_value(
            entries in proptest::collection::btree_map("\\PC{0,8}", (-1_000_000i64..1_000_000, "\\PC{0,12}"), 0..8)
        ) {
            let value = Value::Object(
                entries
                    .into_iter()
                    .map(|(key, (number, text))| (key, json!([number, text])))
                    .collect(),
            );
            let canonical = to_canonical_json(&value).expect("canonical");
            let reparsed: Value = serde_json::from_str(&canonical).expect("valid JSON");
            prop_assert_eq!(&reparsed, &value);
            // Idempotent: canonicalising the canonical form changes nothing.
            prop_assert_eq!(to_canonical_json(&reparsed).expect("again"), canonical);
        }
    }
}
