//! State every instance shares (`store/shared.rs`): rate tokens and
//! endpoint breakers, each one row read and written under its row lock in
//! one transaction, and the capped delivery claim, serialised per endpoint
//! by an advisory transaction lock so that two instances never both count
//! the same free slots.

use deadpool_postgres::GenericClient;

use super::convert::{execute, get, query_opt};
use super::schema::LOCK_ENDPOINT;
use crate::store::{
    BreakerAdmission, BreakerPolicy, BreakerRow, ClaimedDelivery, StoreError, gcra,
};

/// One token of `key`'s rate (inside a transaction).
pub(super) async fn take_rate_token<C: GenericClient>(
    c: &C,
    key: &str,
    interval_ms: i64,
    burst: u32,
    now_ms: i64,
) -> Result<Result<(), i64>, StoreError> {
    execute(
        c,
        "INSERT INTO rate_tokens (key, tat) VALUES ($1, NULL) ON CONFLICT (key) DO NOTHING",
        &[&key],
    )
    .await?;
    let row = query_opt(
        c,
        "SELECT tat FROM rate_tokens WHERE key = $1 FOR UPDATE",
        &[&key],
    )
    .await?
    .ok_or_else(|| StoreError::Unavailable(format!("rate row {key} vanished")))?;
    let tat: Option<i64> = get(&row, 0)?;
    match gcra(tat, interval_ms, burst, now_ms) {
        Err(wait) => Ok(Err(wait)),
        Ok(tat) => {
            execute(
                c,
                "UPDATE rate_tokens SET tat = $2 WHERE key = $1",
                &[&key, &tat],
            )
            .await?;
            Ok(Ok(()))
        }
    }
}

/// `endpoint`'s breaker row, locked for the transaction (created closed).
async fn locked_breaker<C: GenericClient>(c: &C, endpoint: &str) -> Result<BreakerRow, StoreError> {
    execute(
        c,
        "INSERT INTO endpoint_breakers (endpoint) VALUES ($1) ON CONFLICT (endpoint) DO NOTHING",
        &[&endpoint],
    )
    .await?;
    let row = query_opt(
        c,
        "SELECT failures, open_until, cooldown_ms, probe_until FROM endpoint_breakers \
         WHERE endpoint = $1 FOR UPDATE",
        &[&endpoint],
    )
    .await?
    .ok_or_else(|| StoreError::Unavailable(format!("breaker row {endpoint} vanished")))?;
    Ok(BreakerRow {
        failures: get(&row, 0)?,
        open_until_ms: get(&row, 1)?,
        cooldown_ms: get(&row, 2)?,
        probe_until_ms: get(&row, 3)?,
    })
}

async fn save_breaker<C: GenericClient>(
    c: &C,
    endpoint: &str,
    b: &BreakerRow,
) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE endpoint_breakers SET failures = $2, open_until = $3, cooldown_ms = $4, \
         probe_until = $5 WHERE endpoint = $1",
        &[
            &endpoint,
            &b.failures,
            &b.open_until_ms,
            &b.cooldown_ms,
            &b.probe_until_ms,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn breaker_admit<C: GenericClient>(
    c: &C,
    endpoint: &str,
    now_ms: i64,
    probe_until_ms: i64,
) -> Result<BreakerAdmission, StoreError> {
    // The common case (closed) reads without a lock or a write.
    let row = query_opt(
        c,
        "SELECT open_until FROM endpoint_breakers WHERE endpoint = $1",
        &[&endpoint],
    )
    .await?;
    let open_until: Option<i64> = match &row {
        Some(r) => get(r, 0)?,
        None => None,
    };
    if open_until.is_none() {
        return Ok(BreakerAdmission::Closed);
    }
    let mut b = locked_breaker(c, endpoint).await?;
    let before = b;
    let admission = b.admit(now_ms, probe_until_ms);
    if b != before {
        save_breaker(c, endpoint, &b).await?;
    }
    Ok(admission)
}

pub(super) async fn breaker_record<C: GenericClient>(
    c: &C,
    endpoint: &str,
    ok: bool,
    policy: BreakerPolicy,
    now_ms: i64,
) -> Result<BreakerRow, StoreError> {
    let mut b = locked_breaker(c, endpoint).await?;
    let before = b;
    b.record(ok, policy, now_ms);
    if b != before {
        save_breaker(c, endpoint, &b).await?;
    }
    Ok(b)
}

pub(super) async fn breaker_cancel_probe<C: GenericClient>(
    c: &C,
    endpoint: &str,
) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE endpoint_breakers SET probe_until = NULL WHERE endpoint = $1",
        &[&endpoint],
    )
    .await?;
    Ok(())
}

/// Claims within `cap` minus the endpoint's unexpired leases (inside a
/// transaction, which holds the endpoint's lock until it commits).
pub(super) async fn claim_capped<C: GenericClient>(
    c: &C,
    endpoint: &str,
    claim_id: &str,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
    cap: usize,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    execute(
        c,
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_ENDPOINT, &endpoint],
    )
    .await?;
    // Read after the lock: under READ COMMITTED this statement sees every
    // claim committed by the lock's previous holder.
    let row = query_opt(
        c,
        "SELECT count(*) FROM deliveries WHERE endpoint = $1 AND status = 'sending' \
         AND lease_expires_at >= $2",
        &[&endpoint, &now_ms],
    )
    .await?
    .ok_or_else(|| StoreError::Unavailable("count returned no row".into()))?;
    let busy: i64 = get(&row, 0)?;
    let free = (cap as i64 - busy).max(0) as usize;
    if free == 0 || limit == 0 {
        return Ok(Vec::new());
    }
    super::deliveries::claim(
        c,
        endpoint,
        claim_id,
        now_ms,
        lease_until_ms,
        limit.min(free),
    )
    .await
}
