//! What a student's phone does: bind once, then check in by scanning or typing a code.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kasip_core::{normalise_typed_code, step_at, ClassroomToken, Iin, LessonKey};
use serde::Deserialize;

use super::error::{MessagePage, OrFailure, Paragraph, WebError};
use super::extract::{PageLang, PeerAddress};
use super::page::{cookie, double_submit_ok, render, set_cookie, with_cookie};
use super::throttle::{self, throttled, Client, Key};
use super::AppState;
use crate::error::AgentError;
use crate::lessons::open_lesson_at;
use crate::marks::{Accepted, PasskeyOutcome, PhoneCheckIn, Rejection, INTENT_SECS};
use crate::phones::BindOutcome;
use crate::secrets::{random_token, secret_hash};
use kasip_core::{Lang, Text};

/// Cookie holding the phone's binding credential (256-bit random; stored hashed).
pub const CREDENTIAL_COOKIE: &str = "kasip_credential";
/// Cookie holding the phone's long-lived identity, kept when the binding changes.
pub const DEVICE_COOKIE: &str = "kasip_device";
const TEN_YEARS_SECS: i64 = 10 * 365 * 86_400;

/// Cookie and hidden field pairing the binding form with the browser that loaded it, so
/// a hostile site cannot bind a student's phone to the attacker's account (login CSRF).
const BIND_CSRF_COOKIE: &str = "kasip_bind_csrf";

#[derive(Template)]
#[template(path = "bind.html")]
struct BindPage<'a> {
    lang: Lang,
    csrf: String,
    intent: Option<&'a str>,
    /// The token the phone presented before binding: its script signs it, so the
    /// check-in completes with the binding.
    token: Option<String>,
    notice: Option<Text>,
}

/// The binding form as a page with `status`, an optional notice above it, and a fresh
/// double-submit CSRF token (cookie + hidden field).
fn bind_page(
    state: &AppState,
    status: StatusCode,
    lang: Lang,
    intent: Option<&str>,
    notice: Option<Text>,
) -> Response {
    let csrf = random_token(24).unwrap_or_default();
    let token = intent.and_then(|intent| {
        state
            .intents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(intent)
            .map(|(token, _)| token.to_string())
    });
    let page = render(
        status,
        &BindPage {
            lang,
            csrf: csrf.clone(),
            intent,
            token,
            notice,
        },
    );
    with_cookie(
        page,
        set_cookie(BIND_CSRF_COOKIE, &csrf, 3600, state.secure_cookies),
    )
}

#[derive(Deserialize)]
pub struct IntentQuery {
    intent: Option<String>,
}

pub async fn bind_form(
    State(state): State<AppState>,
    PageLang(lang): PageLang,
    Query(query): Query<IntentQuery>,
) -> Response {
    bind_page(&state, StatusCode::OK, lang, query.intent.as_deref(), None)
}

#[derive(Deserialize)]
pub struct BindForm {
    iin: String,
    code: String,
    intent: Option<String>,
    #[serde(default)]
    csrf: String,
    /// The phone's device public key (base64url raw P-256), made by its browser.
    #[serde(default)]
    device_key: String,
    /// With an intent: the device signature over the intent's token.
    #[serde(default)]
    device_signature: Option<String>,
}

pub async fn bind(
    State(state): State<AppState>,
    PageLang(lang): PageLang,
    PeerAddress(peer): PeerAddress,
    headers: HeaderMap,
    Form(form): Form<BindForm>,
) -> Result<Response, WebError> {
    let now = state.now();
    let refuse = |status, notice| {
        Ok(bind_page(
            &state,
            status,
            lang,
            form.intent.as_deref(),
            Some(notice),
        ))
    };
    if !double_submit_ok(&headers, BIND_CSRF_COOKIE, state.secure_cookies, &form.csrf) {
        return refuse(StatusCode::FORBIDDEN, Text::StaffCsrf);
    }
    let client = Client::address(peer);
    let student_key = Key::target("bind", &form.iin, &client);
    let client_key = Key::client("bind", &client);
    let wait = state.throttle.wait_any(
        &[
            (&student_key, throttle::BINDING),
            (&client_key, throttle::ANY_ACCOUNT),
        ],
        now,
    );
    if wait > 0 {
        return refuse(StatusCode::TOO_MANY_REQUESTS, Text::ThrottleWait)
            .map(|page| throttled(page, wait));
    }
    let request = crate::phones::BindingRequest {
        device_key: {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(form.device_key.trim())
                .unwrap_or_default()
        },
        existing_device: cookie(&headers, DEVICE_COOKIE, state.secure_cookies),
        client: client.as_str().to_owned(),
        user_agent: headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let code = form.code.trim().to_uppercase();
    let iin_text = form.iin.trim().to_owned();
    let outcome = state
        .with_db(move |store| {
            let Ok(iin) = Iin::parse(&iin_text) else {
                return Ok(BindOutcome::BadIin);
            };
            crate::phones::bind(store.connection(), &iin, &code, request, now).map_err(|error| {
                match error {
                    crate::phones::BindError::Sqlite(source) => {
                        AgentError::from(store.error(source))
                    }
                    crate::phones::BindError::Random(error) => AgentError::Random(error),
                }
            })
        })
        .await
        .or_failure(lang)?;
    let (status, notice) = match outcome {
        BindOutcome::Bound { credential, device } => {
            state.throttle.success(&student_key);
            return Ok(finish_binding(
                &state,
                lang,
                now,
                (form.intent.as_deref(), form.device_signature),
                credential,
                device,
                peer,
            )
            .await);
        }
        BindOutcome::NoDeviceKey => (StatusCode::BAD_REQUEST, Text::BindNoDeviceKey),
        BindOutcome::BadIin => (StatusCode::BAD_REQUEST, Text::BindBadIin),
        BindOutcome::WrongCode => (StatusCode::FORBIDDEN, Text::BindWrongCode),
        BindOutcome::Locked => (StatusCode::TOO_MANY_REQUESTS, Text::BindLocked),
    };
    if status != StatusCode::BAD_REQUEST {
        state.throttle.failure(&student_key, now);
        state.throttle.failure(&client_key, now);
    }
    refuse(status, notice)
}

/// Who a phone is to the throttle and the security log: its address and device cookie.
fn phone_client(state: &AppState, peer: std::net::IpAddr, headers: &HeaderMap) -> Client {
    let device = cookie(headers, DEVICE_COOKIE, state.secure_cookies);
    Client::device(peer, device.as_deref())
}

/// After a successful binding: set the phone's cookies and, when the phone came with a
/// check-in intent, complete that check-in.
async fn finish_binding(
    state: &AppState,
    lang: Lang,
    now: i64,
    (intent, device_signature): (Option<&str>, Option<String>),
    credential: String,
    device: String,
    peer: std::net::IpAddr,
) -> Response {
    let intent = intent.and_then(|intent| {
        let mut intents = state
            .intents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        intents.retain(|_, (_, seen_at)| now - *seen_at <= INTENT_SECS);
        intents.remove(intent)
    });
    let response = match intent {
        Some((token, seen_at)) => {
            let check_in = PhoneCheckIn {
                presented: token.to_string(),
                device_signature,
                device_verified_for: None,
                token: Ok(token),
                credential_hash: Some(secret_hash(&credential)),
                typed: false,
                passkey: PasskeyOutcome::Absent,
                fresh_at: Some(seen_at),
                client: Client::device(peer, Some(&device)).as_str().to_owned(),
            };
            answer_check_in(state, lang, check_in, None).await
        }
        None => MessagePage::new(
            lang,
            Text::BindTitle,
            vec![Paragraph::ok(lang.text(Text::BindDone))],
        )
        .link("/pass", lang.text(Text::PassTitle))
        .link("/me", lang.text(Text::MeLink))
        .respond(StatusCode::OK),
    };
    let response = with_cookie(
        response,
        set_cookie(
            CREDENTIAL_COOKIE,
            &credential,
            TEN_YEARS_SECS,
            state.secure_cookies,
        ),
    );
    with_cookie(
        response,
        set_cookie(DEVICE_COOKIE, &device, TEN_YEARS_SECS, state.secure_cookies),
    )
}

#[derive(Template)]
#[template(path = "checkin_post.html")]
struct CheckInPostPage {
    lang: Lang,
    token: String,
    passkey: Option<PasskeyPrompt>,
}

/// What the page hands `navigator.credentials.get` (all base64url but the RP ID).
struct PasskeyPrompt {
    challenge: String,
    rp_id: String,
    credential: String,
}

/// GET never records anything: it shows a page that posts the check-in by itself,
/// first asking the student's passkey when the registry's directory lists one for the
/// phone's student.
pub async fn check_in_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    PageLang(lang): PageLang,
    headers: HeaderMap,
) -> Response {
    let credential_hash = cookie(&headers, CREDENTIAL_COOKIE, state.secure_cookies)
        .map(|credential| secret_hash(&credential));
    let passkey = match (credential_hash, ClassroomToken::parse(&token)) {
        (Some(hash), Ok(parsed)) => {
            let lesson = parsed.lesson;
            state
                .with_db(move |store| {
                    crate::marks::passkey_check(store.connection(), &hash, lesson)
                        .map_err(|source| AgentError::from(store.error(source)))
                })
                .await
                .ok()
                .flatten()
                .map(|check| {
                    use base64::Engine;
                    let challenge = crate::marks::passkey_challenge(
                        &state.settings.college_bin.to_string(),
                        &parsed,
                        &check,
                    );
                    PasskeyPrompt {
                        challenge: base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(challenge),
                        rp_id: check.rp_id,
                        credential: check.credential_id,
                    }
                })
        }
        _ => None,
    };
    render(
        StatusCode::OK,
        &CheckInPostPage {
            lang,
            token,
            passkey,
        },
    )
}

pub async fn check_in(
    State(state): State<AppState>,
    Path(token_text): Path<String>,
    PageLang(lang): PageLang,
    PeerAddress(peer): PeerAddress,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The page's script posts `device_signature=<base64url>` and, with a passkey,
    // `passkey=<four base64url parts joined by dots>`: neither needs percent-decoding
    // (anything else fails verification).
    let field = |name: &str| {
        std::str::from_utf8(&body).ok().and_then(|body| {
            body.split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
        })
    };
    let device_signature = field("device_signature");
    let passkey = field("passkey");
    let token = ClassroomToken::parse(&token_text);
    let credential_hash = cookie(&headers, CREDENTIAL_COOKIE, state.secure_cookies)
        .map(|credential| secret_hash(&credential));
    if credential_hash.is_none() {
        if let Ok(token) = &token {
            if let Some(response) = offer_binding(&state, lang, token.clone()).await {
                return response;
            }
        }
    }
    let check_in = PhoneCheckIn {
        token,
        presented: token_text,
        device_signature,
        device_verified_for: None,
        credential_hash,
        typed: false,
        passkey: PasskeyOutcome::Absent,
        fresh_at: None,
        client: phone_client(&state, peer, &headers).as_str().to_owned(),
    };
    answer_check_in(&state, lang, check_in, passkey.as_deref()).await
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
        state,
        StatusCode::FORBIDDEN,
        lang,
        Some(&intent),
        Some(Text::RejectDeviceNotBound),
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
        | Rejection::DeviceUnverified
        | Rejection::DeviceUsedForAnotherStudent
        | Rejection::StudentInactive
        | Rejection::PasskeyInvalid => StatusCode::FORBIDDEN,
    }
}

/// Verifies the phone's signature and the student's passkey assertion (here, not on
/// the writer's thread), sends the check-in to the writer and renders its answer.
async fn answer_check_in(
    state: &AppState,
    lang: Lang,
    mut check_in: PhoneCheckIn,
    passkey: Option<&str>,
) -> Response {
    use axum::response::IntoResponse;
    if let Some(hash) = &check_in.credential_hash {
        let hash = hash.clone();
        let lesson = check_in.token.as_ref().ok().map(|token| token.lesson);
        let signed = check_in.device_signature.is_some();
        let (key, passkey_check) = state
            .with_db(move |store| {
                let key = if signed {
                    crate::marks::binding_key(store.connection(), &hash)
                        .map_err(|source| AgentError::from(store.error(source)))?
                } else {
                    None
                };
                let check = match lesson {
                    Some(lesson) => crate::marks::passkey_check(store.connection(), &hash, lesson)
                        .map_err(|source| AgentError::from(store.error(source)))?,
                    None => None,
                };
                Ok((key, check))
            })
            .await
            .unwrap_or((None, None));
        if signed {
            crate::marks::verify_device(&mut check_in, key);
        }
        let public_url = state.public_url();
        let origin_host = public_url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(str::to_owned))
            .filter(|host| host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('['));
        crate::marks::verify_passkey(
            &mut check_in,
            passkey,
            passkey_check,
            &state.settings.college_bin.to_string(),
            origin_host.as_deref(),
        );
    }
    match state.writer.phone_check_in(check_in).await {
        Ok(Ok(accepted)) => confirmation(state, lang, accepted).await,
        Ok(Err(rejection)) => {
            let page = MessagePage::new(
                lang,
                Text::CheckinRefused,
                vec![Paragraph::bad(lang.text(rejection.message_key()))
                    .id("reason")
                    .reason(rejection.kind())],
            );
            let page = if matches!(
                rejection,
                Rejection::DeviceNotBound | Rejection::DeviceUnverified
            ) {
                page.link("/bind", lang.text(Text::BindTitle))
            } else {
                page
            };
            page.respond(rejection_status(rejection))
        }
        Err(failure) => WebError::write_failure(lang, &failure).into_response(),
    }
}

#[derive(Template)]
#[template(path = "confirmation.html")]
struct ConfirmationPage {
    lang: Lang,
    event_id: i64,
    status: Text,
    student: String,
    lesson: String,
    date: String,
    time: String,
    repeated: bool,
    passkey_verified: Option<bool>,
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
    render(
        StatusCode::OK,
        &ConfirmationPage {
            lang,
            event_id: accepted.event_id,
            status: match accepted.status {
                kasip_core::MarkStatus::Late => Text::CheckinLate,
                _ => Text::CheckinPresent,
            },
            student: accepted.student_name,
            lesson: lesson
                .map(|(discipline, group, room)| format!("{discipline} · {group} · {room}"))
                .unwrap_or_default(),
            date: crate::clock::local_date(&state.settings.timezone, accepted.recorded_at)
                .to_string(),
            time: format!(
                "{:02}:{:02}",
                local_seconds.rem_euclid(86_400) / 3600,
                local_seconds.rem_euclid(3600) / 60
            ),
            repeated: accepted.repeated,
            passkey_verified: accepted.passkey_verified,
        },
    )
}

#[derive(Template)]
#[template(path = "typed.html")]
struct TypedPage {
    lang: Lang,
}

pub async fn typed_form(PageLang(lang): PageLang) -> Response {
    render(StatusCode::OK, &TypedPage { lang })
}

#[derive(Deserialize)]
pub struct TypedForm {
    code: String,
    /// The device signature over the code as typed.
    #[serde(default)]
    device_signature: Option<String>,
}

pub async fn typed_check_in(
    State(state): State<AppState>,
    PageLang(lang): PageLang,
    PeerAddress(peer): PeerAddress,
    headers: HeaderMap,
    Form(form): Form<TypedForm>,
) -> Result<Response, WebError> {
    let now = state.now();
    // It needs no credential, so guesses are slowed per phone and per address.
    let phone = phone_client(&state, peer, &headers);
    let phone_key_client = phone.as_str().to_owned();
    let phone_key = Key::client("typed", &phone);
    let address_key = Key::client("typed", &Client::address(peer));
    let wait = state.throttle.wait_any(
        &[
            (&phone_key, throttle::TYPED_CODE),
            (&address_key, throttle::TYPED_CODE_ADDRESS),
        ],
        now,
    );
    if wait > 0 {
        let page = MessagePage::new(
            lang,
            Text::CheckinRefused,
            vec![Paragraph::bad(lang.text(Text::ThrottleWait))],
        )
        .respond(StatusCode::TOO_MANY_REQUESTS);
        return Ok(throttled(page, wait));
    }
    let credential_hash = cookie(&headers, CREDENTIAL_COOKIE, state.secure_cookies)
        .map(|credential| secret_hash(&credential));
    let unknown_code = |status| {
        WebError::page(
            status,
            MessagePage::new(
                lang,
                Text::CheckinRefused,
                vec![Paragraph::bad(lang.text(Text::RejectTypedCode))],
            ),
        )
    };
    let presented = form.code.clone();
    // A code is 6 characters; spaces and dashes are forgiven, a page of them is not
    // (what was presented goes into the mark's evidence).
    let Some(code) = normalise_typed_code(&form.code).filter(|_| form.code.len() <= 32) else {
        state.throttle.failure(&phone_key, now);
        state.throttle.failure(&address_key, now);
        return Err(unknown_code(StatusCode::BAD_REQUEST));
    };
    let settings = state.settings.clone();
    // The typed code names no lesson: find the open lesson whose current or previous
    // code it is, and turn it into that lesson's token.
    let found = state
        .with_db(move |store| {
            crate::phones::token_for_typed_code(
                store.connection(),
                &code,
                phone.as_str(),
                now,
                settings.qr_period_secs,
                &settings.lesson_times(),
            )
            .map_err(|source| AgentError::from(store.error(source)))
        })
        .await
        .or_failure(lang)?;
    let Some(token) = found else {
        state.throttle.failure(&phone_key, now);
        state.throttle.failure(&address_key, now);
        return Err(unknown_code(StatusCode::FORBIDDEN));
    };
    let check_in = PhoneCheckIn {
        token: Ok(token),
        presented,
        device_signature: form.device_signature,
        device_verified_for: None,
        credential_hash,
        typed: true,
        passkey: PasskeyOutcome::Absent,
        fresh_at: None,
        client: phone_key_client,
    };
    Ok(answer_check_in(&state, lang, check_in, None).await)
}

#[cfg(test)]
mod tests {
    use super::super::page::hostile;
    use super::*;

    #[test]
    fn phone_pages_escape_hostile_names() {
        let lang = Lang::fallback();
        let bind = BindPage {
            lang,
            csrf: String::new(),
            intent: Some(hostile::TEXT),
            token: Some(hostile::TEXT.into()),
            notice: Some(Text::BindWrongCode),
        };
        hostile::assert_escaped(&bind.render().expect("bind"));
        let post = CheckInPostPage {
            lang,
            token: hostile::TEXT.into(),
            passkey: Some(PasskeyPrompt {
                challenge: hostile::TEXT.into(),
                rp_id: hostile::TEXT.into(),
                credential: hostile::TEXT.into(),
            }),
        };
        hostile::assert_escaped(&post.render().expect("post"));
        let confirmation = ConfirmationPage {
            lang,
            event_id: 1,
            status: Text::CheckinPresent,
            student: hostile::TEXT.into(),
            lesson: hostile::TEXT.into(),
            date: "2026-11-23".into(),
            time: "09:01".into(),
            repeated: true,
            passkey_verified: Some(false),
        };
        hostile::assert_escaped(&confirmation.render().expect("confirmation"));
    }
}
