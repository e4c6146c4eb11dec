//! Attendance vocabulary: what a mark says and how it was taken.

/// What a mark records about the student in the lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkStatus {
    Present,
    Late,
    Absent,
    Excused,
}

impl MarkStatus {
    /// Whether the student was there: present or late. The one definition; SQL reads the
    /// `present_marks` view, which says the same.
    pub fn counts_as_present(self) -> bool {
        matches!(self, Self::Present | Self::Late)
    }
}

/// How a mark was taken. QR methods count towards the coverage rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkMethod {
    QrPhone,
    QrKiosk,
    QrTyped,
    Manual,
    /// Entered by an admin after the lesson's window, with a reason: never a live mark.
    LateEntry,
}

macro_rules! stored_names {
    ($type:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $type {
            /// The stable name stored in the database and sent to the registry.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text.trim().to_ascii_lowercase().as_str() {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

stored_names!(MarkStatus { Present => "present", Late => "late", Absent => "absent", Excused => "excused" });
stored_names!(MarkMethod { QrPhone => "qr_phone", QrKiosk => "qr_kiosk", QrTyped => "qr_typed", Manual => "manual", LateEntry => "late_entry" });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in [
            MarkStatus::Present,
            MarkStatus::Late,
            MarkStatus::Absent,
            MarkStatus::Excused,
        ] {
            assert_eq!(MarkStatus::parse(status.as_str()), Some(status));
        }
        for method in [
            MarkMethod::QrPhone,
            MarkMethod::QrKiosk,
            MarkMethod::QrTyped,
            MarkMethod::Manual,
            MarkMethod::LateEntry,
        ] {
            assert_eq!(MarkMethod::parse(method.as_str()), Some(method));
        }
        assert_eq!(MarkStatus::parse("here"), None);
    }
}
