//! The host's architecture, checked: every module imports only downwards, and no two modules
//! import each other, directly or around a circle. Read from the source (`crate::` and `super::`
//! paths in `use` declarations and in code), so a new violation fails `cargo test`.
//!
//! Layers, top to bottom (a module may use its own layer's other modules, without cycles, and
//! any layer below):
//!   0. the composition root: `main.rs`, `serve.rs`
//!   1. the command line: `cli`, `cmd`
//!   2. the HTTP edge: `server`
//!   3. `workflows` (over the pipeline), `pipeline`
//!   4. `tasks`
//!   5. `tenants`, `input`, `models`, `plugins`, `visualize`
//!   6. `nn`
//!   7. `metrics` (recording; anyone may call it)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: &[(usize, &[&str])] = &[
    (0, &["", "serve"]),
    (1, &["cli", "cmd"]),
    (2, &["server"]),
    (3, &["workflows", "pipeline"]),
    (4, &["tasks"]),
    (5, &["tenants", "input", "models", "plugins", "visualize"]),
    (6, &["nn"]),
    (7, &["metrics"]),
];

type Module = Vec<String>;

struct SourceFile {
    module: Module,
    path: PathBuf,
    /// The code with comments, string and character literals removed, and inline test modules cut.
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn source_files() -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = src_dir();
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "main")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            SourceFile {
                module,
                code: strip(&text),
                path,
            }
        })
        .collect()
}

/// Code only: no comments, no string or char literals, nothing from `#[cfg(test)]` on.
fn strip(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !b
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('a', '\n', '\'') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path a `use` tree names (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }
    fn go(prefix: Vec<String>, tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if tree.is_empty() {
            return;
        }
        if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            for part in split_top(inner) {
                go(prefix.clone(), part, out);
            }
            return;
        }
        match tree.find("::") {
            Some(at) if !tree[..at].contains('{') => {
                let mut p = prefix;
                p.push(tree[..at].trim().to_string());
                go(p, &tree[at + 2..], out);
            }
            _ => {
                let name = tree.split(" as ").next().unwrap().trim();
                let mut p = prefix;
                if name != "self" && name != "*" {
                    p.push(name.to_string());
                }
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    go(Vec::new(), tree, &mut out);
    out
}

/// The paths starting with `crate` or `super` that a file's code names.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // `use` declarations, with their groups.
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let after = &rest[at + 4..];
        rest = after;
        if before.is_some_and(is_ident) {
            continue;
        }
        if let Some(end) = after.find(';') {
            paths.extend(expand_use(&after[..end]));
        }
    }
    // Paths in code.
    let chars: Vec<char> = code.chars().collect();
    let text: String = chars.iter().collect();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = text[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            if text[..at].chars().last().is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let tail: String = text[at..].chars().take_while(|c| is_ident(*c) || *c == ':').collect();
            paths.push(tail.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
        }
    }
    paths
}

/// The module a path names: the longest prefix of it that is a module of the crate.
fn resolve(from: &SourceFile, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let mut absolute: Module = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("super") => {
            let mut m = from.module.clone();
            m.pop();
            m
        }
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().map(String::as_str) == Some("super") {
        absolute.pop();
        rest = &rest[1..];
    }
    let mut best = absolute.clone();
    for seg in rest {
        absolute.push(seg.clone());
        if modules.contains(&absolute) {
            best = absolute.clone();
        } else {
            break;
        }
    }
    Some(best)
}

fn layer_of(module: &Module) -> usize {
    let top = module.first().map_or("", String::as_str);
    LAYERS
        .iter()
        .find(|(_, names)| names.contains(&top))
        .map(|(layer, _)| *layer)
        .unwrap_or_else(|| panic!("top-level module `{top}` has no layer in tests/layers.rs"))
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Every edge file → module it names (within the crate, not to itself).
fn edges() -> BTreeMap<Module, BTreeSet<Module>> {
    let files = source_files();
    let modules: BTreeSet<Module> = files.iter().map(|f| f.module.clone()).collect();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for f in &files {
        let targets = graph.entry(f.module.clone()).or_default();
        for path in named_paths(&f.code) {
            if let Some(target) = resolve(f, &path, &modules) {
                // A module naming its own parent's path prefix (or itself) is not an import.
                if target != f.module && !f.module.starts_with(&target) {
                    targets.insert(target);
                }
            }
        }
        assert!(f.path.exists());
    }
    graph
}

fn find_cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|m| m == next).unwrap();
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
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn only_the_http_edge_and_the_composition_root_import_the_server() {
    let bad: Vec<String> = edges()
        .into_iter()
        .filter(|(from, _)| !matches!(from.first().map(String::as_str), Some("server") | Some("serve") | None))
        .flat_map(|(from, to)| {
            to.into_iter()
                .filter(|t| t.first().map(String::as_str) == Some("server"))
                .map(move |t| format!("{} uses {}", show(&from), show(&t)))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "only server/, main.rs and serve.rs may use crate::server:\n{}",
        bad.join("\n")
    );
}

#[test]
fn layers_import_only_downwards() {
    let bad: Vec<String> = edges()
        .into_iter()
        .flat_map(|(from, to)| {
            let layer = layer_of(&from);
            to.into_iter()
                .filter(move |t| !t.is_empty() && layer_of(t) < layer)
                .map(move |t| {
                    format!(
                        "{} (layer {}) uses {} (layer {})",
                        show(&from),
                        layer_of(&from),
                        show(&t),
                        layer_of(&t)
                    )
                })
        })
        .collect();
    assert!(bad.is_empty(), "imports that run back up:\n{}", bad.join("\n"));
}

#[test]
fn no_two_modules_import_each_other() {
    // Between files, and between the top-level modules.
    let files = edges();
    if let Some(cycle) = find_cycle(&files) {
        panic!(
            "modules that import each other: {}",
            cycle.iter().map(show).collect::<Vec<_>>().join(" → ")
        );
    }
    let mut tops: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, to) in files {
        let top = from.first().cloned().into_iter().collect::<Module>();
        let targets = tops.entry(top.clone()).or_default();
        for t in to {
            let t_top: Module = t.first().cloned().into_iter().collect();
            if t_top != top && !t_top.is_empty() {
                targets.insert(t_top);
            }
        }
    }
    if let Some(cycle) = find_cycle(&tops) {
        panic!(
            "top-level modules that import each other: {}",
            cycle.iter().map(show).collect::<Vec<_>>().join(" → ")
        );
    }
}

#[test]
fn the_checker_reads_paths_as_rust_does() {
    assert_eq!(
        expand_use("crate::models::{self, fetch::{Fetcher, ROBOFLOW as RF}, ModelId}"),
        vec![
            vec!["crate", "models"],
            vec!["crate", "models", "fetch", "Fetcher"],
            vec!["crate", "models", "fetch", "ROBOFLOW"],
            vec!["crate", "models", "ModelId"],
        ]
    );
    let code = strip("let x = \"crate::server\"; // crate::server\nuse super::a::b; crate::metrics::f('c');");
    assert!(!code.contains("server"), "{code}");
    assert_eq!(
        named_paths(&code),
        vec![
            vec!["super", "a", "b"],
            vec!["crate", "metrics", "f"],
            vec!["super", "a", "b"]
        ]
    );
}
