//! The layering of `src/` stays a tree: no import circle between the top-level modules of the
//! crate, nor between sibling modules of one folder. Reads every `use crate::...;` statement
//! of `src/` (multi-line groups included) and fails with the circle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `use crate::...;` statements of `text`, each without `use ` and `;`.
fn use_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(stmt) = current.as_mut() {
            stmt.push_str(line);
        } else if !line.starts_with("//") {
            let rest = line
                .strip_prefix("pub ")
                .or_else(|| line.strip_prefix("pub(crate) "))
                .unwrap_or(line);
            if let Some(path) = rest.strip_prefix("use crate::") {
                current = Some(path.to_string());
            }
        }
        if let Some(stmt) = current.take() {
            match stmt.find(';') {
                Some(end) => out.push(stmt[..end].to_string()),
                None => current = Some(stmt),
            }
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `[a, b]`, `[a, c, d]`, `[a, c, e]`.
fn expand(path: &str) -> Vec<Vec<String>> {
    let path = path.trim();
    let Some(open) = path.find('{') else {
        let path = path.split(" as ").next().unwrap_or(path);
        return vec![path
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()];
    };
    let prefix: Vec<String> = path[..open]
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let inner = &path[open + 1..path.rfind('}').unwrap()];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    let mut out = Vec::new();
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        for tail in expand(item) {
            let mut full = prefix.clone();
            full.extend(tail.into_iter().filter(|s| s != "self"));
            out.push(full);
        }
    }
    out
}

/// A cycle in `graph`, if any, as the list of its nodes.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_import_cycles_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Binaries are crates of their own; they see the library as `tracerd::`.
    files.retain(|f| !f.starts_with(src.join("bin")) && *f != src.join("main.rs"));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    // Edges per folder (the module path of the folder; empty for `src/` itself).
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for stmt in use_statements(&text) {
            for to in expand(&stmt) {
                let k = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
                if k >= from.len() || k >= to.len() {
                    continue; // a module using its own items or its parent's
                }
                let prefix = from[..k].to_vec();
                let mut sibling = prefix.clone();
                sibling.push(to[k].clone());
                if !modules.contains(&sibling) {
                    continue; // an item of the parent module, not a sibling module
                }
                graphs
                    .entry(prefix)
                    .or_default()
                    .entry(from[k].clone())
                    .or_default()
                    .insert(to[k].clone());
            }
        }
    }
    assert!(
        graphs.get(&Vec::new()).is_some_and(|g| g.len() > 3),
        "the scan found no imports between top-level modules: {graphs:?}"
    );
    let mut cycles = Vec::new();
    for (folder, graph) in &graphs {
        if let Some(cycle) = find_cycle(graph) {
            let folder = if folder.is_empty() {
                "src".to_string()
            } else {
                format!("src/{}", folder.join("/"))
            };
            cycles.push(format!("in {folder}: {}", cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn use_groups_expand() {
    assert_eq!(
        expand("logs::{dir, format::{self, Line}, LogSettings}"),
        vec![
            vec!["logs", "dir"],
            vec!["logs", "format"],
            vec!["logs", "format", "Line"],
            vec!["logs", "LogSettings"],
        ]
    );
    assert_eq!(expand("a::b as c"), vec![vec!["a", "b"]]);
}
