//! Delivery log writes and reads (outbound webhooks). Claims are one
//! statement (`FOR UPDATE SKIP LOCKED`), expired leases taken back (and
//! counted as an interrupted attempt) in the same statement.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::convert::{
    call_id_opt, delivery_id, delivery_status, execute, get, job_id_opt, json, msg_id, query,
    query_opt,
};
use crate::ids::DeliveryId;
use crate::store::{
    ClaimedDelivery, DeliveryAttempt, DeliveryFilter, DeliveryRecord, DeliveryStatus, NewDelivery,
    Replay, StoreError,
};

const COLUMNS: &str = "id, msg_id, endpoint, event, job_id, call_id, status, headers, body, \
     attempts, budget_start, next_attempt_at, last_status_code, last_error, created_at, updated_at";

fn record(r: &Row) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: delivery_id(r, 0)?,
        msg_id: msg_id(r, 1)?,
        endpoint: get(r, 2)?,
        event: get(r, 3)?,
        job_id: job_id_opt(r, 4)?,
        call_id: call_id_opt(r, 5)?,
        status: delivery_status(r, 6)?,
        headers: json(get(r, 7)?)?,
        body: get(r, 8)?,
        attempts: get(r, 9)?,
        budget_start: get(r, 10)?,
        next_attempt_at_ms: get(r, 11)?,
        last_status_code: get(r, 12)?,
        last_error: get(r, 13)?,
        created_at_ms: get(r, 14)?,
        updated_at_ms: get(r, 15)?,
    })
}

/// Inserts a delivery, due now; with a `dedupe_key` that exists already
/// (written by this instance or another), returns that delivery's id.
pub(super) async fn create<C: GenericClient>(
    c: &C,
    d: &NewDelivery,
) -> Result<DeliveryId, StoreError> {
    let inserted = query_opt(
        c,
        "INSERT INTO deliveries (id, msg_id, endpoint, event, job_id, call_id, status, headers, \
         body, next_attempt_at, dedupe_key, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $9, $9) \
         ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        &[
            &d.id.as_str(),
            &d.msg_id.as_str(),
            &d.endpoint,
            &d.event,
            &d.job_id.as_ref().map(|j| j.as_str()),
            &d.call_id.as_ref().map(|c| c.as_str()),
            &d.headers_json,
            &d.body,
            &d.created_at_ms,
            &d.dedupe_key,
        ],
    )
    .await?;
    if inserted.is_some() {
        return Ok(d.id.clone());
    }
    let row = query_opt(
        c,
        "SELECT id FROM deliveries WHERE dedupe_key = $1",
        &[&d.dedupe_key],
    )
    .await?
    .ok_or_else(|| {
        StoreError::Unavailable("a delivery's dedupe key clashed, then vanished".into())
    })?;
    delivery_id(&row, 0)
}

/// Pending and due, or sending with an expired lease (the process sending
/// it died: that counts as an attempt, logged as interrupted, since it may
/// have been sent), oldest due first.
const CLAIM: &str = "\
WITH pending AS (
    SELECT id, next_attempt_at AS k, false AS interrupted FROM deliveries
    WHERE status = 'pending' AND endpoint = $1 AND next_attempt_at <= $3
    ORDER BY next_attempt_at, id LIMIT $5 FOR UPDATE SKIP LOCKED
),
expired AS (
    SELECT id, lease_expires_at AS k, true AS interrupted FROM deliveries
    WHERE status = 'sending' AND endpoint = $1 AND lease_expires_at < $3
    ORDER BY lease_expires_at, id LIMIT $5 FOR UPDATE SKIP LOCKED
),
picked AS (
    SELECT id, k, interrupted FROM pending
    UNION ALL SELECT id, k, interrupted FROM expired ORDER BY k, id LIMIT $5
),
claimed AS (
    UPDATE deliveries d SET status = 'sending', lease_owner = $2, lease_expires_at = $4,
        updated_at = $3, attempts = d.attempts + CASE WHEN p.interrupted THEN 1 ELSE 0 END
    FROM picked p WHERE d.id = p.id
    RETURNING p.k, p.interrupted, d.*
),
logged AS (
    INSERT INTO delivery_attempts (delivery_id, attempt, started_at, request_headers,
        request_body, latency_ms, error)
    SELECT id, attempts, $3, '{}', '', 0, $6 FROM claimed WHERE interrupted
    ON CONFLICT (delivery_id, attempt) DO NOTHING
)
SELECT id, msg_id, endpoint, event, job_id, call_id, status, headers, body, attempts,
    budget_start, next_attempt_at, last_status_code, last_error, created_at, updated_at
FROM claimed ORDER BY k, id";

/// Claims under `claim_id` (stored as `lease_owner`).
pub(super) async fn claim<C: GenericClient>(
    c: &C,
    endpoint: &str,
    claim_id: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let interrupted = "interrupted: the process sending it stopped before logging the outcome";
    query(
        c,
        CLAIM,
        &[
            &endpoint,
            &claim_id,
            &now_ms,
            &lease_until_ms,
            &(limit as i64),
            &interrupted,
        ],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(ClaimedDelivery {
            claim_id: claim_id.to_owned(),
            delivery: record(r)?,
        })
    })
    .collect()
}

/// Logs an attempt and moves the delivery on, if `claim_id` is still its
/// current claim.
pub(super) async fn finish_attempt<C: GenericClient>(
    c: &C,
    id: &DeliveryId,
    claim_id: &str,
    attempt: &DeliveryAttempt,
    status: DeliveryStatus,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = execute(
        c,
        "UPDATE deliveries SET status = $3, attempts = $4, next_attempt_at = $5, \
         last_status_code = $6, last_error = $7, lease_owner = NULL, lease_expires_at = NULL, \
         updated_at = $8 WHERE id = $1 AND status = 'sending' AND lease_owner = $2",
        &[
            &id.as_str(),
            &claim_id,
            &status.as_str(),
            &attempt.attempt,
            &attempt.next_attempt_at_ms,
            &attempt.response_status,
            &attempt.error,
            &now_ms,
        ],
    )
    .await?;
    if updated == 0 {
        return Ok(false);
    }
    let headers = attempt.request_headers.to_string();
    execute(
        c,
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, request_headers, \
         request_body, response_status, response_body, latency_ms, error, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
        &[
            &id.as_str(),
            &attempt.attempt,
            &attempt.started_at_ms,
            &headers,
            &attempt.request_body,
            &attempt.response_status,
            &attempt.response_body,
            &attempt.latency_ms,
            &attempt.error,
            &attempt.next_attempt_at_ms,
        ],
    )
    .await?;
    Ok(true)
}

/// Hands claimed deliveries back untried (shutdown, or an open breaker).
pub(super) async fn release<C: GenericClient>(
    c: &C,
    ids: &[DeliveryId],
    claim_id: &str,
    due_ms: i64,
) -> Result<(), StoreError> {
    let ids: Vec<&str> = ids.iter().map(DeliveryId::as_str).collect();
    execute(
        c,
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $3, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = $3 \
         WHERE id = ANY($1) AND status = 'sending' AND lease_owner = $2",
        &[&ids, &claim_id, &due_ms],
    )
    .await?;
    Ok(())
}

/// Queues a `failed` or `dead` delivery again, with a fresh retry budget and
/// the same `webhook-id` (inside a transaction: the row is locked first).
pub(super) async fn replay<C: GenericClient>(
    c: &C,
    id: &DeliveryId,
    now_ms: i64,
) -> Result<Replay, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1 FOR UPDATE");
    let Some(row) = query_opt(c, &sql, &[&id.as_str()]).await? else {
        return Ok(Replay::NotFound);
    };
    let current = record(&row)?;
    if !matches!(
        current.status,
        DeliveryStatus::Failed | DeliveryStatus::Dead
    ) {
        return Ok(Replay::NotReplayable(current.status));
    }
    let sql = format!(
        "UPDATE deliveries SET status = 'pending', budget_start = attempts, next_attempt_at = $2, \
         updated_at = $2 WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = query_opt(c, &sql, &[&id.as_str(), &now_ms])
        .await?
        .ok_or_else(|| StoreError::Unavailable(format!("delivery {id} vanished")))?;
    Ok(Replay::Queued(Box::new(record(&row)?)))
}

/// Deletes up to `limit` finished deliveries (their attempts go with them,
/// `ON DELETE CASCADE`) last updated before `before_ms`; bounded so that
/// one purge never holds many row locks for long: the caller repeats.
pub(super) async fn purge<C: GenericClient>(
    c: &C,
    before_ms: i64,
    limit: usize,
) -> Result<u64, StoreError> {
    execute(
        c,
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
         WHERE status IN ('succeeded', 'failed', 'dead') AND updated_at < $1 LIMIT $2)",
        &[&before_ms, &(limit as i64)],
    )
    .await
}

/// Pending deliveries to endpoints not in `configured` become `failed`, and
/// so do ones whose attempt was interrupted (sending, lease expired).
pub(super) async fn fail_unconfigured<C: GenericClient>(
    c: &C,
    configured: &[String],
    now_ms: i64,
) -> Result<u64, StoreError> {
    execute(
        c,
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = $1, \
         lease_owner = NULL, lease_expires_at = NULL, \
         last_error = 'endpoint `' || endpoint || '` is not configured; replay it once it is' \
         WHERE (status = 'pending' OR (status = 'sending' AND lease_expires_at < $1)) \
         AND NOT (endpoint = ANY($2))",
        &[&now_ms, &configured],
    )
    .await
}

pub(super) async fn read<C: GenericClient>(
    c: &C,
    id: &DeliveryId,
) -> Result<Option<DeliveryRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1");
    query_opt(c, &sql, &[&id.as_str()])
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

pub(super) async fn attempts<C: GenericClient>(
    c: &C,
    id: &DeliveryId,
) -> Result<Vec<DeliveryAttempt>, StoreError> {
    query(
        c,
        "SELECT attempt, started_at, request_headers, request_body, response_status, \
         response_body, latency_ms, error, next_attempt_at FROM delivery_attempts \
         WHERE delivery_id = $1 ORDER BY attempt",
        &[&id.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(DeliveryAttempt {
            attempt: get(r, 0)?,
            started_at_ms: get(r, 1)?,
            request_headers: json(get(r, 2)?)?,
            request_body: get(r, 3)?,
            response_status: get(r, 4)?,
            response_body: get(r, 5)?,
            latency_ms: get(r, 6)?,
            error: get(r, 7)?,
            next_attempt_at_ms: get(r, 8)?,
        })
    })
    .collect()
}

/// Newest first, filtered; at most `filter.limit`.
pub(super) async fn list<C: GenericClient>(
    c: &C,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM deliveries WHERE true");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut add = |clause: &str, v: Box<dyn ToSql + Sync + Send>| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    if let Some(s) = filter.status {
        add("status =", Box::new(s.as_str()));
    }
    if let Some(e) = &filter.endpoint {
        add("endpoint =", Box::new(e.clone()));
    }
    if let Some(j) = &filter.job_id {
        add("job_id =", Box::new(j.clone()));
    }
    if let Some(c) = &filter.call_id {
        add("call_id =", Box::new(c.clone()));
    }
    if let Some(t) = filter.since_ms {
        add("created_at >=", Box::new(t));
    }
    if let Some(b) = &filter.before {
        add("id <", Box::new(b.as_str().to_owned()));
    }
    args.push(Box::new(filter.limit.max(1) as i64));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| &**a as _).collect();
    query(c, &sql, &params).await?.iter().map(record).collect()
}
