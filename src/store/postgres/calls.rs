//! Call writes, each inside the caller's transaction. The per-agent line
//! count must hold across instances, so every transaction that counts an
//! agent's lines or frees one takes the agent's advisory transaction lock
//! first (`lock_agent`), then the rows it changes: counting and changing
//! are serialised per agent, in one lock order.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::convert::{call_id, call_status, execute, get, job_id, json, query, query_opt};
use super::schema::LOCK_AGENT;
use crate::ids::CallId;
use crate::store::CallStatus;
use crate::store::{CallEventIn, CallRecord, EventApplied, NewCall, Reservation, StoreError};

/// Holds `agent_id`'s line lock until the transaction ends.
pub(super) async fn lock_agent<C: GenericClient>(c: &C, agent_id: &str) -> Result<(), StoreError> {
    query(
        c,
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_AGENT, &agent_id],
    )
    .await?;
    Ok(())
}

pub(super) async fn reserve_call<C: GenericClient>(
    c: &C,
    call: &NewCall,
    max_active: u32,
) -> Result<Reservation, StoreError> {
    lock_agent(c, &call.agent_id).await?;
    if let Some(row) = query_opt(
        c,
        "SELECT id FROM calls WHERE job_id = $1 AND step = $2",
        &[&call.job_id.as_str(), &call.step],
    )
    .await?
    {
        return Ok(Reservation::Existing(call_id(&row, 0)?));
    }
    let active = active_calls(c, &call.agent_id).await?;
    if active >= i64::from(max_active) {
        return Ok(Reservation::Busy { active });
    }
    let (variables, origin) = (call.variables.to_string(), call.origin.to_string());
    execute(
        c,
        "INSERT INTO calls (id, job_id, step, agent_id, to_number, from_number, provider, status, \
         custom, variables, origin, dial_attempts, created_at, updated_at, dial_requested_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'dialing', '{}', $8, $10, 1, $9, $9, $9)",
        &[
            &call.id.as_str(),
            &call.job_id.as_str(),
            &call.step,
            &call.agent_id,
            &call.to,
            &call.from,
            &call.provider,
            &variables,
            &call.now_ms,
            &origin,
        ],
    )
    .await?;
    Ok(Reservation::Created(call.id.clone()))
}

/// Calls of `agent_id` that hold a line.
pub(super) async fn active_calls<C: GenericClient>(
    c: &C,
    agent_id: &str,
) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT COUNT(*) FROM calls WHERE agent_id = $1 AND status IN {}",
        CallStatus::holding_line_sql()
    );
    let rows = query(c, &sql, &[&agent_id]).await?;
    rows.first().map(|r| get(r, 0)).unwrap_or(Ok(0))
}

/// Locks a call for a change: its agent's line lock, then its row. Its
/// status and agent, or `Corrupt` when there is no such call.
async fn lock_call<C: GenericClient>(
    c: &C,
    call: &CallId,
) -> Result<(CallStatus, String), StoreError> {
    let missing = || StoreError::Corrupt(format!("no call {call}"));
    // The agent of a call never changes: read it before taking its lock.
    let row = query_opt(
        c,
        "SELECT agent_id FROM calls WHERE id = $1",
        &[&call.as_str()],
    )
    .await?
    .ok_or_else(missing)?;
    let agent: String = get(&row, 0)?;
    lock_agent(c, &agent).await?;
    let row = query_opt(
        c,
        "SELECT status FROM calls WHERE id = $1 FOR UPDATE",
        &[&call.as_str()],
    )
    .await?
    .ok_or_else(missing)?;
    Ok((call_status(&row, 0)?, agent))
}

/// When a call moves off a status that held a line, the agent's oldest
/// line waiter becomes due (in the same transaction as the move).
async fn on_status_change<C: GenericClient>(
    c: &C,
    agent_id: &str,
    from: CallStatus,
    to: CallStatus,
    now_ms: i64,
) -> Result<(), StoreError> {
    if from.holds_line() && !to.holds_line() {
        wake_line_waiters(c, agent_id, 1, now_ms).await?;
    }
    Ok(())
}

pub(super) async fn call_dialed<C: GenericClient>(
    c: &C,
    call: &CallId,
    provider_call_id: Option<&str>,
    status: CallStatus,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (current, agent) = lock_call(c, call).await?;
    let next = if current.may_become(status) {
        status
    } else {
        current
    };
    on_status_change(c, &agent, current, next, now_ms).await?;
    execute(
        c,
        "UPDATE calls SET provider_call_id = COALESCE($2, provider_call_id), status = $3, \
         error = NULL, updated_at = $4 WHERE id = $1",
        &[&call.as_str(), &provider_call_id, &next.as_str(), &now_ms],
    )
    .await?;
    Ok(())
}

pub(super) async fn redial_call<C: GenericClient>(
    c: &C,
    call: &CallId,
    max_active: u32,
    now_ms: i64,
) -> Result<Reservation, StoreError> {
    let (current, agent) = lock_call(c, call).await?;
    if !current.holds_line() {
        let active = active_calls(c, &agent).await?;
        if active >= i64::from(max_active) {
            return Ok(Reservation::Busy { active });
        }
    }
    write_status(c, call, &agent, current, CallStatus::Dialing, None, now_ms).await?;
    Ok(Reservation::Created(call.clone()))
}

pub(super) async fn set_call_status<C: GenericClient>(
    c: &C,
    call: &CallId,
    status: CallStatus,
    error: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (current, agent) = lock_call(c, call).await?;
    write_status(c, call, &agent, current, status, error, now_ms).await
}

async fn write_status<C: GenericClient>(
    c: &C,
    call: &CallId,
    agent: &str,
    current: CallStatus,
    status: CallStatus,
    error: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    on_status_change(c, agent, current, status, now_ms).await?;
    let redial = i64::from(status == CallStatus::Dialing);
    execute(
        c,
        "UPDATE calls SET status = $2, error = $3, updated_at = $4, \
         dial_attempts = dial_attempts + $5, \
         dial_requested_at = CASE WHEN $5 = 1 THEN $4 ELSE dial_requested_at END, \
         ended_at = CASE WHEN $2 IN ('failed', 'canceled') THEN $4 ELSE ended_at END WHERE id = $1",
        &[&call.as_str(), &status.as_str(), &error, &now_ms, &redial],
    )
    .await?;
    Ok(())
}

/// Applies one event; returns what happened and, on a move to a final
/// status, the call as it is now (for the caller's follow-ups).
pub(super) async fn apply_call_event<C: GenericClient>(
    c: &C,
    e: &CallEventIn,
) -> Result<(EventApplied, Option<CallRecord>), StoreError> {
    let (current, agent) = lock_call(c, &e.call_id).await?;
    let moved_to = e.status.filter(|s| current.may_become(*s));
    let inserted = execute(
        c,
        "INSERT INTO call_events (call_id, event_key, received_at, status, applied, body) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_id, event_key) DO NOTHING",
        &[
            &e.call_id.as_str(),
            &e.event_key,
            &e.now_ms,
            &e.status.map(CallStatus::as_str),
            &moved_to.is_some(),
            &e.body,
        ],
    )
    .await?;
    if inserted == 0 {
        return Ok((EventApplied::Duplicate, None));
    }
    let status = moved_to.unwrap_or(current);
    on_status_change(c, &agent, current, status, e.now_ms).await?;
    let answered = matches!(moved_to, Some(CallStatus::InProgress));
    let ended = moved_to.is_some_and(CallStatus::is_final);
    // Details are taken from any new event (a late `call_analyzed` adds the
    // summary); only the status is monotonic. `custom` is merged as a JSON
    // merge patch (RFC 7396, what SQLite's json_patch does), under the row
    // lock.
    let custom = if e.custom.is_empty() {
        None
    } else {
        let row = query_opt(
            c,
            "SELECT custom FROM calls WHERE id = $1",
            &[&e.call_id.as_str()],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("no call {}", e.call_id)))?;
        let mut custom = json(get(&row, 0)?)?;
        merge_patch(&mut custom, &serde_json::Value::Object(e.custom.clone()));
        Some(custom.to_string())
    };
    execute(
        c,
        "UPDATE calls SET status = $2, \
         provider_call_id = COALESCE(provider_call_id, $3), \
         duration_seconds = COALESCE($4, duration_seconds), \
         outcome = COALESCE($5, outcome), transcript = COALESCE($6, transcript), \
         summary = COALESCE($7, summary), recording_url = COALESCE($8, recording_url), \
         custom = COALESCE($9, custom), updated_at = $10, \
         answered_at = CASE WHEN $11 AND answered_at IS NULL THEN $10 ELSE answered_at END, \
         ended_at = CASE WHEN $12 THEN $10 ELSE ended_at END \
         WHERE id = $1",
        &[
            &e.call_id.as_str(),
            &status.as_str(),
            &e.provider_call_id,
            &e.duration_seconds,
            &e.outcome,
            &e.transcript,
            &e.summary,
            &e.recording_url,
            &custom,
            &e.now_ms,
            &answered,
            &ended,
        ],
    )
    .await?;
    let record = if ended {
        read_call(c, &e.call_id).await?
    } else {
        None
    };
    Ok((EventApplied::Applied { moved_to }, record))
}

/// RFC 7396: `null` removes a key, objects merge recursively, anything
/// else replaces.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    if let serde_json::Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(
                    map.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
    }
}

/// The `n` oldest jobs waiting for one of `agent_id`'s lines become due
/// (lines were freed). Only as many as lines freed.
async fn wake_line_waiters<C: GenericClient>(
    c: &C,
    agent_id: &str,
    n: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    execute(
        c,
        "UPDATE jobs SET run_at = $2 WHERE id IN (SELECT id FROM jobs \
         WHERE status = 'waiting' AND wait_agent = $1 AND run_at > $2 \
         ORDER BY created_at, id LIMIT $3)",
        &[&agent_id, &now_ms, &n],
    )
    .await?;
    Ok(())
}

pub(super) const CALL_COLUMNS: &str = "id, job_id, step, agent_id, to_number, from_number, \
     provider, provider_call_id, status, outcome, duration_seconds, custom, variables, transcript, \
     summary, recording_url, error, dial_attempts, created_at, updated_at, dial_requested_at, \
     answered_at, ended_at, origin";

pub(super) fn call_record(r: &Row) -> Result<CallRecord, StoreError> {
    Ok(CallRecord {
        id: call_id(r, 0)?,
        job_id: job_id(r, 1)?,
        step: get(r, 2)?,
        agent_id: get(r, 3)?,
        to: get(r, 4)?,
        from: get(r, 5)?,
        provider: get(r, 6)?,
        provider_call_id: get(r, 7)?,
        status: call_status(r, 8)?,
        outcome: get(r, 9)?,
        duration_seconds: get(r, 10)?,
        custom: json(get(r, 11)?)?,
        variables: json(get(r, 12)?)?,
        transcript: get(r, 13)?,
        summary: get(r, 14)?,
        recording_url: get(r, 15)?,
        error: get(r, 16)?,
        dial_attempts: get(r, 17)?,
        created_at_ms: get(r, 18)?,
        updated_at_ms: get(r, 19)?,
        dial_requested_at_ms: get(r, 20)?,
        answered_at_ms: get(r, 21)?,
        ended_at_ms: get(r, 22)?,
        origin: json(get(r, 23)?)?,
    })
}

pub(super) async fn read_call<C: GenericClient>(
    c: &C,
    id: &CallId,
) -> Result<Option<CallRecord>, StoreError> {
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1");
    query_opt(c, &sql, &[&id.as_str()])
        .await?
        .as_ref()
        .map(call_record)
        .transpose()
}
