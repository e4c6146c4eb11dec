//! The Registrar's pages and the read APIs behind a sign-in: colleges listed by open
//! findings, each college's months (the registry's own coverage beside the stated one)
//! and findings, each finding's evidence and the history of its judgements. In kk, ru
//! and en from the one catalog (`core/text/`); the choice sticks in a `lang` cookie.

use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, Response, StatusCode};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use kasip_core::{per_mille_text, Lang, Text};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{Role, Session};
use crate::http::{error, internal, RegistryState};
use crate::store::FindingRow;

const SESSION_COOKIE: &str = "kasip_registry_session";

pub fn routes() -> Router<RegistryState> {
    Router::new()
        .route("/", get(colleges_page))
        .route("/login", get(login_page).post(log_in))
        .route("/logout", post(log_out))
        .route("/colleges/{bin}", get(college_page))
        .route("/findings/{id}", get(finding_page))
        .route("/findings/{id}/status", post(judge))
        .route("/v1/findings", get(findings_json))
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
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

/// A whole page: the language switcher keeps the path, the sign-out form its CSRF token.
fn page(lang: Lang, path: &str, session: Option<&Session>, body: &str) -> Response<Body> {
    let switcher: Vec<String> = Lang::all()
        .map(|other| {
            if other == lang {
                format!("<strong>{}</strong>", other.code())
            } else {
                format!(
                    "<a href=\"{}?lang={}\" lang=\"{}\">{}</a>",
                    escape(path),
                    other.code(),
                    other.code(),
                    other.code()
                )
            }
        })
        .collect();
    let who = session.map_or_else(String::new, |session| {
        format!(
            "<form method=post action=/logout class=who>{} \
             <input type=hidden name=csrf value=\"{}\"><button>{}</button></form>",
            escape(&lang.fill(
                Text::RegistrySignedInAs,
                &[("login", &session.login), ("role", session.role.as_str())]
            )),
            escape(&session.csrf),
            lang.text(Text::RegistrySignOut)
        )
    });
    let mut response = Html(format!(
        "<!doctype html><html lang=\"{code}\"><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:1rem;max-width:70rem}}\
         table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #999;padding:.3rem .5rem;text-align:left;vertical-align:top}}\
         .bad{{color:#a00;font-weight:bold}}.ok{{color:#060}}nav{{display:flex;gap:1rem;justify-content:space-between;flex-wrap:wrap}}\
         .who{{display:inline}}pre{{white-space:pre-wrap;word-break:break-all;background:#f4f4f4;padding:.5rem}}\
         </style><nav><span>{switcher}</span>{who}</nav><h1>{title}</h1>{body}</html>",
        code = lang.code(),
        title = lang.text(Text::RegistryTitle),
        switcher = switcher.join(" · "),
    ))
    .into_response();
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

#[derive(Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
}

fn login_form(lang: Lang, login: &str, message: Option<&str>) -> String {
    format!(
        "<h2>{title}</h2>{message}<form method=post action=/login>\
         <p><label>Login <input name=login autocomplete=username required value=\"{login}\"></label></p>\
         <p><label>{password} <input name=password type=password autocomplete=current-password required></label></p>\
         <p><button>{submit}</button></p></form>",
        title = lang.text(Text::RegistrySignIn),
        message = message.map_or_else(String::new, |text| format!(
            "<p class=bad role=alert>{}</p>",
            escape(text)
        )),
        login = escape(login),
        password = lang.text(Text::LoginPassword),
        submit = lang.text(Text::LoginSubmit),
    )
}

async fn login_page(headers: HeaderMap, Query(query): Query<LangQuery>) -> Response<Body> {
    let lang = language(&headers, query.lang.as_deref());
    page(lang, "/login", None, &login_form(lang, "", None))
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
    let lookup = login.clone();
    let stored = match state
        .with_store(move |store| store.credentials(&lookup))
        .await
    {
        Err(response) => return response,
        Ok(Err(failure)) => return internal(failure),
        Ok(Ok(stored)) => stored,
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
        let mut response = page(
            lang,
            "/login",
            None,
            &login_form(lang, &login, Some(lang.text(Text::RegistryWrong))),
        );
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let now = state.now();
    let owner = login.clone();
    let token = match state
        .with_store(move |store| store.open_session(&owner, now))
        .await
    {
        Err(response) => return response,
        Ok(Err(failure)) => return internal(failure),
        Ok(Ok(None)) => return internal("the system random generator failed"),
        Ok(Ok(Some(token))) => token,
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
            let mut response = page(
                lang,
                "/login",
                None,
                &login_form(lang, "", Some(lang.text(Text::RegistrySignInFirst))),
            );
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
        .with_store(|store| {
            Ok::<_, crate::RegistryError>((store.overview()?, store.findings(None, None)?))
        })
        .await;
    let (colleges, findings) = match loaded {
        Err(response) => return response,
        Ok(Err(failure)) => return internal(failure),
        Ok(Ok(loaded)) => loaded,
    };
    let open = |bin: &str| {
        findings
            .iter()
            .filter(|finding| finding.college_bin == bin && finding.status == "open")
            .count()
    };
    let mut colleges: Vec<_> = colleges
        .iter()
        .map(|college| (open(&college.bin), college))
        .collect();
    colleges.sort_by(|left, right| right.0.cmp(&left.0).then(left.1.bin.cmp(&right.1.bin)));
    let mut rows = String::new();
    for (open, college) in colleges {
        let month = college.months.last().map_or_else(
            || lang.text(Text::RegistryNoClose).to_owned(),
            |month| month_cell(lang, month),
        );
        rows.push_str(&format!(
            "<tr><td><a href=\"/colleges/{bin}\">{name}</a><br><small>{bin}</small></td>\
             <td class=\"{class}\">{open}</td><td>{last}</td><td>{month}</td></tr>",
            bin = escape(&college.bin),
            name = escape(&college.name),
            class = if open > 0 { "bad" } else { "ok" },
            last = college
                .last_batch_at
                .map_or_else(|| lang.text(Text::RegistryNever).to_owned(), when),
        ));
    }
    page(
        lang,
        "/",
        Some(&session),
        &format!(
            "<h2>{title}</h2><table><thead><tr><th scope=col>{college}</th><th scope=col>{open}</th>\
             <th scope=col>{last}</th><th scope=col>{coverage}</th></tr></thead><tbody>{rows}</tbody></table>",
            title = lang.text(Text::RegistryColleges),
            college = lang.text(Text::RegistryCollege),
            open = lang.text(Text::RegistryOpenFindings),
            last = lang.text(Text::RegistryLastBatch),
            coverage = lang.text(Text::RegistryCoverageByRegistry),
        ),
    )
}

/// `2026-11: 66.6% (compliant) — stated by the college: 70.0%`.
fn month_cell(lang: Lang, month: &crate::audit::MonthFigures) -> String {
    let verdict = if month.compliant {
        format!(
            "<span class=ok>{}</span>",
            lang.text(Text::RegistryCompliant)
        )
    } else {
        format!(
            "<span class=bad>{}</span>",
            lang.text(Text::RegistryNotCompliant)
        )
    };
    let stated = match month.stated_coverage_per_mille {
        Some(stated) if Some(stated) != month.coverage_per_mille => format!(
            " — <span class=bad>{}</span>",
            escape(&lang.fill(
                Text::RegistryCoverageStated,
                &[("coverage", &per_mille_text(Some(stated)))]
            ))
        ),
        _ => String::new(),
    };
    format!(
        "{}: {} ({verdict}){stated}",
        escape(&month.month),
        per_mille_text(month.coverage_per_mille)
    )
}

fn findings_table(lang: Lang, findings: &[FindingRow]) -> String {
    if findings.is_empty() {
        return format!("<p>{}</p>", lang.text(Text::RegistryNoFindings));
    }
    let rows: String = findings
        .iter()
        .rev()
        .map(|finding| {
            format!(
                "<tr><td><a href=\"/findings/{id}\">{kind}</a></td><td class=\"{class}\">{status}</td>\
                 <td>{month}</td><td>{detail}</td><td>{seen}</td></tr>",
                id = finding.id,
                kind = escape(&kind_label(lang, &finding.kind)),
                class = if finding.status == "open" { "bad" } else { "" },
                status = status_label(lang, &finding.status),
                month = escape(finding.month.as_deref().unwrap_or("—")),
                detail = escape(&finding.detail),
                seen = when(finding.at),
            )
        })
        .collect();
    format!(
        "<table><thead><tr><th scope=col>{kind}</th><th scope=col>{status}</th><th scope=col>{month}</th>\
         <th scope=col>{detail}</th><th scope=col>{seen}</th></tr></thead><tbody>{rows}</tbody></table>",
        kind = lang.text(Text::RegistryKind),
        status = lang.text(Text::RegistryStatus),
        month = lang.text(Text::RegistryMonth),
        detail = lang.text(Text::RegistryDetail),
        seen = lang.text(Text::RegistryFirstSeen),
    )
}

fn not_found(lang: Lang, path: &str, session: &Session) -> Response<Body> {
    let mut response = page(
        lang,
        path,
        Some(session),
        &format!(
            "<p class=bad>{}</p><p><a href=/>{}</a></p>",
            lang.text(Text::RegistryNotFound),
            lang.text(Text::RegistryBack)
        ),
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
        .with_store(move |store| {
            let college = store
                .overview()?
                .into_iter()
                .find(|college| college.bin == wanted);
            Ok::<_, crate::RegistryError>((college, store.findings(Some(&wanted), None)?))
        })
        .await;
    let (college, findings) = match loaded {
        Err(response) => return response,
        Ok(Err(failure)) => return internal(failure),
        Ok(Ok((Some(college), findings))) => (college, findings),
        Ok(Ok((None, _))) => return not_found(lang, &path, &session),
    };
    let months: String = college
        .months
        .iter()
        .rev()
        .map(|month| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                month_cell(lang, month),
                month.beneficiaries,
                month.qr_tracked
            )
        })
        .collect();
    page(
        lang,
        &path,
        Some(&session),
        &format!(
            "<p><a href=/>{back}</a></p><h2>{name} <small>{bin}</small></h2>\
             <h3>{months_title}</h3><table><thead><tr><th scope=col>{coverage}</th><th scope=col>{beneficiaries}</th>\
             <th scope=col>{tracked}</th></tr></thead><tbody>{months}</tbody></table>\
             <h3>{findings_title}</h3>{findings}",
            back = lang.text(Text::RegistryBack),
            name = escape(&college.name),
            bin = escape(&college.bin),
            months_title = lang.text(Text::RegistryMonths),
            coverage = lang.text(Text::RegistryCoverageByRegistry),
            beneficiaries = lang.text(Text::RegistryBeneficiaries),
            tracked = lang.text(Text::RegistryQrTracked),
            findings_title = lang.text(Text::RegistryFindings),
            findings = findings_table(lang, &findings),
        ),
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
        .with_store(move |store| store.finding_with_evidence(id))
        .await;
    let (finding, records, history) = match loaded {
        Err(response) => return response,
        Ok(Err(failure)) => return internal(failure),
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return not_found(lang, &path, &session),
    };
    let evidence: String = records
        .iter()
        .map(|(record_id, body)| match body {
            Some(body) => format!("<pre>{}</pre>", escape(body)),
            None => format!(
                "<p>{}</p>",
                escape(&lang.fill(
                    Text::RegistryRecordMissing,
                    &[("id", &record_id.to_string())]
                ))
            ),
        })
        .collect();
    let history: String = history
        .iter()
        .map(|(status, by, reason, at)| {
            format!(
                "<li>{} — {} — {}: {}</li>",
                when(*at),
                status_label(lang, status),
                escape(by),
                escape(reason)
            )
        })
        .collect();
    let judge = if session.role == Role::Auditor {
        let options: String = ["open", "explained", "confirmed"]
            .iter()
            .map(|status| {
                format!(
                    "<option value={status}{}>{}</option>",
                    if *status == finding.status {
                        " selected"
                    } else {
                        ""
                    },
                    status_label(lang, status)
                )
            })
            .collect();
        format!(
            "<h3>{title}</h3><form method=post action=\"/findings/{id}/status\">\
             <input type=hidden name=csrf value=\"{csrf}\">\
             <p><label>{status} <select name=status>{options}</select></label></p>\
             <p><label>{reason} <textarea name=reason required rows=3 cols=60></textarea></label></p>\
             <p><button>{save}</button></p></form>",
            title = lang.text(Text::RegistryJudge),
            csrf = escape(&session.csrf),
            status = lang.text(Text::RegistryStatus),
            reason = lang.text(Text::RegistryReason),
            save = lang.text(Text::RegistrySave),
        )
    } else {
        String::new()
    };
    page(
        lang,
        &path,
        Some(&session),
        &format!(
            "<p><a href=\"/colleges/{bin}\">{name}</a> · <a href=/>{back}</a></p>\
             <h2>{kind}</h2><p>{status}: <strong>{state}</strong> · {month} · {seen}</p><p>{detail}</p>\
             <h3>{records_title}</h3>{evidence}<h3>{history_title}</h3><ul>{history}</ul>{judge}",
            bin = escape(&finding.college_bin),
            name = escape(&finding.college_bin),
            back = lang.text(Text::RegistryBack),
            kind = escape(&kind_label(lang, &finding.kind)),
            status = lang.text(Text::RegistryStatus),
            state = status_label(lang, &finding.status),
            month = escape(finding.month.as_deref().unwrap_or("—")),
            seen = when(finding.at),
            detail = escape(&finding.detail),
            records_title = lang.text(Text::RegistryRecordsNamed),
            history_title = lang.text(Text::RegistryHistory),
        ),
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
        .with_store(move |store| store.findings(query.bin.as_deref(), month))
        .await
    {
        Err(response) => response,
        Ok(Err(failure)) => internal(failure),
        Ok(Ok(findings)) => Json(json!({ "findings": findings })).into_response(),
    }
}
