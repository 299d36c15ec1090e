//! What the docs template shows, read off the parsed `openapi.yaml`:
//! tags in the spec's order, each with its operations (paths in order,
//! methods get, put, post, delete, patch), `$ref`s to shared parameters
//! and responses resolved, descriptions split into paragraphs, and the
//! scopes an operation's description names.

use serde_json::{Value, json};

use crate::auth::Scope;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The template's context.
pub(super) fn view(doc: &Value) -> Result<Value, String> {
    let info = &doc["info"];
    let paths = doc["paths"]
        .as_object()
        .ok_or("openapi.yaml has no paths")?;
    let mut tags: Vec<(String, Value, Vec<Value>)> = doc["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| {
                    let name = text(&t["name"]);
                    (name, paras(&t["description"]), Vec::new())
                })
                .collect()
        })
        .unwrap_or_default();
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
            let entry = match tags.iter().position(|(n, _, _)| *n == tag) {
                Some(i) => i,
                None => {
                    tags.push((tag, json!([]), Vec::new()));
                    tags.len() - 1
                }
            };
            tags[entry].2.push(operation(doc, path, method, item, op));
        }
    }
    let tags: Vec<Value> = tags
        .into_iter()
        .filter(|(_, _, ops)| !ops.is_empty())
        .map(|(name, description, operations)| {
            json!({"name": name, "description": description, "operations": operations})
        })
        .collect();
    Ok(json!({
        "title": text(&info["title"]),
        "version": text(&info["version"]),
        "summary": text(&info["summary"]),
        "openapi": text(&doc["openapi"]),
        "intro": paras(&info["description"]),
        "tags": tags,
    }))
}

fn operation(doc: &Value, path: &str, method: &str, item: &Value, op: &Value) -> Value {
    let description = text(&op["description"]);
    let public = op["security"].as_array().is_some_and(Vec::is_empty);
    let params: Vec<Value> = item["parameters"]
        .as_array()
        .into_iter()
        .chain(op["parameters"].as_array())
        .flatten()
        .map(|p| {
            let p = resolve(doc, p);
            json!({
                "name": text(&p["name"]),
                "location": text(&p["in"]),
                "type": type_name(&p["schema"]),
                "required": p["required"].as_bool().unwrap_or(false),
                "description": text(&p["description"]).trim(),
            })
        })
        .collect();
    let body = op.get("requestBody").map(|b| {
        let b = resolve(doc, b);
        let content: Vec<Value> = b["content"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(media, c)| json!({"media": media, "schema": type_name(&c["schema"])}))
            .collect();
        json!({"required": b["required"].as_bool().unwrap_or(false), "content": content})
    });
    let responses: Vec<Value> = op["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(code, r)| {
            let r = resolve(doc, r);
            json!({"code": code, "description": text(&r["description"]).trim()})
        })
        .collect();
    json!({
        "id": text(&op["operationId"]),
        "method": method,
        "path": path,
        "summary": text(&op["summary"]),
        "description": paras(&op["description"]),
        "public": public,
        "scopes": scopes(&description),
        "parameters": params,
        "body": body,
        "responses": responses,
    })
}

/// `value`, or what its `$ref` (a local JSON pointer) points at.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).unwrap_or(value),
        None => value,
    }
}

/// A schema's type as shown: its `$ref`'s name, or its `type`(s).
fn type_name(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts.iter().map(text).collect::<Vec<_>>().join(" | "),
        _ => String::new(),
    }
}

/// The scopes named in `description` (in backticks), each once, in order.
fn scopes(description: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, token) in description.split('`').enumerate() {
        let known = Scope::parse(token).is_some() || token == "trigger:<id>";
        if i % 2 == 1 && known && !out.iter().any(|s| s == token) {
            out.push(token.to_owned());
        }
    }
    out
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

/// Blank-line separated paragraphs.
fn paras(v: &Value) -> Value {
    let t = text(v);
    Value::from(
        t.split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    )
}
