//! Backups of a live agent: taken under check-in load, checked, restored only while the
//! service is stopped, and identical to the database they came from.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{check_in, College, AGENT, TEACHER_A};
use kasip_tests::{run_with, text};

fn agent(college: &College, args: &[&str]) -> (bool, String, String) {
    let clock = college.clock_file.display().to_string();
    let output = run_with(
        AGENT,
        &college.dir.path(),
        args,
        &[("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())],
        None,
    );
    let (stdout, stderr) = text(&output);
    (output.status.success(), stdout, stderr)
}

/// "attendance chain intact: N events, head H" → (N, H).
fn chain(stdout: &str) -> (String, String) {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("attendance chain intact"))
        .unwrap_or_else(|| panic!("no chain line in {stdout}"));
    let events = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("");
    let head = line.rsplit("head ").next().unwrap_or("");
    (events.to_owned(), head.to_owned())
}

#[test]
fn a_backup_under_check_in_load_is_consistent_and_restores_identically() {
    let mut college = College::new(60);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let phones: Vec<_> = college
        .group_a
        .iter()
        .map(|iin| college.bound_phone(iin))
        .collect();

    // Three phones' worth of load at a time while backups are taken.
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for chunk in phones.chunks(20) {
        let chunk = chunk.to_vec();
        let url = url.clone();
        let running = Arc::clone(&running);
        load.push(std::thread::spawn(move || {
            let mut accepted = 0;
            // Every phone once, then repeats (idempotent) until the backups are done.
            for (index, phone) in chunk.iter().cycle().enumerate() {
                if index >= chunk.len() && !running.load(Ordering::Relaxed) {
                    break;
                }
                if check_in(phone, &url).0 == 200 {
                    accepted += 1;
                }
            }
            accepted
        }));
    }
    let during = college.dir.file("during-load.db");
    let (ok, stdout, stderr) = agent(&college, &["backup", during.to_str().expect("path")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("integrity ok"), "{stdout}");
    // A backup never overwrites.
    let (ok, _, stderr) = agent(&college, &["backup", during.to_str().expect("path")]);
    assert!(!ok);
    assert!(stderr.contains("already exists"), "{stderr}");
    running.store(false, Ordering::Relaxed);
    for thread in load {
        assert!(thread.join().expect("load thread") > 0);
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&during)
        .expect("backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "a backup holds personal data");

    // After the load: a backup equals the live database.
    let (ok, live, stderr) = agent(&college, &["verify"]);
    assert!(ok, "{stderr}");
    let after = college.dir.file("after-load.db");
    let (ok, stdout, stderr) = agent(&college, &["backup", after.to_str().expect("path")]);
    assert!(ok, "{stdout}{stderr}");
    let (events, head) = chain(&live);
    assert_eq!(events, "60", "every student checked in once: {live}");
    assert!(
        stdout.contains(&format!("{events} attendance events, chain head {head}")),
        "{stdout}"
    );

    // Restore refuses while the agent runs, and changes nothing.
    let (ok, _, stderr) = agent(&college, &["restore", during.to_str().expect("path")]);
    assert!(!ok);
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert_eq!(college.marks(), 60);

    // Stopped: the mid-load backup restores, its chain verifies, and the replaced
    // database is kept.
    college.server.kill();
    let (ok, stdout, stderr) = agent(&college, &["restore", during.to_str().expect("path")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("the previous database is kept as"),
        "{stdout}"
    );
    let (ok, restored, stderr) = agent(&college, &["verify"]);
    assert!(
        ok,
        "a snapshot taken mid-load is consistent: {restored}{stderr}"
    );
    let (during_events, _) = chain(&restored);
    assert!(during_events.parse::<i64>().expect("count") <= 60);

    // And the after-load backup gives back exactly the live database.
    let (ok, stdout, stderr) = agent(&college, &["restore", after.to_str().expect("path")]);
    assert!(ok, "{stdout}{stderr}");
    let (ok, restored, _) = agent(&college, &["verify"]);
    assert!(ok);
    assert_eq!(chain(&restored), (events, head));
    assert_eq!(college.count("SELECT COUNT(*) FROM students"), 63);

    // A damaged file is refused before anything is replaced.
    let broken = college.dir.file("broken.db");
    let mut bytes = std::fs::read(&after).expect("backup");
    let middle = bytes.len() / 2;
    bytes[middle..middle + 4096].fill(0x55);
    std::fs::write(&broken, bytes).expect("write");
    let (ok, _, stderr) = agent(&college, &["restore", broken.to_str().expect("path")]);
    assert!(!ok);
    assert!(
        stderr.contains("integrity")
            || stderr.contains("not a usable agent database")
            || stderr.contains("chain"),
        "{stderr}"
    );
    let (ok, restored, _) = agent(&college, &["verify"]);
    assert!(ok);
    assert_eq!(chain(&restored).0, "60");
}

#[test]
fn a_killed_backup_leaves_no_file_under_its_name() {
    let college = College::new(2);
    // 60 MB of rows, so the copy takes long enough to be killed half-way.
    college
        .db()
        .execute_batch(
            "CREATE TABLE filler (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
             INSERT INTO filler (body) SELECT randomblob(1000) FROM n;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .expect("filler");
    let target = college.dir.file("killed.db");
    let partial = college.dir.file("killed.db.partial");
    let mut backup = std::process::Command::new(AGENT)
        .arg("--data-dir")
        .arg(college.dir.path())
        .args(["backup", target.to_str().expect("path")])
        .env("KASIP_UNSAFE_CLOCK_FILE", &college.clock_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("backup");
    // Killed as soon as the copy has started writing (under either name).
    let began = std::time::Instant::now();
    while !target.exists() && !partial.exists() {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(30),
            "the copy never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    backup.kill().expect("kill");
    let _ = backup.wait();
    assert!(
        !target.exists(),
        "a killed backup left {} ({} bytes) under its final name",
        target.display(),
        std::fs::metadata(&target)
            .map(|meta| meta.len())
            .unwrap_or(0)
    );
    // A second try after the crash makes a whole, checked copy under the name.
    let (ok, stdout, stderr) = agent(&college, &["backup", target.to_str().expect("path")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(target.exists() && !partial.exists());
}
