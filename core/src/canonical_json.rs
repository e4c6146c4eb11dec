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

/// Writes one JSON object canonically, member by member, for the records written by the
/// hundred thousand (a mark's evidence, an attendance record): the caller names the
/// members in RFC 8785's order (all our keys are ASCII, so byte order), which debug
/// builds check. Tests hold each such writer to `to_canonical_json`.
pub struct ObjectWriter<'a> {
    out: &'a mut String,
    last_key: Option<&'static str>,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Self {
            out,
            last_key: None,
        }
    }

    fn key(&mut self, key: &'static str) {
        debug_assert!(
            self.last_key.is_none_or(|last| last < key),
            "canonical members in order: {key} after {:?}",
            self.last_key
        );
        if self.last_key.is_some() {
            self.out.push(',');
        }
        self.last_key = Some(key);
        write_string(key, self.out);
        self.out.push(':');
    }

    pub fn string(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        write_string(value, self.out);
        self
    }

    /// An integer member; outside ±(2^53 − 1) is refused as `to_canonical_json` refuses it.
    pub fn integer(&mut self, key: &'static str, value: i64) -> Result<&mut Self, CanonicalError> {
        if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&value) {
            return Err(CanonicalError::UnsafeInteger(value.to_string()));
        }
        self.key(key);
        use std::fmt::Write;
        let _ = write!(self.out, "{value}");
        Ok(self)
    }

    /// An unsigned integer member (ids, steps).
    pub fn unsigned(&mut self, key: &'static str, value: u64) -> Result<&mut Self, CanonicalError> {
        let value =
            i64::try_from(value).map_err(|_| CanonicalError::UnsafeInteger(value.to_string()))?;
        self.integer(key, value)
    }

    /// A member whose value is already canonical JSON text.
    pub fn canonical(&mut self, key: &'static str, text: &str) -> &mut Self {
        debug_assert!(is_canonical(text), "{key}: {text} is not canonical");
        self.key(key);
        self.out.push_str(text);
        self
    }

    /// A list member, each item written by `write_item` (canonically, as the items of a
    /// receipt are by their own `ObjectWriter`).
    pub fn list<T, E>(
        &mut self,
        key: &'static str,
        items: impl IntoIterator<Item = T>,
        mut write_item: impl FnMut(&mut String, T) -> Result<(), E>,
    ) -> Result<&mut Self, E> {
        self.key(key);
        self.out.push('[');
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            write_item(self.out, item)?;
        }
        self.out.push(']');
        Ok(self)
    }

    /// A list member of values that are each already canonical JSON text.
    pub fn canonical_list<'t>(
        &mut self,
        key: &'static str,
        items: impl IntoIterator<Item = &'t str>,
    ) -> &mut Self {
        let written = self.list(key, items, |out, item| {
            out.push_str(item);
            Ok::<(), std::convert::Infallible>(())
        });
        match written {
            Ok(this) => this,
            Err(never) => match never {},
        }
    }

    pub fn finish(&mut self) {
        self.out.push('}');
    }
}

/// Whether `text` is exactly the canonical form of the JSON it holds (what
/// `to_canonical_json` of its parse would write), decided in one pass without building
/// the value: a receiver checks every record of every batch with this.
pub fn is_canonical(text: &str) -> bool {
    let mut reader = CanonicalReader {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    reader.value(0) && reader.at == reader.bytes.len()
}

/// Deeper than any record we write (and than serde_json reads); hostile input must not
/// exhaust the stack.
const MAX_DEPTH: usize = 128;

struct CanonicalReader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl CanonicalReader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = self.bytes[self.at..].starts_with(word.as_bytes());
        self.at += if found { word.len() } else { 0 };
        found
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            _ => false,
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth + 1) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<(usize, usize, bool)> = None;
        loop {
            let Some(key) = self.string() else {
                return false;
            };
            // Keys in strictly increasing UTF-16 order: sorted, and none twice.
            if let Some(previous) = previous {
                if self.key_order(previous, key) != std::cmp::Ordering::Less {
                    return false;
                }
            }
            previous = Some(key);
            if !self.eat(b':') || !self.value(depth + 1) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// Compares two keys (their spans inside the quotes, and whether they hold escapes)
    /// as RFC 8785 §3.2.3 does: by UTF-16 code units of the unescaped text.
    fn key_order(
        &self,
        left: (usize, usize, bool),
        right: (usize, usize, bool),
    ) -> std::cmp::Ordering {
        let unescape = |(start, end, escaped): (usize, usize, bool)| -> std::borrow::Cow<'_, str> {
            let raw = &self.text[start..end];
            if escaped {
                // Quoted again so serde_json undoes the escapes this reader accepted.
                serde_json::from_str::<String>(&self.text[start - 1..end + 1])
                    .map_or(std::borrow::Cow::Borrowed(raw), std::borrow::Cow::Owned)
            } else {
                std::borrow::Cow::Borrowed(raw)
            }
        };
        let (left, right) = (unescape(left), unescape(right));
        if left.is_ascii() && right.is_ascii() {
            left.as_bytes().cmp(right.as_bytes())
        } else {
            left.encode_utf16().cmp(right.encode_utf16())
        }
    }

    /// A string escaped exactly as `write_string` escapes: its span inside the quotes,
    /// and whether it holds an escape.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let mut escaped = false;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some((start, self.at - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    let escape = *self.bytes.get(self.at + 1)?;
                    self.at += 2;
                    match escape {
                        b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => {}
                        // Only controls without a short form, in lower-case hex.
                        b'u' => {
                            let hex = self.bytes.get(self.at..self.at + 4)?;
                            let code = std::str::from_utf8(hex)
                                .ok()
                                .filter(|hex| {
                                    hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                                })
                                .and_then(|hex| u32::from_str_radix(hex, 16).ok())?;
                            if code >= 0x20 || matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.at += 4;
                        }
                        _ => return None,
                    }
                }
                control if control < 0x20 => return None,
                _ => self.at += 1,
            }
        }
    }

    /// An integer as `write_value` writes one: no sign on zero, no leading zero, no
    /// fraction or exponent, within ±(2^53 − 1).
    fn integer(&mut self) -> bool {
        let start = self.at;
        let negative = self.eat(b'-');
        let digits_start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.text[digits_start..self.at];
        if digits.is_empty()
            || (digits.len() > 1 && digits.starts_with('0'))
            || (negative && digits == "0")
            || matches!(self.peek(), Some(b'.' | b'e' | b'E'))
        {
            return false;
        }
        self.text[start..self.at]
            .parse::<i64>()
            .is_ok_and(|integer| (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&integer))
    }
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

/// Writes `text` as a canonical JSON string, quotes included.
pub fn write_string(text: &str, out: &mut String) {
    out.push('"');
    if !text
        .bytes()
        .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\')
    {
        // Nearly every string: nothing to escape.
        out.push_str(text);
        out.push('"');
        return;
    }
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

    #[test]
    fn the_reader_refuses_what_the_writer_would_write_otherwise() {
        for (text, canonical) in [
            (r#"{"a":1,"b":[true,false,null,-7,0]}"#, true),
            (r#"{"b":1,"a":2}"#, false),
            (r#"{"a":1,"a":1}"#, false),
            (r#"{"a": 1}"#, false),
            ("[1,2]\n", false),
            ("-0", false),
            ("01", false),
            ("1.0", false),
            ("1e3", false),
            ("9007199254740991", true),
            ("9007199254740992", false),
            ("-9007199254740992", false),
            (r#""\u0041""#, false),
            (r#""\u000a""#, false),
            (r#""\u000b""#, true),
            (r#""\u000B""#, false),
            (r#""\/""#, false),
            ("\"\u{7}\"", false),
            (r#"{"\r":1,"1":2,"€":3,"😀":4,"\ufb33":5}"#, false),
            ("{\"\\r\":1,\"1\":2,\"€\":3,\"😀\":4,\"\u{fb33}\":5}", true),
            ("{\"\u{fb33}\":1,\"😀\":2}", false),
            ("", false),
            ("[", false),
            (r#"{"a":}"#, false),
            ("tru", false),
        ] {
            assert_eq!(is_canonical(text), canonical, "{text}");
        }
        let deep = "[".repeat(100_000);
        assert!(!is_canonical(&deep));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(|n| json!(n)),
            "\\PC{0,6}|[\\x00-\\x1f\"\\\\/]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,4}|[\\x00-\\x1f]{0,2}", inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_reader_agrees_with_the_writer(value in json_value()) {
            let canonical = to_canonical_json(&value).expect("canonical");
            prop_assert!(is_canonical(&canonical), "{}", canonical);
            // Any other rendering of the same value is canonical only if it is the same text.
            for other in [
                serde_json::to_string(&value).expect("json"),
                serde_json::to_string_pretty(&value).expect("json"),
            ] {
                prop_assert_eq!(is_canonical(&other), other == canonical, "{}", other);
            }
        }

        #[test]
        fn any_text_is_canonical_exactly_when_it_is_its_own_canonical_form(text in "[\\[\\]{}\",:0-9a-z\\\\ .-]{0,24}") {
            let expected = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|value| to_canonical_json(&value).ok())
                .is_some_and(|canonical| canonical == text);
            prop_assert_eq!(is_canonical(&text), expected, "{}", text);
        }

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
