//! Phones trust the agent: enrolled with a registry that serves the agents' zone, the
//! agent gets a name there, proves it to Pebble (Let's Encrypt's ACME test server, a CA
//! nobody here wrote) through the registry's DNS, and serves the certificate to
//! Chromium, which verifies it against Pebble's root in its own NSS database.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::named::{Named, ZONE};
use common::registry::{agent_json, agent_run};
use common::TEACHER_A;
use kasip_tests::acme::nss_home_trusting;
use kasip_tests::text;
use kasip_tests::webdriver::{Browser, Trust};
use serde_json::Value;

impl Named {
    /// A TLS connection to the agent by its name, verified against Pebble's root as a
    /// phone verifies against its trust store; and the served certificate's fingerprint.
    fn connect_by_name(&self, root_pem: &str) -> (TlsStream, String) {
        let mut roots = rustls::RootCertStore::empty();
        let der = kasip_certs::first_certificate_der(root_pem).expect("root");
        roots.add(der.into()).expect("root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(self.hostname.clone()).expect("name");
        let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let socket = TcpStream::connect(self.college.server.address()).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut stream = rustls::StreamOwned::new(connection, socket);
        let status = get_healthz(&mut stream, &self.hostname);
        assert_eq!(status, 200);
        let fingerprint = served_fingerprint(&stream);
        (stream, fingerprint)
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn served_fingerprint(stream: &TlsStream) -> String {
    let served = stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first().cloned())
        .expect("a certificate");
    kasip_certs::fingerprint_der(&served)
}

/// One keep-alive `GET /healthz` on `stream`; its status.
fn get_healthz(stream: &mut TlsStream, host: &str) -> u16 {
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"
    )
    .expect("write");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // The head, then as many body bytes as Content-Length says.
    loop {
        let read = stream.read(&mut buffer).expect("read");
        assert!(read > 0, "connection closed");
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|value| value.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text[9..12].parse().expect("status");
            }
        }
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl (Debian's curl)")
}

#[test]
fn chromium_opens_the_agent_by_its_name_with_verification_on_and_checks_a_student_in() {
    let named = Named::start();
    let college = &named.college;
    let root = named.pebble.issuing_root();
    let root_file = college.dir.file("pebble-root.pem");
    std::fs::write(&root_file, &root).expect("root");

    // The registry's DNS answers for the name with the address the agent serves on.
    let answer = kasip_tests::dns::lookup(&named.dns, &named.hostname, "A");
    assert_eq!(answer.records, vec!["127.0.0.1"], "{answer:?}");

    // curl verifies the name against Pebble's root; without it, the same name fails.
    let resolve = format!("{}:{}:127.0.0.1", named.hostname, named.port());
    let healthz = named.named_url("/healthz");
    let trusted = curl(&[
        "--cacert",
        root_file.to_str().expect("path"),
        "--resolve",
        &resolve,
        &healthz,
    ]);
    assert!(trusted.status.success(), "{:?}", text(&trusted));
    let untrusted = curl(&["--resolve", &resolve, &healthz]);
    assert!(
        !untrusted.status.success(),
        "curl trusted Pebble's root on its own"
    );

    // Who connects by address still gets the self-signed certificate (a pinned kiosk).
    let (mut stream, by_address) = common::tls_connect(&college.server.address());
    assert_eq!(get_healthz(&mut stream, "127.0.0.1"), 200);
    let self_signed = std::fs::read_to_string(college.dir.path().join("tls.crt")).expect("tls.crt");
    assert_eq!(
        by_address.lock().expect("lock").clone(),
        kasip_certs::fingerprint_pem(&self_signed)
    );
    let (_named_stream, by_name) = named.connect_by_name(&root);
    assert_eq!(
        Some(by_name),
        named.status()["fingerprint"].as_str().map(str::to_owned)
    );

    // The projector's QR carries the name.
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let shown = college.shown_url(&teacher, college.lesson_a);
    assert!(
        shown.starts_with(&named.named_url(&format!("/c/{}.", college.lesson_a))),
        "{shown}"
    );

    // A phone's browser that trusts Pebble's root, and nothing ignored: the page loads,
    // binding makes the device key (WebCrypto needs a secure context), the scan checks in.
    let home = nss_home_trusting(&root);
    let rules = format!("MAP {} 127.0.0.1", named.hostname);
    let browser = Browser::start_with(Trust::Verified {
        home: home.path(),
        resolver_rules: &rules,
    });
    let iin = college.group_a[0].clone();
    let code = college.issue_code(&iin);
    assert_eq!(
        browser.navigate_reporting_errors(&named.named_url("/bind?lang=kk")),
        None
    );
    assert_eq!(
        browser.execute("return window.isSecureContext"),
        Value::Bool(true)
    );
    assert!(browser.current_url().starts_with(&named.named_url("/bind")));
    browser.type_into("input[name=iin]", &iin);
    browser.type_into("input[name=code]", &code);
    browser.click("button");
    let wait_for = |script: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.execute(script) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(
        "return document.querySelector('a[href=\"/pass\"]') !== null",
        "the binding",
    );
    let shown = college.shown_url(&teacher, college.lesson_a);
    assert_eq!(browser.navigate_reporting_errors(&shown), None);
    wait_for(
        "return document.getElementById('confirmation') !== null",
        "the check-in's confirmation",
    );
    let evidence: String = college
        .db()
        .query_row(
            "SELECT evidence FROM attendance_events WHERE student_iin = ?1",
            [&iin],
            |row| row.get(0),
        )
        .expect("the mark");
    assert!(evidence.contains("device_signature"), "{evidence}");
    browser.screenshot(&college.dir.file("named-check-in.png"));

    // The control: the same browser setup without Pebble's root refuses the page.
    let bare_home = tempfile::tempdir().expect("home");
    let bare = Browser::start_with(Trust::Verified {
        home: bare_home.path(),
        resolver_rules: &rules,
    });
    let refused = bare.navigate_reporting_errors(&named.named_url("/bind"));
    assert_eq!(refused.as_deref(), Some("net::ERR_CERT_AUTHORITY_INVALID"));

    // A kiosk enrolled by the name verifies the certificate as the browser did: refused
    // without Pebble's root, enrolled with it, nothing pinned.
    let output = agent_run(college, &["kiosk", "add", "--room", "101"]);
    let said = text(&output).0;
    let code = said
        .lines()
        .find_map(|line| line.strip_prefix("enrolment code: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{said}"))
        .to_owned();
    assert!(
        said.contains(&format!("--agent https://{}:", named.hostname)),
        "kiosk add shows the name: {said}"
    );
    let kiosk_dir = kasip_tests::TempDataDir::new();
    let kiosk = |args: &[&str]| {
        kasip_tests::run(
            &kasip_tests::workspace_binary("kasip-kiosk"),
            &kiosk_dir.path(),
            args,
        )
    };
    let agent_by_name = named.named_url("");
    let by_name = [
        "enroll",
        "--agent",
        agent_by_name.as_str(),
        "--code",
        code.as_str(),
        "--agent-address",
        "127.0.0.1",
    ];
    let refused = kiosk(&by_name);
    assert!(!refused.status.success());
    assert!(
        text(&refused).1.contains("not trusted"),
        "{:?}",
        text(&refused)
    );
    let with_root = ["--ca-file", root_file.to_str().expect("path")];
    let enrolled = kiosk(&[&by_name[..], &with_root[..]].concat());
    let (out, err) = text(&enrolled);
    assert!(enrolled.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("verified for {}", named.hostname)),
        "{out}"
    );
    assert!(!err.contains("warning"), "the pass keys were pulled: {err}");
    let status = kiosk(&["status", "--json"]);
    let status: Value = serde_json::from_str(&text(&status).0).expect("json");
    assert_eq!(status["fingerprint"], "");

    let doctor = agent_json(college, &["doctor", "--json", "--offline"]);
    let finding = doctor["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|finding| finding["check"] == "name and certificate")
        .cloned()
        .expect("a name finding");
    assert_eq!(finding["health"], "ok", "{finding}");
    assert!(finding["detail"]
        .as_str()
        .expect("detail")
        .contains(&named.hostname));
}

#[test]
fn renews_at_two_thirds_and_keeps_the_last_good_certificate_while_the_registry_is_down() {
    let mut named = Named::start();
    let root = named.pebble.issuing_root();
    let first = named.status();
    let first_fingerprint = first["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    let due = first["renewal_due_at"].as_i64().expect("due");
    let (not_before, not_after) = (
        first["not_before"].as_i64().expect("from"),
        first["not_after"].as_i64().expect("until"),
    );
    assert_eq!(due, not_before + (not_after - not_before) * 2 / 3);
    let (mut open, served) = named.connect_by_name(&root);
    assert_eq!(served, first_fingerprint);

    // Due, with the registry down: the attempt fails, the old certificate stays served
    // and doctor says so with a fix.
    named.registry.stop();
    named.college.set_clock(due + 1);
    let failed = named.wait_for("a failed renewal", |status| {
        status["last_error"].is_string()
    });
    assert_eq!(failed["fingerprint"], first_fingerprint.as_str());
    assert!(
        failed["last_error"]
            .as_str()
            .expect("error")
            .contains("registry"),
        "{failed:#}"
    );
    let (_, still) = named.connect_by_name(&root);
    assert_eq!(still, first_fingerprint);
    assert!(named.metric("kasip_certificate_renewal_failures") >= 1.0);
    assert_eq!(
        named.metric("kasip_certificate_expiry_timestamp_seconds"),
        not_after as f64
    );
    let output = agent_run(&named.college, &["doctor", "--offline"]);
    let said = text(&output).0;
    assert!(
        said.contains("WARN name and certificate") && said.contains("cert renew"),
        "{said}"
    );

    // The registry is back: the next round renews; new handshakes get the new
    // certificate, the connection opened before keeps its own and keeps working.
    named
        .registry
        .start(&["--agents-zone", ZONE, "--dns-listen", &named.dns.clone()]);
    let renewed = named.wait_for("the renewal", |status| {
        status["fingerprint"].as_str() != Some(first_fingerprint.as_str())
    });
    assert!(renewed["last_error"].is_null(), "{renewed:#}");
    assert_eq!(renewed["failures"], 0);
    assert_eq!(renewed["last_renewal"], due + 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, now_served) = named.connect_by_name(&root);
        if now_served == renewed["fingerprint"].as_str().expect("fingerprint") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get_healthz(&mut open, &named.hostname), 200);
    assert_eq!(served_fingerprint(&open), first_fingerprint);
}
