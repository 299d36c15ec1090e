//! Reads: jobs (one, or listed and counted by filter), their event logs,
//! idempotency records, calls by job and by staleness, and the status
//! counts behind `/metrics`.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::calls::{CALL_COLUMNS, call_record};
use super::convert::{get, job_id, job_status, json, json_opt, query, query_opt, trigger_id};
use crate::ids::JobId;
use crate::store::{
    CallFilter, CallRecord, CallStatus, IdempotencyRecord, JobEvent, JobFilter, JobRecord,
    StoreError,
};

const JOB_COLUMNS: &str = "id, trigger_id, principal, status, status_reason, action, input, \
     state, result, error, attempts, request_id, created_at, updated_at, run_at";

fn job_record(r: &Row) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: job_id(r, 0)?,
        trigger_id: trigger_id(r, 1)?,
        principal: get(r, 2)?,
        status: job_status(r, 3)?,
        status_reason: get(r, 4)?,
        action: json(get(r, 5)?)?,
        input: json(get(r, 6)?)?,
        state: json_opt(get(r, 7)?)?,
        result: json_opt(get(r, 8)?)?,
        error: json_opt(get(r, 9)?)?,
        attempts: get(r, 10)?,
        request_id: get(r, 11)?,
        created_at_ms: get(r, 12)?,
        updated_at_ms: get(r, 13)?,
        run_at_ms: get(r, 14)?,
    })
}

pub(super) async fn job<C: GenericClient>(
    c: &C,
    id: &JobId,
) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
    query_opt(c, &sql, &[&id.as_str()])
        .await?
        .as_ref()
        .map(job_record)
        .transpose()
}

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

/// `WHERE …` for a job filter (and a cursor), with its arguments.
fn job_conditions(filter: &JobFilter, before: Option<&JobId>) -> (String, Args) {
    let mut sql = String::from(" WHERE true");
    let mut args: Args = Vec::new();
    let mut add = |clause: &str, v: Box<dyn ToSql + Sync + Send>| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    if let Some(s) = filter.status {
        add("status =", Box::new(s.as_str()));
    }
    if let Some(t) = &filter.trigger_id {
        add("trigger_id =", Box::new(t.as_str().to_owned()));
    }
    if let Some(p) = &filter.created_by {
        add("principal =", Box::new(p.clone()));
    }
    if let Some(t) = filter.since_ms {
        add("created_at >=", Box::new(t));
    }
    if let Some(t) = filter.until_ms {
        add("created_at <", Box::new(t));
    }
    if let Some(b) = before {
        add("id <", Box::new(b.as_str().to_owned()));
    }
    if let Some(n) = &filter.phone {
        // Unindexed, as on SQLite (`store/sqlite/reads.rs`).
        args.push(Box::new(n.clone()));
        let i = args.len();
        sql.push_str(&format!(
            " AND ((action::jsonb ->> 'to') = ${i} \
             OR id IN (SELECT job_id FROM calls WHERE to_number = ${i}))"
        ));
    }
    (sql, args)
}

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| &**a as _).collect()
}

/// Newest first (ids sort by creation time), at most `limit`.
pub(super) async fn jobs<C: GenericClient>(
    c: &C,
    filter: &JobFilter,
    before: Option<&JobId>,
    limit: usize,
) -> Result<Vec<JobRecord>, StoreError> {
    let (conditions, mut args) = job_conditions(filter, before);
    args.push(Box::new(limit.max(1) as i64));
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs{conditions} ORDER BY id DESC LIMIT ${}",
        args.len()
    );
    query(c, &sql, &refs(&args))
        .await?
        .iter()
        .map(job_record)
        .collect()
}

pub(super) async fn count_jobs<C: GenericClient>(
    c: &C,
    filter: &JobFilter,
) -> Result<u64, StoreError> {
    let (conditions, args) = job_conditions(filter, None);
    let sql = format!("SELECT COUNT(*) FROM jobs{conditions}");
    let rows = query(c, &sql, &refs(&args)).await?;
    let n: i64 = rows.first().map(|r| get(r, 0)).unwrap_or(Ok(0))?;
    Ok(n.max(0) as u64)
}

pub(super) async fn job_events<C: GenericClient>(
    c: &C,
    job: &JobId,
) -> Result<Vec<JobEvent>, StoreError> {
    query(
        c,
        "SELECT at, status, reason, attempt, detail FROM job_events WHERE job_id = $1 ORDER BY seq",
        &[&job.as_str()],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(JobEvent {
            at_ms: get(r, 0)?,
            status: job_status(r, 1)?,
            reason: get(r, 2)?,
            attempt: get(r, 3)?,
            detail: json_opt(get(r, 4)?)?,
        })
    })
    .collect()
}

pub(super) async fn idempotency<C: GenericClient>(
    c: &C,
    principal: &str,
    trigger: &str,
    key: &str,
    now_ms: i64,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let Some(r) = query_opt(
        c,
        "SELECT request_hash, job_id, response_status, response_body FROM idempotency_keys \
         WHERE principal = $1 AND trigger_id = $2 AND idem_key = $3 AND expires_at > $4",
        &[&principal, &trigger, &key, &now_ms],
    )
    .await?
    else {
        return Ok(None);
    };
    let status: i64 = get(&r, 2)?;
    Ok(Some(IdempotencyRecord {
        request_hash: get(&r, 0)?,
        job_id: job_id(&r, 1)?,
        response_status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("response_status {status}")))?,
        response_body: get(&r, 3)?,
    }))
}

pub(super) async fn calls_for_job<C: GenericClient>(
    c: &C,
    job: &JobId,
) -> Result<Vec<CallRecord>, StoreError> {
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE job_id = $1 ORDER BY step");
    query(c, &sql, &[&job.as_str()])
        .await?
        .iter()
        .map(call_record)
        .collect()
}

/// Calls by filter, newest first (ids sort by creation time), at most
/// `limit`.
pub(super) async fn calls<C: GenericClient>(
    c: &C,
    filter: &CallFilter,
    before: Option<&crate::ids::CallId>,
    limit: usize,
) -> Result<Vec<CallRecord>, StoreError> {
    let mut sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE true");
    let mut args: Args = Vec::new();
    let mut add = |clause: &str, v: Box<dyn ToSql + Sync + Send>| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    if let Some(s) = filter.status {
        add("status =", Box::new(s.as_str()));
    }
    if let Some(o) = &filter.outcome {
        add("outcome =", Box::new(o.clone()));
    }
    if let Some(a) = &filter.agent_id {
        add("agent_id =", Box::new(a.clone()));
    }
    if let Some(t) = &filter.to {
        add("to_number =", Box::new(t.clone()));
    }
    if let Some(t) = filter.since_ms {
        add("created_at >=", Box::new(t));
    }
    if let Some(t) = filter.until_ms {
        add("created_at <", Box::new(t));
    }
    if let Some(b) = before {
        add("id <", Box::new(b.as_str().to_owned()));
    }
    args.push(Box::new(limit.max(1) as i64));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    query(c, &sql, &refs(&args))
        .await?
        .iter()
        .map(call_record)
        .collect()
}

/// Calls still holding a line that have had no news since `before_ms`
/// (the oldest 100).
pub(super) async fn stale_calls<C: GenericClient>(
    c: &C,
    before_ms: i64,
) -> Result<Vec<CallRecord>, StoreError> {
    let sql = format!(
        "SELECT {CALL_COLUMNS} FROM calls WHERE status IN {} AND updated_at < $1 \
         ORDER BY updated_at LIMIT 100",
        CallStatus::holding_line_sql()
    );
    query(c, &sql, &[&before_ms])
        .await?
        .iter()
        .map(call_record)
        .collect()
}

/// Rows by status of jobs, calls and deliveries: (table, status, count).
pub(super) async fn status_counts<C: GenericClient>(
    c: &C,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = query(
        c,
        "SELECT 'jobs'::text, status, COUNT(*) FROM jobs GROUP BY status \
         UNION ALL SELECT 'calls'::text, status, COUNT(*) FROM calls GROUP BY status \
         UNION ALL SELECT 'deliveries'::text, status, COUNT(*) FROM deliveries GROUP BY status",
        &[],
    )
    .await?;
    rows.iter()
        .map(|r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?)))
        .collect()
}
