//! The pages' style sheet and scripts, served from the binary. They are files, not
//! inline, so the Content-Security-Policy allows no inline script or style at all.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Every page's style.
pub const STYLE: &str = include_str!("assets/style.css");
/// The phone's device key: made at binding, signs every check-in.
pub const CHECKIN: &str = include_str!("assets/checkin.js");
/// The projector's code, fetched every second.
pub const DISPLAY: &str = include_str!("assets/display.js");
/// A lesson's roster: one-tap marks saved in place, and live as phones check in.
pub const ROSTER: &str = include_str!("assets/roster.js");
/// Base64url and the IndexedDB key store the pass and the device key share.
pub const KEYS: &str = include_str!("assets/keys.js");
/// The student's rotating pass.
pub const PASS: &str = include_str!("assets/pass.js");

/// `GET` of one asset. `no-cache`: a browser asks again (cheaply) after an upgrade.
pub fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn style() -> Response {
    serve("text/css; charset=utf-8", STYLE)
}

pub async fn checkin() -> Response {
    serve("text/javascript; charset=utf-8", CHECKIN)
}

pub async fn display() -> Response {
    serve("text/javascript; charset=utf-8", DISPLAY)
}

pub async fn roster() -> Response {
    serve("text/javascript; charset=utf-8", ROSTER)
}

pub async fn keys() -> Response {
    serve("text/javascript; charset=utf-8", KEYS)
}

pub async fn pass() -> Response {
    serve("text/javascript; charset=utf-8", PASS)
}
