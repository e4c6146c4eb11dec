//! Staff accounts (teacher, curator, admin), passwords (argon2), sessions and one-time
//! binding codes for students' phones.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use kasip_core::Iin;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::secrets::{random_token, secret_hash};

/// A staff role; each sees a different part of the college.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Teacher,
    Curator,
    Admin,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Teacher => "teacher",
            Self::Curator => "curator",
            Self::Admin => "admin",
        }
    }

    fn from_stored(text: &str) -> Option<Self> {
        match text {
            "teacher" => Some(Self::Teacher),
            "curator" => Some(Self::Curator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error("no staff member or teacher with login or IIN '{0}'; import teachers or run `kasip-agent staff add`")]
    UnknownLogin(String),
    #[error("a curator needs at least one --group CODE")]
    CuratorWithoutGroups,
    #[error("there is no group '{0}'; import its students first")]
    UnknownGroup(String),
    #[error("login '{0}' already exists")]
    LoginTaken(String),
    #[error("a login must be 3-64 letters, digits, '.', '-' or '_'")]
    BadLogin,
    #[error("the password must be at least 10 characters long")]
    WeakPassword,
    #[error("no student with IIN {0}; import students first")]
    UnknownStudent(String),
    #[error("cannot hash the password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("cannot start the password thread")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Random(#[from] crate::secrets::RandomUnavailable),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// A signed-in staff member.
#[derive(Debug, Clone)]
pub struct StaffMember {
    pub id: i64,
    pub login: String,
    pub role: Role,
    pub teacher_iin: Option<String>,
}

fn valid_login(login: &str) -> bool {
    (3..=64).contains(&login.len())
        && login
            .chars()
            .all(|character| character.is_alphanumeric() || ".-_".contains(character))
}

/// Adds an admin or curator account (teachers get theirs from the teacher import); a
/// curator is given the groups they look after.
pub fn add(
    connection: &Connection,
    login: &str,
    role: Role,
    groups: &[String],
    now: i64,
) -> Result<(), StaffError> {
    if !valid_login(login) {
        return Err(StaffError::BadLogin);
    }
    if role == Role::Curator && groups.is_empty() {
        return Err(StaffError::CuratorWithoutGroups);
    }
    let mut group_ids = Vec::new();
    for group in groups {
        let id: Option<i64> = connection
            .query_row(
                "SELECT id FROM study_groups WHERE code = ?1",
                [group],
                |row| row.get(0),
            )
            .optional()?;
        group_ids.push(id.ok_or_else(|| StaffError::UnknownGroup(group.clone()))?);
    }
    let taken: Option<i64> = connection
        .query_row("SELECT id FROM staff WHERE login = ?1", [login], |row| {
            row.get(0)
        })
        .optional()?;
    if taken.is_some() {
        return Err(StaffError::LoginTaken(login.to_owned()));
    }
    connection.execute(
        "INSERT INTO staff (login, role, created_at) VALUES (?1, ?2, ?3)",
        rusqlite::params![login, role.as_str(), now],
    )?;
    let staff_id = connection.last_insert_rowid();
    for group_id in group_ids {
        connection.execute(
            "INSERT OR IGNORE INTO curator_groups (staff_id, group_id) VALUES (?1, ?2)",
            rusqlite::params![staff_id, group_id],
        )?;
    }
    Ok(())
}

/// The staff row for a login, creating the account of an imported teacher (login = IIN)
/// on first use.
fn find_or_create_teacher(
    connection: &Connection,
    login_or_iin: &str,
    now: i64,
) -> Result<i64, StaffError> {
    let existing: Option<i64> = connection
        .query_row(
            "SELECT id FROM staff WHERE login = ?1 OR teacher_iin = ?1",
            [login_or_iin],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let iin =
        Iin::parse(login_or_iin).map_err(|_| StaffError::UnknownLogin(login_or_iin.to_owned()))?;
    let teacher: Option<String> = connection
        .query_row(
            "SELECT iin FROM teachers WHERE iin = ?1",
            [iin.as_string()],
            |row| row.get(0),
        )
        .optional()?;
    let Some(teacher_iin) = teacher else {
        return Err(StaffError::UnknownLogin(login_or_iin.to_owned()));
    };
    connection.execute(
        "INSERT INTO staff (login, role, teacher_iin, created_at) VALUES (?1, 'teacher', ?1, ?2)",
        rusqlite::params![teacher_iin, now],
    )?;
    Ok(connection.last_insert_rowid())
}

/// Sets a password (argon2id, random salt).
pub fn set_password(
    connection: &Connection,
    login_or_iin: &str,
    password: &str,
    now: i64,
) -> Result<(), StaffError> {
    if password.chars().count() < 10 {
        return Err(StaffError::WeakPassword);
    }
    let id = find_or_create_teacher(connection, login_or_iin, now)?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &new_salt()?)
        .map_err(StaffError::Hash)?
        .to_string();
    let transaction = Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    transaction.execute(
        "UPDATE staff SET password_hash = ?2 WHERE id = ?1",
        rusqlite::params![id, hash],
    )?;
    // Whoever knew the old password is signed out everywhere.
    transaction.execute("DELETE FROM staff_sessions WHERE staff_id = ?1", [id])?;
    transaction.commit()?;
    Ok(())
}

/// Disables (or enables again) an account: a disabled one cannot sign in, and its
/// sessions end at once. Returns whether the account exists.
pub fn set_disabled(
    connection: &Connection,
    login_or_iin: &str,
    disabled: bool,
    now: i64,
) -> Result<bool, StaffError> {
    let transaction = Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    let id: Option<i64> = transaction
        .query_row(
            "SELECT id FROM staff WHERE login = ?1 OR teacher_iin = ?1",
            [login_or_iin.trim()],
            |row| row.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(false);
    };
    transaction.execute(
        "UPDATE staff SET disabled_at = ?2 WHERE id = ?1",
        rusqlite::params![id, disabled.then_some(now)],
    )?;
    transaction.execute("DELETE FROM staff_sessions WHERE staff_id = ?1", [id])?;
    transaction.commit()?;
    Ok(true)
}

/// id, login, role, teacher IIN, password hash.
type AccountRow = (i64, String, String, Option<String>, Option<String>);

/// A sign-in attempt's account, before its password is checked.
pub struct Account {
    pub member: StaffMember,
    /// The stored argon2 hash; None when no password was ever set.
    password_hash: Option<String>,
}

/// The account whose login (or teacher IIN) is `login`, if any. Check its password with
/// a `PasswordChecker`, which also takes the place of an account that does not exist.
pub fn find_account(connection: &Connection, login: &str) -> Result<Option<Account>, StaffError> {
    let row: Option<AccountRow> = connection
        .query_row(
            "SELECT id, login, role, teacher_iin, password_hash FROM staff
             WHERE (login = ?1 OR teacher_iin = ?1) AND disabled_at IS NULL",
            [login.trim()],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )
        .optional()?;
    Ok(
        row.and_then(|(id, login, role, teacher_iin, password_hash)| {
            Role::from_stored(&role).map(|role| Account {
                member: StaffMember {
                    id,
                    login,
                    role,
                    teacher_iin,
                },
                password_hash,
            })
        }),
    )
}

type Verification = (Option<String>, String, tokio::sync::oneshot::Sender<bool>);

/// Checks staff passwords one at a time on a thread of its own, in one block of argon2
/// memory (19 MiB) allocated once. Allocating it per check, on whichever thread, left
/// glibc holding another 19 MiB after each of the first sign-ins (measured: +19.5 MiB
/// per sign-in, to 120 MiB), and hashing inside `with_db` held the database lock. One
/// thread also lets guessing go no faster than one check at a time. An unknown login is
/// checked against a dummy hash, so the answer's timing does not tell which logins exist.
#[derive(Clone)]
pub struct PasswordChecker {
    requests: std::sync::mpsc::Sender<Verification>,
}

impl PasswordChecker {
    pub fn start() -> Result<Self, StaffError> {
        let dummy = Argon2::default()
            .hash_password(b"no such account", &new_salt()?)
            .map_err(StaffError::Hash)?
            .to_string();
        let (requests, queue) = std::sync::mpsc::channel::<Verification>();
        std::thread::Builder::new()
            .name("password-check".into())
            .spawn(move || {
                let mut memory = Vec::new();
                for (stored, password, reply) in queue {
                    let matches = match &stored {
                        Some(hash) => verify(&mut memory, hash, &password),
                        None => {
                            verify(&mut memory, &dummy, &password);
                            false
                        }
                    };
                    let _ = reply.send(matches);
                }
            })
            .map_err(StaffError::Thread)?;
        Ok(Self { requests })
    }

    /// The member if `password` is theirs; None for a wrong password, no password set
    /// or no such account (`account` None), without a hint which.
    pub async fn check(&self, account: Option<Account>, password: String) -> Option<StaffMember> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let stored = account
            .as_ref()
            .and_then(|account| account.password_hash.clone());
        self.requests.send((stored, password, reply)).ok()?;
        match answer.await {
            Ok(true) => account.map(|account| account.member),
            _ => None,
        }
    }
}

/// Whether `password` hashes to the PHC string `stored_hash` (false for an unreadable
/// one), computed in `memory`: grown to the hash's memory cost once, then reused.
fn verify(memory: &mut Vec<argon2::Block>, stored_hash: &str, password: &str) -> bool {
    recompute(memory, stored_hash, password).is_some_and(|matches| matches)
}

fn recompute(memory: &mut Vec<argon2::Block>, stored_hash: &str, password: &str) -> Option<bool> {
    let parsed = PasswordHash::new(stored_hash).ok()?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(number) => argon2::Version::try_from(number).ok()?,
        None => argon2::Version::default(),
    };
    let params = argon2::Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt_buffer = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt_buffer).ok()?;
    memory.resize(params.block_count(), argon2::Block::default());
    let mut output = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut output, &mut memory[..])
        .ok()?;
    Some(crate::secrets::same_secret(&output, expected.as_bytes()))
}

/// A random 16-byte salt for a new argon2 hash.
fn new_salt() -> Result<SaltString, StaffError> {
    let mut salt_bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt_bytes)
        .map_err(|_| StaffError::Random(crate::secrets::RandomUnavailable))?;
    SaltString::encode_b64(&salt_bytes).map_err(StaffError::Hash)
}

/// Session lifetime: a teaching day.
pub const SESSION_SECS: i64 = 12 * 3600;

/// Starts a session; returns (session token for the cookie, CSRF token for forms).
pub fn start_session(
    connection: &Connection,
    staff_id: i64,
    now: i64,
) -> Result<(String, String), StaffError> {
    let token = random_token(32)?;
    let csrf = random_token(24)?;
    connection.execute(
        "INSERT INTO staff_sessions (token_hash, staff_id, csrf_token, expires_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![secret_hash(&token), staff_id, csrf, now + SESSION_SECS, now],
    )?;
    Ok((token, csrf))
}

/// A session's use moves its idle clock at most this often (a projector polls every
/// second; one write a minute per session is enough).
const SESSION_TOUCH_SECS: i64 = 60;

/// The member and CSRF token of a live session at `now`: not past its 12 hours, used
/// within `idle_secs`, its account not disabled. `now` must never go back (the caller's
/// clock high-water mark): a session found dead is deleted, so it stays dead.
pub fn session(
    connection: &Connection,
    token: &str,
    now: i64,
    idle_secs: i64,
) -> Result<Option<(StaffMember, String)>, StaffError> {
    type SessionRow = (
        i64,
        String,
        String,
        Option<String>,
        String,
        i64,
        Option<i64>,
        bool,
    );
    let token_hash = secret_hash(token);
    let row: Option<SessionRow> = connection
        .prepare_cached(
            "SELECT s.id, s.login, s.role, s.teacher_iin, ss.csrf_token, ss.expires_at,
                    ss.last_seen_at, s.disabled_at IS NOT NULL
             FROM staff_sessions ss JOIN staff s ON s.id = ss.staff_id
             WHERE ss.token_hash = ?1",
        )?
        .query_row([&token_hash], |row| SessionRow::try_from(row))
        .optional()?;
    let Some((id, login, role, teacher_iin, csrf, expires_at, last_seen_at, disabled)) = row else {
        return Ok(None);
    };
    let idle = last_seen_at.is_some_and(|seen| now - seen > idle_secs);
    if now >= expires_at || idle || disabled {
        connection
            .prepare_cached("DELETE FROM staff_sessions WHERE token_hash = ?1")?
            .execute([&token_hash])?;
        return Ok(None);
    }
    if last_seen_at.is_none_or(|seen| now - seen >= SESSION_TOUCH_SECS) {
        connection
            .prepare_cached("UPDATE staff_sessions SET last_seen_at = ?2 WHERE token_hash = ?1")?
            .execute(rusqlite::params![token_hash, now])?;
    }
    Ok(Role::from_stored(&role).map(|role| {
        (
            StaffMember {
                id,
                login,
                role,
                teacher_iin,
            },
            csrf,
        )
    }))
}

/// The clock's high-water mark as last kept, and the latest session use: a restart
/// starts from the later of them, so a clock set back cannot revive a session.
pub fn clock_high_water(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row(
        "SELECT MAX(COALESCE((SELECT at FROM clock_high_water WHERE id = 1), 0),
                    COALESCE((SELECT MAX(last_seen_at) FROM staff_sessions), 0))",
        [],
        |row| row.get(0),
    )
}

/// Keeps the clock's high-water mark `at` (it only ever rises).
pub fn keep_clock_high_water(connection: &Connection, at: i64) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO clock_high_water (id, at) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET at = MAX(at, excluded.at)",
        [at],
    )?;
    Ok(())
}

/// Binding codes live a day: long enough for a curator to hand them out in class.
pub const BINDING_CODE_SECS: i64 = 24 * 3600;
/// Wrong guesses, from all clients together, after which a code is locked: a backstop
/// against guessing from many addresses (a code is one of ~6.6e11), high enough that an
/// outsider cannot lock a student's code with a few tries (the web throttle slows each
/// client long before).
pub const BINDING_CODE_MAX_FAILURES: i64 = 200;

/// Issues a one-time binding code for a student, replacing any unused one. `issued_by`
/// (a staff login, or `cli:<user>`) travels to the registry with the binding it makes.
pub fn issue_binding_code(
    connection: &Connection,
    iin: &Iin,
    issued_by: &str,
    now: i64,
) -> Result<String, StaffError> {
    let known: Option<String> = connection
        .query_row(
            "SELECT iin FROM students WHERE iin = ?1",
            [iin.as_string()],
            |row| row.get(0),
        )
        .optional()?;
    if known.is_none() {
        return Err(StaffError::UnknownStudent(iin.to_string()));
    }
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StaffError::Random(crate::secrets::RandomUnavailable))?;
    let mut value = u64::from_be_bytes(bytes);
    // 8 characters from a 30-letter alphabet: ~6.6e11 codes.
    let alphabet = b"23456789ABCDEFGHJKMNPQRSTUVWXY";
    let code: String = (0..8)
        .map(|_| {
            let character = alphabet[(value % 30) as usize];
            value /= 30;
            char::from(character)
        })
        .collect();
    connection.execute(
        "UPDATE binding_codes SET used_at = ?2 WHERE student_iin = ?1 AND used_at IS NULL",
        rusqlite::params![iin.as_string(), now],
    )?;
    connection.execute(
        "INSERT INTO binding_codes (code_hash, student_iin, expires_at, issued_by, issued_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![
            secret_hash(&code),
            iin.as_string(),
            now + BINDING_CODE_SECS,
            issued_by,
            now
        ],
    )?;
    Ok(code)
}

/// Whether `member` may see and act on a lesson taught by `teacher_iin` to the group
/// `group_code`: admins any, teachers their own, curators their groups'.
pub fn may_act_on_lesson(
    connection: &Connection,
    member: &StaffMember,
    teacher_iin: &str,
    group_code: &str,
) -> rusqlite::Result<bool> {
    Ok(match member.role {
        Role::Admin => true,
        Role::Teacher => member.teacher_iin.as_deref() == Some(teacher_iin),
        Role::Curator => curates_group(connection, member.id, group_code)?,
    })
}

/// Whether curator `staff_id` looks after the group `group_code`.
fn curates_group(
    connection: &Connection,
    staff_id: i64,
    group_code: &str,
) -> rusqlite::Result<bool> {
    Ok(connection
        .prepare_cached(
            "SELECT 1 FROM curator_groups cg JOIN study_groups g ON g.id = cg.group_id
             WHERE cg.staff_id = ?1 AND g.code = ?2",
        )?
        .query_row(rusqlite::params![staff_id, group_code], |row| {
            row.get::<_, i64>(0)
        })
        .optional()?
        .is_some())
}

/// A failed sign-in is a security event from `client`, naming the account tried when
/// the login field names one. Anything else typed there is not stored: people type
/// their password into the wrong field.
pub fn record_failed_sign_in(
    connection: &Connection,
    login: &str,
    client: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let account: Option<String> = connection
        .prepare_cached("SELECT login FROM staff WHERE login = ?1 OR teacher_iin = ?1")?
        .query_row([login.trim()], |row| row.get(0))
        .optional()?;
    crate::security_events::record(
        connection,
        now,
        &crate::security_events::SecurityEvent {
            kind: "login_failed",
            detail: account.as_deref().unwrap_or("(no such account)"),
            client: Some(client),
            ..Default::default()
        },
    )
}

/// Ends the session whose cookie is `token` (signing out).
pub fn end_session(connection: &Connection, token: &str) -> rusqlite::Result<usize> {
    connection.execute(
        "DELETE FROM staff_sessions WHERE token_hash = ?1",
        [secret_hash(token)],
    )
}

/// The groups `member` may issue phone-binding codes for: every group for an admin,
/// their own for a curator, none for a teacher.
pub fn code_issuing_groups(
    connection: &Connection,
    member: &StaffMember,
) -> rusqlite::Result<Vec<String>> {
    let sql = match member.role {
        Role::Admin => "SELECT code FROM study_groups WHERE ?1 IS NOT NULL ORDER BY code",
        Role::Curator => {
            "SELECT g.code FROM curator_groups cg JOIN study_groups g ON g.id = cg.group_id
             WHERE cg.staff_id = ?1 ORDER BY g.code"
        }
        Role::Teacher => return Ok(Vec::new()),
    };
    connection
        .prepare_cached(sql)?
        .query_map([member.id], |row| row.get(0))?
        .collect()
}

/// One printed binding slip: who, the code, until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSlip {
    pub iin: String,
    pub name: String,
    pub code: String,
    pub expires_at: i64,
}

/// New binding codes for every active student of `group`, in one transaction (each
/// replaces the student's unused one). The caller checked `code_issuing_groups`.
pub fn issue_group_codes(
    connection: &Connection,
    group: &str,
    issued_by: &str,
    now: i64,
) -> Result<Vec<BindingSlip>, StaffError> {
    let transaction = Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    let students: Vec<(String, String)> = transaction
        .prepare(
            "SELECT s.iin, s.last_name || ' ' || s.first_name FROM students s
             JOIN study_groups g ON g.id = s.group_id
             WHERE g.code = ?1 AND s.status = 'active' ORDER BY s.last_name, s.first_name",
        )?
        .query_map([group], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut slips = Vec::with_capacity(students.len());
    for (iin, name) in students {
        let parsed = Iin::parse(&iin).map_err(|_| StaffError::UnknownStudent(iin.clone()))?;
        let code = issue_binding_code(&transaction, &parsed, issued_by, now)?;
        slips.push(BindingSlip {
            iin,
            name,
            code,
            expires_at: now + BINDING_CODE_SECS,
        });
    }
    transaction.commit()?;
    Ok(slips)
}

/// A student's name and group code, for a slip; None if no such student.
pub fn student_of(
    connection: &Connection,
    iin: &Iin,
) -> rusqlite::Result<Option<(String, String)>> {
    connection
        .prepare_cached(
            "SELECT s.last_name || ' ' || s.first_name, g.code FROM students s
             JOIN study_groups g ON g.id = s.group_id WHERE s.iin = ?1",
        )?
        .query_row([iin.as_string()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

/// A new binding code for one student, as a slip (it replaces their unused one).
pub fn issue_student_slip(
    connection: &Connection,
    iin: &Iin,
    name: String,
    issued_by: &str,
    now: i64,
) -> Result<BindingSlip, StaffError> {
    let code = issue_binding_code(connection, iin, issued_by, now)?;
    Ok(BindingSlip {
        iin: iin.as_string(),
        name,
        code,
        expires_at: now + BINDING_CODE_SECS,
    })
}

/// The groups whose attendance history `member` may read: every group for an admin,
/// a curator's own, and the groups a teacher teaches.
pub fn history_groups(
    connection: &Connection,
    member: &StaffMember,
) -> rusqlite::Result<Vec<String>> {
    match member.role {
        Role::Admin | Role::Curator => code_issuing_groups(connection, member),
        Role::Teacher => connection
            .prepare_cached(
                "SELECT DISTINCT g.code FROM lessons l JOIN study_groups g ON g.id = l.group_id
                 WHERE l.teacher_iin = ?1 ORDER BY g.code",
            )?
            .query_map([&member.teacher_iin], |row| row.get(0))?
            .collect(),
    }
}

/// How pages greet `member`: a teacher by name, anyone else by login.
pub fn display_name(connection: &Connection, member: &StaffMember) -> rusqlite::Result<String> {
    let Some(iin) = &member.teacher_iin else {
        return Ok(member.login.clone());
    };
    Ok(connection
        .prepare_cached("SELECT last_name || ' ' || first_name FROM teachers WHERE iin = ?1")?
        .query_row([iin], |row| row.get(0))
        .optional()?
        .unwrap_or_else(|| member.login.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(password_hash: Option<String>) -> Account {
        Account {
            member: StaffMember {
                id: 7,
                login: "admin".into(),
                role: Role::Admin,
                teacher_iin: None,
            },
            password_hash,
        }
    }

    #[tokio::test]
    async fn the_checker_accepts_only_the_right_password_in_reused_memory() {
        let stored = Argon2::default()
            .hash_password(b"correct horse battery", &new_salt().expect("salt"))
            .expect("hash")
            .to_string();
        let checker = PasswordChecker::start().expect("checker");
        let check = |hash: Option<String>, password: &str| {
            checker.check(Some(account(hash)), password.to_owned())
        };
        assert_eq!(
            check(Some(stored.clone()), "correct horse battery")
                .await
                .map(|member| member.id),
            Some(7)
        );
        assert!(check(Some(stored.clone()), "correct horse batter")
            .await
            .is_none());
        assert!(check(Some(stored.clone()), "").await.is_none());
        assert!(
            check(None, "correct horse battery").await.is_none(),
            "no password set"
        );
        assert!(
            checker.check(None, "anything".into()).await.is_none(),
            "no such account"
        );
        for hostile in [
            "",
            "$argon2id$",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
            "plain text",
        ] {
            assert!(
                check(Some(hostile.into()), "x").await.is_none(),
                "{hostile}"
            );
        }
        // The same memory serves the next check after the hostile ones.
        assert!(check(Some(stored), "correct horse battery").await.is_some());
    }
}
