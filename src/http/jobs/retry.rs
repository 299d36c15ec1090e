//! `POST /v1/jobs/{job_id}/retry[?confirm_no_call=true]`: gives a `failed`
//! or `needs_attention` job a fresh attempt. Needs `jobs:write` (checked
//! before the job is looked up). No request body is read.
//!
//! Policy: never dial twice by accident. When the job's last call is
//! `unknown` (or was asked for and never answered: we cannot know whether
//! the callee's phone rang), the retry is `409 confirm-required` unless the
//! request says `confirm_no_call=true`; a call still live is `409
//! conflict`. Otherwise the store moves the job back to `queued` with one
//! conditional update on its status (two concurrent retries: one wins,
//! the other is `409 conflict`) and starts a new round of its progress:
//! steps already done stay done, and the retried step places its own call
//! (earlier call records stay). The event log gets a `queued` event whose
//! reason names the principal (`retried by key:ops`).
//!
//! `retry` is the core the console calls too.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::list::JobListed;
use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::ids::{CallId, JobId};
use crate::store::{CallRecord, CallStatus, JobRecord, JobStatus, Retry, StoreError};

/// What a retry did (`retry`).
#[derive(Debug)]
pub enum RetryOutcome {
    /// Queued again for a fresh attempt (the job as it is now).
    Retried(Box<JobRecord>),
    NotFound,
    /// Only `failed` and `needs_attention` jobs are retried.
    NotRetryable(JobStatus),
    /// The last call may have reached the callee: say `confirm_no_call`.
    ConfirmRequired {
        call_id: CallId,
        status: CallStatus,
    },
    /// The last call is still going on.
    CallLive {
        call_id: CallId,
        status: CallStatus,
    },
}

/// Retries job `id` for `principal` (whose `jobs:write` scope the caller
/// has checked).
pub async fn retry(
    app: &AppState,
    principal: &Principal,
    id: &JobId,
    confirm_no_call: bool,
) -> Result<RetryOutcome, StoreError> {
    let Some(job) = app.store.job(id).await? else {
        return Ok(RetryOutcome::NotFound);
    };
    if !matches!(job.status, JobStatus::Failed | JobStatus::NeedsAttention) {
        return Ok(RetryOutcome::NotRetryable(job.status));
    }
    let calls = app.store.calls_for_job(id).await?;
    if let Some(last) = calls
        .iter()
        .max_by(|a, b| (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str())))
    {
        let (call_id, status) = (last.id.clone(), last.status);
        if maybe_placed(last) {
            if !confirm_no_call {
                return Ok(RetryOutcome::ConfirmRequired { call_id, status });
            }
        } else if !status.is_final() {
            return Ok(RetryOutcome::CallLive { call_id, status });
        }
    }
    let reason = format!("retried by {}", principal.id);
    let detail =
        json!({"event": "retried", "by": &*principal.id, "confirm_no_call": confirm_no_call});
    let now = app.clock.now_ms();
    match app.store.retry_job(id, reason, detail, now).await? {
        Retry::NotFound => return Ok(RetryOutcome::NotFound),
        Retry::NotRetryable(status) => return Ok(RetryOutcome::NotRetryable(status)),
        Retry::Retried => {}
    }
    tracing::info!(job = %id, principal = %principal.id, confirm_no_call, "job retried");
    app.wake.notify_one();
    Ok(match app.store.job(id).await? {
        Some(job) => RetryOutcome::Retried(Box::new(job)),
        None => RetryOutcome::NotFound,
    })
}

/// Nobody can tell whether this call reached the callee.
fn maybe_placed(call: &CallRecord) -> bool {
    call.status == CallStatus::Unknown
        || (call.status == CallStatus::Dialing && call.provider_call_id.is_none())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryQuery {
    /// The operator confirms that calling the callee again is acceptable.
    #[serde(default)]
    confirm_no_call: bool,
}

pub async fn retry_job(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(job_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RetryQuery>,
) -> Result<Json<Value>, ApiError> {
    if !principal.scopes.has(&Scope::JobsWrite) {
        return Err(ApiError::missing_scope(
            vec![Scope::JobsWrite],
            "retrying a job needs the `jobs:write` scope",
        ));
    }
    let not_found = || ApiError::NotFound(format!("no job `{job_id}`"));
    let id = JobId::parse(&job_id).ok_or_else(not_found)?;
    let job = match retry(&app, &principal, &id, query.confirm_no_call).await? {
        RetryOutcome::Retried(job) => job,
        RetryOutcome::NotFound => return Err(not_found()),
        RetryOutcome::NotRetryable(status) => {
            return Err(ApiError::Conflict(format!(
                "job `{id}` is {}; only failed and needs_attention jobs are retried",
                status.as_str()
            )));
        }
        RetryOutcome::ConfirmRequired { call_id, status } => {
            return Err(ApiError::ConfirmRequired(format!(
                "the job's last call `{call_id}` is {}: it may have reached the callee; retry with \
                 `confirm_no_call=true` to call again",
                status.as_str()
            )));
        }
        RetryOutcome::CallLive { call_id, status } => {
            return Err(ApiError::Conflict(format!(
                "the job's last call `{call_id}` is still {}; retry once it has ended",
                status.as_str()
            )));
        }
    };
    serde_json::to_value(JobListed::from(*job))
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}
