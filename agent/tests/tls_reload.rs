//! `systemctl reload` (SIGHUP) swaps the served certificate for new handshakes while a
//! connection opened before keeps working.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{tls_connect, TlsStream as Connection, AGENT};
use kasip_tests::{run, Server, TempDataDir};

/// A kept-alive TLS connection to the agent and the fingerprint it was served.
fn connect(address: &str) -> (Connection, String) {
    let (mut stream, seen) = tls_connect(address);
    assert_eq!(ping(&mut stream), "pong");
    let fingerprint = seen.lock().expect("lock").clone().expect("a certificate");
    (stream, fingerprint)
}

/// `GET /ping` on an open connection (HTTP/1.1 keep-alive); the body.
fn ping(stream: &mut Connection) -> String {
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    while !response.ends_with(b"pong\n") {
        let read = stream
            .read(&mut buffer)
            .expect("read on the open connection");
        assert!(read > 0, "the connection was closed");
        response.extend_from_slice(&buffer[..read]);
    }
    "pong".to_owned()
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_open_connections() {
    let dir = TempDataDir::new();
    assert!(run(AGENT, &dir.path(), &["init"]).status.success());
    let (served_cert, served_key) = (dir.file("served.crt"), dir.file("served.key"));
    let (new_cert, new_key) = (dir.file("new.crt"), dir.file("new.key"));
    kasip_certs::write_self_signed(&[], &served_cert, &served_key).expect("first pair");
    kasip_certs::write_self_signed(&[], &new_cert, &new_key).expect("second pair");
    let config_path = dir.path().join("config.toml");
    let config = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "tls_cert = \"\"",
            &format!("tls_cert = \"{}\"", served_cert.display()),
        )
        .replace(
            "tls_key = \"\"",
            &format!("tls_key = \"{}\"", served_key.display()),
        );
    std::fs::write(&config_path, config).expect("config");
    let fingerprint = |path: &std::path::Path| {
        kasip_certs::fingerprint_pem(&std::fs::read_to_string(path).expect("pem")).expect("cert")
    };
    let (first, second) = (fingerprint(&served_cert), fingerprint(&new_cert));

    let server = Server::start(AGENT, &dir.path(), &[]);
    let (mut old_connection, served) = connect(&server.address());
    assert_eq!(served, first);

    // IT installs the new pair and reloads.
    std::fs::rename(&new_cert, &served_cert).expect("replace cert");
    std::fs::rename(&new_key, &served_key).expect("replace key");
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, served) = connect(&server.address());
        if served == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection from before the reload still answers.
    assert_eq!(ping(&mut old_connection), "pong");
    assert_eq!(ping(&mut old_connection), "pong");
    let (status, log) = server.stop_with("TERM");
    assert!(status.success(), "{log}");
    assert!(log.contains("TLS certificate reloaded"), "{log}");
}
