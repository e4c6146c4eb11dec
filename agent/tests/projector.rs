//! The projector's feed (`GET /display/{id}/events`, server-sent events) as a teacher's
//! browser meets it: a notice before the lesson opens, the code once it opens, the count
//! as phones check in, and the end of the feed when the teacher signs out.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::{check_in, College, TEACHER_A, TEACHER_B};
use serde_json::Value;

/// One server-sent event: its name and data.
#[derive(Debug)]
struct FeedEvent {
    name: String,
    data: String,
}

struct Feed {
    lines: BufReader<reqwest::blocking::Response>,
}

impl Feed {
    fn open(college: &College, teacher: &reqwest::blocking::Client, lesson: i64) -> Feed {
        let response = teacher
            .get(college.url(&format!("/display/{lesson}/events")))
            .send()
            .expect("the feed");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        Feed {
            lines: BufReader::new(response),
        }
    }

    /// The next event (keep-alive comments skipped); None when the feed ended.
    fn next(&mut self) -> Option<FeedEvent> {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).expect("read the feed") == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if name.is_empty() && data.is_empty() {
                    continue;
                }
                return Some(FeedEvent { name, data });
            }
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
    }

    fn next_now(&mut self) -> Value {
        let event = self.next().expect("an event");
        assert_eq!(event.name, "now", "{event:?}");
        serde_json::from_str(&event.data).expect("json")
    }
}

#[test]
fn the_feed_pushes_the_code_and_the_count_and_ends_when_the_teacher_signs_out() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    let started = Instant::now();
    let mut feed = Feed::open(&college, &teacher, college.lesson_a);

    // Not open yet: a notice in the teacher's language, no code.
    let first = feed.next_now();
    assert_eq!(first["state"], "scheduled", "{first}");
    assert!(!first["notice"].as_str().expect("notice").is_empty());
    assert_eq!(first["svg"], "");

    // Opened: the code arrives at once (the opening wakes the feed).
    college.open_lesson(&teacher, college.lesson_a);
    let open = feed.next_now();
    assert_eq!(open["state"], "open", "{open}");
    assert!(open["svg"].as_str().expect("svg").starts_with("<?xml"));
    let url = open["url"].as_str().expect("url").to_owned();
    assert!(url.contains(&format!("/c/{}.", college.lesson_a)), "{url}");
    assert_eq!(open["checked_in"], 0);

    // A phone checks in with the pushed code: the count comes, without the code again
    // (the clock stands still: same step).
    let (status, body) = check_in(&college.bound_phone(&college.group_a[0]), &url);
    assert_eq!(status, 200, "{body}");
    let counted = feed.next_now();
    assert_eq!(counted["checked_in"], 1, "{counted}");
    assert_eq!(counted["step"], open["step"]);
    assert_eq!(counted["svg"], "");
    // Everything above came from pushes, not from waiting out a period or a re-check.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // Signed out elsewhere (another tab): the feed says so and ends.
    let csrf = college.csrf(&teacher);
    let response = teacher
        .post(college.url("/logout"))
        .form(&[("csrf", csrf)])
        .send()
        .expect("logout");
    assert!(response.status().is_redirection() || response.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let event = feed.next().expect("an event before the end");
        if event.name == "signed-out" {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "the feed did not notice the sign-out"
        );
    };
    assert!(!ended.data.is_empty());
    assert!(feed.next().is_none(), "the feed ends after signed-out");
}

#[test]
fn a_feed_is_refused_to_strangers_and_to_another_teachers_lesson() {
    let college = College::new(3);
    let stranger = kasip_tests::browser(&college.dir.path());
    let response = stranger
        .get(college.url(&format!("/display/{}/events", college.lesson_a)))
        .send()
        .expect("feed");
    assert_ne!(response.status(), 200);
    assert_ne!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("text/event-stream")
    );
    let other_teacher = college.teacher(TEACHER_B);
    let response = other_teacher
        .get(college.url(&format!("/display/{}/events", college.lesson_a)))
        .send()
        .expect("feed");
    assert_eq!(response.status(), 403);
}
