//! The HTTP daemon: routes, shared state, graceful shutdown.
//!
//! `run` takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! stop it themselves; `main` passes SIGTERM/Ctrl-C.

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::commands::{local_today, RosterCounts};
use crate::config::Settings;
use crate::error::AgentError;
use crate::i18n::{text, Lang};
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database; handlers reach it only inside `spawn_blocking` (rusqlite blocks).
    store: Arc<Mutex<Store>>,
    /// Validated configuration, read once at start.
    settings: Arc<Settings>,
}

impl AppState {
    /// Runs `work` against the store on the blocking pool.
    async fn with_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, AgentError> + Send + 'static,
    ) -> Result<T, AgentError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let store = store.lock().map_err(|_| {
                AgentError::Server(
                    "the database lock was poisoned by a crash in another request".into(),
                )
            })?;
            work(&store)
        })
        .await
        .map_err(|error| AgentError::Server(format!("database task failed: {error}")))?
    }
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and closes the
/// database (checkpointing its WAL).
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let state = AppState {
        store: Arc::new(Mutex::new(store)),
        settings: Arc::new(settings),
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(home))
        .with_state(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|error| AgentError::Server(error.to_string()))?;
    // Every connection has finished, so this is the last handle to the store.
    let store = Arc::into_inner(state.store)
        .ok_or_else(|| AgentError::Server("database still in use after shutdown".into()))?
        .into_inner()
        .map_err(|_| AgentError::Server("the database lock was poisoned".into()))?;
    store.close()?;
    Ok(())
}

/// 200 when the agent can read its database, 503 otherwise.
async fn healthz(State(state): State<AppState>) -> Response {
    let probe = state
        .with_store(|store| {
            store
                .connection()
                .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    match probe {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(error) => {
            tracing::error!(%error, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The landing page: the college and what the agent holds, in the reader's language.
async fn home(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::negotiate(
        query.lang.as_deref(),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok()),
    );
    let today = local_today(&state.settings);
    let counts = match state
        .with_store(move |store| RosterCounts::read(store, today))
        .await
    {
        Ok(counts) => counts,
        Err(error) => {
            tracing::error!(%error, "home page could not read the roster");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response();
        }
    };
    let rows = [
        ("status.students", counts.students),
        ("status.beneficiaries", counts.beneficiaries),
        ("status.groups", counts.groups),
        ("status.teachers", counts.teachers),
        ("status.sites", counts.sites),
        ("status.lessons_today", counts.lessons_today),
    ]
    .iter()
    .map(|(key, value)| format!("<tr><th>{}</th><td>{value}</td></tr>", text(lang, key)))
    .collect::<String>();
    let switcher = Lang::ALL
        .iter()
        .map(|choice| format!("<a href=\"?lang={0}\">{0}</a>", choice.code()))
        .collect::<Vec<_>>()
        .join(" · ");
    let page = format!(
        "<!doctype html><html lang=\"{code}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><h1>{title}</h1><h2>{college}</h2>\
         <p>{running}</p><table>{rows}</table><p>{language}: {switcher}</p></body></html>",
        code = lang.code(),
        title = text(lang, "agent.title"),
        college = escape_html(&state.settings.college_name),
        running = text(lang, "agent.running"),
        language = text(lang, "language"),
    );
    Html(page).into_response()
}

/// Installs the SIGTERM (systemd's stop) and SIGINT (Ctrl-C) handlers now, and returns a
/// future that resolves on either. Call it before announcing readiness: a signal that
/// arrives before the handler exists would kill the process without a clean close.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, AgentError> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|error| AgentError::Server(format!("cannot handle {name}: {error}")))
    };
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("interrupt received, shutting down"),
        }
    })
}
