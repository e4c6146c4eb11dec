//! Deciding a pass on the kiosk, offline (design §5.3): signature under a key the agent
//! registered for that student, |now − t| ≤ window, student active, not seen before.

use kasip_core::{PassError, PassPublicKey, StudentPass};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::KioskError;
use crate::store::{AcceptedScan, KioskStore};

/// Why a pass was refused at the kiosk. Each has a message in the catalog (`text`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotAPass,
    UnknownStudent,
    Forged,
    Stale,
    FromTheFuture,
    Replayed,
    Inactive,
}

impl Refusal {
    /// Every refusal, for the screen's message table.
    pub const ALL: [Refusal; 7] = [
        Self::NotAPass,
        Self::UnknownStudent,
        Self::Forged,
        Self::Stale,
        Self::FromTheFuture,
        Self::Replayed,
        Self::Inactive,
    ];

    /// What the screen and the stdout line say, from the catalog.
    pub fn text(&self) -> kasip_core::Text {
        use kasip_core::Text;
        match self {
            Self::NotAPass => Text::KioskNotAPass,
            Self::UnknownStudent => Text::KioskUnknownStudent,
            Self::Forged => Text::KioskForged,
            Self::Stale => Text::KioskStale,
            Self::FromTheFuture => Text::KioskFromTheFuture,
            Self::Replayed => Text::KioskReplayed,
            Self::Inactive => Text::KioskInactive,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAPass => "not_a_pass",
            Self::UnknownStudent => "unknown_student",
            Self::Forged => "forged",
            Self::Stale => "stale",
            Self::FromTheFuture => "from_the_future",
            Self::Replayed => "replayed",
            Self::Inactive => "inactive",
        }
    }
}

/// What the kiosk shows for one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New: recorded and queued for the agent.
    Accepted {
        iin: String,
        name: String,
        scan_id: String,
    },
    /// The pass this kiosk just accepted, still in front of the camera: green again,
    /// nothing new recorded.
    Repeat { iin: String, name: String },
    Refused {
        refusal: Refusal,
        /// The student the pass names, when it parsed.
        iin: Option<String>,
    },
}

pub struct Verifier {
    /// Largest |now − t| accepted (the agent's `kiosk.pass_window_secs`).
    pub window_secs: i64,
    /// A pass accepted here less than this long ago is the same presentation, not a
    /// replay: the camera sees it in many frames.
    pub repeat_secs: i64,
}

impl Verifier {
    pub fn check(
        &self,
        store: &mut KioskStore,
        text: &str,
        now: i64,
    ) -> Result<Verdict, KioskError> {
        let text = text.trim();
        let Ok(pass) = StudentPass::parse(text) else {
            // Any QR code at all (a URL, a ticket): nothing to report.
            return Ok(Verdict::Refused {
                refusal: Refusal::NotAPass,
                iin: None,
            });
        };
        let iin = pass.student.as_string();
        let name = match self.decide(store, &pass, now)? {
            Ok(name) => name,
            Err(refusal) => {
                // Reported to the agent, which records it as a security event.
                store.report_refusal(&new_scan_id()?, &iin, text, now, refusal.code())?;
                return Ok(Verdict::Refused {
                    refusal,
                    iin: Some(iin),
                });
            }
        };
        if let Some(seen_at) = store.seen_at(&iin, pass.signed_at)? {
            if now - seen_at < self.repeat_secs {
                return Ok(Verdict::Repeat { iin, name });
            }
            store.report_refusal(&new_scan_id()?, &iin, text, now, Refusal::Replayed.code())?;
            return Ok(Verdict::Refused {
                refusal: Refusal::Replayed,
                iin: Some(iin),
            });
        }
        let scan_id = new_scan_id()?;
        store.accept(
            &AcceptedScan {
                scan_id: &scan_id,
                iin: &iin,
                name: &name,
                pass: text,
                signed_at: pass.signed_at,
                scanned_at: now,
            },
            now - 2 * self.window_secs,
        )?;
        Ok(Verdict::Accepted { iin, name, scan_id })
    }

    /// The student's name when the pass is theirs, fresh and they are active.
    fn decide(
        &self,
        store: &KioskStore,
        pass: &StudentPass,
        now: i64,
    ) -> Result<Result<String, Refusal>, KioskError> {
        let Some(holder) = store.holder(&pass.student.as_string())? else {
            return Ok(Err(Refusal::UnknownStudent));
        };
        let keys: Vec<PassPublicKey> = holder
            .keys
            .iter()
            .filter_map(|key| PassPublicKey::from_base64url(key).ok())
            .collect();
        if !pass.verify_signature(&keys) {
            return Ok(Err(Refusal::Forged));
        }
        match pass.check_fresh(now, self.window_secs) {
            Ok(()) => {}
            Err(PassError::FromTheFuture { .. }) => return Ok(Err(Refusal::FromTheFuture)),
            Err(_) => return Ok(Err(Refusal::Stale)),
        }
        if !holder.active {
            return Ok(Err(Refusal::Inactive));
        }
        Ok(Ok(holder.name))
    }
}

/// 128 random bits, hex: the scan's id for idempotent forwarding.
fn new_scan_id() -> Result<String, KioskError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KioskError::Random)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
