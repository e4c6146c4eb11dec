//! `/metrics` scraped as Prometheus would: on its own localhost listener, in the text
//! format, with check-ins by method, rejections by reason, open lessons, outbox, coverage
//! per group, database size and request latency histograms.

mod common;

use common::{check_in, College, TEACHER_A};

fn value_of(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .parse()
        .expect("a number")
}

#[test]
fn metrics_are_scraped_in_prometheus_text_format() {
    let port = kasip_tests::free_port();
    let college = College::with_config(3, |config| {
        config.replace(
            "listen = \"127.0.0.1:9464\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
    });
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    for iin in &college.group_a[..2] {
        assert_eq!(check_in(&college.bound_phone(iin), &url).0, 200);
    }
    // A forged tag: its first character changed (the last one's low bits are base64
    // padding, so changing it may change nothing).
    let tag_start = url.rfind('.').expect("a tag") + 1;
    let first = &url[tag_start..=tag_start];
    let forged = format!(
        "{}{}{}",
        &url[..tag_start],
        if first == "A" { "B" } else { "A" },
        &url[tag_start + 1..]
    );
    let phone = college.bound_phone(&college.group_a[2]);
    assert_eq!(check_in(&phone, &forged).0, 403);

    let unacknowledged = "SELECT COUNT(*) FROM outbox_batches WHERE acked_at IS NULL";
    let batches_before = college.count(unacknowledged) as f64;
    let scraper = kasip_tests::http_client();
    let response = scraper
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/plain; version=0.0.4")));
    let metrics = response.text().expect("body");
    assert_eq!(
        value_of(&metrics, "kasip_checkins_total{method=\"qr_phone\"}"),
        2.0
    );
    assert_eq!(
        value_of(&metrics, "kasip_rejections_total{reason=\"forged_token\"}"),
        1.0
    );
    assert_eq!(value_of(&metrics, "kasip_open_lessons"), 1.0);
    // Not enrolled: batches are sealed and wait (the uploader seals every second).
    let batches = value_of(&metrics, "kasip_outbox_batches");
    assert!(
        (batches_before..=college.count(unacknowledged) as f64).contains(&batches),
        "{batches}"
    );
    assert_eq!(value_of(&metrics, "kasip_sync_alert"), 0.0);
    assert!(value_of(&metrics, "kasip_database_bytes") > 0.0);
    // The pages SQLite just read for these figures sit in the block the agent reserved
    // (`allocator::configure_sqlite_memory`), and a database this small fits in it.
    assert!(value_of(&metrics, "kasip_sqlite_page_slots_used") > 0.0);
    assert_eq!(value_of(&metrics, "kasip_sqlite_page_overflow_bytes"), 0.0);
    assert!(value_of(&metrics, "kasip_sqlite_malloc_bytes") > 0.0);
    // ПО-21: 2 of 3 beneficiaries QR-tracked.
    assert_eq!(
        value_of(&metrics, "kasip_coverage_ratio{scope=\"ПО-21\"}"),
        0.666
    );
    assert!(
        value_of(
            &metrics,
            "kasip_http_request_duration_seconds_count{route=\"/c/{token}\"}"
        ) >= 3.0
    );
    assert!(
        value_of(
            &metrics,
            "kasip_http_request_duration_seconds_bucket{route=\"/c/{token}\",le=\"+Inf\"}"
        ) >= 3.0
    );
    // Every sample line is `name{labels} number`; every metric has HELP and TYPE.
    for line in metrics.lines().filter(|line| !line.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(series.starts_with("kasip_"), "{line}");
    }
    for name in [
        "kasip_checkins_total",
        "kasip_open_lessons",
        "kasip_http_request_duration_seconds",
    ] {
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name}");
    }
    // Not on the phones' HTTPS port.
    let response = kasip_tests::browser(&college.dir.path())
        .get(college.url("/metrics"))
        .send()
        .expect("main port");
    assert_eq!(response.status(), 404);
}
