//! SQLite engine: one file, WAL, `synchronous=FULL`.
//!
//! Every write goes through one writer thread (`writer.rs`): trigger jobs
//! are group-committed, and the runner's and the callbacks' writes (`ops.rs`)
//! join the same batches, so there is never a second writer waiting on the
//! lock. Reads of jobs and idempotency keys use a pool of read-only sqlx
//! connections; reads of calls use the same row mapping as the writer's
//! transactional reads, on a read-only rusqlite connection.
//!
//! Policy: the settings that make a commit durable are set explicitly (sqlx
//! leaves `journal_mode` alone and `synchronous` at the library default) and
//! read back at start; the store refuses to open if they did not take.

mod deliveries;
mod ops;
mod schema;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::oneshot;

pub use writer::MAX_ROWS_PER_STATEMENT;

use super::{
    CallEventIn, CallRecord, ClaimedJob, DeliveryAttempt, DeliveryFilter, DeliveryRecord,
    DeliveryStatus, EnqueueOutcome, EventApplied, EventJobs, GroupCommit, IdempotencyRecord,
    JobEvent, JobRecord, JobUpdate, NewCall, NewDelivery, NewJob, Replay, Reservation, Store,
    StoreError,
};
use crate::store::CallStatus;
use crate::config::StorageConfig;
use crate::ids::JobId;
use writer::{Outcome, SqliteWriter, Task};

/// The SQLite store.
pub struct SqliteStore {
    read: SqlitePool,
    /// `None` once closed (so SQLite can remove the WAL at exit).
    calls_read: Arc<Mutex<Option<rusqlite::Connection>>>,
    commit: GroupCommit<Task>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, migrates it,
    /// verifies the durability settings and starts the writer.
    pub async fn open(path: &Path, cfg: &StorageConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .context("sqlite options")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(cfg.busy_timeout)
            .foreign_keys(true);
        // Schema changes go through sqlx (the same code will serve
        // PostgreSQL); the connection is closed before the writer opens.
        let mut setup = options
            .connect()
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        schema::migrate(&mut setup)
            .await
            .with_context(|| format!("migrating {}", path.display()))?;
        setup.close().await.ok();
        let writer = SqliteWriter::open(path, cfg)
            .with_context(|| format!("opening the writer on {}", path.display()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(cfg.read_connections.max(1))
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("opening read connections to {}", path.display()))?;
        let calls_read = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening a read connection to {}", path.display()))?;
        calls_read.busy_timeout(cfg.busy_timeout)?;
        let commit = GroupCommit::spawn(writer, cfg.max_pending_writes, cfg.max_batch)
            .context("starting the writer thread")?;
        Ok(Self {
            read,
            calls_read: Arc::new(Mutex::new(Some(calls_read))),
            commit,
        })
    }

    /// Runs `f` on the writer thread inside the next batch's transaction and
    /// returns its result once that transaction has committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.commit.submit(task(f, tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads calls on the read-only rusqlite connection (off the runtime).
    async fn read_calls<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.calls_read.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(c) => f(c),
                None => Err(StoreError::Closed),
            }
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }
}

fn task<T, F>(f: F, tx: oneshot::Sender<Result<T, StoreError>>) -> Task
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
{
    Box::new(move |conn| match f(conn) {
        Ok(value) => Outcome {
            keep: true,
            deliver: Box::new(move |committed| {
                let _ = tx.send(committed.map(|()| value));
            }),
        },
        Err(e) => Outcome {
            keep: false,
            deliver: Box::new(move |_| {
                let _ = tx.send(Err(e));
            }),
        },
    })
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

fn json_column(row: &SqliteRow, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let text: Option<String> = row.try_get(name)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        self.commit.enqueue(job).await
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, trigger_id, principal, status, status_reason, action, input, state, result, \
             error, attempts, request_id, created_at, updated_at, run_at FROM jobs WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let trigger_id: String = row.try_get("trigger_id")?;
        Ok(Some(JobRecord {
            id: row.try_get("id")?,
            trigger_id: (!trigger_id.is_empty()).then_some(trigger_id),
            principal: row.try_get("principal")?,
            status: row.try_get("status")?,
            status_reason: row.try_get("status_reason")?,
            action: json_column(&row, "action")?.unwrap_or_default(),
            input: json_column(&row, "input")?.unwrap_or_default(),
            state: json_column(&row, "state")?,
            result: json_column(&row, "result")?,
            error: json_column(&row, "error")?,
            attempts: row.try_get("attempts")?,
            request_id: row.try_get("request_id")?,
            created_at_ms: row.try_get("created_at")?,
            updated_at_ms: row.try_get("updated_at")?,
            run_at_ms: row.try_get("run_at")?,
        }))
    }

    async fn idempotency(
        &self,
        principal: &str,
        trigger_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT request_hash, job_id, response_status, response_body FROM idempotency_keys \
             WHERE principal = ? AND trigger_id = ? AND idem_key = ? AND expires_at > ?",
        )
        .bind(principal)
        .bind(trigger_id)
        .bind(key)
        .bind(now_ms)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let status: i64 = row.try_get("response_status")?;
        Ok(Some(IdempotencyRecord {
            request_hash: row.try_get("request_hash")?,
            job_id: row.try_get("job_id")?,
            response_status: u16::try_from(status)
                .map_err(|_| StoreError::Corrupt(format!("response_status {status}")))?,
            response_body: row.try_get("response_body")?,
        }))
    }

    async fn purge_idempotency(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")?
                .execute([now_ms])?;
            Ok(n as u64)
        })
        .await
    }

    async fn check_writable(&self, now_ms: i64) -> Result<(), StoreError> {
        // try_submit: a full queue is exactly what readiness must report.
        let (tx, rx) = oneshot::channel();
        self.commit.try_submit(task(
            move |conn| {
                conn.prepare_cached(
                    "INSERT INTO heartbeat (id, at) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                )?
                .execute([now_ms])?;
                Ok(())
            },
            tx,
        ))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn close(&self) {
        self.commit.close().await;
        self.read.close().await;
        self.calls_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    async fn claim_jobs(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| ops::claim_jobs(conn, &owner, now_ms, lease_until_ms, limit))
            .await
    }

    async fn renew_lease(
        &self,
        job_id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (job_id, owner) = (job_id.to_owned(), owner.to_owned());
        self.write(move |conn| ops::renew_lease(conn, &job_id, &owner, until_ms))
            .await
    }

    async fn finish_claim(
        &self,
        job_id: &str,
        owner: &str,
        update: JobUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (job_id, owner) = (job_id.to_owned(), owner.to_owned());
        self.write(move |conn| ops::finish_claim(conn, &job_id, &owner, &update, now_ms))
            .await
    }

    async fn release_leases(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| ops::release_leases(conn, &owner, now_ms))
            .await
    }

    async fn wake_jobs(&self, job_ids: Vec<String>, now_ms: i64) -> Result<(), StoreError> {
        self.write(move |conn| ops::wake_jobs(conn, &job_ids, now_ms))
            .await
    }

    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> Result<(), StoreError> {
        self.write(move |conn| ops::insert_jobs(conn, &jobs)).await
    }

    async fn job_events(&self, job_id: &str) -> Result<Vec<super::JobEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, status, reason, attempt, detail FROM job_events WHERE job_id = ? ORDER BY seq",
        )
        .bind(job_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(JobEvent {
                    at_ms: row.try_get("at")?,
                    status: row.try_get("status")?,
                    reason: row.try_get("reason")?,
                    attempt: row.try_get("attempt")?,
                    detail: json_column(row, "detail")?,
                })
            })
            .collect()
    }

    async fn reserve_call(
        &self,
        call: NewCall,
        max_active: u32,
    ) -> Result<Reservation, StoreError> {
        self.write(move |conn| ops::reserve_call(conn, &call, max_active))
            .await
    }

    async fn call_dialed(
        &self,
        call_id: &str,
        provider_call_id: Option<&str>,
        status: CallStatus,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (call_id, provider_call_id) = (call_id.to_owned(), provider_call_id.map(str::to_owned));
        self.write(move |conn| {
            ops::call_dialed(conn, &call_id, provider_call_id.as_deref(), status, now_ms)
        })
        .await
    }

    async fn set_call_status(
        &self,
        call_id: &str,
        status: CallStatus,
        error: Option<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let call_id = call_id.to_owned();
        self.write(move |conn| {
            ops::set_call_status(conn, &call_id, status, error.as_deref(), now_ms)
        })
        .await
    }

    async fn call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let id = id.to_owned();
        self.read_calls(move |conn| ops::read_call(conn, &id)).await
    }

    async fn calls_for_job(&self, job_id: &str) -> Result<Vec<CallRecord>, StoreError> {
        let job_id = job_id.to_owned();
        self.read_calls(move |conn| {
            let ids: Vec<String> = conn
                .prepare_cached("SELECT id FROM calls WHERE job_id = ?1 ORDER BY step")?
                .query_map([&job_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter()
                .filter_map(|id| ops::read_call(conn, id).transpose())
                .collect()
        })
        .await
    }

    async fn stale_calls(&self, before_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        self.read_calls(move |conn| {
            // The same list as the `calls_active` partial index, so that
            // SQLite uses it.
            let ids: Vec<String> = conn
                .prepare_cached(&format!(
                    "SELECT id FROM calls WHERE status IN {} \
                     AND updated_at < ?1 ORDER BY updated_at LIMIT 100",
                    CallStatus::holding_line_sql()
                ))?
                .query_map([before_ms], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.iter()
                .filter_map(|id| ops::read_call(conn, id).transpose())
                .collect()
        })
        .await
    }

    async fn apply_call_event(
        &self,
        event: CallEventIn,
        on_final: EventJobs,
    ) -> Result<EventApplied, StoreError> {
        self.write(move |conn| {
            let (applied, ended) = ops::apply_call_event(conn, &event, ops::read_call)?;
            if let Some(call) = ended {
                ops::wake_jobs(conn, std::slice::from_ref(&call.job_id), event.now_ms)?;
                let jobs = on_final(&call);
                ops::insert_jobs(conn, &jobs)?;
            }
            Ok(applied)
        })
        .await
    }

    async fn create_delivery(&self, delivery: NewDelivery) -> Result<String, StoreError> {
        self.write(move |conn| deliveries::create(conn, &delivery))
            .await
    }

    async fn claim_deliveries(
        &self,
        endpoint: &str,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let (endpoint, owner) = (endpoint.to_owned(), owner.to_owned());
        self.write(move |conn| {
            deliveries::claim(conn, &endpoint, &owner, now_ms, lease_until_ms, limit)
        })
        .await
    }

    async fn finish_delivery_attempt(
        &self,
        id: &str,
        owner: &str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (id, owner) = (id.to_owned(), owner.to_owned());
        self.write(move |conn| {
            deliveries::finish_attempt(conn, &id, &owner, &attempt, status, now_ms)
        })
        .await
    }

    async fn release_deliveries(
        &self,
        ids: Vec<String>,
        owner: &str,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| deliveries::release(conn, &ids, &owner, due_ms))
            .await
    }

    async fn delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let id = id.to_owned();
        self.read_calls(move |conn| deliveries::read(conn, &id))
            .await
    }

    async fn delivery_attempts(&self, id: &str) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let id = id.to_owned();
        self.read_calls(move |conn| deliveries::attempts(conn, &id))
            .await
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read_calls(move |conn| deliveries::list(conn, &filter))
            .await
    }

    async fn replay_delivery(&self, id: &str, now_ms: i64) -> Result<Replay, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| deliveries::replay(conn, &id, now_ms))
            .await
    }

    async fn fail_unconfigured_deliveries(
        &self,
        configured: Vec<String>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| deliveries::fail_unconfigured(conn, &configured, now_ms))
            .await
    }

    async fn purge_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        // In bounded batches, each its own write: trigger jobs keep flowing
        // between them.
        const BATCH: usize = 1000;
        let mut total = 0;
        loop {
            let n = self
                .write(move |conn| deliveries::purge(conn, before_ms, BATCH))
                .await?;
            total += n;
            if (n as usize) < BATCH {
                return Ok(total);
            }
        }
    }

    async fn status_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        // On the read pool (index-only scans), not the single connection
        // the runner reads calls through.
        let mut out = Vec::new();
        for table in ["jobs", "calls", "deliveries"] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT status, COUNT(*) AS n FROM {table} GROUP BY status"
            )))
            .fetch_all(&self.read)
            .await?;
            for row in rows {
                out.push((table.to_owned(), row.try_get("status")?, row.try_get("n")?));
            }
        }
        Ok(out)
    }
}
