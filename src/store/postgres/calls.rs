//! Call writes, each inside the caller's transaction. The per-agent line
//! count must hold across instances, so every transaction that counts an
//! agent's lines or frees one takes the agent's advisory transaction lock
//! first (`lock_agent`), then the rows it changes: counting and changing
//! are serialised per agent, in one lock order.
//!
//! A move between statuses that hold a line (`dialing` → `ringing` →
//! `in_progress`, or recording the provider's id) changes no count and
//! takes only the call's row lock, so one agent's calls progress in
//! parallel. A move that takes a line without checking the count
//! (`unknown` → `ringing`, a late event) needs no agent lock either:
//! reserving reads the count in one statement and the move reads none, so
//! whatever that statement saw is what some serial order would have seen.
//! Freeing a line does need it: the move and the wake-up of the agent's
//! line waiters must not interleave with a job deciding to wait.
//!
//! Under the agent lock, the statements that follow it are pipelined
//! behind it (sent at once, run in order by the server, each with a
//! snapshot taken after the lock was granted), so the lock is held for as
//! few round trips as possible.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::convert::{Params, call_id, call_status, execute, get, job_id, json, query, query_opt};
use super::schema::LOCK_AGENT;
use crate::ids::CallId;
use crate::store::CallStatus;
use crate::store::{CallEventIn, CallRecord, EventApplied, NewCall, Reservation, StoreError};

const LOCK_AGENT_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// Holds `agent_id`'s line lock until the transaction ends.
pub(super) async fn lock_agent<C: GenericClient>(c: &C, agent_id: &str) -> Result<(), StoreError> {
    query(c, LOCK_AGENT_SQL, &[&LOCK_AGENT, &agent_id]).await?;
    Ok(())
}

pub(super) async fn reserve_call<C: GenericClient>(
    c: &C,
    call: &NewCall,
    max_active: u32,
) -> Result<Reservation, StoreError> {
    // One statement after the lock: the step's call if it exists, else
    // the count and, when a line is free, the insert.
    let sql = format!(
        "WITH existing AS (SELECT id FROM calls WHERE job_id = $2 AND step = $3), \
         active AS (SELECT COUNT(*) AS n FROM calls WHERE agent_id = $4 AND status IN {}), \
         ins AS (INSERT INTO calls (id, job_id, step, agent_id, to_number, from_number, \
         provider, status, custom, variables, origin, dial_attempts, created_at, updated_at, \
         dial_requested_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, 'dialing', '{{}}', $8, $10, 1, $9, $9, $9 \
         WHERE NOT EXISTS (SELECT 1 FROM existing) AND (SELECT n FROM active) < $11 \
         RETURNING id) \
         SELECT (SELECT id FROM existing), (SELECT n FROM active), EXISTS (SELECT 1 FROM ins)",
        CallStatus::holding_line_sql()
    );
    let lock = c.prepare_cached(LOCK_AGENT_SQL).await?;
    let reserve = c.prepare_cached(&sql).await?;
    let (variables, origin) = (call.variables.to_string(), call.origin.to_string());
    let max_active = i64::from(max_active);
    let agent = call.agent_id.as_str();
    let (id, job) = (call.id.as_str(), call.job_id.as_str());
    let lock_params: Params = &[&LOCK_AGENT, &agent];
    let reserve_params: Params = &[
        &id,
        &job,
        &call.step,
        &agent,
        &call.to,
        &call.from,
        &call.provider,
        &variables,
        &call.now_ms,
        &origin,
        &max_active,
    ];
    // `biased`: polled in this order, so sent (and run) in this order.
    let (_, row) = tokio::try_join!(
        biased;
        c.query(&lock, lock_params),
        c.query_one(&reserve, reserve_params),
    )?;
    if get::<Option<&str>>(&row, 0)?.is_some() {
        return Ok(Reservation::Existing(call_id(&row, 0)?));
    }
    if get::<bool>(&row, 2)? {
        return Ok(Reservation::Created(call.id.clone()));
    }
    Ok(Reservation::Busy {
        active: get(&row, 1)?,
    })
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

/// A call locked for a change: its status and agent as they are now, and
/// its `custom` (for merging an event's into it).
struct Locked {
    status: CallStatus,
    agent: String,
    custom: String,
}

/// Locks a call for a change. With `agent_lock`, its agent's line lock
/// first (for a change that may free a line), then its row; without, only
/// its row. `Corrupt` when there is no such call.
async fn lock_call<C: GenericClient>(
    c: &C,
    call: &CallId,
    agent_lock: bool,
) -> Result<Locked, StoreError> {
    let missing = || StoreError::Corrupt(format!("no call {call}"));
    let row_sql = "SELECT status, agent_id, custom FROM calls WHERE id = $1 FOR UPDATE";
    let row = if agent_lock {
        // The agent of a call never changes: the lock statement reads it,
        // and the row's statement, pipelined behind, runs once it is held.
        let lock = c
            .prepare_cached(
                "SELECT pg_advisory_xact_lock($1, hashtext(agent_id)) FROM calls WHERE id = $2",
            )
            .await?;
        let read = c.prepare_cached(row_sql).await?;
        let id = call.as_str();
        let lock_params: Params = &[&LOCK_AGENT, &id];
        let read_params: Params = &[&id];
        let (_, row) = tokio::try_join!(
            biased;
            c.query(&lock, lock_params),
            c.query_opt(&read, read_params),
        )?;
        row
    } else {
        query_opt(c, row_sql, &[&call.as_str()]).await?
    };
    let row = row.ok_or_else(missing)?;
    Ok(Locked {
        status: call_status(&row, 0)?,
        agent: get(&row, 1)?,
        custom: get(&row, 2)?,
    })
}

/// A change to `to` may free a line (and so needs the agent's lock): any
/// status that holds none. `unknown` is never moved to by an event.
fn may_free_line(to: Option<CallStatus>) -> bool {
    to.is_some_and(|s| !s.holds_line())
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
    if !may_free_line(Some(status)) {
        // No line freed: one statement, under the row lock it takes. The
        // statuses that may become `status` are listed here (the order
        // lives in Rust, not SQL).
        let from: Vec<&str> = CallStatus::ALL
            .into_iter()
            .filter(|s| s.may_become(status))
            .map(CallStatus::as_str)
            .collect();
        let n = execute(
            c,
            "UPDATE calls SET provider_call_id = COALESCE($2, provider_call_id), \
             status = CASE WHEN status = ANY($3) THEN $4 ELSE status END, \
             error = NULL, updated_at = $5 WHERE id = $1",
            &[
                &call.as_str(),
                &provider_call_id,
                &from,
                &status.as_str(),
                &now_ms,
            ],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Corrupt(format!("no call {call}")));
        }
        return Ok(());
    }
    let locked = lock_call(c, call, true).await?;
    let current = locked.status;
    let next = if current.may_become(status) {
        status
    } else {
        current
    };
    on_status_change(c, &locked.agent, current, next, now_ms).await?;
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
    let locked = lock_call(c, call, true).await?;
    let current = locked.status;
    if !current.holds_line() {
        let active = active_calls(c, &locked.agent).await?;
        if active >= i64::from(max_active) {
            return Ok(Reservation::Busy { active });
        }
    }
    write_status(
        c,
        call,
        &locked.agent,
        current,
        CallStatus::Dialing,
        None,
        now_ms,
    )
    .await?;
    Ok(Reservation::Created(call.clone()))
}

/// Rare (a refused dial, an unknown outcome) and unconditional (it may
/// move a call back to a status that holds a line): always under the
/// agent's lock.
pub(super) async fn set_call_status<C: GenericClient>(
    c: &C,
    call: &CallId,
    status: CallStatus,
    error: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let locked = lock_call(c, call, true).await?;
    write_status(c, call, &locked.agent, locked.status, status, error, now_ms).await
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
/// status, the call as it is now (for the caller's follow-ups). Two
/// round trips: the lock(s) and read, then one statement that records
/// the event and, unless it is a duplicate, updates the call and wakes a
/// line waiter when a line was freed.
pub(super) async fn apply_call_event<C: GenericClient>(
    c: &C,
    e: &CallEventIn,
) -> Result<(EventApplied, Option<CallRecord>), StoreError> {
    let locked = lock_call(c, &e.call_id, may_free_line(e.status)).await?;
    let current = locked.status;
    let moved_to = e.status.filter(|s| current.may_become(*s));
    let status = moved_to.unwrap_or(current);
    let frees_line = current.holds_line() && !status.holds_line();
    let answered = matches!(moved_to, Some(CallStatus::InProgress));
    let ended = moved_to.is_some_and(CallStatus::is_final);
    // Details are taken from any new event (a late `call_analyzed` adds the
    // summary); only the status is monotonic. `custom` is merged as a JSON
    // merge patch (RFC 7396, what SQLite's json_patch does), under the row
    // lock.
    let custom = if e.custom.is_empty() {
        None
    } else {
        let mut custom = json(&locked.custom)?;
        merge_patch(&mut custom, &serde_json::Value::Object(e.custom.clone()));
        Some(custom.to_string())
    };
    let sql = format!(
        "WITH ev AS (INSERT INTO call_events \
         (call_id, event_key, received_at, status, applied, body) \
         VALUES ($1, $13, $10, $14, $15, $16) ON CONFLICT (call_id, event_key) DO NOTHING \
         RETURNING 1), \
         wake AS (UPDATE jobs SET run_at = $10 WHERE $18 AND EXISTS (SELECT 1 FROM ev) \
         AND id IN (SELECT id FROM jobs WHERE status = 'waiting' AND wait_agent = $17 \
         AND run_at > $10 ORDER BY created_at, id LIMIT 1)) \
         UPDATE calls SET status = $2, \
         provider_call_id = COALESCE(provider_call_id, $3), \
         duration_seconds = COALESCE($4, duration_seconds), \
         outcome = COALESCE($5, outcome), transcript = COALESCE($6, transcript), \
         summary = COALESCE($7, summary), recording_url = COALESCE($8, recording_url), \
         custom = COALESCE($9, custom), updated_at = $10, \
         answered_at = CASE WHEN $11 AND answered_at IS NULL THEN $10 ELSE answered_at END, \
         ended_at = CASE WHEN $12 THEN $10 ELSE ended_at END \
         WHERE id = $1 AND EXISTS (SELECT 1 FROM ev) RETURNING {CALL_COLUMNS}"
    );
    let row = query_opt(
        c,
        &sql,
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
            &e.event_key,
            &e.status.map(CallStatus::as_str),
            &moved_to.is_some(),
            &e.body,
            &locked.agent,
            &frees_line,
        ],
    )
    .await?;
    let Some(row) = row else {
        return Ok((EventApplied::Duplicate, None));
    };
    let record = if ended {
        Some(call_record(&row)?)
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
