//! API keys made through the API: one statement each on a pooled
//! connection.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::convert::{execute, get, query, query_opt};
use crate::store::api_keys::{ApiKeyColumns, COLUMNS};
use crate::store::{ApiKeyRecord, StoreError};

fn record(r: &Row) -> Result<ApiKeyRecord, StoreError> {
    ApiKeyColumns {
        name: get(r, 0)?,
        hash: get(r, 1)?,
        scopes: get(r, 2)?,
        allowed_ips: get(r, 3)?,
        rate_requests: get(r, 4)?,
        rate_per_ms: get(r, 5)?,
        rate_burst: get(r, 6)?,
        created_at: get(r, 7)?,
        created_by: get(r, 8)?,
        disabled_at: get(r, 9)?,
        last_used_at: get(r, 10)?,
    }
    .into_record()
}

/// Inserts the key; `false` (nothing written) when its name is taken.
pub(super) async fn create<C: GenericClient>(
    c: &C,
    key: &ApiKeyRecord,
) -> Result<bool, StoreError> {
    let k = ApiKeyColumns::from_record(key);
    let n = execute(
        c,
        &format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (name) DO NOTHING"
        ),
        &[
            &k.name,
            &k.hash,
            &k.scopes,
            &k.allowed_ips,
            &k.rate_requests,
            &k.rate_per_ms,
            &k.rate_burst,
            &k.created_at,
            &k.created_by,
            &k.disabled_at,
            &k.last_used_at,
        ],
    )
    .await?;
    Ok(n > 0)
}

pub(super) async fn list<C: GenericClient>(c: &C) -> Result<Vec<ApiKeyRecord>, StoreError> {
    query(
        c,
        &format!("SELECT {COLUMNS} FROM api_keys ORDER BY name"),
        &[],
    )
    .await?
    .iter()
    .map(record)
    .collect()
}

/// Disables the key (a second time keeps the first time); `None` when
/// there is no such key.
pub(super) async fn disable<C: GenericClient>(
    c: &C,
    name: &str,
    now_ms: i64,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    query_opt(
        c,
        &format!(
            "UPDATE api_keys SET disabled_at = COALESCE(disabled_at, $2) WHERE name = $1 \
             RETURNING {COLUMNS}"
        ),
        &[&name, &now_ms],
    )
    .await?
    .as_ref()
    .map(record)
    .transpose()
}

/// Moves each key's last use forward (never back), in one statement.
pub(super) async fn record_use<C: GenericClient>(
    c: &C,
    uses: &[(String, i64)],
) -> Result<(), StoreError> {
    let (names, times): (Vec<&str>, Vec<i64>) = uses.iter().map(|(n, t)| (n.as_str(), *t)).unzip();
    execute(
        c,
        "UPDATE api_keys AS k SET last_used_at = u.at \
         FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(name, at) \
         WHERE k.name = u.name AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
        &[&names, &times],
    )
    .await?;
    Ok(())
}
