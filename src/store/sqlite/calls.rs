//! Call writes, as tasks for the writer thread. Each runs inside the batch
//! transaction (its own savepoint), so the check-then-write steps here (line
//! counts, monotonic status, waking a line's waiters) are atomic.

use rusqlite::{Connection, OptionalExtension, params};

use crate::ids::CallId;
use crate::store::CallStatus;
use crate::store::{CallEventIn, CallRecord, EventApplied, NewCall, Reservation, StoreError};

pub(super) fn reserve_call(
    conn: &Connection,
    c: &NewCall,
    max_active: u32,
) -> Result<Reservation, StoreError> {
    let existing: Option<CallId> = conn
        .prepare_cached("SELECT id FROM calls WHERE job_id = ?1 AND step = ?2")?
        .query_row(params![c.job_id, c.step], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(Reservation::Existing(id));
    }
    let active = active_calls(conn, &c.agent_id)?;
    if active >= i64::from(max_active) {
        return Ok(Reservation::Busy { active });
    }
    conn.prepare_cached(
        "INSERT INTO calls (id, job_id, step, agent_id, to_number, from_number, provider, status, \
         custom, variables, origin, dial_attempts, created_at, updated_at, dial_requested_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'dialing', '{}', ?8, ?10, 1, ?9, ?9, ?9)",
    )?
    .execute(params![
        c.id,
        c.job_id,
        c.step,
        c.agent_id,
        c.to,
        c.from,
        c.provider,
        c.variables.to_string(),
        c.now_ms,
        c.origin.to_string()
    ])?;
    Ok(Reservation::Created(c.id.clone()))
}

/// Calls of `agent_id` that hold a line.
pub(super) fn active_calls(conn: &Connection, agent_id: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM calls WHERE agent_id = ?1 AND status IN {}",
            CallStatus::holding_line_sql()
        ))?
        .query_row(params![agent_id], |r| r.get(0))?)
}

/// A call's status and agent.
fn status_of(
    conn: &Connection,
    call_id: &CallId,
) -> Result<Option<(CallStatus, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT status, agent_id FROM calls WHERE id = ?1")?
        .query_row(params![call_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// When a call moves off a status that held a line, the agent's oldest
/// line waiter becomes due (in the same transaction as the move).
fn on_status_change(
    conn: &Connection,
    agent_id: &str,
    from: CallStatus,
    to: CallStatus,
    now_ms: i64,
) -> Result<(), StoreError> {
    if from.holds_line() && !to.holds_line() {
        wake_line_waiters(conn, agent_id, 1, now_ms)?;
    }
    Ok(())
}

pub(super) fn call_dialed(
    conn: &Connection,
    call_id: &CallId,
    provider_call_id: Option<&str>,
    status: CallStatus,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (current, agent) = status_of(conn, call_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("no call {call_id}")))?;
    let next = if current.may_become(status) {
        status
    } else {
        current
    };
    on_status_change(conn, &agent, current, next, now_ms)?;
    conn.prepare_cached(
        "UPDATE calls SET provider_call_id = COALESCE(?2, provider_call_id), status = ?3, \
         error = NULL, updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![call_id, provider_call_id, next, now_ms])?;
    Ok(())
}

pub(super) fn redial_call(
    conn: &Connection,
    call_id: &CallId,
    max_active: u32,
    now_ms: i64,
) -> Result<Reservation, StoreError> {
    let (current, agent) = status_of(conn, call_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("no call {call_id}")))?;
    if !current.holds_line() {
        let active = active_calls(conn, &agent)?;
        if active >= i64::from(max_active) {
            return Ok(Reservation::Busy { active });
        }
    }
    set_call_status(conn, call_id, CallStatus::Dialing, None, now_ms)?;
    Ok(Reservation::Created(call_id.clone()))
}

pub(super) fn set_call_status(
    conn: &Connection,
    call_id: &CallId,
    status: CallStatus,
    error: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (current, agent) = status_of(conn, call_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("no call {call_id}")))?;
    on_status_change(conn, &agent, current, status, now_ms)?;
    let redial = i64::from(status == CallStatus::Dialing);
    conn.prepare_cached(
        "UPDATE calls SET status = ?2, error = ?3, updated_at = ?4, dial_attempts = dial_attempts + ?5, \
         dial_requested_at = CASE WHEN ?5 = 1 THEN ?4 ELSE dial_requested_at END, \
         ended_at = CASE WHEN ?2 IN ('failed', 'canceled') THEN ?4 ELSE ended_at END WHERE id = ?1",
    )?
    .execute(params![call_id, status, error, now_ms, redial])?;
    Ok(())
}

/// Applies one event; returns what happened and, on a move to a final
/// status, the call's job id and agent (for the caller's follow-ups).
pub(super) fn apply_call_event(
    conn: &Connection,
    e: &CallEventIn,
) -> Result<(EventApplied, Option<CallRecord>), StoreError> {
    let Some((current, agent)) = status_of(conn, &e.call_id)? else {
        return Err(StoreError::Corrupt(format!("no call {}", e.call_id)));
    };
    let moved_to = e.status.filter(|s| current.may_become(*s));
    let inserted = conn
        .prepare_cached(
            "INSERT INTO call_events (call_id, event_key, received_at, status, applied, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (call_id, event_key) DO NOTHING",
        )?
        .execute(params![
            e.call_id,
            e.event_key,
            e.now_ms,
            e.status.map(CallStatus::as_str),
            moved_to.is_some(),
            e.body
        ])?;
    if inserted == 0 {
        return Ok((EventApplied::Duplicate, None));
    }
    let status = moved_to.unwrap_or(current);
    on_status_change(conn, &agent, current, status, e.now_ms)?;
    let answered = matches!(moved_to, Some(CallStatus::InProgress));
    let ended = moved_to.is_some_and(CallStatus::is_final);
    // Details are taken from any new event (a late `call_analyzed` adds the
    // summary); only the status is monotonic.
    conn.prepare_cached(
        "UPDATE calls SET status = ?2, \
         provider_call_id = COALESCE(provider_call_id, ?3), \
         duration_seconds = COALESCE(?4, duration_seconds), \
         outcome = COALESCE(?5, outcome), transcript = COALESCE(?6, transcript), \
         summary = COALESCE(?7, summary), recording_url = COALESCE(?8, recording_url), \
         custom = json_patch(custom, ?9), updated_at = ?10, \
         answered_at = CASE WHEN ?11 AND answered_at IS NULL THEN ?10 ELSE answered_at END, \
         ended_at = CASE WHEN ?12 THEN ?10 ELSE ended_at END \
         WHERE id = ?1",
    )?
    .execute(params![
        e.call_id,
        status.as_str(),
        e.provider_call_id,
        e.duration_seconds,
        e.outcome,
        e.transcript,
        e.summary,
        e.recording_url,
        serde_json::Value::Object(e.custom.clone()).to_string(),
        e.now_ms,
        answered,
        ended
    ])?;
    let record = if ended {
        read_call(conn, &e.call_id)?
    } else {
        None
    };
    Ok((EventApplied::Applied { moved_to }, record))
}

/// The `n` oldest jobs waiting for one of `agent_id`'s lines become due
/// (lines were freed). Only as many as lines freed: waking every waiter for
/// one line made each of them claim, find the line taken and wait again.
fn wake_line_waiters(
    conn: &Connection,
    agent_id: &str,
    n: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET run_at = ?2 WHERE id IN (SELECT id FROM jobs \
         WHERE status = 'waiting' AND wait_agent = ?1 AND run_at > ?2 \
         ORDER BY created_at, id LIMIT ?3)",
    )?
    .execute(params![agent_id, now_ms, n])?;
    Ok(())
}

/// Reads a call inside the writer's transaction.
pub(super) fn read_call(conn: &Connection, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT id, job_id, step, agent_id, to_number, from_number, provider, provider_call_id, status, \
         outcome, duration_seconds, custom, variables, transcript, summary, recording_url, error, \
         dial_attempts, created_at, updated_at, dial_requested_at, answered_at, ended_at, origin \
         FROM calls WHERE id = ?1",
    )?
    .query_row(params![id], |r| {
        Ok(CallRecord {
            id: r.get(0)?,
            job_id: r.get(1)?,
            step: r.get(2)?,
            agent_id: r.get(3)?,
            to: r.get(4)?,
            from: r.get(5)?,
            provider: r.get(6)?,
            provider_call_id: r.get(7)?,
            status: r.get(8)?,
            outcome: r.get(9)?,
            duration_seconds: r.get(10)?,
            custom: r.get(11)?,
            variables: r.get(12)?,
            transcript: r.get(13)?,
            summary: r.get(14)?,
            recording_url: r.get(15)?,
            error: r.get(16)?,
            dial_attempts: r.get(17)?,
            created_at_ms: r.get(18)?,
            updated_at_ms: r.get(19)?,
            dial_requested_at_ms: r.get(20)?,
            answered_at_ms: r.get(21)?,
            ended_at_ms: r.get(22)?,
            origin: r.get(23)?,
        })
    })
    .optional()
    .map_err(StoreError::from)
}
