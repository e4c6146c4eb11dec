//! The CLI's commands other than `serve`: each opens what it needs, acts, and reports.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use kasip_certs::DeviceKey;
use kasip_core::{Bin, CollegeTimezone};
use serde::Serialize;

use crate::clock::unix_now;
use crate::config::{default_config_text, DataDir, Settings};
use crate::demo;
use crate::error::AgentError;
use crate::import::{import, ImportKind, ImportOptions, ImportReport};
use crate::roster::RosterCounts;
use crate::staff::Role;
use crate::store::{latest_version, Store};

/// What `init` should write.
pub struct InitOptions {
    pub college_bin: Bin,
    pub college_name: String,
    pub timezone: CollegeTimezone,
    /// Names for the self-signed TLS certificate besides localhost.
    pub tls_names: Vec<String>,
}

impl InitOptions {
    /// The demo college, for `serve` on a data dir that does not exist yet.
    pub fn demo() -> Self {
        Self {
            college_bin: demo::demo_bin(),
            college_name: demo::DEMO_COLLEGE_NAME.to_owned(),
            timezone: CollegeTimezone::parse(crate::config::DEFAULT_TIMEZONE)
                .unwrap_or_else(|_| unreachable!("the default time zone is in the table")),
            tls_names: Vec::new(),
        }
    }
}

/// Creates the data dir, identity key, database and config (in that order: the config
/// is written last, so its presence means a complete `init`). Refuses if any exists,
/// except a config kept outside the data dir (the package's conffile), which is
/// validated and kept.
pub fn init(data_dir: &DataDir, options: &InitOptions) -> Result<String, AgentError> {
    let external_config = data_dir.has_external_config() && data_dir.config_path().exists();
    let mut existing = vec![data_dir.database_path(), data_dir.key_path()];
    if !external_config {
        existing.push(data_dir.config_path());
    }
    if external_config {
        Settings::load(data_dir)?;
    }
    if existing.into_iter().any(|path| path.exists()) {
        return Err(AgentError::AlreadyInitialised {
            data_dir: data_dir.root().to_owned(),
        });
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir.root())
        .map_err(|source| AgentError::Io {
            action: "create",
            path: data_dir.root().to_owned(),
            source,
        })?;
    let key = DeviceKey::generate_to(&data_dir.key_path())?;
    kasip_certs::write_self_signed(
        &options.tls_names,
        &data_dir.tls_cert_path(),
        &data_dir.tls_key_path(),
    )?;
    Store::create(&data_dir.database_path())?.close()?;
    if external_config {
        tracing::info!(data_dir = %data_dir.root().display(), config = %data_dir.config_path().display(), key = %key.thumbprint(), "data directory initialised");
        return Ok(key.thumbprint());
    }
    let config = default_config_text(
        &options.college_bin,
        &options.college_name,
        &options.timezone,
        &options.tls_names,
    );
    write_new_file(&data_dir.config_path(), config.as_bytes())?;
    tracing::info!(data_dir = %data_dir.root().display(), key = %key.thumbprint(), "data directory initialised");
    Ok(key.thumbprint())
}

fn write_new_file(path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    let io_error = |source| AgentError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Opens the initialised data dir's settings and database.
pub fn open(data_dir: &DataDir) -> Result<(Settings, Store), AgentError> {
    let settings = Settings::load(data_dir)?;
    let store = Store::open(&data_dir.database_path())?;
    Ok((settings, store))
}

/// Imports one LMS export file.
pub fn import_file(
    data_dir: &DataDir,
    kind: ImportKind,
    file: &Path,
    skip_invalid: bool,
) -> Result<ImportReport, AgentError> {
    let (settings, mut store) = open(data_dir)?;
    let bytes = fs::read(file).map_err(|source| AgentError::Io {
        action: "read",
        path: file.to_owned(),
        source,
    })?;
    let options = ImportOptions {
        skip_invalid,
        today: settings.local_today(),
        source: format!("import {}", file.display()),
        now: crate::clock::from_environment().now_unix(),
    };
    let report =
        import(&mut store, kind, &bytes, &options).map_err(|source| AgentError::Import {
            file: file.display().to_string(),
            source: Box::new(source),
        })?;
    store.close()?;
    Ok(report)
}

/// Seeds the demo college into an initialised data dir.
pub fn seed_demo(data_dir: &DataDir) -> Result<demo::DemoReport, AgentError> {
    let (settings, mut store) = open(data_dir)?;
    let report = demo::seed(
        &mut store,
        crate::clock::from_environment().now_unix(),
        &settings.lesson_times(),
    )
    .map_err(|source| AgentError::Import {
        file: "demo data".into(),
        source: Box::new(source),
    })?;
    store.close()?;
    Ok(report)
}

/// `kasip-agent status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub data_dir: String,
    pub college_bin: String,
    pub college_name: String,
    pub schema_version: i64,
    pub latest_schema_version: i64,
    pub key_thumbprint: String,
    pub counts: RosterCounts,
    /// The agent's time now (Unix seconds), as marks would be stamped.
    pub clock: i64,
    /// Whether this build reads `KASIP_UNSAFE_CLOCK_FILE` (never a release build).
    pub test_clock_build: bool,
}

pub fn status(data_dir: &DataDir) -> Result<Status, AgentError> {
    let (settings, store) = open(data_dir)?;
    let key = DeviceKey::load(&data_dir.key_path())?;
    Ok(Status {
        data_dir: data_dir.root().display().to_string(),
        college_bin: settings.college_bin.to_string(),
        college_name: settings.college_name.clone(),
        schema_version: store.schema_version()?,
        latest_schema_version: latest_version(),
        key_thumbprint: key.thumbprint(),
        counts: RosterCounts::read(&store, settings.local_today())?,
        clock: crate::clock::from_environment().now_unix(),
        test_clock_build: crate::clock::TEST_CLOCK_BUILD,
    })
}

/// A lesson that cannot be opened or closed, in the user's language where the catalog
/// has the sentence.
fn lesson_refusal(
    lang: kasip_core::Lang,
    id: i64,
) -> impl Fn(crate::lessons::LessonError) -> AgentError {
    use crate::lessons::LessonError;
    move |error| match (&error, error.text()) {
        (LessonError::NotOpenYet(_, opens), Some(sentence)) => {
            AgentError::Refused(format!("lesson {id}: {} ({opens})", lang.text(sentence)))
        }
        (_, Some(sentence)) => AgentError::Refused(format!("lesson {id}: {}", lang.text(sentence))),
        (_, None) => AgentError::Lesson(error),
    }
}

fn staff_failure(error: crate::staff::StaffError) -> AgentError {
    AgentError::Staff(error)
}

/// `kasip-agent lesson …`: what a teacher does on their page, for IT and tests.
pub fn lesson(data_dir: &DataDir, command: super::LessonCommand) -> Result<(), AgentError> {
    use super::LessonCommand;
    use crate::lessons;
    let (settings, store) = open(data_dir)?;
    let now = crate::clock::from_environment().now_unix();
    let by = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    match command {
        LessonCommand::List { date, json } => {
            let date = date.unwrap_or_else(|| settings.local_date(now));
            let list =
                lessons::list_for_date(store.connection(), date, now, &settings.lesson_times())
                    .map_err(|source| AgentError::from(store.error(source)))?;
            if json {
                let text = serde_json::to_string_pretty(&list)
                    .map_err(AgentError::json("the JSON output"))?;
                println!("{text}");
            } else if list.is_empty() {
                println!("no lessons on {date}");
            } else {
                for lesson in list {
                    println!(
                        "{:>6}  {} {}-{}  {:<8} {:<30} {:<24} {:<10} {:?} {}/{}",
                        lesson.id,
                        lesson.date,
                        lesson.start,
                        lesson.end,
                        lesson.group,
                        lesson.discipline,
                        lesson.teacher_name,
                        if lesson.mode == "online" {
                            "online".to_owned()
                        } else {
                            lesson.room.clone()
                        },
                        lesson.state,
                        lesson.checked_in,
                        lesson.expected
                    );
                }
            }
        }
        LessonCommand::Open { id, lang } => {
            lessons::open(store.connection(), id, &by, now, &settings.lesson_times())
                .map_err(lesson_refusal(lang, id))?;
            println!("lesson {id}: {}", lang.text(kasip_core::Text::LessonOpened));
        }
        LessonCommand::Close { id, lang } => {
            lessons::close(store.connection(), id, &by, now).map_err(lesson_refusal(lang, id))?;
            println!("lesson {id}: {}", lang.text(kasip_core::Text::LessonClosed));
        }
    }
    store.close()?;
    Ok(())
}

/// `kasip-agent verify`: exit non-zero naming the first row that breaks the chain.
pub fn verify(data_dir: &DataDir) -> Result<(), AgentError> {
    let (_, store) = open(data_dir)?;
    let check = crate::attendance::verify_chain(store.connection())
        .map_err(|source| AgentError::from(store.error(source)))?;
    match check {
        crate::attendance::ChainCheck::Intact { rows, head, .. } => {
            println!("attendance chain intact: {rows} events, head {}", if head.is_empty() { "(empty)" } else { &head });
            let mismatches = crate::coverage::tally_mismatches(store.connection())
                .map_err(|source| AgentError::from(store.error(source)))?;
            match mismatches.first() {
                None => {
                    println!("coverage tally matches the marks");
                    Ok(())
                }
                Some((date, iin)) => Err(AgentError::Refused(format!(
                    "the coverage tally differs from the marks for {} student-day(s), first {iin} on {date}; \
                     the marks themselves are intact: restore the database from a backup and report this",
                    mismatches.len()
                ))),
            }
        }
        crate::attendance::ChainCheck::Broken { row_id, reason } => Err(AgentError::Refused(format!(
            "attendance chain broken at event {row_id}: {reason}; restore the database from a backup and report this"
        ))),
    }
}

/// `kasip-agent staff …`.
pub fn staff(data_dir: &DataDir, command: super::StaffCommand) -> Result<(), AgentError> {
    use super::StaffCommand;
    let (_, store) = open(data_dir)?;
    match command {
        StaffCommand::Add {
            role,
            login,
            groups,
        } => {
            crate::staff::add(store.connection(), &login, role.into(), &groups, unix_now())
                .map_err(staff_failure)?;
            println!(
                "added {} '{login}'; set a password with `kasip-agent staff set-password {login}`",
                Role::from(role).as_str()
            );
        }
        StaffCommand::SetPassword { login_or_iin } => {
            let password = read_new_password(&login_or_iin)?;
            crate::staff::set_password(store.connection(), &login_or_iin, &password, unix_now())
                .map_err(staff_failure)?;
            println!("password set for '{login_or_iin}'; its sessions ended");
        }
        StaffCommand::Disable { login_or_iin } => {
            set_disabled(&store, &login_or_iin, true)?;
            println!("'{login_or_iin}' is disabled; its sessions ended");
        }
        StaffCommand::Enable { login_or_iin } => {
            set_disabled(&store, &login_or_iin, false)?;
            println!("'{login_or_iin}' is enabled");
        }
    }
    store.close()?;
    Ok(())
}

fn set_disabled(store: &Store, login_or_iin: &str, disabled: bool) -> Result<(), AgentError> {
    let found = crate::staff::set_disabled(store.connection(), login_or_iin, disabled, unix_now())
        .map_err(staff_failure)?;
    if found {
        Ok(())
    } else {
        Err(AgentError::Usage(format!(
            "there is no staff account '{login_or_iin}' (a login, or a teacher's IIN)"
        )))
    }
}

/// `kasip-agent student issue-code IIN | --group CODE`: (IIN, code, name) per student.
pub fn issue_binding_codes(
    data_dir: &DataDir,
    iin: Option<kasip_core::Iin>,
    group: Option<&str>,
) -> Result<Vec<(String, String, String)>, AgentError> {
    let (_, store) = open(data_dir)?;
    let connection = store.connection();
    let students: Vec<(String, String)> = match (iin, group) {
        (Some(iin), _) => vec![(iin.as_string(), String::new())],
        (None, Some(group)) => {
            let rows = crate::roster::active_students_of_group(connection, group)
                .map_err(|source| AgentError::from(store.error(source)))?;
            if rows.is_empty()
                && !crate::roster::group_exists(connection, group)
                    .map_err(|source| AgentError::from(store.error(source)))?
            {
                return Err(AgentError::Usage(format!(
                    "there is no group '{group}'; `kasip-agent coverage --month YYYY-MM` lists the groups (codes are case-sensitive)"
                )));
            }
            if rows.is_empty() {
                return Err(AgentError::Refused(format!(
                    "group '{group}' has no active students"
                )));
            }
            rows
        }
        (None, None) => return Err(AgentError::Usage("give an IIN or --group CODE".into())),
    };
    let now = unix_now();
    let issued_by = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let mut codes = Vec::with_capacity(students.len());
    for (student_iin, name) in students {
        let parsed = kasip_core::Iin::parse(&student_iin)
            .map_err(|error| AgentError::Refused(format!("stored IIN {student_iin}: {error}")))?;
        let code = crate::staff::issue_binding_code(connection, &parsed, &issued_by, now)
            .map_err(staff_failure)?;
        codes.push((student_iin, code, name));
    }
    store.close()?;
    Ok(codes)
}

/// `kasip-agent coverage --month YYYY-MM [--group CODE] [--json]`.
pub fn coverage(
    data_dir: &DataDir,
    month: kasip_core::Month,
    group: Option<&str>,
    json: bool,
) -> Result<(), AgentError> {
    let (settings, store) = open(data_dir)?;
    let (rules, _) =
        crate::coverage::rules_in_force(store.connection(), &settings.coverage_rules())
            .map_err(|source| AgentError::from(store.error(source)))?;
    let report = crate::coverage::coverage_for_month(store.connection(), month, group, &rules)
        .map_err(|source| AgentError::from(store.error(source)))?;
    if json {
        let text =
            serde_json::to_string_pretty(&report).map_err(AgentError::json("the JSON output"))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "coverage {} (a student is QR-tracked at ≥ {}‰ QR marks; the rule needs ≥ {}‰ tracked)",
        report.month, report.student_qr_share_per_mille, report.min_coverage_per_mille
    );
    for scope in std::iter::once(&report.college).chain(&report.groups) {
        println!(
            "{:<10} {:>4}/{:<4} tracked  coverage {:>6}  QR marks {:>6} of {:<6} {}",
            scope.scope,
            scope.qr_tracked,
            scope.beneficiaries,
            kasip_core::per_mille_text(scope.coverage_per_mille),
            kasip_core::per_mille_text(scope.qr_share_per_mille),
            scope.present_marks,
            if scope.holds {
                "holds"
            } else {
                "BELOW THE RULE"
            }
        );
    }
    if !report.college.not_tracked.is_empty() {
        println!("beneficiaries not QR-tracked:");
        for student in &report.college.not_tracked {
            println!(
                "  {} {} ({}): {} QR of {} present",
                student.iin, student.name, student.group, student.qr, student.present
            );
        }
    }
    Ok(())
}

/// `kasip-agent red-flags --month YYYY-MM [--json]`.
pub fn red_flags(
    data_dir: &DataDir,
    month: kasip_core::Month,
    json: bool,
) -> Result<(), AgentError> {
    let (settings, store) = open(data_dir)?;
    let today = settings.local_today();
    let flags = crate::red_flags::red_flags_for_month(
        store.connection(),
        month,
        today,
        &settings.red_flag_settings(),
    )
    .map_err(|source| AgentError::from(store.error(source)))?;
    if json {
        let text =
            serde_json::to_string_pretty(&flags).map_err(AgentError::json("the JSON output"))?;
        println!("{text}");
    } else if flags.is_empty() {
        println!("no red flags in {month}");
    } else {
        for flag in &flags {
            println!(
                "{:<32} {:<16} {}",
                flag.kind,
                flag.subject,
                flag.detail.in_english()
            );
        }
    }
    Ok(())
}

/// `kasip-agent month-close YYYY-MM [--force --reason TEXT]`.
pub fn month_close(
    data_dir: &DataDir,
    month: kasip_core::Month,
    force_reason: Option<&str>,
    lang: kasip_core::Lang,
) -> Result<crate::month_close::MonthClosed, AgentError> {
    let (settings, store) = open(data_dir)?;
    let key = DeviceKey::load(&data_dir.key_path())?;
    let now = crate::clock::from_environment().now_unix();
    let by = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let request = crate::month_close::CloseRequest {
        month,
        today: settings.local_date(now),
        now,
        force_reason,
        closed_by: &by,
        lang,
    };
    let closed = crate::month_close::close(
        &store,
        data_dir,
        &settings.month_close_settings(),
        &key,
        &request,
    )?;
    store.close()?;
    Ok(closed)
}

/// The service's uploader, driven from the command line (`sync now`, `keys rotate`).
fn uploader(
    store: Store,
    key: DeviceKey,
    settings: Settings,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    data_dir: &DataDir,
) -> Result<crate::sync::Uploader, AgentError> {
    crate::sync::Uploader::new(
        store,
        key,
        std::sync::Arc::new(settings),
        clock,
        data_dir.clone(),
    )
}

fn runtime() -> Result<tokio::runtime::Runtime, AgentError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::server("cannot start the async runtime"))
}

/// `kasip-agent enroll`.
pub fn enroll(
    data_dir: &DataDir,
    registry: &str,
    code: &str,
) -> Result<(String, Option<String>), AgentError> {
    let (settings, store) = open(data_dir)?;
    let now = crate::clock::from_environment().now_unix();
    let (kid, hostname) = runtime()?.block_on(crate::sync::enroll(
        data_dir, &settings, &store, registry, code, now,
    ))?;
    store.close()?;
    if let Some(hostname) = &hostname {
        crate::certificate::AcmeFiles::new(data_dir).remember_hostname(hostname)?;
    }
    Ok((kid, hostname))
}

/// `kasip-agent cert …`.
pub fn cert(data_dir: &DataDir, command: super::CertCommand) -> Result<(), AgentError> {
    use super::CertCommand;
    let (settings, store) = open(data_dir)?;
    store.close()?;
    let files = crate::certificate::AcmeFiles::new(data_dir);
    let clock = crate::clock::from_environment();
    match command {
        CertCommand::Status { json } => {
            let state = files.load_state();
            let current = files.current();
            if json {
                let value = serde_json::json!({
                    "hostname": state.hostname,
                    "addresses": state.addresses,
                    "not_before": current.as_ref().map(|(_, (from, _))| from),
                    "not_after": current.as_ref().map(|(_, (_, until))| until),
                    "renewal_due_at": current.as_ref().map(|(_, validity)| crate::certificate::renewal_due_at(*validity)),
                    "fingerprint": current.as_ref().map(|(der, _)| kasip_certs::fingerprint_der(der)),
                    "last_renewal": state.last_renewal,
                    "last_error": state.last_error,
                    "failures": state.failures,
                    "next_attempt": state.next_attempt,
                });
                let text = serde_json::to_string_pretty(&value)
                    .map_err(AgentError::json("the JSON output"))?;
                println!("{text}");
                return Ok(());
            }
            let at = |time: i64| crate::clock::local_date_time_text(&settings.timezone, time);
            let when = |time: Option<i64>| time.map_or("never".to_owned(), at);
            println!(
                "name:           {}",
                state.hostname.as_deref().unwrap_or(
                    "none yet (enrol with a registry that serves the agents' zone: kasip-agent enroll)"
                )
            );
            println!(
                "addresses:      {}",
                if state.addresses.is_empty() {
                    "none published".to_owned()
                } else {
                    state.addresses.join(", ")
                }
            );
            match &current {
                Some((der, validity)) => {
                    println!("valid:          {} to {}", at(validity.0), at(validity.1));
                    println!(
                        "renewal from:   {}",
                        at(crate::certificate::renewal_due_at(*validity))
                    );
                    println!("fingerprint:    {}", kasip_certs::fingerprint_der(der));
                }
                None => println!("certificate:    none yet; phones see the self-signed one"),
            }
            println!("last renewal:   {}", when(state.last_renewal));
            if let Some(error) = &state.last_error {
                println!("last error:     {error}");
                println!(
                    "next attempt:   {} ({} failure(s) in a row; `kasip-agent cert renew` tries now)",
                    when(state.next_attempt),
                    state.failures
                );
            }
            Ok(())
        }
        CertCommand::Renew => {
            if !settings.certificate.acme {
                return Err(AgentError::Usage(
                    "certificate.acme is false in config.toml: this agent keeps its own certificate".into(),
                ));
            }
            let settings = std::sync::Arc::new(settings);
            let listen = settings.listen;
            let renewer = crate::certificate::Renewer::new(settings, data_dir.clone(), clock);
            let mut backoff = kasip_sync::Backoff::new(
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(6 * 3600),
            );
            let renewed = runtime()?.block_on(renewer.round(listen, &mut backoff, true))?;
            let state = files.load_state();
            match (renewed, state.hostname) {
                (true, Some(hostname)) => {
                    println!("a new certificate for {hostname} is in {}; the running service serves it within certificate.check_secs", files.chain().display());
                    Ok(())
                }
                _ => Err(AgentError::Refused(
                    "no name to renew: this agent is not enrolled with a registry that serves the agents' zone (kasip-agent enroll)".into(),
                )),
            }
        }
    }
}

/// `kasip-agent sync …`.
pub fn sync(data_dir: &DataDir, command: super::SyncCommand) -> Result<(), AgentError> {
    use super::SyncCommand;
    let (settings, store) = open(data_dir)?;
    let clock = crate::clock::from_environment();
    match command {
        SyncCommand::Status { json } => {
            let status = crate::outbox::status(store.connection(), clock.now_unix())
                .map_err(|source| AgentError::from(store.error(source)))?;
            if json {
                let text = serde_json::to_string_pretty(&status)
                    .map_err(AgentError::json("the JSON output"))?;
                println!("{text}");
            } else {
                print_sync_status(&status, &settings.timezone);
            }
            Ok(store.close()?)
        }
        SyncCommand::Resume => {
            let previous = crate::outbox::clear_alert(store.connection())
                .map_err(|source| AgentError::from(store.error(source)))?;
            match previous {
                Some(alert) => {
                    println!("alert cleared; sending resumes with the same batch. It was: {alert}")
                }
                None => println!("no alert: the queue was not stopped"),
            }
            Ok(store.close()?)
        }
        SyncCommand::Now => {
            let key = DeviceKey::load(&data_dir.key_path())?;
            let uploader = uploader(store, key, settings, clock, data_dir)?;
            let outcome = runtime()?.block_on(uploader.sync_now())?;
            println!(
                "{} batch(es) sealed, {} sent and acknowledged",
                outcome.sealed, outcome.sent
            );
            if let Some(report) = &outcome.beneficiaries {
                println!(
                    "beneficiary list: {} listed, {} change(s), {} unknown to the roster",
                    report["listed"],
                    report["changed"],
                    report["unknown_to_roster"].as_array().map_or(0, Vec::len)
                );
            }
            if let Some(policy) = &outcome.policy {
                println!(
                    "national policy: coverage ≥ {}‰, a student's QR share ≥ {}‰, typed codes {}; this college's config may only be stricter",
                    policy.min_coverage,
                    policy.student_qr_share,
                    if policy.typed_counts_as_qr { "count as QR" } else { "do not count as QR" }
                );
                if policy.qr_requires_passkey {
                    println!("national policy: only check-ins verified by the student's passkey count as QR for this college");
                }
            }
            if let Some(count) = outcome.passkeys {
                println!("passkeys: {count} student(s) of this college have one at the registry");
            }
            match outcome.stopped {
                None => Ok(()),
                Some(reason) => Err(AgentError::Refused(format!(
                    "sending stopped: {reason}; the queue is kept and the service keeps trying (see `kasip-agent sync status`)"
                ))),
            }
        }
    }
}

/// A new password: asked twice without echo on a terminal; the first line of standard
/// input otherwise (scripts pipe it in).
fn read_new_password(login: &str) -> Result<String, AgentError> {
    use std::io::IsTerminal;
    let io = |source| AgentError::Io {
        action: "read the password from",
        path: "standard input".into(),
        source,
    };
    if !std::io::stdin().is_terminal() {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password).map_err(io)?;
        return Ok(password.trim_end_matches(['\r', '\n']).to_owned());
    }
    let password =
        rpassword::prompt_password(format!("new password for '{login}': ")).map_err(io)?;
    let again = rpassword::prompt_password("the same again: ").map_err(io)?;
    if password != again {
        return Err(AgentError::Usage(
            "the two passwords differ; nothing was changed. Run the command again".into(),
        ));
    }
    Ok(password)
}

fn print_sync_status(status: &crate::outbox::SyncStatus, timezone: &kasip_core::CollegeTimezone) {
    // The college's local time, as people read it (`--json` keeps Unix times).
    let when = |at: Option<i64>| {
        at.map_or("never".to_owned(), |at| {
            crate::clock::local_date_time_text(timezone, at)
        })
    };
    println!(
        "registry:            {}",
        status
            .registry
            .as_deref()
            .unwrap_or("not enrolled (kasip-agent enroll)")
    );
    println!(
        "queued:              {} batch(es), {} record(s); {} record(s) not sealed yet",
        status.queued_batches, status.queued_records, status.unsealed_records
    );
    println!(
        "oldest unsent:       {}",
        status
            .oldest_unsent_age_secs
            .map_or("nothing waiting".to_owned(), |age| format!("{age} s ago"))
    );
    println!(
        "acknowledged:        {} batch(es), {} record(s), {} rejected by the registry",
        status.acknowledged_batches, status.acknowledged_records, status.rejected_records
    );
    println!("last success:        {}", when(status.last_success_at));
    if let Some(error) = &status.last_error {
        println!(
            "last error:          {error} ({})",
            when(status.last_error_at)
        );
    }
    match &status.alert {
        Some(alert) => println!("ALERT (queue stopped): {alert}"),
        None => println!("alert:               none"),
    }
    if let Some(report) = &status.beneficiary_pull {
        println!("beneficiary pull:    {report}");
    }
}

pub fn kiosk(data_dir: &DataDir, command: super::KioskCommand) -> Result<(), AgentError> {
    use super::KioskCommand;
    use crate::kiosks::Place;
    let (settings, store) = open(data_dir)?;
    let connection = store.connection();
    let now = unix_now();
    let database = |source| AgentError::from(store.error(source));
    match command {
        KioskCommand::Add {
            room,
            site,
            entrance,
        } => {
            let place = match (room, entrance) {
                (Some(room), _) => Place::Room {
                    room: room.trim().to_owned(),
                    site: site.unwrap_or_default().trim().to_owned(),
                },
                (None, Some(site)) => Place::Entrance {
                    site: site.trim().to_owned(),
                },
                (None, None) => {
                    return Err(AgentError::Usage(
                        "give --room ROOM or --entrance SITE".into(),
                    ))
                }
            };
            let issued = crate::kiosks::add(connection, &place, "cli", now).map_err(database)??;
            if let Place::Room { room, .. } = &place {
                let lessons = crate::lessons::count_in_room(connection, room).map_err(database)?;
                if lessons == 0 {
                    eprintln!("warning: no lesson in the timetable is in room '{room}' yet; scans there will mark nothing until one is");
                }
            }
            let (cert_path, _) = settings
                .tls_pem
                .clone()
                .unwrap_or_else(|| (data_dir.tls_cert_path(), data_dir.tls_key_path()));
            let fingerprint = fs::read_to_string(&cert_path)
                .ok()
                .and_then(|pem| kasip_certs::fingerprint_pem(&pem))
                .unwrap_or_else(|| format!("(no certificate at {})", cert_path.display()));
            println!("kiosk {} for {}", issued.id, place.describe());
            println!("enrolment code: {} (valid 24 h, once)", issued.code);
            println!("agent certificate SHA-256: {fingerprint}");
            let acme = crate::certificate::AcmeFiles::new(data_dir);
            match (acme.load_state().hostname, acme.current()) {
                // A name with a public certificate: verified on the kiosk, renewals
                // included; nothing to compare by eye.
                (Some(hostname), Some(_)) => println!(
                    "on the kiosk: kasip-kiosk enroll --agent https://{hostname}:{} --code {}",
                    settings.listen.port(),
                    issued.code
                ),
                _ => println!(
                    "on the kiosk: kasip-kiosk enroll --agent https://AGENT:PORT --code {} --fingerprint {fingerprint}",
                    issued.code
                ),
            }
            Ok(())
        }
        KioskCommand::List { json } => {
            let rows = crate::kiosks::list(connection, now).map_err(database)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows)
                        .map_err(AgentError::json("the JSON output"))?
                );
            } else if rows.is_empty() {
                println!("no kiosks; add one with `kasip-agent kiosk add --room ROOM` or `--entrance SITE`");
            }
            if !json {
                for row in rows {
                    println!(
                        "{}\t{}\t{}\t{} scan(s){}",
                        row.id,
                        row.place,
                        row.state,
                        row.scans,
                        row.last_scan_at
                            .map(|at| format!(", last at {at}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        KioskCommand::Revoke { id } => {
            crate::kiosks::revoke(connection, id, now).map_err(database)??;
            println!("kiosk {id} revoked; its scans are refused from now on");
            Ok(())
        }
    }
}

/// `kasip-agent keys show|rotate`.
pub fn keys(data_dir: &DataDir, command: super::KeysCommand) -> Result<(), AgentError> {
    use super::KeysCommand;
    use std::os::unix::fs::PermissionsExt;
    match command {
        KeysCommand::Show => {
            let (_, store) = open(data_dir)?;
            let key = DeviceKey::load(&data_dir.key_path())?;
            let mode = fs::metadata(data_dir.key_path())
                .map(|metadata| metadata.permissions().mode() & 0o777)
                .unwrap_or(0);
            let database = |source| AgentError::from(store.error(source));
            let agent_id = crate::outbox::agent_id(store.connection(), &key).map_err(database)?;
            let registry = crate::sync::enrolment(store.connection()).map_err(database)?;
            println!(
                "key file:    {} (mode {mode:o})",
                data_dir.key_path().display()
            );
            println!("thumbprint:  {}", key.thumbprint());
            println!("agent id:    {agent_id}");
            println!(
                "registry:    {}",
                registry.map_or("not enrolled".to_owned(), |enrolled| enrolled.registry_url)
            );
            print!("{}", DeviceKey::public_key_pem(key.public_key()));
            Ok(())
        }
        KeysCommand::Rotate => rotate_key(data_dir),
    }
}

fn rotate_key(data_dir: &DataDir) -> Result<(), AgentError> {
    let _lock = crate::backup::ServiceLock::acquire(data_dir).map_err(|_| {
        AgentError::Usage(
            "the agent is running and signs with the current key; stop it first (systemctl stop kasip-agent), rotate, start it"
                .into(),
        )
    })?;
    let (settings, store) = open(data_dir)?;
    let database = |source| AgentError::from(store.error(source));
    let connection = store.connection();
    let key = DeviceKey::load(&data_dir.key_path())?;
    let next_path = crate::sync::next_key_path(data_dir);
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| AgentError::Io {
            action,
            path,
            source,
        }
    };
    let now = unix_now();
    if crate::sync::enrolment(connection)
        .map_err(database)?
        .is_none()
    {
        let unacknowledged =
            crate::registry_link::unacknowledged_batches(connection).map_err(database)?;
        if unacknowledged > 0 {
            return Err(AgentError::Refused(format!(
                "{unacknowledged} batch(es) are signed with the current key and wait for enrolment; enrol first (kasip-agent enroll), then rotate"
            )));
        }
        let _ = fs::remove_file(&next_path);
        let new = DeviceKey::generate_to(&next_path)?;
        let retired = data_dir.root().join(format!("agent-key.retired-{now}.pem"));
        fs::copy(data_dir.key_path(), &retired).map_err(io_error("keep", &retired))?;
        fs::rename(&next_path, data_dir.key_path()).map_err(io_error("install", &next_path))?;
        println!(
            "new key {} (not enrolled: nothing to announce); the old key is kept as {}",
            new.thumbprint(),
            retired.display()
        );
        return Ok(());
    }
    let pending = crate::registry_link::waiting_rotation(connection).map_err(database)?;
    let new_kid = match pending {
        Some(kid) => {
            println!("a rotation to {kid} is already waiting for the registry: sending it");
            kid
        }
        None => {
            let _ = fs::remove_file(&next_path);
            let new = DeviceKey::generate_to(&next_path)?;
            crate::registry_link::start_rotation(
                connection,
                &key.thumbprint(),
                new.public_key(),
                &new.thumbprint(),
                now,
            )
            .map_err(database)?;
            new.thumbprint()
        }
    };
    let uploader = uploader(
        store,
        key,
        settings,
        crate::clock::from_environment(),
        data_dir,
    )?;
    let outcome = runtime()?.block_on(uploader.sync_now())?;
    if uploader.key().thumbprint() == new_kid {
        println!(
            "new key {new_kid}: announced to the registry (signed by the old key) and acknowledged; the old key is kept as agent-key.retired-*.pem"
        );
        return Ok(());
    }
    Err(AgentError::Refused(format!(
        "the registry has not acknowledged the new key {new_kid} yet{}; nothing is lost: the agent finishes the rotation when it does (start the service, or run `kasip-agent keys rotate` again)",
        outcome.stopped.map(|reason| format!(" ({reason})")).unwrap_or_default()
    )))
}
