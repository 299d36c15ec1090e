//! Trigger input: media type (415), reading with a size limit (413),
//! parsing (400), and normalisation after schema validation (422).
//!
//! Accepted: `application/json` (and `application/*+json`) and
//! `application/x-www-form-urlencoded` (Zapier's default), UTF-8 only.

pub mod form;
pub mod phone;

use axum::body::{Body, Bytes};
use axum::http::HeaderValue;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::config::FormNesting;
use crate::http::error::{ApiError, Violation};
use crate::trigger::Trigger;

/// The body formats a trigger accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    /// From `Content-Type`; anything else (or a non-UTF-8 charset) is 415.
    pub fn from_content_type(value: Option<&HeaderValue>) -> Result<Self, ApiError> {
        let Some(value) = value else {
            return Err(ApiError::UnsupportedMediaType(
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
            (Some(_), false) => Err(ApiError::UnsupportedMediaType(format!(
                "`{text}`: only UTF-8 bodies are accepted"
            ))),
            (None, _) => Err(ApiError::UnsupportedMediaType(format!(
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

/// Reads the whole body, refusing more than `limit` bytes (413).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// Parses the body into JSON (400 saying where it is malformed).
pub fn parse(kind: BodyKind, body: &[u8], nesting: FormNesting) -> Result<Value, ApiError> {
    match kind {
        BodyKind::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::bad_request(
                    "the body is empty; send a JSON object",
                ));
            }
            serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "malformed JSON at line {}, column {}: {}",
                    e.line(),
                    e.column(),
                    json_error_reason(&e)
                ))
            })
        }
        // Bytes that are not UTF-8, raw or percent-encoded, are refused by
        // `form::parse` naming the field.
        BodyKind::Form => form::parse(body, nesting).map_err(form_error),
    }
}

/// A 400 for a form body, with the field's pointer when the error names one.
pub fn form_error(e: form::FormError) -> ApiError {
    let errors = match &e {
        form::FormError::InvalidUtf8 { pointer, part, .. } => vec![Violation {
            pointer: pointer.clone(),
            message: format!("the field's {part} is not valid UTF-8"),
        }],
        _ => Vec::new(),
    };
    ApiError::BadRequest {
        detail: e.to_string(),
        errors,
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

/// Normalises the trigger's phone fields to E.164 in place; every field that
/// cannot be normalised is a violation (422).
pub fn normalise(input: &mut Value, trigger: &Trigger) -> Result<(), ApiError> {
    let mut violations = Vec::new();
    for (i, pointer) in trigger.phone_pointers.iter().enumerate() {
        match input.pointer_mut(pointer) {
            Some(Value::String(raw)) => {
                match phone::normalize(raw, trigger.phone_region, trigger.phone_validation) {
                    Ok(e164) => *raw = e164,
                    Err(why) => violations.push(Violation {
                        pointer: pointer.clone(),
                        message: format!("phone number {why}"),
                    }),
                }
            }
            Some(other) if !other.is_null() => violations.push(Violation {
                pointer: pointer.clone(),
                message: "must be a phone number written as a string".into(),
            }),
            // The first pointer is the number the action calls: required.
            _ if i == 0 => violations.push(Violation {
                pointer: pointer.clone(),
                message: "is required: the phone number to call".into(),
            }),
            _ => {}
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(violations))
    }
}

/// Checks the callee time zone field (`calling.timezone_field`), when
/// present: an IANA name, else a 422 naming the field.
pub fn check_timezone(input: &Value, pointer: &str) -> Result<(), ApiError> {
    match input.pointer(pointer) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(name)) if crate::runner::window::parse_zone(name).is_ok() => Ok(()),
        Some(_) => Err(ApiError::Validation(vec![Violation {
            pointer: pointer.to_owned(),
            message: "must be an IANA time zone such as America/New_York".into(),
        }])),
    }
}

/// Input fields that hold a job back until a time (RFC 3339).
pub const SCHEDULE_FIELDS: [&str; 2] = ["schedule_at", "not_before"];

/// The latest of the input's `schedule_at` / `not_before`, in Unix ms; a
/// value that is not an RFC 3339 time is a 422 naming the field.
pub fn run_at(input: &Value) -> Result<Option<i64>, ApiError> {
    let mut latest = None;
    let mut violations = Vec::new();
    for field in SCHEDULE_FIELDS {
        let Some(v) = input.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        match v.as_str().map(chrono::DateTime::parse_from_rfc3339) {
            Some(Ok(t)) => latest = latest.max(Some(t.timestamp_millis())),
            _ => violations.push(Violation {
                pointer: format!("/{field}"),
                message: "must be an RFC 3339 time such as 2026-11-27T15:00:00Z".into(),
            }),
        }
    }
    if violations.is_empty() {
        Ok(latest)
    } else {
        Err(ApiError::Validation(violations))
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
