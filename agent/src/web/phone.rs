//! What a student's phone does: bind once, then check in by scanning or typing a code.

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kasip_core::{normalise_typed_code, step_at, typed_code, ClassroomToken, Iin, LessonKey};
use rusqlite::OptionalExtension;
use serde::Deserialize;

use super::page::{cookie, double_submit_ok, escape_html, failure_page, message_page, set_cookie};
use super::AppState;
use crate::error::AgentError;
use crate::i18n::{text, Lang};
use crate::lessons::open_lesson_at;
use crate::marks::{Accepted, PhoneCheckIn, Rejection, INTENT_SECS};
use crate::secrets::random_token;
use crate::secrets::secret_hash;
use crate::staff::BINDING_CODE_MAX_FAILURES;

/// Cookie holding the phone's binding credential (256-bit random; stored hashed).
pub const CREDENTIAL_COOKIE: &str = "kasip_credential";
/// Cookie holding the phone's long-lived identity, kept when the binding changes.
pub const DEVICE_COOKIE: &str = "kasip_device";
const TEN_YEARS_SECS: i64 = 10 * 365 * 86_400;

#[derive(Deserialize)]
pub struct LangQuery {
    lang: Option<String>,
    intent: Option<String>,
}

fn lang_of(query: &LangQuery, headers: &HeaderMap) -> Lang {
    super::page::language(query.lang.as_deref(), headers)
}

impl LangQuery {
    /// The reader's language: `?lang=`, cookie, then Accept-Language.
    pub fn lang(&self, headers: &HeaderMap) -> Lang {
        lang_of(self, headers)
    }
}

/// Cookie and hidden field pairing the binding form with the browser that loaded it, so
/// a hostile site cannot bind a student's phone to the attacker's account (login CSRF).
const BIND_CSRF_COOKIE: &str = "kasip_bind_csrf";

/// The binding form as a page with `status`, an optional message above it, and a fresh
/// double-submit CSRF token (cookie + hidden field).
fn bind_page(
    status: StatusCode,
    lang: Lang,
    intent: Option<&str>,
    notice: Option<&str>,
    secure: bool,
) -> Response {
    let csrf = random_token(24).unwrap_or_default();
    let intent_field = intent
        .map(|intent| {
            format!(
                "<input type=hidden name=intent value=\"{}\">",
                escape_html(intent)
            )
        })
        .unwrap_or_default();
    let notice = notice
        .map(|notice| format!("<p class=bad>{notice}</p>"))
        .unwrap_or_default();
    let body = format!(
        "{notice}<form method=post action=\"/bind\"><input type=hidden name=csrf value=\"{csrf}\">{intent_field}\
         <p><label>{iin}<br><input name=iin inputmode=numeric autocomplete=off maxlength=12 required></label></p>\
         <p><label>{code}<br><input name=code autocomplete=off maxlength=16 required></label></p>\
         <p><button>{submit}</button></p></form><p>{hint}</p>",
        iin = text(lang, "bind.iin"),
        code = text(lang, "bind.code"),
        submit = text(lang, "bind.submit"),
        hint = text(lang, "bind.hint"),
    );
    let mut response = message_page(status, lang, "bind.title", &body);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(BIND_CSRF_COOKIE, &csrf, 3600, secure),
    );
    response
}

pub async fn bind_form(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&query, &headers);
    bind_page(
        StatusCode::OK,
        lang,
        query.intent.as_deref(),
        None,
        state.secure_cookies,
    )
}

#[derive(Deserialize)]
pub struct BindForm {
    iin: String,
    code: String,
    intent: Option<String>,
    #[serde(default)]
    csrf: String,
}

enum BindOutcome {
    Bound { credential: String, device: String },
    BadIin,
    WrongCode,
    Locked,
}

pub async fn bind(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
    Form(form): Form<BindForm>,
) -> Response {
    let lang = lang_of(&query, &headers);
    let now = state.now();
    let csrf_ok = double_submit_ok(&headers, BIND_CSRF_COOKIE, &form.csrf);
    if !csrf_ok {
        return bind_page(
            StatusCode::FORBIDDEN,
            lang,
            form.intent.as_deref(),
            Some(text(lang, "staff.csrf")),
            state.secure_cookies,
        );
    }
    let limiter_key = format!("bind:{}", form.iin.trim());
    if state.limiter.is_locked(&limiter_key, now) {
        return bind_page(
            StatusCode::TOO_MANY_REQUESTS,
            lang,
            form.intent.as_deref(),
            Some(text(lang, "bind.locked")),
            state.secure_cookies,
        );
    }
    let existing_device = cookie(&headers, DEVICE_COOKIE);
    let code = form.code.trim().to_uppercase();
    let iin_text = form.iin.trim().to_owned();
    let outcome = state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let Ok(iin) = Iin::parse(&iin_text) else {
                return Ok(BindOutcome::BadIin);
            };
            let connection = store.connection();
            let pending: Option<(Vec<u8>, i64)> = connection
                .query_row(
                    "SELECT code_hash, failed_attempts FROM binding_codes
                     WHERE student_iin = ?1 AND used_at IS NULL AND expires_at > ?2
                     ORDER BY expires_at DESC LIMIT 1",
                    rusqlite::params![iin.as_string(), now],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(failure)?;
            let Some((code_hash, failed_attempts)) = pending else {
                return Ok(BindOutcome::WrongCode);
            };
            if failed_attempts >= BINDING_CODE_MAX_FAILURES {
                return Ok(BindOutcome::Locked);
            }
            if secret_hash(&code) != code_hash {
                connection
                    .execute(
                        "UPDATE binding_codes SET failed_attempts = failed_attempts + 1 WHERE code_hash = ?1",
                        [&code_hash],
                    )
                    .map_err(failure)?;
                connection
                    .execute(
                        "INSERT INTO security_events (at, kind, student_iin, detail) VALUES (?1, 'binding_code_wrong', ?2, '')",
                        rusqlite::params![now, iin.as_string()],
                    )
                    .map_err(failure)?;
                return Ok(if failed_attempts + 1 >= BINDING_CODE_MAX_FAILURES {
                    BindOutcome::Locked
                } else {
                    BindOutcome::WrongCode
                });
            }
            let credential = random_token(32).map_err(|error| AgentError::Operation(error.to_string()))?;
            let device = match existing_device.filter(|device| device.len() >= 32 && device.len() <= 64) {
                Some(device) => device,
                None => random_token(32).map_err(|error| AgentError::Operation(error.to_string()))?,
            };
            let device_id = kasip_core::batch::to_hex(&secret_hash(&device));
            let transaction = rusqlite::Transaction::new_unchecked(connection, rusqlite::TransactionBehavior::Immediate).map_err(failure)?;
            transaction
                .execute("UPDATE binding_codes SET used_at = ?2 WHERE code_hash = ?1", rusqlite::params![code_hash, now])
                .map_err(failure)?;
            // One active phone per student: binding a new one revokes the old, and its
            // pass key with it (the new phone makes its own on /pass).
            transaction
                .execute(
                    "UPDATE device_bindings SET revoked_at = ?2 WHERE student_iin = ?1 AND revoked_at IS NULL",
                    rusqlite::params![iin.as_string(), now],
                )
                .map_err(failure)?;
            crate::kiosks::replace_pass_keys(&transaction, &iin.as_string(), now).map_err(failure)?;
            transaction
                .execute(
                    "INSERT INTO device_bindings (credential_hash, student_iin, device_id, bound_at) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![secret_hash(&credential), iin.as_string(), device_id, now],
                )
                .map_err(failure)?;
            transaction.commit().map_err(failure)?;
            Ok(BindOutcome::Bound { credential, device })
        })
        .await;
    let (status, notice_key) = match outcome {
        Ok(BindOutcome::Bound { credential, device }) => {
            return finish_binding(
                &state,
                lang,
                now,
                &limiter_key,
                form.intent.as_deref(),
                credential,
                device,
            )
            .await;
        }
        Ok(BindOutcome::BadIin) => (StatusCode::BAD_REQUEST, "bind.bad_iin"),
        Ok(BindOutcome::WrongCode) => (StatusCode::FORBIDDEN, "bind.wrong_code"),
        Ok(BindOutcome::Locked) => (StatusCode::TOO_MANY_REQUESTS, "bind.locked"),
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    if status != StatusCode::BAD_REQUEST {
        state.limiter.record_failure(&limiter_key, now);
    }
    bind_page(
        status,
        lang,
        form.intent.as_deref(),
        Some(text(lang, notice_key)),
        state.secure_cookies,
    )
}

/// After a successful binding: set the phone's cookies and, when the phone came with a
/// check-in intent, complete that check-in.
async fn finish_binding(
    state: &AppState,
    lang: Lang,
    now: i64,
    limiter_key: &str,
    intent: Option<&str>,
    credential: String,
    device: String,
) -> Response {
    state.limiter.clear(limiter_key);
    let intent = intent.and_then(|intent| {
        let mut intents = state
            .intents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        intents.retain(|_, (_, seen_at)| now - *seen_at <= INTENT_SECS);
        intents.remove(intent)
    });
    let mut response = match intent {
        Some((token, seen_at)) => {
            let check_in = PhoneCheckIn {
                token: Ok(token),
                credential_hash: Some(secret_hash(&credential)),
                typed: false,
                fresh_at: Some(seen_at),
            };
            answer_check_in(state, lang, check_in).await
        }
        None => message_page(
            StatusCode::OK,
            lang,
            "bind.title",
            &format!(
                "<p class=ok>{}</p><p><a href=\"/pass\">{}</a></p>",
                text(lang, "bind.done"),
                text(lang, "pass.title")
            ),
        ),
    };
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            CREDENTIAL_COOKIE,
            &credential,
            TEN_YEARS_SECS,
            state.secure_cookies,
        ),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(DEVICE_COOKIE, &device, TEN_YEARS_SECS, state.secure_cookies),
    );
    response
}

/// GET never records anything: it shows a page that posts the check-in by itself.
pub async fn check_in_page(
    Path(token): Path<String>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&query, &headers);
    let action = format!("/c/{}", escape_html(&token));
    let body = format!(
        "<form id=checkin method=post action=\"{action}\"><p>{wait}</p><button>{submit}</button></form>\
         <script>document.getElementById('checkin').submit()</script>",
        wait = text(lang, "checkin.sending"),
        submit = text(lang, "checkin.submit"),
    );
    message_page(StatusCode::OK, lang, "checkin.title", &body)
}

pub async fn check_in(
    State(state): State<AppState>,
    Path(token_text): Path<String>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&query, &headers);
    let token = ClassroomToken::parse(&token_text);
    let credential_hash =
        cookie(&headers, CREDENTIAL_COOKIE).map(|credential| secret_hash(&credential));
    if credential_hash.is_none() {
        if let Ok(token) = &token {
            if let Some(response) = offer_binding(&state, lang, token.clone()).await {
                return response;
            }
        }
    }
    let check_in = PhoneCheckIn {
        token,
        credential_hash,
        typed: false,
        fresh_at: None,
    };
    answer_check_in(&state, lang, check_in).await
}

/// A phone with no binding that presents a fresh token gets a 2-minute intent and the
/// binding form; the check-in completes after binding. None if the token is not fresh.
async fn offer_binding(state: &AppState, lang: Lang, token: ClassroomToken) -> Option<Response> {
    let now = state.now();
    let settings = state.settings.clone();
    let lesson_id = token.lesson;
    let token_for_check = token.clone();
    let fresh = state
        .with_db(move |store| {
            let lesson =
                open_lesson_at(store.connection(), lesson_id, now, &settings.lesson_times())
                    .map_err(|source| AgentError::from(store.error(source)))?;
            Ok(lesson.is_some_and(|lesson| {
                token_for_check
                    .verify(
                        &LessonKey::new(&lesson.qr_key),
                        step_at(now, settings.qr_period_secs),
                    )
                    .is_ok()
            }))
        })
        .await
        .unwrap_or(false);
    if !fresh {
        return None;
    }
    let intent = random_token(24).ok()?;
    state
        .intents
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(intent.clone(), (token, now));
    // Not a security event: an unbound phone with a fresh code is a student's first scan.
    Some(bind_page(
        StatusCode::FORBIDDEN,
        lang,
        Some(&intent),
        Some(text(lang, "reject.device_not_bound")),
        state.secure_cookies,
    ))
}

fn rejection_status(rejection: Rejection) -> StatusCode {
    match rejection {
        Rejection::MalformedToken => StatusCode::BAD_REQUEST,
        Rejection::StaleToken => StatusCode::GONE,
        Rejection::LessonNotOpen => StatusCode::CONFLICT,
        Rejection::ForgedToken
        | Rejection::NotInGroup
        | Rejection::DeviceNotBound
        | Rejection::DeviceUsedForAnotherStudent
        | Rejection::StudentInactive => StatusCode::FORBIDDEN,
    }
}

/// Sends a check-in to the writer and renders its answer.
async fn answer_check_in(state: &AppState, lang: Lang, check_in: PhoneCheckIn) -> Response {
    match state.writer.phone_check_in(check_in).await {
        Ok(Ok(accepted)) => confirmation(state, lang, accepted).await,
        Ok(Err(rejection)) => {
            let mut body = format!(
                "<p class=bad id=reason data-reason=\"{}\">{}</p>",
                rejection.kind(),
                text(lang, rejection.message_key())
            );
            if rejection == Rejection::DeviceNotBound {
                body.push_str(&format!(
                    "<p><a href=\"/bind\">{}</a></p>",
                    text(lang, "bind.title")
                ));
            }
            message_page(rejection_status(rejection), lang, "checkin.refused", &body)
        }
        Err(failure) => super::page::write_failure_page(lang, &failure),
    }
}

async fn confirmation(state: &AppState, lang: Lang, accepted: Accepted) -> Response {
    let lesson_id = accepted.lesson_id;
    let cached = state
        .lesson_labels
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&lesson_id)
        .cloned();
    let lesson = match cached {
        Some(label) => Some(label),
        None => state
            .with_db(move |store| {
                crate::lessons::label(store.connection(), lesson_id)
                    .map_err(|source| AgentError::from(store.error(source)))
            })
            .await
            .ok()
            .flatten()
            .inspect(|label| {
                state
                    .lesson_labels
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(lesson_id, label.clone());
            }),
    };
    let local_seconds = accepted.recorded_at + state.settings.timezone.offset_seconds();
    let time = format!(
        "{:02}:{:02}",
        local_seconds.rem_euclid(86_400) / 3600,
        local_seconds.rem_euclid(3600) / 60
    );
    let lesson_text = lesson
        .map(|(discipline, group, room)| {
            format!(
                "{} · {} · {}",
                escape_html(&discipline),
                escape_html(&group),
                escape_html(&room)
            )
        })
        .unwrap_or_default();
    let status_key = match accepted.status {
        kasip_core::MarkStatus::Late => "checkin.late",
        _ => "checkin.present",
    };
    let body = format!(
        "<p class=ok id=confirmation data-event=\"{event}\" style=\"font-size:1.6rem\">✓ {status}</p>\
         <p><b id=student>{name}</b></p><p>{lesson_text}</p><p>{time}</p>{repeated}",
        event = accepted.event_id,
        status = text(lang, status_key),
        name = escape_html(&accepted.student_name),
        repeated = if accepted.repeated { format!("<p>{}</p>", text(lang, "checkin.already")) } else { String::new() },
    );
    message_page(StatusCode::OK, lang, "checkin.title", &body)
}

pub async fn typed_form(Query(query): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&query, &headers);
    let body = format!(
        "<form method=post action=\"/c\"><p><label>{label}<br>\
         <input name=code autocomplete=off maxlength=12 autocapitalize=characters required></label></p>\
         <p><button>{submit}</button></p></form>",
        label = text(lang, "typed.label"),
        submit = text(lang, "checkin.submit"),
    );
    message_page(StatusCode::OK, lang, "checkin.title", &body)
}

#[derive(Deserialize)]
pub struct TypedForm {
    code: String,
}

pub async fn typed_check_in(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
    Form(form): Form<TypedForm>,
) -> Response {
    let lang = lang_of(&query, &headers);
    let now = state.now();
    let credential_hash =
        cookie(&headers, CREDENTIAL_COOKIE).map(|credential| secret_hash(&credential));
    let Some(code) = normalise_typed_code(&form.code) else {
        return message_page(
            StatusCode::BAD_REQUEST,
            lang,
            "checkin.refused",
            &format!("<p class=bad>{}</p>", text(lang, "reject.typed_code")),
        );
    };
    let settings = state.settings.clone();
    // The typed code names no lesson: find the open lesson whose current or previous
    // code it is, and turn it into that lesson's token.
    let found = state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let connection = store.connection();
            let mut statement = connection
                .prepare_cached("SELECT lesson_id FROM lesson_openings WHERE closed_at IS NULL")
                .map_err(failure)?;
            let lesson_ids: Vec<i64> = statement
                .query_map([], |row| row.get(0))
                .and_then(|rows| rows.collect())
                .map_err(failure)?;
            let current = step_at(now, settings.qr_period_secs);
            for lesson_id in lesson_ids {
                let Some(lesson) = open_lesson_at(connection, lesson_id, now, &settings.lesson_times()).map_err(failure)? else {
                    continue;
                };
                let key = LessonKey::new(&lesson.qr_key);
                for step in [current, current.saturating_sub(1)] {
                    if typed_code(&key, lesson_id, step) == code {
                        return Ok(Some(ClassroomToken::mint(&key, lesson_id, step)));
                    }
                }
            }
            connection
                .execute(
                    "INSERT INTO security_events (at, kind, detail) VALUES (?1, 'typed_code_unknown', ?2)",
                    rusqlite::params![now, code],
                )
                .map_err(failure)?;
            Ok(None)
        })
        .await;
    match found {
        Ok(Some(token)) => {
            let check_in = PhoneCheckIn {
                token: Ok(token),
                credential_hash,
                typed: true,
                fresh_at: None,
            };
            answer_check_in(&state, lang, check_in).await
        }
        Ok(None) => message_page(
            StatusCode::FORBIDDEN,
            lang,
            "checkin.refused",
            &format!("<p class=bad>{}</p>", text(lang, "reject.typed_code")),
        ),
        Err(error) => failure_page(lang, &error.to_string()),
    }
    .into_response()
}
