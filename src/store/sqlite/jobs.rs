//! Runner writes on jobs, as tasks for the writer thread. Each runs inside
//! the batch transaction (its own savepoint), so the check-then-write steps
//! here (lease checks, claim order) are atomic.

use rusqlite::{Connection, OptionalExtension, params};

use super::calls::active_calls;
use crate::ids::JobId;
use crate::store::{Cancel, ClaimedJob, JobStatus, JobUpdate, NewJob, StoreError};

/// Claims due jobs under `claim_id` (stored as `lease_owner`, see
/// `store::new_claim_id`). Each kind of due job is found by its own index-ordered
/// query (one `OR` across them made SQLite sort every due job on every
/// claim: 7 ms per claim with 20,000 queued); the earliest `limit` win.
pub(super) fn claim_jobs(
    conn: &Connection,
    claim_id: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let mut candidates: Vec<(i64, JobId)> = Vec::new();
    for status in ["queued", "scheduled", "waiting"] {
        let mut stmt = conn.prepare_cached(
            "SELECT run_at, id FROM jobs WHERE status = ?1 AND run_at <= ?2 ORDER BY run_at LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![status, now_ms, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        candidates.extend(rows.collect::<Result<Vec<_>, _>>()?);
    }
    let mut expired = conn.prepare_cached(
        "SELECT lease_expires_at, id FROM jobs WHERE status = 'running' AND lease_expires_at < ?1 \
         ORDER BY lease_expires_at LIMIT ?2",
    )?;
    let rows = expired.query_map(params![now_ms, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    candidates.extend(rows.collect::<Result<Vec<_>, _>>()?);
    candidates.sort();
    candidates.truncate(limit);

    let mut claim = conn.prepare_cached(
        "UPDATE jobs SET status = 'running', lease_owner = ?2, lease_expires_at = ?3, updated_at = ?4 \
         WHERE id = ?1 RETURNING id, action, input, state, attempts, created_at, wait_agent",
    )?;
    let mut claimed = Vec::with_capacity(candidates.len());
    for (_, id) in candidates {
        let (job, line_wait) =
            claim.query_row(params![id, claim_id, lease_until_ms, now_ms], |r| {
                Ok((
                    ClaimedJob {
                        id: r.get(0)?,
                        claim_id: claim_id.to_owned(),
                        action: r.get(1)?,
                        input: r.get(2)?,
                        state: r.get(3)?,
                        attempts: r.get(4)?,
                        created_at_ms: r.get(5)?,
                    },
                    r.get::<_, Option<String>>(6)?,
                ))
            })?;
        // A job woken from a line wait may find the lines taken again: its
        // `running` is logged by `finish_claim`, only if the run changed
        // anything (a futile wake-up writes nothing).
        if line_wait.is_none() {
            log_event(
                conn,
                &job.id,
                now_ms,
                JobStatus::Running.as_str(),
                None,
                Some(job.attempts),
                None,
            )?;
        }
        claimed.push(job);
    }
    Ok(claimed)
}

pub(super) fn log_event(
    conn: &Connection,
    job_id: &JobId,
    at: i64,
    status: &str,
    reason: Option<&str>,
    attempt: Option<i64>,
    detail: Option<&serde_json::Value>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO job_events (job_id, seq, at, status, reason, attempt, detail) \
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = ?1), ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![job_id, at, status, reason, attempt, detail.map(|d| d.to_string())])?;
    Ok(())
}

pub(super) fn renew_lease(
    conn: &Connection,
    job_id: &JobId,
    claim_id: &str,
    until_ms: i64,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE jobs SET lease_expires_at = ?3 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
        )?
        .execute(params![job_id, claim_id, until_ms])?;
    Ok(n == 1)
}

pub(super) fn finish_claim(
    conn: &Connection,
    job_id: &JobId,
    claim_id: &str,
    u: &JobUpdate,
    now_ms: i64,
) -> Result<bool, StoreError> {
    // What the claim left: set by `claim_jobs` (updated_at is the claim time).
    let before: Option<(Option<String>, i64, i64)> = conn
        .prepare_cached(
            "SELECT wait_agent, updated_at, attempts FROM jobs \
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
        )?
        .query_row(params![job_id, claim_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((line_wait_before, claimed_at, attempts_before)) = before else {
        return Ok(false);
    };
    let line_wait = u
        .line_wait
        .as_ref()
        .filter(|_| u.status == JobStatus::Waiting);
    let mut run_at = u.run_at_ms;
    if let Some(w) = line_wait
        && active_calls(conn, &w.agent_id)? < i64::from(w.lines)
    {
        run_at = now_ms;
    }
    let line_wait = line_wait.map(|w| w.agent_id.as_str());
    conn.prepare_cached(
        "UPDATE jobs SET status = ?3, status_reason = ?4, run_at = ?5, state = COALESCE(?6, state), result = ?7, \
         error = ?8, attempts = ?9, updated_at = ?10, wait_agent = ?11, lease_owner = NULL, \
         lease_expires_at = NULL WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
    )?
    .execute(params![
        job_id,
        claim_id,
        u.status.as_str(),
        u.reason,
        run_at,
        u.state.as_ref().map(|v| v.to_string()),
        u.result.as_ref().map(|v| v.to_string()),
        u.error.as_ref().map(|v| v.to_string()),
        u.attempts,
        now_ms,
        line_wait,
    ])?;
    if let Some(agent) = line_wait_before.as_deref() {
        if line_wait == Some(agent) {
            // Woken, but the lines were taken again: nothing happened.
            return Ok(true);
        }
        log_event(
            conn,
            job_id,
            claimed_at,
            JobStatus::Running.as_str(),
            None,
            Some(attempts_before),
            None,
        )?;
    }
    log_event(
        conn,
        job_id,
        now_ms,
        u.status.as_str(),
        u.reason.as_deref(),
        Some(u.attempts),
        u.detail.as_ref(),
    )?;
    Ok(true)
}

pub(super) fn release_leases(
    conn: &Connection,
    owner: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    // Every claim of `owner`, whatever its id (`store::new_claim_id`).
    let n = conn
        .prepare_cached(
            "UPDATE jobs SET lease_expires_at = ?2 - 1 WHERE substr(lease_owner, 28) = ?1 \
             AND status = 'running'",
        )?
        .execute(params![owner, now_ms])?;
    Ok(n as u64)
}

pub(super) fn wake_jobs(conn: &Connection, ids: &[JobId], now_ms: i64) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE jobs SET run_at = ?2 WHERE id = ?1 AND status IN ('waiting', 'scheduled') AND run_at > ?2",
    )?;
    for id in ids {
        stmt.execute(params![id, now_ms])?;
    }
    Ok(())
}

pub(super) fn insert_jobs(conn: &Connection, jobs: &[NewJob]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO jobs (id, trigger_id, principal, status, action, input, request_id, \
         created_at, updated_at, run_at, dedupe_key) \
         VALUES (?1, ?2, ?3, ?10, ?4, ?5, ?6, ?7, ?7, ?8, ?9) ON CONFLICT (dedupe_key) DO NOTHING",
    )?;
    for j in jobs {
        stmt.execute(params![
            j.id.as_str(),
            j.trigger_id.as_ref().map(|t| t.as_str()).unwrap_or(""),
            &*j.principal,
            j.action_json,
            j.input_json,
            j.request_id,
            j.created_at_ms,
            j.run_at_ms,
            j.dedupe_key,
            j.status.as_str()
        ])?;
    }
    Ok(())
}

/// One conditional update on the status (the writer runs one task at a
/// time, and a claim moves the job to `running` first).
pub(super) fn cancel_job(
    conn: &Connection,
    job_id: &JobId,
    reason: &str,
    now_ms: i64,
) -> Result<Cancel, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE jobs SET status = 'cancelled', status_reason = ?2, updated_at = ?3, \
             wait_agent = NULL, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = ?1 AND status IN ('queued', 'scheduled', 'waiting')",
        )?
        .execute(params![job_id, reason, now_ms])?;
    if n == 1 {
        log_event(
            conn,
            job_id,
            now_ms,
            JobStatus::Cancelled.as_str(),
            Some(reason),
            None,
            None,
        )?;
        return Ok(Cancel::Cancelled);
    }
    let status: Option<JobStatus> = conn
        .prepare_cached("SELECT status FROM jobs WHERE id = ?1")?
        .query_row(params![job_id], |r| r.get(0))
        .optional()?;
    Ok(status.map_or(Cancel::NotFound, Cancel::NotCancellable))
}
