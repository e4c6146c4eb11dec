//! The full-screen status page a browser in kiosk mode shows beside the camera: green
//! with the student's name, or red with the reason, in every language of the catalog. Served on localhost;
//! the page long-polls `/status.json?after=N`, so a verdict shows as soon as it exists.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::KioskError;
use kasip_core::{Lang, Text};

use crate::verify::{Refusal, Verdict};

/// What the screen shows now.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Screen {
    /// Increases with every verdict.
    pub seq: u64,
    /// idle, accepted, repeat, refused, or no_lesson (the agent answered that the pass
    /// marked nothing: no lesson of the student's group here now).
    pub state: &'static str,
    /// The scan an accepted screen shows, so the agent's later answer finds it.
    #[serde(skip)]
    pub scan: String,
    pub name: String,
    /// The refusal's code (a key of the page's message table).
    pub reason: String,
    pub at: i64,
}

/// The screen's current state, shared by the scanning loop and the page.
#[derive(Clone)]
pub struct StatusBoard {
    sender: watch::Sender<Screen>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        let (sender, _) = watch::channel(Screen {
            state: "idle",
            ..Screen::default()
        });
        Self { sender }
    }
}

impl StatusBoard {
    pub fn show(&self, verdict: &Verdict, at: i64) {
        self.sender.send_modify(|screen| {
            screen.seq += 1;
            screen.at = at;
            match verdict {
                Verdict::Accepted { name, scan_id, .. } => {
                    screen.state = "accepted";
                    screen.name = name.clone();
                    screen.reason.clear();
                    screen.scan = scan_id.clone();
                }
                Verdict::Repeat { name, .. } => {
                    screen.state = "repeat";
                    screen.name = name.clone();
                    screen.reason.clear();
                }
                Verdict::Refused { refusal, .. } => {
                    screen.state = "refused";
                    screen.name.clear();
                    screen.reason = refusal.code().to_owned();
                    screen.scan.clear();
                }
            }
        });
    }

    /// The agent answered that `scan` marked nothing: the screen still showing it says
    /// so instead of a green "checked in".
    pub fn no_lesson(&self, scan: &str, at: i64) {
        self.sender.send_if_modified(|screen| {
            if screen.scan != scan || screen.state != "accepted" {
                return false;
            }
            screen.seq += 1;
            screen.at = at;
            screen.state = "no_lesson";
            true
        });
    }

    pub fn current(&self) -> Screen {
        self.sender.borrow().clone()
    }
}

#[derive(Deserialize)]
struct After {
    after: Option<u64>,
}

async fn status_json(State(board): State<StatusBoard>, Query(query): Query<After>) -> Response {
    let mut receiver = board.sender.subscribe();
    if let Some(after) = query.after {
        // Long poll: answer when something newer exists, or after 20 s with what is.
        let _ = tokio::time::timeout(
            Duration::from_secs(20),
            receiver.wait_for(|screen| screen.seq > after),
        )
        .await;
    }
    let screen = receiver.borrow().clone();
    ([(header::CACHE_CONTROL, "no-store")], Json(screen)).into_response()
}

/// The screen's words in every catalog language, keyed as the page's script reads them
/// (the screen's state, or a refusal's code).
fn screen_texts() -> serde_json::Value {
    let words: &[(&str, Text)] = &[
        ("idle", Text::KioskIdle),
        ("accepted", Text::KioskAccepted),
        ("repeat", Text::KioskRepeat),
        ("refused", Text::KioskRefused),
        ("no_lesson", Text::KioskNoLesson),
    ];
    let refusals = Refusal::ALL
        .iter()
        .map(|refusal| (refusal.code(), refusal.text()));
    Lang::all()
        .map(|lang| {
            let texts: serde_json::Map<String, serde_json::Value> = words
                .iter()
                .copied()
                .chain(refusals.clone())
                .map(|(code, key)| (code.to_owned(), lang.text(key).into()))
                .collect();
            (lang.code().to_owned(), serde_json::Value::Object(texts))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

async fn page() -> Html<String> {
    let languages: String = Lang::all()
        .map(|lang| format!("<a href=\"?lang={0}\">{0}</a>", lang.code()))
        .collect();
    // JSON of catalog text inside a script: `<` escaped so no text can close the tag.
    let texts = screen_texts().to_string().replace('<', "\\u003c");
    Html(
        PAGE.replace("__TEXT__", &texts)
            .replace("__LANGUAGES__", &languages)
            .replace("__FALLBACK__", kasip_core::text::FALLBACK_LANGUAGE),
    )
}

/// `listener` with TCP_NODELAY on every connection: small answers go out at once instead
/// of waiting ~40 ms for Nagle's algorithm and a delayed ACK.
fn no_delay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    })
}

/// Serves the page on `listen` until the process ends; returns the bound address.
pub async fn serve(listen: SocketAddr, board: StatusBoard) -> Result<SocketAddr, KioskError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| {
            KioskError::Usage(format!(
                "cannot serve the status page on {listen}: {error}; choose another --status-listen"
            ))
        })?;
    let address = listener
        .local_addr()
        .map_err(KioskError::runtime("cannot read the status page's address"))?;
    let app = Router::new()
        .route("/", get(page))
        .route("/status.json", get(status_json))
        .with_state(board);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(no_delay(listener), app).await {
            tracing::error!(%error, "the status page stopped");
        }
    });
    Ok(address)
}

/// The message for a refusal in English, for the stdout line and logs (lower case, as
/// every log line is).
pub fn refusal_text(refusal: Refusal) -> String {
    let sentence = Lang::from_code("en")
        .unwrap_or_else(Lang::fallback)
        .text(refusal.text());
    let mut characters = sentence.chars();
    characters.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(characters).collect()
    })
}

const PAGE: &str = r#"<!doctype html>
<html lang="__FALLBACK__"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>KasipTech kiosk</title>
<style>
html,body{margin:0;height:100%;font-family:system-ui,sans-serif;color:#fff;background:#333}
body{display:flex;align-items:center;justify-content:center;text-align:center;transition:background .1s}
body.accepted,body.repeat{background:#0a7d32}body.refused{background:#b3141f}body.no_lesson{background:#8a5a00}
#title{font-size:9vmin;font-weight:700;margin:0}#detail{font-size:5vmin;margin-top:3vmin;padding:0 4vmin}
nav{position:fixed;bottom:1vmin;right:2vmin;font-size:max(2.5vmin,16px)}nav a{color:#fff;display:inline-block;min-width:24px;min-height:24px;padding:2px 4px;margin-left:1vmin}
</style></head>
<body class="idle"><main><div role="status"><h1 id="title"></h1><p id="detail"></p></div></main>
<nav>__LANGUAGES__</nav>
<script>
"use strict";
const TEXT = __TEXT__;
const lang = (new URLSearchParams(location.search).get("lang") || navigator.language || "__FALLBACK__").slice(0, 2);
const text = TEXT[lang] || TEXT["__FALLBACK__"];
document.documentElement.lang = TEXT[lang] ? lang : "__FALLBACK__";
let seq = 0, idleTimer = null;
function show(screen) {
  document.body.className = screen.state;
  document.getElementById("title").textContent = text[screen.state] || screen.state;
  document.getElementById("detail").textContent = screen.state === "refused" ? (text[screen.reason] || screen.reason) : screen.name;
  clearTimeout(idleTimer);
  if (screen.state !== "idle") idleTimer = setTimeout(() => show({state: "idle", name: ""}), 4000);
}
async function poll() {
  try {
    const response = await fetch("/status.json?after=" + seq, {cache: "no-store"});
    const screen = await response.json();
    if (screen.seq > seq) { seq = screen.seq; show(screen); }
  } catch (error) { await new Promise((resolve) => setTimeout(resolve, 1000)); }
  poll();
}
show({state: "idle", name: ""});
fetch("/status.json").then((r) => r.json()).then((screen) => { seq = screen.seq; poll(); });
</script></body></html>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_every_language_and_every_refusal_from_the_catalog() {
        let texts = screen_texts();
        for lang in Lang::all() {
            let words = &texts[lang.code()];
            assert_eq!(words["idle"], lang.text(Text::KioskIdle));
            for refusal in Refusal::ALL {
                assert_eq!(words[refusal.code()], lang.text(refusal.text()));
            }
        }
        assert_eq!(
            refusal_text(Refusal::Replayed),
            "this pass was already used"
        );
    }
}
