//! What staff do in the browser: sign in, see today's lessons, open and close them, show
//! the rotating classroom code, and mark students who cannot scan.

use askama::Template;
use axum::extract::{Form, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use kasip_core::{Date, Iin, MarkStatus};
use serde::Deserialize;

use super::error::{MessagePage, OrFailure, Paragraph, WebError};
use super::extract::{
    AdminForm, CsrfField, CsrfOnly, PageLang, PageQuery, PeerAddress, Staff, StaffForm, StaffPage,
    SESSION_COOKIE,
};
use super::page::{
    cookie, double_submit_ok, method_text, render, set_cookie, status_text, with_cookie,
};
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
pub(super) async fn accessible_lesson(
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
        // The session's projectors see the sign-out now, not at their next re-check.
        state.writer.announce_change();
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
    /// Admins and curators issue phone-linking codes.
    issues_codes: bool,
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
    let (name, lessons) = state
        .with_db(move |store| {
            let failure = |source| crate::error::AgentError::from(store.error(source));
            let connection = store.connection();
            let name = accounts::display_name(connection, &member).map_err(failure)?;
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
            Ok((name, rows))
        })
        .await
        .or_failure(staff.lang)?;
    Ok(render(
        StatusCode::OK,
        &TeacherPage {
            lang: staff.lang,
            is_admin: staff.is_admin(),
            issues_codes: staff.member.role != accounts::Role::Teacher,
            login: name,
            csrf: staff.csrf,
            lessons,
        },
    ))
}

/// One student's tile on a lesson's roster, in the reader's language.
struct TileView {
    iin: String,
    name: String,
    /// The style class: the status, or `missing`.
    class: &'static str,
    status: &'static str,
    method: &'static str,
    time: String,
    /// A refusal of the last change to this tile, shown on it.
    error: Option<&'static str>,
    /// The reason as typed, kept when the change was refused.
    reason: String,
    /// The tile's form's accessible name ("Mark NAME").
    mark_label: String,
}

#[derive(Template)]
#[template(path = "lesson.html")]
struct LessonPage {
    lang: Lang,
    csrf: String,
    is_admin: bool,
    lesson: LessonSummary,
    room: String,
    tiles: Vec<TileView>,
    /// Marks may be made here now (the teacher page's rule).
    markable: bool,
    notice: Option<String>,
    notice_bad: bool,
}

/// What a roster shows above its tiles after a change.
enum RosterNotice {
    Saved {
        iin: String,
    },
    Refused {
        iin: String,
        text: Text,
        reason: String,
    },
    Warning(String),
}

/// The lesson's roster page with `notice`, answered with `status`.
async fn roster_page(
    state: &AppState,
    staff: Staff,
    lesson_id: i64,
    notice: Option<RosterNotice>,
    status: StatusCode,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    let lesson = accessible_lesson(state, &staff.member, lang, lesson_id).await?;
    let tiles = state
        .with_db(move |store| {
            lessons::roster(store.connection(), lesson_id)
                .map_err(|source| crate::error::AgentError::from(store.error(source)))
        })
        .await
        .or_failure(lang)?;
    let timezone = state.settings.timezone.clone();
    let (mut notice_text, mut notice_bad) = (None, false);
    let tiles = tiles
        .into_iter()
        .map(|tile| {
            let mut view = TileView {
                class: match tile.status {
                    None => "missing",
                    Some(status) => status.as_str(),
                },
                status: lang.text(tile.status.map_or(Text::RosterNotCheckedIn, status_text)),
                method: tile
                    .method
                    .map_or("", |method| lang.text(method_text(method))),
                time: tile
                    .recorded_at
                    .map(|at| crate::clock::local_time_text(&timezone, at))
                    .unwrap_or_default(),
                error: None,
                reason: String::new(),
                mark_label: lang.fill(Text::RosterMarkFor, &[("name", &tile.name)]),
                iin: tile.iin,
                name: tile.name,
            };
            match &notice {
                Some(RosterNotice::Saved { iin }) if *iin == view.iin => {
                    notice_text = Some(lang.fill(
                        Text::RosterSaved,
                        &[("name", &view.name), ("status", view.status)],
                    ));
                }
                Some(RosterNotice::Refused { iin, text, reason }) if *iin == view.iin => {
                    view.error = Some(lang.text(*text));
                    view.reason = reason.clone();
                    notice_text = Some(format!("{}: {}", view.name, lang.text(*text)));
                    notice_bad = true;
                }
                _ => {}
            }
            view
        })
        .collect();
    if let Some(RosterNotice::Warning(text)) = notice {
        notice_text = Some(text);
        notice_bad = true;
    }
    let markable = lesson.state == LessonState::Open
        || lesson.state == LessonState::Closed
        || (staff.is_admin() && lesson.state == LessonState::Ended);
    Ok(render(
        status,
        &LessonPage {
            lang,
            is_admin: staff.is_admin(),
            csrf: staff.csrf,
            room: if lesson.mode == "online" {
                "online".to_owned()
            } else {
                lesson.room.clone()
            },
            lesson,
            tiles,
            markable,
            notice: notice_text,
            notice_bad,
        },
    ))
}

#[derive(Deserialize)]
pub struct RosterQuery {
    saved: Option<String>,
}

/// `GET /teacher/lessons/{id}`: the lesson's roster, one tile per student.
pub async fn lesson_page(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    StaffPage(staff): StaffPage,
    Query(query): Query<RosterQuery>,
) -> Result<Response, WebError> {
    let notice = query.saved.map(|iin| RosterNotice::Saved { iin });
    roster_page(&state, staff, lesson_id, notice, StatusCode::OK).await
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
    if done.is_ok() {
        state.writer.announce_change();
    }
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
    /// `roster` when the mark was made on the lesson's roster: the answer is the roster
    /// again, the change or its refusal shown on the student's tile.
    #[serde(default, rename = "return")]
    return_to: String,
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
    let on_roster = form.return_to == "roster";
    let (Ok(student_iin), Some(status)) =
        (Iin::parse(&form.student), MarkStatus::parse(&form.status))
    else {
        return Err(WebError::refused(
            lang,
            StatusCode::BAD_REQUEST,
            Text::MarkBadInput,
        ));
    };
    let student = student_iin.to_string();
    let typed_reason = form.reason.clone();
    let coverage_change = |before: Option<u64>, after: Option<u64>| {
        format!(
            "{}: {} → {}",
            lang.text(Text::MarkGroupCoverage),
            kasip_core::per_mille_text(before),
            kasip_core::per_mille_text(after)
        )
    };
    let refused_below_rule = |key: Text, before, after| {
        WebError::page(
            StatusCode::CONFLICT,
            MessagePage::new(
                lang,
                Text::ErrorTitle,
                vec![
                    Paragraph::bad(lang.text(key)).id("refusal"),
                    Paragraph::plain(coverage_change(before, after)),
                ],
            ),
        )
    };
    // A refusal: (status, sentence, the page shown off the roster when not the plain one).
    let outcome = if form.reason.chars().count() > 200 {
        Err((StatusCode::BAD_REQUEST, Text::MarkBadInput, None))
    } else {
        let mark = ManualMark {
            lesson_id,
            student_iin,
            status,
            reason: form.reason,
            marker: staff.member.clone(),
            override_reason: Some(form.override_reason).filter(|reason| !reason.trim().is_empty()),
        };
        match state.writer.record_manual_mark(mark).await {
            Ok(Ok(accepted)) => Ok(accepted),
            Ok(Err(ManualRefusal::NeedsOverride { before, after })) => Err((
                StatusCode::CONFLICT,
                Text::MarkNeedsOverride,
                Some(refused_below_rule(Text::MarkNeedsOverride, before, after)),
            )),
            Ok(Err(ManualRefusal::Blocked { before, after })) => Err((
                StatusCode::CONFLICT,
                Text::MarkBlocked,
                Some(refused_below_rule(Text::MarkBlocked, before, after)),
            )),
            Ok(Err(refusal)) => {
                let (status, key) = match refusal {
                    ManualRefusal::UnknownLesson => {
                        (StatusCode::NOT_FOUND, Text::MarkUnknownLesson)
                    }
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
                Err((status, key, None))
            }
            Err(failure) => return Err(WebError::write_failure(lang, &failure)),
        }
    };
    let accepted = match outcome {
        Ok(accepted) => accepted,
        // On the roster: shown on the student's tile, with what was typed kept.
        Err((status, text, _)) if on_roster => {
            let notice = RosterNotice::Refused {
                iin: student,
                text,
                reason: typed_reason,
            };
            return roster_page(&state, staff, lesson_id, Some(notice), status).await;
        }
        Err((status, text, page)) => {
            return Err(page.unwrap_or_else(|| WebError::refused(lang, status, text)))
        }
    };
    let mut response = match (accepted.below_rule, on_roster) {
        (None, true) => Redirect::to(&format!(
            "/teacher/lessons/{lesson_id}?saved={}#s-{}",
            form.student, form.student
        ))
        .into_response(),
        (None, false) => Redirect::to("/teacher").into_response(),
        (Some((before, after)), true) => {
            let warning = format!(
                "{} {}",
                lang.text(Text::MarkBelowRuleWarning),
                coverage_change(before, after)
            );
            roster_page(
                &state,
                staff,
                lesson_id,
                Some(RosterNotice::Warning(warning)),
                StatusCode::OK,
            )
            .await?
        }
        (Some((before, after)), false) => MessagePage::new(
            lang,
            Text::MarkSaved,
            vec![
                Paragraph::bad(lang.text(Text::MarkBelowRuleWarning)).id("warning"),
                Paragraph::plain(coverage_change(before, after)),
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

/// Admin only, from today's lessons: a one-time binding code for one student, shown as
/// their printable slip (name, group, code, expiry).
pub async fn issue_binding_code(
    State(state): State<AppState>,
    AdminForm(StaffForm { staff, form }): AdminForm<IssueCodeForm>,
) -> Result<Response, WebError> {
    slips_page(&state, &staff, SlipsFor::student(&form.iin, staff.lang)?).await
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    group: Option<String>,
    iin: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl HistoryQuery {
    /// The chosen dates, this month so far by default; a date that does not parse is a 400.
    fn span(&self, today: Date, lang: Lang) -> Result<(Date, Date), WebError> {
        let date = |text: Option<&str>, default: Date| match text.filter(|text| !text.is_empty()) {
            None => Ok(default),
            Some(text) => Date::parse(text).map_err(|_| {
                WebError::refused(lang, StatusCode::BAD_REQUEST, Text::ErrorBadAddress)
            }),
        };
        Ok((
            date(self.from.as_deref(), today.calendar_month().first_day())?,
            date(self.to.as_deref(), today)?,
        ))
    }
}

struct HistoryLine {
    iin: String,
    name: String,
    lessons: u64,
    present: u64,
    late: u64,
    absent: u64,
    excused: u64,
    attended: String,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    lang: Lang,
    groups: Vec<String>,
    group: String,
    from: String,
    to: String,
    rows: Vec<HistoryLine>,
}

/// `GET /teacher/history?group=&from=&to=`: a group's attendance per student over any
/// dates (this month so far by default), for the groups the reader teaches, curates or,
/// as an admin, any.
pub async fn history_page(
    State(state): State<AppState>,
    StaffPage(staff): StaffPage,
    PageQuery(query): PageQuery<HistoryQuery>,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    let (from, to) = query.span(state.settings.local_date(state.now()), lang)?;
    let member = staff.member.clone();
    let wanted = query.group.clone();
    let (groups, rows) = state
        .with_reports(move |store| {
            let failure = |source| crate::error::AgentError::from(store.error(source));
            let connection = store.connection();
            let groups = accounts::history_groups(connection, &member).map_err(failure)?;
            let rows = match wanted.as_ref().or(groups.first()) {
                Some(group) if groups.contains(group) => {
                    Some(lessons::group_history(connection, group, from, to).map_err(failure)?)
                }
                Some(_) => None,
                None => Some(Vec::new()),
            };
            Ok((groups, rows))
        })
        .await
        .or_failure(lang)?;
    if groups.is_empty() {
        return Err(WebError::refused(
            lang,
            StatusCode::FORBIDDEN,
            Text::HistoryNone,
        ));
    }
    let Some(rows) = rows else {
        return Err(WebError::refused(
            lang,
            StatusCode::FORBIDDEN,
            Text::StaffNotYours,
        ));
    };
    Ok(render(
        StatusCode::OK,
        &HistoryPage {
            lang,
            group: query.group.unwrap_or_else(|| groups[0].clone()),
            groups,
            from: from.to_string(),
            to: to.to_string(),
            rows: rows
                .into_iter()
                .map(|row| HistoryLine {
                    attended: kasip_core::per_mille_text(row.attended_per_mille()),
                    iin: row.iin,
                    name: row.name,
                    lessons: row.lessons,
                    present: row.present,
                    late: row.late,
                    absent: row.absent,
                    excused: row.excused,
                })
                .collect(),
        },
    ))
}

struct StudentHistoryLine {
    date: String,
    start: String,
    discipline: String,
    status: &'static str,
    method: &'static str,
    class: &'static str,
}

#[derive(Template)]
#[template(path = "history_student.html")]
struct StudentHistoryPage {
    lang: Lang,
    iin: String,
    name: String,
    group: String,
    from: String,
    to: String,
    attended: String,
    lessons: Vec<StudentHistoryLine>,
}

/// `GET /teacher/history/student?iin=&from=&to=`: one student's lessons over any dates,
/// each with its mark and how it was made, for a reader who may see the student's group.
pub async fn student_history_page(
    State(state): State<AppState>,
    StaffPage(staff): StaffPage,
    PageQuery(query): PageQuery<HistoryQuery>,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    let (from, to) = query.span(state.settings.local_date(state.now()), lang)?;
    let Ok(iin) = kasip_core::Iin::parse(query.iin.as_deref().unwrap_or_default().trim()) else {
        return Err(WebError::refused(
            lang,
            StatusCode::BAD_REQUEST,
            Text::BindBadIin,
        ));
    };
    let member = staff.member.clone();
    let found = state
        .with_reports(move |store| {
            let failure = |source| crate::error::AgentError::from(store.error(source));
            let connection = store.connection();
            let Some(span) =
                crate::student_month::student_lessons(connection, &iin.as_string(), from, to)
                    .map_err(failure)?
            else {
                return Ok(None);
            };
            let groups = accounts::history_groups(connection, &member).map_err(failure)?;
            Ok(Some((groups.contains(&span.group), span)))
        })
        .await
        .or_failure(lang)?;
    let span = match found {
        None => {
            return Err(WebError::refused(
                lang,
                StatusCode::NOT_FOUND,
                Text::AdminNoResults,
            ))
        }
        Some((false, _)) => {
            return Err(WebError::refused(
                lang,
                StatusCode::FORBIDDEN,
                Text::StaffNotYours,
            ))
        }
        Some((true, span)) => span,
    };
    let attended = kasip_core::per_mille_text(span.attended_per_mille());
    Ok(render(
        StatusCode::OK,
        &StudentHistoryPage {
            lang,
            iin: iin.as_string(),
            attended,
            from: from.to_string(),
            to: to.to_string(),
            lessons: span
                .lessons
                .into_iter()
                .map(|lesson| StudentHistoryLine {
                    date: lesson.date.to_string(),
                    start: lesson.start,
                    discipline: lesson.discipline,
                    status: lesson
                        .status
                        .map_or("—", |status| lang.text(status_text(status))),
                    method: lesson
                        .method
                        .map_or("", |method| lang.text(method_text(method))),
                    class: lesson.status.map_or("", |status| status.as_str()),
                })
                .collect(),
            name: span.name,
            group: span.group,
        },
    ))
}

/// One printed slip.
struct SlipView {
    name: String,
    group: String,
    code: String,
    until: String,
}

#[derive(Template)]
#[template(path = "binding_slips.html")]
struct SlipsPage {
    lang: Lang,
    csrf: String,
    groups: Vec<String>,
    chosen: String,
    /// The binding address, and its QR as SVG (the same on every slip).
    address: String,
    qr: String,
    slips: Vec<SlipView>,
}

#[derive(Deserialize)]
pub struct SlipsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    group: String,
    /// One student instead of the whole group.
    #[serde(default)]
    iin: String,
}

/// Whose codes a slips page issues.
enum SlipsFor {
    /// None yet: the form.
    Nobody,
    Group(String),
    Student(Iin),
}

impl SlipsFor {
    fn student(iin: &str, lang: Lang) -> Result<Self, WebError> {
        Iin::parse(iin.trim())
            .map(Self::Student)
            .map_err(|_| WebError::refused(lang, StatusCode::BAD_REQUEST, Text::BindBadIin))
    }
}

impl CsrfField for SlipsForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn slips_page(
    state: &AppState,
    staff: &Staff,
    chosen: SlipsFor,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    let member = staff.member.clone();
    let now = state.now();
    let groups = state
        .with_db(move |store| {
            accounts::code_issuing_groups(store.connection(), &member)
                .map_err(|source| crate::error::AgentError::from(store.error(source)))
        })
        .await
        .or_failure(lang)?;
    if groups.is_empty() {
        return Err(WebError::refused(
            lang,
            StatusCode::FORBIDDEN,
            Text::SlipsNone,
        ));
    }
    let not_yours = || WebError::refused(lang, StatusCode::FORBIDDEN, Text::StaffNotYours);
    let issued_by = staff.member.login.clone();
    let (chosen, slips) = match chosen {
        SlipsFor::Nobody => (String::new(), Vec::new()),
        SlipsFor::Group(group) if !groups.contains(&group) => return Err(not_yours()),
        SlipsFor::Group(group) => {
            let code = group.clone();
            let slips = state
                .with_db(move |store| {
                    accounts::issue_group_codes(store.connection(), &code, &issued_by, now)
                        .map_err(crate::error::AgentError::from)
                })
                .await
                .or_failure(lang)?;
            (group, slips)
        }
        SlipsFor::Student(iin) => {
            let allowed = groups.clone();
            let issued = state
                .with_db(move |store| {
                    let connection = store.connection();
                    let found = accounts::student_of(connection, &iin)
                        .map_err(|source| crate::error::AgentError::from(store.error(source)))?;
                    let Some((name, group)) = found else {
                        return Ok(None);
                    };
                    if !allowed.contains(&group) {
                        return Ok(Some((group, None)));
                    }
                    let slip =
                        accounts::issue_student_slip(connection, &iin, name, &issued_by, now)
                            .map_err(crate::error::AgentError::from)?;
                    Ok(Some((group, Some(slip))))
                })
                .await
                .or_failure(lang)?;
            match issued {
                None => {
                    return Err(WebError::refused(
                        lang,
                        StatusCode::NOT_FOUND,
                        Text::AdminNoResults,
                    ))
                }
                Some((_, None)) => return Err(not_yours()),
                Some((group, Some(slip))) => (group, vec![slip]),
            }
        }
    };
    let address = format!("{}/bind", state.public_url());
    let qr = super::display::qr_svg(&address)
        .map(|(svg, _)| svg)
        .unwrap_or_default();
    let timezone = &state.settings.timezone;
    Ok(render(
        StatusCode::OK,
        &SlipsPage {
            lang,
            csrf: staff.csrf.clone(),
            groups,
            chosen: chosen.clone(),
            qr,
            slips: slips
                .into_iter()
                .map(|slip| SlipView {
                    name: slip.name,
                    group: chosen.clone(),
                    code: slip.code,
                    until: lang.fill(
                        Text::SlipsUntil,
                        &[(
                            "when",
                            &crate::clock::local_date_time_text(timezone, slip.expires_at),
                        )],
                    ),
                })
                .collect(),
            address,
        },
    ))
}

/// `GET /staff/binding-slips`: the group to issue codes for (an admin's any, a curator's
/// own).
pub async fn binding_slips_form(
    State(state): State<AppState>,
    StaffPage(staff): StaffPage,
) -> Result<Response, WebError> {
    slips_page(&state, &staff, SlipsFor::Nobody).await
}

/// `POST /staff/binding-slips`: new codes for every student of the group, as printable
/// slips (A4, eight to a page).
pub async fn binding_slips(
    State(state): State<AppState>,
    StaffForm { staff, form }: StaffForm<SlipsForm>,
) -> Result<Response, WebError> {
    let chosen = if form.iin.trim().is_empty() {
        SlipsFor::Group(form.group)
    } else {
        SlipsFor::student(&form.iin, staff.lang)?
    };
    slips_page(&state, &staff, chosen).await
}

#[cfg(test)]
mod tests {
    use super::super::page::hostile;
    use super::*;

    #[test]
    fn staff_pages_escape_hostile_names() {
        let lang = Lang::fallback();
        let home = HomePage {
            lang,
            college: hostile::TEXT,
            rows: vec![(Text::StatusStudents, 1)],
        };
        hostile::assert_escaped(&home.render().expect("home"));
        let slips = SlipsPage {
            lang,
            csrf: hostile::TEXT.into(),
            groups: vec![hostile::TEXT.into()],
            chosen: hostile::TEXT.into(),
            address: hostile::TEXT.into(),
            qr: String::new(),
            slips: vec![SlipView {
                name: hostile::TEXT.into(),
                group: hostile::TEXT.into(),
                code: hostile::TEXT.into(),
                until: hostile::TEXT.into(),
            }],
        };
        hostile::assert_escaped(&slips.render().expect("slips"));
        let teacher = TeacherPage {
            lang,
            login: hostile::TEXT.into(),
            csrf: hostile::TEXT.into(),
            is_admin: true,
            issues_codes: true,
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
        let history = HistoryPage {
            lang,
            groups: vec![hostile::TEXT.into()],
            group: hostile::TEXT.into(),
            from: hostile::TEXT.into(),
            to: hostile::TEXT.into(),
            rows: vec![HistoryLine {
                iin: hostile::TEXT.into(),
                name: hostile::TEXT.into(),
                lessons: 1,
                present: 1,
                late: 0,
                absent: 0,
                excused: 0,
                attended: hostile::TEXT.into(),
            }],
        };
        hostile::assert_escaped(&history.render().expect("history"));
        let student = StudentHistoryPage {
            lang,
            iin: hostile::TEXT.into(),
            name: hostile::TEXT.into(),
            group: hostile::TEXT.into(),
            from: hostile::TEXT.into(),
            to: hostile::TEXT.into(),
            attended: hostile::TEXT.into(),
            lessons: vec![StudentHistoryLine {
                date: hostile::TEXT.into(),
                start: hostile::TEXT.into(),
                discipline: hostile::TEXT.into(),
                status: "",
                method: "",
                class: "",
            }],
        };
        hostile::assert_escaped(&student.render().expect("student history"));
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
