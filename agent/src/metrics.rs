//! `GET /metrics` in Prometheus' text format, on its own listener (`metrics.listen`,
//! localhost by default). Counts come from the database where it already keeps them
//! (marks and security events are append-only, so they are true counters across
//! restarts); request latencies are histograms kept in memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rusqlite::Connection;

use crate::config::{DataDir, Settings};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative here; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Request latencies per route pattern (`/c/{token}`, not each token).
#[derive(Default)]
pub struct RequestLatencies {
    routes: Mutex<BTreeMap<String, Histogram>>,
}

impl RequestLatencies {
    pub fn observe(&self, route: &str, seconds: f64) {
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Routes are a few dozen patterns: allocate a key only the first time one is seen.
        if !routes.contains_key(route) {
            routes.insert(route.to_owned(), Histogram::default());
        }
        let Some(histogram) = routes.get_mut(route) else {
            return;
        };
        if let Some(index) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            histogram.buckets[index] += 1;
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    fn render(&self, out: &mut String) {
        let routes = self
            .routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.push_str(
            "# HELP kasip_http_request_duration_seconds Time to answer a request, by route.\n",
        );
        out.push_str("# TYPE kasip_http_request_duration_seconds histogram\n");
        for (route, histogram) in routes.iter() {
            let route = label(route);
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "kasip_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "kasip_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "kasip_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "kasip_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                histogram.count
            );
        }
    }
}

/// Times every request of the main router.
pub async fn time_requests(
    State(latencies): State<std::sync::Arc<RequestLatencies>>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    latencies.observe(route, started.elapsed().as_secs_f64());
    response
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// A metric with one sample and no labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    metric(out, name, kind, help, &[(String::new(), value)]);
}

/// (value, count) pairs as samples labelled `label_name`.
fn grouped(counts: Vec<(String, i64)>, label_name: &str) -> Vec<(String, f64)> {
    counts
        .into_iter()
        .map(|(value, count)| {
            (
                format!("{{{label_name}=\"{}\"}}", label(&value)),
                count as f64,
            )
        })
        .collect()
}

/// Everything the database knows, rendered; then the request latencies.
pub fn render(
    connection: &Connection,
    settings: &Settings,
    data_dir: &DataDir,
    latencies: &RequestLatencies,
    now: i64,
) -> rusqlite::Result<String> {
    let mut out = String::new();
    metric(
        &mut out,
        "kasip_checkins_total",
        "counter",
        "Attendance marks recorded, by method (qr_phone, qr_typed, qr_kiosk, manual).",
        &grouped(crate::attendance::marks_by_method(connection)?, "method"),
    );
    metric(
        &mut out,
        "kasip_rejections_total",
        "counter",
        "Refused check-ins, scans and sign-ins, by reason (security events).",
        &grouped(
            crate::security_events::counts_by_kind(connection)?,
            "reason",
        ),
    );
    let open = crate::lessons::open_on(connection, settings.local_date(now))?;
    single(
        &mut out,
        "kasip_open_lessons",
        "gauge",
        "Lessons opened today and not closed.",
        open as f64,
    );
    let sync = crate::outbox::status(connection, now)?;
    single(
        &mut out,
        "kasip_outbox_batches",
        "gauge",
        "Sealed batches not yet acknowledged by the registry.",
        sync.queued_batches as f64,
    );
    single(
        &mut out,
        "kasip_outbox_unsealed_records",
        "gauge",
        "Events not yet sealed into a batch.",
        sync.unsealed_records as f64,
    );
    single(
        &mut out,
        "kasip_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest batch or event not yet acknowledged (0 when none).",
        sync.oldest_unsent_age_secs.unwrap_or(0) as f64,
    );
    single(
        &mut out,
        "kasip_sync_alert",
        "gauge",
        "1 when the upload queue is stopped by an alert (see `kasip-agent sync status`).",
        f64::from(u8::from(sync.alert.is_some())),
    );
    single(
        &mut out,
        "kasip_sync_errors_total",
        "counter",
        "Failed upload attempts since the agent started.",
        crate::outbox::SYNC_ERRORS.load(Ordering::Relaxed) as f64,
    );
    let month = settings.local_date(now).calendar_month();
    let (rules, _) = crate::coverage::rules_in_force(connection, &settings.coverage_rules())?;
    let (report, _) =
        crate::coverage::month_figures(connection, month, settings.local_date(now), &rules)?;
    let coverage: Vec<(String, f64)> = std::iter::once(&report.college)
        .chain(report.groups.iter())
        .filter_map(|scope| {
            scope.coverage_per_mille.map(|per_mille| {
                (
                    format!("{{scope=\"{}\"}}", label(&scope.scope)),
                    per_mille as f64 / 1000.0,
                )
            })
        })
        .collect();
    metric(
        &mut out,
        "kasip_coverage_ratio",
        "gauge",
        "This month's QR coverage of beneficiaries (design 5.5), college and per group.",
        &coverage,
    );
    let database_bytes: u64 = ["agent.db", "agent.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(data_dir.root().join(name)).ok())
        .map(|metadata| metadata.len())
        .sum();
    single(
        &mut out,
        "kasip_database_bytes",
        "gauge",
        "Size of the database and its write-ahead log.",
        database_bytes as f64,
    );
    let sqlite = crate::allocator::sqlite_memory();
    single(
        &mut out,
        "kasip_sqlite_page_slots_used",
        "gauge",
        &format!(
            "Slots of SQLite's page-cache block (of {}) holding a page; always 0 if SQLite \
             refused the block.",
            crate::allocator::SQLITE_PAGE_SLOTS
        ),
        sqlite.page_slots_used as f64,
    );
    single(
        &mut out,
        "kasip_sqlite_page_overflow_bytes",
        "gauge",
        "Page-cache bytes SQLite took from malloc because the reserved block was full.",
        sqlite.page_overflow_bytes as f64,
    );
    single(
        &mut out,
        "kasip_sqlite_malloc_bytes",
        "gauge",
        "Memory SQLite holds from malloc (statements, schema, page overflow).",
        sqlite.malloc_bytes as f64,
    );
    let acme = crate::certificate::AcmeFiles::new(data_dir);
    single(
        &mut out,
        "kasip_certificate_expiry_timestamp_seconds",
        "gauge",
        "When the certificate for the agent's name expires (Unix time; 0 when it has none).",
        acme.current()
            .map_or(0.0, |(_, (_, not_after))| not_after as f64),
    );
    single(
        &mut out,
        "kasip_certificate_renewal_failures",
        "gauge",
        "Failed attempts in a row to publish the agent's name or renew its certificate (alert on > 0).",
        f64::from(acme.load_state().failures),
    );
    latencies.render(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_a_count_and_sum() {
        let latencies = RequestLatencies::default();
        latencies.observe("/c/{token}", 0.003);
        latencies.observe("/c/{token}", 0.2);
        latencies.observe("/c/{token}", 30.0);
        let mut out = String::new();
        latencies.render(&mut out);
        assert!(out.contains(
            "kasip_http_request_duration_seconds_bucket{route=\"/c/{token}\",le=\"0.005\"} 1\n"
        ));
        assert!(out.contains(
            "kasip_http_request_duration_seconds_bucket{route=\"/c/{token}\",le=\"0.25\"} 2\n"
        ));
        assert!(out.contains(
            "kasip_http_request_duration_seconds_bucket{route=\"/c/{token}\",le=\"10\"} 2\n"
        ));
        assert!(out.contains(
            "kasip_http_request_duration_seconds_bucket{route=\"/c/{token}\",le=\"+Inf\"} 3\n"
        ));
        assert!(out.contains("kasip_http_request_duration_seconds_count{route=\"/c/{token}\"} 3\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
