//! `kasip-agent doctor` on a healthy data dir, then on copies of it with one planted
//! fault each: a readable key, a corrupted page, a broken chain, an expired certificate.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kasip_tests::{run, text, TempDataDir};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");

/// (exit code, findings by check name → (health, detail, fix)).
fn doctor(data_dir: &Path) -> (i32, Vec<(String, String, String, String)>) {
    let output = run(AGENT, data_dir, &["doctor", "--json", "--offline"]);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {:?}", text(&output)));
    let findings = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|finding| {
            let field = |name: &str| finding[name].as_str().unwrap_or_default().to_owned();
            (
                field("check"),
                field("health"),
                field("detail"),
                field("fix"),
            )
        })
        .collect();
    (output.status.code().unwrap_or(-1), findings)
}

fn failed(findings: &[(String, String, String, String)]) -> Vec<&str> {
    findings
        .iter()
        .filter(|(_, health, ..)| health == "fail")
        .map(|(check, ..)| check.as_str())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create");
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).expect("chmod");
    for entry in fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn doctor_passes_a_healthy_dir_and_names_each_planted_fault_with_its_fix() {
    let healthy = TempDataDir::new();
    assert!(run(AGENT, &healthy.path(), &["init"]).status.success());
    assert!(run(AGENT, &healthy.path(), &["demo"]).status.success());
    let (code, findings) = doctor(&healthy.path());
    assert_eq!(code, 0, "{findings:?}");
    assert!(failed(&findings).is_empty(), "{findings:?}");
    for check in [
        "data dir",
        "identity key",
        "config",
        "database",
        "attendance chain",
        "free disk",
        "TLS certificate",
        "clock",
    ] {
        assert!(
            findings.iter().any(|finding| finding.0 == check),
            "{check} missing: {findings:?}"
        );
    }

    // A private key others can read.
    let dir = TempDataDir::new();
    copy_dir(&healthy.path(), &dir.path());
    fs::set_permissions(
        dir.path().join("agent-key.pem"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let (code, findings) = doctor(&dir.path());
    assert_eq!(code, 1);
    assert_eq!(failed(&findings), ["identity key"], "{findings:?}");
    let key = findings
        .iter()
        .find(|finding| finding.0 == "identity key")
        .expect("key");
    assert!(key.3.starts_with("chmod 600"), "{key:?}");

    // A corrupted page in the middle of the database.
    let dir = TempDataDir::new();
    copy_dir(&healthy.path(), &dir.path());
    let database = dir.path().join("agent.db");
    let mut bytes = fs::read(&database).expect("db");
    let page = 4096 * (bytes.len() / 4096 / 2);
    bytes[page..page + 4096].fill(0xa5);
    fs::write(&database, bytes).expect("write");
    let (code, findings) = doctor(&dir.path());
    assert_eq!(code, 1);
    let failures = failed(&findings);
    assert!(failures.contains(&"database"), "{findings:?}");
    let database_finding = findings
        .iter()
        .find(|finding| finding.0 == "database")
        .expect("db");
    assert!(
        database_finding.3.contains("restore"),
        "{database_finding:?}"
    );

    // A mark edited behind the agent's back (its triggers dropped first).
    let dir = TempDataDir::new();
    copy_dir(&healthy.path(), &dir.path());
    let connection = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    connection
        .execute_batch(
            "DROP TRIGGER IF EXISTS attendance_events_no_update;
             UPDATE attendance_events SET status = 'present' WHERE id = (SELECT MIN(id) FROM attendance_events WHERE status = 'absent');",
        )
        .expect("tamper");
    drop(connection);
    let (code, findings) = doctor(&dir.path());
    assert_eq!(code, 1);
    assert_eq!(failed(&findings), ["attendance chain"], "{findings:?}");

    // An expired certificate configured as the served one.
    let dir = TempDataDir::new();
    copy_dir(&healthy.path(), &dir.path());
    let (cert, key) = (dir.path().join("old.crt"), dir.path().join("old.key"));
    let script = r#"
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
now = datetime.datetime(2025, 1, 1)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now - datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let made = Command::new("python3")
        .args(["-c", script])
        .arg(&cert)
        .arg(&key)
        .status()
        .expect("python3 with the cryptography package");
    assert!(made.success());
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    let config_path = dir.path().join("config.toml");
    let config = fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "tls_cert = \"\"\n",
            &format!("tls_cert = \"{}\"\n", cert.display()),
        )
        .replace(
            "tls_key = \"\"\n",
            &format!("tls_key = \"{}\"\n", key.display()),
        );
    fs::write(&config_path, config).expect("config");
    let (code, findings) = doctor(&dir.path());
    assert_eq!(code, 1);
    assert_eq!(failed(&findings), ["TLS certificate"], "{findings:?}");
    let tls = findings
        .iter()
        .find(|finding| finding.0 == "TLS certificate")
        .expect("tls");
    assert!(tls.2.contains("expired"), "{tls:?}");

    // Text output says the same, with the fix under each failure.
    let output = run(AGENT, &dir.path(), &["doctor", "--offline"]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout.contains("FAIL TLS certificate"), "{stdout}");
    assert!(
        stdout.contains("fix: install a new certificate"),
        "{stdout}"
    );
    assert!(stderr.contains("1 check(s) failed"), "{stderr}");
}

/// The agent's clock against the registry's, as the last heartbeat's answer saw it: a
/// clock ten minutes ahead fails, and so does one set back since.
#[test]
fn doctor_fails_an_agent_clock_that_disagrees_with_the_registry() {
    let dir = TempDataDir::new();
    assert!(run(AGENT, &dir.path(), &["init"]).status.success());
    let (_, findings) = doctor(&dir.path());
    let clock_finding = |findings: &[(String, String, String, String)]| {
        findings
            .iter()
            .find(|(check, ..)| check == "agent clock")
            .cloned()
            .expect("an agent clock finding")
    };
    assert_eq!(
        clock_finding(&findings).1,
        "ok",
        "no answer yet: {findings:?}"
    );
    // doctor reads the agent's clock: this test does not set one, so it is the system's.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let answered = |registry_time: i64, agent_time: i64| {
        database
            .execute(
                "INSERT INTO registry_clock (id, registry_time, agent_time) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET registry_time = ?1, agent_time = ?2",
                [registry_time, agent_time],
            )
            .expect("registry clock");
    };
    answered(now - 600, now);
    let (code, findings) = doctor(&dir.path());
    let (_, health, detail, fix) = clock_finding(&findings);
    assert_eq!((code, health.as_str()), (1, "fail"), "{findings:?}");
    assert!(detail.contains("600 s ahead of the registry's"), "{detail}");
    assert!(fix.contains("timedatectl"), "{fix}");
    answered(now + 3600, now + 3600);
    let (_, findings) = doctor(&dir.path());
    let (_, health, detail, _) = clock_finding(&findings);
    assert_eq!(health, "fail");
    assert!(detail.contains("it was set back"), "{detail}");
    answered(now - 5, now);
    let (_, findings) = doctor(&dir.path());
    assert_eq!(clock_finding(&findings).1, "ok", "{findings:?}");
}
