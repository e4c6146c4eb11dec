//! Command-line flags as clap parses them; `run` turns them into calls on the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kasip_core::{Bin, CollegeTimezone, Date, Iin, Month};

pub mod commands;

use crate::config::{DataDir, Settings};
use crate::demo;
use crate::error::AgentError;
use crate::import::{ImportKind, ImportReport};
use crate::staff::Role;
use commands::InitOptions;

#[derive(Debug, Parser)]
#[command(
    name = "kasip-agent",
    version,
    about = "KasipTech college agent: classroom QR attendance, coverage rule and sync to e-Qazyna",
    after_help = "Start a demo college in one step: kasip-agent serve\nDocumentation: README.md in the source tree, packaging/README.md for IT."
)]
pub struct Cli {
    /// Directory holding config.toml, the database and the identity key
    /// [default: ~/.local/share/kasip-agent; the system service uses /var/lib/kasip]
    #[arg(long, global = true, env = "KASIP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// config.toml outside the data dir [default: DIR/config.toml; the system service
    /// uses /etc/kasip/config.toml, and so does the CLI where that file exists]
    #[arg(long, global = true, env = "KASIP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory: config.toml, Ed25519 identity key (0600) and database
    Init {
        /// The college's BIN (12 digits, valid check digit) [default: the demo college's]
        #[arg(long, value_name = "BIN", value_parser = parse_bin)]
        college_bin: Option<Bin>,
        /// The college's official name [default: the demo college's]
        #[arg(long, value_name = "NAME")]
        college_name: Option<String>,
        /// Host name or IP address phones use to reach the agent, for its TLS certificate
        /// (repeat for several; localhost and 127.0.0.1 are always included)
        #[arg(long = "tls-name", value_name = "NAME")]
        tls_names: Vec<String>,
        /// Time zone of the timetable: Asia/Almaty or another Kazakh zone, UTC, UTC+HH:MM
        #[arg(long, value_name = "ZONE", default_value = crate::config::DEFAULT_TIMEZONE, value_parser = parse_timezone)]
        timezone: CollegeTimezone,
    },
    /// Run the agent's web server until SIGTERM or Ctrl-C.
    ///
    /// On a data directory that does not exist yet, first initialises it with the demo
    /// college and seeds demo data, so `kasip-agent serve` alone shows a working agent.
    /// A repeated flag takes its last value (a wrapper script may add its own --listen).
    #[command(args_override_self = true)]
    Serve {
        /// Address and port to listen on [default: server.listen from config.toml]
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Seed the demo college (students, teachers, this week's timetable) before serving
        #[arg(long)]
        demo: bool,
    },
    /// Seed the demo college into an initialised data directory (safe to repeat)
    Demo,
    /// Import an LMS export (CSV, `;` or `,`, UTF-8 with or without BOM); all rows or none
    Import {
        /// Which export the file is
        #[arg(value_enum)]
        kind: ImportKindArg,
        /// The CSV file
        file: PathBuf,
        /// Import the valid rows and list the bad ones instead of importing nothing
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Show the data directory, schema version, key fingerprint and roster counts
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Check config.toml and exit non-zero with the reason if it is not valid
    Validate,
    /// List, open and close lessons (what teachers do on their page)
    #[command(subcommand)]
    Lesson(LessonCommand),
    /// Walk the attendance hash chain; names the first row that does not match
    Verify,
    /// Red flags of a month: idle groups, unlicensed sites, beneficiaries without
    /// attendance, shared devices, two rooms at once, manual-mark outliers
    RedFlags {
        /// The month, YYYY-MM
        #[arg(long, value_parser = parse_month)]
        month: Month,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Close a month: freeze it, total it per student, write the signed statement
    /// (DATA_DIR/statements) and the HTML and CSV reports (DATA_DIR/reports)
    MonthClose {
        /// The month, YYYY-MM
        #[arg(value_parser = parse_month)]
        month: Month,
        /// Close a month that has not ended yet (needs --reason)
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why the month is closed early
        #[arg(long)]
        reason: Option<String>,
        /// Language of the HTML, CSV and XLSX reports: kk, ru or en (the signed
        /// statement is always English)
        #[arg(long, value_parser = parse_lang, default_value = kasip_core::text::FALLBACK_LANGUAGE)]
        lang: kasip_core::Lang,
    },
    /// The 50% QR coverage rule for a month: college and groups, and who is not tracked
    Coverage {
        /// The month, YYYY-MM
        #[arg(long, value_parser = parse_month)]
        month: Month,
        /// Only this group
        #[arg(long, value_name = "CODE")]
        group: Option<String>,
        /// Print JSON (shape in the README) instead of text
        #[arg(long)]
        json: bool,
    },
    /// Staff accounts: add admins and curators, set passwords
    #[command(subcommand)]
    Staff(StaffCommand),
    /// The agent's identity key: show it, or rotate it (the new key is announced to the
    /// registry in a batch signed by the old one)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bring the database to this version's schema (the package's upgrade runs it; every
    /// command also does it on open)
    Migrate,
    /// Check this installation: permissions, database integrity and chain, free disk,
    /// TLS certificate, clock, registry and outbox; each finding says what to do. Exit 1
    /// when any check fails
    Doctor {
        #[arg(long)]
        json: bool,
        /// Do not contact the registry
        #[arg(long)]
        offline: bool,
    },
    /// Copy the database to FILE while the agent runs (one consistent snapshot, 0600),
    /// then check the copy
    Backup { file: PathBuf },
    /// Replace the database with a backup after checking it; refuses while the agent
    /// runs. The replaced database is kept beside it
    Restore { file: PathBuf },
    /// Kiosks at classroom doors and entrances: add (prints the one-time enrolment code),
    /// list, revoke
    #[command(subcommand)]
    Kiosk(KioskCommand),
    /// Student phone binding
    #[command(subcommand)]
    Student(StudentCommand),
    /// Enrol this agent with the e-Qazyna registry: sends its public key and BIN with
    /// the one-time code the registry issued
    Enroll {
        /// The registry's base URL (https://…; http:// only on this machine)
        #[arg(long, value_name = "URL")]
        registry: String,
        /// The one-time enrolment code
        #[arg(long)]
        code: String,
    },
    /// Batches to the registry: send now, see the queue, resume after an alert
    #[command(subcommand)]
    Sync(SyncCommand),
    /// The agent's name in the registry's zone and its publicly trusted certificate
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// The name, its published addresses, the certificate's expiry, the last renewal and
    /// its error
    Status {
        /// Print it as JSON
        #[arg(long)]
        json: bool,
    },
    /// Publish the name's addresses and obtain a new certificate now; the running
    /// service serves it within certificate.check_secs
    Renew,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Seal every pending record into batches, send them all, pull the beneficiary list
    Now,
    /// Queued batches and records, oldest unsent age, last success, last error, alert
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Clear the alert that stopped the queue (after fixing its cause) so sending
    /// resumes with the same batch
    Resume,
}

#[derive(Debug, Subcommand)]
pub enum LessonCommand {
    /// Lessons of a day with their state and check-in counts
    List {
        /// The day [default: today in the college's time zone]
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        date: Option<Date>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Open a lesson so that its classroom code accepts check-ins: from
    /// lesson.open_early_mins before its start to auto_close_grace_mins after its end
    Open {
        id: i64,
        /// Language of the answer: kk, ru or en
        #[arg(long, value_parser = parse_lang, default_value = kasip_core::text::FALLBACK_LANGUAGE)]
        lang: kasip_core::Lang,
    },
    /// Close a lesson: its codes stop working at once
    Close {
        id: i64,
        /// Language of the answer: kk, ru or en
        #[arg(long, value_parser = parse_lang, default_value = kasip_core::text::FALLBACK_LANGUAGE)]
        lang: kasip_core::Lang,
    },
}

/// `--role`: the staff roles as the command line spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Teacher,
    Curator,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Teacher => Role::Teacher,
            RoleArg::Curator => Role::Curator,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Which LMS export `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportKindArg {
    Students,
    Teachers,
    Timetable,
    /// Grades from the LMS: iin;discipline;assessment;score;credits;date
    Grades,
}

impl From<ImportKindArg> for ImportKind {
    fn from(kind: ImportKindArg) -> Self {
        match kind {
            ImportKindArg::Students => ImportKind::Students,
            ImportKindArg::Teachers => ImportKind::Teachers,
            ImportKindArg::Timetable => ImportKind::Timetable,
            ImportKindArg::Grades => ImportKind::Grades,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Add an admin or curator account (teachers sign in with their IIN after
    /// `set-password`)
    Add {
        #[arg(long, value_enum)]
        role: RoleArg,
        login: String,
        /// A group the curator looks after (repeat for several)
        #[arg(long = "group", value_name = "CODE")]
        groups: Vec<String>,
    },
    /// Set a password, read from standard input (teachers sign in with their IIN); the
    /// account's sessions end
    SetPassword { login_or_iin: String },
    /// Disable an account: it cannot sign in and its sessions end at once
    Disable { login_or_iin: String },
    /// Enable a disabled account again
    Enable { login_or_iin: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Thumbprint, file and mode, public key, the agent's id at the registry
    Show,
    /// Make a new key; when enrolled, announce it to the registry signed by the current
    /// key and switch once the registry acknowledges. Stop the service first
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum KioskCommand {
    /// Register a kiosk and print its one-time enrolment code (valid 24 h) and this
    /// agent's certificate fingerprint, for `kasip-kiosk enroll` on the kiosk
    Add {
        /// A classroom door: scans mark the lesson held in this room (as in the timetable)
        #[arg(
            long,
            value_name = "ROOM",
            required_unless_present = "entrance",
            conflicts_with = "entrance"
        )]
        room: Option<String>,
        /// With --room: the site of the room, when room names repeat across sites
        #[arg(long, value_name = "SITE", requires = "room")]
        site: Option<String>,
        /// A site's entrance: scans record campus presence
        #[arg(long, value_name = "SITE")]
        entrance: Option<String>,
    },
    /// List kiosks: place, state, last scan
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a kiosk: its credential stops working at once
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum StudentCommand {
    /// Print a one-time code the student enters with their IIN at /bind (valid 24 h);
    /// with --group, one line `IIN;code;name` per active student of the group
    IssueCode {
        #[arg(value_parser = parse_iin, required_unless_present = "group", conflicts_with = "group")]
        iin: Option<Iin>,
        /// Issue codes for every active student of this group
        #[arg(long, value_name = "CODE")]
        group: Option<String>,
    },
}

fn parse_lang(text: &str) -> Result<kasip_core::Lang, String> {
    kasip_core::Lang::from_code(text).ok_or_else(|| {
        let known: Vec<&str> = kasip_core::Lang::all().map(|lang| lang.code()).collect();
        format!(
            "'{text}' is not a language of the catalog ({})",
            known.join(", ")
        )
    })
}

fn parse_month(text: &str) -> Result<Month, String> {
    Month::parse(text).map_err(|error| error.to_string())
}

fn parse_date(text: &str) -> Result<Date, String> {
    Date::parse(text).map_err(|error| error.to_string())
}

fn parse_iin(text: &str) -> Result<Iin, String> {
    Iin::parse(text).map_err(|error| format!("IIN {error}"))
}

fn parse_bin(text: &str) -> Result<Bin, String> {
    Bin::parse(text).map_err(|error| format!("BIN {error}"))
}

fn parse_timezone(text: &str) -> Result<CollegeTimezone, String> {
    CollegeTimezone::parse(text).map_err(|error| error.to_string())
}

/// Human format on a terminal; plain lines without colours or timestamps otherwise, since
/// journald stamps each line itself.
pub use kasip_certs::process::init_logging;

fn print_report(label: &str, report: &ImportReport) {
    println!(
        "{label}: {} rows: {} added, {} updated, {} unchanged",
        report.rows, report.added, report.updated, report.unchanged
    );
    if report.groups_created > 0 {
        println!("  {} new group(s) created", report.groups_created);
    }
    if report.sites_created > 0 {
        println!("  {} new site(s) created", report.sites_created);
    }
    if report.contingent_events > 0 {
        println!(
            "  {} contingent event(s) recorded",
            report.contingent_events
        );
    }
    if !report.missing_from_export.is_empty() {
        println!(
            "  {} in the database but not in this export (kept, not deleted; check them):",
            report.missing_from_export.len()
        );
        for person in &report.missing_from_export {
            println!("    {person}");
        }
    }
    if !report.skipped.is_empty() {
        println!("  {} bad row(s) skipped:", report.skipped.len());
        for row in &report.skipped {
            println!("    {row}");
        }
    }
}

pub fn run(cli: Cli) -> Result<(), AgentError> {
    let data_dir = DataDir::from_options(cli.data_dir, cli.config);
    match cli.command {
        Command::Init {
            college_bin,
            college_name,
            tls_names,
            timezone,
        } => {
            let demo = InitOptions::demo();
            let using_demo_bin = college_bin.is_none();
            let options = InitOptions {
                college_bin: college_bin.unwrap_or(demo.college_bin),
                college_name: college_name.unwrap_or(demo.college_name),
                timezone,
                tls_names,
            };
            let thumbprint = commands::init(&data_dir, &options)?;
            println!("initialised {}", data_dir.root().display());
            println!("identity key thumbprint: {thumbprint}");
            if using_demo_bin {
                println!("no --college-bin given: the demo college's BIN is in config.toml; set yours before enrolling");
            }
            Ok(())
        }
        Command::Serve { listen, demo } => serve(&data_dir, listen, demo),
        Command::Demo => {
            let report = commands::seed_demo(&data_dir)?;
            print_report("demo teachers", &report.teachers);
            print_report("demo students", &report.students);
            print_report("demo timetable", &report.timetable);
            match report.marks {
                0 => println!("demo marks: the college already has marks, none added"),
                marks => println!("demo marks: {marks} added for the lessons before today"),
            }
            Ok(())
        }
        Command::Import {
            kind,
            file,
            skip_invalid,
        } => {
            let report = commands::import_file(&data_dir, kind.into(), &file, skip_invalid)?;
            print_report(&file.display().to_string(), &report);
            Ok(())
        }
        Command::Status { json } => {
            let status = commands::status(&data_dir)?;
            if json {
                let text = serde_json::to_string_pretty(&status)
                    .map_err(AgentError::json("the status"))?;
                println!("{text}");
            } else {
                let counts = &status.counts;
                println!("data dir:        {}", status.data_dir);
                println!(
                    "college:         {} (BIN {})",
                    status.college_name, status.college_bin
                );
                println!(
                    "schema version:  {} (latest {})",
                    status.schema_version, status.latest_schema_version
                );
                println!("key thumbprint:  {}", status.key_thumbprint);
                println!(
                    "roster:          {} sites, {} groups, {} students ({} beneficiaries), {} teachers",
                    counts.sites, counts.groups, counts.students, counts.beneficiaries, counts.teachers
                );
                println!(
                    "timetable:       {} lessons, {} today",
                    counts.lessons, counts.lessons_today
                );
                println!("contingent:      {} events", counts.contingent_events);
            }
            Ok(())
        }
        Command::Lesson(command) => commands::lesson(&data_dir, command),
        Command::Verify => commands::verify(&data_dir),
        Command::MonthClose {
            month,
            force,
            reason,
            lang,
        } => {
            let closed = commands::month_close(
                &data_dir,
                month,
                force.then_some(reason.as_deref()).flatten(),
                lang,
            )?;
            println!(
                "{month} closed: {} beneficiaries, {}",
                closed.students,
                if closed.compliant {
                    "compliant"
                } else {
                    "NON-COMPLIANT"
                }
            );
            for reason in &closed.reasons {
                println!("  {}", reason.in_english());
            }
            println!("statement: {}", closed.statement.display());
            println!(
                "reports:   {} and {}",
                closed.html.display(),
                closed.csv.display()
            );
            Ok(())
        }
        Command::RedFlags { month, json } => commands::red_flags(&data_dir, month, json),
        Command::Coverage { month, group, json } => {
            commands::coverage(&data_dir, month, group.as_deref(), json)
        }
        Command::Staff(command) => commands::staff(&data_dir, command),
        Command::Student(StudentCommand::IssueCode { iin, group }) => {
            for (iin, code, name) in
                commands::issue_binding_codes(&data_dir, iin, group.as_deref())?
            {
                if group.is_some() {
                    println!("{iin};{code};{name}");
                } else {
                    println!("{code}");
                }
            }
            Ok(())
        }
        Command::Kiosk(command) => commands::kiosk(&data_dir, command),
        Command::Keys(command) => commands::keys(&data_dir, command),
        Command::Migrate => {
            let before = crate::store::schema_version_of(&data_dir.database_path())?;
            commands::open(&data_dir)?;
            println!(
                "database schema version {before} → {}",
                crate::store::latest_version()
            );
            Ok(())
        }
        Command::Doctor { json, offline } => {
            // The agent's clock, as marks are stamped (the system's in a release build).
            let now = crate::clock::from_environment().now_unix();
            let findings = crate::doctor::examine(&data_dir, now, !offline);
            let failed = findings
                .iter()
                .filter(|finding| finding.health == crate::doctor::Health::Fail)
                .count();
            if json {
                let report = serde_json::json!({ "ok": failed == 0, "findings": findings });
                println!("{report:#}");
            } else {
                for finding in &findings {
                    let mark = match finding.health {
                        crate::doctor::Health::Ok => "ok  ",
                        crate::doctor::Health::Warn => "WARN",
                        crate::doctor::Health::Fail => "FAIL",
                    };
                    println!("{mark} {}: {}", finding.check, finding.detail);
                    if !finding.fix.is_empty() && finding.health != crate::doctor::Health::Ok {
                        println!("     fix: {}", finding.fix);
                    }
                }
            }
            if failed > 0 {
                return Err(AgentError::Refused(format!(
                    "{failed} check(s) failed; see the fixes above"
                )));
            }
            Ok(())
        }
        Command::Backup { file } => {
            commands::open(&data_dir)?;
            let summary = crate::backup::backup(&data_dir, &file)?;
            println!(
                "backup {}: schema v{}, {} attendance events, chain head {}, {} students, {} outbox batches; integrity ok",
                file.display(),
                summary.schema_version,
                summary.attendance_events,
                if summary.chain_head.is_empty() { "(empty)" } else { &summary.chain_head },
                summary.students,
                summary.outbox_batches
            );
            Ok(())
        }
        Command::Restore { file } => {
            commands::open(&data_dir)?;
            let (summary, kept) =
                crate::backup::restore(&data_dir, &file, crate::clock::unix_now())?;
            println!(
                "restored {}: {} attendance events, chain head {}; the previous database is kept as {}",
                file.display(),
                summary.attendance_events,
                if summary.chain_head.is_empty() { "(empty)" } else { &summary.chain_head },
                kept.display()
            );
            println!("start the agent again (systemctl start kasip-agent); if it was enrolled, its start-up checkpoint with the registry will say whether this backup is older than what the registry holds");
            Ok(())
        }
        Command::Enroll { registry, code } => {
            let (kid, hostname) = commands::enroll(&data_dir, &registry, &code)?;
            println!("enrolled with {registry} as {kid}; batches will be sent from now on");
            if let Some(hostname) = hostname {
                println!("the agent's name is {hostname}; the running service obtains its certificate within certificate.check_secs (see `kasip-agent cert status`)");
            }
            Ok(())
        }
        Command::Sync(command) => commands::sync(&data_dir, command),
        Command::Cert(command) => commands::cert(&data_dir, command),
        Command::Validate => {
            Settings::load(&data_dir)?;
            println!("{}: valid", data_dir.config_path().display());
            Ok(())
        }
    }
}

/// On SIGHUP (`systemctl reload`), the certificates and keys are read again; connections
/// already open keep theirs, new handshakes get the new one.
fn reload_tls_on_sighup(
    served: std::sync::Arc<crate::certificate::ServedCertificates>,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    acme_files: crate::certificate::AcmeFiles,
) -> Result<impl std::future::Future<Output = ()>, AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups =
        signal(SignalKind::hangup()).map_err(AgentError::server("cannot handle SIGHUP"))?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            match served.reload_fallback(&cert_path, &key_path) {
                Ok(()) => tracing::info!(cert = %cert_path.display(), "TLS certificate reloaded"),
                Err(reason) => tracing::error!(
                    %reason,
                    cert = %cert_path.display(),
                    "cannot reload the TLS certificate; still serving the previous one"
                ),
            }
            if let Err(reason) = served.reload_named(&acme_files) {
                tracing::error!(%reason, "cannot reload the name's certificate; still serving the previous one");
            }
        }
    })
}

/// Logs a warning at start and daily while the certificate expires within 30 days.
async fn warn_before_expiry(cert_path: std::path::PathBuf, state: crate::web::AppState) {
    loop {
        if let Some(warning) = crate::service::expiry_warning(&cert_path, state.now()) {
            tracing::warn!("{warning}");
        }
        tokio::time::sleep(std::time::Duration::from_secs(86_400)).await;
    }
}

/// Every ten minutes, on its own connection: keeps the clock's high-water mark, deletes
/// security events past
/// `security.events_keep_days`, and makes the day's backup once the local hour reaches
/// `backup.hour` (the first time ten minutes after start: a restart does not copy the
/// database while the agent is starting).
async fn housekeeping(
    data_dir: DataDir,
    state: crate::web::AppState,
    settings: std::sync::Arc<Settings>,
) {
    // One connection for the task's life, opened at its first round (not every 10 min).
    let connection: std::sync::Arc<std::sync::Mutex<Option<crate::store::Store>>> =
        std::sync::Arc::default();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        let connection = std::sync::Arc::clone(&connection);
        let now = state.now();
        let high_water = state.clock_high_water();
        let local = now + settings.timezone.offset_seconds();
        let backup_due = local.rem_euclid(86_400) / 3600 >= i64::from(settings.backup_hour);
        let date = settings.local_date(now);
        let (data_dir, keep) = (data_dir.clone(), settings.backup_keep as usize);
        let keep_days = settings.security_events_keep_days;
        let made = tokio::task::spawn_blocking(move || {
            let mut opened = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let store = match &mut *opened {
                Some(store) => store,
                slot @ None => slot.insert(crate::store::Store::open(&data_dir.database_path())?),
            };
            crate::staff::keep_clock_high_water(store.connection(), high_water)
                .map_err(|source| AgentError::from(store.error(source)))?;
            prune_security_events(store, now, keep_days)?;
            if backup_due {
                crate::backup::nightly(&data_dir, store, date, keep)
            } else {
                Ok(None)
            }
        })
        .await;
        match made {
            Ok(Ok(Some(path))) => tracing::info!(path = %path.display(), "nightly backup made"),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::error!(error = %crate::error::report(&error), "housekeeping (old security events, nightly backup) failed; will retry")
            }
            Err(error) => {
                tracing::error!(error = %crate::error::report(&error), "housekeeping task failed")
            }
        }
    }
}

/// Deletes the security events older than `keep_days`, saying how many went.
fn prune_security_events(
    store: &crate::store::Store,
    now: i64,
    keep_days: u32,
) -> Result<(), AgentError> {
    let pruned = crate::security_events::prune(store.connection(), now, keep_days)
        .map_err(|source| AgentError::from(store.error(source)))?;
    if pruned > 0 {
        tracing::info!(pruned, keep_days, "old security events deleted");
    }
    Ok(())
}

/// Pings systemd's watchdog while the database answers; a hung agent stops pinging and
/// is restarted.
async fn watchdog(interval: std::time::Duration, state: crate::web::AppState) {
    loop {
        tokio::time::sleep(interval).await;
        match state.probe().await {
            Ok(()) => {
                crate::service::notify("WATCHDOG=1");
            }
            Err(error) => {
                tracing::error!(error = %crate::error::report(&error), "health probe failed: not pinging the watchdog")
            }
        }
    }
}

fn serve(data_dir: &DataDir, listen: Option<SocketAddr>, demo: bool) -> Result<(), AgentError> {
    let fresh = !data_dir.root().exists();
    if fresh {
        commands::init(data_dir, &InitOptions::demo())?;
        tracing::info!(data_dir = %data_dir.root().display(), "new data directory: initialised with the demo college");
    }
    if fresh || demo {
        let report = commands::seed_demo(data_dir)?;
        tracing::info!(
            students = report.students.added + report.students.updated + report.students.unchanged,
            lessons =
                report.timetable.added + report.timetable.updated + report.timetable.unchanged,
            marks = report.marks,
            "demo college seeded"
        );
    }
    let (settings, mut write_store) = commands::open(data_dir)?;
    if settings.college_bin == demo::demo_bin() {
        let now = crate::clock::from_environment().now_unix();
        // A convenience of the demo: never a reason not to serve.
        match demo::ensure_lesson_now(&mut write_store, now, &settings.lesson_times()) {
            Ok(true) => tracing::info!(
                "demo college: a lesson starting now was added, to open from /teacher"
            ),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "demo college: no lesson for now was added"),
        }
    }
    prune_security_events(
        &write_store,
        crate::clock::from_environment().now_unix(),
        settings.security_events_keep_days,
    )?;
    let read_store = crate::store::Store::open(&data_dir.database_path())?;
    let reports_store = crate::store::Store::open(&data_dir.database_path())?;
    let sync_store = crate::store::Store::open(&data_dir.database_path())?;
    let address = listen.unwrap_or(settings.listen);
    if settings.plain_http && !address.ip().is_loopback() {
        return Err(AgentError::Usage(format!(
            "plain HTTP is allowed only on loopback, not {address}; remove server.plain_http or listen on 127.0.0.1"
        )));
    }
    let (cert_path, key_path) = settings
        .tls_pem
        .clone()
        .unwrap_or_else(|| (data_dir.tls_cert_path(), data_dir.tls_key_path()));
    if !settings.plain_http && settings.tls_pem.is_none() && !cert_path.exists() {
        // A data dir made before TLS existed: make its self-signed pair now.
        kasip_certs::write_self_signed(&settings.tls_names, &cert_path, &key_path)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(AgentError::server("cannot start the async runtime"))?;
    let writer_thread = runtime.block_on(async move {
        let shutdown = crate::web::shutdown_signal()?;
        let acme_files = crate::certificate::AcmeFiles::new(data_dir);
        let (transport, served) = if settings.plain_http {
            (crate::web::Transport::PlainHttp, None)
        } else {
            // One crypto library for the whole agent: ring, as for the identity key.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let served = crate::certificate::ServedCertificates::load(&cert_path, &key_path, &acme_files)
                .map_err(|reason| AgentError::Config {
                    path: cert_path.clone(),
                    reason: format!("cannot load the TLS certificate and key ({}): {reason}", key_path.display()),
                })?;
            let served = std::sync::Arc::new(served);
            let config = axum_server::tls_rustls::RustlsConfig::from_config(served.server_config());
            (crate::web::Transport::Https(config), Some(served))
        };
        let listener = std::net::TcpListener::bind(address)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(AgentError::server(format!("cannot listen on {address} (is another agent running? choose another port with --listen)")))?;
        let bound = listener
            .local_addr()
            .map_err(AgentError::server("cannot read the listening address"))?;
        // Held until exit: `restore` refuses while it is.
        let service_lock = crate::backup::ServiceLock::acquire(data_dir)?;
        let scheme = if settings.plain_http { "http" } else { "https" };
        let public_url = if settings.public_url.is_empty() {
            format!("{scheme}://{bound}")
        } else {
            settings.public_url.clone()
        };
        let clock = crate::clock::from_environment();
        let settings = std::sync::Arc::new(settings);
        let (writer, writer_thread) = crate::marks::MarkWriter::start(write_store, settings.mark_rules(), clock.clone());
        let secure_cookies = !matches!(transport, crate::web::Transport::PlainHttp);
        let uploader = crate::sync::Uploader::new(
            sync_store,
            kasip_certs::DeviceKey::load(&data_dir.key_path())?,
            settings.clone(),
            clock.clone(),
            data_dir.clone(),
        )?;
        let state = crate::web::AppState::new(read_store, reports_store, writer, settings.clone(), clock.clone(), public_url, secure_cookies, data_dir.clone())?;
        let (stop_uploader, uploader_stopped) = tokio::sync::watch::channel(false);
        let uploader = tokio::spawn(uploader.run(uploader_stopped));
        if let Some(served) = &served {
            tokio::spawn(reload_tls_on_sighup(served.clone(), cert_path.clone(), key_path.clone(), acme_files.clone())?);
            tokio::spawn(warn_before_expiry(cert_path.clone(), state.clone()));
            if settings.certificate.acme {
                let renewer = crate::certificate::Renewer::new(settings.clone(), data_dir.clone(), clock.clone());
                let named_url = settings.public_url.is_empty().then(|| state.clone());
                tokio::spawn(crate::certificate::keep_certificate(renewer, served.clone(), bound, move |hostname| {
                    if let Some(state) = &named_url {
                        state.use_hostname(hostname, bound.port());
                    }
                }));
            }
        }
        if let Some(address) = settings.metrics_listen {
            match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => {
                    tracing::info!(%address, "metrics at /metrics");
                    tokio::spawn(crate::web::serve_metrics(listener, state.clone()));
                }
                Err(error) => tracing::error!(%address, error = %crate::error::report(&error), "cannot serve metrics there; the agent runs without them (set metrics.listen)"),
            }
        }
        if settings.backup_keep > 0 {
            tokio::spawn(housekeeping(data_dir.clone(), state.clone(), settings.clone()));
        }
        if let Some(interval) = crate::service::watchdog_interval() {
            tokio::spawn(watchdog(interval, state.clone()));
        }
        // Tests and scripts read this exact line to learn the port.
        println!("listening on {scheme}://{bound}");
        tracing::info!(%bound, data_dir = %data_dir.root().display(), "agent started");
        crate::service::notify(&format!("READY=1\nSTATUS=serving on {scheme}://{bound}"));
        crate::web::serve(listener, transport, state, shutdown).await?;
        crate::service::notify("STOPPING=1");
        drop(service_lock);
        let _ = stop_uploader.send(true);
        if tokio::time::timeout(std::time::Duration::from_secs(10), uploader).await.is_err() {
            tracing::warn!("the uploader did not stop within 10 s; its batches stay queued");
        }
        Ok::<_, AgentError>(writer_thread)
    })?;
    // Background tasks (metrics, backups, watchdog, expiry warnings) hold the state and
    // with it a writer handle: stop them, so the writer sees its last handle go.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    // Every request has finished and dropped its writer handle: the writer drains and
    // hands its connection back for a clean close.
    let write_store = writer_thread
        .join()
        .map_err(|_| AgentError::task("the mark writer thread", None))?;
    write_store.close()?;
    tracing::info!("shut down cleanly");
    Ok(())
}
