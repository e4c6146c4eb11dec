//! The package's parts without building the .deb (CI builds and installs it too, with
//! packaging/check-deb.sh): the systemd units verify and stay hardened, and the
//! maintainer scripts' logic — init on install, migrate on upgrade keeping the data,
//! the low-port capability, remove keeps data, purge deletes — run against a temporary
//! root (DPKG_ROOT, as `dpkg --root --force-script-chrootless` runs them).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kasip_tests::{text, workspace_binary, TempDataDir};

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

#[test]
fn the_units_verify_and_their_exposure_is_at_most_two() {
    let dir = TempDataDir::new();
    let kiosk = workspace_binary("kasip-kiosk");
    for (unit, binary, installed) in [
        (
            "kasip-agent.service",
            AGENT.to_owned(),
            "/usr/bin/kasip-agent",
        ),
        ("kasip-kiosk.service", kiosk, "/usr/bin/kasip-kiosk"),
    ] {
        let source = fs::read_to_string(packaging().join("systemd").join(unit)).expect("unit");
        assert!(
            source.contains(&format!("ExecStart={installed} ")),
            "{unit}"
        );
        for setting in [
            "Type=notify",
            "WatchdogSec=",
            "User=kasip",
            "StateDirectory=",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "NoNewPrivileges=yes",
            "RestrictAddressFamilies=",
            "SystemCallFilter=@system-service",
            "CapabilityBoundingSet=\n",
            "Restart=on-failure",
        ] {
            assert!(source.contains(setting), "{unit} lacks {setting:?}");
        }
        // verify also checks that ExecStart exists: point it at the built binary.
        let copy = dir.file(unit);
        fs::write(&copy, source.replace(installed, &binary)).expect("copy");
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{unit}: {stdout}{stderr}");
        assert!(stderr.trim().is_empty(), "{unit} warnings: {stderr}");
        let output = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(packaging().join("systemd").join(unit))
            .output()
            .expect("systemd-analyze security");
        let report = String::from_utf8_lossy(&output.stdout).into_owned();
        let score: f64 = report
            .lines()
            .find_map(|line| line.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|score| score.parse().ok())
            .unwrap_or_else(|| panic!("no score for {unit}: {report}"));
        assert!(score <= 2.0, "{unit} exposure {score}: {report}");
    }
}

/// A root with the package's files, as dpkg unpacks them.
fn unpacked_root(dir: &TempDataDir) -> PathBuf {
    let root = dir.file("root");
    fs::create_dir_all(root.join("usr/bin")).expect("usr/bin");
    fs::create_dir_all(root.join("etc/kasip")).expect("etc/kasip");
    fs::copy(AGENT, root.join("usr/bin/kasip-agent")).expect("binary");
    fs::copy(
        packaging().join("config.toml"),
        root.join("etc/kasip/config.toml"),
    )
    .expect("config");
    root
}

fn script(root: &Path, name: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("sh")
        .arg(packaging().join("debian").join(name))
        .args(args)
        .env("DPKG_ROOT", root)
        .env_remove("KASIP_DATA_DIR")
        .env_remove("KASIP_CONFIG")
        .output()
        .expect("sh");
    let (stdout, stderr) = text(&output);
    (output.status.success(), format!("{stdout}{stderr}"))
}

fn agent(root: &Path, args: &[&str]) -> String {
    let output = Command::new(root.join("usr/bin/kasip-agent"))
        .arg("--data-dir")
        .arg(root.join("var/lib/kasip"))
        .arg("--config")
        .arg(root.join("etc/kasip/config.toml"))
        .args(args)
        .output()
        .expect("agent");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{args:?}: {stdout}{stderr}");
    stdout
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

#[test]
fn maintainer_scripts_install_upgrade_remove_and_purge_in_a_temporary_root() {
    let dir = TempDataDir::new();
    let root = unpacked_root(&dir);
    let data = root.join("var/lib/kasip");

    let (ok, log) = script(&root, "postinst", &["configure"]);
    assert!(ok, "{log}");
    assert!(data.join("agent.db").exists(), "install runs init: {log}");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("agent-key.pem")), 0o600);
    assert_eq!(mode(&root.join("etc/kasip/config.toml")), 0o640);
    assert!(
        !data.join("config.toml").exists(),
        "the config stays in /etc/kasip"
    );
    agent(&root, &["demo"]);
    let status = agent(&root, &["status", "--json"]);
    let marks = rusqlite::Connection::open(data.join("agent.db"))
        .expect("db")
        .query_row("SELECT COUNT(*) FROM attendance_events", [], |row| {
            row.get::<_, i64>(0)
        })
        .expect("marks");
    assert!(marks > 0);

    // Upgrade: prerm stops, postinst migrates; key and data stay.
    assert!(script(&root, "prerm", &["upgrade", "0.1.0"]).0);
    let (ok, log) = script(&root, "postinst", &["configure", "0.1.0"]);
    assert!(ok, "{log}");
    assert!(
        log.contains("database schema version"),
        "upgrade migrates: {log}"
    );
    assert_eq!(agent(&root, &["status", "--json"]), status);
    assert!(agent(&root, &["verify"]).contains(&format!("{marks} events")));

    // A port below 1024 gets CAP_NET_BIND_SERVICE through a drop-in, and only then.
    let config = root.join("etc/kasip/config.toml");
    let original = fs::read_to_string(&config).expect("config");
    fs::write(
        &config,
        original.replace("listen = \"0.0.0.0:8443\"", "listen = \"0.0.0.0:443\""),
    )
    .expect("edit");
    assert!(script(&root, "postinst", &["configure", "0.1.0"]).0);
    let drop_in = root.join("etc/systemd/system/kasip-agent.service.d/50-low-port.conf");
    let text = fs::read_to_string(&drop_in).expect("a drop-in for port 443");
    assert!(
        text.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE"),
        "{text}"
    );
    fs::write(&config, &original).expect("edit back");
    assert!(script(&root, "postinst", &["configure", "0.1.0"]).0);
    assert!(!drop_in.exists(), "back on 8443: no capability");

    // Remove keeps the college's data and configuration; purge deletes them.
    assert!(script(&root, "prerm", &["remove"]).0);
    assert!(script(&root, "postrm", &["remove"]).0);
    assert!(data.join("agent.db").exists());
    assert!(config.exists());
    assert!(script(&root, "postrm", &["purge"]).0);
    assert!(!data.exists());
    assert!(!root.join("etc/kasip").exists());
}
