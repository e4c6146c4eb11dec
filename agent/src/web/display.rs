//! The projector: its page, its feed of the current code and count (server-sent events,
//! woken by the mark writer), the one-off poll, and the codes rendered once per step.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kasip_core::{step_at, typed_code, ClassroomToken, Lang, LessonKey, Text};
use serde::Serialize;

use super::error::{OrFailure, WebError};
use super::extract::{SessionCheck, StaffPage};
use super::page::render;
use super::staff::accessible_lesson;
use super::AppState;
use crate::lessons::{self, LessonState, LessonSummary};

/// What the display page fetches every second: the agent's clock decides the code.
#[derive(Serialize)]
pub struct DisplayNow<'a> {
    pub state: LessonState,
    /// Why there is no code, in the viewer's language; empty while the lesson is open.
    pub notice: &'a str,
    pub step: u64,
    pub url: &'a str,
    pub svg: &'a str,
    pub typed_code: &'a str,
    pub qr_version: i16,
    pub checked_in: i64,
    pub expected: i64,
    pub seconds_left: u64,
}

/// One rotation step's code as a projector shows it: rendered once, then served from
/// memory to every poll of that step (a poll rendered its QR each time: ~1.3 ms of CPU,
/// ten times a ping, once a second per projector).
pub struct ShownCode {
    step: u64,
    /// The opening's key: a code is never served for another key.
    qr_key: Vec<u8>,
    url: String,
    svg: String,
    typed: String,
    version: i16,
}

/// `lesson_id`'s code at `step` under `qr_key`, from the cache or rendered now. The cache
/// keeps one step per lesson, so it holds no more than the lessons being shown.
fn shown_code(
    state: &AppState,
    lesson_id: i64,
    step: u64,
    qr_key: Vec<u8>,
) -> Result<std::sync::Arc<ShownCode>, qrcode::types::QrError> {
    let cached = state
        .shown_codes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&lesson_id)
        .filter(|code| code.step == step && code.qr_key == qr_key)
        .cloned();
    if let Some(code) = cached {
        return Ok(code);
    }
    let key = LessonKey::new(&qr_key);
    let url = format!(
        "{}/c/{}",
        state.public_url(),
        ClassroomToken::mint(&key, lesson_id, step)
    );
    let (svg, version) = qr_svg(&url)?;
    let code = std::sync::Arc::new(ShownCode {
        step,
        typed: typed_code(&key, lesson_id, step),
        qr_key,
        url,
        svg,
        version,
    });
    let mut codes = state
        .shown_codes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Lessons no longer shown (their step has passed) leave the cache.
    codes.retain(|_, shown| shown.step + 1 >= step);
    codes.insert(lesson_id, std::sync::Arc::clone(&code));
    Ok(code)
}

pub(super) fn qr_svg(url: &str) -> Result<(String, i16), qrcode::types::QrError> {
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)?;
    let version = match code.version() {
        qrcode::Version::Normal(version) | qrcode::Version::Micro(version) => version,
    };
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok((svg, version))
}

/// What a projector shows of a lesson now, read in one trip to the database: the
/// session, the lesson (if this staff member may show it) and its opening's key.
struct Snapshot {
    lesson: LessonSummary,
    key: Option<Vec<u8>>,
}

async fn snapshot(
    state: &AppState,
    lesson_id: i64,
    session: SessionCheck,
    now: i64,
) -> Result<Snapshot, WebError> {
    let lang = session.lang;
    let settings = state.settings.clone();
    let found = state
        .with_db(move |store| {
            let Some(member) = session.member(store)? else {
                return Ok(Err(WebError::SignInFirst { lang }));
            };
            let failure = |source| crate::error::AgentError::from(store.error(source));
            let times = settings.lesson_times();
            let Some(lesson) =
                lessons::summary_for(store.connection(), &member, lesson_id, now, &times)
                    .map_err(failure)?
            else {
                return Ok(Err(WebError::refused(
                    lang,
                    StatusCode::FORBIDDEN,
                    Text::StaffNotYours,
                )));
            };
            let key = lessons::open_lesson_at(store.connection(), lesson_id, now, &times)
                .map_err(failure)?
                .map(|open| open.qr_key);
            Ok(Ok(Snapshot { lesson, key }))
        })
        .await
        .or_failure(lang)?;
    found
}

/// The projector's view of `snapshot` at `now`: the code's SVG, URL and typed code only
/// when `with_code` (a projector that shows this step's code already gets the count).
fn display_now<'a>(
    state: &AppState,
    lang: Lang,
    snapshot: &Snapshot,
    shown: Option<&'a ShownCode>,
    step: u64,
    now: i64,
    with_code: bool,
) -> DisplayNow<'a> {
    let period = u64::from(state.settings.qr_period_secs);
    let text = |pick: fn(&ShownCode) -> &str| match shown {
        Some(code) if with_code => pick(code),
        _ => "",
    };
    DisplayNow {
        state: snapshot.lesson.state,
        notice: snapshot
            .lesson
            .state
            .notice()
            .map_or("", |notice| lang.text(notice)),
        step,
        url: text(|code| &code.url),
        svg: text(|code| &code.svg),
        typed_code: text(|code| &code.typed),
        qr_version: shown.map_or(0, |code| code.version),
        checked_in: snapshot.lesson.checked_in,
        expected: snapshot.lesson.expected,
        seconds_left: period - (now.max(0) as u64 % period),
    }
}

/// The code of `snapshot`'s lesson at `step`, when it is open.
fn code_of(
    state: &AppState,
    lesson_id: i64,
    snapshot: &Snapshot,
    step: u64,
) -> Result<Option<Arc<ShownCode>>, qrcode::types::QrError> {
    snapshot
        .key
        .clone()
        .map(|key| shown_code(state, lesson_id, step, key))
        .transpose()
}

/// `GET /display/{id}/current`: one poll (the projector's fallback, and scripts').
pub async fn display_current(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    RawQuery(query): RawQuery,
    session: SessionCheck,
) -> Result<Response, WebError> {
    let lang = session.lang;
    let now = state.now();
    let snapshot = snapshot(&state, lesson_id, session, now).await?;
    let step = step_at(now, state.settings.qr_period_secs);
    let shown = code_of(&state, lesson_id, &snapshot, step).or_failure(lang)?;
    // `?shown=STEP`, the step whose code the projector shows; anything else is ignored.
    let shown_step = query.as_deref().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("shown="))
            .and_then(|value| value.parse::<u64>().ok())
    });
    let now_shown = display_now(
        &state,
        lang,
        &snapshot,
        shown.as_deref(),
        step,
        now,
        shown_step != Some(step),
    );
    let mut response = Json(now_shown).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// How often an idle feed re-reads the session (a sign-out ends the feed) and the
/// lesson (a change made by another process).
const FEED_RECHECK: Duration = Duration::from_secs(15);
/// A feed reads the database at most this often: every commit wakes every feed, and a
/// burst of check-ins in one room must not make each projector read once per commit.
const FEED_MIN_GAP: Duration = Duration::from_secs(1);

/// What a projector's feed last sent, to send only what changed.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Sent {
    state: LessonState,
    step: Option<u64>,
    checked_in: i64,
    expected: i64,
}

struct Feed {
    state: AppState,
    lesson_id: i64,
    session: SessionCheck,
    changes: Arc<crate::marks::Changes>,
    wake: tokio::sync::watch::Receiver<u64>,
    /// The lesson's version (`Changes::version`) at the last read.
    version: u64,
    sent: Option<Sent>,
    /// When the database was last read for this feed.
    read_at: Option<tokio::time::Instant>,
    ended: bool,
}

/// `GET /display/{id}/events`: the projector's feed (server-sent events). An event
/// `now` (the `DisplayNow` JSON, the code only when the step changed) goes out when the
/// step, the count or the lesson's state changes: the writer's commits and lesson
/// openings wake the feed, so an unchanged projector costs nothing between steps. A
/// sign-out or a lost right to show the lesson ends it with `signed-out`; the browser
/// reconnects by itself after a dropped connection.
pub async fn display_events(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    session: SessionCheck,
) -> Result<Response, WebError> {
    // Refused as a page before the stream starts: not signed in, not this lesson.
    snapshot(&state, lesson_id, session.clone(), state.now()).await?;
    let changes = state.writer.changes();
    let feed = Feed {
        wake: changes.subscribe(),
        version: changes.version(lesson_id),
        changes,
        state,
        lesson_id,
        session,
        sent: None,
        read_at: None,
        ended: false,
    };
    let events = futures_util::stream::unfold(feed, next_event);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

async fn next_event(mut feed: Feed) -> Option<(Result<Event, Infallible>, Feed)> {
    if feed.ended {
        return None;
    }
    let period = feed.state.settings.qr_period_secs;
    loop {
        if feed.sent.is_some() {
            let now = feed.state.now();
            let until_step = u64::from(period) - (now.max(0) as u64 % u64::from(period));
            // Fixed before waiting: wakes for other lessons do not push them back.
            let started = tokio::time::Instant::now();
            let (next_step, recheck) = (
                started + Duration::from_secs(until_step),
                started + FEED_RECHECK,
            );
            loop {
                tokio::select! {
                    _ = feed.wake.changed() => {
                        // Another lesson's marks: nothing to read.
                        if feed.changes.version(feed.lesson_id) == feed.version {
                            continue;
                        }
                        if let Some(read_at) = feed.read_at {
                            tokio::time::sleep_until(read_at + FEED_MIN_GAP).await;
                        }
                    }
                    () = tokio::time::sleep_until(next_step) => {}
                    () = tokio::time::sleep_until(recheck) => {}
                    () = feed.state.stopping() => return None,
                }
                break;
            }
        }
        feed.read_at = Some(tokio::time::Instant::now());
        // Taken before the read: a commit after it moves the version again.
        feed.version = feed.changes.version(feed.lesson_id);
        let now = feed.state.now();
        let session = feed.session.at(feed.state.clock_high_water());
        let lang = session.lang;
        let snapshot = match snapshot(&feed.state, feed.lesson_id, session, now).await {
            Ok(snapshot) => snapshot,
            Err(_) => {
                feed.ended = true;
                let event = Event::default()
                    .event("signed-out")
                    .data(lang.text(Text::DisplaySignedOut));
                return Some((Ok(event), feed));
            }
        };
        let step = step_at(now, period);
        let shown = match code_of(&feed.state, feed.lesson_id, &snapshot, step) {
            Ok(shown) => shown,
            Err(error) => {
                tracing::error!(%error, "cannot draw the classroom code");
                None
            }
        };
        let sent = Sent {
            state: snapshot.lesson.state,
            step: shown.as_ref().map(|_| step),
            checked_in: snapshot.lesson.checked_in,
            expected: snapshot.lesson.expected,
        };
        if feed.sent == Some(sent) {
            continue;
        }
        let with_code = feed.sent.map(|before| before.step) != Some(sent.step);
        let body = display_now(
            &feed.state,
            lang,
            &snapshot,
            shown.as_deref(),
            step,
            now,
            with_code,
        );
        feed.sent = Some(sent);
        let event = Event::default()
            .event("now")
            .json_data(body)
            .unwrap_or_else(|_| Event::default().comment("unwritable"));
        return Some((Ok(event), feed));
    }
}

#[derive(Template)]
#[template(path = "display.html")]
struct DisplayPage {
    lang: Lang,
    lesson: LessonSummary,
    room: String,
    /// Where a phone that cannot read the QR types the code.
    typed_address: String,
}

pub async fn display_page(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    StaffPage(staff): StaffPage,
) -> Result<Response, WebError> {
    let lesson = accessible_lesson(&state, &staff.member, staff.lang, lesson_id).await?;
    let room = if lesson.mode == "online" {
        "online".to_owned()
    } else {
        format!("{} · {}", lesson.site, lesson.room)
    };
    let typed_address = format!(
        "{}/c",
        state
            .public_url()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
    );
    Ok(render(
        StatusCode::OK,
        &DisplayPage {
            lang: staff.lang,
            lesson,
            room,
            typed_address,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::page::hostile;
    use super::*;

    #[test]
    fn the_display_page_escapes_hostile_names() {
        let display = DisplayPage {
            lang: Lang::fallback(),
            lesson: LessonSummary {
                id: 1,
                date: "2026-11-23".into(),
                start: "09:00".into(),
                end: "10:30".into(),
                group: hostile::TEXT.into(),
                discipline: hostile::TEXT.into(),
                teacher_iin: "850515400012".into(),
                teacher_name: hostile::TEXT.into(),
                site: hostile::TEXT.into(),
                room: hostile::TEXT.into(),
                mode: "offline".into(),
                state: LessonState::Open,
                checked_in: 0,
                expected: 1,
            },
            room: hostile::TEXT.into(),
            typed_address: hostile::TEXT.into(),
        };
        hostile::assert_escaped(&display.render().expect("display"));
    }
}
