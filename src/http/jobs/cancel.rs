//! `POST /v1/jobs/{job_id}/cancel`: stops a queued, scheduled or waiting
//! job before it places (another) call. Needs `jobs:write` (checked before
//! the job is looked up).
//!
//! Policy: the store cancels with one conditional update on the status,
//! so a runner's claim and a cancel cannot both win: once the answer is
//! 200, no claim takes the job and no call is placed for it. A job a
//! worker holds right now is `409 job-busy` with `Retry-After` (workers
//! leave a job within seconds: waiting, which is cancellable, or final);
//! a final job is `409 conflict` naming its status. A call that is
//! already live is not hung up (no provider adapter can yet): the answer
//! lists such calls under `live_calls`.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::list::JobListed;
use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::ids::JobId;
use crate::store::{Cancel, JobStatus};

pub async fn cancel_job(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(job_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if !principal.scopes.has(&Scope::JobsWrite) {
        return Err(ApiError::missing_scope(
            vec![Scope::JobsWrite],
            "cancelling a job needs the `jobs:write` scope",
        ));
    }
    let not_found = || ApiError::NotFound(format!("no job `{job_id}`"));
    let id = JobId::parse(&job_id).ok_or_else(not_found)?;
    let reason = format!("cancelled by {}", principal.id);
    match app
        .store
        .cancel_job(&id, reason, app.clock.now_ms())
        .await?
    {
        Cancel::NotFound => return Err(not_found()),
        Cancel::NotCancellable(JobStatus::Running) => {
            return Err(ApiError::JobBusy(format!(
                "job `{id}` is running (a worker holds it right now); try again shortly"
            )));
        }
        Cancel::NotCancellable(status) => {
            return Err(ApiError::Conflict(format!(
                "job `{id}` is {}; only queued, scheduled and waiting jobs are cancelled",
                status.as_str()
            )));
        }
        Cancel::Cancelled => {}
    }
    tracing::info!(job = %id, principal = %principal.id, "job cancelled");
    let job = app.store.job(&id).await?.ok_or_else(not_found)?;
    let live: Vec<String> = app
        .store
        .calls_for_job(&id)
        .await?
        .into_iter()
        .filter(|c| !c.status.is_final())
        .map(|c| c.id.to_string())
        .collect();
    let mut out = serde_json::to_value(JobListed::from(job))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    out["live_calls"] = json!(live);
    Ok(Json(out))
}
