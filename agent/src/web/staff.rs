//! What staff do in the browser: sign in, see today's lessons, open and close them, show
//! the rotating classroom code, and mark students who cannot scan.

use askama::Template;
use axum::extract::{Form, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use kasip_core::{step_at, typed_code, ClassroomToken, Date, Iin, LessonKey, MarkStatus};
use serde::{Deserialize, Serialize};

use super::error::{MessagePage, OrFailure, Paragraph, WebError};
use super::extract::{
    AdminForm, CsrfField, CsrfOnly, PageLang, PeerAddress, SessionCheck, Staff, StaffForm,
    StaffPage, SESSION_COOKIE,
};
use super::page::{cookie, double_submit_ok, render, set_cookie, with_cookie};
use super::throttle::{self, throttled, Client, Key};
use super::AppState;
use crate::lessons::{self, LessonState, LessonSummary};
use crate::marks::{ManualMark, ManualRefusal};
use crate::roster::RosterCounts;
use crate::secrets::random_token;
use crate::staff::{self as accounts, StaffMember, SESSION_SECS};
use kasip_core::{Lang, Text};

const LOGIN_CSRF_COOKIE: &str = "kasip_login_csrf";

/// The lesson if it exists and `member` may act on it; 403 otherwise.
async fn accessible_lesson(
    state: &AppState,
    member: &StaffMember,
    lang: Lang,
    lesson_id: i64,
) -> Result<LessonSummary, WebError> {
    let settings = state.settings.clone();
    let now = state.now();
    let member = member.clone();
    let lesson = state
        .with_db(move |store| {
            lessons::summary_for(
                store.connection(),
                &member,
                lesson_id,
                now,
                &settings.lesson_times(),
            )
            .map_err(|source| crate::error::AgentError::from(store.error(source)))
        })
        .await
        .or_failure(lang)?;
    lesson.ok_or_else(|| WebError::refused(lang, StatusCode::FORBIDDEN, Text::StaffNotYours))
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    lang: Lang,
    college: &'a str,
    rows: Vec<(Text, i64)>,
}

pub async fn home(
    State(state): State<AppState>,
    PageLang(lang): PageLang,
) -> Result<Response, WebError> {
    // The agent's clock, not the system's: the same clock decides the codes.
    let today = state.settings.local_date(state.now());
    let counts = state
        .with_db(move |store| RosterCounts::read(store, today))
        .await
        .or_failure(lang)?;
    Ok(render(
        StatusCode::OK,
        &HomePage {
            lang,
            college: &state.settings.college_name,
            rows: vec![
                (Text::StatusStudents, counts.students),
                (Text::StatusBeneficiaries, counts.beneficiaries),
                (Text::StatusGroups, counts.groups),
                (Text::StatusTeachers, counts.teachers),
                (Text::StatusSites, counts.sites),
                (Text::StatusLessonsToday, counts.lessons_today),
            ],
        },
    ))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    lang: Lang,
    csrf: String,
    error: Option<Text>,
}

/// The sign-in form with a fresh double-submit token (cookie + hidden field).
fn login_page(lang: Lang, status: StatusCode, error: Option<Text>, secure: bool) -> Response {
    let csrf = random_token(24).unwrap_or_default();
    let page = render(
        status,
        &LoginPage {
            lang,
            csrf: csrf.clone(),
            error,
        },
    );
    with_cookie(page, set_cookie(LOGIN_CSRF_COOKIE, &csrf, 3600, secure))
}

pub async fn login_form(State(state): State<AppState>, PageLang(lang): PageLang) -> Response {
    login_page(lang, StatusCode::OK, None, state.secure_cookies)
}

#[derive(Deserialize)]
pub struct LoginForm {
    login: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(state): State<AppState>,
    PageLang(lang): PageLang,
    PeerAddress(peer): PeerAddress,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = state.now();
    let refuse = |status, error| Ok(login_page(lang, status, Some(error), state.secure_cookies));
    // Double-submit: the form's token must equal the cookie set with the form.
    if !double_submit_ok(
        &headers,
        LOGIN_CSRF_COOKIE,
        state.secure_cookies,
        &form.csrf,
    ) {
        return refuse(StatusCode::FORBIDDEN, Text::StaffCsrf);
    }
    let client = Client::address(peer);
    let account_key = Key::target("login", &form.login, &client);
    let client_key = Key::client("login", &client);
    let wait = state.throttle.wait_any(
        &[
            (&account_key, throttle::SIGN_IN),
            (&client_key, throttle::ANY_ACCOUNT),
        ],
        now,
    );
    if wait > 0 {
        return Ok(throttled(
            login_page(
                lang,
                StatusCode::TOO_MANY_REQUESTS,
                Some(Text::ThrottleWait),
                state.secure_cookies,
            ),
            wait,
        ));
    }
    let login_name = form.login.clone();
    let account = state
        .with_db(move |store| {
            accounts::find_account(store.connection(), &login_name)
                .map_err(crate::error::AgentError::Staff)
        })
        .await
        .or_failure(lang)?;
    // Off the database lock: the check takes tens of milliseconds.
    let member = state.passwords.check(account, form.password.clone()).await;
    let login_name = form.login.clone();
    // Sessions are judged by the clock's high-water mark; they start by it too.
    let session_now = state.clock_high_water();
    let token = state
        .with_db(move |store| match member {
            Some(member) => accounts::start_session(store.connection(), member.id, session_now)
                .map(|(token, _)| Some(token))
                .map_err(crate::error::AgentError::Staff),
            None => accounts::record_failed_sign_in(
                store.connection(),
                &login_name,
                client.as_str(),
                now,
            )
            .map(|()| None)
            .map_err(|source| crate::error::AgentError::from(store.error(source))),
        })
        .await
        .or_failure(lang)?;
    match token {
        Some(token) => {
            state.throttle.success(&account_key);
            Ok(with_cookie(
                Redirect::to("/teacher").into_response(),
                set_cookie(SESSION_COOKIE, &token, SESSION_SECS, state.secure_cookies),
            ))
        }
        None => {
            state.throttle.failure(&account_key, now);
            state.throttle.failure(&client_key, now);
            refuse(StatusCode::UNAUTHORIZED, Text::LoginWrong)
        }
    }
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    _signed_in: StaffForm<CsrfOnly>,
) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE, state.secure_cookies) {
        let ended = state
            .with_db(move |store| {
                accounts::end_session(store.connection(), &token)
                    .map_err(|source| crate::error::AgentError::from(store.error(source)))
            })
            .await;
        if let Err(error) = ended {
            tracing::error!(error = %crate::error::report(&error), "a session could not be ended; it expires by itself");
        }
    }
    with_cookie(
        Redirect::to("/login").into_response(),
        set_cookie(SESSION_COOKIE, "", 0, state.secure_cookies),
    )
}

/// One lesson row of the teacher's page.
struct LessonRow {
    id: i64,
    start: String,
    end: String,
    group: String,
    discipline: String,
    room: String,
    state: LessonState,
    checked_in: i64,
    expected: i64,
    /// The group's coverage this month, so a teacher sees it before marking by hand.
    coverage: String,
    coverage_holds: bool,
    /// (IIN, name) of the group's active students.
    students: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "teacher.html")]
struct TeacherPage {
    lang: Lang,
    login: String,
    csrf: String,
    is_admin: bool,
    lessons: Vec<LessonRow>,
}

pub async fn teacher_page(
    State(state): State<AppState>,
    StaffPage(staff): StaffPage,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let settings = state.settings.clone();
    let now = state.now();
    // The agent's clock, not the system's: the same clock decides the codes. An admin may
    // look at another day (`?date=YYYY-MM-DD`) to enter late entries; a teacher sees today.
    let other_day = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| Date::parse(pair.strip_prefix("date=")?).ok())
        .filter(|_| staff.is_admin());
    let today = other_day.unwrap_or_else(|| state.settings.local_date(now));
    let member = staff.member.clone();
    let lessons = state
        .with_db(move |store| {
            let failure = |source| crate::error::AgentError::from(store.error(source));
            let connection = store.connection();
            let all = lessons::list_for_date(connection, today, now, &settings.lesson_times())
                .map_err(failure)?;
            let (rules, _) =
                crate::coverage::rules_in_force(connection, &settings.coverage_rules())
                    .map_err(failure)?;
            let mut coverage_by_group: std::collections::HashMap<String, (Option<u64>, bool)> =
                std::collections::HashMap::new();
            let mut rows = Vec::new();
            for lesson in all {
                if !accounts::may_act_on_lesson(
                    connection,
                    &member,
                    &lesson.teacher_iin,
                    &lesson.group,
                )
                .map_err(failure)?
                {
                    continue;
                }
                let students = crate::roster::active_students_of_group(connection, &lesson.group)
                    .map_err(failure)?;
                if !coverage_by_group.contains_key(&lesson.group) {
                    let report = crate::coverage::coverage_for_month(
                        connection,
                        today.calendar_month(),
                        Some(&lesson.group),
                        &rules,
                    )
                    .map_err(failure)?;
                    coverage_by_group.insert(
                        lesson.group.clone(),
                        (report.college.coverage_per_mille, report.college.holds),
                    );
                }
                let (coverage, holds) = coverage_by_group
                    .get(&lesson.group)
                    .copied()
                    .unwrap_or((None, true));
                rows.push(LessonRow {
                    id: lesson.id,
                    room: if lesson.mode == "online" {
                        "online".to_owned()
                    } else {
                        lesson.room
                    },
                    start: lesson.start,
                    end: lesson.end,
                    group: lesson.group,
                    discipline: lesson.discipline,
                    state: lesson.state,
                    checked_in: lesson.checked_in,
                    expected: lesson.expected,
                    coverage: kasip_core::per_mille_text(coverage),
                    coverage_holds: holds,
                    students,
                });
            }
            Ok(rows)
        })
        .await
        .or_failure(staff.lang)?;
    Ok(render(
        StatusCode::OK,
        &TeacherPage {
            lang: staff.lang,
            is_admin: staff.is_admin(),
            login: staff.member.login,
            csrf: staff.csrf,
            lessons,
        },
    ))
}

/// Opening and closing a lesson differ only in the call and where the teacher goes next.
#[derive(Clone, Copy)]
enum LessonAction {
    Open,
    Close,
}

async fn act_on_lesson(
    state: AppState,
    lesson_id: i64,
    staff: Staff,
    action: LessonAction,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    accessible_lesson(&state, &staff.member, lang, lesson_id).await?;
    let now = state.now();
    let login = staff.member.login;
    let times = state.settings.lesson_times();
    let done = state
        .with_db(move |store| {
            let connection = store.connection();
            Ok(match action {
                LessonAction::Open => {
                    lessons::open(connection, lesson_id, &login, now, &times).map(drop)
                }
                LessonAction::Close => lessons::close(connection, lesson_id, &login, now),
            })
        })
        .await
        .or_failure(lang)?;
    match (done, action) {
        (Ok(()), LessonAction::Open) => {
            Ok(Redirect::to(&format!("/display/{lesson_id}")).into_response())
        }
        (Ok(()), LessonAction::Close) => Ok(Redirect::to("/teacher").into_response()),
        (Err(refusal), _) => Err(match refusal.text() {
            Some(sentence) => WebError::refused(lang, StatusCode::CONFLICT, sentence),
            None => WebError::failure(lang, &refusal),
        }),
    }
}

pub async fn open_lesson(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    posted: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    act_on_lesson(state, lesson_id, posted.staff, LessonAction::Open).await
}

pub async fn close_lesson(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    posted: StaffForm<CsrfOnly>,
) -> Result<Response, WebError> {
    act_on_lesson(state, lesson_id, posted.staff, LessonAction::Close).await
}

#[derive(Deserialize)]
pub struct ManualMarkForm {
    #[serde(default)]
    csrf: String,
    student: String,
    status: String,
    #[serde(default)]
    reason: String,
    /// An admin's reason to let the mark take the group below the coverage rule.
    #[serde(default)]
    override_reason: String,
}

impl CsrfField for ManualMarkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub struct GradeForm {
    #[serde(default)]
    csrf: String,
    student: String,
    assessment: String,
    score: String,
    credits: String,
}

impl CsrfField for GradeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A grade for a student of the lesson's group, dated the lesson's day, in its discipline.
pub async fn record_grade(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    StaffForm { staff, form }: StaffForm<GradeForm>,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    let lesson = accessible_lesson(&state, &staff.member, lang, lesson_id).await?;
    let bad_input = || WebError::refused(lang, StatusCode::BAD_REQUEST, Text::MarkBadInput);
    let parsed = (
        Iin::parse(&form.student),
        crate::grades::Assessment::parse(&form.assessment),
        crate::grades::parse_score(&form.score),
        crate::grades::parse_credits(&form.credits),
        kasip_core::Discipline::parse(&lesson.discipline),
        kasip_core::Date::parse(&lesson.date),
    );
    let (Ok(student), Ok(assessment), Ok(score), Ok(credits), Ok(discipline), Ok(date)) = parsed
    else {
        return Err(bad_input());
    };
    let grade = crate::grades::NewGrade {
        student,
        discipline,
        assessment,
        score,
        credits,
        date,
        recorded_by: staff.member.login,
    };
    let now = state.now();
    let group = lesson.group;
    let recorded = state
        .with_db(move |store| {
            crate::grades::record_for_group(store.connection(), &grade, &group, now)
                .map_err(|source| crate::error::AgentError::from(store.error(source)))
        })
        .await
        .or_failure(lang)?;
    match recorded {
        Some(_) => Ok(Redirect::to("/teacher").into_response()),
        None => Err(bad_input()),
    }
}

pub async fn manual_mark(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    StaffForm { staff, form }: StaffForm<ManualMarkForm>,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    accessible_lesson(&state, &staff.member, lang, lesson_id).await?;
    let (Ok(student_iin), Some(status)) =
        (Iin::parse(&form.student), MarkStatus::parse(&form.status))
    else {
        return Err(WebError::refused(
            lang,
            StatusCode::BAD_REQUEST,
            Text::MarkBadInput,
        ));
    };
    if form.reason.chars().count() > 200 {
        return Err(WebError::refused(
            lang,
            StatusCode::BAD_REQUEST,
            Text::MarkBadInput,
        ));
    }
    let mark = ManualMark {
        lesson_id,
        student_iin,
        status,
        reason: form.reason,
        marker: staff.member,
        override_reason: Some(form.override_reason).filter(|reason| !reason.trim().is_empty()),
    };
    let coverage_change = |before: Option<u64>, after: Option<u64>| {
        Paragraph::plain(format!(
            "{}: {} → {}",
            lang.text(Text::MarkGroupCoverage),
            kasip_core::per_mille_text(before),
            kasip_core::per_mille_text(after)
        ))
    };
    let refused_below_rule = |key: Text, before, after| {
        WebError::page(
            StatusCode::CONFLICT,
            MessagePage::new(
                lang,
                Text::ErrorTitle,
                vec![
                    Paragraph::bad(lang.text(key)).id("refusal"),
                    coverage_change(before, after),
                ],
            ),
        )
    };
    let accepted = match state.writer.record_manual_mark(mark).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(ManualRefusal::NeedsOverride { before, after })) => {
            return Err(refused_below_rule(Text::MarkNeedsOverride, before, after))
        }
        Ok(Err(ManualRefusal::Blocked { before, after })) => {
            return Err(refused_below_rule(Text::MarkBlocked, before, after))
        }
        Ok(Err(refusal)) => {
            let (status, key) = match refusal {
                ManualRefusal::UnknownLesson => (StatusCode::NOT_FOUND, Text::MarkUnknownLesson),
                ManualRefusal::LessonNotHeld => (StatusCode::CONFLICT, Text::MarkNotHeld),
                ManualRefusal::NotOpenYet => (StatusCode::CONFLICT, Text::LessonNotOpenYet),
                ManualRefusal::Ended => (StatusCode::CONFLICT, Text::MarkEnded),
                ManualRefusal::LateEntryReasonRequired => {
                    (StatusCode::BAD_REQUEST, Text::MarkLateEntryReason)
                }
                ManualRefusal::NotYourLesson => (StatusCode::FORBIDDEN, Text::StaffNotYours),
                ManualRefusal::NotInGroup => (StatusCode::FORBIDDEN, Text::RejectNotInGroup),
                ManualRefusal::ReasonRequired => {
                    (StatusCode::BAD_REQUEST, Text::MarkReasonRequired)
                }
                ManualRefusal::NeedsOverride { .. } | ManualRefusal::Blocked { .. } => {
                    (StatusCode::CONFLICT, Text::MarkBlocked)
                }
            };
            return Err(WebError::refused(lang, status, key));
        }
        Err(failure) => return Err(WebError::write_failure(lang, &failure)),
    };
    let mut response = match accepted.below_rule {
        None => Redirect::to("/teacher").into_response(),
        Some((before, after)) => MessagePage::new(
            lang,
            Text::MarkSaved,
            vec![
                Paragraph::bad(lang.text(Text::MarkBelowRuleWarning)).id("warning"),
                coverage_change(before, after),
            ],
        )
        .link("/teacher", "←")
        .respond(StatusCode::OK),
    };
    if let Ok(value) = HeaderValue::from_str(&accepted.event_id.to_string()) {
        response.headers_mut().insert("x-event-id", value);
    }
    Ok(response)
}

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

fn qr_svg(url: &str) -> Result<(String, i16), qrcode::types::QrError> {
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

pub async fn display_current(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    RawQuery(query): RawQuery,
    session: SessionCheck,
) -> Result<Response, WebError> {
    let lang = session.lang;
    let now = state.now();
    let settings = state.settings.clone();
    // One trip to the database: the session, the lesson, whether this staff member may
    // show it, and its opening's key (each trip cost more than the rest of the poll).
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
            Ok(Ok((lesson, key)))
        })
        .await
        .or_failure(lang)?;
    let (lesson, key) = found?;
    let period = u64::from(state.settings.qr_period_secs);
    let step = step_at(now, state.settings.qr_period_secs);
    let seconds_left = period - (now.max(0) as u64 % period);
    let shown = match key {
        Some(key) => Some(shown_code(&state, lesson_id, step, key).or_failure(lang)?),
        None => None,
    };
    // The code (a few kilobytes of SVG) only when the projector does not show it yet:
    // nine polls in ten carry the count alone.
    // `?shown=STEP`, the step whose code the projector shows; anything else is ignored.
    let shown_step = query.as_deref().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("shown="))
            .and_then(|value| value.parse::<u64>().ok())
    });
    let already_shown = shown_step == Some(step);
    let text = |pick: fn(&ShownCode) -> &str| match shown.as_deref() {
        Some(code) if !already_shown => pick(code),
        _ => "",
    };
    let mut response = Json(DisplayNow {
        state: lesson.state,
        notice: lesson.state.notice().map_or("", |notice| lang.text(notice)),
        step,
        url: text(|code| &code.url),
        svg: text(|code| &code.svg),
        typed_code: text(|code| &code.typed),
        qr_version: shown.as_ref().map_or(0, |code| code.version),
        checked_in: lesson.checked_in,
        expected: lesson.expected,
        seconds_left,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Template)]
#[template(path = "display.html")]
struct DisplayPage {
    lang: Lang,
    lesson: LessonSummary,
    room: String,
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
    Ok(render(
        StatusCode::OK,
        &DisplayPage {
            lang: staff.lang,
            lesson,
            room,
        },
    ))
}

#[derive(Deserialize)]
pub struct IssueCodeForm {
    #[serde(default)]
    csrf: String,
    iin: String,
}

impl CsrfField for IssueCodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Admin only: a one-time binding code for a student, shown once.
pub async fn issue_binding_code(
    State(state): State<AppState>,
    AdminForm(StaffForm { staff, form }): AdminForm<IssueCodeForm>,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    let Ok(iin) = Iin::parse(form.iin.trim()) else {
        return Err(WebError::refused(
            lang,
            StatusCode::BAD_REQUEST,
            Text::BindBadIin,
        ));
    };
    let now = state.now();
    let issued_by = staff.member.login.clone();
    let issued = state
        .with_db(move |store| {
            Ok(accounts::issue_binding_code(
                store.connection(),
                &iin,
                &issued_by,
                now,
            ))
        })
        .await
        .or_failure(lang)?;
    match issued {
        Ok(code) => Ok(MessagePage::new(
            lang,
            Text::AdminBindingCodes,
            vec![
                Paragraph::plain(form.iin.trim()),
                Paragraph {
                    class: "code",
                    ..Paragraph::plain(code)
                }
                .id("code"),
            ],
        )
        .link("/teacher", "←")
        .respond(StatusCode::OK)),
        Err(refusal) => Err(WebError::refused_because(
            lang,
            StatusCode::NOT_FOUND,
            refusal,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::page::hostile;
    use super::*;

    fn lesson() -> LessonSummary {
        LessonSummary {
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
        }
    }

    #[test]
    fn staff_pages_escape_hostile_names() {
        let lang = Lang::fallback();
        let home = HomePage {
            lang,
            college: hostile::TEXT,
            rows: vec![(Text::StatusStudents, 1)],
        };
        hostile::assert_escaped(&home.render().expect("home"));
        let teacher = TeacherPage {
            lang,
            login: hostile::TEXT.into(),
            csrf: hostile::TEXT.into(),
            is_admin: true,
            lessons: vec![LessonRow {
                id: 1,
                start: "09:00".into(),
                end: "10:30".into(),
                group: hostile::TEXT.into(),
                discipline: hostile::TEXT.into(),
                room: hostile::TEXT.into(),
                state: LessonState::Open,
                checked_in: 0,
                expected: 1,
                coverage: "50.0%".into(),
                coverage_holds: true,
                students: vec![(hostile::TEXT.into(), hostile::TEXT.into())],
            }],
        };
        hostile::assert_escaped(&teacher.render().expect("teacher"));
        let display = DisplayPage {
            lang,
            lesson: lesson(),
            room: hostile::TEXT.into(),
        };
        hostile::assert_escaped(&display.render().expect("display"));
        let login = LoginPage {
            lang,
            csrf: hostile::TEXT.into(),
            error: Some(Text::LoginWrong),
        };
        let login = login.render().expect("login");
        assert!(
            login.contains("name=csrf value=\"&#60;script&#62;"),
            "{login}"
        );
    }
}
