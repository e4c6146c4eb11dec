//! Test kit for black-box tests: temporary data dirs, spawning the real binaries on
//! random ports, and speaking HTTP to them as a browser would.
//!
//! Crates that own a binary pass its path (`env!("CARGO_BIN_EXE_…")`), since Cargo shows
//! a binary's path only to its own crate's tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `binary` with `--data-dir DIR` and `args`, capturing its output.
pub fn run(binary: &str, data_dir: &Path, args: &[&str]) -> Output {
    run_with(binary, data_dir, args, &[], None)
}

/// Like `run`, with extra environment variables and text on standard input.
pub fn run_with(
    binary: &str,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    use std::io::Write;
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("KASIP_DATA_DIR")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {binary}: {error}"));
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        // A command that refuses its arguments exits before reading: its output says why.
        if let Err(error) = input.write_all(text.as_bytes()) {
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::BrokenPipe,
                "write stdin: {error}"
            );
        }
    }
    drop(input);
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("cannot wait for {binary}: {error}"))
}

/// A registrar's or auditor's browser on the reference registry at `url`: the account
/// made with `kasip-registry add-user` (password on standard input), signed in through
/// the login form, its session cookie kept, redirects not followed.
pub fn registry_person(
    registry: &str,
    data_dir: &Path,
    env: &[(&str, &str)],
    url: &str,
    (login, role): (&str, &str),
    password: &str,
) -> reqwest::blocking::Client {
    let output = run_with(
        registry,
        data_dir,
        &["add-user", login, "--role", role],
        env,
        Some(&format!("{password}\n")),
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let response = client
        .post(format!("{url}/login"))
        .form(&[("login", login), ("password", password)])
        .send()
        .expect("login");
    assert_eq!(response.status().as_u16(), 303, "{:?}", response.text());
    client
}

/// A process's user + system CPU time so far, in seconds (`/proc/PID/stat`; 10 ms
/// ticks, so measure over many requests).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(format!("/proc/{pid}/stat"), false)
}

/// utime + stime of a `/proc/…/stat` file (a process's or a thread's, under `task/`), or
/// with `children` cutime + cstime (its finished, waited-for children's), in seconds.
pub fn stat_cpu_seconds(stat_path: impl AsRef<Path>, children: bool) -> f64 {
    let stat = std::fs::read_to_string(stat_path.as_ref()).expect("stat");
    // Fields after the command's closing parenthesis; utime and stime are the 12th and
    // 13th of those (14th and 15th of the line), cutime and cstime the next two.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let first = if children { 13 } else { 11 };
    let ticks: f64 = fields[first].parse::<f64>().expect("a time")
        + fields[first + 1].parse::<f64>().expect("a time");
    ticks / 100.0
}

/// A memory field of `/proc/{process}/status` in KiB (`process`: a pid, or "self"), such
/// as "VmRSS" (resident now) or "VmHWM" (the peak).
pub fn memory_kib(process: impl std::fmt::Display, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_else(|error| panic!("/proc/{process}/status: {error}"))
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{process}/status"))
}

/// How many heaps glibc's malloc has mapped for arenas other than the main one, in a
/// process (a pid, or "self"). Each is an anonymous 64 MiB reservation aligned to its size
/// (glibc's `arena.c`: a read-write part that grows, the rest `---p`), which is how they
/// are told apart from thread stacks and other mappings. One per arena unless an arena
/// outgrew 64 MiB.
pub fn malloc_arena_heaps(process: impl std::fmt::Display) -> usize {
    const HEAP_MAX: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{process}/maps"))
        .unwrap_or_else(|error| panic!("/proc/{process}/maps: {error}"));
    // (start, end, permissions) of the anonymous mappings, in address order.
    let anonymous: Vec<(u64, u64, &str)> = maps
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 5 || fields[4] != "0" {
                return None;
            }
            let (start, end) = fields[0].split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
                fields[1],
            ))
        })
        .collect();
    anonymous
        .iter()
        .enumerate()
        .filter(|(at, (start, end, permissions))| {
            if start % HEAP_MAX != 0 || *permissions != "rw-p" {
                return false;
            }
            let reserved_end = match anonymous.get(at + 1) {
                Some((next_start, next_end, "---p")) if next_start == end => *next_end,
                _ => *end,
            };
            reserved_end - start == HEAP_MAX
        })
        .count()
}

/// Text of a process's stdout and stderr, for assertions and failure messages.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A server process started with `serve --listen 127.0.0.1:0`.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` as the server printed it.
    pub url: String,
    /// Everything written to stderr, collected by a thread.
    stderr_lines: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `binary serve` and waits (up to 60 s) for its `listening on URL` line.
    pub fn start(binary: &str, data_dir: &Path, extra_args: &[&str]) -> Server {
        Self::start_with_env(binary, data_dir, extra_args, &[])
    }

    /// Like `start`, with extra environment variables (e.g. the test clock).
    pub fn start_with_env(
        binary: &str,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(binary)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env_remove("KASIP_DATA_DIR")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot spawn {binary}: {error}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (url_sender, url_receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = url_sender.send(url.trim().to_owned());
                }
            }
        });
        let (stderr_sender, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = stderr_sender.send(line);
            }
        });
        let url = match url_receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log: Vec<String> = stderr_lines.try_iter().collect();
                panic!(
                    "server did not print 'listening on'; stderr:\n{}",
                    log.join("\n")
                );
            }
        };
        Server {
            child,
            url,
            stderr_lines,
        }
    }

    pub fn address(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned()
    }

    /// The process id, to read its memory and open files from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a power cut would, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. "HUP") and returns at once.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends `signal` (e.g. "TERM") and waits up to 30 s for the process to exit.
    pub fn stop_with(mut self, signal: &str) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                break exit;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Give the reader thread a moment to drain the closed pipe.
        std::thread::sleep(Duration::from_millis(50));
        let log: Vec<String> = self.stderr_lines.try_iter().collect();
        (exit, log.join("\n"))
    }
}

impl Drop for Server {
    /// Kills the process; when a test is failing, prints what it logged (its last 200
    /// lines), which is often why.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            std::thread::sleep(Duration::from_millis(50));
            let log: Vec<String> = self.stderr_lines.try_iter().collect();
            let tail = &log[log.len().saturating_sub(200)..];
            eprintln!("--- log of {} ---\n{}", self.url, tail.join("\n"));
        }
    }
}

/// A page's text as a reader sees it: the character references HTML escaping writes
/// (`&#39;`, `&amp;`…) turned back into characters, so a test can look for a sentence.
pub fn page_text(html: &str) -> String {
    html.replace("&#39;", "'")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The path of another workspace package's binary (`CARGO_BIN_EXE_*` names only the
/// package's own). `cargo test --workspace` builds every binary before any test runs.
/// Where a browser test keeps a screenshot among the test outputs:
/// `target/screenshots/<name>.png`, kept after the test for people to look at.
pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    let test_executable = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/screenshots
    let target = test_executable
        .ancestors()
        .nth(3)
        .expect("target")
        .join("screenshots");
    std::fs::create_dir_all(&target).expect("screenshots dir");
    target.join(format!("{name}.png"))
}

/// `text` percent-encoded for a URL's query.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

pub fn workspace_binary(name: &str) -> String {
    let test_executable = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = test_executable
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace` (or `cargo build --workspace` first)",
        path.display()
    );
    path.display().to_string()
}

/// A plain HTTP client (no cookies, no redirects followed), as a registry's caller.
pub fn http_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// A loopback port free for both TCP and UDP, for a server to bind
/// (a DNS server binds both).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        let port = tcp.local_addr().expect("address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// POSTs `body` as it is; the status and the answer's text.
pub fn post_text(url: &str, body: &str) -> (u16, String) {
    let response = http_client()
        .post(url)
        .body(body.to_owned())
        .send()
        .expect("post");
    (response.status().as_u16(), response.text().expect("body"))
}

/// A browser-like HTTPS client for `server`: trusts the agent's self-signed certificate
/// from its data dir, keeps cookies, and does not follow redirects (tests check them).
pub fn browser(data_dir: &Path) -> reqwest::blocking::Client {
    browser_builder(data_dir).build().expect("HTTPS client")
}

/// The hidden CSRF field of a page's form.
pub fn csrf_of(html: &str) -> String {
    let start = html.find("name=csrf value=\"").expect("csrf field") + "name=csrf value=\"".len();
    html[start..]
        .chars()
        .take_while(|character| *character != '"')
        .collect()
}

/// Signs `client` in at `base_url` through the sign-in form, as a browser does; panics
/// unless the agent answers 303.
pub fn sign_in(client: &reqwest::blocking::Client, base_url: &str, login: &str, password: &str) {
    let form = client
        .get(format!("{base_url}/login"))
        .send()
        .and_then(|response| response.text())
        .expect("login form");
    let response = client
        .post(format!("{base_url}/login"))
        .form(&[
            ("login", login),
            ("password", password),
            ("csrf", &csrf_of(&form)),
        ])
        .send()
        .expect("login");
    assert_eq!(
        response.status(),
        303,
        "{login} signs in: {}",
        response.text().unwrap_or_default()
    );
}

/// Like `browser`, asking for pages in `language` ("kk", "ru" or "en").
pub fn browser_in(data_dir: &Path, language: &str) -> reqwest::blocking::Client {
    browser_builder_in(data_dir, language)
        .build()
        .expect("HTTPS client")
}

/// Like `browser_in`, connecting from `source` (another loopback address, such as
/// 127.0.0.2, is another client to the agent's throttles).
pub fn browser_from(
    data_dir: &Path,
    language: &str,
    source: std::net::IpAddr,
) -> reqwest::blocking::Client {
    browser_builder_in(data_dir, language)
        .local_address(source)
        .build()
        .expect("HTTPS client")
}

fn browser_builder_in(data_dir: &Path, language: &str) -> reqwest::blocking::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::ACCEPT_LANGUAGE,
        reqwest::header::HeaderValue::from_str(language).expect("language"),
    );
    browser_builder(data_dir).default_headers(headers)
}

fn browser_builder(data_dir: &Path) -> reqwest::blocking::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(data_dir.join("tls.crt")).expect("the agent's tls.crt");
    let certificate = reqwest::Certificate::from_pem(&pem).expect("PEM certificate");
    reqwest::blocking::Client::builder()
        .add_root_certificate(certificate)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
}

/// A fresh temporary directory; `path()` is a not-yet-existing data dir inside it.
pub struct TempDataDir {
    holder: tempfile::TempDir,
    /// The registry's own PostgreSQL server, for a registry data dir on PostgreSQL.
    postgres: Option<postgres::Postgres>,
}

/// Where a test's registry keeps its tables: every registry test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

impl TempDataDir {
    pub fn new() -> Self {
        Self {
            holder: tempfile::tempdir().expect("create temp dir"),
            postgres: None,
        }
    }

    /// A registry's data dir on `store`: for PostgreSQL, a throwaway server of its own
    /// and `registry.toml` naming its database, so that every `kasip-registry` command
    /// run with this data dir uses it.
    pub fn for_registry(store: Store) -> Self {
        let mut dir = Self::new();
        if store == Store::Postgres {
            let server = postgres::Postgres::start();
            dir.use_database(&server.create_database("registry"));
            dir.postgres = Some(server);
        }
        dir
    }

    /// Makes the data dir (0700) with a `registry.toml` naming the database at `url`.
    pub fn use_database(&self, url: &str) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(self.path())
            .expect("data dir");
        std::fs::write(
            self.path().join("registry.toml"),
            format!("database = \"{url}\"\n"),
        )
        .expect("registry.toml");
    }

    /// The PostgreSQL server of a registry data dir made `for_registry(Store::Postgres)`.
    pub fn postgres(&self) -> Option<&postgres::Postgres> {
        self.postgres.as_ref()
    }

    /// The data dir (not created: `init` and `serve` create it).
    pub fn path(&self) -> PathBuf {
        self.holder.path().join("data")
    }

    /// A path for a scratch file beside the data dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.holder.path().join(name)
    }
}

/// Each named scenario `fn NAME(store: Store)` becomes two tests, `NAME::sqlite` and
/// `NAME::postgres`: the registry's suite runs on both of its stores.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::Store::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::Store::Postgres)
            }
        }
    )*};
}

/// Runs `sql` on a registry data dir's database, whichever store it is on: rows one per
/// line, columns separated by `|`, NULL empty (psql's unaligned form). An error is the
/// engine's message.
pub fn registry_sql(dir: &TempDataDir, sql: &str) -> Result<String, String> {
    if let Some(server) = dir.postgres() {
        let output = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(server.url("registry"))
            .args(["-c", sql])
            .output()
            .map_err(|error| format!("psql: {error}"))?;
        return if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        };
    }
    let db = rusqlite::Connection::open(dir.path().join("registry.db"))
        .map_err(|error| error.to_string())?;
    let mut statement = db.prepare(sql).map_err(|error| error.to_string())?;
    let columns = statement.column_count();
    let mut rows = statement.query([]).map_err(|error| error.to_string())?;
    let mut lines = Vec::new();
    while let Some(row) = rows.next().map_err(|error| error.to_string())? {
        let fields: Vec<String> = (0..columns)
            .map(|column| match row.get_ref(column) {
                Ok(rusqlite::types::ValueRef::Integer(value)) => value.to_string(),
                Ok(rusqlite::types::ValueRef::Real(value)) => value.to_string(),
                Ok(rusqlite::types::ValueRef::Text(text)) => {
                    String::from_utf8_lossy(text).into_owned()
                }
                Ok(rusqlite::types::ValueRef::Blob(_)) => "(blob)".to_owned(),
                Ok(rusqlite::types::ValueRef::Null) | Err(_) => String::new(),
            })
            .collect();
        lines.push(fields.join("|"));
    }
    Ok(lines.join("\n"))
}

/// `registry_sql` that must succeed.
pub fn registry_query(dir: &TempDataDir, sql: &str) -> String {
    registry_sql(dir, sql).unwrap_or_else(|error| panic!("{sql}: {error}"))
}

impl Default for TempDataDir {
    fn default() -> Self {
        Self::new()
    }
}
pub use reqwest;
pub mod frames;
pub mod postgres;
pub mod acme;
pub mod dns;
pub mod webdriver;

/// A phone's device key, as a phone's browser makes it at binding (ECDSA P-256, the
/// public half registered raw), signing check-ins as the page's script does.
pub struct PhoneKey {
    key: ring::signature::EcdsaKeyPair,
}

impl PhoneKey {
    pub fn new() -> Self {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let random = ring::rand::SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).expect("key");
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
                .expect("key");
        Self { key }
    }

    /// The public key as the binding form sends it: base64url of the raw point.
    pub fn public_key(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public_key_bytes())
    }

    /// The raw uncompressed point, as the agent stores it.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref().to_vec()
    }

    /// The device signature over what the phone presented (the scanned token, or the
    /// code typed): base64url of r‖s over `KC1.<presented>`.
    pub fn sign(&self, presented: &str) -> String {
        use base64::Engine;
        let signature = self
            .key
            .sign(
                &ring::rand::SystemRandom::new(),
                format!("KC1.{presented}").as_bytes(),
            )
            .expect("sign");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.as_ref())
    }
}

impl Default for PhoneKey {
    fn default() -> Self {
        Self::new()
    }
}
