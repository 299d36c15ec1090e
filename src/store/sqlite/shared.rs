//! Rate tokens, endpoint breakers and the capped delivery claim
//! (`store/shared.rs`), on the writer thread: every write is serialised
//! there already, so a row read and rewritten inside one task is atomic.
//! (One process writes an SQLite file; the same rules as PostgreSQL keep
//! the engines interchangeable and the suite one.)

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{
    BreakerAdmission, BreakerPolicy, BreakerRow, ClaimedDelivery, StoreError, gcra,
};

pub(super) fn take_rate_token(
    conn: &Connection,
    key: &str,
    interval_ms: i64,
    burst: u32,
    now_ms: i64,
) -> Result<Result<(), i64>, StoreError> {
    let tat: Option<i64> = conn
        .prepare_cached("SELECT tat FROM rate_tokens WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?
        .flatten();
    match gcra(tat, interval_ms, burst, now_ms) {
        Err(wait) => Ok(Err(wait)),
        Ok(tat) => {
            conn.prepare_cached(
                "INSERT INTO rate_tokens (key, tat) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
            )?
            .execute(params![key, tat])?;
            Ok(Ok(()))
        }
    }
}

fn load(conn: &Connection, endpoint: &str) -> Result<BreakerRow, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT failures, open_until, cooldown_ms, probe_until FROM endpoint_breakers \
             WHERE endpoint = ?1",
        )?
        .query_row([endpoint], |r| {
            Ok(BreakerRow {
                failures: r.get(0)?,
                open_until_ms: r.get(1)?,
                cooldown_ms: r.get(2)?,
                probe_until_ms: r.get(3)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

fn save(conn: &Connection, endpoint: &str, b: &BreakerRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO endpoint_breakers (endpoint, failures, open_until, cooldown_ms, probe_until) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (endpoint) DO UPDATE SET \
         failures = excluded.failures, open_until = excluded.open_until, \
         cooldown_ms = excluded.cooldown_ms, probe_until = excluded.probe_until",
    )?
    .execute(params![
        endpoint,
        b.failures,
        b.open_until_ms,
        b.cooldown_ms,
        b.probe_until_ms
    ])?;
    Ok(())
}

/// Whether the endpoint's breaker is closed (no row, or not open).
pub(super) fn breaker_closed(conn: &Connection, endpoint: &str) -> Result<bool, StoreError> {
    Ok(load(conn, endpoint)?.open_until_ms.is_none())
}

pub(super) fn breaker_admit(
    conn: &Connection,
    endpoint: &str,
    now_ms: i64,
    probe_until_ms: i64,
) -> Result<BreakerAdmission, StoreError> {
    let mut b = load(conn, endpoint)?;
    let before = b;
    let admission = b.admit(now_ms, probe_until_ms);
    if b != before {
        save(conn, endpoint, &b)?;
    }
    Ok(admission)
}

pub(super) fn breaker_record(
    conn: &Connection,
    endpoint: &str,
    ok: bool,
    policy: BreakerPolicy,
    now_ms: i64,
) -> Result<BreakerRow, StoreError> {
    let mut b = load(conn, endpoint)?;
    let before = b;
    b.record(ok, policy, now_ms);
    if b != before {
        save(conn, endpoint, &b)?;
    }
    Ok(b)
}

pub(super) fn breaker_cancel_probe(conn: &Connection, endpoint: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE endpoint_breakers SET probe_until = NULL WHERE endpoint = ?1")?
        .execute([endpoint])?;
    Ok(())
}

/// Claims within `cap` minus the endpoint's unexpired leases.
pub(super) fn claim_capped(
    conn: &Connection,
    endpoint: &str,
    claim_id: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
    cap: usize,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let busy: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM deliveries WHERE endpoint = ?1 AND status = 'sending' \
             AND lease_expires_at >= ?2",
        )?
        .query_row(params![endpoint, now_ms], |r| r.get(0))?;
    let free = (cap as i64 - busy).max(0) as usize;
    if free == 0 || limit == 0 {
        return Ok(Vec::new());
    }
    super::deliveries::claim(
        conn,
        endpoint,
        claim_id,
        now_ms,
        lease_until_ms,
        limit.min(free),
    )
}
