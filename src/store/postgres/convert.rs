//! How PostgreSQL errors and columns become the store's: errors by kind
//! (where they arise, and their SQLSTATE class), never by message text; a
//! value that cannot be read back (an unknown status, text that is not
//! JSON) is `Corrupt`, never silently replaced by a default.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use crate::ids::{CallId, DeliveryId, JobId, MsgId, TriggerId};
use crate::store::{CallStatus, DeliveryStatus, JobStatus, StoreError};

/// A statement or connection failure. Every one means the database could
/// not do the write or read now (connection lost, statement or lock
/// timeout, deadlock, admin shutdown, constraint violated by a concurrent
/// writer): `Unavailable`, which callers retry or answer with 503.
impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code) => StoreError::Unavailable(format!("{} ({})", e, code.code())),
            None => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Column `i` of `row`; a value of the wrong type is `Corrupt`.
pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

pub(super) fn json(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("not JSON: {e}")))
}

pub(super) fn json_opt(text: Option<String>) -> Result<Option<serde_json::Value>, StoreError> {
    text.as_deref().map(json).transpose()
}

pub(super) fn job_id(row: &Row, i: usize) -> Result<JobId, StoreError> {
    Ok(JobId::from_stored(get(row, i)?))
}

pub(super) fn job_id_opt(row: &Row, i: usize) -> Result<Option<JobId>, StoreError> {
    Ok(get::<Option<String>>(row, i)?.map(JobId::from_stored))
}

pub(super) fn call_id(row: &Row, i: usize) -> Result<CallId, StoreError> {
    Ok(CallId::from_stored(get(row, i)?))
}

pub(super) fn call_id_opt(row: &Row, i: usize) -> Result<Option<CallId>, StoreError> {
    Ok(get::<Option<String>>(row, i)?.map(CallId::from_stored))
}

pub(super) fn delivery_id(row: &Row, i: usize) -> Result<DeliveryId, StoreError> {
    Ok(DeliveryId::from_stored(get(row, i)?))
}

pub(super) fn msg_id(row: &Row, i: usize) -> Result<MsgId, StoreError> {
    Ok(MsgId::from_stored(get(row, i)?))
}

/// Jobs started by call events have no trigger: stored as ''.
pub(super) fn trigger_id(row: &Row, i: usize) -> Result<Option<TriggerId>, StoreError> {
    let s: &str = get(row, i)?;
    if s.is_empty() {
        return Ok(None);
    }
    TriggerId::parse(s)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("trigger id `{s}`: {e}")))
}

pub(super) fn job_status(row: &Row, i: usize) -> Result<JobStatus, StoreError> {
    let s: &str = get(row, i)?;
    JobStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("`{s}` is not a job status")))
}

pub(super) fn call_status(row: &Row, i: usize) -> Result<CallStatus, StoreError> {
    let s: &str = get(row, i)?;
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("`{s}` is not a call status")))
}

pub(super) fn delivery_status(row: &Row, i: usize) -> Result<DeliveryStatus, StoreError> {
    let s: &str = get(row, i)?;
    DeliveryStatus::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("`{s}` is not a delivery status")))
}

/// Statement parameters.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Runs `sql` (prepared once per connection) and returns its rows.
pub(super) async fn query<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

/// Runs `sql` and returns its row, if any.
pub(super) async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

/// Runs `sql` and returns how many rows it changed.
pub(super) async fn execute<C: GenericClient>(
    c: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}
