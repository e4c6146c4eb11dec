//! Roster vocabulary parsed from LMS exports and the CLI: names, codes, statuses, modes.

use std::fmt;

/// Why a roster field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("is empty")]
    Empty,
    #[error("is {0} characters long; at most {1} are allowed")]
    TooLong(usize, usize),
    #[error("contains a control character (tab, line break or similar)")]
    ControlCharacter,
    #[error("is not one of: {1}")]
    NotOneOf(String, &'static str),
}

fn clean_text(text: &str, max_chars: usize) -> Result<String, FieldError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(FieldError::Empty);
    }
    let char_count = trimmed.chars().count();
    if char_count > max_chars {
        return Err(FieldError::TooLong(char_count, max_chars));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::ControlCharacter);
    }
    Ok(trimmed.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            /// Trims the text and refuses empty, over-long or control-character values.
            pub fn parse(text: &str) -> Result<Self, FieldError> {
                clean_text(text, Self::MAX_CHARS).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

text_type!(
    /// One part of a person's name (last, first or middle), in any script.
    PersonName,
    100
);
text_type!(
    /// A study group's code as the LMS names it, e.g. `ПО-21` or `IT-2301`.
    GroupCode,
    32
);
text_type!(
    /// A site (campus building) name.
    SiteName,
    100
);
text_type!(
    /// A room inside a site, or `online`.
    RoomName,
    50
);
text_type!(
    /// A discipline (subject) name.
    Discipline,
    200
);

/// A student's place in the contingent, as the registry understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StudentStatus {
    Active,
    AcademicLeave,
    Expelled,
    Deceased,
}

impl StudentStatus {
    const ACCEPTED: &'static str =
        "active, academic_leave, expelled, deceased (or обучается, академический отпуск, отчислен, умер)";

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let normalized = text.trim().to_lowercase().replace([' ', '-'], "_");
        match normalized.as_str() {
            "" | "active" | "обучается" | "активный" | "активен" => {
                Ok(Self::Active)
            }
            "academic_leave" | "leave" | "академический_отпуск" | "академ" | "академотпуск" => {
                Ok(Self::AcademicLeave)
            }
            "expelled" | "отчислен" | "отчислена" => Ok(Self::Expelled),
            "deceased" | "умер" | "умерла" | "скончался" | "скончалась" => {
                Ok(Self::Deceased)
            }
            _ => Err(FieldError::NotOneOf(text.trim().to_owned(), Self::ACCEPTED)),
        }
    }

    /// The stable name stored in the database and sent to the registry.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::AcademicLeave => "academic_leave",
            Self::Expelled => "expelled",
            Self::Deceased => "deceased",
        }
    }

    pub fn from_stored(text: &str) -> Option<Self> {
        Self::parse(text).ok()
    }
}

/// Whether a lesson happens in a room or in a video call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LessonMode {
    Offline,
    Online,
}

impl LessonMode {
    const ACCEPTED: &'static str = "offline, online (or очно, онлайн, дистанционно)";

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        match text.trim().to_lowercase().as_str() {
            "" | "offline" | "очно" | "очный" | "аудитория" => Ok(Self::Offline),
            "online" | "онлайн" | "дистанционно" | "дистанционный" => {
                Ok(Self::Online)
            }
            _ => Err(FieldError::NotOneOf(text.trim().to_owned(), Self::ACCEPTED)),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::Online => "online",
        }
    }
}

/// Parses the yes/no columns of LMS exports (`beneficiary`, `Бюджет`).
pub fn parse_yes_no(text: &str) -> Result<bool, FieldError> {
    match text.trim().to_lowercase().as_str() {
        "yes" | "y" | "1" | "true" | "да" | "д" | "иә" | "бюджет" => Ok(true),
        "no" | "n" | "0" | "false" | "нет" | "н" | "жоқ" | "платно" | "платный" => {
            Ok(false)
        }
        other => Err(FieldError::NotOneOf(
            other.to_owned(),
            "yes, no, 1, 0, да, нет",
        )),
    }
}

/// The college's fixed offset from UTC, named as the IANA zone IT typed at `init`.
///
/// Kazakhstan moved to a single offset (UTC+5) on 2024-03-01, so every Kazakh zone name
/// maps to +05:00; `UTC` and explicit `UTC+HH:MM` are accepted for tests and pilots abroad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollegeTimezone {
    name: String,
    offset_minutes: i32,
}

impl CollegeTimezone {
    const KAZAKH_ZONES: [&'static str; 8] = [
        "Asia/Almaty",
        "Asia/Astana",
        "Asia/Qostanay",
        "Asia/Aqtobe",
        "Asia/Aqtau",
        "Asia/Atyrau",
        "Asia/Oral",
        "Asia/Qyzylorda",
    ];

    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let text = text.trim();
        if Self::KAZAKH_ZONES.contains(&text) {
            return Ok(Self {
                name: text.to_owned(),
                offset_minutes: 5 * 60,
            });
        }
        if text == "UTC" {
            return Ok(Self {
                name: text.to_owned(),
                offset_minutes: 0,
            });
        }
        let error = || {
            FieldError::NotOneOf(
                text.to_owned(),
                "Asia/Almaty and the other Kazakh zones, UTC, or UTC+HH:MM",
            )
        };
        let rest = text.strip_prefix("UTC").ok_or_else(error)?;
        let (sign, rest) = match rest.as_bytes().first() {
            Some(b'+') => (1, &rest[1..]),
            Some(b'-') => (-1, &rest[1..]),
            _ => return Err(error()),
        };
        let (hours, minutes) = rest.split_once(':').ok_or_else(error)?;
        let hours: i32 = hours.parse().map_err(|_| error())?;
        let minutes: i32 = minutes.parse().map_err(|_| error())?;
        if !(0..=14).contains(&hours) || !(0..60).contains(&minutes) || hours.to_string().len() > 2
        {
            return Err(error());
        }
        Ok(Self {
            name: text.to_owned(),
            offset_minutes: sign * (hours * 60 + minutes),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn offset_seconds(&self) -> i64 {
        i64::from(self.offset_minutes) * 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            PersonName::parse("  Әлібек ").expect("name").as_str(),
            "Әлібек"
        );
        assert_eq!(PersonName::parse("   "), Err(FieldError::Empty));
        let long = "ы".repeat(10_000);
        assert_eq!(
            PersonName::parse(&long),
            Err(FieldError::TooLong(10_000, 100))
        );
        assert_eq!(
            GroupCode::parse("ПО\n21"),
            Err(FieldError::ControlCharacter)
        );
        // SQL-looking text is just text: storage uses bound parameters.
        assert!(PersonName::parse("Robert'); DROP TABLE students;--").is_ok());
    }

    #[test]
    fn statuses_in_both_languages() {
        assert_eq!(
            StudentStatus::parse("Отчислен"),
            Ok(StudentStatus::Expelled)
        );
        assert_eq!(
            StudentStatus::parse("академический отпуск"),
            Ok(StudentStatus::AcademicLeave)
        );
        assert_eq!(StudentStatus::parse(""), Ok(StudentStatus::Active));
        assert!(StudentStatus::parse("graduated").is_err());
        assert_eq!(parse_yes_no("ДА"), Ok(true));
        assert_eq!(parse_yes_no("0"), Ok(false));
        assert!(parse_yes_no("maybe").is_err());
        assert_eq!(LessonMode::parse("Онлайн"), Ok(LessonMode::Online));
    }

    #[test]
    fn timezones() {
        let almaty = CollegeTimezone::parse("Asia/Almaty").expect("zone");
        assert_eq!(almaty.offset_seconds(), 5 * 3600);
        let custom = CollegeTimezone::parse("UTC-03:30").expect("zone");
        assert_eq!(custom.offset_seconds(), -(3 * 3600 + 30 * 60));
        for bad in [
            "Europe/Nowhere",
            "UTC+5",
            "UTC+99:00",
            "UTC+05:75",
            "",
            "UTC+",
        ] {
            assert!(CollegeTimezone::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
