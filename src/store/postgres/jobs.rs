//! Runner writes on jobs. Claims are one statement (`FOR UPDATE SKIP
//! LOCKED`, expired leases taken back in the same statement), so any number
//! of instances claim side by side without waiting on each other; the
//! check-then-write steps (lease checks) run in one transaction holding the
//! job's row lock.

use deadpool_postgres::GenericClient;

use super::calls::{active_calls, lock_agent};
use super::convert::{execute, get, job_id, job_status, query, query_opt};
use crate::ids::JobId;
use crate::store::{Cancel, ClaimedJob, JobStatus, JobUpdate, NewJob, StoreError};

/// Due jobs (queued, scheduled or waiting whose time has come) and running
/// jobs whose lease expired, earliest first, each kind through its own
/// partial index; rows another claimer holds are skipped, not waited for.
/// A claimed job's `running` is logged in the same statement, except for a
/// job woken from a line wait (`finish_claim` logs it only if the run
/// changed anything).
const CLAIM: &str = "\
WITH pending AS (
    SELECT id, run_at AS k FROM jobs
    WHERE status IN ('queued', 'scheduled', 'waiting') AND run_at <= $2
    ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED
),
expired AS (
    SELECT id, lease_expires_at AS k FROM jobs
    WHERE status = 'running' AND lease_expires_at < $2
    ORDER BY lease_expires_at, id LIMIT $4 FOR UPDATE SKIP LOCKED
),
picked AS (
    SELECT id, k FROM pending UNION ALL SELECT id, k FROM expired ORDER BY k, id LIMIT $4
),
claimed AS (
    UPDATE jobs j SET status = 'running', lease_owner = $1, lease_expires_at = $3, updated_at = $2
    FROM picked p WHERE j.id = p.id
    RETURNING p.k, j.id, j.action, j.input, j.state, j.attempts, j.created_at, j.wait_agent
),
logged AS (
    INSERT INTO job_events (job_id, at, status, attempt)
    SELECT id, $2, 'running', attempts FROM claimed WHERE wait_agent IS NULL
)
SELECT id, action, input, state, attempts, created_at FROM claimed ORDER BY k, id";

/// Claims under `claim_id` (stored as `lease_owner`).
pub(super) async fn claim_jobs<C: GenericClient>(
    c: &C,
    claim_id: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let rows = query(
        c,
        CLAIM,
        &[&claim_id, &now_ms, &lease_until_ms, &(limit as i64)],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ClaimedJob {
                id: job_id(r, 0)?,
                claim_id: claim_id.to_owned(),
                action: get(r, 1)?,
                input: get(r, 2)?,
                state: get(r, 3)?,
                attempts: get(r, 4)?,
                created_at_ms: get(r, 5)?,
            })
        })
        .collect()
}

pub(super) async fn log_event<C: GenericClient>(
    c: &C,
    job_id: &JobId,
    at: i64,
    status: &str,
    reason: Option<&str>,
    attempt: Option<i64>,
    detail: Option<&serde_json::Value>,
) -> Result<(), StoreError> {
    let detail = detail.map(|d| d.to_string());
    execute(
        c,
        "INSERT INTO job_events (job_id, at, status, reason, attempt, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&job_id.as_str(), &at, &status, &reason, &attempt, &detail],
    )
    .await?;
    Ok(())
}

pub(super) async fn renew_lease<C: GenericClient>(
    c: &C,
    job_id: &JobId,
    claim_id: &str,
    until_ms: i64,
) -> Result<bool, StoreError> {
    let n = execute(
        c,
        "UPDATE jobs SET lease_expires_at = $3 WHERE id = $1 AND lease_owner = $2 \
         AND status = 'running'",
        &[&job_id.as_str(), &claim_id, &until_ms],
    )
    .await?;
    Ok(n == 1)
}

/// Inside a transaction: the line count a waiting job checks must not race
/// a call freeing the line in another instance, so a line wait takes the
/// agent's lock first (before the job's row: the order every transaction
/// that takes both uses).
pub(super) async fn finish_claim<C: GenericClient>(
    c: &C,
    job_id: &JobId,
    claim_id: &str,
    u: &JobUpdate,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let line_wait = u
        .line_wait
        .as_ref()
        .filter(|_| u.status == JobStatus::Waiting);
    if let Some(w) = line_wait {
        lock_agent(c, &w.agent_id).await?;
    }
    // What the claim left: set by `claim_jobs` (updated_at is the claim time).
    let Some(before) = query_opt(
        c,
        "SELECT wait_agent, updated_at, attempts FROM jobs \
         WHERE id = $1 AND lease_owner = $2 AND status = 'running' FOR UPDATE",
        &[&job_id.as_str(), &claim_id],
    )
    .await?
    else {
        return Ok(false);
    };
    let line_wait_before: Option<String> = get(&before, 0)?;
    let claimed_at: i64 = get(&before, 1)?;
    let attempts_before: i64 = get(&before, 2)?;
    let mut run_at = u.run_at_ms;
    if let Some(w) = line_wait
        && active_calls(c, &w.agent_id).await? < i64::from(w.lines)
    {
        run_at = now_ms;
    }
    let line_wait = line_wait.map(|w| w.agent_id.as_str());
    let state = u.state.as_ref().map(|v| v.to_string());
    let result = u.result.as_ref().map(|v| v.to_string());
    let error = u.error.as_ref().map(|v| v.to_string());
    execute(
        c,
        "UPDATE jobs SET status = $3, status_reason = $4, run_at = $5, state = COALESCE($6, state), \
         result = $7, error = $8, attempts = $9, updated_at = $10, wait_agent = $11, \
         lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        &[
            &job_id.as_str(),
            &claim_id,
            &u.status.as_str(),
            &u.reason,
            &run_at,
            &state,
            &result,
            &error,
            &u.attempts,
            &now_ms,
            &line_wait,
        ],
    )
    .await?;
    if let Some(agent) = line_wait_before.as_deref() {
        if line_wait == Some(agent) {
            // Woken, but the lines were taken again: nothing happened.
            return Ok(true);
        }
        log_event(
            c,
            job_id,
            claimed_at,
            JobStatus::Running.as_str(),
            None,
            Some(attempts_before),
            None,
        )
        .await?;
    }
    log_event(
        c,
        job_id,
        now_ms,
        u.status.as_str(),
        u.reason.as_deref(),
        Some(u.attempts),
        u.detail.as_ref(),
    )
    .await?;
    Ok(true)
}

pub(super) async fn release_leases<C: GenericClient>(
    c: &C,
    owner: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    execute(
        c,
        // Every claim of `owner`, whatever its id (`store::new_claim_id`).
        "UPDATE jobs SET lease_expires_at = $2::bigint - 1 WHERE substr(lease_owner, 28) = $1 \
         AND status = 'running'",
        &[&owner, &now_ms],
    )
    .await
}

pub(super) async fn wake_jobs<C: GenericClient>(
    c: &C,
    ids: &[JobId],
    now_ms: i64,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = ids.iter().map(JobId::as_str).collect();
    execute(
        c,
        "UPDATE jobs SET run_at = $2 WHERE id = ANY($1) AND status IN ('waiting', 'scheduled') \
         AND run_at > $2",
        &[&ids, &now_ms],
    )
    .await?;
    Ok(())
}

/// One statement per job, in order (inside the caller's transaction): a
/// later job with the same `dedupe_key` is skipped, an id that exists
/// already is an error.
pub(super) async fn insert_jobs<C: GenericClient>(
    c: &C,
    jobs: &[NewJob],
) -> Result<(), StoreError> {
    for j in jobs {
        let trigger = j.trigger_id.as_ref().map(|t| t.as_str()).unwrap_or("");
        execute(
            c,
            "INSERT INTO jobs (id, trigger_id, principal, status, action, input, request_id, \
             created_at, updated_at, run_at, dedupe_key) \
             VALUES ($1, $2, $3, $10, $4, $5, $6, $7, $7, $8, $9) \
             ON CONFLICT (dedupe_key) DO NOTHING",
            &[
                &j.id.as_str(),
                &trigger,
                &&*j.principal,
                &j.action_json,
                &j.input_json,
                &j.request_id,
                &j.created_at_ms,
                &j.run_at_ms,
                &j.dedupe_key,
                &j.status.as_str(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// One conditional update on the status: a claim that locked the row
/// first makes it wait, then find `running` (no row); a claim after it
/// finds the job no longer due (`FOR UPDATE` re-reads the row).
pub(super) async fn cancel_job<C: GenericClient>(
    c: &C,
    job_id: &JobId,
    reason: &str,
    now_ms: i64,
) -> Result<Cancel, StoreError> {
    let n = execute(
        c,
        "UPDATE jobs SET status = 'cancelled', status_reason = $2, updated_at = $3, \
         wait_agent = NULL, lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND status IN ('queued', 'scheduled', 'waiting')",
        &[&job_id.as_str(), &reason, &now_ms],
    )
    .await?;
    if n == 1 {
        log_event(
            c,
            job_id,
            now_ms,
            JobStatus::Cancelled.as_str(),
            Some(reason),
            None,
            None,
        )
        .await?;
        return Ok(Cancel::Cancelled);
    }
    match query_opt(
        c,
        "SELECT status FROM jobs WHERE id = $1",
        &[&job_id.as_str()],
    )
    .await?
    {
        None => Ok(Cancel::NotFound),
        Some(row) => Ok(Cancel::NotCancellable(job_status(&row, 0)?)),
    }
}
