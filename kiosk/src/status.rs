//! The full-screen status page a browser in kiosk mode shows beside the camera: green
//! with the student's name, or red with the reason, in kk/ru/en. Served on localhost;
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
use crate::verify::{Refusal, Verdict};

/// What the screen shows now.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Screen {
    /// Increases with every verdict.
    pub seq: u64,
    /// idle, accepted, repeat or refused.
    pub state: &'static str,
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
                Verdict::Accepted { name, .. } => {
                    screen.state = "accepted";
                    screen.name = name.clone();
                    screen.reason.clear();
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
                }
            }
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

async fn page() -> Html<&'static str> {
    Html(PAGE)
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
        .map_err(|error| KioskError::Server(error.to_string()))?;
    let app = Router::new()
        .route("/", get(page))
        .route("/status.json", get(status_json))
        .with_state(board);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the status page stopped");
        }
    });
    Ok(address)
}

/// The message for a refusal in English, for the stdout line and logs.
pub fn refusal_text(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::NotAPass => "this QR code is not a student pass",
        Refusal::UnknownStudent => {
            "no pass key is registered for this student: open /pass on the linked phone while on the college network"
        }
        Refusal::Forged => "the pass's signature does not match this student's key",
        Refusal::Stale => "the pass is too old: keep the pass page open, do not show a screenshot",
        Refusal::FromTheFuture => "the pass is from the future: the phone's clock is wrong",
        Refusal::Replayed => "this pass was already used",
        Refusal::Inactive => "the student's status does not allow check-in (expelled or on leave)",
    }
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>KasipTech kiosk</title>
<style>
html,body{margin:0;height:100%;font-family:system-ui,sans-serif;color:#fff;background:#333}
body{display:flex;align-items:center;justify-content:center;text-align:center;transition:background .1s}
body.accepted,body.repeat{background:#0a7d32}body.refused{background:#b3141f}
#title{font-size:9vmin;font-weight:700}#detail{font-size:5vmin;margin-top:3vmin;padding:0 4vmin}
nav{position:fixed;bottom:1vmin;right:2vmin;font-size:2.5vmin}nav a{color:#ddd;margin-left:1vmin}
</style></head>
<body class="idle"><main><div id="title"></div><div id="detail"></div></main>
<nav><a href="?lang=kk">kk</a><a href="?lang=ru">ru</a><a href="?lang=en">en</a></nav>
<script>
"use strict";
const TEXT = {
  kk: {idle: "Рұқсатнаманы камераға көрсетіңіз", accepted: "Белгіленді", repeat: "Белгіленіп қойған",
       refused: "Қабылданбады", not_a_pass: "Бұл QR-код студент рұқсатнамасы емес",
       unknown_student: "Бұл студенттің кілті тіркелмеген: байланыстырылған телефонда /pass бетін ашыңыз",
       forged: "Рұқсатнама қолтаңбасы сәйкес емес", stale: "Рұқсатнама ескірген: скриншот емес, бетті ашық ұстаңыз",
       from_the_future: "Телефон сағаты дұрыс емес", replayed: "Бұл рұқсатнама бұрын пайдаланылған",
       inactive: "Студент мәртебесі белгілеуге рұқсат бермейді"},
  ru: {idle: "Покажите пропуск камере", accepted: "Отмечено", repeat: "Уже отмечено",
       refused: "Отказ", not_a_pass: "Этот QR-код не пропуск студента",
       unknown_student: "Ключ этого студента не зарегистрирован: откройте /pass на привязанном телефоне",
       forged: "Подпись пропуска не совпадает", stale: "Пропуск устарел: держите страницу открытой, скриншот не подойдёт",
       from_the_future: "Часы телефона идут неверно", replayed: "Этот пропуск уже использован",
       inactive: "Статус студента не позволяет отмечаться"},
  en: {idle: "Show your pass to the camera", accepted: "Checked in", repeat: "Already checked in",
       refused: "Refused", not_a_pass: "This QR code is not a student pass",
       unknown_student: "No pass key registered for this student: open /pass on the linked phone",
       forged: "The pass's signature does not match", stale: "The pass is too old: keep the page open, a screenshot will not work",
       from_the_future: "The phone's clock is wrong", replayed: "This pass was already used",
       inactive: "The student's status does not allow check-in"},
};
const lang = (new URLSearchParams(location.search).get("lang") || navigator.language || "ru").slice(0, 2);
const text = TEXT[lang] || TEXT.ru;
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
