//! Reads on the read-only connections: jobs (one, or listed and counted by
//! filter), their event logs, idempotency records, calls by job and by
//! staleness, and the status counts behind `/metrics`; and the pool of
//! read-only connections they run on.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::calls::read_call;
use crate::config::StorageConfig;
use crate::ids::{JobId, TriggerId};
use crate::store::{
    CallFilter, CallRecord, CallStatus, IdempotencyRecord, JobEvent, JobFilter, JobRecord,
    StoreError,
};

/// Read-only connections, each used by one blocking task at a time.
pub(super) struct ReadPool {
    /// `None` once closed (so SQLite can remove the WAL at exit).
    conns: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl ReadPool {
    pub(super) fn open(path: &Path, cfg: &StorageConfig) -> anyhow::Result<Self> {
        let mut conns = Vec::new();
        for _ in 0..cfg.read_connections.max(1) {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(cfg.busy_timeout)?;
            conns.push(Mutex::new(Some(conn)));
        }
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    pub(super) fn close(&self) {
        for c in &self.conns {
            c.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }

    /// Runs `f` on the next read-only connection, off the runtime.
    pub(super) async fn run<T, F>(self: Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
            let guard = self.conns[i].lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(c) => f(c),
                None => Err(StoreError::Closed),
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

const JOB_COLUMNS: &str = "id, trigger_id, principal, status, status_reason, action, input, \
     state, result, error, attempts, request_id, created_at, updated_at, run_at";

fn job_record(r: &Row<'_>) -> rusqlite::Result<JobRecord> {
    // Jobs started by call events have no trigger: stored as ''.
    let trigger_id: String = r.get(1)?;
    Ok(JobRecord {
        id: r.get(0)?,
        trigger_id: (!trigger_id.is_empty())
            .then(|| TriggerId::parse(&trigger_id))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
            })?,
        principal: r.get(2)?,
        status: r.get(3)?,
        status_reason: r.get(4)?,
        action: r.get(5)?,
        input: r.get(6)?,
        state: r.get(7)?,
        result: r.get(8)?,
        error: r.get(9)?,
        attempts: r.get(10)?,
        request_id: r.get(11)?,
        created_at_ms: r.get(12)?,
        updated_at_ms: r.get(13)?,
        run_at_ms: r.get(14)?,
    })
}

pub(super) fn job(conn: &Connection, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![id], job_record)
        .optional()?)
}

/// `WHERE …` for a job filter (and a cursor), with its arguments.
fn job_conditions(filter: &JobFilter, before: Option<&JobId>) -> (String, Vec<Value>) {
    let mut sql = String::from(" WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut add = |clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(s) = filter.status {
        add("status =", s.as_str().to_owned().into());
    }
    if let Some(t) = &filter.trigger_id {
        add("trigger_id =", t.as_str().to_owned().into());
    }
    if let Some(p) = &filter.created_by {
        add("principal =", p.clone().into());
    }
    if let Some(t) = filter.since_ms {
        add("created_at >=", t.into());
    }
    if let Some(t) = filter.until_ms {
        add("created_at <", t.into());
    }
    if let Some(b) = before {
        add("id <", b.as_str().to_owned().into());
    }
    if let Some(n) = &filter.phone {
        // Unindexed: the console narrows by time or status too, and a
        // listing stops at its page (ids are scanned newest first).
        args.push(n.clone().into());
        let i = args.len();
        sql.push_str(&format!(
            " AND (json_extract(action, '$.to') = ?{i} \
             OR id IN (SELECT job_id FROM calls WHERE to_number = ?{i}))"
        ));
    }
    (sql, args)
}

/// Newest first (ids sort by creation time), at most `limit`.
pub(super) fn jobs(
    conn: &Connection,
    filter: &JobFilter,
    before: Option<&JobId>,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    let (conditions, args) = job_conditions(filter, before);
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs{conditions} ORDER BY id DESC LIMIT {}",
        limit.max(1)
    );
    let rows = conn
        .prepare(&sql)?
        .query_map(rusqlite::params_from_iter(args), job_record)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn count_jobs(conn: &Connection, filter: &JobFilter) -> Result<u64, StoreError> {
    let (conditions, args) = job_conditions(filter, None);
    let n: i64 = conn
        .prepare(&format!("SELECT COUNT(*) FROM jobs{conditions}"))?
        .query_row(rusqlite::params_from_iter(args), |r| r.get(0))?;
    Ok(n as u64)
}

pub(super) fn job_events(conn: &Connection, job_id: &JobId) -> Result<Vec<JobEvent>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT at, status, reason, attempt, detail FROM job_events WHERE job_id = ?1 \
             ORDER BY seq",
        )?
        .query_map(params![job_id], |r| {
            Ok(JobEvent {
                at_ms: r.get(0)?,
                status: r.get(1)?,
                reason: r.get(2)?,
                attempt: r.get(3)?,
                detail: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn idempotency(
    conn: &Connection,
    principal: &str,
    trigger_id: &str,
    key: &str,
    now_ms: i64,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT request_hash, job_id, response_status, response_body FROM idempotency_keys \
             WHERE principal = ?1 AND trigger_id = ?2 AND idem_key = ?3 AND expires_at > ?4",
        )?
        .query_row(params![principal, trigger_id, key, now_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((request_hash, job_id, status, response_body)) = row else {
        return Ok(None);
    };
    Ok(Some(IdempotencyRecord {
        request_hash,
        job_id,
        response_status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("response_status {status}")))?,
        response_body,
    }))
}

pub(super) fn calls_for_job(
    conn: &Connection,
    job_id: &JobId,
) -> Result<Vec<CallRecord>, StoreError> {
    let ids: Vec<crate::ids::CallId> = conn
        .prepare_cached("SELECT id FROM calls WHERE job_id = ?1 ORDER BY step")?
        .query_map(params![job_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .filter_map(|id| read_call(conn, id).transpose())
        .collect()
}

/// Calls by filter, newest first (ids sort by creation time), at most
/// `limit`.
pub(super) fn calls(
    conn: &Connection,
    filter: &CallFilter,
    before: Option<&crate::ids::CallId>,
    limit: usize,
) -> Result<Vec<CallRecord>, StoreError> {
    let mut sql = String::from("SELECT id FROM calls WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    let mut add = |clause: &str, v: Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(s) = filter.status {
        add("status =", s.as_str().to_owned().into());
    }
    if let Some(o) = &filter.outcome {
        add("outcome =", o.clone().into());
    }
    if let Some(a) = &filter.agent_id {
        add("agent_id =", a.clone().into());
    }
    if let Some(t) = &filter.to {
        add("to_number =", t.clone().into());
    }
    if let Some(t) = filter.since_ms {
        add("created_at >=", t.into());
    }
    if let Some(t) = filter.until_ms {
        add("created_at <", t.into());
    }
    if let Some(b) = before {
        add("id <", b.as_str().to_owned().into());
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.max(1)));
    let ids: Vec<crate::ids::CallId> = conn
        .prepare(&sql)?
        .query_map(rusqlite::params_from_iter(args), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .filter_map(|id| read_call(conn, id).transpose())
        .collect()
}

/// Calls still holding a line that have had no news since `before_ms`
/// (the oldest 100).
pub(super) fn stale_calls(
    conn: &Connection,
    before_ms: i64,
) -> Result<Vec<CallRecord>, StoreError> {
    // The same list as the `calls_active` partial index, so that SQLite
    // uses it.
    let ids: Vec<crate::ids::CallId> = conn
        .prepare_cached(&format!(
            "SELECT id FROM calls WHERE status IN {} AND updated_at < ?1 \
             ORDER BY updated_at LIMIT 100",
            CallStatus::holding_line_sql()
        ))?
        .query_map([before_ms], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .filter_map(|id| read_call(conn, id).transpose())
        .collect()
}

/// Rows by status of jobs, calls and deliveries: (table, status, count).
pub(super) fn status_counts(conn: &Connection) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut out = Vec::new();
    for table in ["jobs", "calls", "deliveries"] {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT status, COUNT(*) FROM {table} GROUP BY status"
        ))?;
        let rows = stmt.query_map([], |r| Ok((table.to_owned(), r.get(0)?, r.get(1)?)))?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}
