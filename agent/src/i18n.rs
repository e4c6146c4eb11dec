//! The one catalog of user-facing web text, in Kazakh, Russian and English.
//!
//! A plain table rather than Fluent: our strings have no plural or gender rules yet, and a
//! table checked by a test (every key, every language, no blanks) is enough. Move to
//! `fluent-bundle` when a message needs plural forms.

/// A page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Kk,
    Ru,
    En,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::Kk, Lang::Ru, Lang::En];

    pub fn code(self) -> &'static str {
        match self {
            Lang::Kk => "kk",
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        let primary = code.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "kk" | "kz" => Some(Lang::Kk),
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// An explicit `?lang=` choice wins; then the browser's Accept-Language by weight;
    /// then Russian, the language most college staff and students read.
    pub fn negotiate(query_lang: Option<&str>, accept_language: Option<&str>) -> Self {
        if let Some(lang) = query_lang.and_then(Self::from_code) {
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
        best.map_or(Lang::Ru, |(lang, _)| lang)
    }
}

/// Catalog rows: key, Kazakh, Russian, English.
const CATALOG: &[(&str, &str, &str, &str)] = &[
    (
        "agent.title",
        "KasipTech колледж агенті",
        "Агент колледжа KasipTech",
        "KasipTech college agent",
    ),
    (
        "agent.running",
        "Агент жұмыс істеп тұр.",
        "Агент работает.",
        "The agent is running.",
    ),
    ("status.students", "Студенттер", "Студенты", "Students"),
    (
        "status.beneficiaries",
        "Грант иегерлері",
        "Бюджетники",
        "Beneficiaries",
    ),
    ("status.groups", "Топтар", "Группы", "Groups"),
    ("status.teachers", "Оқытушылар", "Преподаватели", "Teachers"),
    (
        "status.lessons_today",
        "Бүгінгі сабақтар",
        "Занятия сегодня",
        "Lessons today",
    ),
    ("status.sites", "Ғимараттар", "Корпуса", "Sites"),
    ("language", "Тіл", "Язык", "Language"),
];

/// The text of `key` in `lang`. An unknown key returns the key itself, so a missing
/// translation is visible on the page rather than a blank.
pub fn text(lang: Lang, key: &'static str) -> &'static str {
    CATALOG
        .iter()
        .find(|(entry_key, ..)| *entry_key == key)
        .map_or(key, |(_, kk, ru, en)| match lang {
            Lang::Kk => kk,
            Lang::Ru => ru,
            Lang::En => en,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_key_is_unique_and_translated() {
        let mut keys = HashSet::new();
        for (key, kk, ru, en) in CATALOG {
            assert!(keys.insert(key), "duplicate key {key}");
            for translation in [kk, ru, en] {
                assert!(
                    !translation.trim().is_empty(),
                    "{key} has a blank translation"
                );
            }
        }
    }

    #[test]
    fn negotiation() {
        assert_eq!(Lang::negotiate(Some("kk"), Some("en")), Lang::Kk);
        assert_eq!(
            Lang::negotiate(None, Some("en-US,en;q=0.9,ru;q=0.8")),
            Lang::En
        );
        assert_eq!(
            Lang::negotiate(None, Some("de;q=1,kk-KZ;q=0.5,ru;q=0.7")),
            Lang::Ru
        );
        assert_eq!(Lang::negotiate(Some("xx"), None), Lang::Ru);
        assert_eq!(Lang::negotiate(None, Some(";;;q=,")), Lang::Ru);
        assert_eq!(text(Lang::Kk, "status.groups"), "Топтар");
    }
}
