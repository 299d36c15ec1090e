//! `POST /v1/do-not-call`: adds many numbers at once, from a JSON array of
//! strings or from `text/plain` with one number per line (the seed file's
//! format: blank lines and `#` comments are skipped, so the file itself can
//! be imported). Every number is normalised; the valid ones are added in
//! one write, the others are listed by line (or position in the array) and
//! change nothing. The answer counts `added` + `already_present` +
//! `invalid` = the numbers sent. Bounded by `server.max_body_bytes` (413).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::{normalise, require};
use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::{ApiError, Violation};
use crate::http::extract::read_body;

/// One number as sent: its line (or 1-based position) and text.
struct Sent {
    line: usize,
    value: String,
    /// Not a string (JSON only): listed as invalid with this message.
    problem: Option<&'static str>,
}

pub async fn import_do_not_call(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    require(&principal, Scope::DncWrite)?;
    let kind = media_type(&headers)?;
    let bytes = read_body(body, app.config.main.server.max_body_bytes).await?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let sent = match kind {
        Kind::Json => from_json(text)?,
        Kind::Text => from_text(text),
    };
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for s in sent {
        let result = match s.problem {
            Some(p) => Err(p.to_owned()),
            None => normalise(&app, &s.value),
        };
        match result {
            Ok(e164) => valid.push(e164),
            Err(message) => {
                invalid.push(json!({"line": s.line, "value": s.value, "message": message}))
            }
        }
    }
    let added = if valid.is_empty() {
        0
    } else {
        app.store
            .add_do_not_call(valid.clone(), &principal.id, app.clock.now_ms())
            .await?
    };
    tracing::info!(
        principal = %principal.id,
        added,
        invalid = invalid.len(),
        "do-not-call import"
    );
    Ok(Json(json!({
        "added": added,
        "already_present": valid.len() as u64 - added,
        "invalid": invalid,
    })))
}

enum Kind {
    Json,
    Text,
}

/// `application/json` or `text/plain` (UTF-8); anything else is a 415.
fn media_type(headers: &HeaderMap) -> Result<Kind, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let utf8 = parts.all(|p| match p.trim().split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    });
    match essence.as_str() {
        "application/json" if utf8 => Ok(Kind::Json),
        "text/plain" if utf8 => Ok(Kind::Text),
        _ => Err(ApiError::UnsupportedMediaType(
            "send a JSON array of numbers (application/json) or one number per line \
             (text/plain), in UTF-8"
                .into(),
        )),
    }
}

fn from_json(text: &str) -> Result<Vec<Sent>, ApiError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(ApiError::InvalidValue {
            detail: "the body must be a JSON array of phone numbers".into(),
            errors: vec![Violation::new("", "must be an array of strings")],
        });
    };
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Sent {
                line: i + 1,
                value: s,
                problem: None,
            },
            other => Sent {
                line: i + 1,
                value: other.to_string(),
                problem: Some("must be a string"),
            },
        })
        .collect())
}

fn from_text(text: &str) -> Vec<Sent> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let entry = line.split('#').next().unwrap_or_default().trim();
            (!entry.is_empty()).then(|| Sent {
                line: i + 1,
                value: entry.to_owned(),
                problem: None,
            })
        })
        .collect()
}
