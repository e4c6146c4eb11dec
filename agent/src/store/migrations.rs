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

// Schema pieces a later migration creates again after rebuilding `attendance_events`
// (SQLite cannot widen a CHECK constraint in place): one text for both.

macro_rules! attendance_append_only {
    () => {
        r#"CREATE TRIGGER attendance_events_no_update BEFORE UPDATE ON attendance_events
BEGIN SELECT RAISE(ABORT, 'attendance events are append-only'); END;
CREATE TRIGGER attendance_events_no_delete BEFORE DELETE ON attendance_events
BEGIN SELECT RAISE(ABORT, 'attendance events are append-only'); END;
"#
    };
}

macro_rules! tally_trigger {
    () => {
        r#"CREATE TRIGGER attendance_events_tally AFTER INSERT ON attendance_events
BEGIN
    INSERT OR IGNORE INTO mark_tally (date, student_iin)
        VALUES ((SELECT date FROM lessons WHERE id = NEW.lesson_id), NEW.student_iin);
    UPDATE mark_tally SET
        present = present + (NEW.status IN ('present', 'late'))
            - COALESCE((SELECT p.status IN ('present', 'late') FROM attendance_events p
                        WHERE p.lesson_id = NEW.lesson_id AND p.student_iin = NEW.student_iin
                          AND p.id < NEW.id ORDER BY p.id DESC LIMIT 1), 0),
        qr = qr + (NEW.status IN ('present', 'late') AND NEW.method IN ('qr_phone', 'qr_kiosk'))
            - COALESCE((SELECT p.status IN ('present', 'late') AND p.method IN ('qr_phone', 'qr_kiosk')
                        FROM attendance_events p
                        WHERE p.lesson_id = NEW.lesson_id AND p.student_iin = NEW.student_iin
                          AND p.id < NEW.id ORDER BY p.id DESC LIMIT 1), 0),
        typed = typed + (NEW.status IN ('present', 'late') AND NEW.method = 'qr_typed')
            - COALESCE((SELECT p.status IN ('present', 'late') AND p.method = 'qr_typed'
                        FROM attendance_events p
                        WHERE p.lesson_id = NEW.lesson_id AND p.student_iin = NEW.student_iin
                          AND p.id < NEW.id ORDER BY p.id DESC LIMIT 1), 0)
    WHERE date = (SELECT date FROM lessons WHERE id = NEW.lesson_id)
      AND student_iin = NEW.student_iin;
END;
"#
    };
}

macro_rules! latest_marks_view {
    () => {
        r#"CREATE VIEW latest_marks AS
SELECT e.*, e.status IN ('present', 'late') AS counts_as_present
FROM attendance_events e
WHERE e.id = (SELECT MAX(x.id) FROM attendance_events x
              WHERE x.lesson_id = e.lesson_id AND x.student_iin = e.student_iin);
"#
    };
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
    Migration {
        version: 3,
        description: "staff, lessons held, phone bindings, attendance chain, security events",
        sql: concat!(
            r#"
CREATE TABLE staff (
    id            INTEGER PRIMARY KEY,
    login         TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('teacher', 'curator', 'admin')),
    teacher_iin   TEXT REFERENCES teachers(iin),
    password_hash TEXT,
    created_at    INTEGER NOT NULL
);
CREATE TABLE curator_groups (
    staff_id INTEGER NOT NULL REFERENCES staff(id),
    group_id INTEGER NOT NULL REFERENCES study_groups(id),
    PRIMARY KEY (staff_id, group_id)
);
CREATE TABLE staff_sessions (
    token_hash  BLOB PRIMARY KEY,
    staff_id    INTEGER NOT NULL REFERENCES staff(id),
    csrf_token  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
-- A lesson is open from opened_at until closed_at; qr_key signs its rotating tokens.
CREATE TABLE lesson_openings (
    lesson_id  INTEGER PRIMARY KEY REFERENCES lessons(id),
    qr_key     BLOB NOT NULL,
    opened_at  INTEGER NOT NULL,
    opened_by  TEXT NOT NULL,
    closed_at  INTEGER,
    closed_by  TEXT
);
CREATE TABLE binding_codes (
    code_hash       BLOB PRIMARY KEY,
    student_iin     TEXT NOT NULL REFERENCES students(iin),
    expires_at      INTEGER NOT NULL,
    used_at         INTEGER,
    failed_attempts INTEGER NOT NULL DEFAULT 0
);
-- device_id is the SHA-256 of the phone's long-lived identity cookie; credential_hash
-- the SHA-256 of its binding credential. Neither secret is stored.
CREATE TABLE device_bindings (
    id              INTEGER PRIMARY KEY,
    credential_hash BLOB NOT NULL UNIQUE,
    student_iin     TEXT NOT NULL REFERENCES students(iin),
    device_id       TEXT NOT NULL,
    bound_at        INTEGER NOT NULL,
    revoked_at      INTEGER
);
CREATE INDEX device_bindings_active ON device_bindings(student_iin) WHERE revoked_at IS NULL;
-- Append-only and hash-chained: row_hash = SHA-256(prev_hash || canonical row).
CREATE TABLE attendance_events (
    id           INTEGER PRIMARY KEY,
    lesson_id    INTEGER NOT NULL REFERENCES lessons(id),
    student_iin  TEXT NOT NULL REFERENCES students(iin),
    status       TEXT NOT NULL CHECK (status IN ('present', 'late', 'absent', 'excused')),
    method       TEXT NOT NULL CHECK (method IN ('qr_phone', 'qr_kiosk', 'qr_typed', 'manual')),
    recorded_at  INTEGER NOT NULL,
    device_id    TEXT,
    token_step   INTEGER,
    marked_by    TEXT,
    reason       TEXT,
    corrects     INTEGER REFERENCES attendance_events(id),
    prev_hash    BLOB NOT NULL,
    row_hash     BLOB NOT NULL
);
CREATE INDEX attendance_by_lesson ON attendance_events(lesson_id, student_iin);
-- "one device, one student per lesson" is checked on every check-in.
CREATE INDEX attendance_by_lesson_device ON attendance_events(lesson_id, device_id);
"#,
            attendance_append_only!(),
            r#"-- An admin's decision to let a manual mark take a group below the coverage rule.
CREATE TABLE coverage_overrides (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL REFERENCES attendance_events(id),
    admin_login     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    coverage_before INTEGER NOT NULL,
    coverage_after  INTEGER NOT NULL,
    at              INTEGER NOT NULL
);
CREATE TRIGGER coverage_overrides_no_update BEFORE UPDATE ON coverage_overrides
BEGIN SELECT RAISE(ABORT, 'coverage overrides are append-only'); END;
CREATE TRIGGER coverage_overrides_no_delete BEFORE DELETE ON coverage_overrides
BEGIN SELECT RAISE(ABORT, 'coverage overrides are append-only'); END;
-- A closed month: its marks are frozen; later marks for its lessons are adjustments.
CREATE TABLE month_closes (
    month          TEXT PRIMARY KEY,
    closed_at      INTEGER NOT NULL,
    closed_by      TEXT NOT NULL,
    forced_reason  TEXT,
    compliant      INTEGER NOT NULL CHECK (compliant IN (0, 1)),
    statement_path TEXT NOT NULL
);
CREATE TABLE month_adjustments (
    event_id INTEGER PRIMARY KEY REFERENCES attendance_events(id),
    month    TEXT NOT NULL REFERENCES month_closes(month)
);
CREATE TABLE security_events (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    lesson_id   INTEGER,
    student_iin TEXT,
    device_id   TEXT,
    detail      TEXT NOT NULL DEFAULT ''
);
"#
        ),
    },
    Migration {
        version: 4,
        description: "per-student daily mark tally for coverage",
        sql: concat!(
            r#"
-- What each student's latest marks add up to per lesson day: present (or late) marks
-- and how many of them came from a QR scan (phone or kiosk) or a typed code. Kept by
-- the trigger below in the transaction that records the mark, so coverage reads a few
-- rows per student instead of every mark of the month. Derived data: `verify` and the
-- coverage tests recompute it from the marks.
CREATE TABLE mark_tally (
    date        TEXT NOT NULL,
    student_iin TEXT NOT NULL,
    present     INTEGER NOT NULL DEFAULT 0,
    qr          INTEGER NOT NULL DEFAULT 0,
    typed       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (date, student_iin)
) WITHOUT ROWID;
-- A new mark replaces the student's previous mark for the same lesson (a correction),
-- so the tally moves by the difference between the two.
"#,
            tally_trigger!(),
            r#"-- The marks recorded before this version.
INSERT INTO mark_tally (date, student_iin, present, qr, typed)
SELECT l.date, e.student_iin,
       SUM(e.status IN ('present', 'late')),
       SUM(e.status IN ('present', 'late') AND e.method IN ('qr_phone', 'qr_kiosk')),
       SUM(e.status IN ('present', 'late') AND e.method = 'qr_typed')
FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
WHERE e.id = (SELECT MAX(x.id) FROM attendance_events x
              WHERE x.lesson_id = e.lesson_id AND x.student_iin = e.student_iin)
GROUP BY l.date, e.student_iin;
"#
        ),
    },
    Migration {
        version: 5,
        description: "grades, sync outbox, enrolment, beneficiary changes",
        sql: r#"
-- Append-only like attendance: a correction is a new row that references the old one.
CREATE TABLE grade_events (
    id          INTEGER PRIMARY KEY,
    student_iin TEXT NOT NULL REFERENCES students(iin),
    discipline  TEXT NOT NULL,
    assessment  TEXT NOT NULL CHECK (assessment IN ('current', 'midterm', 'exam', 'practice')),
    score       INTEGER NOT NULL CHECK (score BETWEEN 0 AND 100),
    credits     INTEGER NOT NULL CHECK (credits BETWEEN 0 AND 60),
    date        TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL,
    corrects    INTEGER REFERENCES grade_events(id)
);
CREATE INDEX grade_events_by_student ON grade_events(student_iin, discipline, date);
CREATE TRIGGER grade_events_no_update BEFORE UPDATE ON grade_events
BEGIN SELECT RAISE(ABORT, 'grade events are append-only'); END;
CREATE TRIGGER grade_events_no_delete BEFORE DELETE ON grade_events
BEGIN SELECT RAISE(ABORT, 'grade events are append-only'); END;
-- The signed statement itself, so the outbox never depends on a file in statements/.
ALTER TABLE month_closes ADD COLUMN statement TEXT;
-- The registry's word on each student's state funding.
ALTER TABLE students ADD COLUMN voucher TEXT NOT NULL DEFAULT '';
CREATE TABLE beneficiary_events (
    id                  INTEGER PRIMARY KEY,
    student_iin         TEXT NOT NULL REFERENCES students(iin),
    beneficiary_before  INTEGER NOT NULL,
    beneficiary_after   INTEGER NOT NULL,
    voucher_before      TEXT NOT NULL,
    voucher_after       TEXT NOT NULL,
    at                  INTEGER NOT NULL,
    source              TEXT NOT NULL
);
CREATE TRIGGER beneficiary_events_no_update BEFORE UPDATE ON beneficiary_events
BEGIN SELECT RAISE(ABORT, 'beneficiary events are append-only'); END;
CREATE TRIGGER beneficiary_events_no_delete BEFORE DELETE ON beneficiary_events
BEGIN SELECT RAISE(ABORT, 'beneficiary events are append-only'); END;
-- Where this agent is enrolled and the key that signs the registry's receipts.
CREATE TABLE sync_enrolment (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    registry_url TEXT NOT NULL,
    registry_key BLOB NOT NULL,
    enrolled_at  INTEGER NOT NULL
);
-- Per source table, the last event id sealed into a batch. Advanced in the transaction
-- that stores the batch, so a crash never seals an event twice or skips one.
CREATE TABLE outbox_cursors (
    kind    TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
-- Sealed batches: their exact bytes, stored before the first send; every retry sends
-- them. A batch is never changed; only its acknowledgement is filled in.
CREATE TABLE outbox_batches (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    created     INTEGER NOT NULL,
    records     INTEGER NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    jws         TEXT NOT NULL,
    hash        TEXT NOT NULL,
    acked_at    INTEGER,
    receipt     TEXT,
    accepted    INTEGER,
    duplicates  INTEGER,
    rejected    INTEGER
);
CREATE INDEX outbox_unacked ON outbox_batches(seq) WHERE acked_at IS NULL;
CREATE TRIGGER outbox_batches_sealed BEFORE UPDATE OF seq, kind, created, records, first_id, last_id, jws, hash
    ON outbox_batches
BEGIN SELECT RAISE(ABORT, 'a sealed batch never changes'); END;
CREATE TRIGGER outbox_batches_no_delete BEFORE DELETE ON outbox_batches
    WHEN OLD.acked_at IS NULL
BEGIN SELECT RAISE(ABORT, 'an unacknowledged batch is never deleted'); END;
-- Records the registry refused (quarantined on both sides, never dropped silently).
CREATE TABLE outbox_rejections (
    seq       INTEGER NOT NULL REFERENCES outbox_batches(seq),
    record_id INTEGER NOT NULL,
    reason    TEXT NOT NULL
);
-- What `sync status` and the dashboard show.
CREATE TABLE sync_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    alert            TEXT,
    alert_at         INTEGER,
    last_success_at  INTEGER,
    last_error       TEXT,
    last_error_at    INTEGER,
    last_pull_at     INTEGER,
    pull_report      TEXT
);
INSERT INTO sync_state (id) VALUES (1);
"#,
    },
    Migration {
        version: 6,
        description: "student passes, kiosks, kiosk scans, campus presence, key rotations",
        sql: r#"
-- Public halves of the pass keys phones create with WebCrypto (design §5.3). A new key
-- for a student, or a new binding, replaces the old one; replaced keys stay so a scan
-- buffered on a kiosk before the change still verifies.
CREATE TABLE pass_keys (
    id            INTEGER PRIMARY KEY,
    student_iin   TEXT NOT NULL REFERENCES students(iin),
    binding_id    INTEGER NOT NULL REFERENCES device_bindings(id),
    public_key    BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    replaced_at   INTEGER
);
CREATE INDEX pass_keys_active ON pass_keys(student_iin) WHERE replaced_at IS NULL;
-- A kiosk is bound to a room (marks the lesson running there) or to a site's entrance
-- (campus presence). Its one-time enrolment code and its credential are stored hashed.
CREATE TABLE kiosks (
    id              INTEGER PRIMARY KEY,
    place           TEXT NOT NULL CHECK (place IN ('room', 'entrance')),
    room            TEXT NOT NULL DEFAULT '',
    site            TEXT NOT NULL DEFAULT '',
    code_hash       BLOB NOT NULL UNIQUE,
    code_expires_at INTEGER NOT NULL,
    credential_hash BLOB UNIQUE,
    created_at      INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    enrolled_at     INTEGER,
    revoked_at      INTEGER
);
-- Every scan a kiosk forwarded, by the kiosk's scan id (a repeat upload answers the same).
-- A pass (student + signing time) counts once across all kiosks.
CREATE TABLE kiosk_scans (
    scan_id        TEXT PRIMARY KEY,
    kiosk_id       INTEGER NOT NULL REFERENCES kiosks(id),
    student_iin    TEXT NOT NULL,
    pass_signed_at INTEGER NOT NULL,
    scanned_at     INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    outcome        TEXT NOT NULL CHECK (outcome IN ('marked', 'presence', 'no_lesson', 'refused')),
    reason         TEXT,
    event_id       INTEGER REFERENCES attendance_events(id)
);
CREATE UNIQUE INDEX kiosk_scans_one_use_per_pass ON kiosk_scans(student_iin, pass_signed_at)
    WHERE outcome != 'refused';
CREATE INDEX kiosk_scans_by_student ON kiosk_scans(student_iin, scanned_at);
-- The agent's identity at the registry: the key thumbprint it enrolled with. It stays
-- when the signing key rotates (NULL for enrolments made before: the current key's).
ALTER TABLE sync_enrolment ADD COLUMN agent_id TEXT;
-- Key rotations (`kasip-agent keys rotate`): the next public key, announced to the
-- registry in a batch signed by the current key; completed when that batch is acknowledged
-- and the next key file becomes the key.
CREATE TABLE key_rotations (
    id           INTEGER PRIMARY KEY,
    public_key   BLOB NOT NULL,
    kid          TEXT NOT NULL,
    at           INTEGER NOT NULL,
    completed_at INTEGER
);
"#,
    },
    Migration {
        version: 7,
        description: "latest_marks view: the mark that counts per lesson and student",
        sql: concat!(
            r#"
-- The mark that decides a student's attendance at a lesson is the latest one (a
-- correction replaces a mark), and it counts as present when it is present or late
-- (MarkStatus::counts_as_present says the same in Rust). Readers use this view instead
-- of repeating both rules.
"#,
            latest_marks_view!(),
            r#""#
        ),
    },
    Migration {
        version: 8,
        description: "late entries: attendance_events takes method late_entry",
        sql: concat!(
            r#"
-- An admin's mark after the lesson's window is a late entry (method late_entry), never
-- a live mark. SQLite cannot widen a CHECK in place, so the table is rebuilt with every
-- row, hash and id as it was; its triggers, indexes and the view over it come back the
-- same. The runner turns foreign keys off around it and checks every reference first.
DROP VIEW latest_marks;
CREATE TABLE attendance_events_v8 (
    id           INTEGER PRIMARY KEY,
    lesson_id    INTEGER NOT NULL REFERENCES lessons(id),
    student_iin  TEXT NOT NULL REFERENCES students(iin),
    status       TEXT NOT NULL CHECK (status IN ('present', 'late', 'absent', 'excused')),
    method       TEXT NOT NULL
                 CHECK (method IN ('qr_phone', 'qr_kiosk', 'qr_typed', 'manual', 'late_entry')),
    recorded_at  INTEGER NOT NULL,
    device_id    TEXT,
    token_step   INTEGER,
    marked_by    TEXT,
    reason       TEXT,
    corrects     INTEGER REFERENCES attendance_events(id),
    prev_hash    BLOB NOT NULL,
    row_hash     BLOB NOT NULL
);
INSERT INTO attendance_events_v8 SELECT * FROM attendance_events;
DROP TABLE attendance_events;
ALTER TABLE attendance_events_v8 RENAME TO attendance_events;
CREATE INDEX attendance_by_lesson ON attendance_events(lesson_id, student_iin);
CREATE INDEX attendance_by_lesson_device ON attendance_events(lesson_id, device_id);
"#,
            attendance_append_only!(),
            tally_trigger!(),
            latest_marks_view!(),
        ),
    },
    Migration {
        version: 9,
        description: "security events per client and window; session idle time; staff disabling; closed months' figures",
        sql: r#"
-- A guess repeated from one client is one row with a count, not one row per guess: a
-- flood of wrong typed codes once wrote ~200 MB an hour. `client` is the peer address
-- (and device) the throttle counted; `last_at` the latest of the `count` events.
ALTER TABLE security_events ADD COLUMN client TEXT;
ALTER TABLE security_events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE security_events ADD COLUMN last_at INTEGER;
UPDATE security_events SET last_at = at;
CREATE INDEX security_events_by_client ON security_events(client, kind, at) WHERE client IS NOT NULL;
CREATE INDEX security_events_by_time ON security_events(at);
-- A staff session also ends after `security.staff_idle_mins` without use; `last_seen_at`
-- is moved at most once a minute. Sessions from before have no idle time yet.
ALTER TABLE staff_sessions ADD COLUMN last_seen_at INTEGER;
-- A disabled account cannot sign in, and its sessions end.
ALTER TABLE staff ADD COLUMN disabled_at INTEGER;
-- The latest time the agent has read from its clock, kept so that a clock stepped back
-- (or a restart after one) cannot bring an expired session back.
CREATE TABLE clock_high_water (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
-- Each beneficiary of a closed month as its statement counted them: the month's figures
-- come from here ever after, so a later import or status change cannot move them
-- (corrections are adjustments, listed on their own).
-- The red flags' idle-groups check reads each group's lessons of a month: without this
-- index it scanned every lesson per group (quadratic in the college's size: 5.95 s at
-- 20,000 students, 3.25 s with it).
CREATE INDEX lessons_by_group_date ON lessons(group_id, date);
CREATE TABLE closed_month_students (
    month       TEXT NOT NULL REFERENCES month_closes(month),
    student_iin TEXT NOT NULL,
    name        TEXT NOT NULL,
    group_code  TEXT NOT NULL,
    present     INTEGER NOT NULL,
    qr          INTEGER NOT NULL,
    PRIMARY KEY (month, student_iin)
) WITHOUT ROWID;
"#,
    },
    Migration {
        version: 10,
        description: "evidence the registry can check: mark evidence, device keys, binding provenance, the registry's clock and policy, site address events",
        sql: r#"
-- Batch format 2: what each mark's source knew (canonical JSON), hashed into the chain
-- with the row. Rows from before have none and hash as they always did.
ALTER TABLE attendance_events ADD COLUMN evidence TEXT;
-- The pass as the student's phone signed it: a kiosk mark's evidence.
ALTER TABLE kiosk_scans ADD COLUMN pass TEXT;
-- A phone's device key: an ECDSA P-256 public key (uncompressed point) made by the
-- browser at binding, non-extractable; every check-in is signed by it. Bindings from
-- before have none and must bind again. Who issued the code, when, and where the phone
-- bound from travel to the registry with the binding.
ALTER TABLE device_bindings ADD COLUMN device_key BLOB;
ALTER TABLE device_bindings ADD COLUMN code_issued_by TEXT NOT NULL DEFAULT '';
ALTER TABLE device_bindings ADD COLUMN code_issued_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE device_bindings ADD COLUMN client TEXT NOT NULL DEFAULT '';
ALTER TABLE device_bindings ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
ALTER TABLE binding_codes ADD COLUMN issued_by TEXT NOT NULL DEFAULT '';
ALTER TABLE binding_codes ADD COLUMN issued_at INTEGER NOT NULL DEFAULT 0;
-- The registry's time in its latest answer, and the agent's when it arrived: `doctor`
-- compares the agent's clock with it.
CREATE TABLE registry_clock (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    registry_time INTEGER NOT NULL,
    agent_time    INTEGER NOT NULL
);
-- The national policy as the registry signed it (thresholds, licensed addresses),
-- cached for offline work.
CREATE TABLE registry_policy (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    jws        TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
);
-- A site's address is versioned: each change is an event, synced, never an overwrite.
CREATE TABLE site_address_events (
    id       INTEGER PRIMARY KEY,
    site_id  INTEGER NOT NULL REFERENCES sites(id),
    address  TEXT NOT NULL,
    previous TEXT,
    at       INTEGER NOT NULL,
    source   TEXT NOT NULL
);
CREATE TRIGGER site_address_events_no_update BEFORE UPDATE ON site_address_events
BEGIN SELECT RAISE(ABORT, 'site address events are append-only'); END;
CREATE TRIGGER site_address_events_no_delete BEFORE DELETE ON site_address_events
BEGIN SELECT RAISE(ABORT, 'site address events are append-only'); END;
INSERT INTO site_address_events (site_id, address, previous, at, source)
    SELECT id, address, NULL, 0, 'before versioning' FROM sites WHERE address != '';
"#,
    },
    Migration {
        version: 11,
        description: "students' passkeys: the registry's signed directory, cached for offline check-ins",
        sql: r#"
-- The registry's key directory for this college's students (design §5.10): replaced
-- whole on every pull; the relying party and the JWS as received kept beside it.
CREATE TABLE passkey_directory (
    iin           TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL,
    public_key    BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    sign_count    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE passkey_relying_party (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    rp_id      TEXT NOT NULL,
    fetched_at INTEGER NOT NULL
);
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
