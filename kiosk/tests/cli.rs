//! `kasip-kiosk` as a technician uses it without an agent: decoding images of passes in
//! the hard conditions a kiosk camera sees, and clear errors before enrolment.

use std::fs;
use std::process::Command;

use kasip_tests::frames::{qr_frame, FrameStyle};
use kasip_tests::{text, TempDataDir};

const KIOSK: &str = env!("CARGO_BIN_EXE_kasip-kiosk");
const PASS: &str = "KP1.900101300017.1795420860.AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw";

#[test]
fn decode_reads_passes_in_every_hard_condition_one_line_each() {
    let dir = TempDataDir::new();
    let mut paths = Vec::new();
    for (name, style) in FrameStyle::hard_cases() {
        let path = dir.file(&format!("{name}.png"));
        fs::write(&path, qr_frame(PASS, &style)).expect("frame");
        paths.push(path);
    }
    let blank = dir.file("blank.png");
    fs::write(
        &blank,
        qr_frame(
            "x",
            &FrameStyle {
                size_px: 0.0,
                ..FrameStyle::default()
            },
        ),
    )
    .expect("frame");
    let output = Command::new(KIOSK)
        .arg("decode")
        .args(&paths)
        .arg(&blank)
        .output()
        .expect("run kasip-kiosk");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), paths.len(), "{stdout}");
    for (line, path) in lines.iter().zip(&paths) {
        assert_eq!(*line, format!("{}\t{PASS}", path.display()));
    }
}

#[test]
fn decode_escapes_newlines_tabs_and_backslashes() {
    let dir = TempDataDir::new();
    let path = dir.file("odd.png");
    fs::write(&path, qr_frame("a\tb\nc\\d", &FrameStyle::default())).expect("frame");
    let output = Command::new(KIOSK)
        .arg("decode")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(
        text(&output).0,
        format!("{}\ta\\tb\\nc\\\\d\n", path.display())
    );
}

#[test]
fn unreadable_images_and_a_missing_enrolment_are_explained() {
    let dir = TempDataDir::new();
    let junk = dir.file("junk.png");
    fs::write(&junk, b"not a picture").expect("junk");
    let good = dir.file("good.png");
    fs::write(&good, qr_frame("hello", &FrameStyle::default())).expect("frame");
    let output = Command::new(KIOSK)
        .arg("decode")
        .arg(&junk)
        .arg(&good)
        .output()
        .expect("run");
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout.contains("\thello"),
        "the readable image is still decoded: {stdout}"
    );
    assert!(stderr.contains("junk.png"), "{stderr}");
    assert!(stderr.contains("1 image(s) could not be read"), "{stderr}");

    let output = Command::new(KIOSK)
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["run", "--frames"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output)
            .1
            .contains("kasip-kiosk enroll --agent URL --code CODE"),
        "{:?}",
        text(&output)
    );

    let output = Command::new(KIOSK)
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["enroll", "--agent", "http://10.0.0.5:8443", "--code", "x"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    assert!(text(&output)
        .1
        .contains("plain http:// is allowed only to this machine"));

    let output = Command::new(KIOSK).arg("--help").output().expect("help");
    assert!(output.status.success());
    for command in ["enroll", "run", "decode", "sync", "status"] {
        assert!(text(&output).0.contains(command), "{command}");
    }
}
