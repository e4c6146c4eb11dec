//! The data directory's layout and `config.toml`: raw file → validated settings.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;

use kasip_core::{Bin, CollegeTimezone};
use serde::{Deserialize, Serialize};

pub use crate::data_dir::{DataDir, SYSTEM_CONFIG, SYSTEM_DATA_DIR};
use crate::error::AgentError;

/// `config.toml` as written on disk; unknown keys are refused so a typo is not ignored.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    college: CollegeSection,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    qr: QrSection,
    #[serde(default)]
    lesson: LessonSection,
    #[serde(default)]
    coverage: CoverageSection,
    #[serde(default)]
    red_flags: RedFlagsSection,
    #[serde(default)]
    sync: SyncSection,
    #[serde(default)]
    kiosk: KioskSection,
    #[serde(default)]
    security: SecuritySection,
    #[serde(default)]
    backup: BackupSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    certificate: CertificateSection,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct CertificateSection {
    acme: bool,
    acme_directory: String,
    acme_ca_file: String,
    lan_addresses: Vec<String>,
    check_secs: u64,
}

impl Default for CertificateSection {
    fn default() -> Self {
        Self {
            acme: true,
            acme_directory: LETS_ENCRYPT_DIRECTORY.to_owned(),
            acme_ca_file: String::new(),
            lan_addresses: Vec::new(),
            check_secs: 3600,
        }
    }
}

pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[certificate]`: the publicly trusted certificate for the agent's name in the
/// registry's zone (ACME, DNS-01 through the registry).
#[derive(Debug, Clone)]
pub struct CertificateSettings {
    /// Off: the agent keeps its self-signed (or imported) certificate even when enrolled.
    pub acme: bool,
    pub acme_directory: String,
    /// Extra CA (PEM) trusted for the ACME server: a test CA such as Pebble.
    pub acme_ca_file: Option<PathBuf>,
    /// The addresses the name resolves to; empty: the address the agent reaches the
    /// registry from.
    pub lan_addresses: Vec<std::net::IpAddr>,
    /// Seconds between checks of the certificate, the name's addresses and the renewal.
    pub check_secs: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct SecuritySection {
    staff_idle_mins: u32,
    events_keep_days: u32,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            staff_idle_mins: 30,
            events_keep_days: 365,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct MetricsSection {
    listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.to_owned(),
        }
    }
}

pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct BackupSection {
    keep: u32,
    hour: u32,
}

impl Default for BackupSection {
    fn default() -> Self {
        Self { keep: 7, hour: 2 }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct KioskSection {
    grace_mins: u32,
    pass_window_secs: u32,
    max_buffer_hours: u32,
}

impl Default for KioskSection {
    fn default() -> Self {
        Self {
            grace_mins: 10,
            pass_window_secs: 30,
            max_buffer_hours: 24,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct SyncSection {
    registry_ca_file: String,
    batch_max_records: usize,
    batch_max_age_secs: u64,
    backoff_cap_secs: u64,
    connect_timeout_secs: u64,
    request_timeout_secs: u64,
    beneficiary_pull_secs: u64,
    heartbeat_secs: u64,
}

impl Default for SyncSection {
    fn default() -> Self {
        Self {
            registry_ca_file: String::new(),
            batch_max_records: 5_000,
            batch_max_age_secs: 60,
            backoff_cap_secs: 300,
            connect_timeout_secs: 10,
            request_timeout_secs: 60,
            beneficiary_pull_secs: 6 * 3600,
            heartbeat_secs: 60,
        }
    }
}

/// `[sync]`: how batches are sealed and uploaded.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Extra CA certificate (PEM) trusted for the registry, for pilots with their own CA.
    pub registry_ca_file: Option<PathBuf>,
    pub batch_max_records: usize,
    pub batch_max_age_secs: i64,
    pub backoff_cap: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub beneficiary_pull_secs: i64,
    /// How often the chain's head is pinned at the registry while it is reachable.
    pub heartbeat_secs: i64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct RedFlagsSection {
    idle_working_days: u32,
    licensed_addresses: Vec<String>,
    students_per_device: u32,
    manual_share_margin: f64,
    manual_share_min_marks: u64,
}

impl Default for RedFlagsSection {
    fn default() -> Self {
        Self {
            idle_working_days: 3,
            licensed_addresses: Vec::new(),
            students_per_device: 2,
            manual_share_margin: 0.3,
            manual_share_min_marks: 20,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct CoverageSection {
    min_coverage: f64,
    student_qr_share: f64,
    policy: String,
}

impl Default for CoverageSection {
    fn default() -> Self {
        Self {
            min_coverage: 0.5,
            student_qr_share: 0.5,
            policy: "require-override".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct QrSection {
    period_secs: u32,
    typed_code_counts_as_qr: bool,
}

impl Default for QrSection {
    fn default() -> Self {
        Self {
            period_secs: 10,
            typed_code_counts_as_qr: true,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct LessonSection {
    late_after_mins: u32,
    open_early_mins: u32,
    auto_close_grace_mins: u32,
}

impl Default for LessonSection {
    fn default() -> Self {
        Self {
            late_after_mins: 10,
            open_early_mins: 10,
            auto_close_grace_mins: 15,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CollegeSection {
    bin: String,
    name: String,
    #[serde(default = "default_timezone")]
    timezone: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    public_url: String,
    #[serde(default)]
    tls_names: Vec<String>,
    #[serde(default)]
    tls_cert: String,
    #[serde(default)]
    tls_key: String,
    #[serde(default)]
    plain_http: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: String::new(),
            tls_names: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            plain_http: false,
        }
    }
}

pub const DEFAULT_TIMEZONE: &str = "Asia/Almaty";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

fn default_timezone() -> String {
    DEFAULT_TIMEZONE.to_owned()
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}

/// Validated settings: every value already parsed into its domain type.
#[derive(Debug, Clone)]
pub struct Settings {
    pub college_bin: Bin,
    pub college_name: String,
    pub timezone: CollegeTimezone,
    pub listen: SocketAddr,
    /// The base URL phones reach; empty means "the address the agent listens on".
    pub public_url: String,
    /// Extra host names and IPs for the self-signed certificate.
    pub tls_names: Vec<String>,
    /// PEM files to serve instead of the self-signed pair, when both are set.
    pub tls_pem: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP instead of HTTPS: development on loopback only.
    pub plain_http: bool,
    pub qr_period_secs: u32,
    pub typed_code_counts_as_qr: bool,
    pub late_after_mins: u32,
    pub open_early_mins: u32,
    pub auto_close_grace_mins: u32,
    /// Share of a group's (or the college's) beneficiaries that must be QR-tracked.
    pub min_coverage: kasip_core::PerMille,
    /// Share of a student's present marks that must come from QR for them to be tracked.
    pub student_qr_share: kasip_core::PerMille,
    /// What a manual mark that would break the rule for its group needs.
    pub coverage_policy: crate::coverage::CoveragePolicy,
    /// Thresholds of the red flags.
    pub red_flags: crate::red_flags::RedFlagRules,
    pub sync: SyncSettings,
    /// Minutes before a lesson's start and after its end in which a room kiosk's scan
    /// marks it.
    pub kiosk_grace_mins: u32,
    /// Largest |scan time − pass signing time| accepted, on the kiosk and here.
    pub pass_window_secs: u32,
    /// A kiosk scan that arrives longer than this after it was made is refused.
    pub kiosk_max_buffer_hours: u32,
    /// Nightly backups kept in `DATA_DIR/backups/`; 0 turns them off.
    pub backup_keep: u32,
    /// Local hour (0-23) from which the day's backup is made.
    pub backup_hour: u32,
    /// Minutes without a request after which a staff session ends.
    pub staff_idle_mins: u32,
    /// Days security events are kept.
    pub security_events_keep_days: u32,
    /// Where `GET /metrics` is served; None when turned off.
    pub metrics_listen: Option<SocketAddr>,
    pub certificate: CertificateSettings,
}

impl Settings {
    /// The college's local date at `unix_time`.
    pub fn local_date(&self, unix_time: i64) -> kasip_core::Date {
        crate::clock::local_date(&self.timezone, unix_time)
    }

    /// The college's local date now, by the agent's clock (CLI commands). The same clock as
    /// `serve` and the other commands: the demo once seeded by the system clock while
    /// `red-flags` read the test clock, so its test failed on any real date past that month.
    pub fn local_today(&self) -> kasip_core::Date {
        self.local_date(crate::clock::from_environment().now_unix())
    }

    /// What the red flags read: thresholds, what counts as QR, the zone.
    pub fn red_flag_settings(&self) -> crate::red_flags::RedFlagSettings {
        crate::red_flags::RedFlagSettings {
            rules: self.red_flags.clone(),
            coverage: self.coverage_rules(),
            timezone: self.timezone.clone(),
        }
    }

    /// What a month close reads: the college and its rules.
    pub fn month_close_settings(&self) -> crate::month_close::MonthCloseSettings {
        crate::month_close::MonthCloseSettings {
            college_bin: self.college_bin,
            college_name: self.college_name.clone(),
            red_flags: self.red_flag_settings(),
        }
    }

    /// The college's zone and the lessons' window.
    pub fn lesson_times(&self) -> crate::lessons::LessonTimes {
        crate::lessons::LessonTimes {
            timezone: self.timezone.clone(),
            open_early_mins: self.open_early_mins,
            auto_close_grace_mins: self.auto_close_grace_mins,
        }
    }

    /// What the mark writer decides with.
    pub fn mark_rules(&self) -> crate::marks::MarkRules {
        crate::marks::MarkRules {
            lessons: self.lesson_times(),
            qr_period_secs: self.qr_period_secs,
            late_after_mins: self.late_after_mins,
            kiosk_grace_mins: self.kiosk_grace_mins,
            pass_window_secs: self.pass_window_secs,
            kiosk_max_buffer_secs: i64::from(self.kiosk_max_buffer_hours) * 3600,
            coverage: self.coverage_rules(),
            coverage_policy: self.coverage_policy,
        }
    }

    /// The coverage thresholds and what counts as QR.
    pub fn coverage_rules(&self) -> crate::coverage::CoverageRules {
        crate::coverage::CoverageRules {
            student_qr_share: self.student_qr_share,
            min_coverage: self.min_coverage,
            typed_code_counts_as_qr: self.typed_code_counts_as_qr,
        }
    }
}

impl Settings {
    /// Reads and validates `config.toml`.
    pub fn load(data_dir: &DataDir) -> Result<Self, AgentError> {
        let path = data_dir.config_path();
        if !path.exists() {
            return Err(AgentError::NotInitialised {
                data_dir: data_dir.root().to_owned(),
            });
        }
        let text = fs::read_to_string(&path).map_err(|source| AgentError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| AgentError::Config { path, reason })
    }

    /// Parses config text; the error is a sentence naming the key and the fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| error.to_string())?;
        let college_bin = Bin::parse(&file.college.bin)
            .map_err(|error| format!("college.bin '{}' {error}", file.college.bin))?;
        let college_name = file.college.name.trim().to_owned();
        if college_name.is_empty() {
            return Err("college.name is empty; write the college's official name".into());
        }
        let timezone = CollegeTimezone::parse(&file.college.timezone)
            .map_err(|error| format!("college.timezone {error}"))?;
        let listen = file.server.listen.parse().map_err(|_| {
            format!(
                "server.listen '{}' is not an address:port such as {DEFAULT_LISTEN} or 0.0.0.0:8443",
                file.server.listen
            )
        })?;
        let public_url = file
            .server
            .public_url
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !public_url.is_empty()
            && !public_url.starts_with("https://")
            && !public_url.starts_with("http://")
        {
            return Err(format!(
                "server.public_url '{public_url}' must start with https:// (for example https://agent.college.kz)"
            ));
        }
        if file.server.plain_http && !listen_is_loopback(&listen) {
            return Err(format!(
                "server.plain_http = true is allowed only on a loopback address, not {listen}; phones on the LAN must get HTTPS"
            ));
        }
        let tls_pem = match (file.server.tls_cert.trim(), file.server.tls_key.trim()) {
            ("", "") => None,
            ("", _) | (_, "") => {
                return Err("server.tls_cert and server.tls_key must be set together".into());
            }
            (cert, key) => Some((PathBuf::from(cert), PathBuf::from(key))),
        };
        // At most 15 s: a code photographed and sent to an absent friend must go stale
        // before it can be typed or opened far away.
        if !(5..=15).contains(&file.qr.period_secs) {
            return Err(format!(
                "qr.period_secs is {}; use 5 to 15 seconds (default 10)",
                file.qr.period_secs
            ));
        }
        let fraction = |key: &str, value: f64| {
            kasip_core::PerMille::from_fraction(value).ok_or_else(|| {
                format!("{key} is {value}; write a fraction from 0.0 to 1.0 such as 0.5")
            })
        };
        let min_coverage = fraction("coverage.min_coverage", file.coverage.min_coverage)?;
        let student_qr_share =
            fraction("coverage.student_qr_share", file.coverage.student_qr_share)?;
        let coverage_policy = crate::coverage::CoveragePolicy::parse(file.coverage.policy.trim())
            .ok_or_else(|| {
            format!(
                "coverage.policy is '{}'; write warn, require-override or block",
                file.coverage.policy
            )
        })?;
        let red_flags = crate::red_flags::RedFlagRules {
            idle_working_days: file.red_flags.idle_working_days.max(1),
            licensed_addresses: file
                .red_flags
                .licensed_addresses
                .iter()
                .map(|address| address.trim().to_lowercase())
                .filter(|address| !address.is_empty())
                .collect(),
            students_per_device: file.red_flags.students_per_device.max(2),
            manual_share_margin_per_mille: u64::from(
                fraction(
                    "red_flags.manual_share_margin",
                    file.red_flags.manual_share_margin,
                )?
                .thousandths(),
            ),
            manual_share_min_marks: file.red_flags.manual_share_min_marks,
        };
        let sync_section = &file.sync;
        if !(1..=kasip_core::batch::MAX_RECORDS_PER_BATCH).contains(&sync_section.batch_max_records)
        {
            return Err(format!(
                "sync.batch_max_records is {}; use 1 to {} (default 5000)",
                sync_section.batch_max_records,
                kasip_core::batch::MAX_RECORDS_PER_BATCH
            ));
        }
        let seconds = |key: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
            if range.contains(&value) {
                Ok(value)
            } else {
                Err(format!(
                    "{key} is {value}; use {} to {} seconds",
                    range.start(),
                    range.end()
                ))
            }
        };
        let sync = SyncSettings {
            registry_ca_file: Some(sync_section.registry_ca_file.trim())
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            batch_max_records: sync_section.batch_max_records,
            batch_max_age_secs: seconds(
                "sync.batch_max_age_secs",
                sync_section.batch_max_age_secs,
                0..=86_400,
            )? as i64,
            backoff_cap: std::time::Duration::from_secs(seconds(
                "sync.backoff_cap_secs",
                sync_section.backoff_cap_secs,
                1..=86_400,
            )?),
            connect_timeout: std::time::Duration::from_secs(seconds(
                "sync.connect_timeout_secs",
                sync_section.connect_timeout_secs,
                1..=600,
            )?),
            request_timeout: std::time::Duration::from_secs(seconds(
                "sync.request_timeout_secs",
                sync_section.request_timeout_secs,
                1..=3600,
            )?),
            beneficiary_pull_secs: seconds(
                "sync.beneficiary_pull_secs",
                sync_section.beneficiary_pull_secs,
                60..=7 * 86_400,
            )? as i64,
            heartbeat_secs: seconds("sync.heartbeat_secs", sync_section.heartbeat_secs, 5..=300)?
                as i64,
        };
        if file.lesson.open_early_mins > crate::lessons::MAX_OPEN_EARLY_MINS {
            return Err(format!(
                "lesson.open_early_mins must be 0-{} minutes, not {}",
                crate::lessons::MAX_OPEN_EARLY_MINS,
                file.lesson.open_early_mins
            ));
        }
        if !(1..=240).contains(&file.kiosk.grace_mins) {
            return Err(format!(
                "kiosk.grace_mins must be 1-240 minutes, not {}",
                file.kiosk.grace_mins
            ));
        }
        if !(1..=168).contains(&file.kiosk.max_buffer_hours) {
            return Err(format!(
                "kiosk.max_buffer_hours must be 1-168 hours, not {}",
                file.kiosk.max_buffer_hours
            ));
        }
        if !(5..=300).contains(&file.kiosk.pass_window_secs) {
            return Err(format!(
                "kiosk.pass_window_secs must be 5-300 seconds, not {}",
                file.kiosk.pass_window_secs
            ));
        }
        if !(5..=720).contains(&file.security.staff_idle_mins) {
            return Err(format!(
                "security.staff_idle_mins must be 5-720 minutes, not {}",
                file.security.staff_idle_mins
            ));
        }
        if !(30..=3650).contains(&file.security.events_keep_days) {
            return Err(format!(
                "security.events_keep_days must be 30-3650 days, not {}",
                file.security.events_keep_days
            ));
        }
        if file.backup.keep > 365 {
            return Err(format!(
                "backup.keep must be 0-365 nightly copies, not {}",
                file.backup.keep
            ));
        }
        if file.backup.hour > 23 {
            return Err(format!(
                "backup.hour must be 0-23, not {}",
                file.backup.hour
            ));
        }
        let metrics_listen = match file.metrics.listen.trim() {
            "" => None,
            address => Some(address.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "metrics.listen = \"{address}\" is not an address like \"{DEFAULT_METRICS_LISTEN}\" (empty turns metrics off)"
                )
            })?),
        };
        let certificate = {
            let section = &file.certificate;
            if !section.acme_directory.starts_with("https://") {
                return Err(format!(
                    "certificate.acme_directory = \"{}\" must be an https:// URL, such as \"{LETS_ENCRYPT_DIRECTORY}\"",
                    section.acme_directory
                ));
            }
            if !(1..=86_400).contains(&section.check_secs) {
                return Err(format!(
                    "certificate.check_secs must be 1-86400 seconds, not {}",
                    section.check_secs
                ));
            }
            let lan_addresses = section
                .lan_addresses
                .iter()
                .map(|address| {
                    address.parse::<std::net::IpAddr>().map_err(|_| {
                        format!("certificate.lan_addresses: '{address}' is not an IP address such as \"192.168.1.10\"")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            CertificateSettings {
                acme: section.acme,
                acme_directory: section.acme_directory.clone(),
                acme_ca_file: match section.acme_ca_file.trim() {
                    "" => None,
                    path => Some(PathBuf::from(path)),
                },
                lan_addresses,
                check_secs: section.check_secs,
            }
        };
        Ok(Self {
            certificate,
            staff_idle_mins: file.security.staff_idle_mins,
            security_events_keep_days: file.security.events_keep_days,
            metrics_listen,
            backup_keep: file.backup.keep,
            backup_hour: file.backup.hour,
            kiosk_grace_mins: file.kiosk.grace_mins,
            pass_window_secs: file.kiosk.pass_window_secs,
            kiosk_max_buffer_hours: file.kiosk.max_buffer_hours,
            sync,
            red_flags,
            min_coverage,
            student_qr_share,
            coverage_policy,
            college_bin,
            college_name,
            timezone,
            listen,
            public_url,
            tls_names: file.server.tls_names,
            tls_pem,
            plain_http: file.server.plain_http,
            qr_period_secs: file.qr.period_secs,
            typed_code_counts_as_qr: file.qr.typed_code_counts_as_qr,
            late_after_mins: file.lesson.late_after_mins,
            open_early_mins: file.lesson.open_early_mins,
            auto_close_grace_mins: file.lesson.auto_close_grace_mins,
        })
    }
}

fn listen_is_loopback(listen: &SocketAddr) -> bool {
    listen.ip().is_loopback()
}

/// What each key of `config.toml` means, in file order. The values are not here: the
/// generated file takes them from the sections' `Default`s, the one place they are set.
const KEY_DOCS: &[(&str, &[(&str, &str)])] = &[
    ("college", &[
        ("bin", "The college's BIN (12 digits with a valid check digit), as registered with e-Qazyna."),
        ("name", "The college's official name, shown on every page and in reports."),
        ("timezone", "Time zone of the college's timetable: Asia/Almaty (default) or another Kazakh zone,\nUTC, or UTC+HH:MM. All Kazakh zones are UTC+05:00 since 2024-03-01."),
    ]),
    ("server", &[
        ("listen", "Address and port of the agent's web server. The default serves this machine only;\nuse \"0.0.0.0:8443\" to serve teachers and phones on the college LAN."),
        ("public_url", "The address phones open when they scan a classroom QR, e.g. \"https://agent.college.kz\"\nfor online lessons reached from outside the LAN. Empty (default): the listen address."),
        ("tls_names", "Extra host names and IP addresses for the self-signed certificate made at init, e.g.\n[\"agent.college.kz\", \"192.168.1.10\"]. localhost and 127.0.0.1 are always included."),
        ("tls_cert", "PEM certificate chain to serve instead of the self-signed one (e.g. from the college's\nCA); set together with tls_key. Empty (default): the data dir's tls.crt."),
        ("tls_key", "The PEM private key of tls_cert (mode 0600). Empty (default): the data dir's tls.key."),
        ("plain_http", "Serve plain HTTP instead of HTTPS. Only allowed on a loopback listen address, for\ndevelopment."),
    ]),
    ("qr", &[
        ("period_secs", "Seconds between classroom code rotations (5-15). A code is accepted for its own period\nand the one before, so at most twice this long."),
        ("typed_code_counts_as_qr", "Whether a typed fallback code counts as a QR mark for the coverage rule."),
    ]),
    ("lesson", &[
        ("late_after_mins", "Minutes after a lesson's start after which a check-in is recorded as late."),
        ("open_early_mins", "Minutes before a lesson's start from which it can be opened and take check-ins (0-15)."),
        ("auto_close_grace_mins", "Minutes after a lesson's end after which an open lesson closes by itself. Until then\nit takes check-ins and staff marks; later, only an admin's late entry with a reason."),
    ]),
    ("coverage", &[
        ("min_coverage", "The pilot's rule: the share of beneficiaries who must be QR-tracked in a month, per\ngroup and for the college."),
        ("student_qr_share", "A student is QR-tracked in a month when at least this share of their present marks\ncame from QR (phone, kiosk, and typed codes if qr.typed_code_counts_as_qr)."),
        ("policy", "A manual mark that would take its group below min_coverage for the month so far:\n\"warn\" accepts it and says so; \"require-override\" needs an admin's override with a\nreason, recorded and sent to the registry; \"block\" refuses it."),
    ]),
    ("red_flags", &[
        ("idle_working_days", "A group with no lesson held (opened or marked) for this many working days in a row."),
        ("licensed_addresses", "The college's licensed addresses, exactly as the sites' addresses are written; a\nlesson at a site with another address is flagged. Empty (default): check off."),
        ("students_per_device", "One device used to check in this many different students in a month."),
        ("manual_share_margin", "A teacher whose share of manual marks exceeds the college median by more than this\n(a fraction) is flagged."),
        ("manual_share_min_marks", "Teachers with fewer present marks in the month are not compared."),
    ]),
    ("sync", &[
        ("registry_ca_file", "The registry is set by `kasip-agent enroll --registry URL --code CODE`.\nA PEM file with the CA certificate of a pilot registry, trusted besides the system's\nroots. Empty (default): the system's roots only."),
        ("batch_max_records", "A batch is sealed when this many records wait (at most 20000) ..."),
        ("batch_max_age_secs", "... or when the oldest waiting record is this old."),
        ("backoff_cap_secs", "Upload retries back off exponentially with jitter up to this wait. There is no retry\nlimit: nothing is ever dropped."),
        ("connect_timeout_secs", "Seconds to wait for a connection to the registry."),
        ("request_timeout_secs", "Seconds one whole request may take, answer included."),
        ("beneficiary_pull_secs", "How often the beneficiary list is pulled from the registry (21600: 6 hours)."),
        ("heartbeat_secs", "While the registry is reachable, the attendance chain's head is pinned there this often\n(5-300 seconds), batch or not: history older than one heartbeat cannot be rewritten unseen."),
    ]),
    ("kiosk", &[
        ("grace_mins", "Kiosks are added with `kasip-agent kiosk add --room ROOM | --entrance SITE`.\nA room kiosk's scan marks the lesson in its room from this many minutes before the\nlesson starts to this many after it ends, never outside the lesson's own window."),
        ("pass_window_secs", "A student pass is accepted when it was signed at most this many seconds from the scan\n(both ways), on the kiosk and on the agent."),
        ("max_buffer_hours", "A kiosk keeps scans while the agent is unreachable; a scan that arrives more than this\nmany hours after it was made is refused (1-168)."),
    ]),
    ("security", &[
        ("staff_idle_mins", "A staff session unused this many minutes ends (5-720); a session ends after 12 hours\nin any case, and at once when its password changes or its account is disabled."),
        ("events_keep_days", "Security events (refused check-ins, wrong codes, failed sign-ins) older than this many\ndays are deleted (30-3650)."),
    ]),
    ("backup", &[
        ("keep", "Nightly copies of the database kept in the data dir's backups/ folder (0 for none;\ncopy them off the machine too: `kasip-agent backup FILE` makes one any time)."),
        ("hour", "Local hour (0-23) from which the day's copy is made."),
    ]),
    ("metrics", &[
        ("listen", "Where Prometheus scrapes GET /metrics. The default serves this machine only; empty\nturns it off. Bind to a LAN address only behind a firewall."),
    ]),
    ("certificate", &[
        ("acme", "Once enrolled with a registry that runs the agents' zone, the agent gets a name in it\n(e.g. c7k2m4q9x3ab.agents.kasip.kz) and a publicly trusted certificate for that name,\nso phones open the classroom QR without a warning. false keeps the self-signed or\nimported certificate."),
        ("acme_directory", "The ACME (RFC 8555) server that issues the certificate."),
        ("acme_ca_file", "A PEM CA certificate trusted for the ACME server besides the system's roots (a test CA).\nEmpty (default): the system's roots only."),
        ("lan_addresses", "The LAN addresses the name resolves to, e.g. [\"192.168.1.10\"]. Empty (default): the\nlisten address, or for 0.0.0.0 the address this machine reaches the registry from."),
        ("check_secs", "How often (seconds) the name's addresses and the certificate's age are checked; it is\nrenewed at two thirds of its lifetime, with backoff and jitter while that fails."),
    ]),
];

/// The documented `config.toml` that `init` writes: every key with its comment and its
/// default (from the sections' `Default`s), and the college's own values.
pub fn default_config_text(
    bin: &Bin,
    name: &str,
    timezone: &CollegeTimezone,
    tls_names: &[String],
) -> String {
    render_documented(&default_config_file(bin, name, timezone, tls_names))
}

/// The college's values with every other key at its default.
fn default_config_file(
    bin: &Bin,
    name: &str,
    timezone: &CollegeTimezone,
    tls_names: &[String],
) -> ConfigFile {
    ConfigFile {
        college: CollegeSection {
            bin: bin.to_string(),
            name: name.to_owned(),
            timezone: timezone.name().to_owned(),
        },
        server: ServerSection {
            tls_names: tls_names.to_vec(),
            ..ServerSection::default()
        },
        qr: QrSection::default(),
        lesson: LessonSection::default(),
        coverage: CoverageSection::default(),
        red_flags: RedFlagsSection::default(),
        sync: SyncSection::default(),
        kiosk: KioskSection::default(),
        security: SecuritySection::default(),
        backup: BackupSection::default(),
        metrics: MetricsSection::default(),
        certificate: CertificateSection::default(),
    }
}

/// `file` as TOML, each key under its comment from `KEY_DOCS`. A key without a comment,
/// or a comment without a key, is a programming error caught by the tests.
fn render_documented(file: &ConfigFile) -> String {
    let values =
        toml::Value::try_from(file).unwrap_or_else(|_| toml::Value::Table(Default::default()));
    let mut text = String::from(
        "# KasipTech college agent configuration.\n\
         # Every key is listed with its default. After editing, run `kasip-agent validate`.\n",
    );
    for (section, keys) in KEY_DOCS {
        text.push_str(&format!("\n[{section}]\n"));
        for (key, doc) in *keys {
            for line in doc.lines() {
                text.push_str(&format!("# {line}\n"));
            }
            let value = values
                .get(section)
                .and_then(|table| table.get(key))
                .map_or_else(|| "\"\"".to_owned(), toml_value);
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text
}

/// One value as it is written after `key = `: strings in TOML's basic form (with
/// escapes, so any name round-trips), arrays of them inline.
fn toml_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => toml_string(text),
        toml::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        toml::Value::Float(number) if number.fract() == 0.0 => format!("{number:.1}"),
        other => other.to_string(),
    }
}

fn toml_string(text: &str) -> String {
    // serde_json's string escaping is valid TOML basic-string escaping.
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_bin() -> Bin {
        Bin::parse("090640001233").expect("valid BIN")
    }

    #[test]
    fn written_defaults_parse_back() {
        let timezone = CollegeTimezone::parse("Asia/Almaty").expect("zone");
        let text = default_config_text(
            &demo_bin(),
            "Колледж \"Жетісу\"",
            &timezone,
            &["agent.college.kz".into()],
        );
        let settings = Settings::parse(&text).expect("defaults are valid");
        assert_eq!(settings.college_name, "Колледж \"Жетісу\"");
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(settings.timezone.offset_seconds(), 5 * 3600);
        assert_eq!(settings.tls_names, ["agent.college.kz"]);
    }

    #[test]
    fn every_key_has_one_comment_and_every_comment_a_key() {
        let timezone = CollegeTimezone::parse(DEFAULT_TIMEZONE).expect("zone");
        let text = default_config_text(&demo_bin(), "College", &timezone, &[]);
        let file = default_config_file(&demo_bin(), "College", &timezone, &[]);
        let written = toml::Value::try_from(&file).expect("toml");
        let written = written.as_table().expect("table");
        let mut keys_written: Vec<String> = written
            .iter()
            .flat_map(|(section, table)| {
                table
                    .as_table()
                    .expect("section")
                    .keys()
                    .map(move |key| format!("{section}.{key}"))
            })
            .collect();
        let mut keys_documented: Vec<String> = KEY_DOCS
            .iter()
            .flat_map(|(section, keys)| keys.iter().map(move |(key, _)| format!("{section}.{key}")))
            .collect();
        keys_written.sort();
        keys_documented.sort();
        assert_eq!(keys_written, keys_documented);
        // Each default appears once, from the section's Default.
        assert!(text.contains(&format!(
            "period_secs = {}\n",
            QrSection::default().period_secs
        )));
        assert!(text.contains(&format!("keep = {}\n", BackupSection::default().keep)));
    }

    #[test]
    fn the_packaged_config_is_the_default_with_a_lan_listen_address() {
        let packaged = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config.toml"),
        )
        .expect("packaging/config.toml");
        let timezone = CollegeTimezone::parse(DEFAULT_TIMEZONE).expect("zone");
        let default =
            default_config_text(&demo_bin(), crate::demo::DEMO_COLLEGE_NAME, &timezone, &[])
                .replace(
                    &format!("listen = \"{DEFAULT_LISTEN}\""),
                    "listen = \"0.0.0.0:8443\"",
                );
        // The packaged file adds three lines for IT at the top; the rest is the default.
        let body: String = packaged
            .lines()
            .skip(3)
            .map(|line| format!("{line}\n"))
            .collect();
        let default_body: String = default
            .lines()
            .skip(1)
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(
            body, default_body,
            "regenerate packaging/config.toml from `kasip-agent init`"
        );
        let settings = Settings::parse(&packaged).expect("valid");
        assert_eq!(settings.listen.to_string(), "0.0.0.0:8443");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let config = |listen: &str| {
            format!("[college]\nbin = \"090640001233\"\nname = \"X\"\n[server]\nlisten = \"{listen}\"\nplain_http = true\n")
        };
        assert!(Settings::parse(&config("127.0.0.1:8080")).is_ok());
        let refused = Settings::parse(&config("0.0.0.0:8080")).expect_err("LAN plain HTTP");
        assert!(refused.contains("loopback"), "{refused}");
        let half = Settings::parse(
            "[college]\nbin = \"090640001233\"\nname = \"X\"\n[server]\ntls_cert = \"/a.pem\"\n",
        )
        .expect_err("cert without key");
        assert!(half.contains("together"), "{half}");
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let unknown = Settings::parse(
            "[college]\nbin = \"090640001233\"\nname = \"X\"\n[server]\nlisten_addr = \"x\"\n",
        )
        .expect_err("unknown key");
        assert!(unknown.contains("listen_addr"), "{unknown}");
        let bad_bin = Settings::parse("[college]\nbin = \"090640001234\"\nname = \"X\"\n")
            .expect_err("bad BIN");
        assert!(bad_bin.contains("college.bin"), "{bad_bin}");
        let bad_listen = Settings::parse(
            "[college]\nbin = \"090640001233\"\nname = \"X\"\n[server]\nlisten = \"localhost\"\n",
        )
        .expect_err("bad listen");
        assert!(bad_listen.contains("server.listen"), "{bad_listen}");
    }
}
