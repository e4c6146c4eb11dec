//! Security events: every refusal that may be an attack (a forged or stale token, a wrong
//! binding code, a failed sign-in) is a row here, written through `record` alone, in the
//! transaction of the decision it explains.

use rusqlite::Connection;

/// One event as it is stored; `kind` is a stable code the dashboard translates.
#[derive(Debug, Clone, Default)]
pub struct SecurityEvent<'a> {
    pub kind: &'a str,
    pub lesson_id: Option<i64>,
    pub student_iin: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub detail: &'a str,
}

/// Stores `event` at `at`.
pub fn record(connection: &Connection, at: i64, event: &SecurityEvent<'_>) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO security_events (at, kind, lesson_id, student_iin, device_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(rusqlite::params![
            at,
            event.kind,
            event.lesson_id,
            event.student_iin,
            event.device_id,
            event.detail,
        ])?;
    Ok(())
}

/// One stored event as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEvent {
    pub at: i64,
    pub kind: String,
    pub student_iin: String,
}

/// The newest `limit` events, newest first.
pub fn recent(connection: &Connection, limit: i64) -> rusqlite::Result<Vec<RecentEvent>> {
    let mut statement = connection.prepare_cached(
        "SELECT at, kind, COALESCE(student_iin, '') FROM security_events ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = statement.query_map([limit], |row| {
        Ok(RecentEvent {
            at: row.get(0)?,
            kind: row.get(1)?,
            student_iin: row.get(2)?,
        })
    })?;
    rows.collect()
}

/// How many events of each kind were recorded (for `/metrics`).
pub fn counts_by_kind(connection: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut statement =
        connection.prepare_cached("SELECT kind, COUNT(*) FROM security_events GROUP BY kind")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}
