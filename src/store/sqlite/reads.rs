//! Reads on the read-only connections: jobs, their event logs, idempotency
//! records, calls by job and by staleness, and the status counts behind
//! `/metrics`.

use rusqlite::{Connection, OptionalExtension, params};

use super::ops::read_call;
use crate::ids::{JobId, TriggerId};
use crate::store::{CallRecord, CallStatus, IdempotencyRecord, JobEvent, JobRecord, StoreError};

pub(super) fn job(conn: &Connection, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, trigger_id, principal, status, status_reason, action, input, state, \
             result, error, attempts, request_id, created_at, updated_at, run_at \
             FROM jobs WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            let trigger_id: String = r.get(1)?;
            Ok(JobRecord {
                id: r.get(0)?,
                trigger_id: (!trigger_id.is_empty())
                    .then(|| TriggerId::parse(&trigger_id))
                    .transpose()
                    .map_err(|e| {
                        rusqlite::Error::FromSqlConversionFailure(
                            1,
                            rusqlite::types::Type::Text,
                            e.into(),
                        )
                    })?,
                principal: r.get(2)?,
                status: r.get(3)?,
                status_reason: r.get(4)?,
                action: r.get(5)?,
                input: r.get(6)?,
                state: r.get(7)?,
                result: r.get(8)?,
                error: r.get(9)?,
                attempts: r.get(10)?,
                request_id: r.get(11)?,
                created_at_ms: r.get(12)?,
                updated_at_ms: r.get(13)?,
                run_at_ms: r.get(14)?,
            })
        })
        .optional()?)
}

pub(super) fn job_events(conn: &Connection, job_id: &JobId) -> Result<Vec<JobEvent>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT at, status, reason, attempt, detail FROM job_events WHERE job_id = ?1 \
             ORDER BY seq",
        )?
        .query_map(params![job_id], |r| {
            Ok(JobEvent {
                at_ms: r.get(0)?,
                status: r.get(1)?,
                reason: r.get(2)?,
                attempt: r.get(3)?,
                detail: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn idempotency(
    conn: &Connection,
    principal: &str,
    trigger_id: &str,
    key: &str,
    now_ms: i64,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT request_hash, job_id, response_status, response_body FROM idempotency_keys \
             WHERE principal = ?1 AND trigger_id = ?2 AND idem_key = ?3 AND expires_at > ?4",
        )?
        .query_row(params![principal, trigger_id, key, now_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((request_hash, job_id, status, response_body)) = row else {
        return Ok(None);
    };
    Ok(Some(IdempotencyRecord {
        request_hash,
        job_id,
        response_status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("response_status {status}")))?,
        response_body,
    }))
}

pub(super) fn calls_for_job(
    conn: &Connection,
    job_id: &JobId,
) -> Result<Vec<CallRecord>, StoreError> {
    let ids: Vec<crate::ids::CallId> = conn
        .prepare_cached("SELECT id FROM calls WHERE job_id = ?1 ORDER BY step")?
        .query_map(params![job_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .filter_map(|id| read_call(conn, id).transpose())
        .collect()
}

/// Calls still holding a line that have had no news since `before_ms`
/// (the oldest 100).
pub(super) fn stale_calls(
    conn: &Connection,
    before_ms: i64,
) -> Result<Vec<CallRecord>, StoreError> {
    // The same list as the `calls_active` partial index, so that SQLite
    // uses it.
    let ids: Vec<crate::ids::CallId> = conn
        .prepare_cached(&format!(
            "SELECT id FROM calls WHERE status IN {} AND updated_at < ?1 \
             ORDER BY updated_at LIMIT 100",
            CallStatus::holding_line_sql()
        ))?
        .query_map([before_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .filter_map(|id| read_call(conn, id).transpose())
        .collect()
}

/// Rows by status of jobs, calls and deliveries: (table, status, count).
pub(super) fn status_counts(conn: &Connection) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut out = Vec::new();
    for table in ["jobs", "calls", "deliveries"] {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT status, COUNT(*) FROM {table} GROUP BY status"
        ))?;
        let rows = stmt.query_map([], |r| Ok((table.to_owned(), r.get(0)?, r.get(1)?)))?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}
