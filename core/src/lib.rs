//! Domain types of the KasipTech college agent that parse at the boundary.
//!
//! **Architecture invariant**: this crate does no I/O. Every value from outside (CSV, CLI,
//! HTTP, QR) becomes one of these types once, at the edge, and travels typed from there.

pub mod attendance;
pub mod batch;
pub mod canonical_json;
pub mod chain;
pub mod coverage;
pub mod date;
pub mod evidence;
pub mod iin;
pub mod pass;
pub mod passkey;
pub mod roster;
pub mod text;
pub mod token;
pub mod wire;

pub use attendance::{MarkMethod, MarkStatus};
pub use batch::{BatchEnvelope, BatchError, BatchKind};
pub use canonical_json::{to_canonical_json, CanonicalError};
pub use coverage::{coverage_of, per_mille_text, PerMille, ScopeCoverage, StudentMonth};
pub use date::{Date, DateError, Month, TimeOfDay};
pub use iin::{Bin, IdError, Iin, Sex};
pub use pass::{PassError, PassPublicKey, StudentPass};
pub use roster::{
    parse_yes_no, CollegeTimezone, Discipline, FieldError, GroupCode, LessonMode, PersonName,
    RoomName, SiteName, StudentStatus,
};
pub use text::{Lang, Sentence, Text};
pub use token::{
    constant_time_eq, normalise_typed_code, step_at, typed_code, ClassroomToken, LessonKey,
    TokenError,
};
