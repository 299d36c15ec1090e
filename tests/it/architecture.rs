//! The layer table of ARCHITECTURE.md, enforced: every `crate::` path in
//! `src/` names a module in the same layer or one below, and no two modules
//! depend on each other in a circle (neither top-level modules nor the
//! files inside one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top to bottom; a module may use its own layer and the ones after it.
const LAYERS: &[(&str, &[&str])] = &[
    ("entry", &["main", "cli", "telemetry", "fuzzing"]),
    ("wiring", &["app"]),
    ("http", &["http"]),
    ("services", &["runner", "calls", "webhooks"]),
    (
        "domain",
        &[
            "catalog",
            "automation",
            "trigger",
            "calling",
            "outbound",
            "auth",
            "limits",
            "idempotency",
            "dedupe",
            "input",
            "schema",
            "template",
            "job",
        ],
    ),
    ("store", &["store"]),
    ("leaves", &["config", "crypto", "ids", "clock"]),
];

/// A source file's module path (`http/middleware/guard.rs` → http,
/// middleware, guard); `None` for the crate root.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    match stem {
        "lib" if parts.is_empty() => None,
        "mod" => Some(parts),
        _ => {
            parts.push(stem.to_owned());
            Some(parts)
        }
    }
}

/// The source without comments (doc examples and prose name modules too).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Identifiers that follow `prefix` (`crate::x`, and each first name in
/// `crate::{x, y::z}`).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn sources() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<Vec<String>, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Some(m) = module_path(path.strip_prefix(root).unwrap())
            {
                out.insert(m, code_of(&std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// A cycle in `graph`, if there is one (as the path around it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn imports_run_down_the_layer_table_and_no_module_depends_on_itself_in_a_circle() {
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i)))
        .collect();
    let sources = sources();
    let tops: BTreeSet<&str> = sources.keys().map(|m| m[0].as_str()).collect();
    for top in &tops {
        assert!(
            layer_of.contains_key(top),
            "src/{top} is in no layer of ARCHITECTURE.md (add it to the table and to this test)"
        );
    }
    let mut upward = Vec::new();
    let mut top_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Per parent module: its children's dependencies on each other.
    let mut sibling_graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> =
        BTreeMap::new();
    let children: BTreeSet<&Vec<String>> = sources.keys().collect();
    for (module, code) in &sources {
        let top = module[0].as_str();
        for used in names_after(code, "crate::") {
            let Some(&to) = layer_of.get(used.as_str()) else {
                continue; // an item of the crate root
            };
            if used != top {
                if to < layer_of[top] {
                    upward.push(format!(
                        "{} uses crate::{used} ({} is above {})",
                        module.join("::"),
                        LAYERS[to].0,
                        LAYERS[layer_of[top]].0
                    ));
                }
                top_graph
                    .entry(top.to_owned())
                    .or_default()
                    .insert(used.clone());
            }
        }
        // Siblings named through the crate path (`crate::http::error` from
        // `http::triggers`) or through `super::`.
        if module.len() >= 2 {
            let parent = &module[..module.len() - 1];
            let mine = &module[module.len() - 1];
            let prefix = format!("crate::{}::", parent.join("::"));
            let mut named = names_after(code, &prefix);
            named.extend(names_after(code, "super::"));
            for sib in named {
                let mut path = parent.to_vec();
                path.push(sib.clone());
                if sib != *mine && children.contains(&path) {
                    sibling_graphs
                        .entry(parent.to_vec())
                        .or_default()
                        .entry(mine.clone())
                        .or_default()
                        .insert(sib);
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports up the layers:\n{}",
        upward.join("\n")
    );
    if let Some(c) = find_cycle(&top_graph) {
        panic!(
            "modules depend on each other in a circle: {}",
            c.join(" -> ")
        );
    }
    for (parent, graph) in &sibling_graphs {
        if let Some(c) = find_cycle(graph) {
            panic!(
                "files of {} depend on each other in a circle: {}",
                parent.join("::"),
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn the_checker_sees_grouped_imports_and_ignores_comments() {
    let code = code_of(
        "use crate::{store::Store, ids::{JobId, CallId}};\n// crate::http is only a comment\nlet x = crate::clock::rfc3339(1);",
    );
    let names = names_after(&code, "crate::");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["clock", "ids", "store"]
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(find_cycle(&graph).is_some());
    graph.get_mut("b").unwrap().clear();
    assert!(find_cycle(&graph).is_none());
}
