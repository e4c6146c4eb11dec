//! `kasip-registry`'s commands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kasip_certs::DeviceKey;
use kasip_core::{Bin, Iin};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::http::{serve, Faults};
use crate::state::RegistryState;
use crate::store::{RegistryError, RegistryStore};

/// The reference e-Qazyna registry: enrols college agents, receives their signed batches
/// and serves beneficiary lists. For tests, pilots and demos.
#[derive(Parser)]
#[command(name = "kasip-registry", version, args_override_self = true)]
pub struct Cli {
    /// Where the registry keeps its database and signing key.
    #[arg(long, env = "KASIP_REGISTRY_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Where the records are kept: `sqlite` (a file in the data dir, the default) or a
    /// PostgreSQL database, `postgres://USER@HOST:PORT/DATABASE`, which several registry
    /// processes can share. Also `database = "…"` in DATA_DIR/registry.toml. The
    /// signing key stays in the data dir either way.
    #[arg(
        long,
        env = "KASIP_REGISTRY_DATABASE",
        global = true,
        value_name = "URL"
    )]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the data dir, database and the registry's signing key.
    Init,
    /// Registers (or renames) a college.
    AddCollege {
        #[arg(long)]
        bin: String,
        #[arg(long)]
        name: String,
        /// The college's time zone (its lessons' windows are judged in it).
        #[arg(long, default_value = "Asia/Almaty")]
        timezone: String,
    },
    /// Prints a one-time enrolment code for a college's agent (valid 7 days).
    IssueEnrolmentCode {
        #[arg(long)]
        bin: String,
    },
    /// Issues a one-time code (a week) with which a student enrols a passkey on the
    /// registry's /passkey page; it stands in for eGov sign-in. Print it or send it to
    /// the student only, never through the college.
    IssueStudentCode {
        /// The student's IIN.
        iin: String,
    },
    /// Sets the `qr_requires_passkey` policy: only passkey-verified check-ins count as
    /// QR in the registry's coverage. For one college (--bin) or nationally (--all).
    RequirePasskey {
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        bin: Option<String>,
        #[arg(long)]
        all: bool,
        /// Turn the requirement off again.
        #[arg(long)]
        off: bool,
    },
    /// Replaces a college's beneficiary list from CSV `iin;beneficiary;voucher`.
    ImportBeneficiaries {
        #[arg(long)]
        bin: String,
        file: PathBuf,
    },
    /// Sets the national policy every agent applies (an agent's config may only be
    /// stricter): thresholds as fractions, and whether typed codes count as QR.
    SetPolicy {
        /// Share of a group's present marks that must come from QR (0.0-1.0).
        #[arg(long)]
        min_coverage: f64,
        /// Share of a student's present marks from QR for them to count (0.0-1.0).
        #[arg(long)]
        student_qr_share: f64,
        /// Whether a typed fallback code counts as a QR mark.
        #[arg(long, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
        typed_counts_as_qr: bool,
    },
    /// Adds a licensed address of a college: lessons elsewhere are flagged.
    LicenseAddress {
        #[arg(long)]
        bin: String,
        #[arg(long)]
        address: String,
    },
    /// Lists what the registry noticed in the evidence it received (tamper alarms,
    /// breaks the agents reported, timeline rules), oldest first.
    Findings {
        #[arg(long)]
        bin: Option<String>,
        /// Only findings about this month (`YYYY-MM`).
        #[arg(long)]
        month: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Runs the month audit again (it runs by itself when a statement arrives): coverage
    /// recomputed with the national policy and compared with the statement, and the
    /// statistical flags. New findings are stored and listed; ones already stored are not.
    Audit {
        #[arg(long)]
        month: String,
        /// One college; all by default.
        #[arg(long)]
        bin: Option<String>,
    },
    /// Sets the statistical flags' thresholds (those not given keep their value) and
    /// prints the thresholds in force.
    SetThresholds {
        /// Distinct phones checking in to one lesson within --check-in-burst-secs.
        #[arg(long)]
        check_in_burst: Option<u64>,
        #[arg(long)]
        check_in_burst_secs: Option<i64>,
        /// Phones bound within --binding-burst-secs.
        #[arg(long)]
        binding_burst: Option<u64>,
        #[arg(long)]
        binding_burst_secs: Option<i64>,
        /// How far above the median (teachers) or the classmates (students) a share of
        /// hand marks may be, as a fraction (0.3 = 30 points).
        #[arg(long)]
        hand_share_margin: Option<f64>,
        /// Teachers with fewer present marks in a month are not compared.
        #[arg(long)]
        hand_share_min_marks: Option<u64>,
        /// Students with fewer present marks in a month are not compared.
        #[arg(long)]
        hand_share_min_student_marks: Option<u64>,
    },
    /// Records a person's judgement of a finding: explained or confirmed (or open again),
    /// by whom and why. Appended: earlier judgements stay.
    FindingStatus {
        /// The finding's id, as `findings` lists it.
        id: i64,
        #[arg(long)]
        status: String,
        #[arg(long)]
        by: String,
        #[arg(long)]
        reason: String,
    },
    /// Adds a registrar (reads every college's figures, findings and evidence) or an
    /// auditor (also judges findings), or sets their role and password. The password is
    /// read from the first line of standard input.
    AddUser {
        login: String,
        /// registrar or auditor.
        #[arg(long)]
        role: String,
    },
    /// Serves the registry API until SIGTERM or Ctrl-C.
    #[command(args_override_self = true)]
    Serve {
        #[arg(long, default_value = "127.0.0.1:8600")]
        listen: String,
        /// PEM certificate chain; with --tls-key, serve HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Fault injection: share of uploads answered 503 (0.0–1.0).
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Fault injection: delay added to every request, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Fault injection: share of requests whose connection is closed after the
        /// work is done, without an answer (0.0–1.0).
        #[arg(long, default_value_t = 0.0)]
        drop_rate: f64,
        /// Fault injection: answers trickle out over this many milliseconds.
        #[arg(long)]
        slow_body: Option<u64>,
        /// Serve the agents' DNS zone, e.g. agents.kasip.kz: each enrolled agent gets a
        /// name in it that resolves to its LAN addresses (IT guide, "Names and
        /// certificates"). The parent zone delegates it with one NS record.
        #[arg(long)]
        agents_zone: Option<String>,
        /// Where the zone's DNS server listens, UDP and TCP (e.g. 0.0.0.0:53).
        #[arg(long, requires = "agents_zone")]
        dns_listen: Option<String>,
        /// Keep the zone on this DNS server (address:port) by RFC 2136 updates, instead
        /// of (or besides) serving it with --dns-listen.
        #[arg(long, requires_all = ["agents_zone", "dns_update_key"])]
        dns_update: Option<String>,
        /// The TSIG key for --dns-update: a file (0600) holding ALGORITHM:NAME:SECRET,
        /// e.g. hmac-sha256:kasip-registry:BASE64.
        #[arg(long, requires = "dns_update")]
        dns_update_key: Option<PathBuf>,
        /// This server's public address, published as ns.<zone> (repeatable).
        #[arg(long)]
        dns_address: Vec<std::net::IpAddr>,
        /// The passkeys' relying party: the registry's own domain, the parent of
        /// --agents-zone (its default). Students enrol passkeys at
        /// https://<this>/passkey and check-ins' assertions are verified against it.
        #[arg(long)]
        passkey_rp_id: Option<String>,
        /// Connections to PostgreSQL this process holds (requests beyond them wait up
        /// to 10 s, then get 503). SQLite always has one.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        database_connections: u16,
    },
    /// Drives a simulated national day at running registries (`serve`): N agents, each
    /// with its own key, enrolled here and then over HTTP, sending signed batches with
    /// real chains and heartbeats; colleges of realistic sizes, the first lessons at
    /// once. Prints the figures as JSON; exits 1 if any batch was refused or two
    /// registries gave one batch different receipts. For load tests, never production.
    Simulate {
        /// A registry's URL, e.g. http://127.0.0.1:8443 (repeat for several processes on
        /// one database: batches are spread over them, and retried elsewhere on 503).
        #[arg(long = "registry", required = true, value_name = "URL")]
        registries: Vec<String>,
        /// Colleges (one agent each).
        #[arg(long, default_value_t = 772)]
        agents: usize,
        /// Attendance marks in the day, over four lessons.
        #[arg(long, default_value_t = 2_000_000)]
        marks: usize,
        /// The day simulated (YYYY-MM-DD); yesterday by default.
        #[arg(long)]
        date: Option<String>,
        /// Agents sending at once.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Each batch to two registries at once, its successor racing it to a third.
        #[arg(long)]
        race: bool,
        /// Makes another run's colleges and keys (BINs and keys follow from it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Writes every stored batch of a college as DIR/<seq>.jws (the bytes received),
    /// DIR/agent.pub (the enrolled key, PEM) and DIR/college.json (its BIN and time
    /// zone), for auditors' own tools.
    ExportBatches {
        #[arg(long)]
        bin: String,
        dir: PathBuf,
    },
}

fn data_dir(cli: &Option<PathBuf>) -> Result<PathBuf, RegistryError> {
    if let Some(dir) = cli {
        return Ok(dir.clone());
    }
    directories::ProjectDirs::from("kz", "KasipTech", "kasip-registry")
        .map(|dirs| dirs.data_dir().to_owned())
        .ok_or_else(|| RegistryError::Usage("no home directory; pass --data-dir DIR".into()))
}

fn parse_month(text: &str) -> Result<kasip_core::Month, RegistryError> {
    kasip_core::Month::parse(text)
        .map_err(|error| RegistryError::Usage(format!("--month '{text}': {error}")))
}

fn bin(text: &str) -> Result<Bin, RegistryError> {
    Bin::parse(text).map_err(|error| RegistryError::Usage(format!("--bin '{text}': {error}")))
}

#[allow(clippy::disallowed_methods)] // the registry's one reader of the system time
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The registry's clock: the system's, or, in a build for tests (feature `test-clock`),
/// the Unix time in `KASIP_UNSAFE_CLOCK_FILE` (tests move the agent's and the registry's
/// clocks together). A release registry ignores the variable.
fn clock() -> Arc<dyn Fn() -> i64 + Send + Sync> {
    match std::env::var_os("KASIP_UNSAFE_CLOCK_FILE") {
        Some(_) if !cfg!(feature = "test-clock") => {
            tracing::warn!(
                "KASIP_UNSAFE_CLOCK_FILE is set and ignored: this build uses the system clock"
            );
            Arc::new(unix_now)
        }
        Some(path) => {
            tracing::warn!("KASIP_UNSAFE_CLOCK_FILE is set: the clock comes from a file");
            Arc::new(move || {
                std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .unwrap_or_else(unix_now)
            })
        }
        None => Arc::new(unix_now),
    }
}

fn check_rate(name: &str, rate: f64) -> Result<f64, RegistryError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(RegistryError::Usage(format!(
            "--{name} must be between 0.0 and 1.0"
        )))
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, RegistryError> {
    let read = |path: &Path| RegistryError::io(format!("cannot read {}", path.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(read(cert))?
        .collect::<Result<_, _>>()
        .map_err(read(cert))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(read(key))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| {
        builder
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
    })
    .map_err(RegistryError::io(format!(
        "cannot serve TLS with {} and {}",
        cert.display(),
        key.display()
    )))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    kasip_certs::process::init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {}", kasip_certs::process::report(&error));
            1
        }
    }
}

fn run(cli: Cli) -> Result<(), RegistryError> {
    let dir = data_dir(&cli.data_dir)?;
    let database = crate::store::Database::configured(&dir, cli.database.as_deref())?;
    let store = || RegistryStore::open_with(&dir, &database);
    match cli.command {
        Command::Init => {
            let store = store()?;
            println!(
                "registry initialised in {}; its key is {}",
                dir.display(),
                store.registry_key().thumbprint()
            );
        }
        Command::AddCollege {
            bin: text,
            name,
            timezone,
        } => {
            let timezone = kasip_core::CollegeTimezone::parse(&timezone)
                .map_err(|error| RegistryError::Usage(format!("--timezone {error}")))?;
            store()?.add_college(&bin(&text)?, &name, &timezone)?;
            println!("college {text} registered");
        }
        Command::IssueEnrolmentCode { bin: text } => {
            let code = store()?.issue_enrolment_code(&bin(&text)?, clock()())?;
            println!("{code}");
        }
        Command::IssueStudentCode { iin } => {
            let iin = Iin::parse(&iin)
                .map_err(|error| RegistryError::Usage(format!("IIN '{iin}': {error}")))?;
            let code = store()?.issue_student_code(&iin, clock()())?;
            println!("{code}");
            eprintln!("valid for 7 days, once: the student enters it with their IIN at /passkey");
        }
        Command::RequirePasskey {
            bin: text,
            all,
            off,
        } => {
            let college = match (&text, all) {
                (Some(text), _) => Some(bin(text)?),
                (None, _) => None,
            };
            store()?.require_passkey(college.as_ref(), !off)?;
            println!(
                "{}: {}",
                text.as_deref()
                    .unwrap_or("every college without a choice of its own"),
                if off {
                    "QR check-ins count as QR with or without a passkey"
                } else {
                    "only passkey-verified check-ins count as QR"
                }
            );
        }
        Command::ImportBeneficiaries { bin: text, file } => {
            let csv = std::fs::read_to_string(&file)
                .map_err(RegistryError::io(format!("cannot read {}", file.display())))?;
            let count = store()?.import_beneficiaries(&bin(&text)?, &csv)?;
            println!("{count} student(s) listed for {text}");
        }
        Command::SetPolicy {
            min_coverage,
            student_qr_share,
            typed_counts_as_qr,
        } => {
            let per_mille = |name: &str, value: f64| {
                check_rate(name, value).map(|value| (value * 1000.0).round() as u64)
            };
            store()?.set_policy(
                per_mille("min-coverage", min_coverage)?,
                per_mille("student-qr-share", student_qr_share)?,
                typed_counts_as_qr,
            )?;
            println!(
                "national policy: coverage at least {min_coverage}, a student's QR share at least {student_qr_share}, typed codes {} QR",
                if typed_counts_as_qr { "count as" } else { "do not count as" }
            );
        }
        Command::Findings {
            bin: text,
            month,
            json,
        } => {
            let college = text
                .as_deref()
                .map(bin)
                .transpose()?
                .map(|bin| bin.to_string());
            let month = month.as_deref().map(parse_month).transpose()?;
            let findings = store()?.findings(college.as_deref(), month)?;
            if json {
                let text = serde_json::to_string_pretty(&findings)
                    .map_err(|error| RegistryError::Usage(error.to_string()))?;
                println!("{text}");
            } else if findings.is_empty() {
                println!("no findings");
            } else {
                for finding in findings {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t[{}]",
                        finding.id,
                        finding.status,
                        finding.severity,
                        finding.college_bin,
                        finding.kind,
                        finding.month.unwrap_or_default(),
                        finding.detail,
                        finding.evidence
                    );
                }
            }
        }
        Command::Audit { month, bin: text } => {
            let month = parse_month(&month)?;
            let college = text.as_deref().map(bin).transpose()?;
            let found = store()?.audit(college.as_ref(), month, clock()())?;
            if found.is_empty() {
                println!("{month}: no new findings");
            }
            for (college, finding) in found {
                println!("{college}\t{}\t{}", finding.kind, finding.detail);
            }
        }
        Command::SetThresholds {
            check_in_burst,
            check_in_burst_secs,
            binding_burst,
            binding_burst_secs,
            hand_share_margin,
            hand_share_min_marks,
            hand_share_min_student_marks,
        } => {
            let store = store()?;
            let mut thresholds = store.thresholds()?;
            let positive = |name: &str, value: i64| {
                if value > 0 {
                    Ok(value)
                } else {
                    Err(RegistryError::Usage(format!("--{name} must be at least 1")))
                }
            };
            if let Some(value) = check_in_burst {
                thresholds.check_in_burst = positive("check-in-burst", value as i64)? as u64;
            }
            if let Some(value) = check_in_burst_secs {
                thresholds.check_in_burst_secs = positive("check-in-burst-secs", value)?;
            }
            if let Some(value) = binding_burst {
                thresholds.binding_burst = positive("binding-burst", value as i64)? as u64;
            }
            if let Some(value) = binding_burst_secs {
                thresholds.binding_burst_secs = positive("binding-burst-secs", value)?;
            }
            if let Some(value) = hand_share_margin {
                thresholds.hand_share_margin_per_mille =
                    (check_rate("hand-share-margin", value)? * 1000.0).round() as u64;
            }
            if let Some(value) = hand_share_min_marks {
                thresholds.hand_share_min_marks = value;
            }
            if let Some(value) = hand_share_min_student_marks {
                thresholds.hand_share_min_student_marks = value;
            }
            store.set_thresholds(&thresholds, clock()())?;
            let text = serde_json::to_string_pretty(&thresholds)
                .map_err(|error| RegistryError::Usage(error.to_string()))?;
            println!("{text}");
        }
        Command::AddUser { login, role } => {
            let role = crate::accounts::Role::parse(&role).ok_or_else(|| {
                RegistryError::Usage(format!("--role '{role}': use registrar or auditor"))
            })?;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(RegistryError::io(
                    "cannot read the password from standard input",
                ))?;
            let password = password.trim_end_matches(['\r', '\n']);
            store()?.add_user(&login, role, password, clock()())?;
            println!("{} {login} can sign in", role.as_str());
        }
        Command::FindingStatus {
            id,
            status,
            by,
            reason,
        } => {
            store()?.set_finding_status(id, &status, &by, &reason, clock()())?;
            println!("finding {id}: {status}");
        }
        Command::LicenseAddress { bin: text, address } => {
            let address = address.trim();
            if address.is_empty() {
                return Err(RegistryError::Usage("--address is empty".into()));
            }
            store()?.license_address(&bin(&text)?, address)?;
            println!("{text}: '{address}' licensed");
        }
        Command::Simulate {
            registries,
            agents,
            marks,
            date,
            in_flight,
            race,
            seed,
        } => {
            let now = clock()();
            let date = match date {
                Some(text) => kasip_core::Date::parse(&text)
                    .map_err(|error| RegistryError::Usage(format!("--date {error}")))?,
                None => kasip_core::Date::from_days_since_epoch(now.div_euclid(86_400) - 1),
            };
            if agents == 0 || marks == 0 {
                return Err(RegistryError::Usage(
                    "--agents and --marks must be at least 1".into(),
                ));
            }
            let plan = crate::simulate::DayPlan {
                agents,
                marks,
                date,
                race,
                in_flight,
                seed,
            };
            let colleges = plan.colleges();
            eprintln!(
                "registering {} colleges ({} students) and sealing {date}'s batches",
                colleges.len(),
                colleges
                    .iter()
                    .map(|college| college.students)
                    .sum::<usize>()
            );
            let codes = crate::simulate::register_colleges(&store()?, &colleges, now)?;
            let runtime = tokio::runtime::Runtime::new()
                .map_err(RegistryError::io("cannot start the async runtime"))?;
            let report =
                runtime.block_on(crate::simulate::drive(&plan, registries, colleges, codes))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report)
                    .map_err(|error| RegistryError::Usage(error.to_string()))?
            );
            if report.failures > 0 || report.receipts_differing > 0 {
                return Err(RegistryError::Usage(format!(
                    "{} batch(es) refused, {} with differing receipts: {:?}",
                    report.failures, report.receipts_differing, report.failure_examples
                )));
            }
        }
        Command::ExportBatches {
            bin: text,
            dir: out,
        } => {
            let college = bin(&text)?.to_string();
            let store = store()?;
            let keys = store.keys_of(&college)?;
            let Some((_, key)) = keys.last() else {
                return Err(RegistryError::Usage(format!(
                    "no agent of {college} is enrolled"
                )));
            };
            let io = || RegistryError::io(format!("cannot write into {}", out.display()));
            std::fs::create_dir_all(&out).map_err(io())?;
            let batches = store.batches_of(&college)?;
            for (_, seq, jws) in &batches {
                std::fs::write(out.join(format!("{seq}.jws")), jws).map_err(io())?;
            }
            std::fs::write(out.join("agent.pub"), DeviceKey::public_key_pem(key)).map_err(io())?;
            // The college's zone, for an auditor's own timeline rules (lesson windows).
            let college_file = serde_json::json!({
                "bin": college,
                "timezone": store.timezone_of(&college)?.name(),
                "utc_offset_secs": store.timezone_of(&college)?.offset_seconds(),
            });
            std::fs::write(out.join("college.json"), college_file.to_string()).map_err(io())?;
            println!(
                "{} batch(es) of {college} written to {}",
                batches.len(),
                out.display()
            );
        }
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            fail_rate,
            latency_ms,
            drop_rate,
            slow_body,
            agents_zone,
            dns_listen,
            dns_address,
            dns_update,
            dns_update_key,
            passkey_rp_id,
            database_connections,
        } => {
            if agents_zone.is_some() && dns_listen.is_none() && dns_update.is_none() {
                return Err(RegistryError::Usage(
                    "--agents-zone needs --dns-listen ADDR (serve the zone) or --dns-update SERVER (keep it on your DNS server)".into(),
                ));
            }
            let faults = Faults {
                fail_rate: check_rate("fail-rate", fail_rate)?,
                latency: Duration::from_millis(latency_ms),
                drop_rate: check_rate("drop-rate", drop_rate)?,
                slow_body: slow_body.map(Duration::from_millis),
            };
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(tls_acceptor(&cert, &key)?),
                _ => None,
            };
            let connections = match database {
                crate::store::Database::Sqlite => 1,
                crate::store::Database::Postgres(_) => usize::from(database_connections),
            };
            let mut stores = (0..connections)
                .map(|_| store())
                .collect::<Result<Vec<_>, _>>()?;
            let relying_party = passkey_rp_id
                .or_else(|| {
                    agents_zone
                        .as_deref()
                        .and_then(|zone| zone.split_once('.'))
                        .map(|(_, parent)| parent.to_owned())
                })
                .map(|rp_id| crate::store::RelyingParty {
                    rp_id: rp_id.trim_end_matches('.').to_ascii_lowercase(),
                    agents_zone: agents_zone
                        .as_deref()
                        .map(|zone| zone.trim_end_matches('.').to_ascii_lowercase()),
                });
            for store in &mut stores {
                store.checkpoint_in_background()?;
                if let Some(relying_party) = &relying_party {
                    store.verify_passkeys(relying_party.clone());
                }
            }
            let clock = clock();
            let zone = match &agents_zone {
                Some(zone) => Some(std::sync::Arc::new(crate::dns::AgentsZone::new(
                    crate::dns::ZoneConfig::parse(zone, dns_address)?,
                    &stores[0].zone_entries()?,
                    clock(),
                ))),
                None => None,
            };
            let mut state = RegistryState::with_connections(stores, clock);
            {
                let (dir, database, relying_party) =
                    (dir.clone(), database.clone(), relying_party.clone());
                state = state.with_reopen(Box::new(move || {
                    let mut store = RegistryStore::open_with(&dir, &database)?;
                    if let Some(relying_party) = &relying_party {
                        store.verify_passkeys(relying_party.clone());
                    }
                    Ok(store)
                }));
            }
            if let Some(relying_party) = relying_party {
                state = state.with_relying_party(relying_party);
            }
            if let Some(zone) = &zone {
                state = state.with_zone(zone.clone());
                if let (Some(server), Some(key_file)) = (&dns_update, &dns_update_key) {
                    let key = std::fs::read_to_string(key_file).map_err(RegistryError::io(
                        format!("cannot read the TSIG key file {}", key_file.display()),
                    ))?;
                    let updates =
                        crate::dns_update::ZoneUpdates::new(server, &key, zone.config().clone())?;
                    state = state.with_zone_updates(std::sync::Arc::new(updates));
                }
            }
            let runtime = tokio::runtime::Runtime::new()
                .map_err(RegistryError::io("cannot start the async runtime"))?;
            runtime.block_on(async move {
                if let (Some(zone), Some(dns_listen)) = (zone, &dns_listen) {
                    let domain = zone.config().domain();
                    let bound = crate::dns::serve(zone, dns_listen).await?;
                    // Tests read this line to learn the port.
                    println!("dns for {domain} on {bound}");
                }
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .map_err(RegistryError::io(format!("cannot listen on {listen}")))?;
                let address = listener
                    .local_addr()
                    .map_err(RegistryError::io("cannot read the listening address"))?;
                let scheme = if tls.is_some() { "https" } else { "http" };
                let shutdown = kasip_certs::process::shutdown_signal()
                    .map_err(|(what, source)| RegistryError::io(what)(source))?;
                tracing::info!(?faults, "serving");
                // Tests and scripts read this exact line (stdout) to learn the port.
                println!("listening on {scheme}://{address}");
                serve(listener, tls, state, faults, shutdown)
                    .await
                    .map_err(RegistryError::io("the registry's server stopped"))
            })?;
            eprintln!("registry stopped");
        }
    }
    Ok(())
}
