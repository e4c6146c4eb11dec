//! The Registrar's pages and the read APIs behind a sign-in: colleges listed by open
//! findings, each college's months (the registry's own coverage beside the stated one)
//! and findings, each finding's evidence and the history of its judgements. In kk, ru
//! and en from the one catalog (`core/text/`); the choice sticks in a `lang` cookie.

use askama::Template;
use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use kasip_core::{per_mille_text, Lang, Text};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{Role, Session};
use crate::state::{error, internal, RegistryState};
use crate::store::FindingRow;

const SESSION_COOKIE: &str = "kasip_registry_session";

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/", get(colleges_page))
        .route("/style.css", get(style))
        .route("/passkey", get(passkey_page))
        .route("/passkey.js", get(passkey_script))
        .route("/login", get(login_page).post(log_in))
        .route("/logout", post(log_out))
        .route("/colleges/{bin}", get(college_page))
        .route("/findings/{id}", get(finding_page))
        .route("/findings/{id}/status", post(judge))
        .route("/v1/findings", get(findings_json))
        .layer(axum::middleware::map_response(security_headers))
}

/// What every page and read API answer carries: they hold personal data and evidence.
/// No referrer leaves, nothing is cached, nothing frames a page, and no inline script or
/// style runs (the style sheet is `/style.css`).
async fn security_headers(mut response: Response<Body>) -> Response<Body> {
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
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn style() -> Response<Body> {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../templates/style.css"),
    )
        .into_response()
}

async fn passkey_script() -> Response<Body> {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../templates/passkey.js"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "passkey.html")]
struct PasskeyPage {
    chrome: Chrome,
    offered: bool,
}

/// A student's passkey enrolment: no sign-in, the one-time code proves who they are.
async fn passkey_page(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
) -> Response<Body> {
    let lang = language(&headers, query.lang.as_deref());
    render(
        &PasskeyPage {
            chrome: Chrome::new(lang, "/passkey", None),
            offered: state.relying_party.is_some(),
        },
        lang,
    )
}

/// What every page shows around its content: the language switcher (keeping the path)
/// and, when signed in, who and the sign-out form with its CSRF token.
struct Chrome {
    lang: Lang,
    path: String,
    signed_in_as: Option<String>,
    csrf: String,
}

impl Chrome {
    fn new(lang: Lang, path: &str, session: Option<&Session>) -> Self {
        Self {
            lang,
            path: path.to_owned(),
            signed_in_as: session.map(|session| {
                lang.fill(
                    Text::RegistrySignedInAs,
                    &[("login", &session.login), ("role", session.role.as_str())],
                )
            }),
            csrf: session
                .map(|session| session.csrf.clone())
                .unwrap_or_default(),
        }
    }
}

/// A rendered page with the `lang` cookie that keeps the reader's choice.
fn render(template: &impl Template, lang: Lang) -> Response<Body> {
    let mut response = match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(failure) => return internal(failure),
    };
    if let Ok(value) = format!(
        "lang={}; Path=/; Max-Age=31536000; SameSite=Lax",
        lang.code()
    )
    .parse()
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    login: String,
    message: Option<String>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    chrome: Chrome,
    message: String,
}

/// A month as a cell shows it: the registry's coverage, its verdict, and the college's
/// own figure when it differs.
struct MonthCell {
    month: String,
    coverage: String,
    compliant: bool,
    stated_differs: Option<String>,
    beneficiaries: u64,
    qr_tracked: u64,
}

impl MonthCell {
    fn of(lang: Lang, figures: &crate::audit::MonthFigures) -> Self {
        Self {
            month: figures.month.clone(),
            coverage: per_mille_text(figures.coverage_per_mille),
            compliant: figures.compliant,
            stated_differs: match figures.stated_coverage_per_mille {
                Some(stated) if Some(stated) != figures.coverage_per_mille => Some(lang.fill(
                    Text::RegistryCoverageStated,
                    &[("coverage", &per_mille_text(Some(stated)))],
                )),
                _ => None,
            },
            beneficiaries: figures.beneficiaries,
            qr_tracked: figures.qr_tracked,
        }
    }
}

struct CollegeRow {
    bin: String,
    name: String,
    open: usize,
    last_batch: String,
    month: Option<MonthCell>,
}

#[derive(Template)]
#[template(path = "colleges.html")]
struct CollegesPage {
    chrome: Chrome,
    colleges: Vec<CollegeRow>,
}

/// A finding as the pages show it: labels in the reader's language.
struct FindingLine {
    id: i64,
    kind: String,
    severity: &'static str,
    /// Critical and high findings are shown in red.
    grave: bool,
    status: &'static str,
    open: bool,
    month: String,
    detail: String,
    seen: String,
}

impl FindingLine {
    fn of(lang: Lang, finding: &FindingRow) -> Self {
        Self {
            id: finding.id,
            kind: kind_label(lang, &finding.kind),
            severity: lang.text(match finding.severity.as_str() {
                "critical" => Text::RegistrySeverityCritical,
                "high" => Text::RegistrySeverityHigh,
                _ => Text::RegistrySeverityMedium,
            }),
            grave: finding.severity != "medium",
            status: status_label(lang, &finding.status),
            open: finding.status == "open",
            month: finding.month.clone().unwrap_or_else(|| "—".to_owned()),
            detail: finding.detail.clone(),
            seen: when(finding.at),
        }
    }
}

#[derive(Template)]
#[template(path = "college.html")]
struct CollegePage {
    chrome: Chrome,
    bin: String,
    name: String,
    months: Vec<MonthCell>,
    findings: Vec<FindingLine>,
    /// Check-ins the registry verified by passkey, per month, newest first.
    passkey_months: Vec<PasskeyMonth>,
    passkey_required: bool,
}

struct PasskeyMonth {
    month: String,
    check_ins: u64,
    verified: u64,
    share: String,
}

struct EvidenceRecord {
    body: Option<String>,
    missing: String,
}

#[derive(Template)]
#[template(path = "finding.html")]
struct FindingPage {
    chrome: Chrome,
    id: i64,
    bin: String,
    college: String,
    finding: FindingLine,
    records: Vec<EvidenceRecord>,
    history: Vec<String>,
    auditor: bool,
    /// (value, label, selected) of the status choices.
    statuses: Vec<(&'static str, &'static str, bool)>,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The page's language: `?lang=` (remembered), then the cookie, then the browser's.
fn language(headers: &HeaderMap, chosen: Option<&str>) -> Lang {
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok());
    Lang::negotiate(chosen.or_else(|| cookie(headers, "lang")), accept)
}

/// The signed-in person, if the session cookie names a current session.
pub async fn signed_in(state: &RegistryState, headers: &HeaderMap) -> Option<Session> {
    let token = cookie(headers, SESSION_COOKIE)?.to_owned();
    let now = state.now();
    state
        .with_store(move |store| store.session(&token, now))
        .await
        .ok()?
        .ok()?
}

fn kind_label(lang: Lang, kind: &str) -> String {
    let key = format!("registry.kind.{kind}");
    Text::ALL
        .iter()
        .find(|text| text.key() == key)
        .map_or_else(|| kind.to_owned(), |text| lang.text(*text).to_owned())
}

fn status_label(lang: Lang, status: &str) -> &'static str {
    lang.text(match status {
        "explained" => Text::RegistryStatusExplained,
        "confirmed" => Text::RegistryStatusConfirmed,
        _ => Text::RegistryStatusOpen,
    })
}

/// UTC date and time of a Unix time, `YYYY-MM-DD HH:MM UTC`.
fn when(unix: i64) -> String {
    let date = kasip_core::Date::from_days_since_epoch(unix.div_euclid(86_400));
    let minutes = unix.rem_euclid(86_400) / 60;
    format!("{date} {:02}:{:02} UTC", minutes / 60, minutes % 60)
}

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

fn login_page_with(lang: Lang, login: &str, message: Option<&str>) -> Response<Body> {
    render(
        &LoginPage {
            chrome: Chrome::new(lang, "/login", None),
            login: login.to_owned(),
            message: message.map(str::to_owned),
        },
        lang,
    )
}

async fn login_page(headers: HeaderMap, Query(query): Query<LangQuery>) -> Response<Body> {
    let lang = language(&headers, query.lang.as_deref());
    login_page_with(lang, "", None)
}

#[derive(Deserialize)]
struct LogIn {
    login: String,
    password: String,
}

async fn log_in(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Form(form): Form<LogIn>,
) -> Response<Body> {
    let lang = language(&headers, None);
    let login = form.login.trim().to_owned();
    let now = state.now();
    let locked = state
        .sign_in_failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .locked_for(&login, now);
    if let Some(wait) = locked {
        tracing::warn!(login = %login, "registry sign-in throttled");
        let mut response = login_page_with(
            lang,
            &login,
            Some(&lang.fill(
                Text::RegistryThrottled,
                &[("minutes", &(wait / 60 + 1).to_string())],
            )),
        );
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        if let Ok(value) = wait.max(1).to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let lookup = login.clone();
    let stored = match state
        .try_with_store(move |store| store.credentials(&lookup))
        .await
    {
        Ok(stored) => stored,
        Err(response) => return response,
    };
    // argon2 off the store's lock; an unknown login is checked against a decoy so it
    // takes as long to refuse as a wrong password.
    let password = form.password;
    let matches = tokio::task::spawn_blocking(move || match &stored {
        Some((hash, _)) => crate::accounts::password_matches(hash, &password),
        None => {
            crate::accounts::password_matches(crate::accounts::decoy_hash(), &password);
            false
        }
    })
    .await
    .unwrap_or(false);
    if !matches {
        tracing::warn!(login = %login, "registry sign-in refused");
        state
            .sign_in_failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .failed(&login, now);
        let mut response = login_page_with(lang, &login, Some(lang.text(Text::RegistryWrong)));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    state
        .sign_in_failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .succeeded(&login);
    let owner = login.clone();
    let token = match state
        .try_with_store(move |store| store.open_session(&owner, now))
        .await
    {
        Ok(Some(token)) => token,
        Ok(None) => return internal("the system random generator failed"),
        Err(response) => return response,
    };
    tracing::info!(login = %login, "registry sign-in");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::accounts::SESSION_SECS
    )
    .parse()
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct Csrf {
    csrf: String,
}

fn csrf_matches(session: &Session, given: &str) -> bool {
    kasip_core::constant_time_eq(session.csrf.as_bytes(), given.as_bytes())
}

async fn log_out(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Form(form): Form<Csrf>,
) -> Response<Body> {
    let Some(session) = signed_in(&state, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    if !csrf_matches(&session, &form.csrf) {
        return error(
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match",
        );
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE).map(str::to_owned) {
        let _ = state
            .with_store(move |store| store.close_session(&token))
            .await;
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) =
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0").parse()
    {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The session, or the answer for someone not signed in: the sign-in page for a
/// browser, 401 for an API.
async fn require(
    state: &RegistryState,
    headers: &HeaderMap,
    lang: Lang,
) -> Result<Session, Response<Body>> {
    match signed_in(state, headers).await {
        Some(session) => Ok(session),
        None => {
            let mut response =
                login_page_with(lang, "", Some(lang.text(Text::RegistrySignInFirst)));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Err(response)
        }
    }
}

/// For the read APIs: a registrar's or auditor's session, or 401.
pub async fn require_api(
    state: &RegistryState,
    headers: &HeaderMap,
) -> Result<Session, Response<Body>> {
    signed_in(state, headers).await.ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "sign in as a registrar or auditor (POST /login) to read this",
        )
    })
}

async fn colleges_page(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
) -> Response<Body> {
    let lang = language(&headers, query.lang.as_deref());
    let session = match require(&state, &headers, lang).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let loaded = state
        .try_with_store(|store| {
            Ok::<_, crate::RegistryError>((store.overview()?, store.findings(None, None)?))
        })
        .await;
    let (colleges, findings) = match loaded {
        Ok(loaded) => loaded,
        Err(response) => return response,
    };
    let open = |bin: &str| {
        findings
            .iter()
            .filter(|finding| finding.college_bin == bin && finding.status == "open")
            .count()
    };
    let mut rows: Vec<CollegeRow> = colleges
        .iter()
        .map(|college| CollegeRow {
            bin: college.bin.clone(),
            name: college.name.clone(),
            open: open(&college.bin),
            last_batch: college
                .last_batch_at
                .map_or_else(|| lang.text(Text::RegistryNever).to_owned(), when),
            month: college
                .months
                .last()
                .map(|month| MonthCell::of(lang, month)),
        })
        .collect();
    rows.sort_by(|left, right| right.open.cmp(&left.open).then(left.bin.cmp(&right.bin)));
    render(
        &CollegesPage {
            chrome: Chrome::new(lang, "/", Some(&session)),
            colleges: rows,
        },
        lang,
    )
}

fn not_found(lang: Lang, path: &str, session: &Session) -> Response<Body> {
    let mut response = render(
        &MessagePage {
            chrome: Chrome::new(lang, path, Some(session)),
            message: lang.text(Text::RegistryNotFound).to_owned(),
        },
        lang,
    );
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

async fn college_page(
    State(state): State<RegistryState>,
    Path(bin): Path<String>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
) -> Response<Body> {
    let lang = language(&headers, query.lang.as_deref());
    let path = format!("/colleges/{bin}");
    let session = match require(&state, &headers, lang).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let wanted = bin.clone();
    let loaded = state
        .try_with_store(move |store| {
            Ok::<_, crate::RegistryError>((
                store.college(&wanted)?,
                store.findings(Some(&wanted), None)?,
                store.passkey_share(&wanted)?,
                store.passkey_required(&wanted)?,
            ))
        })
        .await;
    let (college, findings, passkey_months, passkey_required) = match loaded {
        Ok((Some(college), findings, share, required)) => (college, findings, share, required),
        Ok((None, ..)) => return not_found(lang, &path, &session),
        Err(response) => return response,
    };
    render(
        &CollegePage {
            chrome: Chrome::new(lang, &path, Some(&session)),
            bin: college.bin.clone(),
            name: college.name.clone(),
            months: college
                .months
                .iter()
                .rev()
                .map(|month| MonthCell::of(lang, month))
                .collect(),
            findings: findings
                .iter()
                .rev()
                .map(|finding| FindingLine::of(lang, finding))
                .collect(),
            passkey_months: passkey_months
                .into_iter()
                .rev()
                .map(|(month, check_ins, verified)| PasskeyMonth {
                    share: per_mille_text(
                        (check_ins > 0).then(|| (verified * 1000 + check_ins / 2) / check_ins),
                    ),
                    month,
                    check_ins,
                    verified,
                })
                .collect(),
            passkey_required,
        },
        lang,
    )
}

async fn finding_page(
    State(state): State<RegistryState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Query(query): Query<LangQuery>,
) -> Response<Body> {
    let lang = language(&headers, query.lang.as_deref());
    let path = format!("/findings/{id}");
    let session = match require(&state, &headers, lang).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let loaded = state
        .try_with_store(move |store| {
            let Some(found) = store.finding_with_evidence(id)? else {
                return Ok(None);
            };
            let name = store.college_name(&found.0.college_bin)?;
            Ok::<_, crate::RegistryError>(Some((found, name)))
        })
        .await;
    let ((finding, records, history), college_name) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(lang, &path, &session),
        Err(response) => return response,
    };
    let records = records
        .into_iter()
        .map(|(record_id, body)| EvidenceRecord {
            body,
            missing: lang.fill(
                Text::RegistryRecordMissing,
                &[("id", &record_id.to_string())],
            ),
        })
        .collect();
    let history = history
        .iter()
        .map(|(status, by, reason, at)| {
            format!(
                "{} — {} — {by}: {reason}",
                when(*at),
                status_label(lang, status)
            )
        })
        .collect();
    let statuses = ["open", "explained", "confirmed"]
        .into_iter()
        .map(|status| (status, status_label(lang, status), status == finding.status))
        .collect();
    render(
        &FindingPage {
            chrome: Chrome::new(lang, &path, Some(&session)),
            id,
            bin: finding.college_bin.clone(),
            college: college_name.unwrap_or_else(|| finding.college_bin.clone()),
            finding: FindingLine::of(lang, &finding),
            records,
            history,
            auditor: session.role == Role::Auditor,
            statuses,
        },
        lang,
    )
}

#[derive(Deserialize)]
struct Judgement {
    csrf: String,
    status: String,
    reason: String,
}

async fn judge(
    State(state): State<RegistryState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<Judgement>,
) -> Response<Body> {
    let lang = language(&headers, None);
    let session = match require(&state, &headers, lang).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    if !csrf_matches(&session, &form.csrf) {
        return error(
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match",
        );
    }
    if session.role != Role::Auditor {
        return error(StatusCode::FORBIDDEN, lang.text(Text::RegistryForbidden));
    }
    if form.reason.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            lang.text(Text::RegistryReasonRequired),
        );
    }
    let now = state.now();
    let by = session.login.clone();
    match state
        .with_store(move |store| store.set_finding_status(id, &form.status, &by, &form.reason, now))
        .await
    {
        Err(response) => response,
        Ok(Err(crate::RegistryError::Usage(message))) => error(StatusCode::BAD_REQUEST, &message),
        Ok(Err(failure)) => internal(failure),
        Ok(Ok(())) => Redirect::to(&format!("/findings/{id}")).into_response(),
    }
}

#[derive(Deserialize)]
struct FindingsQuery {
    bin: Option<String>,
    month: Option<String>,
}

/// Every college's findings, for a registrar's or auditor's tools.
async fn findings_json(
    State(state): State<RegistryState>,
    headers: HeaderMap,
    Query(query): Query<FindingsQuery>,
) -> Response<Body> {
    if let Err(response) = require_api(&state, &headers).await {
        return response;
    }
    let month = match query
        .month
        .as_deref()
        .map(kasip_core::Month::parse)
        .transpose()
    {
        Ok(month) => month,
        Err(problem) => return error(StatusCode::BAD_REQUEST, &format!("month: {problem}")),
    };
    match state
        .try_with_store(move |store| store.findings(query.bin.as_deref(), month))
        .await
    {
        Ok(findings) => Json(json!({ "findings": findings })).into_response(),
        Err(response) => response,
    }
}
