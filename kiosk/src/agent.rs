//! The kiosk's calls to its college agent over HTTPS. An agent reached by its name in
//! the registry's zone has a publicly trusted certificate, verified as any client
//! verifies a web site; an agent reached by address has a self-signed one, pinned by
//! SHA-256 fingerprint (the admin compares the one `kasip-agent kiosk add` printed).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::KioskError;
use crate::store::QueuedScan;

/// Why a call failed: the forwarder retries `Unreachable` and waits out `Refused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No answer (network, TLS, timeout) or a 5xx/429: try again later.
    Unreachable(String),
    /// The agent answered no (4xx): the sentence is the agent's.
    Refused { status: u16, message: String },
}

impl From<CallError> for KioskError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Unreachable(reason) => KioskError::Agent(reason),
            CallError::Refused { status, message } => {
                KioskError::Agent(format!("the agent refused (HTTP {status}): {message}"))
            }
        }
    }
}

pub use kasip_core::wire::{
    KioskEnrolAnswer as EnrolAnswer, KioskPlace as PlaceAnswer, PassKeyList as KeyList, ScanAnswer,
};
use kasip_core::wire::{KioskEnrolRequest, ScanAnswers, ScanUpload, UploadedScan};

/// How the agent's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTrust {
    /// Exactly this certificate (lower-case hex SHA-256 of its DER).
    Pinned(String),
    /// Any certificate, remembered (`seen_fingerprint`): the first enrolment by address.
    FirstSeen,
    /// A certificate valid for the URL's name, from the system's roots or `ca_file`;
    /// the name is reached at `address` when given (a LAN whose DNS does not resolve it).
    Verified {
        ca_file: Option<std::path::PathBuf>,
        address: Option<std::net::IpAddr>,
    },
}

/// The host of an `https://host[:port]/…` URL: a DNS name, or None for an address.
pub fn host_of(url: &str) -> Option<String> {
    let host = reqwest::Url::parse(url)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    let address = host.trim_start_matches('[').trim_end_matches(']');
    (address.parse::<std::net::IpAddr>().is_err() && host != "localhost").then_some(host)
}

pub struct AgentClient {
    base: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Option<String>>>,
}

impl AgentClient {
    /// A client for `agent_url` (https://, or http:// to loopback only) that checks the
    /// agent's certificate as `trust` says.
    pub fn new(agent_url: &str, trust: &AgentTrust) -> Result<Self, KioskError> {
        let base = agent_url.trim().trim_end_matches('/').to_owned();
        let plain = base.strip_prefix("http://");
        if let Some(rest) = plain {
            let host = rest.split(['/', ':']).next().unwrap_or("");
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                return Err(KioskError::Usage(format!(
                    "{base}: plain http:// is allowed only to this machine; use the agent's https:// address"
                )));
            }
        } else if !base.starts_with("https://") {
            return Err(KioskError::Usage(format!(
                "{base}: the agent's address must start with https://"
            )));
        }
        let builder = reqwest::Client::builder();
        let (builder, seen) = match trust {
            AgentTrust::Verified { ca_file, address } => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut builder = builder;
                if let Some(path) = ca_file {
                    let pem = std::fs::read(path).map_err(|error| {
                        KioskError::Usage(format!(
                            "cannot read the CA file {}: {error}",
                            path.display()
                        ))
                    })?;
                    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                        .ok()
                        .filter(|certificates| !certificates.is_empty())
                        .ok_or_else(|| {
                            KioskError::Usage(format!(
                                "{} holds no PEM certificate",
                                path.display()
                            ))
                        })?;
                    builder = builder.tls_certs_merge(certificates);
                }
                if let (Some(address), Some(host)) = (address, host_of(&base)) {
                    builder = builder.resolve(&host, std::net::SocketAddr::new(*address, 0));
                }
                (builder, Arc::new(Mutex::new(None)))
            }
            AgentTrust::Pinned(_) | AgentTrust::FirstSeen => {
                let expected = match trust {
                    AgentTrust::Pinned(fingerprint) => {
                        Some(fingerprint.trim().to_ascii_lowercase().replace(':', ""))
                    }
                    _ => None,
                };
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let verifier =
                    kasip_certs::tls::PinnedCertificate::new(expected, Arc::clone(&provider));
                let seen = verifier.seen();
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(KioskError::Tls)?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth();
                (builder.tls_backend_preconfigured(tls), seen)
            }
        };
        let http = builder
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kasip-kiosk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(KioskError::Http)?;
        Ok(Self { base, http, seen })
    }

    /// The fingerprint of the certificate the agent presented last (when pinned or seen
    /// first; a verified certificate is not remembered: a renewal changes it).
    pub fn seen_fingerprint(&self) -> Option<String> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, CallError> {
        let response = request.send().await.map_err(|error| {
            CallError::Unreachable(format!(
                "cannot reach the agent at {} for {what}: {}",
                self.base,
                error_chain(&error)
            ))
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| {
            CallError::Unreachable(format!("the agent's answer to {what} broke off: {error}"))
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|error| CallError::Refused {
                status: status.as_u16(),
                message: format!(
                    "the agent's answer to {what} is not what a kiosk expects: {error}"
                ),
            });
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| value["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(CallError::Unreachable(format!(
                "the agent could not take {what} (HTTP {}): {message}",
                status.as_u16()
            )))
        } else {
            Err(CallError::Refused {
                status: status.as_u16(),
                message,
            })
        }
    }

    pub async fn enrol(&self, code: &str) -> Result<EnrolAnswer, CallError> {
        let request =
            self.http
                .post(format!("{}/kiosk/enroll", self.base))
                .json(&KioskEnrolRequest {
                    code: code.trim().to_owned(),
                });
        self.call(request, "enrolment").await
    }

    pub async fn keys(&self, credential: &str) -> Result<KeyList, CallError> {
        let request = self
            .http
            .get(format!("{}/kiosk/keys", self.base))
            .bearer_auth(credential);
        self.call(request, "the pass key list").await
    }

    pub async fn upload(
        &self,
        credential: &str,
        scans: &[QueuedScan],
    ) -> Result<Vec<ScanAnswer>, CallError> {
        let body = ScanUpload {
            scans: scans
                .iter()
                .map(|scan| UploadedScan {
                    id: scan.scan_id.clone(),
                    pass: scan.pass.clone(),
                    scanned_at: scan.scanned_at,
                })
                .collect(),
        };
        let request = self
            .http
            .post(format!("{}/kiosk/scans", self.base))
            .bearer_auth(credential)
            .json(&body);
        let answers: ScanAnswers = self.call(request, "scans").await?;
        Ok(answers.results)
    }
}

/// An error with its causes, which is where reqwest puts "connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn only_a_dns_name_is_verified_by_name() {
        assert_eq!(
            host_of("https://C7K2.agents.kasip.kz:8443/x").as_deref(),
            Some("c7k2.agents.kasip.kz")
        );
        for by_address in [
            "https://192.168.1.10:8443",
            "https://[fd00::5]:8443",
            "https://localhost:8443",
            "http://127.0.0.1:8443",
            "not a url",
        ] {
            assert_eq!(host_of(by_address), None, "{by_address}");
        }
    }
}
