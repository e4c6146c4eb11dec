//! Calendar dates, months and times of day without a time-zone database.
//!
//! Kazakhstan has had one offset (UTC+5) since 2024-03-01, so the agent needs civil-date
//! arithmetic and a fixed offset, not tzdata. Day counting follows Howard Hinnant's
//! `days_from_civil` algorithm (proleptic Gregorian calendar).

use std::fmt;

/// Why a date, month or time string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("'{0}' is not a date; write YYYY-MM-DD or DD.MM.YYYY")]
    DateFormat(String),
    #[error("'{0}' is not a real calendar date")]
    NoSuchDate(String),
    #[error("'{0}' is not a month; write YYYY-MM")]
    MonthFormat(String),
    #[error("'{0}' is not a time of day; write HH:MM (24-hour)")]
    TimeFormat(String),
}

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// A calendar month, as used for coverage and month close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    year: i32,
    month: u8,
}

/// A time of day in minutes after midnight, local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeOfDay(u16);

fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

fn parse_number<T: std::str::FromStr>(text: &str, digits: usize) -> Option<T> {
    (text.len() == digits && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

impl Date {
    pub const EPOCH: Date = Date {
        year: 1970,
        month: 1,
        day: 1,
    };

    /// A date when it exists in the calendar (years 1800..=2199).
    pub fn new(year: i32, month: u8, day: u8) -> Option<Self> {
        ((1800..=2199).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month))
        .then_some(Self { year, month, day })
    }

    /// Parses `YYYY-MM-DD` (ISO, what the CLI prints) or `DD.MM.YYYY` (how ru-KZ Excel
    /// writes dates in LMS exports).
    pub fn parse(text: &str) -> Result<Self, DateError> {
        let text = text.trim();
        let parts = if let [year, month, day] = text.split('-').collect::<Vec<_>>()[..] {
            (
                parse_number(year, 4),
                parse_number(month, 2),
                parse_number(day, 2),
            )
        } else if let [day, month, year] = text.split('.').collect::<Vec<_>>()[..] {
            (
                parse_number(year, 4),
                parse_number(month, 2),
                parse_number(day, 2),
            )
        } else {
            return Err(DateError::DateFormat(text.to_owned()));
        };
        match parts {
            (Some(year), Some(month), Some(day)) => {
                Self::new(year, month, day).ok_or_else(|| DateError::NoSuchDate(text.to_owned()))
            }
            _ => Err(DateError::DateFormat(text.to_owned())),
        }
    }

    pub fn year(&self) -> i32 {
        self.year
    }

    pub fn month(&self) -> u8 {
        self.month
    }

    pub fn day(&self) -> u8 {
        self.day
    }

    pub fn calendar_month(&self) -> Month {
        Month {
            year: self.year,
            month: self.month,
        }
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(&self) -> i64 {
        let year = i64::from(self.year) - i64::from(self.month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month = i64::from(self.month);
        let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5
            + i64::from(self.day)
            - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The date `days` after 1970-01-01; clamps to the supported year range.
    pub fn from_days_since_epoch(days: i64) -> Self {
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        } as u8;
        let year = (year_of_era + era * 400 + i64::from(month <= 2)).clamp(1800, 2199) as i32;
        Self::new(year, month, day).unwrap_or(Self {
            year,
            month: 1,
            day: 1,
        })
    }

    pub fn add_days(&self, days: i64) -> Self {
        Self::from_days_since_epoch(self.days_since_epoch() + days)
    }

    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub fn iso_weekday(&self) -> u8 {
        // 1970-01-01 was a Thursday (4).
        ((self.days_since_epoch() + 3).rem_euclid(7) + 1) as u8
    }
}

impl fmt::Display for Date {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:04}-{:02}-{:02}",
            self.year, self.month, self.day
        )
    }
}

impl Month {
    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Self, DateError> {
        let text = text.trim();
        let error = || DateError::MonthFormat(text.to_owned());
        let (year, month) = text.split_once('-').ok_or_else(error)?;
        let year: i32 = parse_number(year, 4).ok_or_else(error)?;
        let month: u8 = parse_number(month, 2).ok_or_else(error)?;
        Date::new(year, month, 1)
            .map(|date| date.calendar_month())
            .ok_or_else(error)
    }

    pub fn first_day(&self) -> Date {
        Date {
            year: self.year,
            month: self.month,
            day: 1,
        }
    }

    pub fn last_day(&self) -> Date {
        Date {
            year: self.year,
            month: self.month,
            day: days_in_month(self.year, self.month),
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:04}-{:02}", self.year, self.month)
    }
}

impl TimeOfDay {
    /// Parses `HH:MM` or `H:MM`, also with seconds `HH:MM:SS` as spreadsheets export them.
    pub fn parse(text: &str) -> Result<Self, DateError> {
        let text = text.trim();
        let error = || DateError::TimeFormat(text.to_owned());
        let mut parts = text.split(':');
        let hours = parts.next().ok_or_else(error)?;
        let minutes = parts.next().ok_or_else(error)?;
        let seconds = parts.next();
        if parts.next().is_some() || seconds.is_some_and(|seconds| seconds != "00") {
            return Err(error());
        }
        let hours: u16 = if hours.len() == 1 {
            parse_number(hours, 1)
        } else {
            parse_number(hours, 2)
        }
        .ok_or_else(error)?;
        let minutes: u16 = parse_number(minutes, 2).ok_or_else(error)?;
        if hours > 23 || minutes > 59 {
            return Err(error());
        }
        Ok(Self(hours * 60 + minutes))
    }

    pub fn from_minutes(minutes_after_midnight: u16) -> Option<Self> {
        (minutes_after_midnight < 24 * 60).then_some(Self(minutes_after_midnight))
    }

    pub fn minutes_after_midnight(&self) -> u16 {
        self.0
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_day_numbers_and_weekdays() {
        assert_eq!(Date::EPOCH.days_since_epoch(), 0);
        let new_year_2000 = Date::new(2000, 1, 1).expect("date");
        assert_eq!(new_year_2000.days_since_epoch(), 10_957);
        assert_eq!(new_year_2000.iso_weekday(), 6); // a Saturday
        let today = Date::new(2026, 11, 25).expect("date");
        assert_eq!(today.iso_weekday(), 3); // a Wednesday
        assert_eq!(
            Date::new(1900, 1, 1).expect("date").days_since_epoch(),
            -25_567
        );
    }

    #[test]
    fn parses_both_export_formats_and_refuses_the_rest() {
        let expected = Date::new(2026, 9, 1).expect("date");
        assert_eq!(Date::parse("2026-09-01"), Ok(expected));
        assert_eq!(Date::parse("01.09.2026"), Ok(expected));
        assert_eq!(
            Date::parse("2026-02-30"),
            Err(DateError::NoSuchDate("2026-02-30".into()))
        );
        for bad in [
            "",
            "2026-9-1",
            "1.9.2026",
            "2026/09/01",
            "２０２６-09-01",
            "+026-09-01",
        ] {
            assert!(Date::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn months_and_times() {
        let month = Month::parse("2024-02").expect("month");
        assert_eq!(month.last_day(), Date::new(2024, 2, 29).expect("date"));
        assert!(Month::parse("2024-13").is_err());
        assert!(Month::parse("24-02").is_err());
        assert_eq!(TimeOfDay::parse("8:30").expect("time").to_string(), "08:30");
        assert_eq!(
            TimeOfDay::parse("08:30:00").expect("time").to_string(),
            "08:30"
        );
        for bad in ["24:00", "12:60", "12", "12:5", "ab:cd", "08:30:15"] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad} parsed");
        }
    }

    proptest! {
        #[test]
        fn day_numbers_round_trip(days in -60_000i64..80_000) {
            let date = Date::from_days_since_epoch(days);
            prop_assert_eq!(date.days_since_epoch(), days);
            prop_assert_eq!(Date::parse(&date.to_string()), Ok(date));
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,16}") {
            let _ = Date::parse(&text);
            let _ = Month::parse(&text);
            let _ = TimeOfDay::parse(&text);
        }
    }
}
