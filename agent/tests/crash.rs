//! Crash test: phones check in over HTTPS while the agent is killed with SIGKILL at a
//! random moment, cycle after cycle, with the outbox syncing to the reference registry
//! all along. After each restart: every check-in that got a 200 is stored exactly once,
//! the phones that got no answer retry and are stored once, `kasip-agent verify`
//! passes; at the end every mark reached the registry once.
//!
//! `KASIP_CRASH_CYCLES` sets the number of cycles (5 by default, as CI runs it; the long
//! run in TESTING.md is 20); `KASIP_CRASH_SEED` replays a run's kill moments.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::registry::{
    agent_run, assert_one_for_one, drained, enrol, quick_college, wait_for, Registry,
};
use common::{College, TEACHER_A};
use kasip_tests::text;

const STUDENTS: usize = 160;
const PHONE_THREADS: usize = 16;
/// Each phone thread's pause between check-ins: the group takes about 250 ms.
const PACE: Duration = Duration::from_millis(15);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// What a phone saw for its check-in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Stored,
    Refused(u16),
    /// The connection failed or closed before an answer: the agent died under it.
    None,
}

/// xorshift64*: the kill moments, reproducible from the printed seed.
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % below
    }
}

fn marks_per_student(college: &College, lesson: i64) -> HashMap<String, i64> {
    let db = college.db();
    let mut statement = db
        .prepare(
            "SELECT student_iin, COUNT(*) FROM attendance_events WHERE lesson_id = ?1 GROUP BY student_iin",
        )
        .expect("prepare");
    statement
        .query_map([lesson], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
#[allow(clippy::disallowed_methods)] // a random seed, not a time the agent reads
fn sigkill_under_check_in_load_loses_no_answered_mark_and_counts_none_twice() {
    let cycles = env_number("KASIP_CRASH_CYCLES", 5) as usize;
    let seed = env_number(
        "KASIP_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos() as u64
            | 1,
    );
    eprintln!("crash test: {cycles} cycles, KASIP_CRASH_SEED={seed}");
    let mut moments = Moments(seed);
    let mut college = quick_college(STUDENTS);
    let registry = Registry::new(&college, &[]);
    enrol(&college, &registry);
    let lessons = college.more_lessons(cycles);
    let phones: Arc<Vec<(String, common::Phone)>> = Arc::new(
        college
            .group_a
            .iter()
            .map(|iin| (iin.clone(), college.bound_phone(iin)))
            .collect(),
    );
    let (mut answered_total, mut unanswered_total, mut killed_mid_load) = (0, 0, 0);
    let mut cut_off_stored_total = 0;
    for (cycle, (lesson, at)) in lessons.iter().copied().enumerate() {
        college.set_clock(at);
        // Sessions last 12 hours of the (simulated) clock: sign in for each lesson.
        let teacher = college.teacher(TEACHER_A);
        college.open_lesson(&teacher, lesson);
        // The projector's URL (the port changes with every restart).
        let url = college.shown_url(&teacher, lesson);
        let answers = Arc::new(Mutex::new(HashMap::<String, Answer>::new()));
        let per_thread = STUDENTS.div_ceil(PHONE_THREADS);
        let load: Vec<_> = (0..PHONE_THREADS)
            .map(|thread| {
                let (phones, answers, url) =
                    (Arc::clone(&phones), Arc::clone(&answers), url.clone());
                std::thread::spawn(move || {
                    for (iin, phone) in phones.iter().skip(thread * per_thread).take(per_thread) {
                        let token = url.rsplit('/').next().unwrap_or_default();
                        let signed = [("device_signature", phone.key.sign(token))];
                        let answer = match phone.post(&url).form(&signed).send() {
                            Ok(response) if response.status() == 200 => {
                                // An answer whose body was cut off is no answer.
                                match response.text() {
                                    Ok(body) if body.contains("id=confirmation") => Answer::Stored,
                                    Ok(_) => Answer::Refused(200),
                                    Err(_) => Answer::None,
                                }
                            }
                            Ok(response) => Answer::Refused(response.status().as_u16()),
                            Err(_) => Answer::None,
                        };
                        answers.lock().expect("answers").insert(iin.clone(), answer);
                        if answer == Answer::None {
                            break;
                        }
                        std::thread::sleep(PACE);
                    }
                })
            })
            .collect();
        let kill_after = Duration::from_millis(20 + moments.next_millis(200));
        let started = Instant::now();
        std::thread::sleep(kill_after);
        college.kill_and_restart();
        for thread in load {
            thread.join().expect("phone thread");
        }
        let answers = answers.lock().expect("answers").clone();
        let stored_before = answers
            .values()
            .filter(|answer| **answer == Answer::Stored)
            .count();
        let refused: Vec<_> = answers
            .iter()
            .filter(|(_, answer)| matches!(answer, Answer::Refused(_)))
            .collect();
        assert!(refused.is_empty(), "cycle {cycle}: refused {refused:?}");
        if stored_before < STUDENTS {
            killed_mid_load += 1;
        }

        // Every 200 survived the kill, once.
        let marks = marks_per_student(&college, lesson);
        for (iin, answer) in &answers {
            if *answer == Answer::Stored {
                assert_eq!(
                    marks.get(iin),
                    Some(&1),
                    "cycle {cycle}: {iin} got 200 before the kill at {kill_after:?}"
                );
            }
        }
        assert!(
            marks.values().all(|count| *count == 1),
            "cycle {cycle}: {marks:?}"
        );
        // A check-in cut off after its commit is stored though its phone never heard so.
        let cut_off_but_stored = answers
            .iter()
            .filter(|(iin, answer)| **answer == Answer::None && marks.contains_key(*iin))
            .count();

        // Everyone who got no answer (or never got to try) checks in again: once each.
        let teacher = college.teacher(TEACHER_A);
        // The projector's URL (the port changes with every restart).
        let url = college.shown_url(&teacher, lesson);
        for (iin, phone) in phones.iter() {
            if answers.get(iin) != Some(&Answer::Stored) {
                let (status, body) = common::check_in(phone, &url);
                assert_eq!(status, 200, "cycle {cycle}: {iin} retries: {body}");
            }
        }
        let marks = marks_per_student(&college, lesson);
        assert_eq!(marks.len(), STUDENTS, "cycle {cycle}: everyone is marked");
        assert!(
            marks.values().all(|count| *count == 1),
            "cycle {cycle}: a retry counted twice: {marks:?}"
        );
        let verify = agent_run(&college, &["verify"]);
        assert!(
            verify.status.success(),
            "cycle {cycle}: {:?}",
            text(&verify)
        );
        let unanswered = answers
            .values()
            .filter(|answer| **answer == Answer::None)
            .count();
        answered_total += stored_before;
        unanswered_total += unanswered;
        cut_off_stored_total += cut_off_but_stored;
        eprintln!(
            "cycle {cycle}: killed {:?} into the load; {stored_before} answered 200, \
             {unanswered} cut off ({cut_off_but_stored} of them stored), {} had not tried",
            started.elapsed().min(kill_after),
            STUDENTS - answers.len(),
        );
    }
    wait_for(
        &college,
        "the outbox to drain",
        Duration::from_secs(180),
        drained,
    );
    assert_one_for_one(&college, &registry);
    assert_eq!(college.marks() as usize, cycles * STUDENTS);
    eprintln!(
        "crash test: {cycles} kills ({killed_mid_load} in the middle of the load), \
         {answered_total} check-ins answered before a kill, {unanswered_total} cut off \
         ({cut_off_stored_total} of them stored before the kill); \
         {} marks, each once at the registry",
        college.marks()
    );
}
