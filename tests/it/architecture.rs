//! docs/ARCHITECTURE.md's code map covers the tree: every entry of `src/` and every crate
//! under `crates/` has a row, and every path a row names exists (issue 10: "the code map
//! matches the tree").

use std::collections::BTreeSet;
use std::path::Path;

/// The backticked paths in the first column of the code map's table.
fn row_paths(doc: &str) -> Vec<String> {
    let map = doc
        .split("## Code map")
        .nth(1)
        .expect("docs/ARCHITECTURE.md has a `## Code map` section");
    let map = map.split("\n## ").next().unwrap();
    let mut paths = Vec::new();
    for line in map.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap();
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 {
                paths.push(part.to_string());
            }
        }
    }
    paths
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                format!("{name}/")
            } else {
                name
            }
        })
        .collect()
}

#[test]
fn the_code_map_covers_src_and_every_crate_and_names_only_existing_paths() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let rows: BTreeSet<String> = row_paths(&doc).into_iter().collect();
    assert!(rows.len() > 15, "code map rows not found: {rows:?}");

    let mut missing = Vec::new();
    for entry in entries(&root.join("src")) {
        let path = format!("src/{entry}");
        if !rows.contains(&path) {
            missing.push(path);
        }
    }
    for entry in entries(&root.join("crates")) {
        let path = format!("crates/{entry}");
        if !rows.contains(&path) {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md's code map has no row for {missing:?}"
    );

    let stale: Vec<&String> = rows
        .iter()
        .filter(|p| !root.join(p.trim_end_matches('/')).exists())
        .collect();
    assert!(
        stale.is_empty(),
        "docs/ARCHITECTURE.md's code map names paths that do not exist: {stale:?}"
    );
}
