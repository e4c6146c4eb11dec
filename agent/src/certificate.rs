//! The agent's name and its publicly trusted certificate.
//!
//! An enrolled agent gets a name in the registry's agents zone
//! (`c7k2m4q9x3ab.agents.kasip.kz`), reports the LAN addresses it serves on (a signed
//! `NameUpdate`), and obtains a certificate for that name from an ACME CA (Let's
//! Encrypt; Pebble in tests), proving it with DNS-01: the registry publishes the
//! challenge value in its zone on the agent's signed request. The certificate is renewed
//! at two thirds of its lifetime, with backoff and jitter while that fails; the last good
//! one is served meanwhile, however long the registry or the CA stay away.
//!
//! TLS picks the certificate by SNI (`ServedCertificates`): a phone that opened the name
//! gets the public certificate, anything that connects by address (a kiosk pinned to the
//! self-signed certificate, `curl https://127.0.0.1`) the self-signed or imported one.
//!
//! Files, in `DATA_DIR/acme/`: `account.json` (the ACME account key, 0600), `key.pem`
//! (0600) and `cert.pem` (the chain), `state.json` (the name, the addresses published, the
//! last renewal and its error, for `cert status` and `doctor`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kasip_certs::DeviceKey;
use kasip_sync::{Backoff, NameChange, RegistryClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::{DataDir, Settings};
use crate::error::AgentError;

/// A renewal starts once this share of the certificate's lifetime has passed.
const RENEW_AT_NUMERATOR: i64 = 2;
const RENEW_AT_DENOMINATOR: i64 = 3;
/// The name's addresses are published again this often even when unchanged, so a
/// registry that lost them (restored from a backup) gets them back.
const REPUBLISH_SECS: i64 = 6 * 3600;
/// Waits between failed renewals: from a minute, doubling with jitter, up to 6 hours.
const RETRY_BASE: Duration = Duration::from_secs(60);
const RETRY_CAP: Duration = Duration::from_secs(6 * 3600);

/// Where the ACME files live.
#[derive(Debug, Clone)]
pub struct AcmeFiles {
    dir: PathBuf,
}

impl AcmeFiles {
    pub fn new(data_dir: &DataDir) -> Self {
        Self {
            dir: data_dir.root().join("acme"),
        }
    }
    pub fn account(&self) -> PathBuf {
        self.dir.join("account.json")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    pub fn chain(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn ensure_dir(&self) -> Result<(), AgentError> {
        kasip_certs::process::create_private_dir(&self.dir).map_err(|source| AgentError::Io {
            action: "create",
            path: self.dir.clone(),
            source,
        })
    }

    /// What `cert status` and `doctor` show; the default when nothing happened yet.
    pub fn load_state(&self) -> CertificateState {
        std::fs::read(self.state())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save_state(&self, state: &CertificateState) -> Result<(), AgentError> {
        self.ensure_dir()?;
        let text =
            serde_json::to_vec_pretty(state).map_err(AgentError::json("the certificate state"))?;
        kasip_certs::process::write_file_atomically(&self.state(), &text, 0o600).map_err(|source| {
            AgentError::Io {
                action: "write",
                path: self.state(),
                source,
            }
        })
    }

    /// The name learnt at enrolment.
    pub fn remember_hostname(&self, hostname: &str) -> Result<(), AgentError> {
        let mut state = self.load_state();
        if state.hostname.as_deref() != Some(hostname) {
            state.hostname = Some(hostname.to_owned());
            state.addresses.clear();
            state.published_at = None;
            self.save_state(&state)?;
        }
        Ok(())
    }

    /// The certificate on disk: its chain's first DER and (notBefore, notAfter).
    pub fn current(&self) -> Option<(Vec<u8>, (i64, i64))> {
        let pem = std::fs::read_to_string(self.chain()).ok()?;
        let der = kasip_certs::first_certificate_der(&pem)?;
        let validity = kasip_certs::validity(&der)?;
        Some((der, validity))
    }
}

/// The name and the certificate's history, as `state.json` keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateState {
    pub hostname: Option<String>,
    /// The addresses the registry publishes for the name, as last confirmed.
    #[serde(default)]
    pub addresses: Vec<String>,
    pub published_at: Option<i64>,
    pub last_attempt: Option<i64>,
    /// When the certificate on disk was obtained.
    pub last_renewal: Option<i64>,
    /// The last failure (publishing the name or renewing), until a success clears it.
    pub last_error: Option<String>,
    /// Failed rounds in a row (publishing or renewing); 0 after a success.
    #[serde(default)]
    pub failures: u32,
    /// No renewal is tried before this time after a failure (backoff with jitter).
    pub next_attempt: Option<i64>,
}

/// When a certificate valid over `validity` should be renewed.
pub fn renewal_due_at((not_before, not_after): (i64, i64)) -> i64 {
    not_before + (not_after - not_before).max(0) * RENEW_AT_NUMERATOR / RENEW_AT_DENOMINATOR
}

fn load_certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("the certificate chain is not PEM: {error}"))?;
    if chain.is_empty() {
        return Err("no certificate in the chain file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|error| format!("the private key is not PEM: {error}"))?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|error| format!("the key does not fit the certificate: {error}"))
}

fn read_certified_key(chain: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain_pem = std::fs::read(chain)
        .map_err(|error| format!("cannot read {}: {error}", chain.display()))?;
    let key_pem =
        std::fs::read(key).map_err(|error| format!("cannot read {}: {error}", key.display()))?;
    load_certified_key(&chain_pem, &key_pem)
}

/// The certificates TLS serves: the name's, to clients that ask for the name (SNI), and
/// the self-signed or imported one to everyone else. Both are swapped in place: a
/// renewal or `systemctl reload` reaches new handshakes, open connections keep theirs.
#[derive(Debug)]
pub struct ServedCertificates {
    fallback: RwLock<Arc<CertifiedKey>>,
    named: RwLock<Option<(String, Arc<CertifiedKey>)>>,
}

impl ServedCertificates {
    /// The self-signed or imported pair, and the name's certificate when one is on disk.
    pub fn load(cert: &Path, key: &Path, acme: &AcmeFiles) -> Result<Self, String> {
        let served = Self {
            fallback: RwLock::new(Arc::new(read_certified_key(cert, key)?)),
            named: RwLock::new(None),
        };
        if let Err(reason) = served.reload_named(acme) {
            tracing::warn!(%reason, "the name's certificate is not served");
        }
        Ok(served)
    }

    /// Reads the self-signed or imported pair again (SIGHUP).
    pub fn reload_fallback(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let loaded = read_certified_key(cert, key)?;
        *self
            .fallback
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Serves the name's certificate from disk; Ok(None) when there is none yet.
    pub fn reload_named(&self, acme: &AcmeFiles) -> Result<Option<String>, String> {
        let Some(hostname) = acme.load_state().hostname else {
            return Ok(None);
        };
        if !acme.chain().exists() {
            return Ok(None);
        }
        let loaded = read_certified_key(&acme.chain(), &acme.key())?;
        *self
            .named
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((hostname.clone(), Arc::new(loaded)));
        Ok(Some(hostname))
    }

    /// The name served with a public certificate, if any.
    pub fn hostname(&self) -> Option<String> {
        self.named
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|(name, _)| name.clone())
    }

    /// The TLS configuration that serves these certificates, HTTP/1.1 only: HTTP/2 has
    /// no header-read or idle timeout in hyper, so an idle HTTP/2 connection could be
    /// held open for ever; phones make a few small requests, for which HTTP/1.1 with
    /// keep-alive is as fast.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ServerConfig::builder())
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl rustls::server::ResolvesServerCert for ServedCertificates {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(asked) = hello.server_name() {
            let named = self
                .named
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((hostname, key)) = named.as_ref() {
                if hostname.eq_ignore_ascii_case(asked) {
                    return Some(key.clone());
                }
            }
        }
        Some(
            self.fallback
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

/// The addresses to publish: the configured ones, else the listen address when it is a
/// specific one, else the address this machine reaches the registry from.
pub async fn lan_addresses(
    settings: &Settings,
    listen: std::net::SocketAddr,
    registry_url: &str,
) -> Result<Vec<IpAddr>, String> {
    if !settings.certificate.lan_addresses.is_empty() {
        return Ok(settings.certificate.lan_addresses.clone());
    }
    if !listen.ip().is_unspecified() {
        return Ok(vec![listen.ip()]);
    }
    let uri: axum::http::Uri = registry_url
        .parse()
        .map_err(|_| format!("the registry's URL {registry_url} is not a URL"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("the registry's URL {registry_url} names no host"))?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    // `host` keeps an IPv6 address's brackets, as `ToSocketAddrs` wants them.
    let target = format!("{host}:{port}");
    tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        let remote = target
            .to_socket_addrs()
            .map_err(|error| format!("cannot resolve the registry's address {target}: {error}"))?
            .next()
            .ok_or_else(|| format!("the registry's name {target} has no address"))?;
        let local = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        // Connecting a UDP socket sends nothing: it only asks the kernel for the route.
        let socket = std::net::UdpSocket::bind(local)
            .and_then(|socket| socket.connect(remote).map(|()| socket))
            .and_then(|socket| socket.local_addr())
            .map_err(|error| format!("cannot find the LAN address towards {remote}: {error}; set certificate.lan_addresses"))?;
        Ok(vec![socket.ip()])
    })
    .await
    .map_err(|_| "the address lookup failed".to_owned())?
}

/// One attempt's parts: the registry for the name, the CA for the certificate.
pub struct Renewer {
    pub settings: Arc<Settings>,
    pub data_dir: DataDir,
    pub files: AcmeFiles,
    pub clock: Arc<dyn Clock>,
}

impl Renewer {
    pub fn new(settings: Arc<Settings>, data_dir: DataDir, clock: Arc<dyn Clock>) -> Self {
        Self {
            files: AcmeFiles::new(&data_dir),
            settings,
            data_dir,
            clock,
        }
    }

    fn registry(&self) -> Result<Option<RegistryClient>, AgentError> {
        let store = crate::store::Store::open(&self.data_dir.database_path())?;
        let enrolled = crate::registry_link::enrolment(store.connection())
            .map_err(|source| AgentError::from(store.error(source)))?;
        store.close()?;
        enrolled
            .map(|enrolled| crate::sync::client(&self.settings, &enrolled.registry_url))
            .transpose()
    }

    /// Publishes the name's addresses when they changed or are due again; learns the
    /// name on the first call. Returns the name; None when the registry serves no
    /// agents' zone (404) and the agent has no name yet: not a failure, there is no name.
    pub async fn publish_addresses(
        &self,
        registry: &RegistryClient,
        listen: std::net::SocketAddr,
    ) -> Result<Option<String>, String> {
        let mut state = self.files.load_state();
        let now = self.clock.now_unix();
        let addresses: Vec<String> = lan_addresses(&self.settings, listen, registry.base_url())
            .await?
            .iter()
            .map(IpAddr::to_string)
            .collect();
        let fresh = state
            .published_at
            .is_some_and(|at| now - at < REPUBLISH_SECS && now >= at);
        if let (Some(hostname), true) = (&state.hostname, fresh && state.addresses == addresses) {
            return Ok(Some(hostname.clone()));
        }
        let key = DeviceKey::load(&self.data_dir.key_path()).map_err(|error| error.to_string())?;
        let change = NameChange {
            hostname: state.hostname.clone(),
            addresses: Some(addresses),
            acme_challenge: None,
        };
        let records = match registry.update_name(&key, &change, now).await {
            Ok(records) => records,
            Err(kasip_sync::SyncError::Refused { status: 404, .. }) if state.hostname.is_none() => {
                return Ok(None)
            }
            Err(error) => return Err(format!("publishing the name's addresses: {error}")),
        };
        state.hostname = Some(records.hostname.clone());
        state.addresses = records.addresses;
        state.published_at = Some(now);
        self.files
            .save_state(&state)
            .map_err(|error| crate::error::report(&error))?;
        tracing::info!(hostname = %records.hostname, addresses = ?state.addresses, "name published");
        Ok(Some(records.hostname))
    }

    /// Whether the certificate on disk is missing, for another name, or due.
    pub fn renewal_due(&self, hostname: &str) -> bool {
        let now = self.clock.now_unix();
        match self.files.current() {
            None => true,
            Some((der, validity)) => {
                !kasip_certs::dns_names(&der)
                    .iter()
                    .any(|name| name.eq_ignore_ascii_case(hostname))
                    || now >= renewal_due_at(validity)
            }
        }
    }

    /// The ACME account, created (and saved, 0600) on first use.
    async fn account(&self) -> Result<instant_acme::Account, String> {
        use instant_acme::{Account, AccountCredentials, NewAccount};
        let directory = &self.settings.certificate.acme_directory;
        self.files
            .ensure_dir()
            .map_err(|error| crate::error::report(&error))?;
        let builder = match &self.settings.certificate.acme_ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        }
        .map_err(self.ca_step("cannot make its HTTPS client"))?;
        let saved: Option<AccountCredentials> = std::fs::read(self.files.account())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(credentials) = saved {
            return builder
                .from_credentials(credentials)
                .await
                .map_err(self.ca_step("cannot use the saved account"));
        }
        let new_account = NewAccount {
            contact: &[],
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder
            .create(&new_account, directory.clone(), None)
            .await
            .map_err(self.ca_step("cannot create an account"))?;
        let text = serde_json::to_vec(&credentials)
            .map_err(|error| format!("cannot write the ACME account: {error}"))?;
        kasip_certs::process::write_file_atomically(&self.files.account(), &text, 0o600)
            .map_err(|error| format!("cannot write {}: {error}", self.files.account().display()))?;
        Ok(account)
    }

    /// Turns the CA's error at `what` into a sentence naming the CA.
    fn ca_step(&self, what: &str) -> impl Fn(instant_acme::Error) -> String {
        let directory = self.settings.certificate.acme_directory.clone();
        let what = what.to_owned();
        move |error| format!("the ACME server {directory}: {what}: {error}")
    }

    /// Asks the registry to publish `values` as the name's `_acme-challenge` TXT.
    async fn set_challenge(
        &self,
        registry: &RegistryClient,
        key: &DeviceKey,
        hostname: &str,
        values: Vec<String>,
    ) -> Result<(), String> {
        let change = NameChange {
            hostname: Some(hostname.to_owned()),
            addresses: None,
            acme_challenge: Some(values),
        };
        registry
            .update_name(key, &change, self.clock.now_unix())
            .await
            .map(drop)
            .map_err(|error| format!("publishing the DNS-01 value: {error}"))
    }

    /// Proves `hostname` for every pending authorization of `order` (DNS-01 through the
    /// registry). Sets `published` once a value is in the zone.
    async fn prove(
        &self,
        order: &mut instant_acme::Order,
        registry: &RegistryClient,
        key: &DeviceKey,
        hostname: &str,
        published: &mut bool,
    ) -> Result<(), String> {
        use instant_acme::{AuthorizationStatus, ChallengeType};
        let directory = &self.settings.certificate.acme_directory;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(self.ca_step("cannot read an authorization"))?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(format!(
                        "the ACME server {directory} holds the authorization for {hostname} as {other:?}"
                    ))
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| format!("the ACME server {directory} offers no DNS-01 challenge"))?;
            let value = challenge.key_authorization().dns_value();
            self.set_challenge(registry, key, hostname, vec![value])
                .await?;
            *published = true;
            challenge
                .set_ready()
                .await
                .map_err(self.ca_step("cannot start the DNS-01 check"))?;
        }
        Ok(())
    }

    /// Waits for the proof to be accepted, sends a request for a new P-256 key and
    /// downloads the chain: (key PEM, chain PEM).
    async fn finish(
        &self,
        order: &mut instant_acme::Order,
        hostname: &str,
    ) -> Result<(String, String), String> {
        use instant_acme::{OrderStatus, RetryPolicy};
        let retries = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(self.ca_step("the DNS-01 check did not finish"))?;
        if status != OrderStatus::Ready {
            let problem = order
                .state()
                .error
                .as_ref()
                .map_or_else(|| format!("{status:?}"), |problem| problem.to_string());
            return Err(format!(
                "the ACME server {} did not accept the DNS-01 proof for {hostname}: {problem}",
                self.settings.certificate.acme_directory
            ));
        }
        let key_pair = rcgen::KeyPair::generate()
            .map_err(|error| format!("cannot make the certificate's key: {error}"))?;
        let mut params = rcgen::CertificateParams::new(vec![hostname.to_owned()])
            .map_err(|error| format!("'{hostname}' cannot be a certificate's name: {error}"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key_pair)
            .map_err(|error| format!("cannot make the certificate request: {error}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(self.ca_step("cannot finalize the order"))?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .map_err(self.ca_step("cannot download the certificate"))?;
        Ok((key_pair.serialize_pem(), chain))
    }

    /// Orders a certificate for `hostname`, proves it through the registry's zone, and
    /// writes the key (0600) and chain, once the pair verifies.
    pub async fn obtain(&self, registry: &RegistryClient, hostname: &str) -> Result<(), String> {
        let account = self.account().await?;
        let identifiers = [instant_acme::Identifier::Dns(hostname.to_owned())];
        let mut order = account
            .new_order(&instant_acme::NewOrder::new(&identifiers))
            .await
            .map_err(self.ca_step("cannot open an order"))?;
        let key = DeviceKey::load(&self.data_dir.key_path()).map_err(|error| error.to_string())?;
        let mut published = false;
        let outcome = match self
            .prove(&mut order, registry, &key, hostname, &mut published)
            .await
        {
            Ok(()) => self.finish(&mut order, hostname).await,
            Err(error) => Err(error),
        };
        if published {
            // The value proved what it had to, or failed: either way it is not kept.
            if let Err(error) = self
                .set_challenge(registry, &key, hostname, Vec::new())
                .await
            {
                tracing::warn!(%error, "cannot clear the DNS-01 value; the registry keeps it until the next renewal");
            }
        }
        let (key_pem, chain_pem) = outcome?;
        // The pair must fit before it replaces the last good one.
        load_certified_key(chain_pem.as_bytes(), key_pem.as_bytes())?;
        let write = |path: PathBuf, bytes: &[u8], mode: u32| {
            kasip_certs::process::write_file_atomically(&path, bytes, mode)
                .map_err(|error| format!("cannot write {}: {error}", path.display()))
        };
        write(
            self.files.key(),
            key_pem.as_bytes(),
            kasip_certs::KEY_FILE_MODE,
        )?;
        write(self.files.chain(), chain_pem.as_bytes(), 0o644)?;
        Ok(())
    }

    /// One round: publish the addresses, renew when due and allowed. Returns whether a
    /// new certificate was written.
    pub async fn round(
        &self,
        listen: std::net::SocketAddr,
        backoff: &mut Backoff,
        force: bool,
    ) -> Result<bool, AgentError> {
        let Some(registry) = self.registry()? else {
            return Ok(false);
        };
        let now = self.clock.now_unix();
        let hostname = match self.publish_addresses(&registry, listen).await {
            Ok(Some(hostname)) => hostname,
            Ok(None) => return Ok(false),
            Err(error) => {
                let mut state = self.files.load_state();
                state.last_error = Some(error.clone());
                state.failures = state.failures.saturating_add(1);
                self.files.save_state(&state)?;
                return Err(AgentError::Refused(error));
            }
        };
        let state = self.files.load_state();
        if !force && (!self.renewal_due(&hostname) || state.next_attempt.is_some_and(|at| now < at))
        {
            if state.last_error.is_some() && state.next_attempt.is_none() {
                // The name was published again after a failure to publish it.
                let mut state = state;
                state.last_error = None;
                state.failures = 0;
                self.files.save_state(&state)?;
            }
            return Ok(false);
        }
        tracing::info!(%hostname, "obtaining a certificate for the agent's name");
        let outcome = self.obtain(&registry, &hostname).await;
        let mut state = self.files.load_state();
        state.last_attempt = Some(now);
        match outcome {
            Ok(()) => {
                backoff.succeeded();
                state.last_renewal = Some(now);
                state.last_error = None;
                state.failures = 0;
                state.next_attempt = None;
                self.files.save_state(&state)?;
                tracing::info!(%hostname, "certificate obtained");
                Ok(true)
            }
            Err(error) => {
                let wait = backoff.next_delay(None);
                state.failures = state.failures.saturating_add(1);
                state.last_error = Some(error.clone());
                state.next_attempt =
                    Some(now + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2));
                self.files.save_state(&state)?;
                Err(AgentError::Refused(error))
            }
        }
    }
}

/// The service's task: a round every `certificate.check_secs`, and the new certificate
/// served as soon as it is written. `on_name` learns the name once its certificate is
/// served (the classroom QR then carries it).
pub async fn keep_certificate(
    renewer: Renewer,
    served: Arc<ServedCertificates>,
    listen: std::net::SocketAddr,
    on_name: impl Fn(&str) + Send + Sync + 'static,
) {
    if let Some(hostname) = served.hostname() {
        on_name(&hostname);
    }
    let mut backoff = Backoff::new(RETRY_BASE, RETRY_CAP);
    let mut served_fingerprint = renewer
        .files
        .current()
        .map(|(der, _)| kasip_certs::fingerprint_der(&der));
    loop {
        match renewer.round(listen, &mut backoff, false).await {
            Ok(_) => {}
            Err(error) => {
                let state = renewer.files.load_state();
                tracing::error!(
                    error = %crate::error::report(&error),
                    failures = state.failures,
                    "cannot renew the agent's certificate; still serving the last good one"
                );
            }
        }
        // Whatever wrote it (this task or `cert renew`), a new certificate on disk is served.
        let on_disk = renewer
            .files
            .current()
            .map(|(der, _)| kasip_certs::fingerprint_der(&der));
        if on_disk.is_some() && on_disk != served_fingerprint {
            match served.reload_named(&renewer.files) {
                Ok(Some(hostname)) => {
                    tracing::info!(%hostname, "serving the new certificate");
                    served_fingerprint = on_disk;
                    on_name(&hostname);
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::error!(%reason, "cannot serve the new certificate; still serving the last good one")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(renewer.settings.certificate.check_secs)).await;
    }
}
