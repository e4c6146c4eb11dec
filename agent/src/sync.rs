//! Talking to the registry: enrolment, the uploader that drains the outbox (its own
//! tokio task in `serve`, and `sync --now` from the CLI), and the beneficiary pull.
//!
//! What to do with each answer is design §5.4: 201/200 store the receipt and go on; a
//! network error, 408, 429 or 5xx waits (backoff with jitter, Retry-After) and tries the
//! same bytes again, forever; 400, 401 and chain conflicts stop the queue with an alert
//! until an admin runs `kasip-agent sync resume`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kasip_certs::DeviceKey;
use kasip_sync::client::Timeouts;
use kasip_sync::{Backoff, RegistryClient, Upload};
use rusqlite::Connection;

use crate::clock::Clock;
use crate::config::{DataDir, Settings};
use crate::error::AgentError;
use crate::outbox::{self, SealLimits, Sealer};
use crate::store::Store;
use kasip_core::BatchKind;

pub use crate::registry_link::{enrolment, Enrolled};

pub fn client(settings: &Settings, registry_url: &str) -> Result<RegistryClient, AgentError> {
    RegistryClient::new(
        registry_url,
        settings.sync.registry_ca_file.as_deref(),
        Timeouts {
            connect: settings.sync.connect_timeout,
            request: settings.sync.request_timeout,
        },
    )
    .map_err(AgentError::Registry)
}

fn sync_failure(error: kasip_sync::SyncError) -> AgentError {
    AgentError::Registry(error)
}

/// `kasip-agent enroll`: sends the public key and BIN with the one-time code. Returns
/// the agent's id and its name in the registry's zone, when the registry runs one.
pub async fn enroll(
    data_dir: &DataDir,
    settings: &Settings,
    store: &Store,
    registry_url: &str,
    code: &str,
    now: i64,
) -> Result<(String, Option<String>), AgentError> {
    let key = DeviceKey::load(&data_dir.key_path())?;
    let client = client(settings, registry_url)?;
    let enrolment = client
        .enrol(code, &settings.college_bin.to_string(), &key)
        .await
        .map_err(sync_failure)?;
    crate::registry_link::store_enrolment(
        store.connection(),
        client.base_url(),
        &enrolment.registry_key,
        &key.thumbprint(),
        now,
    )
    .map_err(|source| store.error(source))?;
    Ok((key.thumbprint(), enrolment.hostname))
}

/// Where `keys rotate` keeps the next key until the registry acknowledges it.
pub fn next_key_path(data_dir: &DataDir) -> std::path::PathBuf {
    data_dir.root().join("agent-key.next.pem")
}

/// Finishes a key rotation the registry has acknowledged: the next key file becomes the
/// key (the old one kept as `agent-key.retired-<id>.pem`) and the rotation is marked
/// done. Safe to repeat after a crash at any point: `agent-key.pem` always exists.
/// Returns the new key when a rotation was finished.
pub fn finish_rotation(
    data_dir: &DataDir,
    connection: &Connection,
    now: i64,
) -> Result<Option<DeviceKey>, AgentError> {
    let Some((id, kid)) = crate::registry_link::acknowledged_rotation(connection)? else {
        return Ok(None);
    };
    let key_path = data_dir.key_path();
    let next_path = next_key_path(data_dir);
    if next_path.exists() {
        let next = DeviceKey::load(&next_path)?;
        if next.thumbprint() != kid {
            return Err(AgentError::Refused(format!(
                "{} is not the key announced to the registry ({kid}); keep both files and report this",
                next_path.display()
            )));
        }
        let retired = data_dir.root().join(format!("agent-key.retired-{id}.pem"));
        let io_error = |action: &'static str, path: &std::path::Path| {
            let path = path.to_owned();
            move |source| AgentError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::copy(&key_path, &retired).map_err(io_error("keep", &retired))?;
        std::fs::rename(&next_path, &key_path).map_err(io_error("install", &next_path))?;
    }
    let key = DeviceKey::load(&key_path)?;
    if key.thumbprint() != kid {
        return Err(AgentError::Refused(format!(
            "the registry acknowledged key {kid} but {} holds {}; restore agent-key.next.pem from a backup",
            key_path.display(),
            key.thumbprint()
        )));
    }
    crate::registry_link::complete_rotation(connection, id, now)?;
    tracing::info!(kid = %kid, "key rotation finished: the registry acknowledged the new key");
    Ok(Some(key))
}

/// The uploader's view of the agent: its own database connection, key and settings.
#[derive(Clone)]
pub struct Uploader {
    store: Arc<Mutex<Store>>,
    /// The connection that seals and records receipts: a batch's sealing transaction
    /// (tens of milliseconds for a full batch) never holds up the upload of the batch
    /// before it, so a backlog keeps the registry busy while the next is sealed.
    writes: Arc<Mutex<Store>>,
    /// The last batch the registry answered whose receipt is being recorded, and those
    /// recordings: the next upload does not wait for them (`settle_receipts`).
    answered_through: Arc<std::sync::atomic::AtomicU64>,
    receipts: Arc<Mutex<Vec<ReceiptRecording>>>,
    /// Replaced when a key rotation finishes.
    key: Arc<std::sync::RwLock<Arc<DeviceKey>>>,
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    data_dir: Arc<DataDir>,
    /// What sealing has verified of the chain, and the break it last found, if any
    /// (logged once; `sync now` fails with it).
    guard: Arc<std::sync::Mutex<outbox::ChainGuard>>,
    integrity: Arc<std::sync::Mutex<Option<outbox::IntegrityBreak>>>,
}

/// A receipt being recorded on the writing connection.
type ReceiptRecording = tokio::task::JoinHandle<Result<(), AgentError>>;

/// What one step of the queue came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing left to send.
    Empty,
    /// A batch was acknowledged; go on at once.
    Sent,
    /// Wait, then try again.
    Wait { delay: Duration, reason: String },
    /// The queue is stopped by an alert.
    Stopped(String),
    /// Not enrolled yet.
    NotEnrolled,
}

impl Uploader {
    pub fn new(
        store: Store,
        key: DeviceKey,
        settings: Arc<Settings>,
        clock: Arc<dyn Clock>,
        data_dir: DataDir,
    ) -> Result<Self, AgentError> {
        let writes = Store::open(store.path())?;
        Ok(Self {
            store: Arc::new(Mutex::new(store)),
            writes: Arc::new(Mutex::new(writes)),
            answered_through: Arc::default(),
            receipts: Arc::default(),
            key: Arc::new(std::sync::RwLock::new(Arc::new(key))),
            settings,
            clock,
            data_dir: Arc::new(data_dir),
            guard: Arc::default(),
            integrity: Arc::default(),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    /// The current signing key.
    pub fn key(&self) -> Arc<DeviceKey> {
        Arc::clone(
            &self
                .key
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Finishes an acknowledged key rotation and signs with the new key from now on.
    pub async fn finish_rotation(&self) -> Result<(), AgentError> {
        let data_dir = Arc::clone(&self.data_dir);
        let now = self.now();
        let store = Arc::clone(&self.store);
        let finished = tokio::task::spawn_blocking(move || {
            let store = store.lock().map_err(|_| {
                AgentError::task("a sync step before this one (the lock is poisoned)", None)
            })?;
            finish_rotation(&data_dir, store.connection(), now)
        })
        .await
        .map_err(|error| AgentError::task("the sync task", Some(Box::new(error))))??;
        if let Some(key) = finished {
            *self
                .key
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
        }
        Ok(())
    }

    /// Runs `work` on the uploader's connection on the blocking pool.
    async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Store) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AgentError> {
        Self::on(Arc::clone(&self.store), work).await
    }

    /// Runs `work` on `store` on the blocking pool.
    async fn on<T: Send + 'static>(
        store: Arc<Mutex<Store>>,
        work: impl FnOnce(&mut Store) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, AgentError> {
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().map_err(|_| {
                AgentError::task("a sync step before this one (the lock is poisoned)", None)
            })?;
            let result = work(&mut store);
            result.map_err(|source| AgentError::from(store.error(source)))
        })
        .await
        .map_err(|error| AgentError::task("the sync task", Some(Box::new(error))))?
    }

    /// Seals the due batches (all pending events when `force`), one batch per turn on
    /// the connection so uploads interleave with a long sealing run.
    pub async fn seal(&self, force: bool) -> Result<usize, AgentError> {
        let mut total = 0;
        loop {
            match self.seal_one(force).await? {
                0 => return Ok(total),
                sealed => total += sealed,
            }
        }
    }

    async fn seal_one(&self, force: bool) -> Result<usize, AgentError> {
        let key = self.key();
        let settings = Arc::clone(&self.settings);
        let data_dir = Arc::clone(&self.data_dir);
        let now = self.now();
        let guard = Arc::clone(&self.guard);
        let sealed = Self::on(Arc::clone(&self.writes), move |store| {
            let agent_id = outbox::agent_id(store.connection(), &key)?;
            let sealer = Sealer {
                key: &key,
                agent_id: &agent_id,
                college_bin: &settings.college_bin,
                data_dir: data_dir.root(),
                limits: SealLimits {
                    max_records: settings.sync.batch_max_records,
                    max_age_secs: settings.sync.batch_max_age_secs,
                },
            };
            let mut guard = guard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let sealed = sealer.seal_some(store.connection_mut(), &mut guard, now, force, 1)?;
            if let Err(broken) = &sealed {
                outbox::raise_alert(store.connection(), &broken.alert(), now)?;
            }
            Ok(sealed)
        })
        .await?;
        let mut integrity = self
            .integrity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match sealed {
            Ok(count) => {
                if integrity.take().is_some() {
                    tracing::info!("the attendance chain verifies again");
                }
                Ok(count)
            }
            Err(broken) => {
                if integrity.as_ref() != Some(&broken) {
                    tracing::error!(alert = %broken.alert(), "sealing stopped");
                }
                *integrity = Some(broken);
                Ok(0)
            }
        }
    }

    async fn alert(&self, text: String) -> Result<Step, AgentError> {
        tracing::error!(alert = %text, "sync stopped: run `kasip-agent sync status`, fix the cause, then `kasip-agent sync resume`");
        let now = self.now();
        let stored = text.clone();
        self.db(move |store| outbox::raise_alert(store.connection(), &stored, now))
            .await?;
        Ok(Step::Stopped(text))
    }

    /// Compares the registry's checkpoint with the sealed chain. A registry ahead of
    /// the agent, or holding another hash at the same seq, means this database was
    /// restored from an old backup or forked: alarm, never overwrite.
    pub async fn check_checkpoint(&self, client: &RegistryClient) -> Result<Step, AgentError> {
        let key = self.key();
        let agent_key = Arc::clone(&key);
        let agent_id = self
            .db(move |store| outbox::agent_id(store.connection(), &agent_key))
            .await?;
        let checkpoint = match client.checkpoint(&key, &agent_id, self.now()).await {
            Ok(checkpoint) => checkpoint,
            Err(kasip_sync::SyncError::Refused {
                status: 401,
                message,
            }) => {
                return self
                    .alert(format!(
                        "the registry refused this agent's credentials (401): {message}. If it names \
                         the clock, fix the agent's clock (NTP); otherwise enrol again with \
                         `kasip-agent enroll`. Then `kasip-agent sync resume`"
                    ))
                    .await;
            }
            Err(error) => {
                let now = self.now();
                let reason = format!("checkpoint: {error}");
                let text = reason.clone();
                self.db(move |store| outbox::note_error(store.connection(), &text, now))
                    .await?;
                return Ok(Step::Wait {
                    delay: Duration::from_secs(5),
                    reason,
                });
            }
        };
        if checkpoint.last_seq == 0 {
            return Ok(Step::Sent);
        }
        let last_seq = checkpoint.last_seq;
        let (head_seq, ours) = self
            .db(move |store| {
                Ok((
                    outbox::sealed_head(store.connection())?.0,
                    outbox::sealed(store.connection(), last_seq)?,
                ))
            })
            .await?;
        match ours {
            None => {
                self.alert(format!(
                    "the registry holds batch {last_seq} but this agent's outbox ends at {head_seq}: \
                     the database was probably restored from an old backup. Nothing was sent; \
                     contact the registry before resuming"
                ))
                .await
            }
            Some(batch) if batch.hash != checkpoint.last_hash => {
                self.alert(format!(
                    "the registry holds batch {last_seq} with another hash than this agent's: \
                     the outbox forked (restored database?). Nothing was sent; contact the registry"
                ))
                .await
            }
            Some(_) => Ok(Step::Sent),
        }
    }

    /// Sends the oldest unacknowledged batch once and handles the answer.
    pub async fn send_next(
        &self,
        client: &RegistryClient,
        registry_key: &[u8],
        backoff: &mut Backoff,
    ) -> Result<Step, AgentError> {
        if let Some(alert) = self.db(|store| outbox::alert(store.connection())).await? {
            return Ok(Step::Stopped(alert));
        }
        let after = self
            .answered_through
            .load(std::sync::atomic::Ordering::SeqCst);
        let Some(batch) = self
            .db(move |store| outbox::next_unsent(store.connection(), after))
            .await?
        else {
            // Empty only once every receipt is recorded (a failed recording sends its
            // batch again: the registry answers with the receipt it keeps).
            self.settle_receipts().await?;
            return Ok(Step::Empty);
        };
        self.upload(client, registry_key, backoff, batch).await
    }

    /// Waits for the receipts being recorded; the first failure, if any.
    async fn settle_receipts(&self) -> Result<(), AgentError> {
        let pending = std::mem::take(
            &mut *self
                .receipts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        self.answered_through
            .store(0, std::sync::atomic::Ordering::SeqCst);
        let mut first_failure = Ok(());
        for recording in pending {
            let recorded = recording
                .await
                .map_err(|error| AgentError::task("recording a receipt", Some(Box::new(error))))
                .and_then(|recorded| recorded);
            if first_failure.is_ok() {
                first_failure = recorded;
            }
        }
        first_failure
    }

    async fn upload(
        &self,
        client: &RegistryClient,
        registry_key: &[u8],
        backoff: &mut Backoff,
        batch: outbox::Sealed,
    ) -> Result<Step, AgentError> {
        let seq = batch.seq;
        match client
            .upload(&batch.jws, seq, &batch.hash, registry_key)
            .await
        {
            Upload::Stored {
                receipt_jws,
                receipt,
            }
            | Upload::AlreadyStored {
                receipt_jws,
                receipt,
            } => {
                backoff.succeeded();
                let now = self.now();
                let rejected = receipt.count(kasip_core::batch::Outcome::Rejected);
                if rejected > 0 {
                    tracing::error!(seq, rejected, "the registry quarantined records; see `kasip-agent sync status`");
                }
                tracing::debug!(seq, records = batch.records, "batch acknowledged");
                let recording = tokio::spawn(Self::on(Arc::clone(&self.writes), move |store| {
                    outbox::acknowledge(store.connection_mut(), seq, &receipt_jws, &receipt, now)
                }));
                if batch.kind == BatchKind::KeyRotation.as_str() {
                    // The next batch is signed by the next key: it waits for the receipt.
                    recording
                        .await
                        .map_err(|error| {
                            AgentError::task("recording a receipt", Some(Box::new(error)))
                        })??;
                    self.settle_receipts().await?;
                    self.finish_rotation().await?;
                } else {
                    // The next batch goes up while this receipt is recorded.
                    self.receipts
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(recording);
                    self.answered_through
                        .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(Step::Sent)
            }
            Upload::Retry {
                reason,
                retry_after,
            } => {
                let delay = backoff.next_delay(retry_after);
                tracing::warn!(seq, %reason, retry_in = ?delay, "upload failed; will retry the same batch");
                let now = self.now();
                let reason = format!("batch {seq}: {reason}");
                let text = reason.clone();
                self.db(move |store| outbox::note_error(store.connection(), &text, now))
                    .await?;
                Ok(Step::Wait { delay, reason })
            }
            Upload::BadBatch { message } => {
                self.alert(format!(
                    "the registry refused batch {seq} as malformed or badly signed (400): {message}. \
                     Later batches chain on it, so the queue is stopped"
                ))
                .await
            }
            Upload::Refused { message } => {
                self.alert(format!(
                    "the registry refused batch {seq} for good (409): {message}. Later batches \
                     chain on it, so the queue is stopped"
                ))
                .await
            }
            Upload::UnknownAgent { message } => {
                self.alert(format!(
                    "the registry does not know this agent's key (401): {message}. Enrol again with \
                     `kasip-agent enroll`, then `kasip-agent sync resume`"
                ))
                .await
            }
            Upload::Conflict {
                expected_seq,
                message,
            } if expected_seq < seq => {
                // The registry lacks batches it once acknowledged (its data was restored):
                // send them again from the one it expects; every sealed batch is kept.
                tracing::warn!(seq, expected_seq, %message, "registry is behind; resending");
                let missing = self
                    .db(move |store| outbox::sealed(store.connection(), expected_seq))
                    .await?;
                match missing {
                    Some(missing) => Box::pin(self.upload(client, registry_key, backoff, missing)).await,
                    None => {
                        self.alert(format!(
                            "the registry expects batch {expected_seq}, which this agent no longer has: {message}"
                        ))
                        .await
                    }
                }
            }
            Upload::Conflict { message, .. } => {
                self.alert(format!("chain conflict on batch {seq} (409): {message}"))
                    .await
            }
        }
    }

    /// Pins the attendance chain's head at the registry (or reports its break) and keeps
    /// the registry's clock from the answer for `doctor`.
    pub async fn heartbeat(&self, client: &RegistryClient) -> Result<(), AgentError> {
        let key = self.key();
        let now = self.now();
        let guard = Arc::clone(&self.guard);
        let bin = self.settings.college_bin.to_string();
        let signing_key = Arc::clone(&key);
        let jws = self
            .db(move |store| {
                let mut guard = guard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let checked = guard.check(store.connection(), now)?;
                let (events, head, broken) = match checked {
                    Ok(verified) => (verified.events, verified.head, None),
                    Err(broken) => (0, String::new(), Some(broken.alert())),
                };
                let heartbeat = kasip_core::wire::Heartbeat {
                    agent: outbox::agent_id(store.connection(), &signing_key)?,
                    college_bin: bin,
                    events,
                    head,
                    at: now,
                    broken,
                };
                let payload = serde_json::to_value(&heartbeat)
                    .ok()
                    .and_then(|value| kasip_core::to_canonical_json(&value).ok())
                    .unwrap_or_default();
                Ok(kasip_certs::jws::sign_compact(
                    &signing_key,
                    &kasip_certs::jws::protected_header(&signing_key),
                    payload.as_bytes(),
                ))
            })
            .await?;
        let registry_time = client.heartbeat(&jws).await.map_err(sync_failure)?;
        let arrived = self.now();
        self.db(move |store| {
            crate::registry_link::remember_registry_clock(
                store.connection(),
                registry_time,
                arrived,
            )
        })
        .await
    }

    /// Pulls the national policy and caches it (the rules in force read it at once).
    pub async fn pull_policy(
        &self,
        client: &RegistryClient,
        registry_key: &[u8],
    ) -> Result<kasip_core::wire::Policy, AgentError> {
        let bin = self.settings.college_bin.to_string();
        let now = self.now();
        let (jws, policy) = client
            .policy(&self.key(), &bin, registry_key, now)
            .await
            .map_err(sync_failure)?;
        self.db(move |store| crate::registry_link::store_policy(store.connection(), &jws, now))
            .await?;
        Ok(policy)
    }

    /// Pulls the students' passkey directory and caches it. None: the registry enrols
    /// no passkeys, and check-ins go on without them.
    pub async fn pull_passkeys(
        &self,
        client: &RegistryClient,
        registry_key: &[u8],
    ) -> Result<Option<usize>, AgentError> {
        let bin = self.settings.college_bin.to_string();
        let now = self.now();
        let Some(directory) = client
            .passkeys(&self.key(), &bin, registry_key, now)
            .await
            .map_err(sync_failure)?
        else {
            return Ok(None);
        };
        let count = self
            .db(move |store| {
                crate::registry_link::store_passkeys(store.connection_mut(), &directory, now)
            })
            .await?;
        Ok(Some(count))
    }

    /// Pulls the beneficiary list and applies it.
    pub async fn pull_beneficiaries(
        &self,
        client: &RegistryClient,
    ) -> Result<serde_json::Value, AgentError> {
        let bin = self.settings.college_bin.to_string();
        let now = self.now();
        let list = client
            .beneficiaries(&self.key(), &bin, now)
            .await
            .map_err(sync_failure)?;
        let report = self
            .db(move |store| apply_beneficiaries(store.connection_mut(), &list, now))
            .await??;
        Ok(report)
    }

    /// Seals everything pending while sending, until the queue is empty or a send
    /// fails: `sync --now`. Sealing (this process's CPU) overlaps with the registry's
    /// checking (its CPU), so a month's backlog drains at the slower of the two rates.
    pub async fn sync_now(&self) -> Result<SyncNow, AgentError> {
        // A rotation acknowledged just before a crash is finished before anything else.
        self.finish_rotation().await?;
        let sealer = self.clone();
        let mut sealing = tokio::spawn(async move { sealer.seal(true).await });
        let enrolled = self
            .db(|store| enrolment(store.connection()))
            .await?
            .ok_or_else(|| {
                AgentError::Usage(
                    "this agent is not enrolled; run `kasip-agent enroll --registry URL --code CODE` first"
                        .into(),
                )
            })?;
        let client = client(&self.settings, &enrolled.registry_url)?;
        let mut backoff = Backoff::new(Duration::from_secs(1), self.settings.sync.backoff_cap);
        let mut sent = 0;
        let stopped = match self.check_checkpoint(&client).await? {
            Step::Stopped(alert) => Some(alert),
            _ => loop {
                match self
                    .send_next(&client, &enrolled.registry_key, &mut backoff)
                    .await?
                {
                    Step::Sent => sent += 1,
                    Step::Empty if sealing.is_finished() => break None,
                    // The sealer has not caught up yet: give it the connection.
                    Step::Empty => tokio::time::sleep(Duration::from_millis(5)).await,
                    Step::Stopped(alert) => break Some(alert),
                    Step::Wait { reason, .. } => break Some(reason),
                    Step::NotEnrolled => break Some("not enrolled".into()),
                }
            },
        };
        if let Err(error) = self.settle_receipts().await {
            tracing::warn!(error = %crate::error::report(&error), "a receipt was not recorded; its batch is sent again next time");
        }
        let sealed = (&mut sealing)
            .await
            .map_err(|error| AgentError::task("the sealing task", Some(Box::new(error))))??;
        if let Err(error) = self.heartbeat(&client).await {
            tracing::warn!(error = %crate::error::report(&error), "heartbeat failed");
        }
        let broken = self
            .integrity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(outbox::IntegrityBreak::alert);
        let stopped = broken.or(stopped);
        let beneficiaries = match self.pull_beneficiaries(&client).await {
            Ok(report) => Some(report),
            Err(error) => {
                tracing::warn!(error = %crate::error::report(&error), "beneficiary pull failed");
                None
            }
        };
        let policy = match self.pull_policy(&client, &enrolled.registry_key).await {
            Ok(policy) => Some(policy),
            Err(error) => {
                tracing::warn!(error = %crate::error::report(&error), "policy pull failed; the cached policy stays in force");
                None
            }
        };
        let passkeys = match self.pull_passkeys(&client, &enrolled.registry_key).await {
            Ok(count) => count,
            Err(error) => {
                tracing::warn!(error = %crate::error::report(&error), "passkey directory pull failed; the cached one stays in use");
                None
            }
        };
        Ok(SyncNow {
            sealed,
            sent,
            stopped,
            beneficiaries,
            policy,
            passkeys,
        })
    }

    /// The service's loop: seal due batches, send, pull beneficiaries, until `stop`.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        if let Err(error) = self.finish_rotation().await {
            tracing::error!(error = %crate::error::report(&error), "cannot finish the acknowledged key rotation");
        }
        let mut session = Session {
            backoff: Backoff::new(Duration::from_secs(1), self.settings.sync.backoff_cap),
            client: None,
            checkpoint_checked: false,
            next_pull_at: 0,
            next_heartbeat_at: None,
        };
        loop {
            let wait = match self.step(&mut session).await {
                Ok(Step::Sent) => Duration::ZERO,
                Ok(Step::Wait { delay, .. }) => delay,
                Ok(Step::Empty | Step::NotEnrolled | Step::Stopped(_)) => Duration::from_secs(1),
                Err(error) => {
                    tracing::error!(error = %crate::error::report(&error), "sync step failed");
                    session.backoff.next_delay(None)
                }
            };
            if wait.is_zero() {
                if *stop.borrow() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
        }
        // Seal what is due so a clean stop leaves nothing half-decided.
        if let Err(error) = self.seal(false).await {
            tracing::warn!(error = %crate::error::report(&error), "sealing at shutdown failed");
        }
    }

    async fn step(&self, session: &mut Session) -> Result<Step, AgentError> {
        self.seal(false).await?;
        let Some(enrolled) = self.db(|store| enrolment(store.connection())).await? else {
            return Ok(Step::NotEnrolled);
        };
        // One client (its TLS set-up and kept-alive connections) per registry URL;
        // re-enrolment elsewhere makes a new one.
        let client = match session.client.take() {
            Some(client) if client.base_url() == enrolled.registry_url => client,
            _ => client(&self.settings, &enrolled.registry_url)?,
        };
        let client = session.client.insert(client);
        if !session.checkpoint_checked {
            match self.check_checkpoint(client).await? {
                Step::Sent => session.checkpoint_checked = true,
                other => return Ok(other),
            }
        }
        let now = self.now();
        let instant = std::time::Instant::now();
        if session.next_heartbeat_at.is_none_or(|at| instant >= at) {
            session.next_heartbeat_at = Some(
                instant + Duration::from_secs(self.settings.sync.heartbeat_secs.unsigned_abs()),
            );
            if let Err(error) = self.heartbeat(client).await {
                tracing::warn!(error = %crate::error::report(&error), "heartbeat failed; will try again at the next interval");
            }
        }
        if now >= session.next_pull_at {
            session.next_pull_at = now + self.settings.sync.beneficiary_pull_secs;
            if let Err(error) = self.pull_beneficiaries(client).await {
                tracing::warn!(error = %crate::error::report(&error), "beneficiary pull failed; will try again at the next interval");
                session.next_pull_at = now + 60;
            }
            if let Err(error) = self.pull_policy(client, &enrolled.registry_key).await {
                tracing::warn!(error = %crate::error::report(&error), "policy pull failed; the cached policy stays in force");
                session.next_pull_at = now + 60;
            }
            if let Err(error) = self.pull_passkeys(client, &enrolled.registry_key).await {
                tracing::warn!(error = %crate::error::report(&error), "passkey directory pull failed; the cached one stays in use");
                session.next_pull_at = now + 60;
            }
        }
        self.send_next(client, &enrolled.registry_key, &mut session.backoff)
            .await
    }
}

/// What the service's loop keeps between steps.
struct Session {
    backoff: Backoff,
    client: Option<RegistryClient>,
    checkpoint_checked: bool,
    next_pull_at: i64,
    /// A cadence, not evidence: measured on the monotonic clock, so a clock stepped (or a
    /// test clock held still) neither stops nor floods heartbeats.
    next_heartbeat_at: Option<std::time::Instant>,
}

/// What `sync --now` did.
#[derive(Debug)]
pub struct SyncNow {
    pub sealed: usize,
    pub sent: usize,
    /// Why sending stopped early, if it did.
    pub stopped: Option<String>,
    pub beneficiaries: Option<serde_json::Value>,
    /// The national policy pulled, if the pull succeeded.
    pub policy: Option<kasip_core::wire::Policy>,
    /// Students with a passkey in the directory pulled, if the registry enrols passkeys.
    pub passkeys: Option<usize>,
}

pub use crate::registry_link::apply_beneficiaries;
