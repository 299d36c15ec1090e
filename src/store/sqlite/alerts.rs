//! Alerts: the claim that deduplicates them (on the writer thread) and the
//! delivery success counts the success-rate alert reads.

use rusqlite::{Connection, params};

use crate::store::{EndpointSuccess, StoreError};

/// Forgets alerts older than the window, then claims (`kind`, `subject`):
/// `true` when it was not sent within `window_ms`.
pub(super) fn claim(
    conn: &Connection,
    kind: &str,
    subject: &str,
    now_ms: i64,
    window_ms: i64,
) -> Result<bool, StoreError> {
    conn.prepare_cached("DELETE FROM alerts_sent WHERE sent_at <= ?1")?
        .execute([now_ms - window_ms])?;
    let n = conn
        .prepare_cached(
            "INSERT INTO alerts_sent (kind, subject, sent_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (kind, subject) DO UPDATE SET sent_at = excluded.sent_at \
             WHERE alerts_sent.sent_at <= excluded.sent_at - ?4",
        )?
        .execute(params![kind, subject, now_ms, window_ms])?;
    Ok(n > 0)
}

pub(super) fn success_since(
    conn: &Connection,
    since_ms: i64,
) -> Result<Vec<EndpointSuccess>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT d.endpoint, COUNT(*), \
             SUM(CASE WHEN a.response_status BETWEEN 200 AND 299 THEN 1 ELSE 0 END) \
             FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE a.started_at >= ?1 GROUP BY d.endpoint ORDER BY d.endpoint",
        )?
        .query_map([since_ms], |r| {
            Ok(EndpointSuccess {
                endpoint: r.get(0)?,
                attempts: r.get::<_, i64>(1)? as u64,
                succeeded: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
