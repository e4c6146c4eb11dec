//! What the agent keeps of its link to the registry: the enrolment (the registry's URL,
//! its receipt key, the agent's id there), the bookkeeping of key rotations, and the
//! beneficiary list applied to the roster. The uploader (`sync`) and the CLI act through
//! these; they hold no SQL themselves.

use kasip_core::wire::BeneficiaryList;
use rusqlite::{Connection, OptionalExtension};
use serde_json::json;

use crate::error::AgentError;

/// The registry this agent is enrolled with.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub registry_url: String,
    pub registry_key: Vec<u8>,
}

pub fn enrolment(connection: &Connection) -> rusqlite::Result<Option<Enrolled>> {
    connection
        .query_row(
            "SELECT registry_url, registry_key FROM sync_enrolment",
            [],
            |row| {
                Ok(Enrolled {
                    registry_url: row.get(0)?,
                    registry_key: row.get(1)?,
                })
            },
        )
        .optional()
}

/// Records the enrolment: the registry's URL and receipt key, and the thumbprint the
/// agent enrolled with (its id at the registry, kept across key rotations).
pub fn store_enrolment(
    connection: &Connection,
    registry_url: &str,
    registry_key: &[u8],
    agent_id: &str,
    now: i64,
) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO sync_enrolment (id, registry_url, registry_key, enrolled_at) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET registry_url = excluded.registry_url,
             registry_key = excluded.registry_key, enrolled_at = excluded.enrolled_at",
        rusqlite::params![registry_url, registry_key, now],
    )?;
    connection.execute("UPDATE sync_enrolment SET agent_id = ?1", [agent_id])?;
    Ok(())
}

/// Batches sealed and not yet acknowledged by the registry.
pub fn unacknowledged_batches(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row(
        "SELECT COUNT(*) FROM outbox_batches WHERE acked_at IS NULL",
        [],
        |row| row.get(0),
    )
}

/// The key a started rotation announces, while the registry has not acknowledged it.
pub fn waiting_rotation(connection: &Connection) -> rusqlite::Result<Option<String>> {
    connection
        .query_row(
            "SELECT kid FROM key_rotations WHERE completed_at IS NULL",
            [],
            |row| row.get(0),
        )
        .optional()
}

/// Starts a rotation to `new_public_key`: the event the next batch announces. The agent's
/// id at the registry stays the key it enrolled with (`current_kid` when none is kept).
pub fn start_rotation(
    connection: &Connection,
    current_kid: &str,
    new_public_key: &[u8],
    new_kid: &str,
    now: i64,
) -> rusqlite::Result<()> {
    connection.execute(
        "UPDATE sync_enrolment SET agent_id = COALESCE(agent_id, ?1)",
        [current_kid],
    )?;
    connection.execute(
        "INSERT INTO key_rotations (public_key, kid, at) VALUES (?1, ?2, ?3)",
        rusqlite::params![new_public_key, new_kid, now],
    )?;
    Ok(())
}

/// The oldest rotation the registry has acknowledged and the agent has not finished:
/// (id, the new key's thumbprint).
pub fn acknowledged_rotation(connection: &Connection) -> rusqlite::Result<Option<(i64, String)>> {
    connection
        .query_row(
            "SELECT r.id, r.kid FROM key_rotations r
             WHERE r.completed_at IS NULL AND EXISTS (
                 SELECT 1 FROM outbox_batches b WHERE b.kind = 'key_rotation'
                 AND b.acked_at IS NOT NULL AND r.id BETWEEN b.first_id AND b.last_id)
             ORDER BY r.id LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
}

/// Marks rotation `id` done once the new key is installed.
pub fn complete_rotation(connection: &Connection, id: i64, now: i64) -> rusqlite::Result<()> {
    connection.execute(
        "UPDATE key_rotations SET completed_at = ?2 WHERE id = ?1",
        rusqlite::params![id, now],
    )?;
    Ok(())
}

/// Applies the registry's list: each listed student of the roster gets the registry's
/// flag and voucher status, each change logged; a roster beneficiary the registry does
/// not list stops being one; a listed student the roster lacks is reported, not invented.
pub fn apply_beneficiaries(
    connection: &mut Connection,
    list: &BeneficiaryList,
    now: i64,
) -> rusqlite::Result<Result<serde_json::Value, AgentError>> {
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let roster_beneficiaries: i64 = transaction.query_row(
        "SELECT COUNT(*) FROM students WHERE beneficiary = 1",
        [],
        |row| row.get(0),
    )?;
    if list.students.is_empty() && roster_beneficiaries > 0 {
        return Ok(Err(AgentError::Refused(format!(
            "the registry listed no students for {} while the roster has {roster_beneficiaries} beneficiaries; \
             nothing was changed (ask the registry whether its list is complete)",
            list.college_bin
        ))));
    }
    let mut unknown = Vec::new();
    let mut invalid = Vec::new();
    let mut changed = 0;
    let mut listed = std::collections::HashSet::new();
    let change = |iin: &str, before: (bool, String), after: (bool, &str)| -> rusqlite::Result<()> {
        transaction.execute(
            "INSERT INTO beneficiary_events (student_iin, beneficiary_before, beneficiary_after,
                 voucher_before, voucher_after, at, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'registry')",
            rusqlite::params![iin, before.0, after.0, before.1, after.1, now],
        )?;
        transaction.execute(
            "UPDATE students SET beneficiary = ?2, voucher = ?3 WHERE iin = ?1",
            rusqlite::params![iin, after.0, after.1],
        )?;
        Ok(())
    };
    for student in &list.students {
        let Ok(iin) = kasip_core::Iin::parse(&student.iin) else {
            invalid.push(student.iin.clone());
            continue;
        };
        let iin = iin.to_string();
        listed.insert(iin.clone());
        let current: Option<(bool, String)> = transaction
            .query_row(
                "SELECT beneficiary, voucher FROM students WHERE iin = ?1",
                [&iin],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let voucher: String = student.voucher.chars().take(64).collect();
        match current {
            None => unknown.push(iin),
            Some(before) if before.0 != student.beneficiary || before.1 != voucher => {
                change(&iin, before, (student.beneficiary, &voucher))?;
                changed += 1;
            }
            Some(_) => {}
        }
    }
    let unlisted: Vec<(String, String)> = transaction
        .prepare("SELECT iin, voucher FROM students WHERE beneficiary = 1")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (iin, voucher) in unlisted {
        if !listed.contains(&iin) {
            change(&iin, (true, voucher), (false, ""))?;
            changed += 1;
        }
    }
    let report = json!({
        "at": now,
        "listed": list.students.len(),
        "changed": changed,
        "unknown_to_roster": unknown,
        "invalid_iins": invalid,
    });
    transaction.execute(
        "UPDATE sync_state SET last_pull_at = ?1, pull_report = ?2",
        rusqlite::params![now, report.to_string()],
    )?;
    transaction.commit()?;
    if !unknown.is_empty() {
        tracing::warn!(
            count = unknown.len(),
            "the registry lists students the roster lacks; see `kasip-agent sync status`"
        );
    }
    Ok(Ok(report))
}

/// Keeps the registry's clock from its latest answer and the agent's when it arrived.
pub fn remember_registry_clock(
    connection: &Connection,
    registry_time: i64,
    agent_time: i64,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO registry_clock (id, registry_time, agent_time) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET registry_time = excluded.registry_time,
                 agent_time = excluded.agent_time",
        )?
        .execute([registry_time, agent_time])?;
    Ok(())
}

/// The registry's clock in its latest answer and the agent's then: (registry, agent).
pub fn registry_clock(connection: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    connection
        .query_row(
            "SELECT registry_time, agent_time FROM registry_clock WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
}

/// Caches the registry's signed policy (verified by the caller) for offline work; the
/// coverage rules read it back through `coverage::national_policy`.
pub fn store_policy(connection: &Connection, jws: &str, now: i64) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO registry_policy (id, jws, fetched_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET jws = excluded.jws, fetched_at = excluded.fetched_at",
        )?
        .execute(rusqlite::params![jws, now])?;
    Ok(())
}

/// Caches the registry's passkey directory (verified by the caller) for offline
/// check-ins: entries gone or replaced are dropped, a kept credential keeps its counter.
/// Returns how many students have a passkey.
pub fn store_passkeys(
    connection: &mut Connection,
    directory: &kasip_core::wire::PasskeyDirectory,
    now: i64,
) -> rusqlite::Result<usize> {
    use base64::Engine;
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    transaction.execute("CREATE TEMP TABLE IF NOT EXISTS pulled_passkeys (iin TEXT PRIMARY KEY, credential_id TEXT, public_key BLOB, registered_at INTEGER)", [])?;
    transaction.execute("DELETE FROM temp.pulled_passkeys", [])?;
    for entry in &directory.keys {
        let Ok(public_key) =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&entry.public_key)
        else {
            continue;
        };
        transaction
            .prepare_cached("INSERT OR REPLACE INTO temp.pulled_passkeys VALUES (?1, ?2, ?3, ?4)")?
            .execute(rusqlite::params![
                entry.iin,
                entry.credential_id,
                public_key,
                entry.registered_at
            ])?;
    }
    transaction.execute(
        "DELETE FROM passkey_directory WHERE NOT EXISTS (
             SELECT 1 FROM temp.pulled_passkeys p
             WHERE p.iin = passkey_directory.iin AND p.credential_id = passkey_directory.credential_id)",
        [],
    )?;
    let count = transaction.execute(
        "INSERT OR IGNORE INTO passkey_directory (iin, credential_id, public_key, registered_at)
         SELECT iin, credential_id, public_key, registered_at FROM temp.pulled_passkeys",
        [],
    )?;
    transaction.execute(
        "INSERT INTO passkey_relying_party (id, rp_id, fetched_at) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET rp_id = excluded.rp_id, fetched_at = excluded.fetched_at",
        rusqlite::params![directory.rp_id, now],
    )?;
    transaction.execute("DELETE FROM temp.pulled_passkeys", [])?;
    transaction.commit()?;
    tracing::info!(
        new = count,
        listed = directory.keys.len(),
        "passkey directory pulled"
    );
    Ok(directory.keys.len())
}
