//! The agents' zone as a black box: the registry's DNS server answers for each enrolled
//! agent's name with the addresses that agent reported, and carries the DNS-01 values
//! it asked for; only the name's own agent, by a fresh signed request, changes them.

use kasip_certs::jws::{protected_header, sign_compact};
use kasip_certs::DeviceKey;
use kasip_tests::dns::{lookup, Answer};
use kasip_tests::{run, text, Server, Store, TempDataDir};
use serde_json::{json, Value};

kasip_tests::on_both_stores!(
    a_name_resolves_to_its_agents_addresses_and_only_that_agent_changes_it,
    a_registry_without_a_zone_gives_no_names,
    an_operators_bind_server_keeps_the_zone_through_signed_rfc2136_updates,
);

const REGISTRY: &str = env!("CARGO_BIN_EXE_kasip-registry");
const BIN: &str = "090640001233";
const OTHER_BIN: &str = "090640001243";
const ZONE: &str = "agents.kasip.test";
/// A DNS-01 value's shape: base64url of a SHA-256.
const CHALLENGE: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

struct Zone {
    dir: TempDataDir,
    server: Option<Server>,
    dns: String,
}

impl Zone {
    fn start(store: Store) -> Zone {
        let dir = TempDataDir::for_registry(store);
        for args in [
            vec!["init"],
            vec!["add-college", "--bin", BIN, "--name", "Test college"],
            vec!["add-college", "--bin", OTHER_BIN, "--name", "Other college"],
        ] {
            let output = run(REGISTRY, &dir.path(), &args);
            assert!(output.status.success(), "{:?}", text(&output));
        }
        let dns = format!("127.0.0.1:{}", kasip_tests::free_port());
        let mut zone = Zone {
            dir,
            server: None,
            dns,
        };
        zone.restart();
        zone
    }

    fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            let (exit, log) = server.stop_with("TERM");
            assert!(exit.success(), "{log}");
        }
        self.server = Some(Server::start(
            REGISTRY,
            &self.dir.path(),
            &["--agents-zone", ZONE, "--dns-listen", &self.dns],
        ));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.as_ref().expect("running").url)
    }

    /// Enrols a new key for `bin`; returns it and the name the answer gave.
    fn enrol(&self, bin: &str) -> (DeviceKey, String) {
        let output = run(
            REGISTRY,
            &self.dir.path(),
            &["issue-enrolment-code", "--bin", bin],
        );
        assert!(output.status.success(), "{:?}", text(&output));
        let code = text(&output)
            .0
            .split_whitespace()
            .last()
            .expect("code")
            .to_owned();
        let key_dir = tempfile::tempdir().expect("dir");
        let key = DeviceKey::generate_to(&key_dir.path().join("agent-key.pem")).expect("key");
        let (status, body) = post(
            &self.url("/v1/enrolments"),
            &json!({"code": code, "college_bin": bin, "public_key": key.public_key_base64url()})
                .to_string(),
        );
        assert_eq!(status, 201, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("json");
        let hostname = answer["hostname"]
            .as_str()
            .expect("a name in the answer")
            .to_owned();
        (key, hostname)
    }

    fn ask(&self, name: &str, kind: &str) -> Answer {
        lookup(&self.dns, name, kind)
    }
}

use kasip_tests::post_text as post;

/// The registry here runs on the system clock, as must the TSIG it signs for BIND.
#[allow(clippy::disallowed_methods)]
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

static JTI: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A name update signed by `key`, with `fields` merged over a fresh `iat` and `jti`.
fn signed(key: &DeviceKey, fields: Value) -> String {
    let mut claims = json!({
        "agent": key.thumbprint(),
        "iat": now(),
        "jti": format!("jti-{}", JTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
    });
    for (field, value) in fields.as_object().expect("object") {
        claims[field] = value.clone();
    }
    let payload = kasip_core::to_canonical_json(&claims).expect("canonical");
    sign_compact(key, &protected_header(key), payload.as_bytes())
}

fn a_name_resolves_to_its_agents_addresses_and_only_that_agent_changes_it(store: Store) {
    let mut zone = Zone::start(store);
    let (key, hostname) = zone.enrol(BIN);
    assert!(
        hostname.ends_with(&format!(".{ZONE}")) && !hostname.contains(BIN),
        "an opaque name in the zone: {hostname}"
    );
    let updates = zone.url("/v1/names");
    // Nothing published yet: the name does not exist; the zone itself does.
    assert_eq!(zone.ask(&hostname, "A").code, "NXDomain");
    let soa = zone.ask(ZONE, "SOA");
    assert!(soa.authoritative && soa.records.len() == 1, "{soa:?}");

    let (status, body) = post(
        &updates,
        &signed(&key, json!({"addresses": ["192.168.1.20", "fd00::5"]})),
    );
    assert_eq!(status, 200, "{body}");
    let records: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(records["hostname"], hostname.as_str());
    let a = zone.ask(&hostname, "A");
    assert_eq!(a.records, vec!["192.168.1.20"]);
    assert!(a.authoritative);
    assert_eq!(zone.ask(&hostname, "AAAA").records, vec!["fd00::5"]);
    assert_eq!(
        zone.ask(&hostname.to_uppercase(), "A").records,
        vec!["192.168.1.20"]
    );

    let challenge_name = format!("_acme-challenge.{hostname}");
    let set_challenge = signed(
        &key,
        json!({"hostname": hostname, "acme_challenge": [CHALLENGE]}),
    );
    assert_eq!(post(&updates, &set_challenge).0, 200);
    assert_eq!(zone.ask(&challenge_name, "TXT").records, vec![CHALLENGE]);
    // The addresses were left as they were.
    assert_eq!(zone.ask(&hostname, "A").records, vec!["192.168.1.20"]);

    // A captured update, sent again: refused.
    let (status, body) = post(&updates, &set_challenge);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("single-use"), "{body}");

    // Another college's genuine agent asks for this name's TXT record: refused, and it
    // gets its own name when it asks for none.
    let (intruder, intruder_name) = zone.enrol(OTHER_BIN);
    assert_ne!(intruder_name, hostname);
    let (status, body) = post(
        &updates,
        &signed(
            &intruder,
            json!({"hostname": hostname, "acme_challenge": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}),
        ),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("only its own college's name"), "{body}");
    assert_eq!(zone.ask(&challenge_name, "TXT").records, vec![CHALLENGE]);
    let (status, body) = post(
        &updates,
        &signed(&intruder, json!({"addresses": ["10.0.0.7"]})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(zone.ask(&intruder_name, "A").records, vec!["10.0.0.7"]);
    assert_eq!(zone.ask(&hostname, "A").records, vec!["192.168.1.20"]);

    // Forged: the payload changed under the agent's signature; signed by a key nobody
    // enrolled; an agent claiming another agent's id; signed an hour ago.
    let genuine = signed(&key, json!({"addresses": ["192.168.1.21"]}));
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let tampered_payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        kasip_core::to_canonical_json(&json!({
            "agent": key.thumbprint(), "addresses": ["203.0.113.66"], "iat": now(), "jti": "forged"
        }))
        .expect("json"),
    );
    parts[1] = &tampered_payload;
    let stranger_dir = tempfile::tempdir().expect("dir");
    let stranger = DeviceKey::generate_to(&stranger_dir.path().join("k.pem")).expect("key");
    let mut claims_other_agent = json!({"addresses": ["203.0.113.66"]});
    claims_other_agent["agent"] = json!(intruder.thumbprint());
    let stale = {
        let payload = kasip_core::to_canonical_json(&json!({
            "agent": key.thumbprint(), "addresses": ["203.0.113.66"], "iat": now() - 3600, "jti": "old"
        }))
        .expect("json");
        sign_compact(&key, &protected_header(&key), payload.as_bytes())
    };
    for (forged, says) in [
        (parts.join("."), "signature"),
        (
            signed(&stranger, json!({"addresses": ["203.0.113.66"]})),
            "no agent",
        ),
        (signed(&key, claims_other_agent), "another agent"),
        (stale, "clock"),
        ("not a jws".to_owned(), "JWS"),
    ] {
        let (status, body) = post(&updates, &forged);
        assert_eq!(status, 401, "{body}");
        assert!(body.contains(says), "{says}: {body}");
    }
    // Values that cannot be published.
    for (fields, says) in [
        (json!({"addresses": ["999.1.1.1"]}), "not an IPv4"),
        (json!({"addresses": ["224.0.0.1"]}), "cannot be published"),
        (json!({"acme_challenge": ["short"]}), "not a DNS-01 value"),
        (
            json!({"addresses": ["10.0.0.1"], "ttl": 5}),
            "not a name update",
        ),
    ] {
        let (status, body) = post(&updates, &signed(&key, fields));
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(says), "{says}: {body}");
    }
    assert_eq!(zone.ask(&hostname, "A").records, vec!["192.168.1.20"]);

    // Cleared after the proof; everything survives a restart.
    let clear = signed(&key, json!({"hostname": hostname, "acme_challenge": []}));
    assert_eq!(post(&updates, &clear).0, 200);
    assert!(zone.ask(&challenge_name, "TXT").records.is_empty());
    zone.restart();
    assert_eq!(zone.ask(&hostname, "A").records, vec!["192.168.1.20"]);
    assert_eq!(zone.ask(&intruder_name, "A").records, vec!["10.0.0.7"]);
    assert_eq!(zone.ask(&format!("nobody.{ZONE}"), "A").code, "NXDomain");
}

fn a_registry_without_a_zone_gives_no_names(store: Store) {
    let dir = TempDataDir::for_registry(store);
    for args in [
        vec!["init"],
        vec!["add-college", "--bin", BIN, "--name", "Test college"],
    ] {
        assert!(run(REGISTRY, &dir.path(), &args).status.success());
    }
    let server = Server::start(REGISTRY, &dir.path(), &[]);
    let (status, body) = post(&format!("{}/v1/names", server.url), "x.y.z");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--agents-zone"), "{body}");
    let output = run(
        REGISTRY,
        &dir.path(),
        &[
            "serve",
            "--agents-zone",
            "not a zone",
            "--dns-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("is not a domain name"),
        "{:?}",
        text(&output)
    );
}

/// BIND 9 (Debian's `bind9`), primary for the zone, taking updates signed with one key.
struct Bind {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    address: String,
}

impl Bind {
    fn start(key_name: &str, secret: &str) -> Bind {
        let dir = tempfile::tempdir().expect("dir");
        let port = kasip_tests::free_port();
        let root = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                r#"options {{
    directory "{root}";
    pid-file "{root}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
}};
controls {{ }};
key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{ZONE}" {{
    type primary;
    file "{root}/agents.zone";
    update-policy {{ grant {key_name} subdomain {ZONE}. ANY; }};
}};
"#
            ),
        )
        .expect("named.conf");
        std::fs::write(
            dir.path().join("agents.zone"),
            format!(
                "$TTL 60\n@ IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 3600 600 604800 10\n@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
            ),
        )
        .expect("zone");
        let log = std::fs::File::create(dir.path().join("named.log")).expect("log");
        let child = std::process::Command::new("named")
            .args(["-g", "-n", "1", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start named ({error}); install Debian's bind9"));
        let address = format!("127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let answered = std::panic::catch_unwind(|| lookup(&address, ZONE, "SOA"));
            if matches!(answered, Ok(answer) if answer.code == "NoError") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "named did not start: {}",
                std::fs::read_to_string(dir.path().join("named.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Bind {
            child,
            _dir: dir,
            address,
        }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn an_operators_bind_server_keeps_the_zone_through_signed_rfc2136_updates(store: Store) {
    let secret = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"thirty-two bytes of shared secret",
    );
    let bind = Bind::start("kasip-registry", &secret);
    let dir = TempDataDir::for_registry(store);
    for args in [
        vec!["init"],
        vec!["add-college", "--bin", BIN, "--name", "Test college"],
    ] {
        assert!(run(REGISTRY, &dir.path(), &args).status.success());
    }
    let key_file = dir.file("tsig.key");
    std::fs::write(&key_file, format!("hmac-sha256:kasip-registry:{secret}")).expect("key");
    let wrong_key_file = dir.file("wrong.key");
    std::fs::write(
        &wrong_key_file,
        "hmac-sha256:kasip-registry:d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZw==",
    )
    .expect("key");
    let data_dir = dir.path();
    let serve = |key: &std::path::Path| {
        Server::start(
            REGISTRY,
            &data_dir,
            &[
                "--agents-zone",
                ZONE,
                "--dns-update",
                &bind.address,
                "--dns-update-key",
                key.to_str().expect("path"),
            ],
        )
    };
    let server = serve(&key_file);
    let zone = Zone {
        dir,
        server: Some(server),
        dns: bind.address.clone(),
    };
    let (key, hostname) = zone.enrol(BIN);
    let updates = zone.url("/v1/names");
    let (status, body) = post(
        &updates,
        &signed(
            &key,
            json!({"addresses": ["192.168.7.7"], "acme_challenge": [CHALLENGE]}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    // BIND, not the registry, answers: the update reached it, signed.
    assert_eq!(zone.ask(&hostname, "A").records, vec!["192.168.7.7"]);
    let challenge_name = format!("_acme-challenge.{hostname}");
    assert_eq!(zone.ask(&challenge_name, "TXT").records, vec![CHALLENGE]);
    let (status, body) = post(
        &updates,
        &signed(
            &key,
            json!({"addresses": ["192.168.7.8"], "acme_challenge": []}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(zone.ask(&hostname, "A").records, vec!["192.168.7.8"]);
    assert!(zone.ask(&challenge_name, "TXT").records.is_empty());

    // With a key BIND does not know, the update is refused there and the agent is told.
    let Zone { dir, server, dns } = zone;
    let (exit, log) = server.expect("server").stop_with("TERM");
    assert!(exit.success(), "{log}");
    let zone = Zone {
        server: Some(serve(&wrong_key_file)),
        dir,
        dns,
    };
    let (status, body) = post(
        &zone.url("/v1/names"),
        &signed(&key, json!({"addresses": ["192.168.7.9"]})),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not published"), "{body}");
    assert_eq!(zone.ask(&hostname, "A").records, vec!["192.168.7.8"]);
}
