//! The accept path's campaign dedupe (see `crate::dedupe`): the key of a
//! request, and the answer when a live job already holds it: 200 with that
//! job's 202 body and `Deduplicated: true`, or (`on_duplicate = "conflict"`)
//! 409 `duplicate` naming the job.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::dedupe::OnDuplicate;
use crate::http::AppState;
use crate::http::error::{ApiError, Violation};
use crate::store::DEDUPE_PRINCIPAL;
use crate::trigger::Trigger;

/// `Deduplicated: true` on the answer that names an existing job.
pub static DEDUPLICATED: HeaderName = HeaderName::from_static("deduplicated");

/// The request's dedupe key (`None` when the trigger has no dedupe rule);
/// an input the template cannot render is 422.
pub(super) fn key(trigger: &Trigger, input: &Value) -> Result<Option<String>, ApiError> {
    let Some(dedupe) = &trigger.dedupe else {
        return Ok(None);
    };
    dedupe
        .key(input)
        .map(Some)
        .map_err(|e| ApiError::InvalidValue {
            detail: "the trigger's dedupe key cannot be made from this input".into(),
            errors: vec![Violation::new("", e)],
        })
}

/// The answer for a key held by a live job, if one does.
pub(super) async fn existing(
    app: &AppState,
    trigger: &Trigger,
    key: &str,
) -> Result<Option<Response>, ApiError> {
    let Some(dedupe) = &trigger.dedupe else {
        return Ok(None);
    };
    let now = app.clock.now_ms();
    let found = app
        .store
        .idempotency(DEDUPE_PRINCIPAL, trigger.id.as_str(), key, now)
        .await?;
    let Some(record) = found else { return Ok(None) };
    if dedupe.on_duplicate == OnDuplicate::Conflict {
        return Err(ApiError::Duplicate {
            job_id: record.job_id.to_string(),
        });
    }
    let mut response = (StatusCode::OK, record.response_body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(DEDUPLICATED.clone(), HeaderValue::from_static("true"));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", record.job_id)) {
        h.insert(header::LOCATION, location);
    }
    Ok(Some(response))
}
