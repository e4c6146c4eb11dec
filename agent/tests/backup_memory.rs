//! Regression test for what the 30-minute soak found: each nightly backup grew the
//! agent by ~40 MiB for good. `VACUUM INTO` ran on a store with the agent's 32 MB page
//! cache, filled it while copying, and the allocator kept the freed memory. This file
//! holds one test so that its process's peak resident memory (VmHWM, reset through
//! `/proc/self/clear_refs`) is the backup's own.

use std::fs;

use kasip_agent::backup::nightly;
use kasip_agent::config::DataDir;
use kasip_agent::store::Store;
use kasip_tests::memory_kib;

/// What the copy may add to the process's peak: the small copy cache (2 MiB) and
/// SQLite's buffers, with room for the allocator; the old 32 MB cache went ~30 MiB past it.
const BACKUP_PEAK_BOUND_KIB: u64 = 12 * 1024;

#[test]
fn a_nightly_copy_of_a_large_database_keeps_a_small_page_cache() {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = DataDir::new(temp.path().join("data"));
    fs::create_dir_all(data_dir.root()).expect("data dir");
    let path = data_dir.database_path();
    Store::create(&path)
        .expect("database")
        .close()
        .expect("close");
    // 40 MB more than the cache, written through a connection with a tiny cache so that
    // filling the file leaves little memory behind in this process.
    {
        let connection = rusqlite::Connection::open(&path).expect("open");
        connection
            .execute_batch(
                "PRAGMA cache_size = -256;
                 CREATE TABLE filler (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
                 INSERT INTO filler (body) SELECT randomblob(1000) FROM n;
                 CREATE INDEX filler_prefix ON filler (substr(body, 1, 16));
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .expect("filler");
    }
    assert!(fs::metadata(&path).expect("size").len() > 40_000_000);
    // Opened as the service opens the store for its nightly copy.
    let store = Store::open(&path).expect("store");
    let day = kasip_core::Date::new(2026, 12, 1).expect("date");

    fs::write("/proc/self/clear_refs", "5").expect("reset the peak (Linux clear_refs)");
    let resident_before = memory_kib("self", "VmRSS");
    let copy = nightly(&data_dir, &store, day, 7)
        .expect("backup")
        .expect("a new copy");
    let peak = memory_kib("self", "VmHWM");

    assert!(fs::metadata(&copy).expect("copy").len() > 40_000_000);
    let added = peak.saturating_sub(resident_before);
    eprintln!("nightly copy of a 40 MB database: +{added} KiB resident at its peak");
    assert!(
        added <= BACKUP_PEAK_BOUND_KIB,
        "the copy took {added} KiB over the {resident_before} KiB resident before it"
    );
}
