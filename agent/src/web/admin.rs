//! The admin dashboard: the month's coverage per group as a server-rendered SVG bar
//! chart with the threshold line, the college's figures, red flags and recent security
//! events; and the coverage table as CSV.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use kasip_core::{per_mille_text, Month, ScopeCoverage};
use serde::Deserialize;

use super::page::{escape_html, failure_page, language, layout, message_page, refusal};
use super::staff::signed_in;
use super::AppState;
use crate::coverage::{month_figures, CoverageReport};
use crate::error::AgentError;
use crate::export::Cell;
use crate::i18n::{text, Lang, Text};
use crate::red_flags::{red_flags_for_month, RedFlag};
use crate::staff::Role;

#[derive(Deserialize)]
pub struct DashboardQuery {
    lang: Option<String>,
    month: Option<String>,
}

/// Bars of coverage per group, 0–100%, with a dashed line at the minimum.
fn coverage_chart(groups: &[ScopeCoverage], min_per_mille: u16) -> String {
    const BAR: u64 = 28;
    const WIDTH: u64 = 600;
    let height = 20 + BAR * groups.len() as u64;
    let label_width = 110;
    let scale = |per_mille: u64| label_width + per_mille * (WIDTH - label_width - 60) / 1000;
    let mut svg = format!(
        "<svg id=coverage-chart xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">"
    );
    for (index, group) in groups.iter().enumerate() {
        let y = 10 + BAR * index as u64;
        let value = group.coverage_per_mille.unwrap_or(0);
        let colour = if group.holds { "#2e7d32" } else { "#c62828" };
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\">{}</text><rect class=bar data-group=\"{}\" data-per-mille=\"{value}\" x=\"{label_width}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            y + 17,
            escape_html(&group.scope),
            escape_html(&group.scope),
            scale(value) - label_width,
            BAR - 8,
            scale(value) + 4,
            y + 17,
            per_mille_text(group.coverage_per_mille),
        ));
    }
    let threshold = scale(u64::from(min_per_mille));
    svg.push_str(&format!(
        "<line id=threshold x1=\"{threshold}\" x2=\"{threshold}\" y1=\"0\" y2=\"{height}\" stroke=\"#000\" stroke-dasharray=\"4 3\"/></svg>"
    ));
    svg
}

struct Dashboard {
    report: CoverageReport,
    trend: crate::coverage::CoverageTrend,
    flags: Vec<RedFlag>,
    security_events: Vec<crate::security_events::RecentEvent>,
    sync: crate::outbox::SyncStatus,
}

/// Red flags read every mark of the month (seconds at 5,000 students, where the rest of
/// the dashboard takes milliseconds), so the dashboard shows the last computation and
/// recomputes it in the background once it is older than `MAX_AGE`.
#[derive(Default)]
pub struct RedFlagCache {
    latest: Mutex<Option<CachedFlags>>,
}

struct CachedFlags {
    month: Month,
    computed: Instant,
    flags: Vec<RedFlag>,
    refreshing: bool,
}

impl RedFlagCache {
    const MAX_AGE: Duration = Duration::from_secs(60);

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<CachedFlags>> {
        self.latest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `month`'s cached flags, if any; calls `refresh` (once) when they are stale.
    fn get(&self, month: Month, refresh: impl FnOnce()) -> Option<Vec<RedFlag>> {
        let mut latest = self.lock();
        let cached = latest.as_mut().filter(|cached| cached.month == month)?;
        if cached.computed.elapsed() > Self::MAX_AGE && !cached.refreshing {
            cached.refreshing = true;
            refresh();
        }
        Some(cached.flags.clone())
    }

    fn store(&self, month: Month, flags: &[RedFlag]) {
        *self.lock() = Some(CachedFlags {
            month,
            computed: Instant::now(),
            flags: flags.to_vec(),
            refreshing: false,
        });
    }

    fn refresh_failed(&self) {
        if let Some(cached) = self.lock().as_mut() {
            cached.refreshing = false;
        }
    }
}

/// Whether the red flags may come from the last computation (the dashboard) or must be
/// computed now (exports: a file an admin sends on must say what is true now).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flags {
    Cached,
    Fresh,
}

async fn load(state: &AppState, month: Month, flags: Flags) -> Result<Dashboard, AgentError> {
    let settings = state.settings.clone();
    let today = settings.local_date(state.now());
    let cached = match flags {
        Flags::Cached => state
            .red_flags
            .get(month, || refresh_red_flags(state.clone(), month)),
        Flags::Fresh => None,
    };
    let now = state.now();
    let (report, trend, flags, security_events, sync) = state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let connection = store.connection();
            let rules = settings.coverage_rules();
            let (report, trend) =
                month_figures(connection, month, today, &rules).map_err(failure)?;
            let flags = match cached {
                Some(flags) => flags,
                None => {
                    red_flags_for_month(connection, month, today, &settings.red_flag_settings())
                        .map_err(failure)?
                }
            };
            let security_events =
                crate::security_events::recent(connection, 20).map_err(failure)?;
            let sync = crate::outbox::status(connection, now).map_err(failure)?;
            Ok((report, trend, flags, security_events, sync))
        })
        .await?;
    state.red_flags.store(month, &flags);
    Ok(Dashboard {
        report,
        trend,
        flags,
        security_events,
        sync,
    })
}

/// Recomputes `month`'s red flags in the background and caches them.
fn refresh_red_flags(state: AppState, month: Month) {
    tokio::spawn(async move {
        let settings = state.settings.clone();
        let today = settings.local_date(state.now());
        let computed = state
            .with_db(move |store| {
                red_flags_for_month(
                    store.connection(),
                    month,
                    today,
                    &settings.red_flag_settings(),
                )
                .map_err(|source| AgentError::from(store.error(source)))
            })
            .await;
        match computed {
            Ok(flags) => state.red_flags.store(month, &flags),
            Err(error) => {
                state.red_flags.refresh_failed();
                tracing::error!(%error, "red flags could not be recomputed");
            }
        }
    });
}

/// Admins only; the month from `?month=YYYY-MM`, this month by default.
async fn authorise(
    state: &AppState,
    headers: &HeaderMap,
    query_lang: Option<&str>,
    query_month: Option<&str>,
) -> Result<(Lang, Month), Response> {
    let lang = language(query_lang, headers);
    let Some((member, _)) = signed_in(state, headers).await else {
        return Err(Redirect::to("/login").into_response());
    };
    if member.role != Role::Admin {
        return Err(refusal(StatusCode::FORBIDDEN, lang, Text::StaffNotYours));
    }
    let month = match query_month {
        Some(text) => Month::parse(text).map_err(|error| {
            message_page(
                StatusCode::BAD_REQUEST,
                lang,
                Text::ErrorTitle,
                &format!("<p class=bad>{}</p>", escape_html(&error.to_string())),
            )
        })?,
        None => state.settings.local_date(state.now()).calendar_month(),
    };
    Ok((lang, month))
}

pub async fn dashboard(
    State(state): State<AppState>,
    Query(query): Query<DashboardQuery>,
    headers: HeaderMap,
) -> Response {
    let (lang, month) = match authorise(
        &state,
        &headers,
        query.lang.as_deref(),
        query.month.as_deref(),
    )
    .await
    {
        Ok(authorised) => authorised,
        Err(response) => return response,
    };
    let csrf = signed_in(&state, &headers)
        .await
        .map(|(_, csrf)| csrf)
        .unwrap_or_default();
    let dashboard = match load(&state, month, Flags::Cached).await {
        Ok(dashboard) => dashboard,
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let college = &dashboard.report.college;
    let rows: String = dashboard
        .report
        .groups
        .iter()
        .map(|group| {
            format!(
                "<tr data-group=\"{g}\"><td><a href=\"/admin/group?month={month}&amp;code={code}\">{g}</a></td><td>{}/{}</td><td>{}</td><td>{}</td><td class={}>{}</td></tr>",
                group.qr_tracked,
                group.beneficiaries,
                per_mille_text(group.coverage_per_mille),
                per_mille_text(group.qr_share_per_mille),
                if group.holds { "ok" } else { "bad" },
                if group.holds { "✓" } else { "✗" },
                g = escape_html(&group.scope),
                code = percent_encode(&group.scope),
            )
        })
        .collect();
    let flags: String = dashboard
        .flags
        .iter()
        .map(|flag| {
            format!(
                "<li>{}: {} — {}</li>",
                flag.kind,
                escape_html(&flag.subject),
                escape_html(&flag.detail)
            )
        })
        .collect();
    let events: String = dashboard
        .security_events
        .iter()
        .map(|event| {
            format!(
                "<li>{}: {} {}</li>",
                event.at,
                escape_html(&event.kind),
                escape_html(&event.student_iin)
            )
        })
        .collect();
    let body = format!(
        "<h1>{title} — {month}</h1>\
         <p id=college data-per-mille=\"{college_value}\">{coverage_label}: <b>{college_pct}</b> ({tracked}/{beneficiaries}), {qr_label}: {qr_share}</p>\
         <p id=projection data-per-mille=\"{projection_value}\">{projection_label}: {projection}</p>\
         <table id=trend><tr>{trend_head}</tr><tr>{trend_row}</tr></table>\
         {chart}<table><tr><th>{group}</th><th>QR</th><th>%</th><th>{qr_label}</th><th></th></tr>{rows}</table>\
         <p><a href=\"/admin/export/coverage?month={month}\">CSV</a> · <a href=\"/admin/export/coverage?month={month}&amp;format=xlsx\">XLSX</a> · \
         {red_flags}: <a href=\"/admin/export/red-flags?month={month}\">CSV</a> · <a href=\"/admin/export/red-flags?month={month}&amp;format=xlsx\">XLSX</a></p>\
         <form method=post action=\"/admin/month-close\"><input type=hidden name=csrf value=\"{csrf}\">\
         <input type=hidden name=month value=\"{month}\"><input name=reason maxlength=200 placeholder=\"{reason}\">\
         <button>{close}</button></form>\
         {sync}<h2>{flags_title}</h2><ul id=red-flags>{flags}</ul><h2>{events_title}</h2><ul>{events}</ul>",
        sync = sync_section(lang, &dashboard.sync),
        title = text(lang, Text::AdminDashboard),
        red_flags = text(lang, Text::AdminRedFlags),
        csrf = escape_html(&csrf),
        reason = text(lang, Text::AdminCloseReason),
        close = text(lang, Text::AdminCloseMonth),
        college_value = college.coverage_per_mille.map_or(-1, |value| value as i64),
        coverage_label = text(lang, Text::MarkGroupCoverage),
        college_pct = per_mille_text(college.coverage_per_mille),
        tracked = college.qr_tracked,
        beneficiaries = college.beneficiaries,
        qr_label = text(lang, Text::AdminQrShare),
        qr_share = per_mille_text(college.qr_share_per_mille),
        projection_value = dashboard.trend.projected_month_end.map_or(-1, |value| value as i64),
        projection_label = text(lang, Text::AdminProjection),
        projection = per_mille_text(dashboard.trend.projected_month_end),
        trend_head = dashboard.trend.weeks.iter().map(|(end, _)| format!("<th>≤ {end}</th>")).collect::<String>(),
        trend_row = dashboard.trend.weeks.iter().map(|(_, value)| format!("<td>{}</td>", per_mille_text(*value))).collect::<String>(),
        chart = coverage_chart(&dashboard.report.groups, dashboard.report.min_coverage_per_mille),
        group = text(lang, Text::StatusGroups),
        flags_title = text(lang, Text::AdminRedFlags),
        events_title = text(lang, Text::AdminSecurityEvents),
    );
    Html(layout(lang, text(lang, Text::AdminDashboard), &body)).into_response()
}

/// The registry queue: an alert in red when it stopped, otherwise its depth.
fn sync_section(lang: Lang, sync: &crate::outbox::SyncStatus) -> String {
    let mut html = format!("<h2>{}</h2>", text(lang, Text::SyncTitle));
    match (&sync.alert, &sync.registry) {
        (Some(alert), _) => html.push_str(&format!(
            "<p id=sync-alert class=bad>{}: {}</p>",
            text(lang, Text::SyncAlert),
            escape_html(alert)
        )),
        (None, None) => html.push_str(&format!(
            "<p id=sync>{}</p>",
            text(lang, Text::SyncNotEnrolled)
        )),
        // A day's backlog is not an outage the admin can ignore: shown in red.
        (None, Some(registry)) => html.push_str(&format!(
            "<p id=sync data-queued=\"{}\"{}>{}: {} / {} · {}: {}</p>",
            sync.queued_batches + u64::from(sync.unsealed_records > 0),
            if sync.oldest_unsent_age_secs.is_some_and(|age| age > 86_400) {
                " class=bad"
            } else {
                ""
            },
            escape_html(registry),
            sync.queued_batches,
            sync.queued_records + sync.unsealed_records,
            text(lang, Text::SyncOldest),
            sync.oldest_unsent_age_secs
                .map_or("—".to_owned(), |age| format!("{} min", age / 60)),
        )),
    }
    if let Some(error) = sync.last_error.as_ref().filter(|_| sync.alert.is_none()) {
        html.push_str(&format!(
            "<p class=bad>{}: {}</p>",
            text(lang, Text::SyncLastError),
            escape_html(error)
        ));
    }
    if let Some(report) = &sync.beneficiary_pull {
        html.push_str(&format!(
            "<p id=beneficiary-pull>{}: {} / {}</p>",
            text(lang, Text::SyncBeneficiaryPull),
            report["listed"],
            report["changed"],
        ));
    }
    if let Some(unknown) = sync
        .beneficiary_pull
        .as_ref()
        .and_then(|report| report["unknown_to_roster"].as_array())
        .filter(|unknown| !unknown.is_empty())
    {
        let iins: Vec<String> = unknown
            .iter()
            .filter_map(|iin| iin.as_str().map(escape_html))
            .collect();
        html.push_str(&format!(
            "<p id=unknown-beneficiaries class=bad>{}: {}</p>",
            text(lang, Text::SyncUnknownStudents),
            iins.join(", ")
        ));
    }
    html
}

#[derive(Deserialize)]
pub struct ExportQuery {
    lang: Option<String>,
    month: Option<String>,
    /// `csv` (default) or `xlsx`.
    format: Option<String>,
    /// The group, for the `group` table.
    code: Option<String>,
}

/// Every dashboard table as CSV or XLSX: `coverage`, `red-flags`, `security-events`,
/// and `group` (with `code`).
pub async fn export(
    State(state): State<AppState>,
    axum::extract::Path(table_name): axum::extract::Path<String>,
    Query(query): Query<ExportQuery>,
    headers: HeaderMap,
) -> Response {
    let (lang, month) = match authorise(
        &state,
        &headers,
        query.lang.as_deref(),
        query.month.as_deref(),
    )
    .await
    {
        Ok(authorised) => authorised,
        Err(response) => return response,
    };
    let bad_request = |lang| refusal(StatusCode::BAD_REQUEST, lang, Text::MarkBadInput);
    let table = match table_name.as_str() {
        "coverage" | "red-flags" | "security-events" => {
            let dashboard = match load(&state, month, Flags::Fresh).await {
                Ok(dashboard) => dashboard,
                Err(error) => return failure_page(lang, &error.to_string()),
            };
            match table_name.as_str() {
                "coverage" => coverage_table(month, &dashboard.report),
                "red-flags" => crate::export::Table {
                    name: format!("red flags {month}"),
                    headers: vec!["kind", "subject", "detail"],
                    rows: dashboard
                        .flags
                        .iter()
                        .map(|flag| {
                            vec![
                                flag.kind.into(),
                                flag.subject.clone().into(),
                                flag.detail.clone().into(),
                            ]
                        })
                        .collect(),
                },
                _ => crate::export::Table {
                    name: "security events".into(),
                    headers: vec!["at", "kind", "student_iin"],
                    rows: dashboard
                        .security_events
                        .iter()
                        .map(|event| {
                            vec![
                                Cell::Number(event.at as f64),
                                event.kind.clone().into(),
                                event.student_iin.clone().into(),
                            ]
                        })
                        .collect(),
                },
            }
        }
        "group" => {
            let Some(code) = query.code.clone() else {
                return bad_request(lang);
            };
            let students = group_students(&state, month, code.clone()).await;
            match students {
                Ok(students) => crate::export::Table {
                    name: format!("{code} {month}"),
                    headers: vec!["iin", "name", "present", "qr_marks", "qr_tracked"],
                    rows: students
                        .iter()
                        .map(|student| {
                            vec![
                                student.iin.clone().into(),
                                student.name.clone().into(),
                                student.present.into(),
                                student.qr.into(),
                                if student.is_qr_tracked(state.settings.student_qr_share) {
                                    "yes"
                                } else {
                                    "no"
                                }
                                .into(),
                            ]
                        })
                        .collect(),
                },
                Err(error) => return failure_page(lang, &error.to_string()),
            }
        }
        _ => return bad_request(lang),
    };
    let (body, content_type, extension) = match query.format.as_deref().unwrap_or("csv") {
        "csv" => (
            table.to_csv().into_bytes(),
            "text/csv; charset=utf-8",
            "csv",
        ),
        "xlsx" => match table.to_xlsx() {
            Ok(bytes) => (
                bytes,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                "xlsx",
            ),
            Err(error) => return failure_page(lang, &error.to_string()),
        },
        _ => return bad_request(lang),
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{table_name}-{month}.{extension}\""
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

fn coverage_table(month: Month, report: &CoverageReport) -> crate::export::Table {
    crate::export::Table {
        name: format!("coverage {month}"),
        headers: vec![
            "scope",
            "beneficiaries",
            "qr_tracked",
            "coverage_per_mille",
            "present_marks",
            "qr_marks",
            "holds",
        ],
        rows: std::iter::once(&report.college)
            .chain(&report.groups)
            .map(|scope| {
                vec![
                    scope.scope.clone().into(),
                    scope.beneficiaries.into(),
                    scope.qr_tracked.into(),
                    scope
                        .coverage_per_mille
                        .map_or(Cell::Text(String::new()), Cell::from),
                    scope.present_marks.into(),
                    scope.qr_marks.into(),
                    if scope.holds { "yes" } else { "no" }.into(),
                ]
            })
            .collect(),
    }
}

#[derive(Deserialize)]
pub struct CloseForm {
    #[serde(default)]
    csrf: String,
    month: String,
    #[serde(default)]
    reason: String,
}

/// The dashboard's close button: the same `month_close::close` as the CLI. A month that
/// has not ended closes only with a reason.
pub async fn close_month(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Form(form): axum::extract::Form<CloseForm>,
) -> Response {
    let lang = language(None, &headers);
    let Some((member, csrf)) = signed_in(&state, &headers).await else {
        return refusal(StatusCode::UNAUTHORIZED, lang, Text::StaffSignInFirst);
    };
    if !kasip_core::constant_time_eq(csrf.as_bytes(), form.csrf.as_bytes()) {
        return refusal(StatusCode::FORBIDDEN, lang, Text::StaffCsrf);
    }
    if member.role != Role::Admin {
        return refusal(StatusCode::FORBIDDEN, lang, Text::StaffNotYours);
    }
    let Ok(month) = Month::parse(&form.month) else {
        return refusal(StatusCode::BAD_REQUEST, lang, Text::MarkBadInput);
    };
    let now = state.now();
    let settings = state.settings.clone();
    let data_dir = state.data_dir.clone();
    let reason = Some(form.reason.trim().to_owned()).filter(|reason| !reason.is_empty());
    let closed = state
        .with_db(move |store| {
            let key = kasip_certs::DeviceKey::load(&data_dir.key_path())?;
            let request = crate::month_close::CloseRequest {
                month,
                today: settings.local_date(now),
                now,
                force_reason: reason.as_deref(),
                closed_by: &member.login,
            };
            crate::month_close::close(
                store,
                &data_dir,
                &settings.month_close_settings(),
                &key,
                &request,
            )
        })
        .await;
    match closed {
        Ok(closed) => message_page(
            StatusCode::OK,
            lang,
            Text::AdminCloseMonth,
            &format!(
                "<p id=verdict class={}>{month}: {}</p><p>{}</p>",
                if closed.compliant { "ok" } else { "bad" },
                if closed.compliant {
                    "compliant"
                } else {
                    "NON-COMPLIANT"
                },
                escape_html(&closed.statement.display().to_string())
            ),
        ),
        Err(error) => message_page(
            StatusCode::CONFLICT,
            lang,
            Text::ErrorTitle,
            &format!(
                "<p class=bad id=refusal>{}</p>",
                escape_html(&error.to_string())
            ),
        ),
    }
}

/// A group's beneficiaries for the month, for the drill-down page and its export.
async fn group_students(
    state: &AppState,
    month: Month,
    code: String,
) -> Result<Vec<kasip_core::StudentMonth>, AgentError> {
    let settings = state.settings.clone();
    state
        .with_db(move |store| {
            crate::coverage::student_months(
                store.connection(),
                month,
                Some(&code),
                &settings.coverage_rules(),
            )
            .map_err(|source| AgentError::from(store.error(source)))
        })
        .await
}

/// Enough of URL percent-encoding for group codes in a query string.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[derive(Deserialize)]
pub struct GroupQuery {
    lang: Option<String>,
    month: Option<String>,
    code: String,
}

/// Drill-down: each beneficiary of a group with their present and QR marks.
pub async fn group_page(
    State(state): State<AppState>,
    Query(query): Query<GroupQuery>,
    headers: HeaderMap,
) -> Response {
    let (lang, month) = match authorise(
        &state,
        &headers,
        query.lang.as_deref(),
        query.month.as_deref(),
    )
    .await
    {
        Ok(authorised) => authorised,
        Err(response) => return response,
    };
    let students = group_students(&state, month, query.code.clone()).await;
    let students = match students {
        Ok(students) => students,
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let rows: String = students
        .iter()
        .map(|student| {
            format!(
                "<tr data-iin=\"{iin}\"><td><a href=\"/admin/student?month={month}&amp;iin={iin}\">{name}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                student.present,
                student.qr,
                if student.is_qr_tracked(state.settings.student_qr_share) { "✓" } else { "✗" },
                iin = student.iin,
                name = escape_html(&student.name),
            )
        })
        .collect();
    let body = format!(
        "<h1>{} — {month}</h1><table><tr><th></th><th>{}</th><th>QR</th><th></th></tr>{rows}</table><p><a href=\"/admin?month={month}\">←</a></p>",
        escape_html(&query.code),
        text(lang, Text::MarkPresent),
    );
    Html(layout(lang, text(lang, Text::AdminDashboard), &body)).into_response()
}

#[derive(Deserialize)]
pub struct StudentQuery {
    lang: Option<String>,
    month: Option<String>,
    iin: String,
}

/// Drill-down: one student's marks in the month, latest last.
pub async fn student_page(
    State(state): State<AppState>,
    Query(query): Query<StudentQuery>,
    headers: HeaderMap,
) -> Response {
    let (lang, month) = match authorise(
        &state,
        &headers,
        query.lang.as_deref(),
        query.month.as_deref(),
    )
    .await
    {
        Ok(authorised) => authorised,
        Err(response) => return response,
    };
    let Ok(iin) = kasip_core::Iin::parse(query.iin.trim()) else {
        return refusal(StatusCode::BAD_REQUEST, lang, Text::BindBadIin);
    };
    let settings = std::sync::Arc::clone(&state.settings);
    let marks = state
        .with_db(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let presence =
                crate::kiosks::campus_presence(store.connection(), &iin.as_string(), 1000)
                    .map_err(failure)?;
            let presence: Vec<(String, String)> = presence
                .into_iter()
                .filter_map(|(at, site)| {
                    let local = at + settings.timezone.offset_seconds();
                    let date = kasip_core::Date::from_days_since_epoch(local.div_euclid(86_400));
                    (date.calendar_month() == month).then(|| {
                        let seconds = local.rem_euclid(86_400);
                        (
                            format!("{date} {:02}:{:02}", seconds / 3600, seconds % 3600 / 60),
                            site,
                        )
                    })
                })
                .collect();
            let marks = crate::attendance::student_month_marks(store.connection(), &iin, month)
                .map_err(failure)?;
            Ok((marks, presence))
        })
        .await;
    let (marks, presence) = match marks {
        Ok(found) => found,
        Err(error) => return failure_page(lang, &error.to_string()),
    };
    let rows: String = marks
        .iter()
        .map(|mark| {
            format!(
                "<tr><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                mark.date,
                mark.start,
                escape_html(&mark.discipline),
                mark.status.as_str(),
                mark.method.as_str(),
                escape_html(&mark.marked_by)
            )
        })
        .collect();
    let presence_rows: String = presence
        .iter()
        .rev()
        .map(|(at, site)| format!("<tr><td>{at}</td><td>{}</td></tr>", escape_html(site)))
        .collect();
    let body = format!(
        "<h1>{} — {month}</h1><table id=marks>{rows}</table><h2>{}</h2><table id=campus-presence>{presence_rows}</table>",
        escape_html(&query.iin),
        text(lang, Text::AdminCampusPresence),
    );
    Html(layout(lang, text(lang, Text::AdminDashboard), &body)).into_response()
}
