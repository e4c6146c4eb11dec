//! A throwaway PostgreSQL server for tests, from Debian's `postgresql` package: `initdb`
//! into a temporary folder, `pg_ctl` on a free loopback port, stopped and removed when
//! dropped. PostgreSQL refuses to run as root, so as root (CI) it runs as the package's
//! `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The user every test database belongs to (trust authentication on loopback only).
const USER: &str = "kasip";

pub struct Postgres {
    holder: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    pub port: u16,
}

/// Where `initdb` and `pg_ctl` are: on PATH, else the newest `/usr/lib/postgresql/N/bin`.
fn server_binaries() -> PathBuf {
    if let Ok(output) = Command::new("sh")
        .args(["-c", "command -v pg_ctl"])
        .output()
    {
        let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if output.status.success() && !found.is_empty() {
            if let Some(dir) = Path::new(&found).parent() {
                return dir.to_owned();
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server is not installed: `apt-get install postgresql` (the registry's \
             PostgreSQL tests start a throwaway server with its initdb and pg_ctl)"
        )
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A free port below the kernel's ephemeral range (32768 up), where `free_port()` and
/// every `--listen 127.0.0.1:0` of the other tests pick theirs: a test server started
/// between one test's probe and its bind would otherwise take that test's port.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    for attempt in 0u32..200 {
        let port = 20_000 + (RandomState::new().hash_one(attempt) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-29999 for PostgreSQL")
}

fn check(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Postgres {
    /// A new server with nothing in it but the `postgres` database. Tests need no
    /// durability: it neither syncs nor writes full pages.
    pub fn start() -> Self {
        Self::start_with(&[
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ])
    }

    /// A server with `settings` (`name=value`) besides the loopback port: benchmarks
    /// give durable settings, as a registry runs.
    pub fn start_with(settings: &[&str]) -> Self {
        let bin = server_binaries();
        let holder = tempfile::tempdir().expect("temp dir");
        let as_postgres = is_root();
        let postgres = Self {
            holder,
            bin,
            as_postgres,
            port: 0,
        };
        if as_postgres {
            check(
                Command::new("chown")
                    .arg("postgres")
                    .arg(postgres.holder.path())
                    .output()
                    .expect("chown"),
                "chown to postgres",
            );
        }
        check(
            postgres
                .server_command("initdb")
                .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync", "-D"])
                .arg(postgres.data())
                .output()
                .expect("initdb"),
            "initdb",
        );
        let mut postgres = postgres;
        // A port taken between our probe and the server's bind: try another.
        for attempt in 0..5 {
            postgres.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 {}",
                postgres.port,
                postgres.holder.path().display(),
                settings
                    .iter()
                    .map(|setting| format!("-c {setting}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let started = postgres
                .server_command("pg_ctl")
                .arg("-D")
                .arg(postgres.data())
                .args(["-o", &options, "-l"])
                .arg(postgres.holder.path().join("server.log"))
                .args(["-w", "-t", "60", "start"])
                .output()
                .expect("pg_ctl");
            if started.status.success() {
                return postgres;
            }
            if attempt == 4 {
                let log = std::fs::read_to_string(postgres.holder.path().join("server.log"))
                    .unwrap_or_default();
                panic!("PostgreSQL did not start: {log}");
            }
        }
        unreachable!()
    }

    /// Where the server keeps its files (`COPY … TO` writes here too).
    pub fn folder(&self) -> &Path {
        self.holder.path()
    }

    fn data(&self) -> PathBuf {
        self.holder.path().join("data")
    }

    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// `postgres://…` for database `name` (made by `create_database`).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// A new empty database; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Runs `sql` with psql in database `name`; its unaligned, tuples-only output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let output = check(
            Command::new("psql")
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(self.url(name))
                .args(["-c", sql])
                .output()
                .expect("psql"),
            &format!("psql {sql}"),
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server (fast: every connection is cut) and starts it again on the same
    /// port, as a restart or a failover looks to its clients.
    pub fn restart(&self) {
        check(
            self.server_command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "fast", "-w", "-t", "60", "-l"])
                // Its log, not our pipe: the server outlives pg_ctl and would hold it.
                .arg(self.holder.path().join("server.log"))
                .arg("restart")
                .output()
                .expect("pg_ctl restart"),
            "pg_ctl restart",
        );
    }

    /// The server's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.holder.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
