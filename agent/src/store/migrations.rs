//! Schema migrations, oldest first. A released migration is never edited: add a new one.
//!
//! Every released version has a fixture database under `agent/tests/fixtures/` and a test
//! that upgrades it with all its rows.

/// One step from `version - 1` to `version`.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "roster",
        sql: r#"
CREATE TABLE sites (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    address     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE study_groups (
    id          INTEGER PRIMARY KEY,
    code        TEXT NOT NULL UNIQUE
);
CREATE TABLE students (
    iin         TEXT PRIMARY KEY,
    last_name   TEXT NOT NULL,
    first_name  TEXT NOT NULL,
    middle_name TEXT NOT NULL DEFAULT '',
    group_id    INTEGER NOT NULL REFERENCES study_groups(id),
    beneficiary INTEGER NOT NULL CHECK (beneficiary IN (0, 1)),
    status      TEXT NOT NULL CHECK (status IN ('active', 'academic_leave', 'expelled', 'deceased')),
    status_date TEXT
);
CREATE INDEX students_by_group ON students(group_id);
CREATE TABLE teachers (
    iin         TEXT PRIMARY KEY,
    last_name   TEXT NOT NULL,
    first_name  TEXT NOT NULL,
    middle_name TEXT NOT NULL DEFAULT ''
);
CREATE TABLE lessons (
    id          INTEGER PRIMARY KEY,
    date        TEXT NOT NULL,
    start_time  TEXT NOT NULL,
    end_time    TEXT NOT NULL,
    group_id    INTEGER NOT NULL REFERENCES study_groups(id),
    discipline  TEXT NOT NULL,
    teacher_iin TEXT NOT NULL REFERENCES teachers(iin),
    site_id     INTEGER REFERENCES sites(id),
    room        TEXT NOT NULL DEFAULT '',
    mode        TEXT NOT NULL CHECK (mode IN ('offline', 'online')),
    UNIQUE (date, start_time, group_id)
);
CREATE INDEX lessons_by_teacher_date ON lessons(teacher_iin, date);
"#,
    },
    Migration {
        version: 2,
        description: "contingent events",
        sql: r#"
-- Append-only: a status change is a new row, never an update. The sync outbox reads
-- these in id order.
CREATE TABLE contingent_events (
    id              INTEGER PRIMARY KEY,
    student_iin     TEXT NOT NULL REFERENCES students(iin),
    change          TEXT NOT NULL CHECK (change IN ('enrolled', 'status')),
    status          TEXT NOT NULL,
    previous_status TEXT,
    effective_date  TEXT NOT NULL,
    recorded_at     INTEGER NOT NULL,
    source          TEXT NOT NULL
);
CREATE TRIGGER contingent_events_no_update BEFORE UPDATE ON contingent_events
BEGIN SELECT RAISE(ABORT, 'contingent events are append-only'); END;
CREATE TRIGGER contingent_events_no_delete BEFORE DELETE ON contingent_events
BEGIN SELECT RAISE(ABORT, 'contingent events are append-only'); END;
"#,
    },
];

/// The schema version this build writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_from_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                migration.version,
                index as i64 + 1,
                "{}",
                migration.description
            );
        }
    }
}
