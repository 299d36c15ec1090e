//! Console sessions: writes for the writer thread (inside its batch
//! transaction), reads for the read connections.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{ConsoleSession, StoreError};

pub(super) fn create(conn: &Connection, s: &ConsoleSession) -> Result<(), StoreError> {
    let scopes =
        serde_json::to_string(&s.scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO console_sessions (id_hash, principal, scopes, csrf_token, created_at, \
         last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        s.id_hash,
        s.principal,
        scopes,
        s.csrf_token,
        s.created_at_ms,
        s.last_seen_at_ms
    ])?;
    Ok(())
}

pub(super) fn get(conn: &Connection, id_hash: &str) -> Result<Option<ConsoleSession>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT id_hash, principal, scopes, csrf_token, created_at, last_seen_at \
             FROM console_sessions WHERE id_hash = ?1",
        )?
        .query_row([id_hash], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()?;
    row.map(|(id_hash, principal, scopes, csrf_token, created, seen)| {
        Ok(ConsoleSession {
            id_hash,
            principal,
            scopes: serde_json::from_str(&scopes)
                .map_err(|e| StoreError::Corrupt(format!("console_sessions.scopes: {e}")))?,
            csrf_token,
            created_at_ms: created,
            last_seen_at_ms: seen,
        })
    })
    .transpose()
}

pub(super) fn touch(conn: &Connection, id_hash: &str, now_ms: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE console_sessions SET last_seen_at = ?2 WHERE id_hash = ?1 AND last_seen_at < ?2",
    )?
    .execute(params![id_hash, now_ms])?;
    Ok(())
}

pub(super) fn delete(conn: &Connection, id_hash: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?
        .execute([id_hash])?;
    Ok(n > 0)
}

pub(super) fn purge(
    conn: &Connection,
    idle_before_ms: i64,
    created_before_ms: i64,
) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM console_sessions WHERE last_seen_at < ?1 OR created_at < ?2")?
        .execute(params![idle_before_ms, created_before_ms])?;
    Ok(n as u64)
}
