//! Shared set-up for the classroom tests: a small college on a test clock, served over
//! HTTPS, with helpers that act as a teacher's browser and as students' phones.
#![allow(dead_code)] // each test file uses a different part

pub mod named;
pub mod registry;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kasip_core::{Date, Iin, Sex};
use kasip_tests::reqwest::blocking::Client;
use kasip_tests::{browser, run_with, text, PhoneKey, Server, TempDataDir};
use serde_json::Value;

pub const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");
pub const TEACHER_A: &str = "850515400012";
pub const TEACHER_B: &str = "791103300025";
pub const PASSWORD: &str = "correct horse battery";

/// 2026-11-23 09:01 in Almaty (UTC+5): one minute into the 09:00 lessons.
pub fn lesson_start_plus_one_minute() -> i64 {
    Date::new(2026, 11, 23).expect("date").days_since_epoch() * 86_400 + (9 * 3600 + 60) - 5 * 3600
}

/// Valid IINs for test students (check digits computed by `Iin::from_parts`).
pub fn student_iins(count: usize, first_serial: u16) -> Vec<String> {
    let birth = Date::new(2006, 3, 15).expect("date");
    let mut serial = first_serial;
    let mut iins = Vec::new();
    while iins.len() < count {
        if let Some(iin) = Iin::from_parts(birth, Sex::Female, serial) {
            iins.push(iin.to_string());
        }
        serial += 1;
    }
    iins
}

pub struct College {
    pub dir: TempDataDir,
    pub clock_file: PathBuf,
    pub server: Server,
    /// ПО-21 at 09:00, taught by teacher A.
    pub lesson_a: i64,
    /// ВТ-21 at 09:00, taught by teacher B.
    pub lesson_b: i64,
    pub group_a: Vec<String>,
    pub group_b: Vec<String>,
}

impl College {
    pub fn new(group_a_size: usize) -> College {
        Self::with_config(group_a_size, |config| config)
    }

    /// A college whose config.toml is edited by `edit` before the agent starts; it also
    /// has an admin account `admin` with the same password as the teachers.
    pub fn with_config(group_a_size: usize, edit: impl Fn(String) -> String) -> College {
        Self::build(group_a_size, edit, |_| {})
    }

    /// Like `with_config`, with `prepare` run on the temporary directory before the data
    /// dir is made inside it (e.g. to mount a small filesystem there).
    pub fn build(
        group_a_size: usize,
        edit: impl Fn(String) -> String,
        prepare: impl FnOnce(&TempDataDir),
    ) -> College {
        let dir = TempDataDir::new();
        prepare(&dir);
        let clock_file = dir.file("clock");
        fs::write(&clock_file, lesson_start_plus_one_minute().to_string()).expect("clock");
        let clock = clock_file.display().to_string();
        let env = [("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())];
        let agent = |args: &[&str], stdin: Option<&str>| {
            let output = run_with(AGENT, &dir.path(), args, &env, stdin);
            assert!(output.status.success(), "{args:?}: {:?}", text(&output));
            text(&output).0
        };
        agent(&["init"], None);
        let teachers = dir.file("teachers.csv");
        fs::write(&teachers, format!("iin;last_name;first_name\n{TEACHER_A};Жұмабаева;Әйгерім\n{TEACHER_B};Иванов;Сергей\n")).expect("csv");
        agent(
            &["import", "teachers", teachers.to_str().expect("path")],
            None,
        );
        let group_a = student_iins(group_a_size, 1);
        let group_b = student_iins(3, 9000);
        let mut students = String::from("iin;last_name;first_name;group;beneficiary\n");
        for (index, iin) in group_a.iter().enumerate() {
            let _ = writeln!(students, "{iin};Студент{index};Әлия;ПО-21;да");
        }
        for (index, iin) in group_b.iter().enumerate() {
            let _ = writeln!(students, "{iin};Оқушы{index};Дана;ВТ-21;да");
        }
        let students_file = dir.file("students.csv");
        fs::write(&students_file, students).expect("csv");
        agent(
            &["import", "students", students_file.to_str().expect("path")],
            None,
        );
        let timetable = dir.file("timetable.csv");
        fs::write(
            &timetable,
            format!(
                "date;start;end;group;discipline;teacher_iin;site;room;mode\n\
                 2026-11-23;09:00;10:30;ПО-21;Математика;{TEACHER_A};Главный корпус;101;offline\n\
                 2026-11-23;09:00;10:30;ВТ-21;Физика;{TEACHER_B};Главный корпус;102;offline\n"
            ),
        )
        .expect("csv");
        agent(
            &["import", "timetable", timetable.to_str().expect("path")],
            None,
        );
        agent(&["staff", "set-password", TEACHER_A], Some(PASSWORD));
        agent(&["staff", "set-password", TEACHER_B], Some(PASSWORD));
        agent(&["staff", "add", "--role", "admin", "admin"], None);
        agent(&["staff", "set-password", "admin"], Some(PASSWORD));
        let config_path = dir.path().join("config.toml");
        let config = fs::read_to_string(&config_path).expect("config");
        fs::write(&config_path, edit(config)).expect("config");
        let lessons: Value = serde_json::from_str(&agent(
            &["lesson", "list", "--date", "2026-11-23", "--json"],
            None,
        ))
        .expect("json");
        let lesson_id = |group: &str| {
            lessons
                .as_array()
                .expect("array")
                .iter()
                .find(|lesson| lesson["group"] == group)
                .and_then(|lesson| lesson["id"].as_i64())
                .expect("lesson")
        };
        let (lesson_a, lesson_b) = (lesson_id("ПО-21"), lesson_id("ВТ-21"));
        let server = Server::start_with_env(AGENT, &dir.path(), &[], &env);
        College {
            dir,
            clock_file,
            server,
            lesson_a,
            lesson_b,
            group_a,
            group_b,
        }
    }

    /// Lessons of group ПО-21 on consecutive days from 2026-11-24, six a day: at least
    /// `count`. Returns (id, unix time one minute after its start) in order.
    pub fn more_lessons(&self, count: usize) -> Vec<(i64, i64)> {
        let slots = ["09:00", "10:40", "12:20", "14:00", "15:40", "17:20"];
        let first = Date::new(2026, 11, 24).expect("date").days_since_epoch();
        let mut csv = String::from("date;start;end;group;discipline;teacher_iin;site;room;mode\n");
        for index in 0..count {
            let day = Date::from_days_since_epoch(first + (index / slots.len()) as i64);
            let start = slots[index % slots.len()];
            let (hour, minute): (u32, u32) = (
                start[..2].parse().expect("hour"),
                start[3..].parse().expect("minute"),
            );
            let end = format!("{:02}:{:02}", hour + (minute + 90) / 60, (minute + 90) % 60);
            let _ = writeln!(
                csv,
                "{day};{start};{end};ПО-21;Математика;{};Главный корпус;101;offline",
                TEACHER_A
            );
        }
        let file = self.dir.file("soak-timetable.csv");
        fs::write(&file, csv).expect("csv");
        let output = run_with(
            AGENT,
            &self.dir.path(),
            &["import", "timetable", file.to_str().expect("path")],
            &[],
            None,
        );
        assert!(output.status.success(), "{:?}", text(&output));
        let db = self.db();
        let mut statement = db
            .prepare("SELECT id, date, start_time FROM lessons WHERE date >= '2026-11-24' ORDER BY date, start_time")
            .expect("lessons");
        let lessons: Vec<(i64, i64)> = statement
            .query_map([], |row| {
                let (id, date, start): (i64, String, String) =
                    (row.get(0)?, row.get(1)?, row.get(2)?);
                let day = Date::parse(&date).expect("date").days_since_epoch();
                let minutes: i64 = start[..2].parse::<i64>().expect("hour") * 60
                    + start[3..].parse::<i64>().expect("minute");
                // Almaty is UTC+5.
                Ok((id, day * 86_400 + minutes * 60 - 5 * 3600 + 60))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(lessons.len() >= count);
        lessons
    }

    /// Kills the agent with SIGKILL (no shutdown of any kind) and starts it again.
    pub fn kill_and_restart(&mut self) {
        self.server.kill();
        let clock = self.clock_file.display().to_string();
        let env = [("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())];
        self.server = Server::start_with_env(AGENT, &self.dir.path(), &[], &env);
    }

    pub fn set_clock(&self, unix: i64) {
        fs::write(&self.clock_file, unix.to_string()).expect("clock");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("agent.db")).expect("db")
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db()
            .query_row(sql, [], |row| row.get(0))
            .expect("count")
    }

    pub fn marks(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM attendance_events")
    }

    /// Every row of every table a refused request must leave alone: all but the
    /// security log, sign-in sessions and the attempt counters of binding codes (a
    /// refusal is meant to write those) and the outbox (sealed in the background).
    pub fn recorded(&self) -> Recorded {
        let db = self.db();
        let mut tables = db
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN \
                 ('security_events', 'staff_sessions', 'binding_codes', 'sqlite_sequence', \
                  'outbox_batches', 'outbox_cursors', 'sync_state')",
            )
            .expect("tables");
        let names: Vec<String> = tables
            .query_map([], |row| row.get(0))
            .expect("tables")
            .map(|name| name.expect("name"))
            .collect();
        let tables = names
            .into_iter()
            .map(|table| {
                let mut statement = db
                    .prepare(&format!("SELECT * FROM {table}"))
                    .expect("select");
                let columns = statement.column_count();
                let rows = statement
                    .query_map([], |row| {
                        (0..columns)
                            .map(|index| row.get::<_, rusqlite::types::Value>(index))
                            .collect::<Result<Vec<_>, _>>()
                            .map(|values| format!("{values:?}"))
                    })
                    .expect("rows")
                    .map(|row| row.expect("row"))
                    .collect();
                (table, rows)
            })
            .collect::<BTreeMap<_, _>>();
        Recorded(tables)
    }

    pub fn security_events(&self, kind: &str) -> i64 {
        self.db()
            .query_row(
                "SELECT COALESCE(SUM(count), 0) FROM security_events WHERE kind = ?1",
                [kind],
                |row| row.get(0),
            )
            .expect("count")
    }

    /// A teacher's browser, signed in.
    pub fn teacher(&self, iin: &str) -> Client {
        self.sign_in(browser(&self.dir.path()), iin)
    }

    /// `client` after signing in as `login` (a staff login or a teacher's IIN) with the
    /// test password through the login form, as a browser does.
    pub fn sign_in(&self, client: Client, login: &str) -> Client {
        kasip_tests::sign_in(&client, &self.server.url, login, PASSWORD);
        client
    }

    /// The CSRF token of the teacher page.
    pub fn csrf(&self, teacher: &Client) -> String {
        csrf_of(
            &teacher
                .get(self.url("/teacher"))
                .send()
                .expect("teacher page")
                .text()
                .expect("body"),
        )
    }

    pub fn open_lesson(&self, teacher: &Client, lesson: i64) {
        let csrf = self.csrf(teacher);
        let response = teacher
            .post(self.url(&format!("/teacher/lessons/{lesson}/open")))
            .form(&[("csrf", csrf)])
            .send()
            .expect("open");
        assert_eq!(response.status(), 303);
    }

    /// Lesson A opened by teacher A and the first student of ПО-21 checked in by phone;
    /// the teacher's browser.
    pub fn with_one_check_in(&self) -> Client {
        let teacher = self.teacher(TEACHER_A);
        self.open_lesson(&teacher, self.lesson_a);
        let url = self.shown_url(&teacher, self.lesson_a);
        assert_eq!(check_in(&self.bound_phone(&self.group_a[0]), &url).0, 200);
        teacher
    }

    /// The URL the projector shows now for `lesson`.
    pub fn shown_url(&self, teacher: &Client, lesson: i64) -> String {
        self.display(teacher, lesson)["url"]
            .as_str()
            .expect("url")
            .to_owned()
    }

    /// What the projector shows now.
    pub fn display(&self, teacher: &Client, lesson: i64) -> Value {
        let response = teacher
            .get(self.url(&format!("/display/{lesson}/current")))
            .send()
            .expect("current");
        assert_eq!(response.status(), 200);
        response.json().expect("json")
    }

    /// A new phone: a browser with its device key, not bound yet.
    pub fn phone(&self) -> Phone {
        Phone {
            client: browser(&self.dir.path()),
            key: Arc::new(PhoneKey::new()),
        }
    }

    /// A phone bound to `iin` with a code from `student issue-code`.
    pub fn bound_phone(&self, iin: &str) -> Phone {
        let phone = self.phone();
        self.bind(&phone, iin);
        phone
    }

    /// Loads the binding form (its CSRF cookie and field) and posts it as a phone's page
    /// does: with the device key, and, for an intent, the device signature over the
    /// token the page names.
    pub fn post_bind(
        &self,
        phone: &Phone,
        iin: &str,
        code: &str,
        intent: Option<&str>,
    ) -> kasip_tests::reqwest::blocking::Response {
        post_bind(&self.server.url, phone, iin, code, intent)
    }

    pub fn bind(&self, phone: &Phone, iin: &str) {
        let code = self.issue_code(iin);
        let response = self.post_bind(phone, iin, &code, None);
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().unwrap_or_default()
        );
    }

    /// A student's name as pages show it: "last first".
    pub fn student_name(&self, iin: &str) -> String {
        self.db()
            .query_row(
                "SELECT last_name || ' ' || first_name FROM students WHERE iin = ?1",
                [iin],
                |row| row.get(0),
            )
            .expect("name")
    }

    /// A curator account `login` for `group`, with the test password.
    pub fn add_curator(&self, login: &str, group: &str) {
        for (args, stdin) in [
            (
                vec!["staff", "add", "--role", "curator", login, "--group", group],
                None,
            ),
            (vec!["staff", "set-password", login], Some(PASSWORD)),
        ] {
            let output = run_with(AGENT, &self.dir.path(), &args, &[], stdin);
            assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        }
    }

    pub fn issue_code(&self, iin: &str) -> String {
        let output = run_with(
            AGENT,
            &self.dir.path(),
            &["student", "issue-code", iin],
            &[],
            None,
        );
        assert!(output.status.success(), "{:?}", text(&output));
        text(&output).0.trim().to_owned()
    }
}

/// The rows of the tables `College::recorded` watches.
#[derive(PartialEq, Eq)]
pub struct Recorded(BTreeMap<String, Vec<String>>);

impl std::fmt::Debug for Recorded {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: BTreeMap<_, _> = self
            .0
            .iter()
            .map(|(table, rows)| (table, rows.len()))
            .collect();
        write!(formatter, "{counts:?}")
    }
}

impl Recorded {
    /// Panics naming each table whose rows differ from `before`'s.
    pub fn assert_unchanged_since(&self, before: &Recorded) {
        let changed: Vec<String> = self
            .0
            .iter()
            .filter(|(table, rows)| before.0.get(*table) != Some(*rows))
            .map(|(table, rows)| format!("{table}: {:?} → {rows:?}", before.0.get(table)))
            .collect();
        assert!(
            changed.is_empty(),
            "recorded although refused:\n{}",
            changed.join("\n")
        );
    }
}

pub use kasip_tests::csrf_of;

/// A student's phone: its browser (cookies) and the device key its pages keep.
#[derive(Clone)]
pub struct Phone {
    pub client: Client,
    pub key: Arc<PhoneKey>,
}

impl std::ops::Deref for Phone {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The value of the first `name="…"` attribute in `html`.
pub fn attribute(html: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("{name}=\""))? + name.len() + 2;
    let end = start + html[start..].find('"')?;
    Some(kasip_tests::page_text(&html[start..end]))
}

/// Loads the binding form of the agent at `base_url` (its CSRF cookie and field) and posts
/// it as a phone's page does: with the device key, and, for an intent, the device
/// signature over the token the page names.
pub fn post_bind(
    base_url: &str,
    phone: &Phone,
    iin: &str,
    code: &str,
    intent: Option<&str>,
) -> kasip_tests::reqwest::blocking::Response {
    let path = match intent {
        Some(intent) => format!("/bind?intent={intent}"),
        None => "/bind".into(),
    };
    let form = phone
        .get(format!("{base_url}{path}"))
        .send()
        .expect("bind form")
        .text()
        .expect("body");
    let csrf = csrf_of(&form);
    let device_key = phone.key.public_key();
    let signature = attribute(&form, "data-token").map(|token| phone.key.sign(&token));
    let mut fields = vec![
        ("iin", iin),
        ("code", code),
        ("csrf", csrf.as_str()),
        ("device_key", device_key.as_str()),
    ];
    if let Some(intent) = intent {
        fields.push(("intent", intent));
    }
    if let Some(signature) = &signature {
        fields.push(("device_signature", signature));
    }
    phone
        .post(format!("{base_url}/bind"))
        .form(&fields)
        .send()
        .expect("bind")
}

/// POSTs the scanned URL as the phone's page does, signed by the phone's device key;
/// returns status and body.
pub fn check_in(phone: &Phone, url: &str) -> (u16, String) {
    let token = url.rsplit('/').next().unwrap_or_default();
    let response = phone
        .post(url)
        .form(&[("device_signature", phone.key.sign(token))])
        .send()
        .expect("check in");
    (response.status().as_u16(), response.text().expect("body"))
}

/// POSTs the scanned URL as a client without the device key would (a copied cookie):
/// no signature.
pub fn check_in_unsigned(client: &Client, url: &str) -> (u16, String) {
    let response = client.post(url).send().expect("check in");
    (response.status().as_u16(), response.text().expect("body"))
}

pub fn reason_of(body: &str) -> String {
    body.split("data-reason=\"")
        .nth(1)
        .map(|rest| rest.chars().take_while(|c| *c != '"').collect())
        .unwrap_or_default()
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A raw TLS connection to the agent at `address` (no HTTP client on top, so a test can
/// write requests byte by byte) and the fingerprint of the certificate it was served.
pub fn tls_connect(address: &str) -> (TlsStream, Arc<Mutex<Option<String>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Any certificate, remembered: tests ask which one was served, not whether to trust it.
    let verifier = kasip_certs::tls::PinnedCertificate::new(None, Arc::clone(&provider));
    let seen = verifier.seen();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connection = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from("localhost").expect("name"),
    )
    .expect("client");
    let socket = TcpStream::connect(address).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (rustls::StreamOwned::new(connection, socket), seen)
}
