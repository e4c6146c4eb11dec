//! The admin dashboard: the month's coverage per group as a server-rendered SVG bar
//! chart with the threshold line, the college's figures, red flags and recent security
//! events; drill-downs to a group and a student; every table as CSV or XLSX; and the
//! month-close button.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kasip_core::{per_mille_text, Month, PerMille, ScopeCoverage, StudentMonth};
use serde::Deserialize;

use super::charts::{CoverageChart, Heatmap, TrendChart};
use super::error::{OrFailure, WebError};
use super::extract::{Admin, AdminForm, CsrfField, PageQuery, StaffForm};
use super::page::render;
use super::AppState;
use crate::coverage::{group_days, month_figures, CoverageReport, CoverageTrend, GroupDay};
use crate::error::AgentError;
use crate::export::{Cell, Table};
use crate::outbox::SyncStatus;
use crate::red_flags::{red_flags_for_month, RedFlag};
use crate::security_events::RecentEvent;
use kasip_core::{Lang, Text};

#[derive(Deserialize)]
pub struct MonthQuery {
    month: Option<String>,
}

/// The month of `?month=YYYY-MM`, this month by default; 400 naming the fault.
fn month_of(state: &AppState, lang: Lang, query: Option<&str>) -> Result<Month, WebError> {
    match query {
        Some(text) => Month::parse(text)
            .map_err(|error| WebError::refused_because(lang, StatusCode::BAD_REQUEST, error)),
        None => Ok(state.settings.local_date(state.now()).calendar_month()),
    }
}

struct Dashboard {
    report: CoverageReport,
    trend: CoverageTrend,
    group_days: Vec<GroupDay>,
    flags: Vec<RedFlag>,
    security_events: Vec<RecentEvent>,
    sync: SyncStatus,
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
    let (report, trend, group_days, flags, security_events, sync) = state
        .with_reports(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let connection = store.connection();
            let (rules, _) =
                crate::coverage::rules_in_force(connection, &settings.coverage_rules())
                    .map_err(failure)?;
            let (report, trend) =
                month_figures(connection, month, today, &rules).map_err(failure)?;
            // Lessons still to come are not absences: the heatmap stops at today.
            let through = month.last_day().min(today);
            let group_days =
                group_days(connection, month.first_day(), through, &rules).map_err(failure)?;
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
            Ok((report, trend, group_days, flags, security_events, sync))
        })
        .await?;
    state.red_flags.store(month, &flags);
    Ok(Dashboard {
        report,
        trend,
        group_days,
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
            .with_reports(move |store| {
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
                tracing::error!(error = %crate::error::report(&error), "red flags could not be recomputed");
            }
        }
    });
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    lang: Lang,
    month: Month,
    college: ScopeCoverage,
    /// Thousandths, or -1 when there is nothing to divide by (for scripts and tests).
    college_value: i64,
    projection_value: i64,
    trend: CoverageTrend,
    chart: CoverageChart,
    trend_chart: TrendChart,
    heatmap: Heatmap,
    groups: Vec<ScopeCoverage>,
    sync: SyncStatus,
    /// Batches waiting, counting the records not yet sealed as one more.
    queued: u64,
    queued_records: u64,
    /// A day's backlog is not an outage the admin can ignore: shown in red.
    backlog_over_a_day: bool,
    oldest: String,
    /// (listed, changed) of the last beneficiary pull.
    beneficiary_pull: Option<(String, String)>,
    unknown_beneficiaries: Vec<String>,
    flags: Vec<RedFlag>,
    security_events: Vec<EventLine>,
    /// "Closed DATE by WHO", once the month is closed.
    closed: Option<String>,
}

impl DashboardPage {
    fn percent(&self, per_mille: &Option<u64>) -> String {
        per_mille_text(*per_mille)
    }

    fn flag_kind(&self, kind: &'static str) -> &'static str {
        crate::red_flags::kind_text(kind).map_or(kind, |text| self.lang.text(text))
    }
}

/// A security event as the dashboard lists it: local time, what, who.
struct EventLine {
    when: String,
    what: String,
    who: String,
    count: i64,
}

pub async fn dashboard(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PageQuery(query): PageQuery<MonthQuery>,
) -> Result<Response, WebError> {
    let lang = admin.lang;
    let month = month_of(&state, lang, query.month.as_deref())?;
    let Dashboard {
        report,
        trend,
        group_days,
        flags,
        security_events,
        sync,
    } = load(&state, month, Flags::Cached).await.or_failure(lang)?;
    let closed = state
        .with_db(move |store| {
            crate::month_close::closed_month(store.connection(), month)
                .map_err(|source| AgentError::from(store.error(source)))
        })
        .await
        .or_failure(lang)?
        .map(|closed| closed_on(&state, lang, &closed));
    let pull = sync.beneficiary_pull.as_ref();
    let page = DashboardPage {
        lang,
        month,
        college_value: report
            .college
            .coverage_per_mille
            .map_or(-1, |value| value as i64),
        projection_value: trend.projected_month_end.map_or(-1, |value| value as i64),
        chart: CoverageChart::new(&report.groups, report.min_coverage_per_mille),
        trend_chart: TrendChart::new(month, &trend.days, report.min_coverage_per_mille),
        heatmap: Heatmap::new(month, &group_days),
        queued: sync.queued_batches + u64::from(sync.unsealed_records > 0),
        queued_records: sync.queued_records + sync.unsealed_records,
        backlog_over_a_day: sync.oldest_unsent_age_secs.is_some_and(|age| age > 86_400),
        oldest: sync
            .oldest_unsent_age_secs
            .map_or("—".to_owned(), |age| format!("{} min", age / 60)),
        beneficiary_pull: pull
            .map(|report| (report["listed"].to_string(), report["changed"].to_string())),
        unknown_beneficiaries: pull
            .and_then(|report| report["unknown_to_roster"].as_array())
            .map(|unknown| {
                unknown
                    .iter()
                    .filter_map(|iin| iin.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        college: report.college,
        groups: report.groups,
        trend,
        sync,
        flags,
        security_events: security_events
            .into_iter()
            .map(|event| EventLine {
                when: crate::clock::local_date_time_text(&state.settings.timezone, event.at),
                what: crate::security_events::kind_text(&event.kind)
                    .map_or(event.kind.clone(), |text| lang.text(text).to_owned()),
                who: if event.student_name.is_empty() {
                    event.student_iin
                } else {
                    event.student_name
                },
                count: event.count,
            })
            .collect(),
        closed,
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct ExportQuery {
    month: Option<String>,
    /// `csv` (default) or `xlsx`.
    format: Option<String>,
    /// The group, for the `group` table.
    code: Option<String>,
}

/// Every dashboard table as CSV or XLSX, with headers in the reader's language:
/// `coverage`, `red-flags`, `security-events`, and `group` (with `code`).
pub async fn export(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(table_name): Path<String>,
    PageQuery(query): PageQuery<ExportQuery>,
) -> Result<Response, WebError> {
    let lang = admin.lang;
    let month = month_of(&state, lang, query.month.as_deref())?;
    let bad_request = || WebError::refused(lang, StatusCode::BAD_REQUEST, Text::MarkBadInput);
    let yes_no = |yes: bool| lang.text(if yes { Text::AnswerYes } else { Text::AnswerNo });
    let table = match table_name.as_str() {
        "coverage" | "red-flags" | "security-events" => {
            let dashboard = load(&state, month, Flags::Fresh).await.or_failure(lang)?;
            match table_name.as_str() {
                "coverage" => coverage_table(lang, month, &dashboard.report),
                "red-flags" => Table::headed(
                    format!("red flags {month}"),
                    lang,
                    &[Text::ColKind, Text::ColSubject, Text::ColDetail],
                    dashboard
                        .flags
                        .iter()
                        .map(|flag| {
                            vec![
                                crate::red_flags::kind_text(flag.kind)
                                    .map_or(flag.kind, |text| lang.text(text))
                                    .into(),
                                flag.subject.clone().into(),
                                flag.detail.in_lang(lang).into(),
                            ]
                        })
                        .collect(),
                ),
                _ => Table::headed(
                    "security events".into(),
                    lang,
                    &[Text::ColAt, Text::ColKind, Text::ColStudent, Text::ColName],
                    dashboard
                        .security_events
                        .iter()
                        .map(|event| {
                            vec![
                                crate::clock::local_date_time_text(
                                    &state.settings.timezone,
                                    event.at,
                                )
                                .into(),
                                crate::security_events::kind_text(&event.kind)
                                    .map_or(event.kind.as_str(), |text| lang.text(text))
                                    .into(),
                                event.student_iin.clone().into(),
                                event.student_name.clone().into(),
                            ]
                        })
                        .collect(),
                ),
            }
        }
        "group" => {
            let code = query.code.clone().ok_or_else(bad_request)?;
            let students = group_students(&state, month, code.clone())
                .await
                .or_failure(lang)?;
            let share = state.settings.student_qr_share;
            Table::headed(
                format!("{code} {month}"),
                lang,
                &[
                    Text::ColIin,
                    Text::ColName,
                    Text::ColPresent,
                    Text::ColQrMarks,
                    Text::ColQrTracked,
                ],
                students
                    .iter()
                    .map(|student| {
                        vec![
                            student.iin.clone().into(),
                            student.name.clone().into(),
                            student.present.into(),
                            student.qr.into(),
                            yes_no(student.is_qr_tracked(share)).into(),
                        ]
                    })
                    .collect(),
            )
        }
        _ => return Err(bad_request()),
    };
    let (body, content_type, extension) = match query.format.as_deref().unwrap_or("csv") {
        "csv" => (
            table.to_csv().into_bytes(),
            "text/csv; charset=utf-8",
            "csv",
        ),
        "xlsx" => (
            table.to_xlsx().or_failure(lang)?,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        _ => return Err(bad_request()),
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
    Ok(response)
}

fn coverage_table(lang: Lang, month: Month, report: &CoverageReport) -> Table {
    let yes_no = |yes: bool| lang.text(if yes { Text::AnswerYes } else { Text::AnswerNo });
    Table::headed(
        format!("coverage {month}"),
        lang,
        &[
            Text::ColScope,
            Text::ColBeneficiaries,
            Text::ColQrTracked,
            Text::ColCoverage,
            Text::ColPresentMarks,
            Text::ColQrMarks,
            Text::ColHolds,
        ],
        std::iter::once(&report.college)
            .chain(&report.groups)
            .map(|scope| {
                vec![
                    scope.scope.clone().into(),
                    scope.beneficiaries.into(),
                    scope.qr_tracked.into(),
                    scope
                        .coverage_per_mille
                        .map_or(Cell::Text(String::new()), Cell::PerMille),
                    scope.present_marks.into(),
                    scope.qr_marks.into(),
                    yes_no(scope.holds).into(),
                ]
            })
            .collect(),
    )
}

#[derive(Deserialize)]
pub struct CloseForm {
    #[serde(default)]
    csrf: String,
    month: String,
    #[serde(default)]
    reason: String,
}

impl CsrfField for CloseForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The dashboard's close button: the same `month_close::close` as the CLI, its reports in
/// the admin's language. A month that has not ended closes only with a reason.
pub async fn close_month(
    State(state): State<AppState>,
    AdminForm(StaffForm { staff, form }): AdminForm<CloseForm>,
) -> Result<Response, WebError> {
    let lang = staff.lang;
    let Ok(month) = Month::parse(&form.month) else {
        return Err(WebError::refused(
            lang,
            StatusCode::BAD_REQUEST,
            Text::MarkBadInput,
        ));
    };
    let now = state.now();
    let settings = state.settings.clone();
    let data_dir = state.data_dir.clone();
    let reason = Some(form.reason.trim().to_owned()).filter(|reason| !reason.is_empty());
    let closed_by = staff.member.login;
    state
        .with_reports(move |store| {
            let key = kasip_certs::DeviceKey::load(&data_dir.key_path())?;
            let request = crate::month_close::CloseRequest {
                month,
                today: settings.local_date(now),
                now,
                force_reason: reason.as_deref(),
                closed_by: &closed_by,
                lang,
            };
            Ok(crate::month_close::close(
                store,
                &data_dir,
                &settings.month_close_settings(),
                &key,
                &request,
            ))
        })
        .await
        .or_failure(lang)?
        .map_err(|refusal| WebError::refused_because(lang, StatusCode::CONFLICT, refusal))?;
    close_page(&state, lang, &staff.csrf, month, StatusCode::OK).await
}

#[derive(Template)]
#[template(path = "month_close.html")]
struct MonthClosePage {
    lang: Lang,
    csrf: String,
    month: Month,
    summary: String,
    below: String,
    not_ended: bool,
    /// When and by whom, and whether compliant, once closed.
    closed: Option<(String, bool)>,
}

/// The month's close page: before, what the close would state and the button (with a
/// reason when the month has not ended); after, the verdict and every report to download.
async fn close_page(
    state: &AppState,
    lang: Lang,
    csrf: &str,
    month: Month,
    status: StatusCode,
) -> Result<Response, WebError> {
    let settings = state.settings.clone();
    let (closed, report) = state
        .with_reports(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let connection = store.connection();
            let closed = crate::month_close::closed_month(connection, month).map_err(failure)?;
            let (rules, _) =
                crate::coverage::rules_in_force(connection, &settings.coverage_rules())
                    .map_err(failure)?;
            let report = crate::coverage::coverage_for_month(connection, month, None, &rules)
                .map_err(failure)?;
            Ok((closed, report))
        })
        .await
        .or_failure(lang)?;
    let below: Vec<&str> = report
        .groups
        .iter()
        .filter(|group| !group.holds)
        .map(|group| group.scope.as_str())
        .collect();
    Ok(render(
        status,
        &MonthClosePage {
            lang,
            csrf: csrf.to_owned(),
            month,
            summary: lang.fill(
                Text::CloseSummary,
                &[
                    (
                        "coverage",
                        &per_mille_text(report.college.coverage_per_mille),
                    ),
                    ("tracked", &report.college.qr_tracked.to_string()),
                    ("beneficiaries", &report.college.beneficiaries.to_string()),
                    (
                        "minimum",
                        &per_mille_text(Some(u64::from(report.min_coverage_per_mille))),
                    ),
                ],
            ),
            below: if below.is_empty() {
                lang.text(Text::CloseNoneBelow).to_owned()
            } else {
                lang.fill(Text::CloseGroupsBelow, &[("groups", &below.join(", "))])
            },
            not_ended: state.settings.local_date(state.now()) <= month.last_day(),
            closed: closed.map(|closed| (closed_on(state, lang, &closed), closed.compliant)),
        },
    ))
}

/// "Closed DATE by WHO", at the college's local time.
fn closed_on(state: &AppState, lang: Lang, closed: &crate::month_close::ClosedMonth) -> String {
    lang.fill(
        Text::CloseClosedOn,
        &[
            (
                "when",
                &crate::clock::local_date_time_text(&state.settings.timezone, closed.closed_at),
            ),
            ("who", &closed.closed_by),
        ],
    )
}

/// `GET /admin/month-close?month=YYYY-MM`: the confirmation before a close, or a closed
/// month's verdict and reports.
pub async fn month_close_page(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PageQuery(query): PageQuery<MonthQuery>,
) -> Result<Response, WebError> {
    let lang = admin.lang;
    let month = month_of(&state, lang, query.month.as_deref())?;
    close_page(&state, lang, &admin.csrf, month, StatusCode::OK).await
}

/// `GET /admin/month-close/{month}/{kind}`: a closed month's report (`html`, `csv`,
/// `xlsx`) or signed statement (`jws`), as the close wrote it.
pub async fn month_close_file(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((month, kind)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let lang = admin.lang;
    let not_found = || WebError::refused(lang, StatusCode::NOT_FOUND, Text::ErrorNotFound);
    let month = Month::parse(&month).map_err(|_| not_found())?;
    // The name is built from the parsed month and a known kind: nothing from the
    // address reaches the file system.
    let (folder, name) = crate::month_close::close_file(month, &kind).ok_or_else(not_found)?;
    let path = state.data_dir.root().join(folder).join(&name);
    let bytes = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    let content_type = match kind.as_str() {
        "html" => "text/html; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/jose",
    };
    let disposition = if kind == "html" {
        "inline".to_owned()
    } else {
        format!("attachment; filename=\"{name}\"")
    };
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

/// A group's beneficiaries for the month, for the drill-down page and its export.
async fn group_students(
    state: &AppState,
    month: Month,
    code: String,
) -> Result<Vec<StudentMonth>, AgentError> {
    let settings = state.settings.clone();
    state
        .with_reports(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let (rules, _) =
                crate::coverage::rules_in_force(store.connection(), &settings.coverage_rules())
                    .map_err(failure)?;
            crate::coverage::student_months(store.connection(), month, Some(&code), &rules)
                .map_err(failure)
        })
        .await
}

#[derive(Deserialize)]
pub struct GroupQuery {
    month: Option<String>,
    code: String,
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    lang: Lang,
    month: Month,
    code: String,
    students: Vec<StudentMonth>,
    student_qr_share: PerMille,
}

/// Drill-down: each beneficiary of a group with their present and QR marks.
pub async fn group_page(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PageQuery(query): PageQuery<GroupQuery>,
) -> Result<Response, WebError> {
    let lang = admin.lang;
    let month = month_of(&state, lang, query.month.as_deref())?;
    let students = group_students(&state, month, query.code.clone())
        .await
        .or_failure(lang)?;
    Ok(render(
        StatusCode::OK,
        &GroupPage {
            lang,
            month,
            code: query.code,
            students,
            student_qr_share: state.settings.student_qr_share,
        },
    ))
}

#[derive(Deserialize)]
pub struct StudentQuery {
    month: Option<String>,
    iin: String,
}

#[derive(Template)]
#[template(path = "student.html")]
struct StudentPage {
    lang: Lang,
    month: Month,
    iin: String,
    marks: Vec<crate::attendance::StudentMark>,
    /// (local time, entrance) of the student's campus entries this month, oldest first.
    presence: Vec<(String, String)>,
}

/// Drill-down: one student's marks in the month, latest last, and their campus entries.
#[derive(Deserialize)]
pub struct SearchQuery {
    month: Option<String>,
    #[serde(default)]
    q: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    lang: Lang,
    month: Month,
    query: String,
    /// (IIN, name, group)
    found: Vec<(String, String, String)>,
}

/// `GET /admin/search?q=…`: students by name or IIN, each a link to their month.
pub async fn search(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PageQuery(query): PageQuery<SearchQuery>,
) -> Result<Response, WebError> {
    let lang = admin.lang;
    let month = month_of(&state, lang, query.month.as_deref())?;
    let text: String = query.q.chars().take(100).collect();
    let wanted = text.clone();
    let found = if wanted.trim().is_empty() {
        Vec::new()
    } else {
        state
            .with_db(move |store| {
                crate::roster::search_students(store.connection(), &wanted, 50)
                    .map_err(|source| AgentError::from(store.error(source)))
            })
            .await
            .or_failure(lang)?
    };
    Ok(render(
        StatusCode::OK,
        &SearchPage {
            lang,
            month,
            query: text,
            found,
        },
    ))
}

pub async fn student_page(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PageQuery(query): PageQuery<StudentQuery>,
) -> Result<Response, WebError> {
    let lang = admin.lang;
    let month = month_of(&state, lang, query.month.as_deref())?;
    let Ok(iin) = kasip_core::Iin::parse(query.iin.trim()) else {
        return Err(WebError::refused(
            lang,
            StatusCode::BAD_REQUEST,
            Text::BindBadIin,
        ));
    };
    let offset = state.settings.timezone.offset_seconds();
    let (marks, presence) = state
        .with_reports(move |store| {
            let failure = |source| AgentError::from(store.error(source));
            let presence =
                crate::kiosks::campus_presence(store.connection(), &iin.as_string(), 1000)
                    .map_err(failure)?;
            let marks = crate::attendance::student_month_marks(store.connection(), &iin, month)
                .map_err(failure)?;
            Ok((marks, presence))
        })
        .await
        .or_failure(lang)?;
    let presence = presence
        .into_iter()
        .rev()
        .filter_map(|(at, site)| {
            let local = at + offset;
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
    Ok(render(
        StatusCode::OK,
        &StudentPage {
            lang,
            month,
            iin: query.iin,
            marks,
            presence,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::page::hostile;
    use super::*;

    fn scope() -> ScopeCoverage {
        ScopeCoverage {
            scope: hostile::TEXT.into(),
            beneficiaries: 2,
            qr_tracked: 1,
            coverage_per_mille: Some(500),
            present_marks: 3,
            qr_marks: 2,
            qr_share_per_mille: Some(666),
            holds: true,
            not_tracked: Vec::new(),
        }
    }

    #[test]
    fn every_security_event_and_red_flag_kind_has_words() {
        use crate::marks::{Rejection, ScanRefusal};
        let phone = [
            Rejection::MalformedToken,
            Rejection::ForgedToken,
            Rejection::StaleToken,
            Rejection::LessonNotOpen,
            Rejection::NotInGroup,
            Rejection::DeviceNotBound,
            Rejection::DeviceUsedForAnotherStudent,
            Rejection::StudentInactive,
            Rejection::DeviceUnverified,
            Rejection::PasskeyInvalid,
        ]
        .map(|rejection| rejection.kind());
        let kiosk = [
            ScanRefusal::Malformed,
            ScanRefusal::UnknownStudent,
            ScanRefusal::Forged,
            ScanRefusal::Stale,
            ScanRefusal::FromTheFuture,
            ScanRefusal::Replayed,
            ScanRefusal::StudentInactive,
            ScanRefusal::BufferedTooLong,
        ]
        .map(|refusal| format!("kiosk_{}", refusal.code()));
        for kind in phone
            .iter()
            .map(|kind| kind.to_string())
            .chain(kiosk)
            .chain(["login_failed", "binding_code_wrong", "typed_code_unknown"].map(String::from))
        {
            assert!(crate::security_events::kind_text(&kind).is_some(), "{kind}");
        }
        for kind in [
            "beneficiary_without_attendance",
            "binding_burst",
            "check_in_burst",
            "empty_lesson",
            "hand_marked_student",
            "idle_group",
            "in_class_not_on_campus",
            "manual_share_outlier",
            "shared_device",
            "two_rooms_at_once",
            "unlicensed_site",
        ] {
            assert!(crate::red_flags::kind_text(kind).is_some(), "{kind}");
        }
    }

    #[test]
    fn admin_pages_escape_hostile_names() {
        let lang = Lang::fallback();
        let dashboard = DashboardPage {
            lang,
            month: Month::parse("2026-11").expect("month"),
            college: scope(),
            college_value: 500,
            projection_value: -1,
            trend: CoverageTrend {
                weeks: vec![(hostile::TEXT.into(), Some(500))],
                days: vec![("2026-11-02".into(), Some(500))],
                projected_month_end: None,
            },
            chart: CoverageChart::new(&[scope()], 500),
            trend_chart: TrendChart::new(
                Month::parse("2026-11").expect("month"),
                &[("2026-11-02".into(), Some(500))],
                500,
            ),
            heatmap: Heatmap::new(
                Month::parse("2026-11").expect("month"),
                &[GroupDay {
                    group: hostile::TEXT.into(),
                    date: kasip_core::Date::parse("2026-11-02").expect("date"),
                    expected: 2,
                    attended: 1,
                    qr: 1,
                }],
            ),
            groups: vec![scope()],
            sync: SyncStatus {
                registry: Some(hostile::TEXT.into()),
                queued_batches: 0,
                queued_records: 0,
                unsealed_records: 0,
                oldest_unsent_age_secs: None,
                acknowledged_batches: 0,
                acknowledged_records: 0,
                rejected_records: 0,
                last_success_at: None,
                last_error: Some(hostile::TEXT.into()),
                last_error_at: None,
                alert: None,
                last_beneficiary_pull_at: None,
                beneficiary_pull: None,
            },
            queued: 0,
            queued_records: 0,
            backlog_over_a_day: false,
            oldest: "—".into(),
            beneficiary_pull: Some((hostile::TEXT.into(), "0".into())),
            unknown_beneficiaries: vec![hostile::TEXT.into()],
            flags: Vec::new(),
            security_events: vec![EventLine {
                when: hostile::TEXT.into(),
                what: hostile::TEXT.into(),
                who: hostile::TEXT.into(),
                count: 2,
            }],
            closed: Some(hostile::TEXT.into()),
        };
        hostile::assert_escaped(&dashboard.render().expect("dashboard"));
        let close = MonthClosePage {
            lang,
            csrf: hostile::TEXT.into(),
            month: Month::parse("2026-11").expect("month"),
            summary: hostile::TEXT.into(),
            below: hostile::TEXT.into(),
            not_ended: true,
            closed: None,
        };
        hostile::assert_escaped(&close.render().expect("close page"));
        let search = SearchPage {
            lang,
            month: Month::parse("2026-11").expect("month"),
            query: hostile::TEXT.into(),
            found: vec![(
                hostile::TEXT.into(),
                hostile::TEXT.into(),
                hostile::TEXT.into(),
            )],
        };
        hostile::assert_escaped(&search.render().expect("search"));
        let student = StudentMonth {
            iin: hostile::TEXT.into(),
            name: hostile::TEXT.into(),
            group: hostile::TEXT.into(),
            present: 1,
            qr: 1,
        };
        let group = GroupPage {
            lang,
            month: Month::parse("2026-11").expect("month"),
            code: hostile::TEXT.into(),
            students: vec![student],
            student_qr_share: PerMille::from_fraction(0.5).expect("share"),
        };
        hostile::assert_escaped(&group.render().expect("group"));
        let student = StudentPage {
            lang,
            month: Month::parse("2026-11").expect("month"),
            iin: hostile::TEXT.into(),
            marks: vec![crate::attendance::StudentMark {
                date: "2026-11-23".into(),
                start: "09:00".into(),
                discipline: hostile::TEXT.into(),
                status: kasip_core::MarkStatus::Present,
                method: kasip_core::MarkMethod::Manual,
                marked_by: hostile::TEXT.into(),
            }],
            presence: vec![("2026-11-23 08:50".into(), hostile::TEXT.into())],
        };
        hostile::assert_escaped(&student.render().expect("student"));
    }
}
