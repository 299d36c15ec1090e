//! Delivery log writes and reads (outbound webhooks), for the writer thread
//! and the read connection. Portable SQL: the same statements serve
//! PostgreSQL later.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::ids::DeliveryId;
use crate::store::{
    ClaimedDelivery, DeliveryAttempt, DeliveryFilter, DeliveryRecord, DeliveryStatus, NewDelivery,
    Replay, StoreError,
};

const COLUMNS: &str = "id, msg_id, endpoint, event, job_id, call_id, status, headers, body, \
     attempts, budget_start, next_attempt_at, last_status_code, last_error, created_at, updated_at";

fn record(r: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: r.get(0)?,
        msg_id: r.get(1)?,
        endpoint: r.get(2)?,
        event: r.get(3)?,
        job_id: r.get(4)?,
        call_id: r.get(5)?,
        status: r.get(6)?,
        headers: r.get(7)?,
        body: r.get(8)?,
        attempts: r.get(9)?,
        budget_start: r.get(10)?,
        next_attempt_at_ms: r.get(11)?,
        last_status_code: r.get(12)?,
        last_error: r.get(13)?,
        created_at_ms: r.get(14)?,
        updated_at_ms: r.get(15)?,
    })
}

/// Inserts a delivery, due now; with a `dedupe_key` that exists already,
/// returns the existing delivery's id instead.
pub(super) fn create(conn: &Connection, d: &NewDelivery) -> Result<DeliveryId, StoreError> {
    if let Some(key) = &d.dedupe_key {
        let existing: Option<DeliveryId> = conn
            .prepare_cached("SELECT id FROM deliveries WHERE dedupe_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(id);
        }
    }
    conn.prepare_cached(
        "INSERT INTO deliveries (id, msg_id, endpoint, event, job_id, call_id, status, headers, body, \
         next_attempt_at, dedupe_key, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?9, ?9)",
    )?
    .execute(params![
        d.id,
        d.msg_id,
        d.endpoint,
        d.event,
        d.job_id,
        d.call_id,
        d.headers_json,
        d.body,
        d.created_at_ms,
        d.dedupe_key,
    ])?;
    Ok(d.id.clone())
}

/// Claims up to `limit` due deliveries of one endpoint (pending and due, or
/// sending with an expired lease: the process sending it died), oldest due
/// first, under `claim_id` (stored as `lease_owner`).
pub(super) fn claim(
    conn: &Connection,
    endpoint: &str,
    claim_id: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let mut ids: Vec<(i64, DeliveryId)> = conn
        .prepare_cached(
            "SELECT next_attempt_at, id FROM deliveries WHERE status = 'pending' AND endpoint = ?1 \
             AND next_attempt_at <= ?2 ORDER BY next_attempt_at LIMIT ?3",
        )?
        .query_map(params![endpoint, now_ms, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let expired: Vec<(i64, DeliveryId)> = conn
        .prepare_cached(
            "SELECT lease_expires_at, id FROM deliveries WHERE status = 'sending' \
             AND lease_expires_at < ?1 AND endpoint = ?2 ORDER BY lease_expires_at LIMIT ?3",
        )?
        .query_map(params![now_ms, endpoint, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    // A lease that expired means the process sending it stopped before it
    // logged the outcome: that counts as an attempt (it may have been
    // sent), so a delivery that keeps killing its sender still runs out of
    // retries.
    let mut interrupted = conn.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1 WHERE id = ?1 AND status = 'sending' \
         AND lease_expires_at < ?2 RETURNING attempts",
    )?;
    for (_, id) in &expired {
        if let Some(attempt) = interrupted
            .query_row(params![id, now_ms], |r| r.get::<_, i64>(0))
            .optional()?
        {
            conn.prepare_cached(
                "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, request_headers, \
                 request_body, latency_ms, error) VALUES (?1, ?2, ?3, '{}', '', 0, ?4) \
                 ON CONFLICT (delivery_id, attempt) DO NOTHING",
            )?
            .execute(params![
                id,
                attempt,
                now_ms,
                "interrupted: the process sending it stopped before logging the outcome"
            ])?;
        }
    }
    ids.extend(expired);
    ids.sort();
    ids.truncate(limit);
    let mut out = Vec::with_capacity(ids.len());
    let mut update = conn.prepare_cached(&format!(
        "UPDATE deliveries SET status = 'sending', lease_owner = ?2, lease_expires_at = ?3, \
         updated_at = ?4 WHERE id = ?1 RETURNING {COLUMNS}"
    ))?;
    for (_, id) in ids {
        if let Some(delivery) = update
            .query_row(params![id, claim_id, lease_until_ms, now_ms], record)
            .optional()?
        {
            out.push(ClaimedDelivery {
                claim_id: claim_id.to_owned(),
                delivery,
            });
        }
    }
    Ok(out)
}

/// Logs an attempt and moves the delivery on, if `claim_id` is still its
/// current claim.
pub(super) fn finish_attempt(
    conn: &Connection,
    id: &DeliveryId,
    claim_id: &str,
    attempt: &DeliveryAttempt,
    status: DeliveryStatus,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let updated = conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?3, attempts = ?4, next_attempt_at = ?5, \
             last_status_code = ?6, last_error = ?7, lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ?8 WHERE id = ?1 AND status = 'sending' AND lease_owner = ?2",
        )?
        .execute(params![
            id,
            claim_id,
            status,
            attempt.attempt,
            attempt.next_attempt_at_ms,
            attempt.response_status,
            attempt.error,
            now_ms,
        ])?;
    if updated == 0 {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, request_headers, \
         request_body, response_status, response_body, latency_ms, error, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )?
    .execute(params![
        id,
        attempt.attempt,
        attempt.started_at_ms,
        attempt.request_headers.to_string(),
        attempt.request_body,
        attempt.response_status,
        attempt.response_body,
        attempt.latency_ms,
        attempt.error,
        attempt.next_attempt_at_ms,
    ])?;
    Ok(true)
}

/// Hands claimed deliveries back untried (shutdown, or an open breaker).
pub(super) fn release(
    conn: &Connection,
    ids: &[DeliveryId],
    claim_id: &str,
    due_ms: i64,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = ?3, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = ?3 WHERE id = ?1 AND status = 'sending' AND lease_owner = ?2",
    )?;
    for id in ids {
        stmt.execute(params![id, claim_id, due_ms])?;
    }
    Ok(())
}

/// Queues a `failed` or `dead` delivery again, with a fresh retry budget and
/// the same `webhook-id`.
pub(super) fn replay(
    conn: &Connection,
    id: &DeliveryId,
    now_ms: i64,
) -> Result<Replay, StoreError> {
    let Some(current) = read(conn, id)? else {
        return Ok(Replay::NotFound);
    };
    if !matches!(
        current.status,
        DeliveryStatus::Failed | DeliveryStatus::Dead
    ) {
        return Ok(Replay::NotReplayable(current.status));
    }
    let d = conn
        .prepare_cached(&format!(
            "UPDATE deliveries SET status = 'pending', budget_start = attempts, next_attempt_at = ?2, \
             updated_at = ?2 WHERE id = ?1 RETURNING {COLUMNS}"
        ))?
        .query_row(params![id, now_ms], record)?;
    Ok(Replay::Queued(Box::new(d)))
}

/// Deletes up to `limit` finished deliveries (their attempts go with them,
/// `ON DELETE CASCADE`) last updated before `before_ms`. Pending and
/// in-flight ones are kept whatever their age. Bounded, so that a large
/// purge never holds the single writer for long: the caller repeats.
pub(super) fn purge(conn: &Connection, before_ms: i64, limit: usize) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE status IN ('succeeded', 'failed', 'dead') AND updated_at < ?1 LIMIT ?2)",
        )?
        .execute(params![before_ms, limit as i64])?;
    Ok(n as u64)
}

/// Pending deliveries to endpoints not in `configured` become `failed`, and
/// so do ones whose attempt was interrupted (sending, lease expired): no
/// process claims deliveries of an endpoint it does not know, so they would
/// stay `sending` for ever.
pub(super) fn fail_unconfigured(
    conn: &Connection,
    configured: &[String],
    now_ms: i64,
) -> Result<u64, StoreError> {
    let placeholders: Vec<String> = (0..configured.len())
        .map(|i| format!("?{}", i + 2))
        .collect();
    let not_in = if configured.is_empty() {
        String::new()
    } else {
        format!(" AND endpoint NOT IN ({})", placeholders.join(", "))
    };
    let sql = format!(
        "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, updated_at = ?1, \
         lease_owner = NULL, lease_expires_at = NULL, \
         last_error = 'endpoint `' || endpoint || '` is not configured; replay it once it is' \
         WHERE (status = 'pending' OR (status = 'sending' AND lease_expires_at < ?1)){not_in}"
    );
    let mut args: Vec<rusqlite::types::Value> = vec![now_ms.into()];
    args.extend(
        configured
            .iter()
            .map(|c| rusqlite::types::Value::from(c.clone())),
    );
    let n = conn
        .prepare(&sql)?
        .execute(rusqlite::params_from_iter(args))?;
    Ok(n as u64)
}

pub(super) fn read(
    conn: &Connection,
    id: &DeliveryId,
) -> Result<Option<DeliveryRecord>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1"))?
        .query_row([id], record)
        .optional()?)
}

pub(super) fn attempts(
    conn: &Connection,
    id: &DeliveryId,
) -> Result<Vec<DeliveryAttempt>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT attempt, started_at, request_headers, request_body, response_status, \
             response_body, latency_ms, error, next_attempt_at FROM delivery_attempts \
             WHERE delivery_id = ?1 ORDER BY attempt",
        )?
        .query_map([id], |r| {
            Ok(DeliveryAttempt {
                attempt: r.get(0)?,
                started_at_ms: r.get(1)?,
                request_headers: r.get(2)?,
                request_body: r.get(3)?,
                response_status: r.get(4)?,
                response_body: r.get(5)?,
                latency_ms: r.get(6)?,
                error: r.get(7)?,
                next_attempt_at_ms: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Newest first, filtered; at most `filter.limit`.
pub(super) fn list(
    conn: &Connection,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM deliveries WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut add = |clause: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(s) = filter.status {
        add("status =", s.as_str().to_owned().into());
    }
    if let Some(e) = &filter.endpoint {
        add("endpoint =", e.clone().into());
    }
    if let Some(j) = &filter.job_id {
        add("job_id =", j.clone().into());
    }
    if let Some(c) = &filter.call_id {
        add("call_id =", c.clone().into());
    }
    if let Some(t) = filter.since_ms {
        add("created_at >=", t.into());
    }
    if let Some(b) = &filter.before {
        add("id <", b.as_str().to_owned().into());
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit.max(1)));
    let rows = conn
        .prepare(&sql)?
        .query_map(rusqlite::params_from_iter(args), record)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
