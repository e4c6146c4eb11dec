//! The command line as a newcomer meets it: a password typed at a terminal is not echoed
//! (and a pipe still works), a backup into a missing folder blames the folder, codes for
//! an unknown group say the group does not exist.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{College, AGENT};
use kasip_tests::{run_with, text};

/// Runs the agent's CLI under a pseudo-terminal (util-linux `script`), answering each
/// prompt as a person would: only once it is on the screen (typed earlier, a terminal
/// echoes whatever arrives before the program turns echo off).
fn at_a_terminal(college: &College, args: &str, answers: &[(&str, &str)]) -> (bool, String) {
    let command = format!("{AGENT} --data-dir {} {args}", college.dir.path().display());
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    let mut stdout = child.stdout.take().expect("stdout");
    let screen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let screen = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 256];
            while let Ok(read) = stdout.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                screen
                    .lock()
                    .expect("screen")
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        })
    };
    let mut stdin = child.stdin.take().expect("stdin");
    for (prompt, answer) in answers {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !screen.lock().expect("screen").contains(prompt) {
            assert!(
                Instant::now() < deadline,
                "no prompt {prompt:?}: {}",
                screen.lock().expect("screen")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Past the prompt, the terminal's echo is off or never will be.
        std::thread::sleep(Duration::from_millis(100));
        writeln!(stdin, "{answer}").expect("type");
    }
    drop(stdin);
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    let screen = screen.lock().expect("screen").clone();
    (status.success(), screen)
}

fn signs_in(college: &College, password: &str) -> bool {
    let client = kasip_tests::browser(&college.dir.path());
    let form = client
        .get(college.url("/login"))
        .send()
        .and_then(|response| response.text())
        .expect("login form");
    let csrf = kasip_tests::csrf_of(&form);
    let response = client
        .post(college.url("/login"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("login", "admin"),
            ("password", password),
        ])
        .send()
        .expect("sign in");
    response.status() == 303
}

#[test]
fn a_password_typed_at_a_terminal_is_not_echoed_and_a_pipe_still_works() {
    let college = College::new(2);
    let secret = "a fresh password 42";
    let prompts = ["new password for 'admin':", "the same again:"];
    let (ok, screen) = at_a_terminal(
        &college,
        "staff set-password admin",
        &[(prompts[0], secret), (prompts[1], secret)],
    );
    assert!(ok, "{screen}");
    assert!(
        !screen.contains(secret),
        "the terminal echoed the password: {screen}"
    );
    assert!(signs_in(&college, secret));

    // Typed twice differently: refused, nothing changed.
    let (ok, screen) = at_a_terminal(
        &college,
        "staff set-password admin",
        &[
            (prompts[0], "one password here"),
            (prompts[1], "another one here"),
        ],
    );
    assert!(!ok);
    assert!(
        screen.contains("the two passwords differ; nothing was changed"),
        "{screen}"
    );
    assert!(signs_in(&college, secret));

    // A script pipes it.
    let piped = run_with(
        AGENT,
        &college.dir.path(),
        &["staff", "set-password", "admin"],
        &[],
        Some("piped password 123\n"),
    );
    assert!(piped.status.success(), "{:?}", text(&piped));
    assert!(signs_in(&college, "piped password 123"));
}

#[test]
fn a_missing_folder_and_an_unknown_group_are_named_as_such() {
    let college = College::new(2);
    let missing = college.dir.file("no-such-folder/agent-backup.db");
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["backup", missing.to_str().expect("path")],
        &[],
        None,
    );
    assert!(!output.status.success());
    let said = text(&output).1;
    assert!(
        said.contains(&format!(
            "the folder {} does not exist",
            college.dir.file("no-such-folder").display()
        )),
        "{said}"
    );
    assert!(!said.contains(".partial"), "{said}");

    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["student", "issue-code", "--group", "ПО-99"],
        &[],
        None,
    );
    assert!(!output.status.success());
    let said = text(&output).1;
    assert!(said.contains("there is no group 'ПО-99'"), "{said}");
}
