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

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_code_is_allowed_in_one_place_only() {
    // The workspace denies `unsafe_code`; the one exception is the allocator's `mallopt`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("unsafe_code = \"deny\""),
        "the workspace lint table denies unsafe_code"
    );
    let mut files = Vec::new();
    for dir in ["src", "crates", "tests", "examples", "benches"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let needle = ["allow(", "unsafe_code)"].concat();
    let mut allowing: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(&needle))
        .map(|f| f.strip_prefix(root).unwrap().display().to_string())
        .collect();
    allowing.sort();
    assert_eq!(allowing, ["src/app/allocator.rs"]);
}
