//! Console sessions: one statement each on a pooled connection.

use deadpool_postgres::GenericClient;

use super::convert::{execute, get, query_opt};
use crate::store::{ConsoleSession, StoreError};

pub(super) async fn create<C: GenericClient>(c: &C, s: &ConsoleSession) -> Result<(), StoreError> {
    let scopes =
        serde_json::to_string(&s.scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    execute(
        c,
        "INSERT INTO console_sessions (id_hash, principal, scopes, csrf_token, created_at, \
         last_seen_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &s.id_hash,
            &s.principal,
            &scopes,
            &s.csrf_token,
            &s.created_at_ms,
            &s.last_seen_at_ms,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn get_session<C: GenericClient>(
    c: &C,
    id_hash: &str,
) -> Result<Option<ConsoleSession>, StoreError> {
    let Some(r) = query_opt(
        c,
        "SELECT id_hash, principal, scopes, csrf_token, created_at, last_seen_at \
         FROM console_sessions WHERE id_hash = $1",
        &[&id_hash],
    )
    .await?
    else {
        return Ok(None);
    };
    let scopes: String = get(&r, 2)?;
    Ok(Some(ConsoleSession {
        id_hash: get(&r, 0)?,
        principal: get(&r, 1)?,
        scopes: serde_json::from_str(&scopes)
            .map_err(|e| StoreError::Corrupt(format!("console_sessions.scopes: {e}")))?,
        csrf_token: get(&r, 3)?,
        created_at_ms: get(&r, 4)?,
        last_seen_at_ms: get(&r, 5)?,
    }))
}

pub(super) async fn touch<C: GenericClient>(
    c: &C,
    id_hash: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE console_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2",
        &[&id_hash, &now_ms],
    )
    .await?;
    Ok(())
}

pub(super) async fn delete<C: GenericClient>(c: &C, id_hash: &str) -> Result<bool, StoreError> {
    let n = execute(
        c,
        "DELETE FROM console_sessions WHERE id_hash = $1",
        &[&id_hash],
    )
    .await?;
    Ok(n > 0)
}

pub(super) async fn purge<C: GenericClient>(
    c: &C,
    idle_before_ms: i64,
    created_before_ms: i64,
) -> Result<u64, StoreError> {
    execute(
        c,
        "DELETE FROM console_sessions WHERE last_seen_at < $1 OR created_at < $2",
        &[&idle_before_ms, &created_before_ms],
    )
    .await
}
