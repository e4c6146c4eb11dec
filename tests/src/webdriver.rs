//! A minimal W3C WebDriver client for headless Chromium (Debian's `chromium` and
//! `chromium-driver`): enough to sign in, open a page, read text and take screenshots.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver with one headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

/// How a browser trusts certificates.
pub enum Trust<'a> {
    /// Any certificate (the agent's self-signed one in most tests): WebDriver's
    /// `acceptInsecureCerts`.
    Anything,
    /// Only what Chromium itself trusts, with `home` as its `$HOME` (its NSS database,
    /// `home/.pki/nssdb`, holds the test CA) and `resolver_rules` for its DNS lookups
    /// (e.g. `MAP name.agents.kasip.test 127.0.0.1`). Certificate errors fail the load.
    Verified {
        home: &'a Path,
        resolver_rules: &'a str,
    },
}

impl Browser {
    /// Starts chromedriver and a headless Chromium that trusts no network but loopback.
    pub fn start() -> Browser {
        Self::start_with(Trust::Anything)
    }

    /// Starts chromedriver and a headless Chromium that trusts certificates as `trust`
    /// says.
    pub fn start_with(trust: Trust<'_>) -> Browser {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = crate::free_port();
        let mut driver = Command::new("chromedriver");
        let mut extra_args = Vec::new();
        let accept_insecure = match trust {
            Trust::Anything => true,
            Trust::Verified {
                home,
                resolver_rules,
            } => {
                driver.env("HOME", home);
                extra_args.push(format!("--host-resolver-rules={resolver_rules}"));
                false
            }
        };
        let driver = driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start chromedriver ({error}); install Debian's chromium and chromium-driver"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--hide-scrollbars",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra_args);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": accept_insecure,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
            }
        }}});
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .and_then(|response| response.json())
            .expect("new session");
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {response}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method, url);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response: Value = request
            .send()
            .and_then(|response| response.json())
            .expect("WebDriver command");
        if response["value"].get("error").is_some() {
            panic!("WebDriver {path} failed: {response}");
        }
        response["value"].clone()
    }

    /// One DevTools protocol command (`Page.addScriptToEvaluateOnNewDocument`, …).
    pub fn cdp(&self, command: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": command, "params": params})),
        )
    }

    /// Opens `url` through the DevTools protocol (`Page.navigate`) and returns the
    /// network error Chromium met, e.g. `net::ERR_CERT_AUTHORITY_INVALID`; None when
    /// the page loaded. Certificate errors are never ignored here.
    pub fn navigate_reporting_errors(&self, url: &str) -> Option<String> {
        let answer = self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": "Page.navigate", "params": {"url": url}})),
        );
        answer["errorText"]
            .as_str()
            .filter(|error| !error.is_empty())
            .map(str::to_owned)
    }

    /// Adds a WebDriver virtual authenticator (W3C WebAuthn §11): CTAP2 on an internal
    /// transport, resident keys, user verification available and performed, the user
    /// consenting. Returns its id.
    pub fn add_virtual_authenticator(&self) -> String {
        let answer = self.command(
            reqwest::Method::POST,
            "/webauthn/authenticator",
            Some(json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": true,
            })),
        );
        answer.as_str().expect("authenticator id").to_owned()
    }

    /// Whether the authenticator's user verification (fingerprint, face, PIN) succeeds.
    pub fn set_user_verified(&self, authenticator: &str, verified: bool) {
        self.command(
            reqwest::Method::POST,
            &format!("/webauthn/authenticator/{authenticator}/uv"),
            Some(json!({ "isUserVerified": verified })),
        );
    }

    /// The authenticator's credentials as WebDriver lists them (credentialId, rpId,
    /// privateKey as base64url PKCS#8, signCount, …).
    pub fn virtual_credentials(&self, authenticator: &str) -> Vec<Value> {
        self.command(
            reqwest::Method::GET,
            &format!("/webauthn/authenticator/{authenticator}/credentials"),
            None,
        )
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    pub fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(&self, css: &str) -> String {
        let value = self.command(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let element = self.element(css);
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    pub fn text_of(&self, css: &str) -> String {
        let element = self.element(css);
        self.command(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// An attribute of the first element matching `css` (e.g. `data-per-mille`).
    pub fn attribute_of(&self, css: &str, name: &str) -> String {
        let element = self.element(css);
        self.command(
            reqwest::Method::GET,
            &format!("/element/{element}/attribute/{name}"),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Runs `script` (a function body returning a boolean) until it returns true, for up
    /// to 20 s; on timeout, panics naming `what` with the page's text.
    pub fn wait_for(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.execute(script) != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page says: {}",
                self.execute("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub fn execute(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Runs axe-core (vendored, `tests/vendor/axe-core`) over the page as it is now, with
    /// the WCAG 2.0, 2.1 and 2.2 A and AA rules and axe's best practices, and returns what
    /// it found.
    pub fn axe(&self) -> Vec<AxeViolation> {
        let loaded = self.execute(&format!("{}\nreturn typeof axe;", axe_source()));
        assert_eq!(loaded, "object", "axe-core did not load");
        let found = self.command(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": AXE_RUN, "args": [] })),
        );
        let found = found.as_str().unwrap_or_default();
        let found: Vec<AxeViolation> = serde_json::from_str(found)
            .unwrap_or_else(|error| panic!("axe-core answered {found:?}: {error}"));
        found
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("base64 screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }
}

/// What axe-core found wrong on a page: a rule, how bad, and where.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AxeViolation {
    pub id: String,
    /// minor, moderate, serious or critical.
    pub impact: Option<String>,
    pub help: String,
    /// CSS selectors of the elements, each with axe's summary of what to fix.
    pub nodes: Vec<(String, String)>,
}

impl AxeViolation {
    /// Critical or serious: what a user of assistive technology cannot get past.
    pub fn blocks(&self) -> bool {
        matches!(self.impact.as_deref(), Some("critical" | "serious"))
    }
}

impl std::fmt::Display for AxeViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let impact = self.impact.as_deref().unwrap_or("?");
        write!(f, "{} ({impact}): {}", self.id, self.help)?;
        for (target, summary) in &self.nodes {
            write!(f, "\n    {target}: {}", summary.replace('\n', " "))?;
        }
        Ok(())
    }
}

/// The vendored axe-core's SHA-256, as its README records it: a changed file is noticed.
const AXE_SHA256: &str = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c";

fn axe_source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let digest = ring::digest::digest(&ring::digest::SHA256, source.as_bytes());
        let hex: String = digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(
            hex,
            AXE_SHA256,
            "{} is not the vendored axe-core",
            path.display()
        );
        source
    })
}

const AXE_RUN: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, {
  runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
  resultTypes: ['violations'],
}).then(result => done(JSON.stringify(result.violations.map(v => ({
  id: v.id, impact: v.impact, help: v.help,
  nodes: v.nodes.map(n => [n.target.join(' '), n.failureSummary || '']),
}))))).catch(error => done('axe failed: ' + error));
"#;

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Decodes every QR code in an image with zbar (`zbarimg`, Debian's zbar-tools): a
/// decoder nobody on this project wrote.
pub fn zbar_decode(image: &Path) -> Vec<String> {
    let output = Command::new("zbarimg")
        .args(["--raw", "--quiet", "-Sdisable", "-Sqrcode.enable"])
        .arg(image)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run zbarimg ({error}); install Debian's zbar-tools")
        });
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|line| !line.is_empty())
        .collect()
}
