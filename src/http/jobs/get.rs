//! `GET /v1/jobs/{job_id}`: a job's status (and why), input (as
//! normalised), planned action, steps, calls, result, errors and its event
//! log. A principal reads its own jobs; reading another's needs `jobs:read`
//! (403 otherwise).

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{Value, json};

use super::{may_read, next_run_at};
use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::ids::{JobId, TriggerId};
use crate::store::{CallRecord, JobEvent, JobRecord, JobStatus};

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobOut {
    job_id: JobId,
    trigger_id: Option<TriggerId>,
    status: JobStatus,
    status_reason: Option<String>,
    created_by: String,
    created_at: String,
    updated_at: String,
    /// When a scheduled or waiting job runs next.
    next_run_at: Option<String>,
    input: Value,
    action: Value,
    attempts: i64,
    steps: Value,
    calls: Vec<Value>,
    result: Option<Value>,
    error: Option<Value>,
    events: Vec<Value>,
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
    let job = app.store.job(&id).await?.ok_or_else(not_found)?;
    may_read(&principal, Some(&job.principal), "job")?;
    let calls = app.store.calls_for_job(&job.id).await?;
    let events = history(&job, app.store.job_events(&job.id).await?);
    Ok(Json(JobOut {
        links: json!({"self": format!("/v1/jobs/{}", job.id)}),
        steps: job
            .state
            .as_ref()
            .and_then(|s| s.get("steps").cloned())
            .unwrap_or_else(|| json!([])),
        calls: calls.iter().map(call_summary).collect(),
        events,
        next_run_at: next_run_at(&job),
        job_id: job.id,
        trigger_id: job.trigger_id,
        status: job.status,
        status_reason: job.status_reason,
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

/// The job's history: its creation (the insert itself is not logged, it is
/// the hot path; its status follows from the input: a future `schedule_at`
/// / `not_before` made it `scheduled`), then each logged move.
fn history(job: &JobRecord, logged: Vec<JobEvent>) -> Vec<Value> {
    let held = crate::input::run_at(&job.input)
        .ok()
        .flatten()
        .is_some_and(|t| t > job.created_at_ms);
    let first = if held { "scheduled" } else { "queued" };
    let mut events = vec![json!({"at": rfc3339(job.created_at_ms), "status": first})];
    events.extend(logged.into_iter().map(|e| {
        json!({
            "at": rfc3339(e.at_ms),
            "status": e.status,
            "reason": e.reason,
            "attempt": e.attempt,
            "detail": e.detail,
        })
    }));
    events
}

/// A call as the job shows it.
fn call_summary(c: &CallRecord) -> Value {
    let (round, step) = crate::store::call_round_and_step(c.step);
    json!({
        "call_id": c.id,
        "step": step,
        "round": round,
        "status": c.status,
        "outcome": c.outcome,
        "links": {"self": format!("/v1/calls/{}", c.id)},
    })
}
