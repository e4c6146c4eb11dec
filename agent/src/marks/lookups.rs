//! What the mark writer looks up for every phone check-in, kept in memory between
//! groups: a lesson's opening, the binding a credential names, a student's group and
//! status.
//!
//! **Invariant**: nothing here outlives a commit by another connection. Each group starts
//! by reading `PRAGMA data_version` inside its write transaction (no one else can commit
//! until it ends); when another connection has committed since the last group — a lesson
//! opened or closed, a phone bound or revoked, a student imported or leaving — every
//! entry is dropped. The writer's own commits leave the version alone: it is the only one
//! that appends marks, and marks change none of these. A group that fails drops them too.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use crate::lessons::{LessonTimes, OpenLesson, Opening};

/// The active binding a credential names: (binding id, student, device).
pub(super) type Binding = (i64, String, String);

/// A student's group, status and name as the confirmation shows it.
pub(super) type Student = (i64, String, String);

#[derive(Default)]
pub struct Lookups {
    data_version: Option<i64>,
    openings: HashMap<i64, Option<Opening>>,
    bindings: HashMap<Vec<u8>, Option<Binding>>,
    students: HashMap<String, Option<Student>>,
}

/// Entries kept at most per kind: a college's students and phones fit many times over;
/// a flood of made-up credentials only empties the table, never grows it without end.
const MOST_ENTRIES: usize = 50_000;

fn remember<K: std::hash::Hash + Eq, V: Clone>(map: &mut HashMap<K, V>, key: K, value: V) -> V {
    if map.len() >= MOST_ENTRIES {
        map.clear();
    }
    map.insert(key, value.clone());
    value
}

impl Lookups {
    /// Drops every entry when another connection has committed since the last call.
    pub fn refresh(&mut self, connection: &Connection) -> rusqlite::Result<()> {
        let version: i64 = connection.query_row("PRAGMA data_version", [], |row| row.get(0))?;
        if self.data_version != Some(version) {
            self.forget();
            self.data_version = Some(version);
        }
        Ok(())
    }

    /// Drops every entry (a group that did not commit may have read what it rolled back).
    pub fn forget(&mut self) {
        *self = Self::default();
    }

    pub(super) fn open_lesson(
        &mut self,
        connection: &Connection,
        lesson_id: i64,
        now: i64,
        times: &LessonTimes,
    ) -> rusqlite::Result<Option<OpenLesson>> {
        let opening = match self.openings.get(&lesson_id) {
            Some(opening) => opening.clone(),
            None => remember(
                &mut self.openings,
                lesson_id,
                crate::lessons::opening(connection, lesson_id, times)?,
            ),
        };
        Ok(opening.and_then(|opening| opening.open_at(now)))
    }

    pub(super) fn binding(
        &mut self,
        connection: &Connection,
        credential_hash: &[u8],
    ) -> rusqlite::Result<Option<Binding>> {
        if let Some(binding) = self.bindings.get(credential_hash) {
            return Ok(binding.clone());
        }
        let binding = connection
            .prepare_cached(
                "SELECT id, student_iin, device_id FROM device_bindings
                 WHERE credential_hash = ?1 AND revoked_at IS NULL",
            )?
            .query_row([credential_hash], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        Ok(remember(
            &mut self.bindings,
            credential_hash.to_vec(),
            binding,
        ))
    }

    pub(super) fn student(
        &mut self,
        connection: &Connection,
        iin: &str,
    ) -> rusqlite::Result<Option<Student>> {
        if let Some(student) = self.students.get(iin) {
            return Ok(student.clone());
        }
        let student = connection
            .prepare_cached(
                "SELECT group_id, status, last_name || ' ' || first_name FROM students WHERE iin = ?1",
            )?
            .query_row([iin], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .optional()?;
        Ok(remember(&mut self.students, iin.to_owned(), student))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const IIN: &str = "060315500016";

    /// A student imported, then leaving, by another connection is seen by the next
    /// group; until another connection commits, the first answer is kept.
    #[test]
    fn what_another_connection_commits_is_seen_by_the_next_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        let writer = Store::create(&path).expect("create");
        let other = Store::open(&path).expect("open");
        let mut lookups = Lookups::default();
        lookups.refresh(writer.connection()).expect("refresh");
        assert_eq!(
            lookups.student(writer.connection(), IIN).expect("student"),
            None
        );

        other
            .connection()
            .execute_batch(&format!(
                "INSERT INTO study_groups (id, code) VALUES (1, 'ПО-21');
                 INSERT INTO students (iin, last_name, first_name, group_id, beneficiary, status)
                 VALUES ('{IIN}', 'Ахметова', 'Дана', 1, 1, 'active');"
            ))
            .expect("import");
        // Kept: the same group would still answer from memory...
        assert_eq!(
            lookups.student(writer.connection(), IIN).expect("student"),
            None
        );
        // ...but the next one starts by noticing the other connection's commit.
        lookups.refresh(writer.connection()).expect("refresh");
        let active = Some((1, "active".to_owned(), "Ахметова Дана".to_owned()));
        assert_eq!(
            lookups.student(writer.connection(), IIN).expect("student"),
            active
        );

        other
            .connection()
            .execute(
                "UPDATE students SET status = 'expelled' WHERE iin = ?1",
                [IIN],
            )
            .expect("leave");
        lookups.refresh(writer.connection()).expect("refresh");
        assert_eq!(
            lookups
                .student(writer.connection(), IIN)
                .expect("student")
                .map(|(_, status, _)| status),
            Some("expelled".to_owned())
        );
        // The writer's own commits change nothing it keeps, and do not empty it.
        writer
            .connection()
            .execute("UPDATE study_groups SET code = 'ПО-22' WHERE id = 1", [])
            .expect("own write");
        lookups.refresh(writer.connection()).expect("refresh");
        assert_eq!(lookups.students.len(), 1);
    }
}
