//! The operations API's store work on SQLite: retrying a job (a write
//! task), endpoint health and the stats series (read connections), the
//! refusal counts (written in one batch, purged by housekeeping).

use rusqlite::{Connection, OptionalExtension, params};

use super::jobs::log_event;
use crate::ids::JobId;
use crate::store::{
    AttemptWindow, BreakerRow, BucketCount, DeliveryBucket, EndpointHealth, JobStatus, LastError,
    RefusalCount, Retry, StatsSeries, StatsWindow, StoreError,
};

/// An attempt that counts as a success: answered 2xx, no transport error.
const OK: &str = "(a.error IS NULL AND a.response_status BETWEEN 200 AND 299)";

/// One conditional update on the status (see `Store::retry_job`); a
/// progress that is not valid JSON is left as it is (the runner sends such
/// a job back to `needs_attention` without dialing).
pub(super) fn retry_job(
    conn: &Connection,
    job_id: &JobId,
    reason: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<Retry, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE jobs SET status = 'queued', status_reason = ?2, run_at = ?3, updated_at = ?3, \
             attempts = 0, error = NULL, result = NULL, wait_agent = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, state = CASE \
               WHEN state IS NULL THEN '{\"round\":1}' \
               WHEN json_valid(state) THEN \
                 json_set(state, '$.round', COALESCE(json_extract(state, '$.round'), 0) + 1) \
               ELSE state END \
             WHERE id = ?1 AND status IN ('failed', 'needs_attention')",
        )?
        .execute(params![job_id, reason, now_ms])?;
    if n == 1 {
        let status = JobStatus::Queued.as_str();
        log_event(
            conn,
            job_id,
            now_ms,
            status,
            Some(reason),
            None,
            Some(detail),
        )?;
        return Ok(Retry::Retried);
    }
    let status: Option<JobStatus> = conn
        .prepare_cached("SELECT status FROM jobs WHERE id = ?1")?
        .query_row(params![job_id], |r| r.get(0))
        .optional()?;
    Ok(status.map_or(Retry::NotFound, Retry::NotRetryable))
}

pub(super) fn endpoint_health(
    conn: &Connection,
    endpoints: &[String],
    now_ms: i64,
) -> Result<Vec<EndpointHealth>, StoreError> {
    const HOUR: i64 = 3_600_000;
    endpoints
        .iter()
        .map(|e| {
            let (pending, dead) = counts(conn, e)?;
            Ok(EndpointHealth {
                endpoint: e.clone(),
                last_hour: window(conn, e, now_ms - HOUR, now_ms)?,
                last_day: window(conn, e, now_ms - 24 * HOUR, now_ms)?,
                last_error: last_error(conn, e)?,
                pending,
                dead,
                breaker: breaker(conn, e)?,
            })
        })
        .collect()
}

fn window(
    conn: &Connection,
    endpoint: &str,
    since: i64,
    now: i64,
) -> Result<AttemptWindow, StoreError> {
    let from = "FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
                WHERE d.endpoint = ?1 AND a.started_at >= ?2 AND a.started_at <= ?3";
    let (attempts, succeeded): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN {OK} THEN 1 ELSE 0 END), 0) {from}"
        ))?
        .query_row(params![endpoint, since, now], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut rank = conn.prepare_cached(&format!(
        "SELECT a.latency_ms {from} ORDER BY a.latency_ms LIMIT 1 OFFSET ?4"
    ))?;
    let mut percentile = |q: f64| -> Result<Option<i64>, StoreError> {
        if attempts == 0 {
            return Ok(None);
        }
        let offset = super::super::ops::nearest_rank(attempts, q);
        Ok(rank
            .query_row(params![endpoint, since, now, offset], |r| r.get(0))
            .optional()?)
    };
    Ok(AttemptWindow {
        attempts,
        succeeded,
        p50_ms: percentile(0.5)?,
        p95_ms: percentile(0.95)?,
    })
}

fn last_error(conn: &Connection, endpoint: &str) -> Result<Option<LastError>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT a.started_at, a.response_status, a.error, a.delivery_id \
             FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE d.endpoint = ?1 AND NOT {OK} ORDER BY a.started_at DESC LIMIT 1"
        ))?
        .query_row(params![endpoint], |r| {
            Ok(LastError {
                at_ms: r.get(0)?,
                status: r.get(1)?,
                error: r.get(2)?,
                delivery_id: r.get(3)?,
            })
        })
        .optional()?)
}

fn counts(conn: &Connection, endpoint: &str) -> Result<(i64, i64), StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) \
             FROM deliveries WHERE endpoint = ?1 AND status IN ('pending', 'dead')",
        )?
        .query_row(params![endpoint], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

fn breaker(conn: &Connection, endpoint: &str) -> Result<BreakerRow, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT failures, open_until, cooldown_ms, probe_until FROM endpoint_breakers \
             WHERE endpoint = ?1",
        )?
        .query_row(params![endpoint], |r| {
            Ok(BreakerRow {
                failures: r.get(0)?,
                open_until_ms: r.get(1)?,
                cooldown_ms: r.get(2)?,
                probe_until_ms: r.get(3)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

pub(super) fn stats(conn: &Connection, w: StatsWindow) -> Result<StatsSeries, StoreError> {
    let args = params![w.since_ms, w.until_ms, w.bucket_ms];
    let counted_with =
        |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<Vec<BucketCount>, StoreError> {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok(BucketCount {
                    bucket: r.get(0)?,
                    key: r.get(1)?,
                    count: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
    let counted = |sql: &str| counted_with(sql, args);
    // A job's id is a ULID of its creation time (`JobId::new(now)`, the
    // same clock reading as `created_at`), so the window is a range of the
    // primary key: no index on `created_at` to maintain on every insert.
    let (first, past) = (JobId::floor(w.since_ms), JobId::floor(w.until_ms));
    let accepted = counted_with(
        "SELECT (created_at - ?1) / ?3 AS b, trigger_id, COUNT(*) FROM jobs \
         WHERE id >= ?4 AND id < ?5 AND created_at >= ?1 AND created_at < ?2 \
         AND COALESCE(trigger_id, '') <> '' GROUP BY b, trigger_id ORDER BY b, trigger_id",
        params![
            w.since_ms,
            w.until_ms,
            w.bucket_ms,
            first.as_str(),
            past.as_str()
        ],
    )?;
    let refused = counted(
        "SELECT (minute - ?1) / ?3 AS b, reason, SUM(count) FROM trigger_refusals \
         WHERE minute >= ?1 AND minute < ?2 GROUP BY b, reason ORDER BY b, reason",
    )?;
    let calls = counted(
        "SELECT (created_at - ?1) / ?3 AS b, COALESCE(outcome, status) AS k, COUNT(*) FROM calls \
         WHERE created_at >= ?1 AND created_at < ?2 GROUP BY b, k ORDER BY b, k",
    )?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT (a.started_at - ?1) / ?3 AS b, d.endpoint, \
         SUM(CASE WHEN {OK} THEN 1 ELSE 0 END), SUM(CASE WHEN {OK} THEN 0 ELSE 1 END), \
         CAST(AVG(a.latency_ms) AS BIGINT) \
         FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.started_at >= ?1 AND a.started_at < ?2 GROUP BY b, d.endpoint ORDER BY b, d.endpoint"
    ))?;
    let deliveries = stmt
        .query_map(args, |r| {
            Ok(DeliveryBucket {
                bucket: r.get(0)?,
                endpoint: r.get(1)?,
                succeeded: r.get(2)?,
                failed: r.get(3)?,
                mean_latency_ms: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(StatsSeries {
        accepted,
        refused,
        calls,
        deliveries,
    })
}

/// One write task (one transaction) for the whole batch.
pub(super) fn add_refusals(conn: &Connection, counts: &[RefusalCount]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO trigger_refusals (minute, reason, count) VALUES (?1, ?2, ?3) \
         ON CONFLICT (minute, reason) DO UPDATE SET count = count + excluded.count",
    )?;
    for c in counts {
        stmt.execute(params![c.minute_ms, c.reason, c.count])?;
    }
    Ok(())
}

pub(super) fn purge_refusals(conn: &Connection, before_ms: i64) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM trigger_refusals WHERE minute < ?1")?
        .execute(params![before_ms])?;
    Ok(n as u64)
}
