//! The memory allocators' settings for a process that runs for months: glibc's malloc
//! and SQLite's own use of it.
//!
//! glibc's malloc gives every thread that allocates an arena of its own (up to eight per
//! core) and keeps what is freed inside each. Under the soak's steady load the agent's
//! resident memory grew ~1.3 MiB a minute with glibc's defaults while its live heap stayed
//! flat (a heap profile: ~28 MiB, 20 of them the password checker's block): the growth was
//! freed memory spread over ten arenas. Two arenas shared by all threads halved it; the
//! rest was SQLite's page cache going through malloc at every check-in, which
//! `configure_sqlite_memory` takes out of the heap (TESTING.md, Soak). The agent sets
//! both itself ([`configure`]), so that `cargo run`, the tests and the systemd unit all
//! run the allocator the soak measured.

/// Arenas shared by all of the agent's threads.
pub const ARENAS: i32 = 2;

/// Sets up malloc and SQLite for a long life. Call it first thing in `main`, before any
/// thread exists or any database is opened: a thread that has allocated keeps the arena
/// it had, and SQLite accepts its configuration only before it initialises.
pub fn configure() {
    limit_arenas();
    configure_sqlite_memory();
}

/// Limits glibc's malloc to [`ARENAS`] arenas, unless the operator chose otherwise with
/// `MALLOC_ARENA_MAX` (glibc reads that itself at start).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_arenas() {
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
fn limit_arenas() {}

/// Page-cache slots SQLite takes from one block reserved at start, shared by all of the
/// agent's connections; a page beyond them comes from malloc as before.
pub const SQLITE_PAGE_SLOTS: usize = 2048;

/// SQLite's default page size, which the agent's database keeps. A database with larger
/// pages (restored from elsewhere) still works: its pages come from malloc.
const SQLITE_PAGE_BYTES: usize = 4096;

/// Keeps SQLite's per-transaction memory out of malloc's heap. The agent's three
/// connections (the mark writer, the readers, sync) each empty their page cache whenever
/// another one commits, so every check-in freed and allocated again an 87 KB block and
/// dozens of 4 KB pages per connection, and a 64 KiB statement-journal chunk. Interleaved
/// with the small objects the server keeps, that churn grew the heap by about half a MiB
/// a minute for as long as the soak ran, though little of it was in use (TESTING.md,
/// Soak). Now pages come from one block reserved here and go back to a free list SQLite
/// keeps, and statement journals are kept in 1 KiB chunks, which malloc recycles.
/// A refusal (SQLite already initialised) leaves SQLite on malloc, which is correct,
/// only less frugal.
#[allow(unsafe_code)]
fn configure_sqlite_memory() {
    use rusqlite::ffi;
    use std::ffi::{c_int, c_void};
    // SAFETY: SQLITE_CONFIG_STMTJRNL_SPILL takes one int; negative means "in memory, in
    // small chunks, never spilled to a file" (the journal of one statement: a few pages).
    let _accepted = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_STMTJRNL_SPILL, -1 as c_int) };
    let mut header: c_int = 0;
    // SAFETY: SQLITE_CONFIG_PCACHE_HDRSZ writes one int through the pointer, which is
    // valid for the call.
    let asked = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE_HDRSZ, &raw mut header) };
    if asked != ffi::SQLITE_OK {
        return;
    }
    let slot_bytes = (SQLITE_PAGE_BYTES + header as usize).next_multiple_of(8);
    // Zeroed, so the kernel maps the block lazily: a slot costs memory once SQLite uses it.
    let block: &'static mut [u64] =
        Box::leak(vec![0_u64; slot_bytes * SQLITE_PAGE_SLOTS / 8].into_boxed_slice());
    // SAFETY: the block is 8-byte aligned, holds SQLITE_PAGE_SLOTS slots of slot_bytes and
    // lives for the rest of the process, as SQLite requires.
    let _accepted = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_PAGECACHE,
            block.as_mut_ptr().cast::<c_void>(),
            slot_bytes as c_int,
            SQLITE_PAGE_SLOTS as c_int,
        )
    };
}

/// What SQLite holds, as `/metrics` shows it.
#[derive(Debug, Clone, Copy)]
pub struct SqliteMemory {
    /// Slots of the reserved block holding a page now (0 if the block was refused).
    pub page_slots_used: i64,
    /// Page-cache bytes SQLite took from malloc because no slot fit or was free.
    pub page_overflow_bytes: i64,
    /// Everything SQLite has allocated from malloc, page overflow included.
    pub malloc_bytes: i64,
}

/// SQLite's memory counters now (`sqlite3_status64`).
#[allow(unsafe_code)]
pub fn sqlite_memory() -> SqliteMemory {
    use rusqlite::ffi;
    let status = |counter| {
        let (mut current, mut highwater) = (0_i64, 0_i64);
        // SAFETY: sqlite3_status64 writes two integers through pointers valid for the
        // call; an unknown counter is refused without writing.
        unsafe { ffi::sqlite3_status64(counter, &raw mut current, &raw mut highwater, 0) };
        current
    };
    SqliteMemory {
        page_slots_used: status(ffi::SQLITE_STATUS_PAGECACHE_USED),
        page_overflow_bytes: status(ffi::SQLITE_STATUS_PAGECACHE_OVERFLOW),
        malloc_bytes: status(ffi::SQLITE_STATUS_MEMORY_USED),
    }
}
