#![allow(dead_code)] // shared by several benches, each using a part
//! A month of marks for a 5,000-student college (≈ 630,000 marks), shared by the
//! coverage and sync benches: 200 groups of 25, six lessons on each working day, one
//! mark per student per lesson (a third by hand), written straight into the tables (the
//! marks through the chain writer, so the chain verifies).

use kasip_agent::attendance::{ChainWriter, NewMark};
use kasip_agent::store::Store;
use kasip_core::chain::{EntryKind, MarkEvidence};
use kasip_core::{Date, Iin, MarkMethod, MarkStatus, Month, Sex};

pub const GROUPS: usize = 200;
pub const STUDENTS_PER_GROUP: usize = 25;
pub const STUDENTS: usize = GROUPS * STUDENTS_PER_GROUP;
const LESSONS_PER_DAY: usize = 6;

pub fn seed(store: &mut Store, month: Month) {
    seed_groups(store, month, GROUPS);
}

/// `seed` with `groups` groups of `STUDENTS_PER_GROUP` (the dashboard's scale bench).
pub fn seed_groups(store: &mut Store, month: Month, groups: usize) {
    let working_days: Vec<Date> = (0..30)
        .map(|offset| month.first_day().add_days(offset))
        .filter(|day| day.iso_weekday() <= 5)
        .collect();
    {
        let transaction = store.connection_mut().transaction().expect("tx");
        // Through the chain writer: sealing verifies the chain before it signs anything.
        let mut chain = ChainWriter::read_head(&transaction).expect("chain head");
        transaction
            .execute("INSERT INTO teachers (iin, last_name, first_name) VALUES ('850515400012', 'T', 'T')", [])
            .expect("teacher");
        let birth = Date::new(2006, 3, 15).expect("date");
        let mut serial = 0u16;
        let mut iins = Vec::new();
        while iins.len() < groups * STUDENTS_PER_GROUP {
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
        for group in 0..groups {
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
                    for (index, iin) in members.iter().enumerate() {
                        let manual = (index + slot) % 3 == 0;
                        let mark = NewMark {
                            lesson_id,
                            student_iin: Iin::parse(iin).expect("iin"),
                            status: MarkStatus::Present,
                            method: if manual {
                                MarkMethod::Manual
                            } else {
                                MarkMethod::QrPhone
                            },
                            recorded_at: 0,
                            device_id: None,
                            token_step: (!manual).then_some(0),
                            marked_by: manual.then(|| "bench".to_owned()),
                            reason: None,
                            corrects: None,
                            // A phone mark names its binding, what it presented and its
                            // signature (placeholders: the registry checks their presence).
                            evidence: if manual {
                                MarkEvidence::of(EntryKind::Live)
                            } else {
                                MarkEvidence {
                                    binding: Some(1),
                                    presented: Some("bench".into()),
                                    device_signature: Some("bench".into()),
                                    ..MarkEvidence::of(EntryKind::Live)
                                }
                            },
                        };
                        chain.append(&transaction, &mark).expect("mark");
                    }
                }
            }
        }
        transaction.commit().expect("commit");
    }
}
