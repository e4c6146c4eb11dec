//! The pilot's 50% QR coverage rule (design §5.5), as pure arithmetic.
//!
//! For a month and a scope: B = beneficiaries active in the month. A student is
//! QR-tracked when at least `student_qr_share` of their present marks came from QR.
//! Coverage = |QR-tracked B| / |B|; the rule holds when coverage ≥ `min_coverage`.
//! Shares are compared as exact fractions (per-mille thresholds, integer counts), so a
//! student at exactly 50% is tracked and a group at exactly 50% holds.

use serde::Serialize;

/// A threshold as a fraction in thousandths (0.5 → 500), exact to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerMille(u16);

impl PerMille {
    /// From a config value in 0.0..=1.0, rounded to the nearest thousandth.
    pub fn from_fraction(fraction: f64) -> Option<Self> {
        (0.0..=1.0)
            .contains(&fraction)
            .then(|| Self((fraction * 1000.0).round() as u16))
    }

    pub fn thousandths(&self) -> u16 {
        self.0
    }

    /// Whether `part / whole ≥ self`; false when `whole` is 0.
    pub fn is_met_by(&self, part: u64, whole: u64) -> bool {
        whole > 0 && part * 1000 >= u64::from(self.0) * whole
    }
}

/// A share in thousandths as a percentage with one decimal ("50.0%"); "—" for none.
pub fn per_mille_text(per_mille: Option<u64>) -> String {
    per_mille.map_or_else(
        || "—".to_owned(),
        |value| format!("{}.{}%", value / 10, value % 10),
    )
}

/// One beneficiary's month: marks counted only for days they were active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StudentMonth {
    pub iin: String,
    pub name: String,
    pub group: String,
    /// Lessons marked present or late (latest mark per lesson).
    pub present: u64,
    /// Of those, marks taken by QR.
    pub qr: u64,
}

impl StudentMonth {
    pub fn is_qr_tracked(&self, student_qr_share: PerMille) -> bool {
        student_qr_share.is_met_by(self.qr, self.present)
    }
}

/// Coverage of one scope (the college or a group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeCoverage {
    pub scope: String,
    pub beneficiaries: u64,
    pub qr_tracked: u64,
    /// qr_tracked / beneficiaries in thousandths; None without beneficiaries.
    pub coverage_per_mille: Option<u64>,
    pub present_marks: u64,
    pub qr_marks: u64,
    /// qr_marks / present_marks in thousandths; None without marks.
    pub qr_share_per_mille: Option<u64>,
    /// Whether coverage ≥ min_coverage (vacuously true without beneficiaries).
    pub holds: bool,
    /// Beneficiaries not QR-tracked, for the admin to follow up.
    pub not_tracked: Vec<StudentMonth>,
}

/// Computes coverage of `scope` over the given beneficiaries.
pub fn coverage_of(
    scope: &str,
    students: &[&StudentMonth],
    student_qr_share: PerMille,
    min_coverage: PerMille,
) -> ScopeCoverage {
    let beneficiaries = students.len() as u64;
    let not_tracked: Vec<StudentMonth> = students
        .iter()
        .filter(|student| !student.is_qr_tracked(student_qr_share))
        .map(|student| (*student).clone())
        .collect();
    let qr_tracked = beneficiaries - not_tracked.len() as u64;
    let present_marks: u64 = students.iter().map(|student| student.present).sum();
    let qr_marks: u64 = students.iter().map(|student| student.qr).sum();
    ScopeCoverage {
        scope: scope.to_owned(),
        beneficiaries,
        qr_tracked,
        coverage_per_mille: (beneficiaries > 0).then(|| qr_tracked * 1000 / beneficiaries),
        present_marks,
        qr_marks,
        qr_share_per_mille: (present_marks > 0).then(|| qr_marks * 1000 / present_marks),
        holds: beneficiaries == 0 || min_coverage.is_met_by(qr_tracked, beneficiaries),
        not_tracked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn student(present: u64, qr: u64) -> StudentMonth {
        StudentMonth {
            iin: format!("{present}-{qr}"),
            name: String::new(),
            group: "G".into(),
            present,
            qr,
        }
    }

    const HALF: PerMille = PerMille(500);

    #[test]
    fn exactly_half_is_enough() {
        assert!(student(4, 2).is_qr_tracked(HALF));
        assert!(!student(5, 2).is_qr_tracked(HALF));
        assert!(
            !student(0, 0).is_qr_tracked(HALF),
            "no presence, no QR evidence"
        );
        // Two of four tracked: 50% coverage holds at min 0.5.
        let month = [student(4, 2), student(4, 4), student(4, 1), student(0, 0)];
        let refs: Vec<&StudentMonth> = month.iter().collect();
        let coverage = coverage_of("G", &refs, HALF, HALF);
        assert_eq!((coverage.qr_tracked, coverage.beneficiaries), (2, 4));
        assert_eq!(coverage.coverage_per_mille, Some(500));
        assert!(coverage.holds);
        assert_eq!(coverage.qr_share_per_mille, Some(7 * 1000 / 12));
        assert_eq!(coverage.not_tracked.len(), 2);
    }

    #[test]
    fn thresholds_from_config() {
        assert_eq!(PerMille::from_fraction(0.5), Some(PerMille(500)));
        assert_eq!(PerMille::from_fraction(0.6667), Some(PerMille(667)));
        assert_eq!(PerMille::from_fraction(1.5), None);
        assert_eq!(PerMille::from_fraction(f64::NAN), None);
    }

    fn month_strategy() -> impl Strategy<Value = Vec<(u64, u64)>> {
        proptest::collection::vec(
            (0u64..30).prop_flat_map(|present| (Just(present), 0..=present)),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn a_qr_mark_never_lowers_coverage(month in month_strategy(), pick in any::<prop::sample::Index>()) {
            prop_assume!(!month.is_empty());
            let before: Vec<StudentMonth> = month.iter().map(|(present, qr)| student(*present, *qr)).collect();
            let mut after = before.clone();
            let target = pick.index(after.len());
            after[target].present += 1;
            after[target].qr += 1;
            let coverage = |students: &[StudentMonth]| coverage_of("G", &students.iter().collect::<Vec<_>>(), HALF, HALF);
            prop_assert!(coverage(&after).qr_tracked >= coverage(&before).qr_tracked);
        }

        #[test]
        fn a_manual_mark_never_raises_the_tracked_count(month in month_strategy(), pick in any::<prop::sample::Index>()) {
            prop_assume!(!month.is_empty());
            let before: Vec<StudentMonth> = month.iter().map(|(present, qr)| student(*present, *qr)).collect();
            let mut after = before.clone();
            let target = pick.index(after.len());
            after[target].present += 1;
            let coverage = |students: &[StudentMonth]| coverage_of("G", &students.iter().collect::<Vec<_>>(), HALF, HALF);
            prop_assert!(coverage(&after).qr_tracked <= coverage(&before).qr_tracked);
        }
    }
}
