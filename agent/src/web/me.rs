//! A student's own page on their bound phone: "My attendance", a month calendar of their
//! group's lessons with each mark, the month's QR share against the rule and what it
//! takes to reach it, and their grades.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kasip_core::{Date, Lang, Month, Text};
use serde::Deserialize;

use super::error::{OrFailure, WebError};
use super::extract::{PageLang, PageQuery};
use super::page::{cookie, method_text, render, status_text};
use super::phone::CREDENTIAL_COOKIE;
use super::AppState;
use crate::error::AgentError;
use crate::secrets::secret_hash;

struct CellLesson {
    start: String,
    discipline: String,
    /// The status's style class, or `missing` (no mark), or `upcoming`.
    class: &'static str,
    status: &'static str,
    method: &'static str,
}

struct DayCell {
    day: u8,
    today: bool,
    lessons: Vec<CellLesson>,
}

struct GradeLine {
    date: String,
    discipline: String,
    score: u8,
}

#[derive(Template)]
#[template(path = "me.html")]
struct MyMonthPage {
    lang: Lang,
    name: String,
    group: String,
    month: String,
    previous: String,
    next: String,
    weekdays: [&'static str; 7],
    /// Weeks, Monday first; None outside the month.
    weeks: Vec<[Option<DayCell>; 7]>,
    share: String,
    standing: String,
    below: bool,
    grades: Vec<GradeLine>,
}

#[derive(Deserialize)]
pub struct MonthQuery {
    month: Option<String>,
}

/// Monday = 0.
fn weekday(date: Date) -> usize {
    (date.days_since_epoch() + 3).rem_euclid(7) as usize
}

/// `GET /me[?month=YYYY-MM]`: the bound student's month.
pub async fn my_month(
    State(state): State<AppState>,
    PageLang(lang): PageLang,
    PageQuery(query): PageQuery<MonthQuery>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let not_bound = || super::pass::not_bound(lang, Text::MeTitle);
    let Some(credential) = cookie(&headers, CREDENTIAL_COOKIE, state.secure_cookies) else {
        return Err(not_bound());
    };
    let now = state.now();
    let today = state.settings.local_date(now);
    let month = match query.month.as_deref() {
        None => today.calendar_month(),
        Some(text) => Month::parse(text)
            .map_err(|_| WebError::refused(lang, StatusCode::BAD_REQUEST, Text::ErrorBadAddress))?,
    };
    let settings = state.settings.clone();
    let credential_hash = secret_hash(&credential);
    let found = state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let connection = store.connection();
            let Some((_, iin)) =
                crate::kiosks::binding_of(connection, &credential_hash).map_err(failure)?
            else {
                return Ok(None);
            };
            let (rules, _) =
                crate::coverage::rules_in_force(connection, &settings.coverage_rules())
                    .map_err(failure)?;
            let view = crate::student_month::student_month(connection, &iin, month, &rules)
                .map_err(failure)?;
            Ok(view.map(|view| (view, rules.student_qr_share.thousandths())))
        })
        .await
        .or_failure(lang)?;
    let Some((view, rule)) = found else {
        return Err(not_bound());
    };
    let mut weeks: Vec<[Option<DayCell>; 7]> = Vec::new();
    let mut day = month.first_day();
    while day <= month.last_day() {
        if weeks.is_empty() || weekday(day) == 0 {
            weeks.push(Default::default());
        }
        let lessons = view
            .lessons
            .iter()
            .filter(|lesson| lesson.date == day)
            .map(|lesson| CellLesson {
                start: lesson.start.clone(),
                discipline: lesson.discipline.clone(),
                class: match lesson.status {
                    Some(status) => status.as_str(),
                    None if day >= today => "upcoming",
                    None => "missing",
                },
                status: match lesson.status {
                    Some(status) => lang.text(status_text(status)),
                    None if day >= today => "",
                    None => lang.text(Text::RosterNotCheckedIn),
                },
                method: lesson
                    .method
                    .map_or("", |method| lang.text(method_text(method))),
            })
            .collect();
        if let Some(week) = weeks.last_mut() {
            week[weekday(day)] = Some(DayCell {
                day: day.day(),
                today: day == today,
                lessons,
            });
        }
        day = day.add_days(1);
    }
    let per_mille = (view.present > 0).then(|| view.qr * 1000 / view.present);
    let rule_text = kasip_core::per_mille_text(Some(u64::from(rule)));
    let standing = if view.qr_needed == 0 {
        lang.text(Text::MeAbove).to_owned()
    } else if view.qr_needed == u64::MAX {
        lang.text(Text::MeOnlyQr).to_owned()
    } else {
        lang.fill(Text::MeNeeded, &[("count", &view.qr_needed.to_string())])
    };
    Ok(render(
        StatusCode::OK,
        &MyMonthPage {
            lang,
            name: view.name,
            group: view.group,
            month: month.to_string(),
            previous: month.first_day().add_days(-1).calendar_month().to_string(),
            next: month.last_day().add_days(1).calendar_month().to_string(),
            weekdays: [
                Text::DayMon,
                Text::DayTue,
                Text::DayWed,
                Text::DayThu,
                Text::DayFri,
                Text::DaySat,
                Text::DaySun,
            ]
            .map(|day| lang.text(day)),
            weeks,
            share: lang.fill(
                Text::MeShare,
                &[
                    ("share", &kasip_core::per_mille_text(per_mille)),
                    ("qr", &view.qr.to_string()),
                    ("present", &view.present.to_string()),
                    ("rule", &rule_text),
                ],
            ),
            below: view.qr_needed > 0,
            standing,
            grades: view
                .grades
                .into_iter()
                .map(|grade| GradeLine {
                    date: grade.date,
                    discipline: grade.discipline,
                    score: grade.score,
                })
                .collect(),
        },
    ))
}
