//! `/pass`: the student's rotating pass on their bound phone (design §5.3), and the
//! registration of its public key.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{MessagePage, OrFailure, Paragraph, WebError};
use super::extract::PageLang;
use super::page::{cookie, json_error, render, set_cookie, with_cookie};
use super::phone::CREDENTIAL_COOKIE;
use super::AppState;
use crate::error::AgentError;
use crate::kiosks::PassKeyRefusal;
use crate::secrets::{random_token, secret_hash};
use kasip_core::{Lang, Text};

const PASS_CSRF_COOKIE: &str = "kasip_pass_csrf";
const PASS_CSRF_HEADER: &str = "x-kasip-csrf";
/// Seconds between re-signings of the pass on the phone.
const REFRESH_SECS: u32 = 5;

#[derive(Template)]
#[template(path = "pass.html")]
struct PassPage {
    lang: Lang,
    iin: String,
    key: String,
    csrf: String,
    now: i64,
    refresh_secs: u32,
    name: String,
}

/// A student's page asked for by a phone that is not linked: 401, and the way to link it.
pub(super) fn not_bound(lang: Lang, title: Text) -> WebError {
    WebError::page(
        StatusCode::UNAUTHORIZED,
        MessagePage::new(
            lang,
            title,
            vec![Paragraph::bad(lang.text(Text::PassNotBound))],
        )
        .link("/bind", lang.text(Text::BindTitle)),
    )
}

pub async fn page(
    State(state): State<AppState>,
    PageLang(lang): PageLang,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let not_bound = || not_bound(lang, Text::PassTitle);
    let Some(credential) = cookie(&headers, CREDENTIAL_COOKIE, state.secure_cookies) else {
        return Err(not_bound());
    };
    let credential_hash = secret_hash(&credential);
    let found = state
        .with_db(move |store| {
            crate::kiosks::pass_state(store.connection(), &credential_hash)
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await
        .or_failure(lang)?;
    let Some((iin, name, key)) = found else {
        return Err(not_bound());
    };
    let csrf = random_token(24).unwrap_or_default();
    let page = render(
        StatusCode::OK,
        &PassPage {
            lang,
            iin: iin.as_string(),
            key: key.unwrap_or_default(),
            csrf: csrf.clone(),
            now: state.now(),
            refresh_secs: REFRESH_SECS,
            name,
        },
    );
    Ok(with_cookie(
        page,
        set_cookie(PASS_CSRF_COOKIE, &csrf, 86_400, state.secure_cookies),
    ))
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
    if !super::page::double_submit_ok(&headers, PASS_CSRF_COOKIE, state.secure_cookies, csrf) {
        return json_error(
            StatusCode::FORBIDDEN,
            "the pass page's security token is missing or wrong; reload /pass",
        );
    }
    let Some(credential) = cookie(&headers, CREDENTIAL_COOKIE, state.secure_cookies) else {
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
            tracing::error!(error = %crate::error::report(&error), "cannot register a pass key");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent cannot store the key right now; try again in a minute",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::page::hostile;
    use super::*;

    #[test]
    fn the_pass_page_escapes_hostile_names() {
        let page = PassPage {
            lang: Lang::fallback(),
            iin: "060315500016".into(),
            key: hostile::TEXT.into(),
            csrf: String::new(),
            now: 0,
            refresh_secs: REFRESH_SECS,
            name: hostile::TEXT.into(),
        };
        hostile::assert_escaped(&page.render().expect("pass"));
    }
}
