//! The stored do-not-call list: writes for the writer thread (inside its
//! batch transaction), reads for the read connections.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::store::{DncEntry, StoreError};

fn entry(r: &Row<'_>) -> rusqlite::Result<DncEntry> {
    Ok(DncEntry {
        number: r.get(0)?,
        added_at_ms: r.get(1)?,
        added_by: r.get(2)?,
    })
}

/// Inserts the numbers not on the list yet; returns how many.
pub(super) fn add(
    conn: &Connection,
    numbers: &[String],
    added_by: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO do_not_call (number, added_at, added_by) VALUES (?1, ?2, ?3) \
         ON CONFLICT (number) DO NOTHING",
    )?;
    let mut added = 0;
    for n in numbers {
        added += stmt.execute(params![n, now_ms, added_by])? as u64;
    }
    Ok(added)
}

pub(super) fn remove(conn: &Connection, number: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM do_not_call WHERE number = ?1")?
        .execute([number])?;
    Ok(n > 0)
}

pub(super) fn get(conn: &Connection, number: &str) -> Result<Option<DncEntry>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT number, added_at, added_by FROM do_not_call WHERE number = ?1")?
        .query_row([number], entry)
        .optional()?)
}

pub(super) fn list(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<DncEntry>, StoreError> {
    // '' sorts before every number.
    let rows = conn
        .prepare_cached(
            "SELECT number, added_at, added_by FROM do_not_call WHERE number > ?1 \
             ORDER BY number LIMIT ?2",
        )?
        .query_map(params![after.unwrap_or(""), limit.max(1) as i64], entry)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}
