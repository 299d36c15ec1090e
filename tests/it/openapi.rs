//! openapi.yaml is the contract: every route the router serves is in it,
//! and everything in it is served.

use std::collections::BTreeSet;

use serde_json::Value;

#[test]
fn openapi_paths_and_methods_match_the_router() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in methods {
            if item.get(m).is_some() {
                documented.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = callgate::http::endpoints()
        .iter()
        .map(|e| (e.method.to_string(), e.path.to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in openapi.yaml but not served: {extra:?}"
    );
}

#[test]
fn every_documented_operation_declares_its_error_responses() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    for e in callgate::http::endpoints() {
        let op = &doc["paths"][e.path][e.method.as_str().to_lowercase()];
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{} {} has no responses", e.method, e.path));
        if e.authenticated() {
            for code in ["401", "429"] {
                assert!(
                    responses.contains_key(code),
                    "{} {} lacks {code}",
                    e.method,
                    e.path
                );
            }
        }
    }
}

/// `FormInput.propertyNames` in openapi.yaml is exactly the set of keys the
/// form parser (`auto` nesting) accepts: every key of up to 7 characters
/// over the characters that matter (a letter, `_`, both brackets, a line
/// break), and keys around the nesting limit, are sent to both, which must
/// agree.
#[test]
fn the_spec_allows_exactly_the_form_keys_the_parser_accepts() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    let names = &doc["components"]["schemas"]["FormInput"]["propertyNames"];
    assert!(names.is_object(), "FormInput has propertyNames");
    let spec = callgate::schema::CompiledSchema::compile(names).unwrap();
    let alphabet = ['a', '_', '[', ']', '\n'];
    let mut keys = vec![String::new()];
    let mut frontier = keys.clone();
    for _ in 0..7 {
        frontier = frontier
            .iter()
            .flat_map(|k| alphabet.iter().map(move |c| format!("{k}{c}")))
            .collect();
        keys.extend(frontier.iter().cloned());
    }
    // Around the nesting limit (15 marks), in both styles and mixed.
    for n in 13..18 {
        keys.push(format!("a{}", "[b]".repeat(n)));
        keys.push(format!("a{}[]", "[b]".repeat(n)));
        keys.push(format!("a{}", "__b".repeat(n)));
        keys.push(format!("a{}", "___b".repeat(n)));
        keys.push(format!(
            "a{}{}",
            "[b]".repeat(n / 2),
            "__c".repeat(n - n / 2)
        ));
        keys.push(format!("a{}", "[".repeat(n)));
    }
    let mut disagree = Vec::new();
    for key in &keys {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(key, "1")
            .finish();
        let parser = callgate::input::form::parse(body.as_bytes(), Default::default()).is_ok();
        let allowed = spec.violations(&Value::String(key.clone())).is_empty();
        if parser != allowed {
            disagree.push((key.clone(), parser, allowed));
        }
    }
    assert!(
        disagree.is_empty(),
        "{} of {} keys disagree (key, parser, spec), e.g. {:?}",
        disagree.len(),
        keys.len(),
        &disagree[..disagree.len().min(10)]
    );
}

/// Every problem type the server answers with (`http::error`'s table) has
/// its row, with its status and title, in the `Problem` schema's table.
#[test]
fn every_problem_type_is_documented_with_its_status_and_title() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let doc: Value = serde_norway::from_str(&text).unwrap();
    let table = doc["components"]["schemas"]["Problem"]["description"]
        .as_str()
        .unwrap();
    for (status, slug, title) in callgate::http::error::PROBLEM_TYPES {
        let row = format!("| `urn:callgate:problem:{slug}` | {status} | {title}");
        assert!(table.contains(&row), "openapi.yaml lacks the row `{row}`");
    }
}
