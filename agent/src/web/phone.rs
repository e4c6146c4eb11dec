//! What a student's phone does: bind once, then check in by scanning or typing a code.

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kasip_core::{normalise_typed_code, step_at, ClassroomToken, Iin, LessonKey};
use serde::Deserialize;

use super::page::{cookie, double_submit_ok, escape_html, failure_page, message_page, set_cookie};
use super::AppState;
use crate::error::AgentError;
use crate::i18n::{text, Lang, Text};
use crate::lessons::open_lesson_at;
use crate::marks::{Accepted, PhoneCheckIn, Rejection, INTENT_SECS};
use crate::phones::BindOutcome;
use crate::secrets::random_token;
use crate::secrets::secret_hash;

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
        iin = text(lang, Text::BindIin),
        code = text(lang, Text::BindCode),
        submit = text(lang, Text::BindSubmit),
        hint = text(lang, Text::BindHint),
    );
    let mut response = message_page(status, lang, Text::BindTitle, &body);
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
            Some(text(lang, Text::StaffCsrf)),
            state.secure_cookies,
        );
    }
    let limiter_key = format!("bind:{}", form.iin.trim());
    if state.limiter.is_locked(&limiter_key, now) {
        return bind_page(
            StatusCode::TOO_MANY_REQUESTS,
            lang,
            form.intent.as_deref(),
            Some(text(lang, Text::BindLocked)),
            state.secure_cookies,
        );
    }
    let existing_device = cookie(&headers, DEVICE_COOKIE);
    let code = form.code.trim().to_uppercase();
    let iin_text = form.iin.trim().to_owned();
    let outcome = state
        .with_db(move |store| {
            let Ok(iin) = Iin::parse(&iin_text) else {
                return Ok(BindOutcome::BadIin);
            };
            crate::phones::bind(store.connection(), &iin, &code, existing_device, now).map_err(
                |error| match error {
                    crate::phones::BindError::Sqlite(source) => {
                        AgentError::from(store.error(source))
                    }
                    crate::phones::BindError::Random(error) => {
                        AgentError::Operation(error.to_string())
                    }
                },
            )
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
        Ok(BindOutcome::BadIin) => (StatusCode::BAD_REQUEST, Text::BindBadIin),
        Ok(BindOutcome::WrongCode) => (StatusCode::FORBIDDEN, Text::BindWrongCode),
        Ok(BindOutcome::Locked) => (StatusCode::TOO_MANY_REQUESTS, Text::BindLocked),
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
            Text::BindTitle,
            &format!(
                "<p class=ok>{}</p><p><a href=\"/pass\">{}</a></p>",
                text(lang, Text::BindDone),
                text(lang, Text::PassTitle)
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
        wait = text(lang, Text::CheckinSending),
        submit = text(lang, Text::CheckinSubmit),
    );
    message_page(StatusCode::OK, lang, Text::CheckinTitle, &body)
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
        Some(text(lang, Text::RejectDeviceNotBound)),
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
                    text(lang, Text::BindTitle)
                ));
            }
            message_page(
                rejection_status(rejection),
                lang,
                Text::CheckinRefused,
                &body,
            )
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
        kasip_core::MarkStatus::Late => Text::CheckinLate,
        _ => Text::CheckinPresent,
    };
    let body = format!(
        "<p class=ok id=confirmation data-event=\"{event}\" style=\"font-size:1.6rem\">✓ {status}</p>\
         <p><b id=student>{name}</b></p><p>{lesson_text}</p><p>{time}</p>{repeated}",
        event = accepted.event_id,
        status = text(lang, status_key),
        name = escape_html(&accepted.student_name),
        repeated = if accepted.repeated { format!("<p>{}</p>", text(lang, Text::CheckinAlready)) } else { String::new() },
    );
    message_page(StatusCode::OK, lang, Text::CheckinTitle, &body)
}

pub async fn typed_form(Query(query): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&query, &headers);
    let body = format!(
        "<form method=post action=\"/c\"><p><label>{label}<br>\
         <input name=code autocomplete=off maxlength=12 autocapitalize=characters required></label></p>\
         <p><button>{submit}</button></p></form>",
        label = text(lang, Text::TypedLabel),
        submit = text(lang, Text::CheckinSubmit),
    );
    message_page(StatusCode::OK, lang, Text::CheckinTitle, &body)
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
            Text::CheckinRefused,
            &format!("<p class=bad>{}</p>", text(lang, Text::RejectTypedCode)),
        );
    };
    let settings = state.settings.clone();
    // The typed code names no lesson: find the open lesson whose current or previous
    // code it is, and turn it into that lesson's token.
    let found = state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            crate::phones::token_for_typed_code(
                store.connection(),
                &code,
                now,
                settings.qr_period_secs,
                &settings.lesson_times(),
            )
            .map_err(failure)
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
            Text::CheckinRefused,
            &format!("<p class=bad>{}</p>", text(lang, Text::RejectTypedCode)),
        ),
        Err(error) => failure_page(lang, &error.to_string()),
    }
    .into_response()
}
