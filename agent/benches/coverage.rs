//! Coverage of a month for a 5,000-student college (≈ 660,000 marks), against a plain
//! scan of the same marks in the same run.
//!
//! `cargo bench -p kasip-agent --bench coverage`

use std::time::Instant;

use kasip_agent::coverage::{coverage_for_month, weekly_trend, CoverageRules};
use kasip_agent::store::Store;
use kasip_core::{Date, Iin, Month, PerMille, Sex};

const GROUPS: usize = 200;
const STUDENTS_PER_GROUP: usize = 25;
const LESSONS_PER_DAY: usize = 6;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::create(&dir.path().join("agent.db")).expect("store");
    let month = Month::parse("2026-11").expect("month");
    let working_days: Vec<Date> = (0..30)
        .map(|offset| month.first_day().add_days(offset))
        .filter(|day| day.iso_weekday() <= 5)
        .collect();
    let started = Instant::now();
    {
        let transaction = store.connection_mut().transaction().expect("tx");
        transaction
            .execute("INSERT INTO teachers (iin, last_name, first_name) VALUES ('850515400012', 'T', 'T')", [])
            .expect("teacher");
        let birth = Date::new(2006, 3, 15).expect("date");
        let mut serial = 0u16;
        let mut iins = Vec::new();
        while iins.len() < GROUPS * STUDENTS_PER_GROUP {
            for sex in [Sex::Female, Sex::Male] {
                if let Some(iin) =
                    Iin::from_parts(birth.add_days(i64::from(serial / 9000)), sex, serial % 9000)
                {
                    iins.push(iin.to_string());
                }
            }
            serial += 1;
        }
        let mut lesson_id = 0i64;
        for group in 0..GROUPS {
            transaction
                .execute(
                    "INSERT INTO study_groups (id, code) VALUES (?1, ?2)",
                    rusqlite::params![group as i64 + 1, format!("G-{group:03}")],
                )
                .expect("group");
            let members = &iins[group * STUDENTS_PER_GROUP..(group + 1) * STUDENTS_PER_GROUP];
            for (index, iin) in members.iter().enumerate() {
                transaction
                    .execute(
                        "INSERT INTO students (iin, last_name, first_name, group_id, beneficiary, status) VALUES (?1, 'S', 'S', ?2, ?3, 'active')",
                        rusqlite::params![iin, group as i64 + 1, index % 5 != 4],
                    )
                    .expect("student");
            }
            for day in &working_days {
                for slot in 0..LESSONS_PER_DAY {
                    lesson_id += 1;
                    transaction
                        .execute(
                            "INSERT INTO lessons (id, date, start_time, end_time, group_id, discipline, teacher_iin, room, mode)
                             VALUES (?1, ?2, ?3, ?4, ?5, 'D', '850515400012', '101', 'offline')",
                            rusqlite::params![lesson_id, day.to_string(), format!("{:02}:00", 8 + slot), format!("{:02}:50", 8 + slot), group as i64 + 1],
                        )
                        .expect("lesson");
                    let mut insert = transaction
                        .prepare_cached(
                            "INSERT INTO attendance_events (lesson_id, student_iin, status, method, recorded_at, prev_hash, row_hash)
                             VALUES (?1, ?2, 'present', ?3, 0, zeroblob(32), zeroblob(32))",
                        )
                        .expect("prepare");
                    for (index, iin) in members.iter().enumerate() {
                        let method = if (index + slot) % 3 == 0 {
                            "manual"
                        } else {
                            "qr_phone"
                        };
                        insert
                            .execute(rusqlite::params![lesson_id, iin, method])
                            .expect("mark");
                    }
                }
            }
        }
        transaction.commit().expect("commit");
    }
    let marks: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM attendance_events", [], |row| {
            row.get(0)
        })
        .expect("count");
    println!(
        "seeded {} students, {marks} marks in {:.1} s",
        GROUPS * STUDENTS_PER_GROUP,
        started.elapsed().as_secs_f64()
    );

    let rules = CoverageRules {
        student_qr_share: PerMille::from_fraction(0.5).expect("share"),
        min_coverage: PerMille::from_fraction(0.5).expect("share"),
        typed_code_counts_as_qr: true,
    };
    // Baseline: one pass over the month's marks with the same join, no per-lesson "latest".
    let baseline_started = Instant::now();
    let scanned: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
             WHERE l.date BETWEEN '2026-11-01' AND '2026-11-30' AND e.status = 'present'",
            [],
            |row| row.get(0),
        )
        .expect("scan");
    let baseline = baseline_started.elapsed();
    let mut timings = Vec::new();
    let mut report = None;
    for _ in 0..3 {
        let run_started = Instant::now();
        report =
            Some(coverage_for_month(store.connection(), month, None, &rules).expect("coverage"));
        timings.push(run_started.elapsed());
    }
    timings.sort();
    let report = report.expect("report");
    println!(
        "baseline scan of {scanned} marks: {:.3} s",
        baseline.as_secs_f64()
    );
    // One group's month: what the manual-mark gate computes on the writer thread.
    let group_started = Instant::now();
    let _ = coverage_for_month(store.connection(), month, Some("G-000"), &rules).expect("group");
    let group = group_started.elapsed();
    println!(
        "one group's month (manual-mark gate): {:.4} s ({:.2}x the scan)",
        group.as_secs_f64(),
        group.as_secs_f64() / baseline.as_secs_f64()
    );
    // The dashboard adds the weekly trend (one coverage pass per week so far) to the
    // month's coverage; red flags are left out here (they need lesson openings).
    let today = Date::new(2026, 11, 30).expect("date");
    let dashboard_started = Instant::now();
    let _ = coverage_for_month(store.connection(), month, None, &rules).expect("coverage");
    let trend = weekly_trend(store.connection(), month, today, &rules).expect("trend");
    let dashboard = dashboard_started.elapsed();
    println!(
        "dashboard figures (coverage + {}-week trend): {:.3} s ({:.1}x the scan)",
        trend.weeks.len(),
        dashboard.as_secs_f64(),
        dashboard.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "coverage of {month}: median of 3 runs {:.3} s ({:.1}x the scan); college {}/{} tracked",
        timings[1].as_secs_f64(),
        timings[1].as_secs_f64() / baseline.as_secs_f64(),
        report.college.qr_tracked,
        report.college.beneficiaries
    );
}
