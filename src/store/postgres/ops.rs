//! The operations API's store work on PostgreSQL: retrying a job (one
//! conditional update and its event, in a transaction), endpoint health and
//! the stats series (pooled connections), the refusal counts (one upsert
//! per batch, so instances' counts add up).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::convert::{execute, get, job_status, query, query_opt};
use super::jobs::log_event;
use crate::ids::JobId;
use crate::store::{
    AttemptWindow, BreakerRow, BucketCount, DeliveryBucket, EndpointHealth, JobStatus, LastError,
    RefusalCount, Retry, StatsSeries, StatsWindow, StoreError,
};

/// An attempt that counts as a success: answered 2xx, no transport error.
const OK: &str = "(a.error IS NULL AND a.response_status BETWEEN 200 AND 299)";

/// One conditional update on the status (see `Store::retry_job`).
pub(super) async fn retry_job<C: GenericClient>(
    c: &C,
    job_id: &JobId,
    reason: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<Retry, StoreError> {
    let n = execute(
        c,
        "UPDATE jobs SET status = 'queued', status_reason = $2, run_at = $3, updated_at = $3, \
         attempts = 0, error = NULL, result = NULL, wait_agent = NULL, lease_owner = NULL, \
         lease_expires_at = NULL, state = CASE \
           WHEN state IS NULL THEN '{\"round\":1}' \
           ELSE jsonb_set(state::jsonb, '{round}', \
             to_jsonb(COALESCE((state::jsonb ->> 'round')::BIGINT, 0) + 1))::TEXT END \
         WHERE id = $1 AND status IN ('failed', 'needs_attention')",
        &[&job_id.as_str(), &reason, &now_ms],
    )
    .await?;
    if n == 1 {
        let status = JobStatus::Queued.as_str();
        log_event(c, job_id, now_ms, status, Some(reason), None, Some(detail)).await?;
        return Ok(Retry::Retried);
    }
    match query_opt(
        c,
        "SELECT status FROM jobs WHERE id = $1",
        &[&job_id.as_str()],
    )
    .await?
    {
        None => Ok(Retry::NotFound),
        Some(row) => Ok(Retry::NotRetryable(job_status(&row, 0)?)),
    }
}

pub(super) async fn endpoint_health<C: GenericClient>(
    c: &C,
    endpoints: &[String],
    now_ms: i64,
) -> Result<Vec<EndpointHealth>, StoreError> {
    const HOUR: i64 = 3_600_000;
    let mut out = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let counts = query_opt(
            c,
            "SELECT COUNT(*) FILTER (WHERE status = 'pending'), \
             COUNT(*) FILTER (WHERE status = 'dead') \
             FROM deliveries WHERE endpoint = $1 AND status IN ('pending', 'dead')",
            &[e],
        )
        .await?;
        let (pending, dead) = match counts {
            Some(r) => (get(&r, 0)?, get(&r, 1)?),
            None => (0, 0),
        };
        out.push(EndpointHealth {
            endpoint: e.clone(),
            last_hour: window(c, e, now_ms - HOUR, now_ms).await?,
            last_day: window(c, e, now_ms - 24 * HOUR, now_ms).await?,
            last_error: last_error(c, e).await?,
            pending,
            dead,
            breaker: breaker(c, e).await?,
        });
    }
    Ok(out)
}

async fn window<C: GenericClient>(
    c: &C,
    endpoint: &String,
    since: i64,
    now: i64,
) -> Result<AttemptWindow, StoreError> {
    let from = "FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
                WHERE d.endpoint = $1 AND a.started_at >= $2 AND a.started_at <= $3";
    let sql = format!(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE {OK}), \
         percentile_disc(0.5) WITHIN GROUP (ORDER BY a.latency_ms), \
         percentile_disc(0.95) WITHIN GROUP (ORDER BY a.latency_ms) {from}"
    );
    let rows = query(c, &sql, &[endpoint, &since, &now]).await?;
    let Some(r) = rows.first() else {
        return Ok(AttemptWindow::default());
    };
    Ok(AttemptWindow {
        attempts: get(r, 0)?,
        succeeded: get(r, 1)?,
        p50_ms: get(r, 2)?,
        p95_ms: get(r, 3)?,
    })
}

async fn last_error<C: GenericClient>(
    c: &C,
    endpoint: &String,
) -> Result<Option<LastError>, StoreError> {
    let sql = format!(
        "SELECT a.started_at, a.response_status, a.error, a.delivery_id \
         FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE d.endpoint = $1 AND NOT {OK} ORDER BY a.started_at DESC LIMIT 1"
    );
    let Some(r) = query_opt(c, &sql, &[endpoint]).await? else {
        return Ok(None);
    };
    Ok(Some(LastError {
        at_ms: get(&r, 0)?,
        status: get(&r, 1)?,
        error: get(&r, 2)?,
        delivery_id: get(&r, 3)?,
    }))
}

async fn breaker<C: GenericClient>(c: &C, endpoint: &String) -> Result<BreakerRow, StoreError> {
    let row = query_opt(
        c,
        "SELECT failures, open_until, cooldown_ms, probe_until FROM endpoint_breakers \
         WHERE endpoint = $1",
        &[endpoint],
    )
    .await?;
    let Some(r) = row else {
        return Ok(BreakerRow::default());
    };
    Ok(BreakerRow {
        failures: get(&r, 0)?,
        open_until_ms: get(&r, 1)?,
        cooldown_ms: get(&r, 2)?,
        probe_until_ms: get(&r, 3)?,
    })
}

fn bucket_count(r: &Row) -> Result<BucketCount, StoreError> {
    Ok(BucketCount {
        bucket: get(r, 0)?,
        key: get(r, 1)?,
        count: get(r, 2)?,
    })
}

pub(super) async fn stats<C: GenericClient>(
    c: &C,
    w: StatsWindow,
) -> Result<StatsSeries, StoreError> {
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&w.since_ms, &w.until_ms, &w.bucket_ms];
    let counted = |sql: &'static str| async move {
        query(c, sql, &args)
            .await?
            .iter()
            .map(bucket_count)
            .collect::<Result<Vec<_>, _>>()
    };
    let accepted = counted(
        "SELECT (created_at - $1) / $3 AS b, trigger_id, COUNT(*) FROM jobs \
         WHERE created_at >= $1 AND created_at < $2 AND COALESCE(trigger_id, '') <> '' \
         GROUP BY b, trigger_id ORDER BY b, trigger_id",
    )
    .await?;
    let refused = counted(
        "SELECT (minute - $1) / $3 AS b, reason, SUM(count)::BIGINT FROM trigger_refusals \
         WHERE minute >= $1 AND minute < $2 GROUP BY b, reason ORDER BY b, reason",
    )
    .await?;
    let calls = counted(
        "SELECT (created_at - $1) / $3 AS b, COALESCE(outcome, status) AS k, COUNT(*) FROM calls \
         WHERE created_at >= $1 AND created_at < $2 GROUP BY b, k ORDER BY b, k",
    )
    .await?;
    let sql = format!(
        "SELECT (a.started_at - $1) / $3 AS b, d.endpoint, \
         COUNT(*) FILTER (WHERE {OK}), COUNT(*) FILTER (WHERE NOT {OK}), \
         AVG(a.latency_ms)::BIGINT \
         FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.started_at >= $1 AND a.started_at < $2 GROUP BY b, d.endpoint ORDER BY b, d.endpoint"
    );
    let deliveries = query(c, &sql, &args)
        .await?
        .iter()
        .map(|r| {
            Ok(DeliveryBucket {
                bucket: get(r, 0)?,
                endpoint: get(r, 1)?,
                succeeded: get(r, 2)?,
                failed: get(r, 3)?,
                mean_latency_ms: get(r, 4)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(StatsSeries {
        accepted,
        refused,
        calls,
        deliveries,
    })
}

/// One statement for the whole batch; `+=` on a minute another instance
/// counted too.
pub(super) async fn add_refusals<C: GenericClient>(
    c: &C,
    counts: &[RefusalCount],
) -> Result<(), StoreError> {
    let minutes: Vec<i64> = counts.iter().map(|r| r.minute_ms).collect();
    let reasons: Vec<&str> = counts.iter().map(|r| r.reason.as_str()).collect();
    let ns: Vec<i64> = counts.iter().map(|r| r.count).collect();
    // GROUP BY: ON CONFLICT cannot meet the same key twice in one statement.
    execute(
        c,
        "INSERT INTO trigger_refusals (minute, reason, count) \
         SELECT m, r, SUM(n)::BIGINT FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[]) AS t(m, r, n) \
         GROUP BY m, r \
         ON CONFLICT (minute, reason) DO UPDATE SET count = trigger_refusals.count + EXCLUDED.count",
        &[&minutes, &reasons, &ns],
    )
    .await?;
    Ok(())
}

pub(super) async fn purge_refusals<C: GenericClient>(
    c: &C,
    before_ms: i64,
) -> Result<u64, StoreError> {
    execute(
        c,
        "DELETE FROM trigger_refusals WHERE minute < $1",
        &[&before_ms],
    )
    .await
}
