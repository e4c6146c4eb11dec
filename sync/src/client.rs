//! The agent's HTTP client for the registry: enrolment, batch upload, checkpoint and the
//! beneficiary list. Every answer is classified here, once, into what the uploader must
//! do next (design §5.4).

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kasip_certs::jws::verify_compact;
use kasip_certs::DeviceKey;
use kasip_core::batch::{is_sha256_hex, Receipt};
use kasip_core::wire::{EnrolmentAnswer, EnrolmentRequest, ErrorAnswer, ReceiptAnswer};
use reqwest::StatusCode;

/// Answers larger than this are refused (a receipt for 20,000 records is ~1 MB).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "registry URL '{0}' must start with https:// (http:// only for a registry on this machine)"
    )]
    InsecureUrl(String),
    #[error("registry URL '{0}' is not a URL")]
    BadUrl(String),
    #[error("cannot read the registry CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot reach the registry: {}", describe(.0))]
    Network(#[source] reqwest::Error),
    #[error("the registry answered {status}: {message}")]
    Refused { status: u16, message: String },
    /// The answer broke the protocol in the way the sentence describes.
    #[error("the registry's answer is not what the protocol says: {0}")]
    Protocol(String),
    #[error("the registry's answer is not the JSON the protocol says")]
    Answer(#[source] serde_json::Error),
}

/// What one upload attempt came to.
#[derive(Debug)]
pub enum Upload {
    /// 201: stored now; the registry's receipt verified.
    Stored {
        receipt_jws: String,
        receipt: Receipt,
    },
    /// 200: stored before (same seq, same hash); its receipt verified.
    AlreadyStored {
        receipt_jws: String,
        receipt: Receipt,
    },
    /// 409: the registry expects another seq, or holds this seq with another hash.
    Conflict { expected_seq: u64, message: String },
    /// 400: bad signature or format. Never retried: the queue stops and the admin is told.
    BadBatch { message: String },
    /// 409 without an expected seq: refused for good (a key rotation announcing a key the
    /// registry holds for another agent). Never retried, like `BadBatch`.
    Refused { message: String },
    /// 401: the registry does not know this agent's key.
    UnknownAgent { message: String },
    /// Network error, 408, 429, 5xx: try again later (no earlier than `retry_after`).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
}

pub use kasip_core::wire::{BeneficiaryList, Checkpoint, ListedStudent};

/// What enrolment returns: the registry's key, which signs its receipts.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub registry_key: Vec<u8>,
    /// The agent's name in the registry's agents zone, when it runs one.
    pub hostname: Option<String>,
}

/// What a `NameUpdate` asks the registry to publish (`None`: leave as is).
#[derive(Debug, Clone, Default)]
pub struct NameChange {
    pub hostname: Option<String>,
    pub addresses: Option<Vec<String>>,
    pub acme_challenge: Option<Vec<String>>,
}

pub use kasip_core::wire::NameRecords;

#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
}

/// Timeouts of one client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole request, answer included: a registry trickling its answer is cut off.
    pub request: Duration,
}

fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(host, _)| host),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

impl RegistryClient {
    /// A client for `base_url` (`https://…`; `http://` only on loopback), trusting the
    /// system's roots plus `ca_file` when given (pilots run their own CA).
    pub fn new(
        base_url: &str,
        ca_file: Option<&Path>,
        timeouts: Timeouts,
    ) -> Result<Self, SyncError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !base.starts_with("https://") && !is_loopback_http(&base) {
            return Err(if base.starts_with("http://") {
                SyncError::InsecureUrl(base)
            } else {
                SyncError::BadUrl(base)
            });
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kasip-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let ca_error = |reason: String| SyncError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| ca_error(error.to_string()))?;
            if certificates.is_empty() {
                return Err(ca_error("no PEM certificate in it".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(SyncError::Network)?;
        Ok(Self { http, base })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends this agent's public key with a one-time code; the registry binds the key to
    /// the college and answers with its own key.
    pub async fn enrol(
        &self,
        code: &str,
        college_bin: &str,
        key: &DeviceKey,
    ) -> Result<Enrolment, SyncError> {
        let body = EnrolmentRequest {
            code: code.to_owned(),
            college_bin: college_bin.to_owned(),
            public_key: key.public_key_base64url(),
        };
        let response = self
            .http
            .post(format!("{}/v1/enrolments", self.base))
            .json(&body)
            .send()
            .await
            .map_err(SyncError::Network)?;
        let (status, text) = read(response).await?;
        // 200: this key was already this college's agent (an earlier answer was lost).
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(SyncError::Refused {
                status: status.as_u16(),
                message: error_message(&text),
            });
        }
        let answer: EnrolmentAnswer = serde_json::from_str(&text).map_err(SyncError::Answer)?;
        let registry_key = URL_SAFE_NO_PAD
            .decode(&answer.registry_key)
            .ok()
            .filter(|bytes| bytes.len() == 32)
            .ok_or_else(|| SyncError::Protocol("no 32-byte registry_key in the answer".into()))?;
        let hostname = match answer.hostname {
            Some(name) if is_hostname(&name) => Some(name.to_ascii_lowercase()),
            Some(name) => {
                return Err(SyncError::Protocol(format!(
                    "the hostname '{name}' in the answer is not a DNS name"
                )))
            }
            None => None,
        };
        Ok(Enrolment {
            registry_key,
            hostname,
        })
    }

    /// Asks the registry to publish `change` under this agent's name (`POST /v1/names`,
    /// signed, single-use) and returns what the zone now holds for it.
    pub async fn update_name(
        &self,
        key: &DeviceKey,
        change: &NameChange,
        now: i64,
    ) -> Result<NameRecords, SyncError> {
        let jti = kasip_certs::agent_auth::fresh_jti()
            .map_err(|error| SyncError::Protocol(error.to_string()))?;
        let update = kasip_core::wire::NameUpdate {
            agent: key.thumbprint(),
            hostname: change.hostname.clone(),
            addresses: change.addresses.clone(),
            acme_challenge: change.acme_challenge.clone(),
            iat: now,
            jti,
        };
        let payload = serde_json::to_value(&update)
            .ok()
            .and_then(|value| kasip_core::to_canonical_json(&value).ok())
            .ok_or_else(|| SyncError::Protocol("cannot write the name update".into()))?;
        let jws = kasip_certs::jws::sign_compact(
            key,
            &kasip_certs::jws::protected_header(key),
            payload.as_bytes(),
        );
        let response = self
            .http
            .post(format!("{}/v1/names", self.base))
            .header("content-type", "application/jose")
            .body(jws)
            .send()
            .await
            .map_err(SyncError::Network)?;
        let text = ok_text(response).await?;
        let records: NameRecords = serde_json::from_str(&text).map_err(SyncError::Answer)?;
        if !is_hostname(&records.hostname) {
            return Err(SyncError::Protocol(format!(
                "the hostname '{}' in the answer is not a DNS name",
                records.hostname
            )));
        }
        Ok(records)
    }

    /// Uploads one sealed batch and classifies the answer. `hash` is the batch's
    /// `sha256_hex`; a receipt for anything else is a protocol error (retried).
    pub async fn upload(&self, jws: &str, seq: u64, hash: &str, registry_key: &[u8]) -> Upload {
        let response = self
            .http
            .post(format!("{}/v1/batches", self.base))
            .header("content-type", "application/jose")
            .body(jws.to_owned())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                return Upload::Retry {
                    reason: describe(&error),
                    retry_after: None,
                }
            }
        };
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let (status, text) = match read(response).await {
            Ok(answer) => answer,
            Err(error) => {
                return Upload::Retry {
                    reason: error.to_string(),
                    retry_after: None,
                }
            }
        };
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                match verified_receipt(&text, seq, hash, registry_key) {
                    Ok((receipt_jws, receipt)) if status == StatusCode::CREATED => Upload::Stored {
                        receipt_jws,
                        receipt,
                    },
                    Ok((receipt_jws, receipt)) => Upload::AlreadyStored {
                        receipt_jws,
                        receipt,
                    },
                    Err(reason) => Upload::Retry {
                        reason: format!("receipt refused: {reason}"),
                        retry_after: None,
                    },
                }
            }
            StatusCode::CONFLICT => {
                let answer = serde_json::from_str::<ErrorAnswer>(&text).ok();
                match answer.and_then(|answer| answer.expected_seq) {
                    Some(expected_seq) => Upload::Conflict {
                        expected_seq,
                        message: error_message(&text),
                    },
                    None => Upload::Refused {
                        message: error_message(&text),
                    },
                }
            }
            StatusCode::BAD_REQUEST => Upload::BadBatch {
                message: error_message(&text),
            },
            StatusCode::UNAUTHORIZED => Upload::UnknownAgent {
                message: error_message(&text),
            },
            status => Upload::Retry {
                reason: format!("the registry answered {status}: {}", error_message(&text)),
                retry_after,
            },
        }
    }

    /// The last batch the registry holds from this agent.
    /// The registry's last seq and hash for `agent_id` (the thumbprint the agent enrolled
    /// with; it stays when the signing key `key` rotates).
    pub async fn checkpoint(
        &self,
        key: &DeviceKey,
        agent_id: &str,
        now: i64,
    ) -> Result<Checkpoint, SyncError> {
        let path = format!("/v1/agents/{agent_id}/checkpoint");
        let text = self.get_signed(key, &path, now).await?;
        let checkpoint: Checkpoint = serde_json::from_str(&text).map_err(SyncError::Answer)?;
        if checkpoint.last_seq > 0 && !is_sha256_hex(&checkpoint.last_hash) {
            return Err(SyncError::Protocol(
                "checkpoint hash is not a SHA-256".into(),
            ));
        }
        Ok(checkpoint)
    }

    /// The registry's list of the college's beneficiaries.
    pub async fn beneficiaries(
        &self,
        key: &DeviceKey,
        college_bin: &str,
        now: i64,
    ) -> Result<BeneficiaryList, SyncError> {
        let path = format!("/v1/colleges/{college_bin}/beneficiaries");
        let text = self.get_signed(key, &path, now).await?;
        let list: BeneficiaryList = serde_json::from_str(&text).map_err(SyncError::Answer)?;
        if list.college_bin != college_bin {
            return Err(SyncError::Protocol(format!(
                "asked for college {college_bin}, got the list of {}",
                list.college_bin
            )));
        }
        Ok(list)
    }

    /// The national policy for the college: a JWS by the registry's key, verified here
    /// under `registry_key` and checked to be this college's. Returns the JWS (cached as
    /// received) and its policy.
    pub async fn policy(
        &self,
        key: &DeviceKey,
        college_bin: &str,
        registry_key: &[u8],
        now: i64,
    ) -> Result<(String, kasip_core::wire::Policy), SyncError> {
        let path = format!("/v1/colleges/{college_bin}/policy");
        let text = self.get_signed(key, &path, now).await?;
        let answer: kasip_core::wire::SignedPolicy =
            serde_json::from_str(&text).map_err(SyncError::Answer)?;
        let verified = kasip_certs::jws::verify_compact(&answer.policy, registry_key)
            .map_err(|error| SyncError::Protocol(format!("the policy's signature: {error}")))?;
        let policy: kasip_core::wire::Policy =
            serde_json::from_slice(&verified.payload).map_err(SyncError::Answer)?;
        if policy.college_bin != college_bin {
            return Err(SyncError::Protocol(format!(
                "asked for college {college_bin}'s policy, got {}'s",
                policy.college_bin
            )));
        }
        if policy.min_coverage > 1000 || policy.student_qr_share > 1000 {
            return Err(SyncError::Protocol(
                "the policy's thresholds are not thousandths".into(),
            ));
        }
        Ok((answer.policy, policy))
    }

    /// The college's students' passkeys: a JWS by the registry's key, verified here under
    /// `registry_key` and checked to be this college's, every entry parsed. None from a
    /// registry that enrols no passkeys (404).
    pub async fn passkeys(
        &self,
        key: &DeviceKey,
        college_bin: &str,
        registry_key: &[u8],
        now: i64,
    ) -> Result<Option<kasip_core::wire::PasskeyDirectory>, SyncError> {
        let path = format!("/v1/colleges/{college_bin}/passkeys");
        let text = match self.get_signed(key, &path, now).await {
            Err(SyncError::Refused { status: 404, .. }) => return Ok(None),
            answer => answer?,
        };
        let answer: kasip_core::wire::SignedPasskeyDirectory =
            serde_json::from_str(&text).map_err(SyncError::Answer)?;
        let verified =
            kasip_certs::jws::verify_compact(&answer.directory, registry_key).map_err(|error| {
                SyncError::Protocol(format!("the passkey directory's signature: {error}"))
            })?;
        let directory: kasip_core::wire::PasskeyDirectory =
            serde_json::from_slice(&verified.payload).map_err(SyncError::Answer)?;
        if directory.college_bin != college_bin {
            return Err(SyncError::Protocol(format!(
                "asked for college {college_bin}'s passkeys, got {}'s",
                directory.college_bin
            )));
        }
        for entry in &directory.keys {
            kasip_core::Iin::parse(&entry.iin).map_err(|error| {
                SyncError::Protocol(format!(
                    "the passkey directory lists IIN {}: {error}",
                    entry.iin
                ))
            })?;
            let key = URL_SAFE_NO_PAD
                .decode(&entry.public_key)
                .ok()
                .and_then(|key| kasip_core::passkey::CoseKey::parse(&key).ok());
            if key.is_none() || entry.credential_id.is_empty() {
                return Err(SyncError::Protocol(format!(
                    "the passkey directory's entry for {} holds no usable key",
                    entry.iin
                )));
            }
        }
        Ok(Some(directory))
    }

    /// Sends a heartbeat (a JWS signed by the agent's key over `kasip_core::wire::
    /// Heartbeat`) and returns the registry's clock from its answer.
    pub async fn heartbeat(&self, jws: &str) -> Result<i64, SyncError> {
        let response = self
            .http
            .post(format!("{}/v1/heartbeats", self.base))
            .header("content-type", "application/jose")
            .body(jws.to_owned())
            .send()
            .await
            .map_err(SyncError::Network)?;
        let text = ok_text(response).await?;
        let answer: kasip_core::wire::HeartbeatAnswer =
            serde_json::from_str(&text).map_err(SyncError::Answer)?;
        Ok(answer.registry_time)
    }

    async fn get_signed(&self, key: &DeviceKey, path: &str, now: i64) -> Result<String, SyncError> {
        let authorization = kasip_certs::agent_auth::authorization(key, "GET", path, now)
            .map_err(|error| SyncError::Protocol(error.to_string()))?;
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("authorization", authorization)
            .send()
            .await
            .map_err(SyncError::Network)?;
        ok_text(response).await
    }
}

/// A DNS name of letters, digits and hyphens, at least two labels: what a certificate
/// and a URL may carry.
pub fn is_hostname(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

/// The body of a 200 answer; any other status is the registry's refusal.
async fn ok_text(response: reqwest::Response) -> Result<String, SyncError> {
    let (status, text) = read(response).await?;
    if status != StatusCode::OK {
        return Err(SyncError::Refused {
            status: status.as_u16(),
            message: error_message(&text),
        });
    }
    Ok(text)
}

/// Reads an answer of bounded size.
async fn read(mut response: reqwest::Response) -> Result<(StatusCode, String), SyncError> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(SyncError::Network)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(SyncError::Protocol(format!(
                "answer larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// reqwest's error with its causes: "error sending request" alone helps nobody.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() {
        text.push_str(" (timed out)");
    }
    text
}

/// The registry's `{"error": …}` text, or the start of the body.
fn error_message(text: &str) -> String {
    serde_json::from_str::<ErrorAnswer>(text)
        .map(|answer| answer.error)
        .unwrap_or_else(|_| text.chars().take(300).collect())
}

/// Checks the receipt's signature under the registry's key and that it is for this
/// batch.
pub fn verified_receipt(
    text: &str,
    seq: u64,
    hash: &str,
    registry_key: &[u8],
) -> Result<(String, Receipt), String> {
    let answer: ReceiptAnswer = serde_json::from_str(text)
        .map_err(|_| "the answer is not {\"receipt\": JWS}".to_owned())?;
    let receipt_jws = answer.receipt;
    let verified = verify_compact(&receipt_jws, registry_key).map_err(|error| error.to_string())?;
    let receipt = Receipt::parse(&verified.payload).map_err(|error| error.to_string())?;
    if receipt.seq != seq || receipt.hash != hash {
        return Err(format!(
            "the receipt is for seq {} hash {}, not seq {seq} hash {hash}",
            receipt.seq, receipt.hash
        ));
    }
    Ok((receipt_jws, receipt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_machine() {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
        };
        for ok in [
            "https://registry.gov.kz",
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:9000",
        ] {
            assert!(RegistryClient::new(ok, None, timeouts).is_ok(), "{ok}");
        }
        for refused in [
            "http://registry.gov.kz",
            "http://10.0.0.1:80",
            "http://127.0.0.1.evil.kz",
            "ftp://x",
            "",
        ] {
            assert!(
                RegistryClient::new(refused, None, timeouts).is_err(),
                "{refused}"
            );
        }
        let missing = RegistryClient::new(
            "https://x",
            Some(Path::new("/nonexistent/ca.pem")),
            timeouts,
        );
        assert!(matches!(missing, Err(SyncError::CaFile { .. })));
    }

    #[test]
    fn hostile_receipts_are_refused() {
        let registry = DeviceKey::from_seed(&[3; 32]).expect("key");
        let other = DeviceKey::from_seed(&[4; 32]).expect("key");
        let hash = "a".repeat(64);
        let receipt = Receipt {
            v: 1,
            agent: "kid".into(),
            seq: 5,
            hash: hash.clone(),
            received: 1,
            records: vec![],
        };
        let sign = |key: &DeviceKey, receipt: &Receipt| {
            let payload = receipt.to_canonical().expect("canonical");
            let jws = kasip_certs::jws::sign_compact(
                key,
                &kasip_certs::jws::protected_header(key),
                payload.as_bytes(),
            );
            serde_json::json!({ "receipt": jws }).to_string()
        };
        let good = sign(&registry, &receipt);
        assert!(verified_receipt(&good, 5, &hash, registry.public_key()).is_ok());
        assert!(verified_receipt(&good, 6, &hash, registry.public_key()).is_err());
        assert!(verified_receipt(&good, 5, &"b".repeat(64), registry.public_key()).is_err());
        let forged = sign(&other, &receipt);
        assert!(verified_receipt(&forged, 5, &hash, registry.public_key()).is_err());
        for junk in [
            "",
            "{}",
            "[1]",
            r#"{"receipt":"a.b.c"}"#,
            r#"{"receipt":7}"#,
        ] {
            assert!(
                verified_receipt(junk, 5, &hash, registry.public_key()).is_err(),
                "{junk}"
            );
        }
    }
}
