//! Kazakhstan's individual (IIN) and business (BIN) identification numbers, parsed once.
//!
//! Both are 12 digits whose last digit is a check digit computed by the two-pass weighted
//! mod-11 rule; an IIN also encodes a birth date and a century/sex digit.

use std::fmt;

use crate::date::Date;

/// Why a string is not a valid IIN or BIN. Messages name the fault and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be exactly 12 digits, got {0} characters")]
    Length(usize),
    #[error("must contain only digits 0-9")]
    NotDigits,
    #[error("digit 7 (century and sex) is {0}; it must be 1-6")]
    CenturySex(u8),
    #[error("the birth date {0} does not exist")]
    BirthDate(String),
    #[error("the registration month {0:02} does not exist (digits 3-4 must be 01-12)")]
    RegistrationMonth(u8),
    #[error("digit 5 (legal entity type) is {0}; it must be 4, 5 or 6")]
    EntityType(u8),
    #[error("the check digit is {found} but the other digits give {expected}; check for a typo")]
    CheckDigit { found: u8, expected: u8 },
    #[error("no valid check digit exists for these 11 digits (the number is never issued)")]
    Unissuable,
}

/// A person's sex as encoded by the 7th IIN digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

/// A validated individual identification number of a student or a teacher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iin([u8; 12]);

/// A validated business identification number (the college's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bin([u8; 12]);

const WEIGHTS_FIRST: [u32; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const WEIGHTS_SECOND: [u32; 11] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2];

/// The check digit of the first 11 digits, or `None` when both passes give 10.
pub fn check_digit(first_eleven: &[u8; 11]) -> Option<u8> {
    let weighted = |weights: &[u32; 11]| {
        first_eleven
            .iter()
            .zip(weights)
            .map(|(digit, weight)| u32::from(*digit) * weight)
            .sum::<u32>()
            % 11
    };
    let first = weighted(&WEIGHTS_FIRST);
    if first != 10 {
        return Some(first as u8);
    }
    let second = weighted(&WEIGHTS_SECOND);
    (second != 10).then_some(second as u8)
}

fn twelve_digits(text: &str) -> Result<[u8; 12], IdError> {
    let char_count = text.chars().count();
    if char_count != 12 {
        return Err(IdError::Length(char_count));
    }
    let mut digits = [0u8; 12];
    for (slot, byte) in digits.iter_mut().zip(text.bytes()) {
        if !byte.is_ascii_digit() {
            return Err(IdError::NotDigits);
        }
        *slot = byte - b'0';
    }
    Ok(digits)
}

fn verify_check_digit(digits: &[u8; 12]) -> Result<(), IdError> {
    let mut first_eleven = [0u8; 11];
    first_eleven.copy_from_slice(&digits[..11]);
    let expected = check_digit(&first_eleven).ok_or(IdError::Unissuable)?;
    if digits[11] != expected {
        return Err(IdError::CheckDigit {
            found: digits[11],
            expected,
        });
    }
    Ok(())
}

fn digits_to_string(digits: &[u8; 12]) -> String {
    digits
        .iter()
        .map(|digit| char::from(b'0' + digit))
        .collect()
}

impl Iin {
    /// Parses an IIN, checking length, digits, birth date, century/sex digit and check digit.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let digits = twelve_digits(text)?;
        let century_sex = digits[6];
        let century_base = match century_sex {
            1 | 2 => 1800,
            3 | 4 => 1900,
            5 | 6 => 2000,
            other => return Err(IdError::CenturySex(other)),
        };
        let year = century_base + i32::from(digits[0] * 10 + digits[1]);
        let month = digits[2] * 10 + digits[3];
        let day = digits[4] * 10 + digits[5];
        if Date::new(year, month, day).is_none() {
            return Err(IdError::BirthDate(format!("{year:04}-{month:02}-{day:02}")));
        }
        verify_check_digit(&digits)?;
        Ok(Self(digits))
    }

    /// Builds the IIN of a person born on `birth` with the given serial (0..=9999), or
    /// `None` when that serial has no valid check digit. Used for demo rosters and tests.
    pub fn from_parts(birth: Date, sex: Sex, serial: u16) -> Option<Self> {
        let century_sex = match (birth.year(), sex) {
            (1800..=1899, Sex::Male) => 1,
            (1800..=1899, Sex::Female) => 2,
            (1900..=1999, Sex::Male) => 3,
            (1900..=1999, Sex::Female) => 4,
            (2000..=2099, Sex::Male) => 5,
            (2000..=2099, Sex::Female) => 6,
            _ => return None,
        };
        if serial > 9999 {
            return None;
        }
        let year_in_century = (birth.year() % 100) as u8;
        let first_eleven = [
            year_in_century / 10,
            year_in_century % 10,
            birth.month() / 10,
            birth.month() % 10,
            birth.day() / 10,
            birth.day() % 10,
            century_sex,
            (serial / 1000) as u8,
            (serial / 100 % 10) as u8,
            (serial / 10 % 10) as u8,
            (serial % 10) as u8,
        ];
        let check = check_digit(&first_eleven)?;
        let mut digits = [0u8; 12];
        digits[..11].copy_from_slice(&first_eleven);
        digits[11] = check;
        Some(Self(digits))
    }

    /// The birth date encoded in the IIN.
    pub fn birth_date(&self) -> Date {
        let century_base = match self.0[6] {
            1 | 2 => 1800,
            3 | 4 => 1900,
            _ => 2000,
        };
        let year = century_base + i32::from(self.0[0] * 10 + self.0[1]);
        // Parsing proved the date exists, so `new` cannot fail here.
        Date::new(year, self.0[2] * 10 + self.0[3], self.0[4] * 10 + self.0[5])
            .unwrap_or(Date::EPOCH)
    }

    pub fn sex(&self) -> Sex {
        if self.0[6] % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    pub fn as_string(&self) -> String {
        digits_to_string(&self.0)
    }
}

impl Bin {
    /// Parses a BIN: 12 digits, a real registration month, an entity type digit, and the
    /// same check digit rule as an IIN.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let digits = twelve_digits(text)?;
        let month = digits[2] * 10 + digits[3];
        if !(1..=12).contains(&month) {
            return Err(IdError::RegistrationMonth(month));
        }
        if !(4..=6).contains(&digits[4]) {
            return Err(IdError::EntityType(digits[4]));
        }
        verify_check_digit(&digits)?;
        Ok(Self(digits))
    }

    pub fn as_string(&self) -> String {
        digits_to_string(&self.0)
    }
}

impl fmt::Display for Iin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.as_string())
    }
}

impl fmt::Display for Bin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.as_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_known_valid_iin() {
        // 900101 3 0001 ?: weights 1..11 over 9,0,0,1,0,1,3,0,0,0,1 =
        // 9 + 0 + 0 + 4 + 0 + 6 + 21 + 0 + 0 + 0 + 11 = 51; 51 mod 11 = 7.
        let iin = Iin::parse("900101300017").expect("valid IIN");
        assert_eq!(iin.birth_date(), Date::new(1990, 1, 1).expect("date"));
        assert_eq!(iin.sex(), Sex::Male);
        assert_eq!(iin.to_string(), "900101300017");
    }

    #[test]
    fn second_pass_is_used_when_first_gives_ten() {
        // 010101 5 0200 ?: first pass 0*1+1*2+0*3+1*4+0*5+1*6+5*7+0*8+2*9+0*10+0*11
        //   = 2+4+6+35+18 = 65; 65 mod 11 = 10 -> second pass, weights 3..11,1,2:
        //   0*3+1*4+0*5+1*6+0*7+1*8+5*9+0*10+2*11+0*1+0*2 = 4+6+8+45+22 = 85; 85 mod 11 = 8.
        let iin = Iin::parse("010101502008").expect("second-pass IIN");
        assert_eq!(iin.birth_date(), Date::new(2001, 1, 1).expect("date"));
        assert_eq!(
            Iin::parse("010101502000"),
            Err(IdError::CheckDigit {
                found: 0,
                expected: 8
            })
        );
    }

    #[test]
    fn rejects_each_kind_of_bad_iin() {
        assert_eq!(Iin::parse("90010130001"), Err(IdError::Length(11)));
        assert_eq!(Iin::parse("9001013000171"), Err(IdError::Length(13)));
        assert_eq!(Iin::parse("90010130001x"), Err(IdError::NotDigits));
        assert_eq!(
            Iin::parse("９００１０１３０００１７"),
            Err(IdError::NotDigits)
        );
        assert_eq!(Iin::parse("900101700017"), Err(IdError::CenturySex(7)));
        assert_eq!(Iin::parse("900101000017"), Err(IdError::CenturySex(0)));
        assert!(matches!(
            Iin::parse("900230300017"),
            Err(IdError::BirthDate(_))
        ));
        assert_eq!(
            Iin::parse("900101300018"),
            Err(IdError::CheckDigit {
                found: 8,
                expected: 7
            })
        );
    }

    #[test]
    fn leap_day_birth_dates() {
        let leap = Iin::from_parts(Date::new(2004, 2, 29).expect("leap"), Sex::Female, 12)
            .expect("issuable");
        assert!(Iin::parse(&leap.to_string()).is_ok());
        // 1900 was not a leap year: 000229 with century digit 3 must fail on the date.
        assert!(matches!(
            Iin::parse("000229300010"),
            Err(IdError::BirthDate(_))
        ));
    }

    #[test]
    fn bin_rules() {
        // 0906 4 0 00123 ?: weights 1..11 over 0,9,0,6,4,0,0,0,1,2,3 =
        // 0+18+0+24+20+0+0+0+9+20+33 = 124; 124 mod 11 = 3.
        assert!(Bin::parse("090640001233").is_ok());
        assert_eq!(
            Bin::parse("091340001233"),
            Err(IdError::RegistrationMonth(13))
        );
        assert_eq!(Bin::parse("090610001233"), Err(IdError::EntityType(1)));
        assert!(matches!(
            Bin::parse("090640001234"),
            Err(IdError::CheckDigit { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,20}") {
            let _ = Iin::parse(&text);
            let _ = Bin::parse(&text);
        }

        #[test]
        fn built_iins_parse_back(days in 0i64..73_000, female in any::<bool>(), serial in 0u16..10_000) {
            let birth = Date::from_days_since_epoch(days - 25_567); // 1900-01-01 onwards
            let sex = if female { Sex::Female } else { Sex::Male };
            if let Some(iin) = Iin::from_parts(birth, sex, serial) {
                let parsed = Iin::parse(&iin.to_string()).expect("built IIN parses");
                prop_assert_eq!(parsed, iin);
                prop_assert_eq!(parsed.birth_date(), birth);
                prop_assert_eq!(parsed.sex(), sex);
            }
        }

        #[test]
        fn a_changed_check_digit_is_caught(days in 0i64..36_000, serial in 0u16..10_000, delta in 1u8..10) {
            let birth = Date::from_days_since_epoch(days - 25_567);
            if let Some(iin) = Iin::from_parts(birth, Sex::Male, serial) {
                let mut digits = iin.0;
                digits[11] = (digits[11] + delta) % 10;
                let is_check_digit_error = matches!(
                    Iin::parse(&digits_to_string(&digits)),
                    Err(IdError::CheckDigit { .. })
                );
                prop_assert!(is_check_digit_error);
            }
        }
    }
}
