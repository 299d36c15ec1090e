//! API keys made through the API: writes for the writer thread (inside its
//! batch transaction), reads for the read connections.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::store::api_keys::{ApiKeyColumns, COLUMNS};
use crate::store::{ApiKeyRecord, StoreError};

fn record(r: &Row<'_>) -> rusqlite::Result<ApiKeyColumns> {
    Ok(ApiKeyColumns {
        name: r.get(0)?,
        hash: r.get(1)?,
        scopes: r.get(2)?,
        allowed_ips: r.get(3)?,
        rate_requests: r.get(4)?,
        rate_per_ms: r.get(5)?,
        rate_burst: r.get(6)?,
        created_at: r.get(7)?,
        created_by: r.get(8)?,
        disabled_at: r.get(9)?,
        last_used_at: r.get(10)?,
    })
}

/// Inserts the key; `false` (nothing written) when its name is taken.
pub(super) fn create(conn: &Connection, key: &ApiKeyRecord) -> Result<bool, StoreError> {
    let c = ApiKeyColumns::from_record(key);
    let n = conn
        .prepare_cached(&format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (name) DO NOTHING"
        ))?
        .execute(params![
            c.name,
            c.hash,
            c.scopes,
            c.allowed_ips,
            c.rate_requests,
            c.rate_per_ms,
            c.rate_burst,
            c.created_at,
            c.created_by,
            c.disabled_at,
            c.last_used_at
        ])?;
    Ok(n > 0)
}

pub(super) fn list(conn: &Connection) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let rows: Vec<ApiKeyColumns> = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY name"))?
        .query_map([], record)?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(ApiKeyColumns::into_record).collect()
}

/// Disables the key (a second time keeps the first time); `None` when
/// there is no such key.
pub(super) fn disable(
    conn: &Connection,
    name: &str,
    now_ms: i64,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    conn.prepare_cached(
        "UPDATE api_keys SET disabled_at = COALESCE(disabled_at, ?2) WHERE name = ?1",
    )?
    .execute(params![name, now_ms])?;
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys WHERE name = ?1"))?
        .query_row([name], record)
        .optional()?
        .map(ApiKeyColumns::into_record)
        .transpose()
}

/// Moves each key's last use forward (never back).
pub(super) fn record_use(conn: &Connection, uses: &[(String, i64)]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE api_keys SET last_used_at = ?2 \
         WHERE name = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
    )?;
    for (name, at) in uses {
        stmt.execute(params![name, at])?;
    }
    Ok(())
}
