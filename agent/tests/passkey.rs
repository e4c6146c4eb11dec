//! Check-ins the college cannot forge: a student enrols a passkey at the registry (on
//! the registry's own name, `kasip.test`, behind a test CA Chromium trusts), the agent
//! (on its name in the registry's zone, with Pebble's certificate) asks for an
//! assertion at every check-in, and the registry verifies it again on receipt. Chromium
//! holds the passkey in a WebDriver virtual authenticator (CTAP2, resident keys, user
//! verification); nothing here ignores a certificate.

mod common;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::named::Named;
use common::registry::{agent_run, DEMO_BIN};
use common::TEACHER_A;
use kasip_core::passkey::software::{self, SoftwareAuthenticator};
use kasip_tests::acme::{nss_home_trusting_all, test_ca_issuing};
use kasip_tests::text;
use kasip_tests::webdriver::{Browser, Trust};
use serde_json::{json, Value};

/// The registry's domain: the passkeys' relying party, parent of the agents' zone.
const RP: &str = "kasip.test";

struct Passkeys {
    named: Named,
    /// The test CA that issued the registry's certificate, and Chromium's `$HOME`
    /// trusting it and Pebble's root.
    _ca_dir: tempfile::TempDir,
    ca_pem: String,
    home: tempfile::TempDir,
    registry_port: u16,
}

impl Passkeys {
    fn start() -> Passkeys {
        let ca_dir = tempfile::tempdir().expect("ca dir");
        let (ca_pem, cert, key) = test_ca_issuing(&[RP, "127.0.0.1"]);
        let file = |name: &str, content: &str| {
            let path = ca_dir.path().join(name);
            std::fs::write(&path, content).expect("write");
            path.display().to_string()
        };
        let (ca, cert, key) = (
            file("ca.pem", &ca_pem),
            file("registry.crt", &cert),
            file("registry.key", &key),
        );
        let named = Named::start_with(
            &["--tls-cert", &cert, "--tls-key", &key],
            Some(std::path::Path::new(&ca)),
        );
        assert!(named.registry.url().starts_with("https://"));
        // The directory an agent gets lists the college's students on the registry's list.
        named
            .registry
            .list_beneficiaries(named.college.group_a.iter());
        let home = nss_home_trusting_all(&[&named.pebble.issuing_root(), &ca_pem]);
        let registry_port = named
            .registry
            .address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("port");
        Passkeys {
            named,
            _ca_dir: ca_dir,
            ca_pem,
            home,
            registry_port,
        }
    }

    fn browser(&self) -> Browser {
        let rules = format!("MAP {} 127.0.0.1, MAP {RP} 127.0.0.1", self.named.hostname);
        Browser::start_with(Trust::Verified {
            home: self.home.path(),
            resolver_rules: &rules,
        })
    }

    fn registry_page(&self, path: &str) -> String {
        format!("https://{RP}:{}{path}", self.registry_port)
    }

    /// A client of the registry by its name, trusting only the test CA.
    fn registry_client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA"),
            )
            .resolve(RP, ([127, 0, 0, 1], self.registry_port).into())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    fn student_code(&self, iin: &str) -> String {
        self.named
            .registry
            .command(&["issue-student-code", iin])
            .trim()
            .to_owned()
    }

    /// `sync now`: seals and sends the marks, pulls the passkey directory.
    fn sync(&self) -> String {
        let output = agent_run(&self.named.college, &["sync", "now"]);
        assert!(output.status.success(), "{:?}", text(&output));
        text(&output).0
    }

    fn origin(&self) -> String {
        self.named.named_url("")
    }

    /// Enrols a passkey for `iin` on the registry's page, as the student does.
    fn enrol(&self, browser: &Browser, iin: &str) {
        let code = self.student_code(iin);
        assert_eq!(
            browser.navigate_reporting_errors(&self.registry_page("/passkey?lang=en")),
            None
        );
        browser.type_into("input[name=iin]", iin);
        browser.type_into("input[name=code]", &code);
        browser.click("#passkey button");
        wait_for(
            browser,
            "return document.getElementById('outcome').className === 'ok' \
             && document.getElementById('passkey').hidden",
            "the passkey's enrolment",
        );
    }

    /// Links the browser's phone to `iin` at the agent, by its name.
    fn bind(&self, browser: &Browser, iin: &str) {
        let code = self.named.college.issue_code(iin);
        assert_eq!(
            browser.navigate_reporting_errors(&self.named.named_url("/bind?lang=en")),
            None
        );
        browser.type_into("input[name=iin]", iin);
        browser.type_into("input[name=code]", &code);
        browser.click("button");
        wait_for(
            browser,
            "return document.querySelector('a[href=\"/pass\"]') !== null",
            "the binding",
        );
    }

    /// The registry's verdicts on the check-ins it holds: (verified, reason) by record.
    fn verdicts(&self) -> Vec<(bool, String)> {
        self.named
            .registry
            .query("SELECT verified, reason FROM passkey_marks ORDER BY record_id")
            .lines()
            .map(|line| {
                let (verified, reason) = line.split_once('|').unwrap_or((line, ""));
                (verified == "1", reason.to_owned())
            })
            .collect()
    }

    /// The challenge a check-in at `url` signs, computed as the registry does.
    fn challenge(&self, url: &str, iin: &str) -> [u8; 32] {
        let token = kasip_core::ClassroomToken::parse(url.rsplit('/').next().expect("token"))
            .expect("token");
        let date: String = self
            .named
            .college
            .db()
            .query_row(
                "SELECT date FROM lessons WHERE id = ?1",
                [token.lesson],
                |row| row.get(0),
            )
            .expect("lesson");
        kasip_core::passkey::check_in_challenge(
            DEMO_BIN,
            token.lesson as u64,
            &date,
            token.step,
            iin,
        )
    }
}

fn wait_for(browser: &Browser, script: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser.execute(script) != Value::Bool(true) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens a classroom code and waits for the agent's answer: the confirmation's passkey
/// state (`yes`, `no`, or "" for none), or the refusal's reason.
fn check_in(browser: &Browser, url: &str) -> Result<String, String> {
    assert_eq!(browser.navigate_reporting_errors(url), None);
    wait_for(
        browser,
        "return document.getElementById('confirmation') !== null \
         || document.getElementById('reason') !== null",
        "the check-in's answer",
    );
    let reason = browser
        .execute("const r = document.getElementById('reason'); return r ? r.dataset.reason : null");
    match reason.as_str() {
        Some(reason) => Err(reason.to_owned()),
        None => Ok(browser
            .execute(
                "const p = document.getElementById('passkey'); return p ? p.dataset.verified : ''",
            )
            .as_str()
            .unwrap_or_default()
            .to_owned()),
    }
}

/// An assertion signed by the PKCS#8 P-256 key `pkcs8` (the virtual authenticator's,
/// exported by WebDriver, or another), with the given flags and counter: (credential
/// id, authenticator data, client data, signature).
fn assertion(
    pkcs8: &[u8],
    credential_id: &[u8],
    challenge: &[u8],
    origin: &str,
    flags: u8,
    count: u32,
) -> [Vec<u8>; 4] {
    let signer = SoftwareAuthenticator::from_pkcs8(pkcs8, credential_id, RP);
    let made = signer.assert(challenge, origin, flags, count);
    [
        made.credential_id,
        made.authenticator_data,
        made.client_data_json,
        made.signature,
    ]
}

const UP: u8 = software::USER_PRESENT;
const UP_UV: u8 = software::PRESENT_AND_VERIFIED;

/// Makes the page's `navigator.credentials.get` answer `parts` (as a tampered phone,
/// or a college's script, would) until the returned id is removed.
fn inject(browser: &Browser, parts: &[Vec<u8>; 4]) -> String {
    let [id, data, client, signature] = parts.each_ref().map(|part| URL_SAFE_NO_PAD.encode(part));
    let source = format!(
        "(() => {{ const b = (t) => Uint8Array.from(atob(t.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0)).buffer; \
         navigator.credentials.get = async () => ({{ rawId: b('{id}'), response: {{ authenticatorData: b('{data}'), clientDataJSON: b('{client}'), signature: b('{signature}') }} }}); }})();"
    );
    browser.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({ "source": source }),
    )["identifier"]
        .as_str()
        .expect("identifier")
        .to_owned()
}

fn remove_injection(browser: &Browser, identifier: &str) {
    browser.cdp(
        "Page.removeScriptToEvaluateOnNewDocument",
        json!({ "identifier": identifier }),
    );
}

/// The virtual authenticator's credential for `credential_id` (base64url): its PKCS#8
/// private key.
fn private_key(browser: &Browser, authenticator: &str, credential_id: &str) -> Vec<u8> {
    let credentials = browser.virtual_credentials(authenticator);
    let credential = credentials
        .iter()
        .find(|credential| credential["credentialId"].as_str() == Some(credential_id))
        .unwrap_or_else(|| panic!("no credential {credential_id} in {credentials:?}"));
    let key = credential["privateKey"].as_str().expect("private key");
    URL_SAFE_NO_PAD
        .decode(key.trim_end_matches('='))
        .expect("base64url key")
}

fn credential_of(setup: &Passkeys, iin: &str) -> String {
    let credential = setup.named.registry.query(&format!(
        "SELECT credential_id FROM student_passkeys WHERE iin = '{iin}' AND revoked_at IS NULL"
    ));
    assert!(!credential.is_empty(), "no active passkey for {iin}");
    credential
}

#[test]
fn a_passkey_enrolled_at_the_registry_verifies_a_check_in_at_the_agent_and_again_at_the_registry() {
    let setup = Passkeys::start();
    let college = &setup.named.college;
    let browser = setup.browser();
    let authenticator = browser.add_virtual_authenticator();
    let student = college.group_a[0].clone();

    // Enrolment at the registry: a discoverable credential for the registry's domain.
    setup.enrol(&browser, &student);
    let credentials = browser.virtual_credentials(&authenticator);
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0]["rpId"], RP);
    assert_eq!(credentials[0]["isResidentCredential"], true);
    assert_eq!(
        setup.named.registry.count(&format!(
            "SELECT COUNT(*) FROM student_passkeys WHERE iin = '{student}' AND revoked_at IS NULL"
        )),
        1
    );
    // The code was used up; a wrong one is refused and enrols nothing.
    let registry = setup.registry_client();
    let again = registry
        .post(setup.registry_page("/v1/passkeys/options"))
        .json(&json!({"iin": student, "code": "AAAA-BBBB-CCCC"}))
        .send()
        .expect("options");
    assert_eq!(again.status(), 403);

    // The agent pulls the signed directory.
    let said = setup.sync();
    assert!(said.contains("passkeys: 1 student(s)"), "{said}");

    // The phone is linked at the agent; the scan asks the passkey; the mark is verified.
    setup.bind(&browser, &student);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    assert!(url.starts_with(&setup.origin()), "{url}");
    assert_eq!(check_in(&browser, &url), Ok("yes".to_owned()));
    browser.screenshot(&kasip_tests::screenshot_path("student-passkey-check-in"));
    let evidence: String = college
        .db()
        .query_row(
            "SELECT evidence FROM attendance_events WHERE student_iin = ?1",
            [&student],
            |row| row.get(0),
        )
        .expect("the mark");
    let stored: Value = serde_json::from_str(&evidence).expect("evidence");
    let assertion_text = stored["passkey"]
        .as_str()
        .expect("the assertion in the evidence");
    assert_eq!(assertion_text.split('.').count(), 4);

    // A classmate without a passkey checks in as before: recorded, unverified.
    let classmate = college.group_a[1].clone();
    let phone = college.bound_phone(&classmate);
    let by_address = url.replace(&setup.origin(), &college.server.url);
    assert_eq!(common::check_in(&phone, &by_address).0, 200);

    // The registry verifies each on receipt.
    setup.sync();
    assert_eq!(
        setup.verdicts(),
        vec![(true, String::new()), (false, "no passkey".to_owned())]
    );
    assert!(setup
        .named
        .registry
        .findings_of("passkey_invalid")
        .is_empty());

    // With qr_requires_passkey, only the verified check-in counts as QR in the
    // registry's recomputed month.
    let month = college
        .db()
        .query_row(
            "SELECT substr(date, 1, 7) FROM lessons WHERE id = ?1",
            [college.lesson_a],
            |row| row.get::<_, String>(0),
        )
        .expect("month");
    let qr_tracked = |required: bool| {
        let mut args = vec!["require-passkey", "--bin", DEMO_BIN];
        if !required {
            args.push("--off");
        }
        setup.named.registry.command(&args);
        setup
            .named
            .registry
            .command(&["audit", "--month", &month, "--bin", DEMO_BIN]);
        let figures = setup.named.registry.query(&format!(
            "SELECT figures FROM month_figures WHERE bin = '{DEMO_BIN}' AND month = '{month}'"
        ));
        let figures: Value = serde_json::from_str(&figures).expect("json");
        assert_eq!(figures["qr_requires_passkey"], required);
        figures["qr_tracked"].as_u64().expect("qr_tracked")
    };
    assert_eq!(qr_tracked(false), 2);
    assert_eq!(qr_tracked(true), 1);
    // The agent learns the policy with its next pull.
    assert!(setup
        .sync()
        .contains("only check-ins verified by the student's passkey"));
}

#[test]
fn forged_replayed_unverified_and_revoked_assertions_never_count_as_verified() {
    let setup = Passkeys::start();
    let college = &setup.named.college;
    let browser = setup.browser();
    let authenticator = browser.add_virtual_authenticator();
    let (student, classmate) = (college.group_a[0].clone(), college.group_a[2].clone());
    setup.enrol(&browser, &student);
    setup.enrol(&browser, &classmate);
    assert!(setup.sync().contains("passkeys: 2 student(s)"));
    setup.bind(&browser, &student);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let origin = setup.origin();

    // User verification not performed: the phone makes no assertion, the check-in is
    // recorded unverified.
    browser.set_user_verified(&authenticator, false);
    let url = college.shown_url(&teacher, college.lesson_a);
    assert_eq!(check_in(&browser, &url), Ok("no".to_owned()));
    browser.set_user_verified(&authenticator, true);

    let own_id = credential_of(&setup, &student);
    let own = URL_SAFE_NO_PAD.decode(&own_id).expect("id");
    let own_key = private_key(&browser, &authenticator, &own_id);
    let classmate_id = credential_of(&setup, &classmate);
    let classmate_key = private_key(&browser, &authenticator, &classmate_id);
    let refusals_before = college.security_events("passkey_invalid");
    // Each refused with `passkey_invalid`, its reason in the security log's detail.
    let refused = |parts: [Vec<u8>; 4], why: &str| {
        let url = college.shown_url(&teacher, college.lesson_a);
        let injected = inject(&browser, &parts);
        let answer = check_in(&browser, &url);
        remove_injection(&browser, &injected);
        assert_eq!(answer, Err("passkey_invalid".to_owned()), "{why}");
        let logged: String = college
            .db()
            .query_row(
                "SELECT detail FROM security_events WHERE kind = 'passkey_invalid'
                 ORDER BY last_at DESC, id DESC LIMIT 1",
                [],
                |row| row.get(0),
            )
            .expect("a security event");
        assert_eq!(logged, why);
    };
    let url = college.shown_url(&teacher, college.lesson_a);
    let challenge = setup.challenge(&url, &student);

    // The control: the same software signer with the real key and UV passes, so each
    // refusal below is for its one difference.
    let injected = inject(
        &browser,
        &assertion(&own_key, &own, &challenge, &origin, UP_UV, 1_000),
    );
    assert_eq!(check_in(&browser, &url), Ok("yes".to_owned()));
    remove_injection(&browser, &injected);

    refused(
        assertion(&own_key, &own, &challenge, &origin, UP, 1_001),
        "not_user_verified",
    );
    // An assertion for the step before (what a replay of an earlier scan carries).
    let token =
        kasip_core::ClassroomToken::parse(url.rsplit('/').next().expect("token")).expect("token");
    let date: String = college
        .db()
        .query_row(
            "SELECT date FROM lessons WHERE id = ?1",
            [college.lesson_a],
            |row| row.get(0),
        )
        .expect("date");
    let earlier = kasip_core::passkey::check_in_challenge(
        DEMO_BIN,
        college.lesson_a as u64,
        &date,
        token.step - 1,
        &student,
    );
    refused(
        assertion(&own_key, &own, &earlier, &origin, UP_UV, 1_002),
        "wrong_challenge",
    );
    let other_lesson = kasip_core::passkey::check_in_challenge(
        DEMO_BIN,
        college.lesson_b as u64,
        &date,
        token.step,
        &student,
    );
    refused(
        assertion(&own_key, &own, &other_lesson, &origin, UP_UV, 1_003),
        "wrong_challenge",
    );
    let classmate_raw = URL_SAFE_NO_PAD.decode(&classmate_id).expect("id");
    refused(
        assertion(
            &classmate_key,
            &classmate_raw,
            &challenge,
            &origin,
            UP_UV,
            1_004,
        ),
        "unknown_credential",
    );
    let college_key = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .expect("key");
    refused(
        assertion(
            college_key.as_ref(),
            &own,
            &challenge,
            &origin,
            UP_UV,
            1_005,
        ),
        "bad_signature",
    );
    let mut tampered = assertion(&own_key, &own, &challenge, &origin, UP_UV, 1_006);
    tampered[2] = String::from_utf8(tampered[2].clone())
        .expect("utf8")
        .replace("\"crossOrigin\":false", "\"crossOrigin\":false,\"x\":1")
        .into_bytes();
    refused(tampered, "bad_signature");

    // A new passkey revokes the old one; the agent's next pull drops it.
    setup.enrol(&browser, &student);
    assert_ne!(credential_of(&setup, &student), own_id);
    setup.sync();
    refused(
        assertion(&own_key, &own, &challenge, &origin, UP_UV, 1_007),
        "unknown_credential",
    );
    assert_eq!(
        college.security_events("passkey_invalid") - refusals_before,
        7,
        "each refusal is a security event"
    );

    // What reached the registry: the unverified check-in and the verified control,
    // nothing from the refusals.
    setup.sync();
    assert_eq!(
        setup.verdicts(),
        vec![(false, "no passkey".to_owned())],
        "the control was a repeat of the first mark, so only one mark exists"
    );
}
