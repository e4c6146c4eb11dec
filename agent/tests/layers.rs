//! The architecture's absences, checked (ARCHITECTURE.md, "Layers" and "Invariants"):
//! - the agent's modules are declared in layer order in `lib.rs`, and none uses a module
//!   declared below it (so there is no cycle and no upward import);
//! - the edge (config, the service's tasks, web, CLI) holds no SQL: it calls domain
//!   functions; the web edge does not even name `rusqlite`;
//! - only `marks/record.rs` appends to the attendance chain;
//! - only the CLI knows clap;
//! - `kasip-sync` (the client) depends on no database and not on the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn agent_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = fs::read_to_string(&path).expect("read source");
                found.push((path, text));
            }
        }
    }
    found.sort();
    found
}

/// The top-level module a file belongs to: `web/admin.rs` → `web`, `clock.rs` → `clock`.
fn module_of(path: &Path) -> String {
    let relative = path.strip_prefix(agent_src()).expect("under src");
    let first = relative
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Code without comments: a doc line may name any module.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
}

/// `pub mod NAME;` lines of lib.rs, in order.
fn layer_order() -> Vec<String> {
    let lib = fs::read_to_string(agent_src().join("lib.rs")).expect("lib.rs");
    lib.lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_owned())
        .collect()
}

#[test]
fn no_module_uses_one_declared_below_it() {
    let order = layer_order();
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(index, name)| (name.as_str(), index))
        .collect();
    let mut upward = Vec::new();
    for (path, text) in sources(&agent_src()) {
        let module = module_of(&path);
        let Some(&own) = rank.get(module.as_str()) else {
            assert!(
                module == "main" || module == "lib",
                "{} is not declared in lib.rs's layer order",
                path.display()
            );
            continue;
        };
        for (number, line) in code_lines(&text) {
            for (position, _) in line.match_indices("crate::") {
                let used: String = line[position + "crate::".len()..]
                    .chars()
                    .take_while(|character| character.is_alphanumeric() || *character == '_')
                    .collect();
                if let Some(&theirs) = rank.get(used.as_str()) {
                    if theirs > own {
                        upward.push(format!(
                            "{}:{number}: {module} uses {used}, which lib.rs declares below it",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn the_layer_rule_itself_catches_an_upward_import() {
    // The check above reads `crate::NAME` uses; make sure it would see one.
    let order = layer_order();
    let (low, high) = (
        order.first().expect("a module"),
        order.last().expect("a module"),
    );
    assert!(order.len() > 20, "lib.rs declares {} modules", order.len());
    assert_ne!(low, high);
    let line = format!("use crate::{high}::Something;");
    assert!(code_lines(&line).any(|(_, code)| code.contains(&format!("crate::{high}"))));
    assert!(code_lines("// use crate::web").next().is_none());
}

/// The edge modules (lib.rs's third group): configuration, tasks, web, CLI.
const EDGE: &[&str] = &[
    "config",
    "sync",
    "certificate",
    "doctor",
    "metrics",
    "web",
    "cli",
];

#[test]
fn the_edge_holds_no_sql() {
    let sql = [
        "SELECT ",
        "INSERT ",
        "UPDATE ",
        "DELETE FROM",
        ".execute(",
        ".query_row(",
        ".prepare(",
        ".prepare_cached(",
    ];
    let order = layer_order();
    let first_edge = order
        .iter()
        .position(|name| name == EDGE[0])
        .expect("config is declared");
    assert_eq!(&order[first_edge..], EDGE, "lib.rs's edge modules");
    let mut found = Vec::new();
    for (path, text) in sources(&agent_src()) {
        if !EDGE.contains(&module_of(&path).as_str()) {
            continue;
        }
        // The web edge does not even hold a connection: it calls `with_db` closures
        // over domain functions. The other edge modules may pass one along.
        let web = module_of(&path) == "web";
        for (number, line) in code_lines(&text) {
            if sql.iter().any(|word| line.contains(word)) || (web && line.contains("rusqlite")) {
                found.push(format!("{}:{number}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "SQL in the edge:\n{}", found.join("\n"));
}

#[test]
fn only_record_mark_appends_to_the_chain() {
    let allowed = [
        agent_src().join("attendance.rs"),
        agent_src().join("marks").join("record.rs"),
    ];
    let mut found = Vec::new();
    for (path, text) in sources(&agent_src()) {
        if allowed.contains(&path) {
            continue;
        }
        for (number, line) in code_lines(&text) {
            if line.contains("chain.append(")
                || line.contains("ChainWriter::append")
                || line.contains("NewMark {")
            {
                found.push(format!("{}:{number}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the chain is appended outside marks/record.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_cli_knows_clap() {
    let mut found = Vec::new();
    for (path, text) in sources(&agent_src()) {
        let module = module_of(&path);
        if module == "cli" || module == "main" {
            continue;
        }
        for (number, line) in code_lines(&text) {
            if line.contains("clap::") || line.contains("clap;") {
                found.push(format!("{}:{number}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "clap outside the CLI:\n{}",
        found.join("\n")
    );
}

/// Packages of Cargo.lock with their dependencies' names (dev-dependencies included, so
/// the closure below is an upper bound of what a package compiles).
fn lock_graph() -> BTreeMap<String, Vec<String>> {
    let lock_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let lock = fs::read_to_string(lock_path).expect("Cargo.lock");
    let mut graph = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let name = package
            .lines()
            .find_map(|line| line.strip_prefix("name = "))
            .expect("name")
            .trim_matches('"')
            .to_owned();
        let dependencies = match package.split_once("dependencies = [") {
            Some((_, list)) => list
                .split(']')
                .next()
                .unwrap_or_default()
                .lines()
                .map(|line| line.trim().trim_end_matches(',').trim_matches('"'))
                .filter(|line| !line.is_empty())
                // "name version" when two versions of a crate are locked
                .map(|entry| entry.split(' ').next().unwrap_or(entry).to_owned())
                .collect(),
            None => Vec::new(),
        };
        graph
            .entry(name)
            .or_insert_with(Vec::new)
            .extend(dependencies);
    }
    graph
}

fn closure(graph: &BTreeMap<String, Vec<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(name) = pending.pop() {
        if seen.insert(name.clone()) {
            pending.extend(graph.get(&name).cloned().unwrap_or_default());
        }
    }
    seen
}

#[test]
fn the_sync_client_compiles_no_database_and_no_registry() {
    let graph = lock_graph();
    let sync = closure(&graph, "kasip-sync");
    for absent in ["rusqlite", "kasip-registry", "axum"] {
        assert!(
            !sync.contains(absent),
            "kasip-sync depends on {absent}; the registry's server and store belong in kasip-registry"
        );
    }
    // The check can fail: the registry's own closure has the database.
    assert!(closure(&graph, "kasip-registry").contains("rusqlite"));
}
