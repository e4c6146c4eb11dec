//! The memory allocator's settings for a process that runs for months.
//!
//! glibc's malloc gives every thread that allocates an arena of its own (up to eight per
//! core) and keeps what is freed inside each. Under the soak's steady load the agent's
//! resident memory grew ~1.3 MiB a minute with glibc's defaults while its live heap stayed
//! flat (a heap profile: ~28 MiB, 20 of them the password checker's block): the growth was
//! freed memory spread over ten arenas. Two arenas shared by all threads halve the growth
//! (they do not stop it; TESTING.md, Soak). The agent sets this itself, so that
//! `cargo run`, the tests and the systemd unit all run the allocator the soak measured.

/// Arenas shared by all of the agent's threads.
pub const ARENAS: i32 = 2;

/// Limits glibc's malloc to [`ARENAS`] arenas, unless the operator chose otherwise with
/// `MALLOC_ARENA_MAX` (glibc reads that itself at start). Call it first thing in `main`,
/// before any thread exists: a thread that has allocated keeps the arena it had.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: `mallopt` only sets a malloc parameter; it takes no pointer and is called
    // while the process has one thread. A refusal (return value 0) leaves glibc's default,
    // which is slower to give memory back but correct, so it is not an error.
    let _accepted = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
}

/// Other allocators (musl, other systems) have no per-thread arenas to limit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}
