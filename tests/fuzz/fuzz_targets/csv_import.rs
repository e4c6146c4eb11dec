//! Each LMS import (students, teachers, timetable, grades) end to end into a real agent
//! database: the first byte picks the kind, the rest is the file. Bad rows must be
//! refused with an error and roll back, never panic.
#![no_main]

use std::sync::{Mutex, OnceLock};

use kasip_agent::import::{import, ImportKind, ImportOptions};
use kasip_agent::store::Store;
use libfuzzer_sys::fuzz_target;

struct Database {
    _dir: tempfile::TempDir,
    store: Store,
}

fn database() -> &'static Mutex<Database> {
    static DATABASE: OnceLock<Mutex<Database>> = OnceLock::new();
    DATABASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::create(&dir.path().join("agent.db")).expect("database");
        // Speed over durability: this database is thrown away.
        store
            .connection()
            .execute_batch("PRAGMA synchronous = OFF;")
            .expect("pragma");
        Mutex::new(Database { _dir: dir, store })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let kind = match selector % 4 {
        0 => ImportKind::Students,
        1 => ImportKind::Teachers,
        2 => ImportKind::Timetable,
        _ => ImportKind::Grades,
    };
    let options = ImportOptions {
        skip_invalid: selector & 0x80 != 0,
        today: kasip_core::Date::new(2026, 11, 25).expect("a date"),
        source: "fuzz".into(),
        now: 1_795_000_000,
    };
    let mut database = database()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _ = import(&mut database.store, kind, file, &options);
});
