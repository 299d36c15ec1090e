//! `GET /v1/jobs/{job_id}`: a job's status, input (as normalised), planned
//! action, result and error. A principal reads its own jobs; reading
//! another's needs `jobs:read` (403 otherwise).

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;

use super::triggers::store_error;
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::ids::JobId;

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobOut {
    job_id: String,
    trigger_id: String,
    status: String,
    created_by: String,
    created_at: String,
    updated_at: String,
    input: Value,
    action: Value,
    attempts: i64,
    result: Option<Value>,
    error: Option<Value>,
    request_id: Option<String>,
    links: Value,
}

pub async fn get_job(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<JobOut>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no job `{job_id}`"));
    let id = JobId::parse(&job_id).ok_or_else(not_found)?;
    let job = app
        .store
        .job(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    if job.principal != *principal.id && !principal.scopes.may_read_all_jobs() {
        return Err(ApiError::Forbidden {
            detail:
                "this job was created by another principal; reading it needs the `jobs:read` scope"
                    .into(),
        });
    }
    Ok(Json(JobOut {
        links: serde_json::json!({"self": format!("/v1/jobs/{}", job.id)}),
        job_id: job.id,
        trigger_id: job.trigger_id,
        status: job.status,
        created_by: job.principal,
        created_at: rfc3339(job.created_at_ms),
        updated_at: rfc3339(job.updated_at_ms),
        input: job.input,
        action: job.action,
        attempts: job.attempts,
        result: job.result,
        error: job.error,
        request_id: job.request_id,
    }))
}
