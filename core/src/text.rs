//! The one catalog of user-facing text, in every language the product speaks: the
//! agent's pages, the kiosk's screen, red-flag details, month-close reports and export
//! headers all take their words from here.
//!
//! One file per language under `core/text/` (`key = text` lines; `@order` places the
//! language in the switcher, `@aliases` lists other codes readers send for it). `build.rs` makes the `Text` enum from
//! `en.txt`, so a key is checked at compile time, and embeds every file; a test checks
//! each file has every key, no other, and no blank. A new language is one new file.
//! Texts with a `{name}` placeholder are filled by `Lang::fill`.

use std::collections::HashMap;
use std::sync::OnceLock;

include!(concat!(env!("OUT_DIR"), "/text_catalog.rs"));

/// The language used when a reader's choice is unknown: the one most college staff
/// and students read.
pub const FALLBACK_LANGUAGE: &str = "ru";

/// One parsed catalog file.
#[derive(Debug)]
struct Catalog {
    code: &'static str,
    order: i64,
    aliases: Vec<String>,
    texts: HashMap<&'static str, &'static str>,
}

/// A problem in a catalog file, found by `check_catalogs` (and the test that runs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogProblem {
    pub file: String,
    pub problem: String,
}

fn parse(code: &'static str, text: &'static str) -> (Catalog, Vec<CatalogProblem>) {
    let mut catalog = Catalog {
        code,
        order: i64::MAX,
        aliases: Vec::new(),
        texts: HashMap::new(),
    };
    let mut problems = Vec::new();
    let problem = |line: usize, what: String| CatalogProblem {
        file: format!("core/text/{code}.txt"),
        problem: format!("line {line}: {what}"),
    };
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            problems.push(problem(index + 1, "expected `key = text`".into()));
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "@order" => catalog.order = value.parse().unwrap_or(i64::MAX),
            "@aliases" => {
                catalog.aliases = value
                    .split(',')
                    .map(|alias| alias.trim().to_owned())
                    .collect()
            }
            _ => {
                if catalog.texts.insert(key, value).is_some() {
                    problems.push(problem(index + 1, format!("{key} appears twice")));
                }
            }
        }
    }
    (catalog, problems)
}

fn catalogs() -> &'static [Catalog] {
    static CATALOGS: OnceLock<Vec<Catalog>> = OnceLock::new();
    CATALOGS.get_or_init(|| {
        let mut catalogs: Vec<Catalog> = CATALOG_FILES
            .iter()
            .map(|(code, text)| parse(code, text).0)
            .collect();
        catalogs.sort_by(|left, right| (left.order, left.code).cmp(&(right.order, right.code)));
        catalogs
    })
}

/// Every problem of every catalog file: unparsable lines, repeated, missing, unknown or
/// blank keys. Empty for a shippable build.
pub fn check_catalogs() -> Vec<CatalogProblem> {
    let mut problems = Vec::new();
    for (code, text) in CATALOG_FILES {
        let (catalog, parse_problems) = parse(code, text);
        problems.extend(parse_problems);
        let file = format!("core/text/{code}.txt");
        for key in Text::ALL {
            match catalog.texts.get(key.key()) {
                None => problems.push(CatalogProblem {
                    file: file.clone(),
                    problem: format!("{} is missing", key.key()),
                }),
                Some(&"") => problems.push(CatalogProblem {
                    file: file.clone(),
                    problem: format!("{} is blank", key.key()),
                }),
                Some(_) => {}
            }
        }
        for key in catalog.texts.keys() {
            if !Text::ALL.iter().any(|known| known.key() == *key) {
                problems.push(CatalogProblem {
                    file: file.clone(),
                    problem: format!("{key} is not in en.txt"),
                });
            }
        }
    }
    problems
}

/// A language of the catalog; `Copy`, cheap to pass to every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lang(usize);

impl Lang {
    /// Every language, in the order the switcher shows them.
    pub fn all() -> impl Iterator<Item = Lang> {
        (0..catalogs().len()).map(Lang)
    }

    /// The fallback language (`FALLBACK_LANGUAGE`).
    pub fn fallback() -> Lang {
        Self::from_code(FALLBACK_LANGUAGE).unwrap_or(Lang(0))
    }

    /// `kk`, `ru-RU`, `kz` (an alias)… → the language, if the catalog has it.
    pub fn from_code(code: &str) -> Option<Lang> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        catalogs()
            .iter()
            .position(|catalog| catalog.code == primary || catalog.aliases.contains(&primary))
            .map(Lang)
    }

    /// An explicit choice wins; then the browser's Accept-Language by weight; then the
    /// fallback.
    pub fn negotiate(chosen: Option<&str>, accept_language: Option<&str>) -> Lang {
        if let Some(lang) = chosen.and_then(Self::from_code) {
            return lang;
        }
        let mut best: Option<(Lang, f32)> = None;
        for entry in accept_language.unwrap_or("").split(',') {
            let mut parts = entry.split(';');
            let Some(lang) = parts.next().and_then(Self::from_code) else {
                continue;
            };
            let weight = parts
                .find_map(|part| part.trim().strip_prefix("q="))
                .and_then(|weight| weight.parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(_, best_weight)| weight > best_weight) {
                best = Some((lang, weight));
            }
        }
        best.map_or_else(Self::fallback, |(lang, _)| lang)
    }

    fn catalog(self) -> &'static Catalog {
        &catalogs()[self.0]
    }

    /// The language's code (`kk`), for `lang=` attributes and links.
    pub fn code(self) -> &'static str {
        self.catalog().code
    }

    /// The text of `key`; a key missing from this file (which the test refuses) falls
    /// back to the fallback language, then to the key itself, never to a blank.
    pub fn text(self, key: Text) -> &'static str {
        self.catalog()
            .texts
            .get(key.key())
            .or_else(|| Lang::fallback().catalog().texts.get(key.key()))
            .copied()
            .unwrap_or_else(|| key.key())
    }

    /// The text of `key` with each `{name}` replaced by its value.
    pub fn fill(self, key: Text, values: &[(&str, &str)]) -> String {
        let mut filled = self.text(key).to_owned();
        for (name, value) in values {
            filled = filled.replace(&format!("{{{name}}}"), value);
        }
        filled
    }
}

/// A catalog sentence with the values that fill its `{name}` placeholders: something a
/// program found (a red flag, a reason a month is not compliant) kept apart from its
/// words, so each reader gets it in their language. Serialises as English, for JSON that
/// people of every language and the registry read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    key: Text,
    values: Vec<(&'static str, String)>,
}

impl Sentence {
    pub fn new(key: Text, values: &[(&'static str, &dyn std::fmt::Display)]) -> Self {
        Self {
            key,
            values: values
                .iter()
                .map(|(name, value)| (*name, value.to_string()))
                .collect(),
        }
    }

    /// The sentence in `lang`.
    pub fn in_lang(&self, lang: Lang) -> String {
        let values: Vec<(&str, &str)> = self
            .values
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        lang.fill(self.key, &values)
    }

    /// The sentence in English.
    pub fn in_english(&self) -> String {
        self.in_lang(Lang::from_code("en").unwrap_or_else(Lang::fallback))
    }
}

impl serde::Serialize for Sentence {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.in_english())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_file_has_every_key_and_no_other() {
        assert_eq!(check_catalogs(), Vec::<CatalogProblem>::new());
        assert!(Lang::all().count() >= 3);
    }

    #[test]
    fn a_broken_file_is_reported_by_line() {
        let (_, problems) = parse("xx", "agent.title = a\nno equals sign\nagent.title = b\n");
        let problems: Vec<String> = problems
            .into_iter()
            .map(|problem| problem.problem)
            .collect();
        assert_eq!(
            problems,
            vec![
                "line 2: expected `key = text`",
                "line 3: agent.title appears twice"
            ]
        );
    }

    #[test]
    fn a_sentence_reads_in_each_language_and_serialises_as_english() {
        let sentence = Sentence::new(
            Text::FlagSharedDevice,
            &[("students", &3), ("iins", &"A, B, C")],
        );
        assert_eq!(
            sentence.in_english(),
            "one device checked in 3 students: A, B, C"
        );
        let ru = Lang::from_code("ru").expect("ru");
        assert_eq!(
            sentence.in_lang(ru),
            "одно устройство отметило 3 студентов: A, B, C"
        );
        assert_eq!(
            serde_json::to_string(&sentence).expect("json"),
            "\"one device checked in 3 students: A, B, C\""
        );
    }

    #[test]
    fn every_placeholder_of_a_sentence_is_in_every_language() {
        // A translation that drops or renames `{name}` would show a blank or a raw brace.
        let placeholders = |text: &str| {
            let mut found: Vec<String> = text
                .split('{')
                .skip(1)
                .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
                .collect();
            found.sort();
            found
        };
        let english = Lang::from_code("en").expect("en");
        for key in Text::ALL {
            let expected = placeholders(english.text(*key));
            for lang in Lang::all() {
                assert_eq!(
                    placeholders(lang.text(*key)),
                    expected,
                    "{} in {}",
                    key.key(),
                    lang.code()
                );
            }
        }
    }

    #[test]
    fn negotiation() {
        let code = |lang: Lang| lang.code();
        assert_eq!(code(Lang::negotiate(Some("kk"), Some("en"))), "kk");
        assert_eq!(code(Lang::negotiate(Some("kz"), None)), "kk");
        assert_eq!(
            code(Lang::negotiate(None, Some("en-US,en;q=0.9,ru;q=0.8"))),
            "en"
        );
        assert_eq!(
            code(Lang::negotiate(None, Some("de;q=1,kk-KZ;q=0.5,ru;q=0.7"))),
            "ru"
        );
        assert_eq!(code(Lang::negotiate(Some("xx"), None)), "ru");
        assert_eq!(code(Lang::negotiate(None, Some(";;;q=,"))), "ru");
        assert_eq!(code(Lang::all().next().expect("a language")), "kk");
        let kk = Lang::from_code("kk").expect("kk");
        assert_eq!(kk.text(Text::StatusGroups), "Топтар");
    }
}
