//! `kasip-agent doctor`: everything college IT should know about this installation, each
//! finding with what to do. Reads only; exits non-zero when anything failed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::config::{DataDir, Settings};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub health: Health,
    /// What was seen.
    pub detail: String,
    /// What to do about it (empty when nothing).
    pub fix: String,
}

fn finding(check: &'static str, health: Health, detail: String, fix: &str) -> Finding {
    Finding {
        check,
        health,
        detail,
        fix: fix.to_owned(),
    }
}

/// Below this much free space writes will soon fail.
const DISK_WARN_BYTES: u64 = 1 << 30;
const DISK_FAIL_BYTES: u64 = 100 << 20;
/// Unsent records older than this mean sync is not keeping up.
const BACKLOG_WARN_SECS: i64 = 3600;
const BACKLOG_FAIL_SECS: i64 = 86_400;

/// Runs every check; the registry is asked only when `online`.
pub fn examine(data_dir: &DataDir, now: i64, online: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    permissions(data_dir, &mut findings);
    let settings = match Settings::load(data_dir) {
        Ok(settings) => {
            findings.push(finding(
                "config",
                Health::Ok,
                format!("{} is valid", data_dir.config_path().display()),
                "",
            ));
            Some(settings)
        }
        Err(error) => {
            findings.push(finding(
                "config",
                Health::Fail,
                error.to_string(),
                "fix the named key, then run `kasip-agent validate`",
            ));
            None
        }
    };
    let store = database(data_dir, &mut findings);
    disk(data_dir.root(), &mut findings);
    if let Some(settings) = &settings {
        certificate(data_dir, settings, now, &mut findings);
        if let Some(store) = &store {
            named_certificate(data_dir, settings, store, now, &mut findings);
        }
    }
    clock(now, &mut findings);
    if let Some(store) = &store {
        clock_against_registry(store, now, &mut findings);
    }
    if let (Some(settings), Some(store)) = (&settings, &store) {
        sync(data_dir, settings, store, now, online, &mut findings);
    }
    findings
}

/// The agent's clock stamps every mark: it must agree with the registry's.
const REGISTRY_SKEW_FAIL_SECS: i64 = 120;

/// The agent's clock against the registry's, as of the registry's latest answer (a
/// heartbeat), and against itself since: a clock stepped back is as bad as a wrong one.
fn clock_against_registry(store: &Store, now: i64, findings: &mut Vec<Finding>) {
    const FIX: &str = "set the agent's time right (timedatectl set-ntp true) and restart it; marks stamped meanwhile are wrong";
    match crate::registry_link::registry_clock(store.connection()) {
        Ok(None) => findings.push(finding(
            "agent clock",
            Health::Ok,
            "no answer from the registry yet to compare with".into(),
            "",
        )),
        Ok(Some((registry_time, agent_time))) => {
            let skew = agent_time - registry_time;
            if skew.abs() > REGISTRY_SKEW_FAIL_SECS {
                findings.push(finding(
                    "agent clock",
                    Health::Fail,
                    format!(
                        "the agent's clock was {} s {} the registry's at its latest answer (at most {REGISTRY_SKEW_FAIL_SECS} s)",
                        skew.abs(),
                        if skew > 0 { "ahead of" } else { "behind" }
                    ),
                    FIX,
                ));
            } else if now < agent_time - REGISTRY_SKEW_FAIL_SECS {
                findings.push(finding(
                    "agent clock",
                    Health::Fail,
                    format!(
                        "the agent's clock is {} s earlier than at the registry's latest answer: it was set back",
                        agent_time - now
                    ),
                    FIX,
                ));
            } else {
                findings.push(finding(
                    "agent clock",
                    Health::Ok,
                    format!("{} s from the registry's at its latest answer", skew.abs()),
                    "",
                ));
            }
        }
        Err(error) => findings.push(finding(
            "agent clock",
            Health::Warn,
            format!("cannot read the registry's clock: {error}"),
            "",
        )),
    }
}

fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|metadata| metadata.permissions().mode() & 0o777)
}

fn permissions(data_dir: &DataDir, findings: &mut Vec<Finding>) {
    let root = data_dir.root();
    match mode_of(root) {
        None => findings.push(finding(
            "data dir",
            Health::Fail,
            format!("{} does not exist", root.display()),
            "run `kasip-agent init` (the package's postinst does this)",
        )),
        Some(mode) if mode & 0o077 != 0 => findings.push(finding(
            "data dir",
            Health::Fail,
            format!(
                "{} has mode {mode:o}: others can read the college's data",
                root.display()
            ),
            &format!("chmod 700 {}", root.display()),
        )),
        Some(mode) => findings.push(finding(
            "data dir",
            Health::Ok,
            format!("{} mode {mode:o}", root.display()),
            "",
        )),
    }
    for (check, path) in [
        ("identity key", data_dir.key_path()),
        ("TLS key", data_dir.tls_key_path()),
    ] {
        match mode_of(&path) {
            None if check == "TLS key" => {}
            None => findings.push(finding(
                check,
                Health::Fail,
                format!("{} is missing", path.display()),
                "restore it from a backup of the data dir; a new key needs a new enrolment with the registry",
            )),
            Some(mode) if mode & 0o077 != 0 => findings.push(finding(
                check,
                Health::Fail,
                format!("{} has mode {mode:o}: other users can read a private key", path.display()),
                &format!("chmod 600 {}", path.display()),
            )),
            Some(mode) => findings.push(finding(
                check,
                Health::Ok,
                format!("{} mode {mode:o}", path.display()),
                "",
            )),
        }
    }
}

fn database(data_dir: &DataDir, findings: &mut Vec<Finding>) -> Option<Store> {
    const RESTORE: &str = "stop the agent and restore the last good backup (`kasip-agent restore DATA_DIR/backups/agent-DATE.db`), then report this";
    let store = match Store::open(&data_dir.database_path()) {
        Ok(store) => store,
        Err(error) => {
            findings.push(finding(
                "database",
                Health::Fail,
                error.to_string(),
                RESTORE,
            ));
            return None;
        }
    };
    let integrity = store.integrity_check();
    match integrity {
        Ok(lines) if lines == ["ok"] => findings.push(finding(
            "database",
            Health::Ok,
            "SQLite integrity check: ok".into(),
            "",
        )),
        Ok(lines) => findings.push(finding(
            "database",
            Health::Fail,
            format!("SQLite integrity check: {}", lines.join("; ")),
            RESTORE,
        )),
        Err(error) => findings.push(finding(
            "database",
            Health::Fail,
            format!("SQLite integrity check failed: {error}"),
            RESTORE,
        )),
    }
    match crate::attendance::verify_chain(store.connection()) {
        Ok(crate::attendance::ChainCheck::Intact { rows, .. }) => findings.push(finding(
            "attendance chain",
            Health::Ok,
            format!("{rows} events, hash chain intact"),
            "",
        )),
        Ok(crate::attendance::ChainCheck::Broken { row_id, reason }) => findings.push(finding(
            "attendance chain",
            Health::Fail,
            format!("broken at event {row_id}: {reason}"),
            RESTORE,
        )),
        Err(error) => findings.push(finding(
            "attendance chain",
            Health::Fail,
            format!("cannot read the chain: {error}"),
            RESTORE,
        )),
    }
    Some(store)
}

/// Free bytes on the filesystem holding `path`, from `df` (no unsafe statvfs here).
fn free_bytes(path: &Path) -> Option<u64> {
    let output = Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().nth(1)?;
    let available_kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(available_kib * 1024)
}

fn disk(root: &Path, findings: &mut Vec<Finding>) {
    let fix = "free space on that filesystem (old logs, old backups copied elsewhere); at 0 the agent refuses new marks with 503";
    match free_bytes(root) {
        Some(free) if free < DISK_FAIL_BYTES => findings.push(finding(
            "free disk",
            Health::Fail,
            format!("{} MiB free for {}", free >> 20, root.display()),
            fix,
        )),
        Some(free) if free < DISK_WARN_BYTES => findings.push(finding(
            "free disk",
            Health::Warn,
            format!("{} MiB free for {}", free >> 20, root.display()),
            fix,
        )),
        Some(free) => findings.push(finding(
            "free disk",
            Health::Ok,
            format!("{} MiB free", free >> 20),
            "",
        )),
        None => findings.push(finding(
            "free disk",
            Health::Warn,
            "cannot tell (`df` failed)".into(),
            "check free space by hand: df -h",
        )),
    }
}

fn certificate(data_dir: &DataDir, settings: &Settings, now: i64, findings: &mut Vec<Finding>) {
    if settings.plain_http {
        findings.push(finding(
            "TLS certificate",
            Health::Warn,
            "plain HTTP on loopback (server.plain_http): development only".into(),
            "remove server.plain_http for a real installation",
        ));
        return;
    }
    let path = settings
        .tls_pem
        .as_ref()
        .map(|(cert, _)| cert.clone())
        .unwrap_or_else(|| data_dir.tls_cert_path());
    let fix = "install a new certificate (server.tls_cert and server.tls_key) and run `systemctl reload kasip-agent`; for the self-signed one, move tls.crt and tls.key away and restart";
    match crate::service::certificate_not_after(&path) {
        None => findings.push(finding(
            "TLS certificate",
            Health::Fail,
            format!("{} is missing or not a PEM certificate", path.display()),
            fix,
        )),
        Some(not_after) if not_after <= now => findings.push(finding(
            "TLS certificate",
            Health::Fail,
            crate::service::expiry_warning(&path, now).unwrap_or_default(),
            fix,
        )),
        Some(_) => match crate::service::expiry_warning(&path, now) {
            Some(warning) => findings.push(finding("TLS certificate", Health::Warn, warning, fix)),
            None => findings.push(finding(
                "TLS certificate",
                Health::Ok,
                format!("{} valid for more than 30 days", path.display()),
                "",
            )),
        },
    }
}

/// The agent's name in the registry's zone and its publicly trusted certificate:
/// name, expiry, last renewal and its error.
fn named_certificate(
    data_dir: &DataDir,
    settings: &Settings,
    store: &Store,
    now: i64,
    findings: &mut Vec<Finding>,
) {
    const CHECK: &str = "name and certificate";
    if settings.plain_http || !settings.certificate.acme {
        return;
    }
    let files = crate::certificate::AcmeFiles::new(data_dir);
    let state = files.load_state();
    let at = |time: i64| crate::clock::local_date_time_text(&settings.timezone, time);
    let enrolled = crate::registry_link::enrolment(store.connection())
        .ok()
        .flatten()
        .is_some();
    let Some(hostname) = state.hostname.clone() else {
        findings.push(if enrolled {
            finding(
                CHECK,
                Health::Warn,
                match &state.last_error {
                    Some(error) => format!("no name yet: {error}"),
                    None => "no name yet: the registry has not given one (it may run no agents' zone)".into(),
                },
                "phones see the self-signed certificate's warning until the agent has a name; ask the registry's operators whether they serve the agents' zone",
            )
        } else {
            finding(
                CHECK,
                Health::Ok,
                "not enrolled: phones see the self-signed certificate (labs and demos)".into(),
                "",
            )
        });
        return;
    };
    let renewal = state.last_renewal.map_or("never".to_owned(), |time| {
        format!("last renewed {}", at(time))
    });
    let retry_fix = "check that this machine reaches the registry and the ACME server (certificate.acme_directory); `kasip-agent cert renew` tries again now";
    match files.current() {
        None => findings.push(finding(
            CHECK,
            if state.last_error.is_some() { Health::Fail } else { Health::Warn },
            match &state.last_error {
                Some(error) => format!("{hostname}: no certificate yet; the last attempt failed: {error}"),
                None => format!("{hostname}: no certificate yet; the service obtains one within certificate.check_secs"),
            },
            retry_fix,
        )),
        Some((_, (_, not_after))) => {
            let detail = format!(
                "{hostname}: certificate valid until {}, {renewal}{}",
                at(not_after),
                state
                    .last_error
                    .as_ref()
                    .map(|error| format!("; the last renewal failed: {error}"))
                    .unwrap_or_default()
            );
            let health = if not_after <= now {
                Health::Fail
            } else if state.last_error.is_some() {
                Health::Warn
            } else {
                Health::Ok
            };
            let fix = if health == Health::Ok { "" } else { retry_fix };
            findings.push(finding(CHECK, health, detail, fix));
        }
    }
}

fn clock(now: i64, findings: &mut Vec<Finding>) {
    // 2025-01-01: a clock before this was never set.
    if now < 1_735_689_600 {
        findings.push(finding(
            "clock",
            Health::Fail,
            format!("the system clock says {now} (before 2025)"),
            "set the time and enable NTP: timedatectl set-ntp true",
        ));
        return;
    }
    let synchronised = Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    match synchronised.as_deref() {
        Some("yes") => findings.push(finding(
            "clock",
            Health::Ok,
            "NTP synchronised".into(),
            "",
        )),
        Some(other) => findings.push(finding(
            "clock",
            Health::Warn,
            format!("NTP synchronised: {other}"),
            "enable time synchronisation (timedatectl set-ntp true): classroom codes and kiosk passes depend on the agent's clock",
        )),
        None => findings.push(finding(
            "clock",
            Health::Warn,
            "cannot ask timedatectl whether NTP is synchronised".into(),
            "make sure the machine's time is synchronised (chrony, systemd-timesyncd)",
        )),
    }
}

fn sync(
    data_dir: &DataDir,
    settings: &Settings,
    store: &Store,
    now: i64,
    online: bool,
    findings: &mut Vec<Finding>,
) {
    let status = match crate::outbox::status(store.connection(), now) {
        Ok(status) => status,
        Err(error) => {
            findings.push(finding(
                "sync",
                Health::Fail,
                format!("cannot read the outbox: {error}"),
                "",
            ));
            return;
        }
    };
    let Some(registry) = status.registry.clone() else {
        findings.push(finding(
            "sync",
            Health::Warn,
            "not enrolled with e-Qazyna: nothing is sent".into(),
            "kasip-agent enroll --registry URL --code CODE (the code comes from the registry)",
        ));
        return;
    };
    if let Some(alert) = &status.alert {
        findings.push(finding(
            "sync",
            Health::Fail,
            format!("the upload queue is stopped: {alert}"),
            "read `kasip-agent sync status`; after fixing the cause, `kasip-agent sync resume`",
        ));
    }
    let age = status.oldest_unsent_age_secs.unwrap_or(0);
    let backlog = format!(
        "{} batch(es) and {} event(s) not yet acknowledged, oldest {} min",
        status.queued_batches,
        status.unsealed_records,
        age / 60
    );
    let fix = "check that the registry is reachable from this machine (doctor's registry line) and `kasip-agent sync status`";
    findings.push(match age {
        age if age > BACKLOG_FAIL_SECS => finding("outbox backlog", Health::Fail, backlog, fix),
        age if age > BACKLOG_WARN_SECS => finding("outbox backlog", Health::Warn, backlog, fix),
        _ => finding("outbox backlog", Health::Ok, backlog, ""),
    });
    if !online {
        return;
    }
    let reachable = kasip_certs::DeviceKey::load(&data_dir.key_path())
        .map_err(|error| error.to_string())
        .and_then(|key| {
            let client =
                crate::sync::client(settings, &registry).map_err(|error| error.to_string())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            let agent_id = crate::outbox::agent_id(store.connection(), &key)
                .map_err(|error| error.to_string())?;
            runtime
                .block_on(client.checkpoint(&key, &agent_id, now))
                .map_err(|error| error.to_string())
        });
    findings.push(match reachable {
        Ok(checkpoint) => finding(
            "registry",
            Health::Ok,
            format!("{registry} answers; it holds batches up to seq {}", checkpoint.last_seq),
            "",
        ),
        Err(error) => finding(
            "registry",
            Health::Fail,
            format!("{registry}: {error}"),
            "check the network, the firewall and sync.registry_ca_file; batches wait safely meanwhile",
        ),
    });
}
