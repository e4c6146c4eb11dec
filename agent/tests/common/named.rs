//! A college whose agent has a name in the registry's zone and a certificate for it from
//! Pebble (Let's Encrypt's ACME test server): what phones' browsers need for a trusted
//! page, a domain name and a secure context (certificates, passkeys).
#![allow(dead_code)] // each test file uses a different part

use std::time::{Duration, Instant};

use kasip_tests::acme::Pebble;
use serde_json::Value;

use super::registry::{agent_json, agent_run, Registry};
use super::College;
use kasip_tests::text;

pub const ZONE: &str = "agents.kasip.test";
const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
const METRICS: &str = "127.0.0.1:9464";

pub struct Named {
    // Dropped last: the agent and the registry stop before the CA.
    pub college: College,
    pub registry: Registry,
    pub pebble: Pebble,
    pub dns: String,
    pub hostname: String,
    pub metrics_url: String,
}

impl Named {
    /// A college enrolled with a registry serving the zone, its certificate obtained.
    pub fn start() -> Named {
        Self::start_with(&[], None)
    }

    /// `start` with more arguments for the registry (e.g. `--tls-cert`) and, for a
    /// registry on HTTPS, the CA file the agent verifies it with.
    pub fn start_with(registry_args: &[&str], registry_ca_file: Option<&std::path::Path>) -> Named {
        let registry_ca = registry_ca_file.map(|path| path.display().to_string());
        let dns = format!("127.0.0.1:{}", kasip_tests::free_port());
        let pebble = Pebble::start(&dns);
        let (directory, ca) = (pebble.directory.clone(), pebble.https_ca());
        let metrics = format!("127.0.0.1:{}", kasip_tests::free_port());
        let metrics_url = format!("http://{metrics}/metrics");
        let college = College::with_config(3, move |config| {
            for key in [
                format!("acme_directory = \"{LETS_ENCRYPT}\""),
                "acme_ca_file = \"\"".to_owned(),
                "check_secs = 3600".to_owned(),
            ] {
                assert!(config.contains(&key), "config.toml has no {key}");
            }
            config
                .replace(
                    &format!("acme_directory = \"{LETS_ENCRYPT}\""),
                    &format!("acme_directory = \"{directory}\""),
                )
                .replace(
                    "acme_ca_file = \"\"",
                    &format!("acme_ca_file = \"{}\"", ca.display()),
                )
                .replace("check_secs = 3600", "check_secs = 1")
                .replace(
                    &format!("listen = \"{METRICS}\""),
                    &format!("listen = \"{metrics}\""),
                )
                .replace(
                    "registry_ca_file = \"\"",
                    &format!(
                        "registry_ca_file = \"{}\"",
                        registry_ca.clone().unwrap_or_default()
                    ),
                )
        });
        let mut args = vec!["--agents-zone", ZONE, "--dns-listen", &dns];
        args.extend_from_slice(registry_args);
        let registry = Registry::new(&college, &args);
        let code = registry.enrolment_code();
        let output = agent_run(
            &college,
            &["enroll", "--registry", &registry.url(), "--code", &code],
        );
        assert!(output.status.success(), "{:?}", text(&output));
        let said = text(&output).0;
        let hostname = said
            .split("the agent's name is ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("enroll names no hostname: {said}"))
            .to_owned();
        assert!(hostname.ends_with(&format!(".{ZONE}")), "{hostname}");
        let named = Named {
            college,
            registry,
            pebble,
            dns,
            hostname,
            metrics_url,
        };
        named.wait_for("the first certificate", |status| {
            status["fingerprint"].is_string()
        });
        named
    }

    pub fn status(&self) -> Value {
        agent_json(&self.college, &["cert", "status", "--json"])
    }

    pub fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status:#}\npebble:\n{}",
                self.pebble.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// One sample of the agent's Prometheus text.
    pub fn metric(&self, name: &str) -> f64 {
        let text = kasip_tests::http_client()
            .get(&self.metrics_url)
            .send()
            .and_then(|response| response.text())
            .expect("metrics");
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the metrics"))
    }

    pub fn port(&self) -> u16 {
        self.college
            .server
            .address()
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("port")
    }

    pub fn named_url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.hostname, self.port())
    }
}
