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
