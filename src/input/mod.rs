//! Trigger input: media type (415), parsing (400), and the checks after
//! schema validation that name a field (422). Reading the body with its
//! size limit is the HTTP layer's (`http::extract`).
//!
//! Accepted: `application/json` (and `application/*+json`) and
//! `application/x-www-form-urlencoded` (Zapier's default), UTF-8 only.

pub mod form;
pub mod phone;

use axum::http::HeaderValue;
use serde_json::Value;

use crate::config::FormNesting;
use crate::schema::Violation;

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Neither JSON nor form-encoded UTF-8 (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body cannot be parsed (400), with the failing field when known.
    #[error("{detail}")]
    Malformed {
        detail: String,
        errors: Vec<Violation>,
    },
    /// Parsed, but fields are not acceptable (422), every one listed.
    #[error("the input is not valid for this trigger; see `errors`")]
    Invalid(Vec<Violation>),
}

impl InputError {
    fn malformed(detail: impl Into<String>) -> Self {
        InputError::Malformed {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

/// The body formats a trigger accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    /// From `Content-Type`; anything else (or a non-UTF-8 charset) is 415.
    pub fn from_content_type(value: Option<&HeaderValue>) -> Result<Self, InputError> {
        let Some(value) = value else {
            return Err(InputError::UnsupportedMediaType(
                "Content-Type is missing; send application/json or application/x-www-form-urlencoded".into(),
            ));
        };
        let text = value.to_str().unwrap_or_default();
        let mut parts = text.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let charset_ok = parts.all(|p| match p.trim().split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
                let v = v.trim().trim_matches('"');
                v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
            }
            _ => true,
        });
        let kind = match essence.as_str() {
            "application/json" => Some(BodyKind::Json),
            "application/x-www-form-urlencoded" => Some(BodyKind::Form),
            e if e.starts_with("application/") && e.ends_with("+json") => Some(BodyKind::Json),
            _ => None,
        };
        match (kind, charset_ok) {
            (Some(kind), true) => Ok(kind),
            (Some(_), false) => Err(InputError::UnsupportedMediaType(format!(
                "`{text}`: only UTF-8 bodies are accepted"
            ))),
            (None, _) => Err(InputError::UnsupportedMediaType(format!(
                "`{text}` is not accepted; send application/json or application/x-www-form-urlencoded"
            ))),
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            BodyKind::Json => "application/json",
            BodyKind::Form => "application/x-www-form-urlencoded",
        }
    }
}

/// Parses the body into JSON (400 saying where it is malformed).
pub fn parse(kind: BodyKind, body: &[u8], nesting: FormNesting) -> Result<Value, InputError> {
    match kind {
        BodyKind::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(InputError::malformed(
                    "the body is empty; send a JSON object",
                ));
            }
            serde_json::from_slice(body).map_err(|e| {
                InputError::malformed(format!(
                    "malformed JSON at line {}, column {}: {}",
                    e.line(),
                    e.column(),
                    json_error_reason(&e)
                ))
            })
        }
        // Bytes that are not UTF-8, raw or percent-encoded, are refused by
        // `form::parse` naming the field.
        BodyKind::Form => Ok(form::parse(body, nesting)?),
    }
}

/// A form that cannot be parsed: 400, with the field's pointer when the
/// error names one.
impl From<form::FormError> for InputError {
    fn from(e: form::FormError) -> Self {
        let errors = match &e {
            form::FormError::InvalidUtf8 { pointer, part, .. } => vec![Violation::new(
                pointer.clone(),
                format!("the field's {part} is not valid UTF-8"),
            )],
            _ => Vec::new(),
        };
        InputError::Malformed {
            detail: e.to_string(),
            errors,
        }
    }
}

/// serde_json's message without its own " at line X column Y" suffix.
fn json_error_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    }
}

/// Input fields that hold a job back until a time (RFC 3339).
pub const SCHEDULE_FIELDS: [&str; 2] = ["schedule_at", "not_before"];

/// The latest of the input's `schedule_at` / `not_before`, in Unix ms; a
/// value that is not an RFC 3339 time is a violation naming the field.
pub fn run_at(input: &Value) -> Result<Option<i64>, InputError> {
    let mut latest = None;
    let mut violations = Vec::new();
    for field in SCHEDULE_FIELDS {
        let Some(v) = input.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        match v.as_str().map(chrono::DateTime::parse_from_rfc3339) {
            Some(Ok(t)) => latest = latest.max(Some(t.timestamp_millis())),
            _ => violations.push(Violation::new(
                format!("/{field}"),
                "must be an RFC 3339 time such as 2026-11-27T15:00:00Z",
            )),
        }
    }
    if violations.is_empty() {
        Ok(latest)
    } else {
        Err(InputError::Invalid(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(v).unwrap())
    }

    #[test]
    fn media_types_are_recognised_and_others_refused() {
        let ok = |v: &str| BodyKind::from_content_type(ct(v).as_ref());
        assert_eq!(ok("application/json").unwrap(), BodyKind::Json);
        assert_eq!(
            ok("Application/JSON; charset=utf-8").unwrap(),
            BodyKind::Json
        );
        assert_eq!(ok("application/vnd.api+json").unwrap(), BodyKind::Json);
        assert_eq!(
            ok("application/x-www-form-urlencoded").unwrap(),
            BodyKind::Form
        );
        assert!(ok("text/plain").is_err());
        assert!(ok("multipart/form-data; boundary=x").is_err());
        assert!(ok("application/json; charset=latin1").is_err());
        assert!(BodyKind::from_content_type(None).is_err());
    }

    #[test]
    fn malformed_json_says_where() {
        let err = parse(
            BodyKind::Json,
            b"{\"a\": 1,\n \"b\": }",
            FormNesting::Brackets,
        )
        .unwrap_err();
        let detail = err.to_string();
        assert!(detail.contains("line 2"), "{detail}");
        assert!(parse(BodyKind::Json, b"  ", FormNesting::Brackets).is_err());
    }
}
