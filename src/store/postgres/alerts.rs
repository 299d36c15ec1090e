//! Alerts: the claim that deduplicates them across instances and the
//! delivery success counts the success-rate alert reads.

use deadpool_postgres::GenericClient;

use super::convert::{execute, get, query};
use crate::store::{EndpointSuccess, StoreError};

/// Forgets alerts older than the window, then claims (`kind`, `subject`):
/// `true` when no instance sent it within `window_ms` (the upsert is
/// atomic, so of instances racing on one alert exactly one wins).
pub(super) async fn claim<C: GenericClient>(
    c: &C,
    kind: &str,
    subject: &str,
    now_ms: i64,
    window_ms: i64,
) -> Result<bool, StoreError> {
    execute(
        c,
        "DELETE FROM alerts_sent WHERE sent_at <= $1",
        &[&(now_ms - window_ms)],
    )
    .await?;
    let n = execute(
        c,
        "INSERT INTO alerts_sent (kind, subject, sent_at) VALUES ($1, $2, $3) \
         ON CONFLICT (kind, subject) DO UPDATE SET sent_at = excluded.sent_at \
         WHERE alerts_sent.sent_at <= excluded.sent_at - $4",
        &[&kind, &subject, &now_ms, &window_ms],
    )
    .await?;
    Ok(n > 0)
}

pub(super) async fn success_since<C: GenericClient>(
    c: &C,
    since_ms: i64,
) -> Result<Vec<EndpointSuccess>, StoreError> {
    query(
        c,
        "SELECT d.endpoint, COUNT(*)::BIGINT, \
         SUM(CASE WHEN a.response_status BETWEEN 200 AND 299 THEN 1 ELSE 0 END)::BIGINT \
         FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
         WHERE a.started_at >= $1 GROUP BY d.endpoint ORDER BY d.endpoint",
        &[&since_ms],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(EndpointSuccess {
            endpoint: get(r, 0)?,
            attempts: get::<i64>(r, 1)? as u64,
            succeeded: get::<i64>(r, 2)? as u64,
        })
    })
    .collect()
}
