//! A full disk under a running agent (a small tmpfs under its data dir; needs root, as
//! CI runs): marks are refused with 503 and a sentence that says why, reads keep
//! working, nothing is corrupted, and once space returns the agent records marks again
//! without a restart.

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

#[test]
fn a_full_disk_refuses_marks_with_503_keeps_reads_and_recovers_by_itself() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let mut mount = None;
    let college = College::build(
        40,
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
    let _mount = mount.expect("mounted");
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
