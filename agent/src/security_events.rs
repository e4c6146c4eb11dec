//! Security events: every refusal that may be an attack (a forged or stale token, a wrong
//! binding code, a failed sign-in) is recorded here, through `record` alone, in the
//! transaction of the decision it explains. Events from a known client (the throttle's
//! address and device) are counted on one row per kind, target and `WINDOW_SECS`, so a
//! flood of guesses grows a number, not the database; old events go after
//! `security.events_keep_days` (`prune`).

use rusqlite::Connection;

/// One event as it is stored; `kind` is a stable code the dashboard translates.
#[derive(Debug, Clone, Default)]
pub struct SecurityEvent<'a> {
    pub kind: &'a str,
    pub lesson_id: Option<i64>,
    pub student_iin: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub detail: &'a str,
    /// Who tried, as the throttle counts them; None for events with no peer (kiosks).
    pub client: Option<&'a str>,
}

/// Events of one client, kind and target within this long share a row.
pub const WINDOW_SECS: i64 = 600;

/// Stores `event` at `at`: a new row, or one more on its client's row of the window.
pub fn record(connection: &Connection, at: i64, event: &SecurityEvent<'_>) -> rusqlite::Result<()> {
    if let Some(client) = event.client {
        let counted = connection
            .prepare_cached(
                "UPDATE security_events SET count = count + 1, last_at = ?1, detail = ?2
                 WHERE id = (SELECT id FROM security_events
                             WHERE client = ?3 AND kind = ?4 AND at > ?1 - ?5
                               AND lesson_id IS ?6 AND student_iin IS ?7 AND device_id IS ?8
                             ORDER BY id DESC LIMIT 1)",
            )?
            .execute(rusqlite::params![
                at,
                event.detail,
                client,
                event.kind,
                WINDOW_SECS,
                event.lesson_id,
                event.student_iin,
                event.device_id,
            ])?;
        if counted > 0 {
            return Ok(());
        }
    }
    connection
        .prepare_cached(
            "INSERT INTO security_events (at, last_at, kind, lesson_id, student_iin, device_id, detail, client)
             VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(rusqlite::params![
            at,
            event.kind,
            event.lesson_id,
            event.student_iin,
            event.device_id,
            event.detail,
            event.client,
        ])?;
    Ok(())
}

/// Deletes the events older than `keep_days` before `now`; returns how many rows went.
pub fn prune(connection: &Connection, now: i64, keep_days: u32) -> rusqlite::Result<usize> {
    connection.execute(
        "DELETE FROM security_events WHERE COALESCE(last_at, at) < ?1",
        [now - i64::from(keep_days) * 86_400],
    )
}

/// One stored event as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEvent {
    pub at: i64,
    pub kind: String,
    pub student_iin: String,
    /// The student's name, when the event names a student the roster knows.
    pub student_name: String,
    /// How many times it happened in its window (one row counts repeats).
    pub count: i64,
}

/// The newest `limit` events, newest first.
pub fn recent(connection: &Connection, limit: i64) -> rusqlite::Result<Vec<RecentEvent>> {
    let mut statement = connection.prepare_cached(
        "SELECT e.at, e.kind, COALESCE(e.student_iin, ''),
                COALESCE(s.last_name || ' ' || s.first_name, ''), e.count
         FROM security_events e LEFT JOIN students s ON s.iin = e.student_iin
         ORDER BY e.id DESC LIMIT ?1",
    )?;
    let rows = statement.query_map([limit], |row| {
        Ok(RecentEvent {
            at: row.get(0)?,
            kind: row.get(1)?,
            student_iin: row.get(2)?,
            student_name: row.get(3)?,
            count: row.get(4)?,
        })
    })?;
    rows.collect()
}

/// How many events of each kind were recorded (for `/metrics`).
pub fn counts_by_kind(connection: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut statement =
        connection.prepare_cached("SELECT kind, SUM(count) FROM security_events GROUP BY kind")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// A security event's kind as people read it; None for a kind this build does not name
/// (an older database), shown as its code.
pub fn kind_text(kind: &str) -> Option<kasip_core::Text> {
    use kasip_core::Text;
    // A kiosk's refusals are recorded as `kiosk_<code>`.
    Some(match kind.strip_prefix("kiosk_").unwrap_or(kind) {
        "malformed_token" => Text::EventMalformedToken,
        "forged_token" => Text::EventForgedToken,
        "stale_token" => Text::EventStaleToken,
        "lesson_not_open" => Text::EventLessonNotOpen,
        "not_in_group" => Text::EventNotInGroup,
        "device_not_bound" => Text::EventDeviceNotBound,
        "device_used_for_another_student" => Text::EventDeviceUsedForAnotherStudent,
        "student_inactive" => Text::EventStudentInactive,
        "device_unverified" => Text::EventDeviceUnverified,
        "passkey_invalid" => Text::EventPasskeyInvalid,
        "malformed_pass" => Text::EventMalformedPass,
        "unknown_student" => Text::EventUnknownStudent,
        "forged_pass" => Text::EventForgedPass,
        "stale_pass" => Text::EventStalePass,
        "pass_from_the_future" => Text::EventPassFromTheFuture,
        "replayed_pass" => Text::EventReplayedPass,
        "buffered_too_long" => Text::EventBufferedTooLong,
        "login_failed" => Text::EventLoginFailed,
        "binding_code_wrong" => Text::EventBindingCodeWrong,
        "typed_code_unknown" => Text::EventTypedCodeUnknown,
        _ => return None,
    })
}
