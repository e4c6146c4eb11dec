//! What every handler of the registry shares: the stores (one per database connection),
//! the clock, the upload slots and the sign-in throttle; and the JSON error answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use kasip_core::wire::ErrorAnswer;

use crate::store::RegistryStore;

/// Batches read and verified at once. Each holds its body, payload and parsed records
/// (a few times its size, up to `MAX_JWS_BYTES`) while it is worked on; the others wait
/// with their bodies unread, in the kernel's buffers. Sixteen 30 MiB batches at once
/// once took the registry to 5.2 GiB.
pub const CONCURRENT_BATCHES: usize = 2;
/// How long a request waits for a free database connection before it is answered 503
/// (the agent retries): a full pool means the database is the bottleneck, and queueing
/// more work in front of it only makes every answer later.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// The registry's connections: SQLite has one (its one writer), PostgreSQL as many as
/// `--database-connections`. A request takes one for the time of its work.
struct StorePool {
    idle: Mutex<Vec<RegistryStore>>,
    slots: tokio::sync::Semaphore,
    /// Opens a store again in place of one whose connection was lost (a restarted or
    /// failed-over PostgreSQL), so that the pool heals without a restart.
    reopen: Option<Reopen>,
}

/// How a serving registry opens one more store like the others.
pub type Reopen = Box<dyn Fn() -> Result<RegistryStore, crate::store::RegistryError> + Send + Sync>;

#[derive(Clone)]
pub struct RegistryState {
    stores: Arc<StorePool>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    pub(crate) batch_slots: Arc<tokio::sync::Semaphore>,
    /// Wrong passwords per login, for the sign-in throttle (`pages::log_in`).
    pub(crate) sign_in_failures: Arc<Mutex<crate::accounts::Failures>>,
    /// The agents' DNS zone, when this registry serves one (`--agents-zone`).
    pub(crate) zone: Option<Arc<crate::dns::AgentsZone>>,
    /// The operator's DNS server that holds the zone too (RFC 2136), when configured.
    pub(crate) zone_updates: Option<Arc<crate::dns_update::ZoneUpdates>>,
    /// The passkeys' relying party, when students enrol passkeys here.
    pub(crate) relying_party: Option<crate::store::RelyingParty>,
}

impl RegistryState {
    pub fn new(store: RegistryStore, clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> Self {
        Self::with_connections(vec![store], clock)
    }

    /// Serves with several stores, each on its own database connection.
    pub fn with_connections(
        stores: Vec<RegistryStore>,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Self {
        Self {
            stores: Arc::new(StorePool {
                slots: tokio::sync::Semaphore::new(stores.len()),
                idle: Mutex::new(stores),
                reopen: None,
            }),
            clock,
            batch_slots: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_BATCHES)),
            sign_in_failures: Arc::default(),
            zone: None,
            zone_updates: None,
            relying_party: None,
        }
    }

    /// Replaces a store whose connection is lost with one `reopen` makes. Only before
    /// serving (the pool is not shared yet).
    pub fn with_reopen(mut self, reopen: Reopen) -> Self {
        if let Some(pool) = Arc::get_mut(&mut self.stores) {
            pool.reopen = Some(reopen);
        }
        self
    }

    /// Enrols students' passkeys for `relying_party` and serves each college's directory.
    pub fn with_relying_party(mut self, relying_party: crate::store::RelyingParty) -> Self {
        self.relying_party = Some(relying_party);
        self
    }

    /// Sends every change of a name to an operator's DNS server too (RFC 2136).
    pub fn with_zone_updates(mut self, updates: Arc<crate::dns_update::ZoneUpdates>) -> Self {
        self.zone_updates = Some(updates);
        self
    }

    /// Serves names in `zone`: enrolment answers carry them, `POST /v1/names` changes them.
    pub fn with_zone(mut self, zone: Arc<crate::dns::AgentsZone>) -> Self {
        self.zone = Some(zone);
        self
    }

    pub(crate) fn now(&self) -> i64 {
        (self.clock)()
    }

    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut RegistryStore) -> T + Send + 'static,
    ) -> Result<T, Response<Body>> {
        let Ok(Ok(slot)) = tokio::time::timeout(POOL_WAIT, self.stores.slots.acquire()).await
        else {
            tracing::warn!("every database connection stayed busy for {POOL_WAIT:?}");
            return Err(error_response_503());
        };
        let pool = Arc::clone(&self.stores);
        let store = pool
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let Some(mut store) = store else {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no database connection",
            ));
        };
        let done = tokio::task::spawn_blocking(move || {
            let answer = work(&mut store);
            if store.connection_lost() {
                match pool.reopen.as_ref().map(|reopen| reopen()) {
                    Some(Ok(fresh)) => {
                        tracing::warn!("a database connection was lost; opened a new one");
                        store = fresh;
                    }
                    Some(Err(error)) => {
                        tracing::error!(%error, "a database connection was lost and cannot be opened again yet; the next request tries again");
                    }
                    None => {}
                }
            }
            pool.idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(store);
            answer
        })
        .await;
        match done {
            Ok(answer) => {
                drop(slot);
                Ok(answer)
            }
            // The store went down with the work: its slot goes too, so that no request
            // waits for a connection that is not coming back.
            Err(_) => {
                slot.forget();
                Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "registry task failed",
                ))
            }
        }
    }
}

impl RegistryState {
    /// `with_store` for work that can fail: a failure of the store is `internal`'s 503.
    pub(crate) async fn try_with_store<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
        &self,
        work: impl FnOnce(&mut RegistryStore) -> Result<T, E> + Send + 'static,
    ) -> Result<T, Response<Body>> {
        self.with_store(work).await?.map_err(internal)
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    (
        status,
        Json(ErrorAnswer {
            error: message.to_owned(),
            expected_seq: None,
        }),
    )
        .into_response()
}

pub(crate) fn internal(error: impl std::fmt::Display) -> Response<Body> {
    tracing::error!(%error, "registry storage failed");
    error_response_503()
}

fn error_response_503() -> Response<Body> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the registry cannot store right now; retry",
    );
    response
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("5"));
    response
}
