//! HTML scaffolding shared by every page: layout, escaping, language, cookies.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

pub use crate::html::escape_html;
use crate::i18n::{text, Lang, Text};

/// The reader's language: `?lang=`, then the `lang` cookie, then Accept-Language.
pub fn language(query_lang: Option<&str>, headers: &HeaderMap) -> Lang {
    let cookie_lang = cookie(headers, "lang");
    Lang::negotiate(
        query_lang.or(cookie_lang.as_deref()),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok()),
    )
}

/// The value of one cookie from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the camera app's top-level navigation
/// must carry it), Secure under TLS.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// The double-submit CSRF check of forms shown before a session exists (sign-in,
/// binding): the hidden field must equal the cookie set with the form.
pub fn double_submit_ok(headers: &HeaderMap, cookie_name: &str, form_token: &str) -> bool {
    cookie(headers, cookie_name).is_some_and(|expected| {
        !form_token.is_empty()
            && kasip_core::constant_time_eq(expected.as_bytes(), form_token.as_bytes())
    })
}

/// A whole page in the shared layout, with a language switcher.
pub fn layout(lang: Lang, title: &str, body: &str) -> String {
    let switcher = Lang::all()
        .map(|choice| format!("<a href=\"?lang={0}\">{0}</a>", choice.code()))
        .collect::<Vec<_>>()
        .join(" · ");
    format!(
        "<!doctype html><html lang=\"{code}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body><main>{body}</main>\
         <footer>{language}: {switcher}</footer></body></html>",
        code = lang.code(),
        title = escape_html(title),
        language = text(lang, Text::Language),
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;line-height:1.4}\
main{max-width:48rem;margin:auto}table{border-collapse:collapse}td,th{padding:.3rem .6rem;\
border-bottom:1px solid #ddd;text-align:left}input,select,button{font-size:1.1rem;padding:.4rem}\
.ok{color:#0a6b2d}.bad{color:#a40e26}footer{margin-top:2rem;color:#555;text-align:center}";

/// A page with a status code: a confirmation or a refusal in the reader's language.
pub fn message_page(status: StatusCode, lang: Lang, title_key: Text, body: &str) -> Response {
    (status, Html(layout(lang, text(lang, title_key), body))).into_response()
}

/// A refusal page: `status` and the catalog sentence `key` in the reader's language.
pub fn refusal(status: StatusCode, lang: Lang, key: Text) -> Response {
    message_page(
        status,
        lang,
        Text::ErrorTitle,
        &format!("<p class=bad>{}</p>", text(lang, key)),
    )
}

/// 503 for a mark the writer could not store: a full or read-only disk says so plainly
/// (IT must act; the student must be marked later), anything else asks to retry.
pub fn write_failure_page(lang: Lang, failure: &crate::marks::WriteFailure) -> Response {
    if !failure.is_storage_unavailable() {
        return failure_page(lang, &failure.0);
    }
    tracing::error!(detail = %failure.0, "refusing marks: the disk is full or read-only");
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        lang,
        Text::ErrorTitle,
        &format!(
            "<p class=bad id=reason data-reason=\"storage_unavailable\">{}</p>",
            text(lang, Text::ErrorStorageUnavailable)
        ),
    )
}

/// `{"error": sentence}` with `status`: the JSON APIs' (kiosk, pass key) refusals.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// 500/503 page for failures that are not the reader's fault; the detail goes to the log.
pub fn failure_page(lang: Lang, detail: &str) -> Response {
    tracing::error!(detail, "request failed");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        lang,
        Text::ErrorUnavailable,
    )
}
