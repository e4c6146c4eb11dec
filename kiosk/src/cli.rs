//! `kasip-kiosk`'s commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::agent::{AgentClient, AgentTrust};
use crate::decode::{decode, escape_line, Luma};
use crate::error::KioskError;
use crate::run::{run as run_kiosk, sync_now, unix_now, Input, RunOptions};
use crate::store::{write_credential, Enrolment, KioskDir, KioskStore};

#[derive(Debug, Parser)]
#[command(
    name = "kasip-kiosk",
    version,
    about = "KasipTech kiosk: reads student passes (camera, image files, image stream or a USB scanner), verifies them offline and forwards them to the college agent",
    after_help = "Set up: on the agent `kasip-agent kiosk add --room ROOM` (or --entrance SITE), then here `kasip-kiosk enroll --agent URL --code CODE --fingerprint HEX`, then `kasip-kiosk run`."
)]
pub struct Cli {
    /// Directory holding the kiosk's database and credential
    /// [default: ~/.local/share/kasip-kiosk; the system service uses /var/lib/kasip-kiosk]
    #[arg(long, global = true, env = "KASIP_KIOSK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrol with the college agent using the one-time code from `kasip-agent kiosk add`
    Enroll {
        /// The agent's address: its name once it has one (https://NAME:8443, see
        /// `kasip-agent cert status`), whose certificate is then verified as a browser
        /// verifies it; or https://192.168.1.10:8443 with a pinned certificate
        #[arg(long, value_name = "URL")]
        agent: String,
        #[arg(long, value_name = "CODE")]
        code: String,
        /// Pin the agent certificate's SHA-256 that `kasip-agent kiosk add` printed;
        /// for an agent reached by address without it, the certificate seen now is
        /// pinned (compare it by eye)
        #[arg(long, value_name = "HEX")]
        fingerprint: Option<String>,
        /// A CA certificate (PEM) trusted for the agent's name besides the system's
        /// roots (a pilot's or test CA)
        #[arg(long, value_name = "FILE", conflicts_with = "fingerprint")]
        ca_file: Option<PathBuf>,
        /// Reach the agent's name at this address instead of asking DNS (a LAN whose
        /// resolver drops answers with private addresses); the certificate is still
        /// verified for the name
        #[arg(long, value_name = "IP", conflicts_with = "fingerprint")]
        agent_address: Option<std::net::IpAddr>,
    },
    /// Scan passes until stopped: shows each verdict on the status page and stdout
    Run {
        /// Read frames from an image file, a directory of images (sorted by name), or
        /// `-` for PNG/JPEG images one after another on stdin
        #[arg(long, value_name = "PATH", conflicts_with_all = ["wedge", "camera"])]
        frames: Option<String>,
        /// Read one pass per line from stdin (USB QR scanner in keyboard mode)
        #[arg(long, conflicts_with = "camera")]
        wedge: bool,
        /// Camera index (needs a build with --features camera) [default when neither
        /// --frames nor --wedge: 0]
        #[arg(long, value_name = "INDEX")]
        camera: Option<u32>,
        /// Handle the input, try to forward the scans once, and exit
        #[arg(long)]
        once: bool,
        /// Address of the local status page for the kiosk's screen; `off` for none
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8765")]
        status_listen: String,
        /// Seconds between pulls of the pass keys from the agent
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        refresh_secs: u64,
        /// A pass accepted here this few seconds ago is still the same presentation
        /// (green again, not recorded twice); later it is a replay
        #[arg(long, value_name = "SECS", default_value_t = 5)]
        repeat_secs: i64,
        /// Longest wait between attempts to reach an unreachable agent
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        retry_max_secs: u64,
    },
    /// Decode the QR codes in images: one line `PATH<TAB>TEXT` per code found (\n, \t,
    /// \r and \\ escaped), nothing for an image without one
    Decode {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Pull the pass keys and forward waiting scans now; fails while scans still wait
    Sync,
    /// Show the enrolment, the pass keys held and the queue
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub use kasip_certs::process::init_logging;

fn default_root() -> PathBuf {
    directories::ProjectDirs::from("kz", "KasipTech", "kasip-kiosk")
        .map(|dirs| dirs.data_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from("kasip-kiosk-data"))
}

pub fn run(cli: Cli) -> Result<(), KioskError> {
    if std::env::var_os(crate::run::CLOCK_FILE_VARIABLE).is_some() {
        tracing::warn!(
            "{} is set: {}",
            crate::run::CLOCK_FILE_VARIABLE,
            if cfg!(feature = "test-clock") {
                "the kiosk's clock is read from a file (a build for tests)"
            } else {
                "ignored, this build uses the system clock"
            }
        );
    }
    let dir = KioskDir::new(cli.data_dir.unwrap_or_else(default_root));
    match cli.command {
        Command::Enroll {
            agent,
            code,
            fingerprint,
            ca_file,
            agent_address,
        } => enroll(
            &dir,
            &agent,
            &code,
            EnrolTrust {
                fingerprint,
                ca_file,
                agent_address,
            },
        ),
        Command::Run {
            frames,
            wedge,
            camera,
            once,
            status_listen,
            refresh_secs,
            repeat_secs,
            retry_max_secs,
        } => {
            let input = match (frames, wedge, camera) {
                (Some(path), _, _) if path == "-" => Input::Stdin,
                (Some(path), _, _) => Input::Files(PathBuf::from(path)),
                (None, true, _) => Input::Wedge,
                (None, false, index) => Input::Camera(index.unwrap_or(0)),
            };
            let status_listen = match status_listen.as_str() {
                "off" | "" => None,
                address => Some(address.parse::<SocketAddr>().map_err(|_| {
                    KioskError::Usage(format!(
                        "--status-listen {address}: expected an address like 127.0.0.1:8765, or off"
                    ))
                })?),
            };
            run_kiosk(
                &dir,
                RunOptions {
                    input,
                    once,
                    status_listen,
                    refresh_secs,
                    repeat_secs,
                    retry_max_secs,
                },
            )
        }
        Command::Decode { images } => decode_images(&images),
        Command::Sync => {
            println!("{}", sync_now(&dir)?);
            Ok(())
        }
        Command::Status { json } => status(&dir, json),
    }
}

/// How `enroll` was told to check the agent's certificate.
struct EnrolTrust {
    fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    agent_address: Option<std::net::IpAddr>,
}

fn enroll(dir: &KioskDir, agent: &str, code: &str, asked: EnrolTrust) -> Result<(), KioskError> {
    let store = KioskStore::open(dir)?;
    let by_name = crate::agent::host_of(agent);
    let trust = match (&asked.fingerprint, &by_name) {
        (Some(fingerprint), _) => AgentTrust::Pinned(fingerprint.clone()),
        (None, Some(_)) => AgentTrust::Verified {
            ca_file: asked.ca_file.clone(),
            address: asked.agent_address,
        },
        (None, None) => {
            if asked.ca_file.is_some() || asked.agent_address.is_some() {
                return Err(KioskError::Usage(
                    "--ca-file and --agent-address are for an agent reached by its name (https://NAME:8443); an agent reached by address is pinned".into(),
                ));
            }
            AgentTrust::FirstSeen
        }
    };
    let client = AgentClient::new(agent, &trust)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(KioskError::runtime("cannot start the async runtime"))?;
    let answer = runtime.block_on(client.enrol(code)).map_err(|error| match (&trust, error) {
        (AgentTrust::Verified { .. }, crate::agent::CallError::Unreachable(reason))
            if reason.contains("certificate") || reason.contains("Certificate") =>
        {
            KioskError::Agent(format!(
                "{reason}\nthe agent's certificate is not trusted for {}: check `kasip-agent cert status` on the agent, or pin its certificate with --fingerprint HEX",
                by_name.clone().unwrap_or_default()
            ))
        }
        (_, error) => error.into(),
    })?;
    let seen = match &trust {
        AgentTrust::Verified { .. } => String::new(),
        _ => client.seen_fingerprint().unwrap_or_default(),
    };
    write_credential(dir, &answer.credential)?;
    store.save_enrolment(
        &Enrolment {
            agent_url: agent.trim().trim_end_matches('/').to_owned(),
            kiosk_id: answer.kiosk_id,
            place_kind: answer.place.kind.clone(),
            place: answer.place.description.clone(),
            fingerprint: seen.clone(),
            pass_window_secs: answer.pass_window_secs,
            ca_file: asked
                .ca_file
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            agent_address: asked
                .agent_address
                .map(|address| address.to_string())
                .unwrap_or_default(),
        },
        unix_now(),
    )?;
    drop(store);
    println!(
        "enrolled as kiosk {} for {}",
        answer.kiosk_id, answer.place.description
    );
    if let (AgentTrust::Verified { .. }, Some(name)) = (&trust, &by_name) {
        println!("agent certificate verified for {name} (renewals need nothing here)");
    }
    if !seen.is_empty() {
        println!("agent certificate SHA-256: {seen} (pinned)");
        if asked.fingerprint.is_none() {
            println!("compare it with the fingerprint `kasip-agent kiosk add` printed; enrol again with --fingerprint if they differ");
        }
    }
    match sync_now(dir) {
        Ok(_) => Ok(()),
        Err(error) => {
            eprintln!("warning: pass keys not pulled yet: {error}");
            Ok(())
        }
    }
}

fn decode_images(images: &[PathBuf]) -> Result<(), KioskError> {
    let mut unreadable = 0;
    for path in images {
        let frame = std::fs::read(path)
            .map_err(|error| error.to_string())
            .and_then(|bytes| Luma::from_encoded(&bytes).map_err(|error| error.to_string()));
        match frame {
            Ok(frame) => {
                for text in decode(&frame) {
                    println!("{}\t{}", path.display(), escape_line(&text));
                }
            }
            Err(reason) => {
                unreadable += 1;
                eprintln!("error: {}: {reason}", path.display());
            }
        }
    }
    if unreadable > 0 {
        return Err(KioskError::Images(format!(
            "{unreadable} image(s) could not be read (PNG or JPEG expected)"
        )));
    }
    Ok(())
}

fn status(dir: &KioskDir, json: bool) -> Result<(), KioskError> {
    let store = KioskStore::open(dir)?;
    let Some(enrolment) = store.enrolment()? else {
        return Err(KioskError::NotEnrolled {
            dir: dir.root().to_owned(),
        });
    };
    let queue = store.queue_state()?;
    if json {
        let value = serde_json::json!({
            "kiosk_id": enrolment.kiosk_id,
            "place": enrolment.place,
            "agent": enrolment.agent_url,
            "fingerprint": enrolment.fingerprint,
            "queue": queue,
        });
        println!("{value:#}");
        return Ok(());
    }
    println!("kiosk {} for {}", enrolment.kiosk_id, enrolment.place);
    if enrolment.fingerprint.is_empty() {
        println!(
            "agent: {} (certificate verified for its name)",
            enrolment.agent_url
        );
    } else {
        println!(
            "agent: {} (certificate pinned, SHA-256 {})",
            enrolment.agent_url, enrolment.fingerprint
        );
    }
    println!(
        "pass keys: {} student(s){}",
        queue.pass_holders,
        queue
            .keys_fetched_at
            .map(|at| format!(", pulled at {at}"))
            .unwrap_or_else(|| ", never pulled".into())
    );
    println!(
        "scans: {} waiting{}, {} forwarded ({} refused by the agent, {} refused here and reported)",
        queue.waiting,
        queue
            .oldest_waiting_at
            .map(|at| format!(" (oldest from {at})"))
            .unwrap_or_default(),
        queue.forwarded,
        queue.refused_by_agent,
        queue.refusals_reported
    );
    Ok(())
}
