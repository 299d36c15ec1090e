//! The stored do-not-call list: one statement each on a pooled connection.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::convert::{execute, get, query, query_opt};
use crate::store::{DncEntry, StoreError};

fn entry(r: &Row) -> Result<DncEntry, StoreError> {
    Ok(DncEntry {
        number: get(r, 0)?,
        added_at_ms: get(r, 1)?,
        added_by: get(r, 2)?,
    })
}

/// Inserts the numbers not on the list yet, in one statement; returns how
/// many.
pub(super) async fn add<C: GenericClient>(
    c: &C,
    numbers: &[String],
    added_by: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    // DISTINCT: ON CONFLICT cannot meet the same key twice in one statement.
    execute(
        c,
        "INSERT INTO do_not_call (number, added_at, added_by) \
         SELECT DISTINCT n, $2::BIGINT, $3::TEXT FROM unnest($1::TEXT[]) AS n \
         ON CONFLICT (number) DO NOTHING",
        &[&numbers, &now_ms, &added_by],
    )
    .await
}

pub(super) async fn remove<C: GenericClient>(c: &C, number: &str) -> Result<bool, StoreError> {
    let n = execute(c, "DELETE FROM do_not_call WHERE number = $1", &[&number]).await?;
    Ok(n > 0)
}

pub(super) async fn get_entry<C: GenericClient>(
    c: &C,
    number: &str,
) -> Result<Option<DncEntry>, StoreError> {
    query_opt(
        c,
        "SELECT number, added_at, added_by FROM do_not_call WHERE number = $1",
        &[&number],
    )
    .await?
    .as_ref()
    .map(entry)
    .transpose()
}

pub(super) async fn list<C: GenericClient>(
    c: &C,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<DncEntry>, StoreError> {
    let limit = limit.max(1) as i64;
    query(
        c,
        "SELECT number, added_at, added_by FROM do_not_call WHERE number > $1 \
         ORDER BY number LIMIT $2",
        &[&after.unwrap_or(""), &limit],
    )
    .await?
    .iter()
    .map(entry)
    .collect()
}
