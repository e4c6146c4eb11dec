//! What every page shares: rendering a template, the reader's language, cookies, and the
//! double-submit check of forms shown before a session exists.

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use kasip_core::Lang;

/// A mark's status in words.
pub fn status_text(status: kasip_core::MarkStatus) -> kasip_core::Text {
    use kasip_core::{MarkStatus, Text};
    match status {
        MarkStatus::Present => Text::MarkPresent,
        MarkStatus::Late => Text::MarkLate,
        MarkStatus::Absent => Text::MarkAbsent,
        MarkStatus::Excused => Text::MarkExcused,
    }
}

/// How a mark was made, in words.
pub fn method_text(method: kasip_core::MarkMethod) -> kasip_core::Text {
    use kasip_core::{MarkMethod, Text};
    match method {
        MarkMethod::QrPhone => Text::MethodQrPhone,
        MarkMethod::QrKiosk => Text::MethodQrKiosk,
        MarkMethod::QrTyped => Text::MethodQrTyped,
        MarkMethod::Manual => Text::MethodManual,
        MarkMethod::LateEntry => Text::MethodLateEntry,
    }
}

/// `template` as an HTML page with `status`. A template that fails to render (a bug: the
/// templates are checked at compile time) is a 500 and a log line, never a panic.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(error = %crate::error::report(&error), "a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render\n",
            )
                .into_response()
        }
    }
}

/// The reader's language: `?lang=`, then the `lang` cookie, then Accept-Language.
pub fn language(query_lang: Option<&str>, headers: &HeaderMap) -> Lang {
    // Not set by the agent (a link's ?lang= chooses), so never a secret: unprefixed.
    let cookie_lang = cookie(headers, "lang", false);
    Lang::negotiate(
        query_lang.or(cookie_lang.as_deref()),
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok()),
    )
}

/// `text` safe inside a double-quoted HTML attribute.
pub fn escape_attribute(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The value of one cookie from the request.
pub fn cookie(headers: &HeaderMap, name: &str, secure: bool) -> Option<String> {
    let name = cookie_name(name, secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name.as_ref())
        .map(|(_, value)| value.to_owned())
}

/// A cookie's name on the wire: under TLS with the `__Host-` prefix, which browsers
/// accept only from this exact host, over HTTPS, for the whole site, so that another
/// host of the college's domain cannot plant a session or a device credential.
fn cookie_name(name: &str, secure: bool) -> std::borrow::Cow<'_, str> {
    if secure {
        format!("__Host-{name}").into()
    } else {
        name.into()
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the camera app's top-level navigation
/// must carry it), Secure and `__Host-` under TLS.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let name = cookie_name(name, secure);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// `response` with a cookie set.
pub fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// The double-submit CSRF check of forms shown before a session exists (sign-in,
/// binding, the pass key): the hidden field must equal the cookie set with the form.
pub fn double_submit_ok(
    headers: &HeaderMap,
    cookie_name: &str,
    secure: bool,
    form_token: &str,
) -> bool {
    cookie(headers, cookie_name, secure).is_some_and(|expected| {
        !form_token.is_empty()
            && crate::secrets::same_secret(expected.as_bytes(), form_token.as_bytes())
    })
}

/// `{"error": sentence}` with `status`: the JSON APIs' (kiosk, pass key) refusals.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// For the pages' tests: text no page may show as markup, and the check that it did not.
#[cfg(test)]
pub mod hostile {
    /// A name or code as an attacker would choose it.
    pub const TEXT: &str = "<script>alert(1)</script>\"'&";

    /// `html` shows `TEXT` only escaped, in text and in attributes.
    pub fn assert_escaped(html: &str) {
        assert!(!html.contains("<script>alert"), "unescaped: {html}");
        assert!(
            !html.contains("\"'&"),
            "unescaped quote or ampersand: {html}"
        );
        assert!(
            html.contains("&#60;script&#62;alert(1)"),
            "not shown at all: {html}"
        );
    }
}
