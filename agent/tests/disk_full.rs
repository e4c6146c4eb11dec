//! Disk faults on a small tmpfs under the data dir (needs root, as CI runs). A full disk
//! under a running agent: marks are refused with 503 and a sentence that says why, reads
//! keep working, nothing is corrupted, and once space returns the agent records marks
//! again without a restart. A read-only remount (the kernel's answer to disk errors;
//! it refuses while the agent holds the database open for writing, so it follows a
//! crash): the agent will not start, says why, and loses nothing.

mod common;

use std::io::Write;
use std::process::Command;

use common::{check_in, College, TEACHER_A};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Lazily unmounts on drop (the agent may still hold files there).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A college whose temporary directory is a 24 MB tmpfs.
fn college_on_tmpfs(students: usize) -> (College, Mount) {
    let mut mount = None;
    let college = College::build(
        students,
        |config| config,
        |dir| {
            let point = dir.file("");
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
                .arg(&point)
                .status()
                .expect("mount");
            assert!(status.success(), "root but cannot mount a tmpfs");
            mount = Some(Mount(point));
        },
    );
    (college, mount.expect("mounted"))
}

fn remount(mount: &Mount, mode: &str) {
    let status = Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(&mount.0)
        .status()
        .expect("mount");
    assert!(status.success(), "remount {mode}");
}

#[test]
fn a_full_disk_refuses_marks_with_503_keeps_reads_and_recovers_by_itself() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let (college, _mount) = college_on_tmpfs(40);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let phones: Vec<_> = college
        .group_a
        .iter()
        .map(|iin| college.bound_phone(iin))
        .collect();
    assert_eq!(check_in(&phones[0], &url).0, 200);

    // Empty the write-ahead log so the next commit must grow it, then fill the disk.
    let database = college.dir.path().join("agent.db");
    rusqlite::Connection::open(&database)
        .expect("db")
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    let filler_path = college.dir.file("filler");
    let mut filler = std::fs::File::create(&filler_path).expect("filler");
    let block = vec![0u8; 4096];
    while filler
        .write_all(&block)
        .and_then(|()| filler.flush())
        .is_ok()
    {}
    drop(filler);

    let mut refused = Vec::new();
    for (index, phone) in phones.iter().enumerate().skip(1) {
        let (status, body) = check_in(phone, &url);
        match status {
            200 => {}
            503 => {
                assert!(
                    body.contains("data-reason=\"storage_unavailable\""),
                    "{body}"
                );
                assert!(body.contains("Диск агента заполнен"), "{body}");
                refused.push(index);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!refused.is_empty(), "a full disk must refuse marks");
    // Reads keep working.
    let display = teacher
        .get(college.url(&format!("/display/{}/current", college.lesson_a)))
        .send()
        .expect("display");
    assert_eq!(display.status(), 200);
    let health = teacher.get(college.url("/healthz")).send().expect("health");
    assert_eq!(health.status(), 200);
    let stored_while_full = college.marks();
    assert_eq!(
        stored_while_full as usize,
        40 - refused.len(),
        "a 503 stored nothing"
    );

    // Space returns: the same students check in, with no restart.
    std::fs::remove_file(&filler_path).expect("free the space");
    for index in &refused {
        let (status, body) = check_in(&phones[*index], &url);
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(college.marks(), 40);
    let integrity: String = college
        .db()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity");
    assert_eq!(integrity, "ok");
    let clock = college.clock_file.display().to_string();
    let verify = kasip_tests::run_with(
        common::AGENT,
        &college.dir.path(),
        &["verify"],
        &[("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())],
        None,
    );
    assert!(verify.status.success(), "{:?}", kasip_tests::text(&verify));
}

#[test]
fn a_read_only_remount_stops_the_agent_with_the_reason_and_loses_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let (mut college, mount) = college_on_tmpfs(6);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let phones: Vec<_> = college
        .group_a
        .iter()
        .map(|iin| college.bound_phone(iin))
        .collect();
    for phone in &phones[..3] {
        assert_eq!(check_in(phone, &url).0, 200);
    }
    // The disk fails under the agent: it dies, the kernel remounts read-only.
    college.server.kill();
    remount(&mount, "ro");
    let clock = college.clock_file.display().to_string();
    let mut serve = Command::new(common::AGENT)
        .arg("--data-dir")
        .arg(college.dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KASIP_UNSAFE_CLOCK_FILE", &clock)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while serve.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve kept running on a read-only data dir");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = serve.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("read-only filesystem"), "{stderr}");
    assert!(stderr.contains("mount -o remount,rw"), "{stderr}");

    // Writable again: everything from before is there, and marking goes on.
    remount(&mount, "rw");
    college.kill_and_restart();
    assert_eq!(college.marks(), 3);
    let teacher = college.teacher(TEACHER_A);
    let url = college.shown_url(&teacher, college.lesson_a);
    for phone in &phones[3..] {
        assert_eq!(check_in(phone, &url).0, 200);
    }
    assert_eq!(college.marks(), 6);
    let verify = kasip_tests::run_with(
        common::AGENT,
        &college.dir.path(),
        &["verify"],
        &[("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())],
        None,
    );
    assert!(verify.status.success(), "{:?}", kasip_tests::text(&verify));
}
