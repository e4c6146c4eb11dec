//! The agent's web server: shared state, routes, TLS and graceful shutdown.
//!
//! `serve` takes an already-bound listener and a shutdown future, so tests bind port 0
//! and stop it themselves; `main` passes SIGTERM/Ctrl-C.

mod admin;
mod assets;
mod charts;
mod display;
mod error;
mod extract;
mod kiosk;
mod me;
mod page;
mod pass;
mod phone;
mod staff;
mod throttle;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kasip_core::ClassroomToken;

use crate::clock::Clock;
use crate::config::Settings;
use crate::error::AgentError;
use crate::marks::MarkWriter;
use crate::store::Store;
use kasip_core::Text;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Reads, sign-in sessions and bindings; reached only inside `spawn_blocking`.
    db: Arc<Mutex<Store>>,
    /// The single writer of attendance marks (group commit).
    writer: MarkWriter,
    /// The month's heavy work, on a thread and connection of its own (`with_reports`).
    reports: Arc<Reports>,
    /// Validated configuration, read once at start.
    settings: Arc<Settings>,
    /// The agent's clock: it alone decides the current classroom code.
    clock: Arc<dyn Clock>,
    /// Failed guesses per (target, client) and per client: sign-in, binding, typed
    /// codes, kiosk enrolment.
    throttle: Arc<throttle::Throttle>,
    /// Check-in intents of phones that had to bind first: id → (token, seen fresh at).
    intents: Arc<Mutex<HashMap<String, (ClassroomToken, i64)>>>,
    /// Each shown lesson's current code, rendered once per rotation step.
    shown_codes: Arc<Mutex<HashMap<i64, Arc<display::ShownCode>>>>,
    /// Discipline, group and room per lesson for confirmation pages: read once per lesson
    /// instead of once per check-in (a timetable re-import shows after a restart).
    lesson_labels: Arc<Mutex<HashMap<i64, crate::lessons::LessonLabel>>>,
    /// Base URL printed into classroom QR codes; becomes `https://<name>` once the
    /// agent serves a certificate for its name (`use_hostname`).
    public_url: Arc<std::sync::RwLock<Arc<String>>>,
    /// Cookies carry `Secure` when the agent speaks HTTPS.
    secure_cookies: bool,
    /// Where month-close statements and reports are written and the key is read.
    data_dir: Arc<crate::config::DataDir>,
    /// The dashboard's last red-flag computation.
    red_flags: Arc<admin::RedFlagCache>,
    /// Request latencies for `/metrics`.
    latencies: Arc<crate::metrics::RequestLatencies>,
    /// Staff password checks, one at a time off the database lock.
    passwords: crate::staff::PasswordChecker,
    /// The latest time read from the clock: sessions are judged by it, so a clock stepped
    /// back does not bring an expired one back.
    clock_high_water: Arc<std::sync::atomic::AtomicI64>,
    /// Turns true when the server stops: endless answers (the projectors' feeds) end
    /// then, instead of holding the graceful shutdown for its full 10 s.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl AppState {
    #[allow(clippy::too_many_arguments)] // the service's parts, each made by `serve`
    pub fn new(
        db: Store,
        reports: Store,
        writer: MarkWriter,
        settings: Arc<Settings>,
        clock: Arc<dyn Clock>,
        public_url: String,
        secure_cookies: bool,
        data_dir: crate::config::DataDir,
    ) -> Result<Self, AgentError> {
        let passwords = crate::staff::PasswordChecker::start()?;
        let high_water = crate::staff::clock_high_water(db.connection())
            .map_err(|source| AgentError::from(db.error(source)))?;
        Ok(Self {
            clock_high_water: Arc::new(std::sync::atomic::AtomicI64::new(high_water)),
            db: Arc::new(Mutex::new(db)),
            reports: Arc::new(Reports::start(reports)?),
            writer,
            settings,
            clock,
            throttle: Arc::default(),
            intents: Arc::new(Mutex::new(HashMap::new())),
            lesson_labels: Arc::new(Mutex::new(HashMap::new())),
            shown_codes: Arc::default(),
            public_url: Arc::new(std::sync::RwLock::new(Arc::new(public_url))),
            secure_cookies,
            data_dir: Arc::new(data_dir),
            red_flags: Arc::default(),
            latencies: Arc::default(),
            passwords,
            stopping: tokio::sync::watch::Sender::new(false),
        })
    }

    pub fn now(&self) -> i64 {
        self.clock.now_unix()
    }

    /// Resolves once the server is stopping.
    pub async fn stopping(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// The base URL classroom codes carry now.
    pub fn public_url(&self) -> Arc<String> {
        self.public_url
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Classroom codes carry `https://<hostname>[:port]` from the next rotation on:
    /// the agent now serves a publicly trusted certificate for that name.
    pub fn use_hostname(&self, hostname: &str, port: u16) {
        let url = if port == 443 {
            format!("https://{hostname}")
        } else {
            format!("https://{hostname}:{port}")
        };
        *self
            .public_url
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(url);
        self.shown_codes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// The clock, never earlier than any time read before (in this run or, through
    /// `staff::keep_clock_high_water`, a previous one): what sessions are judged by.
    pub fn clock_high_water(&self) -> i64 {
        let now = self.now();
        let before = self
            .clock_high_water
            .fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        before.max(now)
    }

    /// Runs `work` against the database on the blocking pool: the connection of the
    /// quick reads (check-ins' pages, the projector, sign-in).
    async fn with_db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, AgentError> + Send + 'static,
    ) -> Result<T, AgentError> {
        on_connection(Arc::clone(&self.db), work).await
    }

    /// `with_db` for the month's heavy work (dashboard, red flags, exports, month close):
    /// seconds of it never hold up a projector or a check-in.
    async fn with_reports<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, AgentError> + Send + 'static,
    ) -> Result<T, AgentError> {
        self.reports.run(work).await
    }
}

type ReportJob = Box<dyn FnOnce(&Store) + Send>;

/// One thread with a connection of its own that runs the month's heavy work, one job at
/// a time, at a lower CPU priority: a dashboard computing for seconds neither holds the
/// quick reads' connection nor takes a core a check-in or a projector's poll is waiting
/// for (BENCHMARKS.md: the display's p99 while dashboards compute).
struct Reports {
    jobs: std::sync::mpsc::Sender<ReportJob>,
}

impl Reports {
    fn start(store: Store) -> Result<Self, AgentError> {
        let (jobs, receiver) = std::sync::mpsc::channel::<ReportJob>();
        std::thread::Builder::new()
            .name("reports".into())
            .spawn(move || {
                crate::service::lower_thread_priority();
                for job in receiver {
                    job(&store);
                }
            })
            .map_err(AgentError::server("cannot start the reports thread"))?;
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, AgentError> + Send + 'static,
    ) -> Result<T, AgentError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |store| drop(reply.send(work(store)))))
            .map_err(|_| AgentError::task("the reports thread (it has stopped)", None))?;
        answer
            .await
            .map_err(|_| AgentError::task("the reports thread (a job failed)", None))?
    }
}

/// Runs `work` on the blocking pool with `db`'s connection, one task at a time.
async fn on_connection<T: Send + 'static>(
    db: Arc<Mutex<Store>>,
    work: impl FnOnce(&Store) -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(move || {
        let store = db.lock().map_err(|_| {
            AgentError::task("a reader before this one (the lock is poisoned)", None)
        })?;
        work(&store)
    })
    .await
    .map_err(|error| AgentError::task("the database task", Some(Box::new(error))))?
}

/// Request bodies are forms and small JSON: 64 KiB is generous, 20 MB is refused.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A client has this long to send a request's headers, and again its body; an idle
/// kept-alive connection is closed after it too. Phones send a request in milliseconds;
/// a slow client (slowloris) cannot hold a connection, and so a file descriptor, longer.
pub const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(15);

pub fn router(state: AppState) -> Router {
    let latencies = Arc::clone(&state.latencies);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ping", get(|| async { "pong\n" }))
        .route("/", get(staff::home))
        .route("/login", get(staff::login_form).post(staff::login))
        .route("/logout", post(staff::logout))
        .route("/teacher", get(staff::teacher_page))
        .route("/teacher/lessons/{id}", get(staff::lesson_page))
        .route("/me", get(me::my_month))
        .route("/teacher/history", get(staff::history_page))
        .route("/teacher/history/student", get(staff::student_history_page))
        .route("/teacher/lessons/{id}/open", post(staff::open_lesson))
        .route("/teacher/lessons/{id}/close", post(staff::close_lesson))
        .route("/teacher/lessons/{id}/marks", post(staff::manual_mark))
        .route("/teacher/lessons/{id}/grades", post(staff::record_grade))
        .route("/admin/binding-codes", post(staff::issue_binding_code))
        .route(
            "/staff/binding-slips",
            get(staff::binding_slips_form).post(staff::binding_slips),
        )
        .route("/admin", get(admin::dashboard))
        .route("/admin/export/{table}", get(admin::export))
        .route(
            "/admin/month-close",
            get(admin::month_close_page).post(admin::close_month),
        )
        .route(
            "/admin/month-close/{month}/{kind}",
            get(admin::month_close_file),
        )
        .route("/admin/group", get(admin::group_page))
        .route("/admin/student", get(admin::student_page))
        .route("/admin/search", get(admin::search))
        .route("/display/{id}", get(display::display_page))
        .route("/display/{id}/current", get(display::display_current))
        .route("/display/{id}/events", get(display::display_events))
        .route("/bind", get(phone::bind_form).post(phone::bind))
        .route("/pass", get(pass::page))
        .route("/pass.js", get(assets::pass))
        .route("/style.css", get(assets::style))
        .route("/checkin.js", get(assets::checkin))
        .route("/keys.js", get(assets::keys))
        .route("/display.js", get(assets::display))
        .route("/roster.js", get(assets::roster))
        .route("/pass/key", post(pass::register_key))
        .route("/kiosk/enroll", post(kiosk::enrol))
        .route("/kiosk/keys", get(kiosk::keys))
        .route("/kiosk/scans", post(kiosk::scans))
        .route("/c", get(phone::typed_form).post(phone::typed_check_in))
        .route(
            "/c/{token}",
            get(phone::check_in_page).post(phone::check_in),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            latencies,
            crate::metrics::time_requests,
        ))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(keep_language))
        .layer(axum::middleware::from_fn(read_body_in_time))
        .layer(axum::middleware::from_fn_with_state(
            state.secure_cookies,
            security_headers,
        ))
        .with_state(state)
}

/// What every answer carries. Check-in URLs hold tokens and pages hold personal data:
/// no referrer leaves, nothing is cached unless the handler says it may be (assets),
/// nothing frames a page, and no inline script or style runs.
async fn security_headers(
    axum::extract::State(https): axum::extract::State<bool>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::header::{self, HeaderValue};
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The reader's choice of language is kept: a `?lang=` sets the `lang` cookie for a year,
/// so the next page needs no parameter; and the language links of an HTML page keep the
/// rest of its address (`/admin/student?iin=…&lang=kk`), which they used to drop,
/// leaving a page without the parameter it needs.
async fn keep_language(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header;
    let query = request.uri().query().unwrap_or_default().to_owned();
    let chosen = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("lang="))
        .and_then(kasip_core::Lang::from_code);
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("lang="))
        .collect();
    let mut response = next.run(request).await;
    if let Some(lang) = chosen {
        response.headers_mut().append(
            header::SET_COOKIE,
            page::set_cookie("lang", lang.code(), 365 * 86_400, false),
        );
    }
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if rest.is_empty() || !is_html {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_PAGE_BYTES).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "page too large").into_response();
    };
    // The query as the browser sent it (percent-encoded), escaped for an attribute.
    let kept = page::escape_attribute(&rest.join("&"));
    let html = String::from_utf8_lossy(&bytes)
        .replace("href=\"?lang=", &format!("href=\"?{kept}&amp;lang="));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(html))
}

/// The largest page `keep_language` rewrites (the dashboard of a large college is a few
/// hundred kilobytes).
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Reads the whole body before any handler runs, so that every route, including those
/// that ignore their body, refuses one larger than `MAX_BODY_BYTES` (413) or one sent
/// too slowly (408); nothing is recorded for either.
async fn read_body_in_time(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let lang = page::language(None, request.headers());
    let too_large = || {
        error::WebError::refused(lang, StatusCode::PAYLOAD_TOO_LARGE, Text::ErrorTooLarge)
            .into_response()
    };
    let declared_length = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let (parts, mut body) = request.into_parts();
    if declared_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        discard_body(&mut body).await;
        return too_large();
    }
    let limited = http_body_util::Limited::new(&mut body, MAX_BODY_BYTES);
    let collected = http_body_util::BodyExt::collect(limited);
    let bytes = match tokio::time::timeout(CLIENT_READ_TIMEOUT, collected).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            discard_body(&mut body).await;
            return too_large();
        }
        Err(_) => {
            return error::WebError::refused(lang, StatusCode::REQUEST_TIMEOUT, Text::ErrorTooSlow)
                .into_response()
        }
    };
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

/// What is read and thrown away of a body over the limit before the 413 goes out. A
/// client still writing when the server closes the connection gets a broken pipe, not
/// the answer (the kiosk test's 70 kB upload did, now and then); past this much the
/// connection is closed all the same.
const DISCARDED_BODY_BYTES: usize = 1024 * 1024;

/// Reads up to `DISCARDED_BODY_BYTES` of `body` within the read timeout, keeping none.
async fn discard_body(body: &mut axum::body::Body) {
    use http_body_util::BodyExt;
    let mut read = 0;
    let _ = tokio::time::timeout(CLIENT_READ_TIMEOUT, async {
        while read <= DISCARDED_BODY_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |data| data.len()),
                _ => break,
            }
        }
    })
    .await;
}

async fn not_found(extract::PageLang(lang): extract::PageLang) -> error::WebError {
    error::WebError::refused(lang, StatusCode::NOT_FOUND, Text::ErrorNotFound)
}

/// `listener` with TCP_NODELAY on every connection it accepts (see `serve`).
fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    })
}

/// `GET /metrics` (Prometheus text format) on its own listener.
pub async fn serve_metrics(listener: tokio::net::TcpListener, state: AppState) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(error) = axum::serve(no_delay(listener), app).await {
        tracing::error!(error = %crate::error::report(&error), "the metrics listener stopped");
    }
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let now = state.now();
    let (settings, data_dir, latencies) = (
        Arc::clone(&state.settings),
        Arc::clone(&state.data_dir),
        Arc::clone(&state.latencies),
    );
    let rendered = state
        .with_db(move |store| {
            crate::metrics::render(store.connection(), &settings, &data_dir, &latencies, now)
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    match rendered {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(error = %crate::error::report(&error), "metrics unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

impl AppState {
    /// Whether the agent can read its database: the health check and the watchdog's.
    pub async fn probe(&self) -> Result<(), AgentError> {
        self.with_db(|store| {
            store
                .probe()
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await
    }
}

/// 200 when the agent can read its database, 503 otherwise.
async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.probe().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(error) => {
            tracing::error!(error = %crate::error::report(&error), "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

/// How the listener speaks.
pub enum Transport {
    Https(axum_server::tls_rustls::RustlsConfig),
    /// Plain HTTP: loopback only (checked by the caller).
    PlainHttp,
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish (up to 10 s), and returns.
pub async fn serve(
    listener: std::net::TcpListener,
    transport: Transport,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let stopping = state.stopping.clone();
    // Connect info: the throttles count guesses by the peer's address.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.send_replace(true);
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    // HTTP/1.1 only (see `https_only_http1`), and no more than `CLIENT_READ_TIMEOUT` to
    // send a request's headers or to start the next one on a kept-alive connection.
    // TCP_NODELAY on every accepted socket: without it Nagle's algorithm and the phone's
    // delayed ACK held a TLS handshake's or an answer's last small write for ~40 ms, on
    // every scan (BENCHMARKS.md).
    let no_delay = axum_server::accept::TcpConfigAcceptor::new(
        axum_server::accept::TcpSocketConfig::new().nodelay(true),
    );
    let result = match transport {
        Transport::Https(config) => {
            let mut server = axum_server::from_tcp_rustls(listener, config)
                .map_err(AgentError::server("cannot serve HTTPS on the listener"))?
                .map(|tls| tls.acceptor(no_delay))
                .handle(handle)
                .http1_only();
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(CLIENT_READ_TIMEOUT));
            server.serve(app).await
        }
        Transport::PlainHttp => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(AgentError::server("cannot serve HTTP on the listener"))?
                .acceptor(no_delay)
                .handle(handle)
                .http1_only();
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(CLIENT_READ_TIMEOUT));
            server.serve(app).await
        }
    };
    result.map_err(AgentError::server("the web server stopped"))
}

/// The stop signals' future (`kasip_certs::process::shutdown_signal`), installed now.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, AgentError> {
    kasip_certs::process::shutdown_signal()
        .map_err(|(what, source)| AgentError::server(what)(source))
}
