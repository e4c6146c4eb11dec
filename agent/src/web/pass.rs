//! `/pass`: the student's rotating pass on their bound phone (design §5.3), and the
//! registration of its public key.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::page::{cookie, escape_html, failure_page, json_error, message_page, set_cookie};
use super::phone::{LangQuery, CREDENTIAL_COOKIE};
use super::AppState;
use crate::error::AgentError;
use crate::i18n::{text, Text};
use crate::kiosks::PassKeyRefusal;
use crate::secrets::random_token;
use crate::secrets::secret_hash;

const PASS_CSRF_COOKIE: &str = "kasip_pass_csrf";
const PASS_CSRF_HEADER: &str = "x-kasip-csrf";
/// Seconds between re-signings of the pass on the phone.
const REFRESH_SECS: u32 = 5;
const SCRIPT: &str = include_str!("pass.js");

pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = query.lang(&headers);
    let Some(credential) = cookie(&headers, CREDENTIAL_COOKIE) else {
        return not_bound(lang);
    };
    let credential_hash = secret_hash(&credential);
    let found = state
        .with_db(move |store| {
            crate::kiosks::pass_state(store.connection(), &credential_hash)
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    let (iin, name, key) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return not_bound(lang),
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let csrf = random_token(24).unwrap_or_default();
    let body = format!(
        "<style>#pass-qr svg{{width:min(92vw,80vh);height:auto;display:block;margin:auto;background:#fff}}\
         #pass-name{{font-size:1.6rem;text-align:center;margin:.5rem 0}}#pass-status{{text-align:center}}</style>\
         <div id=pass data-iin=\"{iin}\" data-key=\"{key}\" data-csrf=\"{csrf}\" data-now=\"{now}\" \
         data-refresh-secs=\"{REFRESH_SECS}\" data-text-registering=\"{registering}\" data-text-ready=\"{ready}\" \
         data-text-failed=\"{failed}\" data-text-unsupported=\"{unsupported}\">\
         <p id=pass-name>{name}</p><div id=pass-qr></div><p id=pass-status>{preparing}</p></div>\
         <script src=\"/pass.js\"></script>",
        iin = iin.as_string(),
        key = escape_html(key.as_deref().unwrap_or("")),
        now = state.now(),
        name = escape_html(&name),
        registering = escape_html(text(lang, Text::PassRegistering)),
        ready = escape_html(text(lang, Text::PassReady)),
        failed = escape_html(text(lang, Text::PassFailed)),
        unsupported = escape_html(text(lang, Text::PassUnsupported)),
        preparing = text(lang, Text::PassPreparing),
    );
    let mut response = message_page(StatusCode::OK, lang, Text::PassTitle, &body);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(PASS_CSRF_COOKIE, &csrf, 86_400, state.secure_cookies),
    );
    response
}

fn not_bound(lang: crate::i18n::Lang) -> Response {
    message_page(
        StatusCode::UNAUTHORIZED,
        lang,
        Text::PassTitle,
        &format!(
            "<p class=bad>{}</p><p><a href=\"/bind\">{}</a></p>",
            text(lang, Text::PassNotBound),
            text(lang, Text::BindTitle)
        ),
    )
}

#[derive(Deserialize)]
pub struct KeyRegistration {
    public_key: String,
    proof: String,
}

pub async fn register_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let csrf = headers
        .get(PASS_CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !super::page::double_submit_ok(&headers, PASS_CSRF_COOKIE, csrf) {
        return json_error(
            StatusCode::FORBIDDEN,
            "the pass page's security token is missing or wrong; reload /pass",
        );
    }
    let Some(credential) = cookie(&headers, CREDENTIAL_COOKIE) else {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "this phone is not linked to a student; link it on /bind first",
        );
    };
    let registration: KeyRegistration = match serde_json::from_slice(&body) {
        Ok(registration) => registration,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"public_key\", \"proof\"}}: {error}"),
            )
        }
    };
    let now = state.now();
    let window = i64::from(state.settings.pass_window_secs);
    let credential_hash = secret_hash(&credential);
    let outcome = state
        .with_db(move |store| {
            crate::kiosks::register_pass_key(
                store.connection(),
                &credential_hash,
                &registration.public_key,
                &registration.proof,
                now,
                window,
            )
            .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    match outcome {
        Ok(Ok(student)) => {
            tracing::info!(student = %student.as_string(), "pass key registered");
            Json(serde_json::json!({ "registered": true })).into_response()
        }
        Ok(Err(PassKeyRefusal::NotBound)) => json_error(
            StatusCode::UNAUTHORIZED,
            "this phone is not linked to a student (or was replaced by another phone); link it on /bind",
        ),
        Ok(Err(PassKeyRefusal::BadProof)) => json_error(
            StatusCode::BAD_REQUEST,
            "the key is not a P-256 public key, or the proof pass is not signed by it for this student now",
        ),
        Err(error) => {
            tracing::error!(%error, "cannot register a pass key");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent cannot store the key right now; try again in a minute",
            )
        }
    }
}
