//! What staff do in the browser: sign in, see today's lessons, open and close them, show
//! the rotating classroom code, and mark students who cannot scan.

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use kasip_core::{step_at, typed_code, ClassroomToken, Iin, LessonKey, MarkStatus};
use serde::{Deserialize, Serialize};

use super::page::{
    cookie, double_submit_ok, escape_html, failure_page, language, layout, message_page, refusal,
    set_cookie,
};
use super::AppState;
use crate::error::AgentError;
use crate::i18n::{text, Lang, Text};
use crate::lessons::{self, LessonState, LessonSummary};
use crate::marks::{ManualMark, ManualRefusal};
use crate::roster::RosterCounts;
use crate::secrets::random_token;
use crate::staff::{self as accounts, Role, StaffMember, SESSION_SECS};

const SESSION_COOKIE: &str = "kasip_session";
const LOGIN_CSRF_COOKIE: &str = "kasip_login_csrf";

#[derive(Deserialize)]
pub struct LangQuery {
    lang: Option<String>,
}

/// The signed-in member and the session's CSRF token.
pub(super) async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<(StaffMember, String)> {
    let token = cookie(headers, SESSION_COOKIE)?;
    let now = state.now();
    state
        .with_db(move |store| {
            accounts::session(store.connection(), &token, now)
                .map_err(|error| AgentError::Operation(error.to_string()))
        })
        .await
        .ok()
        .flatten()
}

fn constant_time_eq(left: &str, right: &str) -> bool {
    crate::secrets::same_secret(left.as_bytes(), right.as_bytes())
}

fn forbidden(lang: Lang, key: Text) -> Response {
    refusal(StatusCode::FORBIDDEN, lang, key)
}

fn unauthorised(lang: Lang) -> Response {
    message_page(
        StatusCode::UNAUTHORIZED,
        lang,
        Text::ErrorTitle,
        &format!(
            "<p class=bad>{}</p><p><a href=\"/login\">{}</a></p>",
            text(lang, Text::StaffSignInFirst),
            text(lang, Text::LoginTitle)
        ),
    )
}

/// The lesson if it exists and `member` may act on it.
async fn accessible_lesson(
    state: &AppState,
    member: &StaffMember,
    lesson_id: i64,
) -> Result<Option<LessonSummary>, AgentError> {
    let settings = state.settings.clone();
    let now = state.now();
    let member = member.clone();
    state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let Some(lesson) =
                lessons::summary(store.connection(), lesson_id, now, &settings.lesson_times())
                    .map_err(failure)?
            else {
                return Ok(None);
            };
            Ok(accounts::may_act_on_lesson(
                store.connection(),
                &member,
                &lesson.teacher_iin,
                &lesson.group,
            )
            .map_err(failure)?
            .then_some(lesson))
        })
        .await
}

pub async fn home(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = language(query.lang.as_deref(), &headers);
    // The agent's clock, not the system's: the same clock decides the codes.
    let today = state.settings.local_date(state.now());
    let counts = match state
        .with_db(move |store| RosterCounts::read(store, today))
        .await
    {
        Ok(counts) => counts,
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let rows: String = [
        (Text::StatusStudents, counts.students),
        (Text::StatusBeneficiaries, counts.beneficiaries),
        (Text::StatusGroups, counts.groups),
        (Text::StatusTeachers, counts.teachers),
        (Text::StatusSites, counts.sites),
        (Text::StatusLessonsToday, counts.lessons_today),
    ]
    .iter()
    .map(|(key, value)| format!("<tr><th>{}</th><td>{value}</td></tr>", text(lang, *key)))
    .collect();
    let body = format!(
        "<h1>{title}</h1><h2>{college}</h2><p>{running}</p><table>{rows}</table>\
         <p><a href=\"/login\">{login}</a> · <a href=\"/bind\">{bind}</a> · <a href=\"/c\">{typed}</a></p>",
        title = text(lang, Text::AgentTitle),
        college = escape_html(&state.settings.college_name),
        running = text(lang, Text::AgentRunning),
        login = text(lang, Text::LoginTitle),
        bind = text(lang, Text::BindTitle),
        typed = text(lang, Text::TypedLabel),
    );
    Html(layout(lang, text(lang, Text::AgentTitle), &body)).into_response()
}

fn login_page(lang: Lang, status: StatusCode, error: Option<&str>, secure: bool) -> Response {
    let csrf = random_token(24).unwrap_or_default();
    let error = error
        .map(|error| format!("<p class=bad>{error}</p>"))
        .unwrap_or_default();
    let body = format!(
        "<h1>{title}</h1>{error}<form method=post action=\"/login\"><input type=hidden name=csrf value=\"{csrf}\">\
         <p><label>{login}<br><input name=login autocomplete=username required></label></p>\
         <p><label>{password}<br><input name=password type=password autocomplete=current-password required></label></p>\
         <p><button>{submit}</button></p></form>",
        title = text(lang, Text::LoginTitle),
        login = text(lang, Text::LoginLogin),
        password = text(lang, Text::LoginPassword),
        submit = text(lang, Text::LoginSubmit),
    );
    let mut response = (
        status,
        Html(layout(lang, text(lang, Text::LoginTitle), &body)),
    )
        .into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, 3600, secure),
    );
    response
}

pub async fn login_form(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    login_page(
        language(query.lang.as_deref(), &headers),
        StatusCode::OK,
        None,
        state.secure_cookies,
    )
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
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = language(query.lang.as_deref(), &headers);
    let now = state.now();
    // Double-submit: the form's token must equal the cookie set with the form.
    let csrf_ok = double_submit_ok(&headers, LOGIN_CSRF_COOKIE, &form.csrf);
    if !csrf_ok {
        return login_page(
            lang,
            StatusCode::FORBIDDEN,
            Some(text(lang, Text::StaffCsrf)),
            state.secure_cookies,
        );
    }
    let limiter_key = format!("login:{}", form.login.trim().to_lowercase());
    if state.limiter.is_locked(&limiter_key, now) {
        return login_page(
            lang,
            StatusCode::TOO_MANY_REQUESTS,
            Some(text(lang, Text::LoginLocked)),
            state.secure_cookies,
        );
    }
    let login_name = form.login.clone();
    let account = state
        .with_db(move |store| {
            accounts::find_account(store.connection(), &login_name)
                .map_err(|error| AgentError::Operation(error.to_string()))
        })
        .await;
    let account = match account {
        Ok(account) => account,
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    // Off the database lock: the check takes tens of milliseconds.
    let member = state.passwords.check(account, form.password.clone()).await;
    let login_name = form.login.clone();
    let outcome = state
        .with_db(move |store| match member {
            Some(member) => {
                let (token, _) = accounts::start_session(store.connection(), member.id, now)
                    .map_err(|error| AgentError::Operation(error.to_string()))?;
                Ok(Some(token))
            }
            None => {
                accounts::record_failed_sign_in(store.connection(), &login_name, now)
                    .map_err(|source| AgentError::from(store.error(source)))?;
                Ok(None)
            }
        })
        .await;
    match outcome {
        Ok(Some(token)) => {
            state.limiter.clear(&limiter_key);
            let mut response = Redirect::to("/teacher").into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &token, SESSION_SECS, state.secure_cookies),
            );
            response
        }
        Ok(None) => {
            state.limiter.record_failure(&limiter_key, now);
            login_page(
                lang,
                StatusCode::UNAUTHORIZED,
                Some(text(lang, Text::LoginWrong)),
                state.secure_cookies,
            )
        }
        Err(error) => failure_page(lang, &error.to_string()),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let lang = language(None, &headers);
    let Some((_, csrf)) = signed_in(&state, &headers).await else {
        return unauthorised(lang);
    };
    if !constant_time_eq(&csrf, &form.csrf) {
        return forbidden(lang, Text::StaffCsrf);
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let _ = state
            .with_db(move |store| {
                accounts::end_session(store.connection(), &token)
                    .map_err(|source| AgentError::from(store.error(source)))
            })
            .await;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, state.secure_cookies),
    );
    response
}

pub async fn teacher_page(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = language(query.lang.as_deref(), &headers);
    let Some((member, csrf)) = signed_in(&state, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    let settings = state.settings.clone();
    let now = state.now();
    // The agent's clock, not the system's: the same clock decides the codes.
    let today = state.settings.local_date(state.now());
    let visible = {
        let member = member.clone();
        state
            .with_db(move |store| {
                let failure = |source| AgentError::from(store.error(source));
                let all = lessons::list_for_date(
                    store.connection(),
                    today,
                    now,
                    &settings.lesson_times(),
                )
                .map_err(failure)?;
                let rules = settings.coverage_rules();
                // The group's coverage this month, so a teacher sees it before marking by hand.
                let mut coverage_by_group: std::collections::HashMap<String, (Option<u64>, bool)> =
                    std::collections::HashMap::new();
                let mut visible = Vec::new();
                for lesson in all {
                    if accounts::may_act_on_lesson(
                        store.connection(),
                        &member,
                        &lesson.teacher_iin,
                        &lesson.group,
                    )
                    .map_err(failure)?
                    {
                        let students = crate::roster::active_students_of_group(
                            store.connection(),
                            &lesson.group,
                        )
                        .map_err(failure)?;
                        if !coverage_by_group.contains_key(&lesson.group) {
                            let report = crate::coverage::coverage_for_month(
                                store.connection(),
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
                        let coverage = coverage_by_group
                            .get(&lesson.group)
                            .copied()
                            .unwrap_or((None, true));
                        visible.push((lesson, students, coverage));
                    }
                }
                Ok(visible)
            })
            .await
    };
    let visible = match visible {
        Ok(visible) => visible,
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let csrf_field = format!(
        "<input type=hidden name=csrf value=\"{}\">",
        escape_html(&csrf)
    );
    let mut rows = String::new();
    for (lesson, students, (coverage, holds)) in &visible {
        let actions = match lesson.state {
            LessonState::Scheduled => format!(
                "<form method=post action=\"/teacher/lessons/{id}/open\">{csrf_field}<button>{open}</button></form>",
                id = lesson.id,
                open = text(lang, Text::LessonOpen)
            ),
            LessonState::Open => format!(
                "<a href=\"/display/{id}\">{display}</a> <form method=post action=\"/teacher/lessons/{id}/close\">{csrf_field}<button>{close}</button></form>",
                id = lesson.id,
                display = text(lang, Text::LessonDisplay),
                close = text(lang, Text::LessonClose)
            ),
            LessonState::Closed => text(lang, Text::LessonClosed).to_owned(),
        };
        let manual = if lesson.state == LessonState::Scheduled {
            String::new()
        } else {
            let options: String = students
                .iter()
                .map(|(iin, name)| {
                    format!("<option value=\"{iin}\">{}</option>", escape_html(name))
                })
                .collect();
            format!(
                "<form method=post action=\"/teacher/lessons/{id}/marks\">{csrf_field}<select name=student>{options}</select>\
                 <select name=status><option value=present>{present}</option><option value=late>{late}</option>\
                 <option value=absent>{absent}</option><option value=excused>{excused}</option></select>\
                 <input name=reason placeholder=\"{reason}\" maxlength=200>{override_field}<button>{save}</button></form>",
                override_field = if member.role == Role::Admin {
                    format!("<input name=override_reason placeholder=\"{}\" maxlength=200>", text(lang, Text::MarkOverrideReason))
                } else {
                    String::new()
                },
                id = lesson.id,
                present = text(lang, Text::MarkPresent),
                late = text(lang, Text::MarkLate),
                absent = text(lang, Text::MarkAbsent),
                excused = text(lang, Text::MarkExcused),
                reason = text(lang, Text::MarkReason),
                save = text(lang, Text::MarkSave),
            ) + &format!(
                "<form method=post action=\"/teacher/lessons/{id}/grades\" class=grade>{csrf_field}<select name=student>{options}</select>\
                 <select name=assessment><option value=current>{current}</option><option value=midterm>{midterm}</option>\
                 <option value=exam>{exam}</option><option value=practice>{practice}</option></select>\
                 <input name=score type=number min=0 max=100 required placeholder=\"0–100\">\
                 <input name=credits type=number min=0 max=60 value=0 title=\"{credits}\"><button>{save}</button></form>",
                id = lesson.id,
                current = text(lang, Text::GradeCurrent),
                midterm = text(lang, Text::GradeMidterm),
                exam = text(lang, Text::GradeExam),
                practice = text(lang, Text::GradePractice),
                credits = text(lang, Text::GradeCredits),
                save = text(lang, Text::GradeSave),
            )
        };
        rows.push_str(&format!(
            "<tr><td>{start}–{end}</td><td>{group}</td><td>{discipline}</td><td>{room}</td><td>{checked}/{expected}</td>\
             <td class=\"{coverage_class}\" title=\"{coverage_title}\">{coverage_text}</td><td>{actions}{manual}</td></tr>",
            coverage_class = if *holds { "ok" } else { "bad" },
            coverage_title = text(lang, Text::MarkGroupCoverage),
            coverage_text = kasip_core::per_mille_text(*coverage),
            start = lesson.start,
            end = lesson.end,
            group = escape_html(&lesson.group),
            discipline = escape_html(&lesson.discipline),
            room = escape_html(if lesson.mode == "online" { "online" } else { &lesson.room }),
            checked = lesson.checked_in,
            expected = lesson.expected,
        ));
    }
    let admin_tools = if member.role == Role::Admin {
        format!(
            "<p><a href=\"/admin\">{dashboard}</a></p><h2>{codes}</h2><form method=post action=\"/admin/binding-codes\">{csrf_field}\
             <input name=iin inputmode=numeric maxlength=12 placeholder=\"{iin}\" required><button>{issue}</button></form>",
            dashboard = text(lang, Text::AdminDashboard),
            codes = text(lang, Text::AdminBindingCodes),
            iin = text(lang, Text::BindIin),
            issue = text(lang, Text::AdminIssueCode),
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>{title}</h1><p>{who}: {login}</p><table>{rows}</table>{admin_tools}\
         <form method=post action=\"/logout\">{csrf_field}<button>{logout}</button></form>",
        title = text(lang, Text::TeacherTitle),
        who = text(lang, Text::TeacherSignedInAs),
        login = escape_html(&member.login),
        logout = text(lang, Text::Logout),
    );
    Html(layout(lang, text(lang, Text::TeacherTitle), &body)).into_response()
}

/// Checks session, CSRF and access for a lesson action; Err is the response to send.
async fn authorise_lesson_action(
    state: &AppState,
    headers: &HeaderMap,
    lesson_id: i64,
    form_csrf: &str,
) -> Result<(StaffMember, LessonSummary, Lang), Response> {
    let lang = language(None, headers);
    let Some((member, csrf)) = signed_in(state, headers).await else {
        return Err(unauthorised(lang));
    };
    if !constant_time_eq(&csrf, form_csrf) {
        return Err(forbidden(lang, Text::StaffCsrf));
    }
    match accessible_lesson(state, &member, lesson_id).await {
        Ok(Some(lesson)) => Ok((member, lesson, lang)),
        Ok(None) => Err(forbidden(lang, Text::StaffNotYours)),
        Err(error) => Err(failure_page(lang, &error.to_string())),
    }
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
    headers: HeaderMap,
    csrf: String,
    action: LessonAction,
) -> Response {
    let (member, _, lang) = match authorise_lesson_action(&state, &headers, lesson_id, &csrf).await
    {
        Ok(authorised) => authorised,
        Err(response) => return response,
    };
    let now = state.now();
    let result = state
        .with_db(move |store| {
            let connection = store.connection();
            match action {
                LessonAction::Open => {
                    lessons::open(connection, lesson_id, &member.login, now).map(drop)
                }
                LessonAction::Close => lessons::close(connection, lesson_id, &member.login, now),
            }
            .map_err(|error| AgentError::Operation(error.to_string()))
        })
        .await;
    match (result, action) {
        (Ok(()), LessonAction::Open) => {
            Redirect::to(&format!("/display/{lesson_id}")).into_response()
        }
        (Ok(()), LessonAction::Close) => Redirect::to("/teacher").into_response(),
        (Err(error), _) => message_page(
            StatusCode::CONFLICT,
            lang,
            Text::ErrorTitle,
            &format!("<p class=bad>{}</p>", escape_html(&error.to_string())),
        ),
    }
}

pub async fn open_lesson(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    act_on_lesson(state, lesson_id, headers, form.csrf, LessonAction::Open).await
}

pub async fn close_lesson(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    act_on_lesson(state, lesson_id, headers, form.csrf, LessonAction::Close).await
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

#[derive(Deserialize)]
pub struct GradeForm {
    csrf: String,
    student: String,
    assessment: String,
    score: String,
    credits: String,
}

/// A grade for a student of the lesson's group, dated the lesson's day, in its discipline.
pub async fn record_grade(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<GradeForm>,
) -> Response {
    let (member, lesson, lang) =
        match authorise_lesson_action(&state, &headers, lesson_id, &form.csrf).await {
            Ok(authorised) => authorised,
            Err(response) => return response,
        };
    let bad_input = || refusal(StatusCode::BAD_REQUEST, lang, Text::MarkBadInput);
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
        return bad_input();
    };
    let grade = crate::grades::NewGrade {
        student,
        discipline,
        assessment,
        score,
        credits,
        date,
        recorded_by: member.login.clone(),
    };
    let now = state.now();
    let group = lesson.group.clone();
    let recorded = state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            crate::grades::record_for_group(store.connection(), &grade, &group, now)
                .map_err(failure)
        })
        .await;
    match recorded {
        Ok(Some(_)) => Redirect::to("/teacher").into_response(),
        Ok(None) => bad_input(),
        Err(error) => failure_page(lang, &error.to_string()),
    }
}

pub async fn manual_mark(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    headers: HeaderMap,
    Form(form): Form<ManualMarkForm>,
) -> Response {
    let (member, _, lang) =
        match authorise_lesson_action(&state, &headers, lesson_id, &form.csrf).await {
            Ok(authorised) => authorised,
            Err(response) => return response,
        };
    let (Ok(student_iin), Some(status)) =
        (Iin::parse(&form.student), MarkStatus::parse(&form.status))
    else {
        return refusal(StatusCode::BAD_REQUEST, lang, Text::MarkBadInput);
    };
    if form.reason.chars().count() > 200 {
        return refusal(StatusCode::BAD_REQUEST, lang, Text::MarkBadInput);
    }
    let mark = ManualMark {
        lesson_id,
        student_iin,
        status,
        reason: form.reason,
        marker: member,
        override_reason: Some(form.override_reason).filter(|reason| !reason.trim().is_empty()),
    };
    let percent = kasip_core::per_mille_text;
    let coverage_change = |before: Option<u64>, after: Option<u64>| {
        format!(
            "<p>{}: {} → {}</p>",
            text(lang, Text::MarkGroupCoverage),
            percent(before),
            percent(after)
        )
    };
    match state.writer.record_manual_mark(mark).await {
        Ok(Ok(accepted)) => {
            let mut response = match accepted.below_rule {
                None => Redirect::to("/teacher").into_response(),
                Some((before, after)) => message_page(
                    StatusCode::OK,
                    lang,
                    Text::MarkSaved,
                    &format!(
                        "<p class=bad id=warning>{}</p>{}<p><a href=\"/teacher\">←</a></p>",
                        text(lang, Text::MarkBelowRuleWarning),
                        coverage_change(before, after)
                    ),
                ),
            };
            if let Ok(value) = HeaderValue::from_str(&accepted.event_id.to_string()) {
                response.headers_mut().insert("x-event-id", value);
            }
            response
        }
        Ok(Err(ManualRefusal::NeedsOverride { before, after })) => message_page(
            StatusCode::CONFLICT,
            lang,
            Text::ErrorTitle,
            &format!(
                "<p class=bad id=refusal>{}</p>{}",
                text(lang, Text::MarkNeedsOverride),
                coverage_change(before, after)
            ),
        ),
        Ok(Err(ManualRefusal::Blocked { before, after })) => message_page(
            StatusCode::CONFLICT,
            lang,
            Text::ErrorTitle,
            &format!(
                "<p class=bad id=refusal>{}</p>{}",
                text(lang, Text::MarkBlocked),
                coverage_change(before, after)
            ),
        ),
        Ok(Err(refusal)) => {
            let (status, key) = match refusal {
                ManualRefusal::UnknownLesson => (StatusCode::NOT_FOUND, Text::MarkUnknownLesson),
                ManualRefusal::LessonNotHeld => (StatusCode::CONFLICT, Text::MarkNotHeld),
                ManualRefusal::NotYourLesson => (StatusCode::FORBIDDEN, Text::StaffNotYours),
                ManualRefusal::NotInGroup => (StatusCode::FORBIDDEN, Text::RejectNotInGroup),
                ManualRefusal::ReasonRequired => {
                    (StatusCode::BAD_REQUEST, Text::MarkReasonRequired)
                }
                ManualRefusal::NeedsOverride { .. } | ManualRefusal::Blocked { .. } => {
                    (StatusCode::CONFLICT, Text::MarkBlocked)
                }
            };
            message_page(
                status,
                lang,
                Text::ErrorTitle,
                &format!("<p class=bad>{}</p>", text(lang, key)),
            )
        }
        Err(failure) => super::page::write_failure_page(lang, &failure),
    }
}

/// What the display page fetches every second: the agent's clock decides the code.
#[derive(Serialize)]
pub struct DisplayNow {
    pub state: LessonState,
    pub step: u64,
    pub url: String,
    pub svg: String,
    pub typed_code: String,
    pub qr_version: i16,
    pub checked_in: i64,
    pub expected: i64,
    pub seconds_left: u64,
}

fn qr_svg(url: &str) -> Result<(String, i16), String> {
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|error| error.to_string())?;
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
    headers: HeaderMap,
) -> Response {
    let lang = language(None, &headers);
    let Some((member, _)) = signed_in(&state, &headers).await else {
        return unauthorised(lang);
    };
    let lesson = match accessible_lesson(&state, &member, lesson_id).await {
        Ok(Some(lesson)) => lesson,
        Ok(None) => return forbidden(lang, Text::StaffNotYours),
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let now = state.now();
    let settings = state.settings.clone();
    let key = state
        .with_db(move |store| {
            lessons::open_lesson_at(store.connection(), lesson_id, now, &settings.lesson_times())
                .map(|open| open.map(|open| open.qr_key))
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await;
    let period = u64::from(state.settings.qr_period_secs);
    let step = step_at(now, state.settings.qr_period_secs);
    let seconds_left = period - (now.max(0) as u64 % period);
    let (url, svg, typed, version) = match key {
        Ok(Some(key)) => {
            let key = LessonKey::new(&key);
            let url = format!(
                "{}/c/{}",
                state.public_url,
                ClassroomToken::mint(&key, lesson_id, step)
            );
            match qr_svg(&url) {
                Ok((svg, version)) => (url, svg, typed_code(&key, lesson_id, step), version),
                Err(error) => return failure_page(lang, &error),
            }
        }
        Ok(None) => (String::new(), String::new(), String::new(), 0),
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let mut response = Json(DisplayNow {
        state: lesson.state,
        step,
        url,
        svg,
        typed_code: typed,
        qr_version: version,
        checked_in: lesson.checked_in,
        expected: lesson.expected,
        seconds_left,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn display_page(
    State(state): State<AppState>,
    Path(lesson_id): Path<i64>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = language(query.lang.as_deref(), &headers);
    let Some((member, _)) = signed_in(&state, &headers).await else {
        return Redirect::to("/login").into_response();
    };
    let lesson = match accessible_lesson(&state, &member, lesson_id).await {
        Ok(Some(lesson)) => lesson,
        Ok(None) => return forbidden(lang, Text::StaffNotYours),
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let room = if lesson.mode == "online" {
        "online".to_owned()
    } else {
        format!("{} · {}", lesson.site, lesson.room)
    };
    let page = format!(
        r#"<!doctype html><html lang="{code}"><head><meta charset="utf-8"><title>{discipline}</title>
<style>html,body{{margin:0;height:100%;background:#fff;color:#111;font-family:system-ui,sans-serif}}
body{{display:flex;flex-direction:column;align-items:center;justify-content:center}}
h1{{font-size:5vh;margin:.5vh 0}}h2{{font-size:4vh;margin:.5vh 0;font-weight:500}}
#qr svg{{height:66vh;width:66vh;display:block}}#count{{font-size:5vh;font-weight:700}}
#typed{{font-size:4vh;letter-spacing:.4em;font-family:monospace}}.meta{{font-size:3vh;color:#333}}</style></head>
<body><h1>{discipline}</h1><h2>{group} · {room}</h2><div id="qr"></div>
<div class="meta">{typed_label} <span id="typed"></span> · {start}–{end}</div>
<div><span class="meta">{count_label}</span> <span id="count">{checked}/{expected}</span></div>
<script>
(function() {{
  var shownStep = -1;
  function refresh() {{
    fetch('/display/{id}/current', {{cache: 'no-store', credentials: 'same-origin'}})
      .then(function(r) {{ return r.json(); }})
      .then(function(now) {{
        if (now.step !== shownStep) {{
          document.getElementById('qr').innerHTML = now.svg;
          document.getElementById('typed').textContent = now.typed_code;
          shownStep = now.step;
        }}
        document.getElementById('count').textContent = now.checked_in + '/' + now.expected;
      }})
      .catch(function() {{}})
      .then(function() {{ setTimeout(refresh, 1000); }});
  }}
  refresh();
}})();
</script></body></html>"#,
        code = lang.code(),
        id = lesson.id,
        discipline = escape_html(&lesson.discipline),
        group = escape_html(&lesson.group),
        room = escape_html(&room),
        start = lesson.start,
        end = lesson.end,
        checked = lesson.checked_in,
        expected = lesson.expected,
        typed_label = text(lang, Text::DisplayTyped),
        count_label = text(lang, Text::DisplayCount),
    );
    Html(page).into_response()
}

#[derive(Deserialize)]
pub struct IssueCodeForm {
    #[serde(default)]
    csrf: String,
    iin: String,
}

/// Admin only: a one-time binding code for a student, shown once.
pub async fn issue_binding_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<IssueCodeForm>,
) -> Response {
    let lang = language(None, &headers);
    let Some((member, csrf)) = signed_in(&state, &headers).await else {
        return unauthorised(lang);
    };
    if !constant_time_eq(&csrf, &form.csrf) {
        return forbidden(lang, Text::StaffCsrf);
    }
    if member.role != Role::Admin {
        return forbidden(lang, Text::StaffNotYours);
    }
    let Ok(iin) = Iin::parse(form.iin.trim()) else {
        return refusal(StatusCode::BAD_REQUEST, lang, Text::BindBadIin);
    };
    let now = state.now();
    let issued = state
        .with_db(move |store| {
            accounts::issue_binding_code(store.connection(), &iin, now)
                .map_err(|error| AgentError::Operation(error.to_string()))
        })
        .await;
    match issued {
        Ok(code) => message_page(
            StatusCode::OK,
            lang,
            Text::AdminBindingCodes,
            &format!("<p>{}</p><p id=code style=\"font-size:2rem;font-family:monospace\">{code}</p><p><a href=\"/teacher\">←</a></p>", escape_html(&form.iin)),
        ),
        Err(error) => message_page(StatusCode::NOT_FOUND, lang, Text::ErrorTitle, &format!("<p class=bad>{}</p>", escape_html(&error.to_string()))),
    }
}
