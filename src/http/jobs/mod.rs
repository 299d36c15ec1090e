//! Jobs: `GET /v1/jobs/{job_id}` (`get.rs`), `GET /v1/jobs` (`list.rs`),
//! `POST /v1/jobs/{job_id}/cancel` (`cancel.rs`, `jobs:write`),
//! `POST /v1/jobs/{job_id}/retry` (`retry.rs`, `jobs:write`).
//!
//! Policy: a principal reads its own jobs; reading another's, or listing
//! every job, needs `jobs:read` (403 for one job; a listing without it
//! shows only the principal's own).

mod cancel;
mod get;
mod list;
pub mod retry;

pub use cancel::cancel_job;
pub use get::get_job;
pub use list::list_jobs;
pub use retry::retry_job;

use crate::auth::{Principal, Scope};
use crate::clock::rfc3339;
use crate::http::error::ApiError;
use crate::store::{JobRecord, JobStatus};

/// 403 unless `principal` created the resource or may read all jobs.
pub(super) fn may_read(
    principal: &Principal,
    owner: Option<&str>,
    what: &str,
) -> Result<(), ApiError> {
    if owner == Some(&*principal.id) || principal.scopes.may_read_all_jobs() {
        return Ok(());
    }
    Err(ApiError::missing_scope(
        vec![Scope::JobsRead],
        format!("this {what} belongs to another principal; reading it needs the `jobs:read` scope"),
    ))
}

/// When a queued, scheduled or waiting job runs next (`None` otherwise).
fn next_run_at(job: &JobRecord) -> Option<String> {
    let pending = matches!(
        job.status,
        JobStatus::Scheduled | JobStatus::Waiting | JobStatus::Queued
    );
    pending.then(|| rfc3339(job.run_at_ms))
}
