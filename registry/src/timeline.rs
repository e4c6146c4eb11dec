//! Timeline rules applied to every batch as it is received: what an honest agent's
//! evidence cannot look like. Each hit is a finding (kind, college, month, the record ids
//! as evidence); the batch is still stored, because a finding is for a person to judge.

use crate::db::{params, Db, DbResult, ToValue, Value};
use kasip_core::batch::{AttendanceRecord, BatchEnvelope, BatchKind};
use kasip_core::chain::EntryKind;

/// A batch created this far ahead of the registry's clock was sealed on a wrong clock.
pub const MAX_CREATED_AHEAD_SECS: i64 = 300;
/// A mark stamped this long before the previous attendance batch was sealed was not in
/// the log when that batch was made: it was entered later with an earlier time.
pub const BACKFILL_TOLERANCE_SECS: i64 = 60;
/// A kiosk scan that reached the agent this long after it was made.
pub const LATE_KIOSK_SCAN_SECS: i64 = 2 * 3600;
/// A lesson's window, nationally: it opens at most this long before its start (the
/// agent's `lesson.open_early_mins` is at most 15) ...
pub const WINDOW_OPENS_EARLY_SECS: i64 = 15 * 60;
/// ... and takes live marks at most this long after its end, whatever a college's own
/// grace; later, only an admin's `late_entry` (with a reason) may mark it.
pub const WINDOW_GRACE_SECS: i64 = 60 * 60;

/// One finding before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    /// `YYYY-MM` the evidence belongs to, when it names one.
    pub month: Option<String>,
    pub detail: String,
    /// Record ids (or batch seqs) a person can look up.
    pub evidence: Vec<u64>,
}

/// The rules for one received batch, in the receiving transaction (so a refused batch
/// leaves no finding of its own): each hit is stored and returned.
pub fn check(
    transaction: &Db,
    agent: &str,
    bin: &str,
    envelope: &BatchEnvelope,
    records: &[AttendanceRecord],
    now: i64,
) -> DbResult<Vec<Finding>> {
    let mut findings = Vec::new();
    let previous: Option<(u64, i64)> = transaction.query_opt(
        "SELECT seq, created FROM batch_times WHERE agent = ?1 ORDER BY seq DESC LIMIT 1",
        params![agent],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    if let Some((seq, created)) = previous {
        if envelope.created < created {
            findings.push(Finding {
                kind: "batch_created_not_monotone",
                month: None,
                detail: format!(
                    "batch {} was created {} s before batch {seq}, which it follows: the agent's clock went back",
                    envelope.seq,
                    created - envelope.created
                ),
                evidence: vec![seq, envelope.seq],
            });
        }
    }
    if envelope.created > now + MAX_CREATED_AHEAD_SECS {
        findings.push(Finding {
            kind: "batch_created_ahead",
            month: None,
            detail: format!(
                "batch {} was created {} s ahead of the registry's clock",
                envelope.seq,
                envelope.created - now
            ),
            evidence: vec![envelope.seq],
        });
    }
    if envelope.kind == BatchKind::Attendance {
        let previous_attendance = previous_sealing_pass(transaction, agent, envelope.created)?;
        let closed: Vec<String> = transaction.query(
            match transaction.engine() {
                crate::db::Engine::Sqlite => {
                    "SELECT DISTINCT json_extract(body, '$.month') FROM records
                     WHERE bin = ?1 AND kind = 'month_close'"
                }
                // A statement's partition is the month it closes.
                crate::db::Engine::Postgres => {
                    "SELECT DISTINCT month FROM records WHERE bin = ?1 AND kind = 'month_close'"
                }
            },
            params![bin],
            |row| row.get(0),
        )?;
        let zone: String = transaction.query_one(
            "SELECT timezone FROM colleges WHERE bin = ?1",
            params![bin],
            |row| row.get(0),
        )?;
        let offset = kasip_core::CollegeTimezone::parse(&zone)
            .map(|zone| zone.offset_seconds())
            .unwrap_or(5 * 3600);
        let mut outside_window = Vec::new();
        let mut backfilled = Vec::new();
        let mut late_scans = Vec::new();
        let mut unexplained = Vec::new();
        let mut after_close: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for record in records {
            let month = record.date.get(..7).unwrap_or_default().to_owned();
            if let Some(sealed) = previous_attendance {
                if record.method != "qr_kiosk"
                    && record.recorded_at < sealed - BACKFILL_TOLERANCE_SECS
                {
                    backfilled.push(record.id);
                }
            }
            if let Some((opens, closes)) = window(record, offset) {
                if record.method != "late_entry"
                    && (record.recorded_at < opens || record.recorded_at > closes)
                {
                    outside_window.push(record.id);
                }
            }
            // A late entry names who made it and why; a hand-made adjustment, who.
            let blank =
                |text: &Option<String>| text.as_deref().is_none_or(|text| text.trim().is_empty());
            let adjustment = record
                .evidence
                .as_ref()
                .is_some_and(|evidence| evidence.entry == EntryKind::Adjustment);
            if (record.method == "late_entry"
                && (blank(&record.reason) || blank(&record.marked_by)))
                || (adjustment && record.method == "manual" && blank(&record.marked_by))
            {
                unexplained.push(record.id);
            }
            if let Some(evidence) = &record.evidence {
                if let (Some(scanned), Some(received)) = (evidence.scanned_at, evidence.received_at)
                {
                    if received - scanned > LATE_KIOSK_SCAN_SECS {
                        late_scans.push(record.id);
                    }
                }
                if closed.contains(&month) && evidence.entry != EntryKind::Adjustment {
                    after_close.entry(month).or_default().push(record.id);
                }
            }
        }
        if !backfilled.is_empty() {
            findings.push(Finding {
                kind: "backfilled_mark",
                month: records.first().map(|record| record.date.chars().take(7).collect()),
                detail: format!(
                    "{} mark(s) stamped before the previous attendance batch was sealed, yet not in it: entered later with an earlier time",
                    backfilled.len()
                ),
                evidence: backfilled,
            });
        }
        if transaction.engine() == crate::db::Engine::Sqlite {
            findings.extend(across_colleges(transaction, bin, records)?);
        }
        if !outside_window.is_empty() {
            findings.push(Finding {
                kind: "mark_outside_window",
                month: records.first().map(|record| record.date.chars().take(7).collect()),
                detail: format!(
                    "{} mark(s) stamped outside their lesson's window ({} min before its start to {} min after its end), and not late entries",
                    outside_window.len(),
                    WINDOW_OPENS_EARLY_SECS / 60,
                    WINDOW_GRACE_SECS / 60
                ),
                evidence: outside_window,
            });
        }
        if !unexplained.is_empty() {
            findings.push(Finding {
                kind: "entry_without_reason",
                month: records
                    .first()
                    .map(|record| record.date.chars().take(7).collect()),
                detail: format!(
                    "{} late entr(ies) or adjustment(s) name no reason or no one who made them",
                    unexplained.len()
                ),
                evidence: unexplained,
            });
        }
        if !late_scans.is_empty() {
            findings.push(Finding {
                kind: "late_kiosk_scan",
                month: None,
                detail: format!(
                    "{} kiosk scan(s) reached the agent more than {} h after they were made",
                    late_scans.len(),
                    LATE_KIOSK_SCAN_SECS / 3600
                ),
                evidence: late_scans,
            });
        }
        for (month, ids) in after_close {
            findings.push(Finding {
                kind: "mark_after_statement",
                detail: format!(
                    "{} mark(s) for {month}, whose statement was signed, are not filed as adjustments",
                    ids.len()
                ),
                month: Some(month),
                evidence: ids,
            });
        }
    }
    if envelope.kind == BatchKind::MonthClose {
        findings.extend(loosened_statements(transaction, envelope)?);
    }
    transaction.execute(
        "INSERT INTO batch_times (agent, seq, created) VALUES (?1, ?2, ?3)",
        params![agent, envelope.seq, envelope.created],
    )?;
    for finding in &findings {
        record(transaction, agent, bin, finding, now)?;
    }
    Ok(findings)
}

/// When the agent's previous sealing pass made its attendance batches. A pass seals a
/// backlog into consecutive attendance batches of one `created` time, holding older marks
/// than the first: those batches are this one's pass, not the previous.
fn previous_sealing_pass(transaction: &Db, agent: &str, created: i64) -> DbResult<Option<i64>> {
    let mut in_this_pass = true;
    let mut previous = None;
    transaction.for_each(
        "SELECT t.created, b.kind = 'attendance' FROM batch_times t
         JOIN batches b ON b.agent = t.agent AND b.seq = t.seq
         WHERE t.agent = ?1 ORDER BY t.seq DESC",
        params![agent],
        |row| {
            let (at, attendance): (i64, bool) = (row.get(0)?, row.get(1)?);
            if in_this_pass && attendance && at == created {
                return Ok(true);
            }
            in_this_pass = false;
            if attendance {
                previous = Some(at);
                return Ok(false);
            }
            Ok(true)
        },
    )?;
    Ok(previous)
}

/// What one college's records cannot show alone: the same student present at another
/// college on the same day, and the same phone checking in for another college.
///
/// On SQLite this runs in the batch's own transaction (one writer at a time). On
/// PostgreSQL, where another process may be storing another college's batch at the same
/// moment, it runs after the batch's commit (`RegistryStore::check_across_colleges`):
/// of two colleges' batches naming one student, the one that commits last then sees the
/// other's committed presence, whatever the interleaving, and no lock spans colleges.
pub fn across_colleges(
    transaction: &Db,
    bin: &str,
    records: &[AttendanceRecord],
) -> DbResult<Vec<Finding>> {
    let mut findings = Vec::new();
    // The first record of each student's day present, and of each phone, in the batch:
    // a day's six lessons would otherwise ask six times. Written together, and looked up
    // as each engine does it best.
    let mut days_seen: std::collections::HashSet<(&str, &str)> = Default::default();
    let days: Vec<&AttendanceRecord> = records
        .iter()
        .filter(|record| matches!(record.status.as_str(), "present" | "late"))
        .filter(|record| days_seen.insert((record.student_iin.as_str(), record.date.as_str())))
        .collect();
    // Phones only: a kiosk's id is local to its college.
    let mut phones_seen: std::collections::HashSet<&str> = Default::default();
    let phones: Vec<(&str, u64)> = records
        .iter()
        .filter(|record| matches!(record.method.as_str(), "qr_phone" | "qr_typed"))
        .filter_map(|record| Some((record.device.as_deref()?, record.id)))
        .filter(|(device, _)| phones_seen.insert(device))
        .collect();
    let rows: Vec<Vec<Value<'_>>> = days
        .iter()
        .map(|record| {
            vec![
                record.student_iin.value(),
                record.date.value(),
                bin.value(),
                record.id.value(),
            ]
        })
        .collect();
    transaction.insert_rows(
        "INSERT INTO presence (student_iin, date, bin, record_id)",
        "ON CONFLICT DO NOTHING",
        &rows,
    )?;
    let rows: Vec<Vec<Value<'_>>> = phones
        .iter()
        .map(|(device, id)| vec![device.value(), bin.value(), id.value()])
        .collect();
    transaction.insert_rows(
        "INSERT INTO devices_seen (device, bin, record_id)",
        "ON CONFLICT DO NOTHING",
        &rows,
    )?;
    let (day_elsewhere, phone_elsewhere) = match transaction.engine() {
        crate::db::Engine::Sqlite => elsewhere_listed(transaction, bin, &days, &phones)?,
        crate::db::Engine::Postgres => elsewhere_unnested(transaction, bin, &days, &phones)?,
    };
    let mut two_places: std::collections::BTreeMap<(String, String), (String, Vec<u64>)> =
        Default::default();
    for record in days {
        let key = (record.student_iin.clone(), record.date.clone());
        if let Some(other) = day_elsewhere.get(&key) {
            two_places
                .entry(key)
                .or_insert_with(|| (other.clone(), Vec::new()))
                .1
                .push(record.id);
        }
    }
    let mut two_colleges: std::collections::BTreeMap<String, (String, Vec<u64>)> =
        Default::default();
    for (device, id) in phones {
        if let Some(other) = phone_elsewhere.get(device) {
            two_colleges
                .entry(device.to_owned())
                .or_insert_with(|| (other.clone(), Vec::new()))
                .1
                .push(id);
        }
    }
    for ((student, date), (other, ids)) in two_places {
        findings.push(Finding {
            kind: "present_at_two_colleges",
            month: Some(date.chars().take(7).collect()),
            detail: format!("{student} is marked present on {date} here and at college {other}"),
            evidence: ids,
        });
    }
    for (device, (other, ids)) in two_colleges {
        findings.push(Finding {
            kind: "device_at_two_colleges",
            month: None,
            detail: format!(
                "phone {} checked in for this college and for college {other}",
                device.chars().take(12).collect::<String>()
            ),
            evidence: ids,
        });
    }
    Ok(findings)
}

/// The lesson's window in Unix seconds, from its local date, start and end (format 2).
fn window(record: &AttendanceRecord, offset_seconds: i64) -> Option<(i64, i64)> {
    let date = kasip_core::Date::parse(&record.date).ok()?;
    let start = kasip_core::TimeOfDay::parse(&record.start).ok()?;
    let end = kasip_core::TimeOfDay::parse(record.end.as_deref()?).ok()?;
    let at = |time: kasip_core::TimeOfDay| {
        date.days_since_epoch() * 86_400 + i64::from(time.minutes_after_midnight()) * 60
            - offset_seconds
    };
    Some((
        at(start) - WINDOW_OPENS_EARLY_SECS,
        at(end) + WINDOW_GRACE_SECS,
    ))
}

/// Student-days and phones of `days` and `phones` seen at another college than `bin`,
/// with that college.
type Elsewhere = (
    std::collections::HashMap<(String, String), String>,
    std::collections::HashMap<String, String>,
);

/// `Elsewhere` in SQLite: one cached lookup per student-day and per phone, in-process.
fn elsewhere_listed(
    transaction: &Db,
    bin: &str,
    days: &[&AttendanceRecord],
    phones: &[(&str, u64)],
) -> DbResult<Elsewhere> {
    let mut day_elsewhere = std::collections::HashMap::new();
    for record in days {
        if let Some(other) = transaction.query_opt(
            "SELECT bin FROM presence WHERE student_iin = ?1 AND date = ?2 AND bin != ?3
             LIMIT 1",
            params![record.student_iin, record.date, bin],
            |row| row.get::<String>(0),
        )? {
            day_elsewhere.insert((record.student_iin.clone(), record.date.clone()), other);
        }
    }
    let mut phone_elsewhere = std::collections::HashMap::new();
    for (device, _) in phones {
        if let Some(other) = transaction.query_opt(
            "SELECT bin FROM devices_seen WHERE device = ?1 AND bin != ?2 LIMIT 1",
            params![device, bin],
            |row| row.get::<String>(0),
        )? {
            phone_elsewhere.insert((*device).to_owned(), other);
        }
    }
    Ok((day_elsewhere, phone_elsewhere))
}

/// `Elsewhere` in PostgreSQL: the batch's students and phones as arrays, one prepared
/// statement each whatever their number.
fn elsewhere_unnested(
    transaction: &Db,
    bin: &str,
    days: &[&AttendanceRecord],
    phones: &[(&str, u64)],
) -> DbResult<Elsewhere> {
    let iins: Vec<&str> = days
        .iter()
        .map(|record| record.student_iin.as_str())
        .collect();
    let dates: Vec<&str> = days.iter().map(|record| record.date.as_str()).collect();
    let day_elsewhere = transaction
        .query(
            // One index probe per student-day (a join over the arrays was planned as a
            // scan of the whole table once the statement was prepared).
            "SELECT iin, date, other FROM (
                 SELECT q.iin, q.date,
                        (SELECT MIN(p.bin) FROM presence p
                         WHERE p.student_iin = q.iin AND p.date = q.date AND p.bin <> ?1) AS other
                 FROM UNNEST(CAST(?2 AS text[]), CAST(?3 AS text[])) AS q(iin, date)
             ) AS found WHERE other IS NOT NULL",
            params![bin, iins, dates],
            |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)),
        )?
        .into_iter()
        .collect();
    let devices: Vec<&str> = phones.iter().map(|(device, _)| *device).collect();
    let phone_elsewhere = transaction
        .query(
            "SELECT device, other FROM (
                 SELECT q.device,
                        (SELECT MIN(d.bin) FROM devices_seen d
                         WHERE d.device = q.device AND d.bin <> ?1) AS other
                 FROM UNNEST(CAST(?2 AS text[])) AS q(device)
             ) AS found WHERE other IS NOT NULL",
            params![bin, devices],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?
        .into_iter()
        .collect();
    Ok((day_elsewhere, phone_elsewhere))
}

/// Statements judged by thresholds looser than the national policy the registry serves:
/// a college may only be stricter.
fn loosened_statements(transaction: &Db, envelope: &BatchEnvelope) -> DbResult<Vec<Finding>> {
    use base64::Engine;
    let (min_coverage, student_qr_share, typed): (u64, u64, bool) = transaction.query_one(
        "SELECT min_coverage, student_qr_share, typed_counts_as_qr FROM policy WHERE id = 1",
        params![],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let mut findings = Vec::new();
    for record in &envelope.records {
        let Ok(record) = record.parse::<kasip_core::batch::MonthCloseRecord>() else {
            continue;
        };
        let id = record.id;
        // The batch is the agent's signed word; the statement inside is its payload.
        let statement: Option<serde_json::Value> = record
            .statement
            .split('.')
            .nth(1)
            .and_then(|payload| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .ok()
            })
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let Some(statement) = statement else {
            continue;
        };
        let stated = |name: &str| statement[name].as_u64();
        let looser = stated("min_coverage_per_mille").is_some_and(|value| value < min_coverage)
            || stated("student_qr_share_per_mille").is_some_and(|value| value < student_qr_share)
            || (!typed && statement["typed_code_counts_as_qr"] == serde_json::Value::Bool(true));
        if looser {
            findings.push(Finding {
                kind: "statement_loosened",
                month: statement["month"].as_str().map(str::to_owned),
                detail: format!(
                    "the statement was judged with coverage ≥ {}‰ and a QR share ≥ {}‰; the national policy is {min_coverage}‰ and {student_qr_share}‰{}",
                    stated("min_coverage_per_mille").unwrap_or_default(),
                    stated("student_qr_share_per_mille").unwrap_or_default(),
                    if typed { "" } else { ", typed codes not counted as QR" }
                ),
                evidence: vec![id],
            });
        }
    }
    Ok(findings)
}

/// The kind of record a finding's evidence ids name.
pub fn evidence_kind(finding_kind: &str) -> Option<&'static str> {
    match finding_kind {
        "binding_burst" => Some("bindings"),
        "statement_disagrees" | "statement_loosened" => Some("month_close"),
        // Batch seqs, or nothing a record names.
        "batch_created_not_monotone"
        | "batch_created_ahead"
        | "chain_break"
        | "agent_reported_break"
        | "heartbeat_contradicts_records" => None,
        _ => Some("attendance"),
    }
}

/// How grave a finding is, by its kind: `critical` — history was rewritten or the agent
/// says its log broke; `high` — evidence that a mark, a statement or a student is not
/// what the college says; `medium` — a pattern a person should look at.
pub fn severity(kind: &str) -> &'static str {
    match kind {
        "chain_break" | "agent_reported_break" | "heartbeat_contradicts_records" => "critical",
        "statement_disagrees"
        | "statement_loosened"
        | "present_at_two_colleges"
        | "device_at_two_colleges"
        | "batch_created_not_monotone"
        | "backfilled_mark"
        | "mark_after_statement" => "high",
        _ => "medium",
    }
}

/// Stores a finding, once: the same finding seen again (a re-run audit, a batch retried)
/// keeps its first sighting and its status history.
pub fn record(
    connection: &Db,
    agent: &str,
    bin: &str,
    finding: &Finding,
    now: i64,
) -> DbResult<bool> {
    let evidence = finding
        .evidence
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let inserted = connection.execute(
        "INSERT INTO findings (agent, bin, kind, month, detail, evidence, at)
             SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS TEXT),
                    CAST(?5 AS TEXT), CAST(?6 AS TEXT), CAST(?7 AS BIGINT)
             WHERE NOT EXISTS (SELECT 1 FROM findings WHERE bin = ?2 AND kind = ?3
                               AND month IS NOT DISTINCT FROM ?4 AND detail = ?5
                               AND evidence = ?6)",
        params![
            agent,
            bin,
            finding.kind,
            finding.month,
            finding.detail,
            evidence,
            now
        ],
    )?;
    if inserted == 1 {
        tracing::warn!(agent, kind = finding.kind, detail = %finding.detail, "finding");
    }
    Ok(inserted == 1)
}
