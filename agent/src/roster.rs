//! What the college's roster holds, counted for `status`, the teacher page and metrics.

use kasip_core::Date;
use serde::Serialize;

use crate::error::AgentError;
use crate::store::Store;

/// Counts of what the database holds.
#[derive(Debug, Serialize)]
pub struct RosterCounts {
    pub sites: i64,
    pub groups: i64,
    pub students: i64,
    pub beneficiaries: i64,
    pub teachers: i64,
    pub lessons: i64,
    pub lessons_today: i64,
    pub contingent_events: i64,
}

impl RosterCounts {
    pub fn read(store: &Store, today: Date) -> Result<Self, AgentError> {
        let count = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<i64, AgentError> {
            store
                .connection()
                .query_row(sql, params, |row| row.get(0))
                .map_err(|source| AgentError::from(store.error(source)))
        };
        Ok(Self {
            sites: count("SELECT COUNT(*) FROM sites", &[])?,
            groups: count("SELECT COUNT(*) FROM study_groups", &[])?,
            students: count("SELECT COUNT(*) FROM students", &[])?,
            beneficiaries: count(
                "SELECT COUNT(*) FROM students WHERE beneficiary = 1
                 AND status NOT IN ('expelled', 'deceased')",
                &[],
            )?,
            teachers: count("SELECT COUNT(*) FROM teachers", &[])?,
            lessons: count("SELECT COUNT(*) FROM lessons", &[])?,
            lessons_today: count(
                "SELECT COUNT(*) FROM lessons WHERE date = ?1",
                &[&today.to_string()],
            )?,
            contingent_events: count("SELECT COUNT(*) FROM contingent_events", &[])?,
        })
    }
}

/// The active students of the group `group_code` as (IIN, "Last First"), by name.
/// Students whose name (either order) or IIN contains `query`, case-insensitive in any
/// script, at most `limit`: (IIN, name, group). Matched here, not in SQL: SQLite's
/// `lower` and `LIKE` fold ASCII only, and a college's roster is small.
pub fn search_students(
    connection: &rusqlite::Connection,
    query: &str,
    limit: usize,
) -> rusqlite::Result<Vec<(String, String, String)>> {
    let wanted = query.trim().to_lowercase();
    let mut statement = connection.prepare_cached(
        "SELECT s.iin, s.last_name, s.first_name, g.code
         FROM students s JOIN study_groups g ON g.id = s.group_id
         ORDER BY s.last_name, s.first_name",
    )?;
    let mut rows = statement.query([])?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        let (iin, last, first, group): (String, String, String, String) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let name = format!("{last} {first}");
        if iin.contains(&wanted)
            || name.to_lowercase().contains(&wanted)
            || format!("{first} {last}").to_lowercase().contains(&wanted)
        {
            found.push((iin, name, group));
            if found.len() == limit {
                break;
            }
        }
    }
    Ok(found)
}

/// Whether a study group with this code exists.
pub fn group_exists(connection: &rusqlite::Connection, group_code: &str) -> rusqlite::Result<bool> {
    connection
        .prepare_cached("SELECT COUNT(*) > 0 FROM study_groups WHERE code = ?1")?
        .query_row([group_code], |row| row.get(0))
}

pub fn active_students_of_group(
    connection: &rusqlite::Connection,
    group_code: &str,
) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = connection.prepare_cached(
        "SELECT s.iin, s.last_name || ' ' || s.first_name FROM students s JOIN study_groups g ON g.id = s.group_id
         WHERE g.code = ?1 AND s.status = 'active' ORDER BY s.last_name, s.first_name",
    )?;
    let rows = statement.query_map([group_code], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}
