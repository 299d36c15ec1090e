//! SQLite engine: one file, WAL, `synchronous=FULL`, one writer connection
//! driven by group commit plus a pool of read-only connections.
//!
//! Policy: the settings that make a commit durable are set explicitly (sqlx
//! leaves `journal_mode` alone and `synchronous` at the library default) and
//! read back at start; the store refuses to open if they did not take.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

use super::{
    BatchWriter, EnqueueOutcome, GroupCommit, IdempotencyRecord, JobRecord, NewJob, Store,
    StoreError,
};
use crate::config::StorageConfig;
use crate::ids::JobId;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "jobs and idempotency keys",
    r#"
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        trigger_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        status TEXT NOT NULL,
        action TEXT NOT NULL,
        input TEXT NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        request_id TEXT,
        idempotency_key TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        run_at BIGINT NOT NULL
    );
    CREATE INDEX jobs_due ON jobs (status, run_at);
    CREATE TABLE idempotency_keys (
        principal TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        job_id TEXT NOT NULL,
        response_status INTEGER NOT NULL,
        response_body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (principal, trigger_id, idem_key)
    );
    CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);
    CREATE TABLE heartbeat (id INTEGER PRIMARY KEY, at BIGINT NOT NULL);
    "#,
)];

/// Multi-row statements: one round trip to SQLite per batch instead of one
/// per job (each round trip is a hand-off to sqlx's connection thread).
const INSERT_JOBS: MultiRow = MultiRow {
    head: "INSERT INTO jobs (id, trigger_id, principal, status, action, input, request_id, \
           idempotency_key, created_at, updated_at, run_at) VALUES ",
    row: "(?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
    tail: "",
};

// An expired record with the same key is replaced; a live one wins and its
// row is not returned (the caller then replays the live one).
const CLAIM_IDEMPOTENCY: MultiRow = MultiRow {
    head: "INSERT INTO idempotency_keys (principal, trigger_id, idem_key, request_hash, job_id, \
           response_status, response_body, created_at, expires_at) VALUES ",
    row: "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
    tail: " ON CONFLICT (principal, trigger_id, idem_key) DO UPDATE SET \
           request_hash = excluded.request_hash, job_id = excluded.job_id, \
           response_status = excluded.response_status, response_body = excluded.response_body, \
           created_at = excluded.created_at, expires_at = excluded.expires_at \
           WHERE idempotency_keys.expires_at <= excluded.created_at \
           RETURNING job_id",
};

/// A statement with `n` value rows.
struct MultiRow {
    head: &'static str,
    row: &'static str,
    tail: &'static str,
}

/// Built statements by row count (sqlx then caches the prepared form).
#[derive(Default)]
struct Statements {
    jobs: HashMap<usize, Arc<str>>,
    claims: HashMap<usize, Arc<str>>,
}

fn build(cache: &mut HashMap<usize, Arc<str>>, shape: &MultiRow, n: usize) -> Arc<str> {
    cache
        .entry(n)
        .or_insert_with(|| {
            let mut sql = String::with_capacity(
                shape.head.len() + n * (shape.row.len() + 2) + shape.tail.len(),
            );
            sql.push_str(shape.head);
            for i in 0..n {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(shape.row);
            }
            sql.push_str(shape.tail);
            Arc::from(sql)
        })
        .clone()
}

/// Most jobs in one statement (SQLite allows 32766 bound values; a job row
/// binds 10).
pub const MAX_ROWS_PER_STATEMENT: usize = 2048;

/// The SQLite store.
pub struct SqliteStore {
    read: SqlitePool,
    commit: GroupCommit,
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
        migrate(&mut setup)
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
        let commit = GroupCommit::spawn(writer, cfg.max_pending_writes, cfg.max_batch)
            .context("starting the writer thread")?;
        Ok(Self { read, commit })
    }
}

async fn migrate(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS callgate_migrations (version BIGINT PRIMARY KEY, \
         name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for (version, name, sql) in MIGRATIONS {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM callgate_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
        if applied.is_some() {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO callgate_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}

/// Refuses settings under which a commit would not be durable.
fn check_durability(synchronous: i64, journal: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        synchronous == 2,
        "PRAGMA synchronous is {synchronous}, expected 2 (FULL)"
    );
    anyhow::ensure!(
        journal.eq_ignore_ascii_case("wal"),
        "PRAGMA journal_mode is {journal}, expected wal"
    );
    Ok(())
}

/// The group-commit writer: a rusqlite connection used only on the writer
/// thread (see the `rusqlite` entry in Cargo.toml for why not sqlx here).
struct SqliteWriter {
    conn: rusqlite::Connection,
    statements: Statements,
}

impl SqliteWriter {
    fn open(path: &Path, cfg: &StorageConfig) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(cfg.busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        let journal: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        check_durability(synchronous, &journal)?;
        // Room for one prepared multi-row statement per batch size.
        conn.set_prepared_statement_cache_capacity(
            2 * cfg.max_batch.min(MAX_ROWS_PER_STATEMENT) + 16,
        );
        Ok(Self {
            conn,
            statements: Statements::default(),
        })
    }

    fn insert_jobs(&mut self, jobs: &[&NewJob]) -> rusqlite::Result<()> {
        for chunk in jobs.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = build(&mut self.statements.jobs, &INSERT_JOBS, chunk.len());
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let mut i = 0;
            let mut bind = |stmt: &mut rusqlite::CachedStatement<'_>, v: &dyn rusqlite::ToSql| {
                i += 1;
                stmt.raw_bind_parameter(i, v)
            };
            for job in chunk {
                bind(&mut stmt, &job.id.as_str())?;
                bind(&mut stmt, &job.trigger_id.as_str())?;
                bind(&mut stmt, &&*job.principal)?;
                bind(&mut stmt, &job.action_json)?;
                bind(&mut stmt, &job.input_json)?;
                bind(&mut stmt, &job.request_id)?;
                bind(&mut stmt, &job.idempotency.as_ref().map(|i| i.key.as_str()))?;
                bind(&mut stmt, &job.created_at_ms)?;
                bind(&mut stmt, &job.created_at_ms)?;
                bind(&mut stmt, &job.created_at_ms)?;
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }

    /// Claims the Idempotency-Keys of `jobs`; returns the ids of the jobs
    /// whose key was free (or expired).
    fn claim_keys(&mut self, jobs: &[&NewJob]) -> rusqlite::Result<HashSet<String>> {
        let mut claimed = HashSet::with_capacity(jobs.len());
        for chunk in jobs.chunks(MAX_ROWS_PER_STATEMENT) {
            let sql = build(&mut self.statements.claims, &CLAIM_IDEMPOTENCY, chunk.len());
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let mut i = 0;
            let mut bind = |stmt: &mut rusqlite::CachedStatement<'_>, v: &dyn rusqlite::ToSql| {
                i += 1;
                stmt.raw_bind_parameter(i, v)
            };
            for job in chunk {
                let Some(idem) = &job.idempotency else {
                    continue;
                };
                bind(&mut stmt, &&*job.principal)?;
                bind(&mut stmt, &job.trigger_id.as_str())?;
                bind(&mut stmt, &idem.key)?;
                bind(&mut stmt, &idem.request_hash)?;
                bind(&mut stmt, &job.id.as_str())?;
                bind(&mut stmt, &i64::from(idem.response_status))?;
                bind(&mut stmt, &idem.response_body)?;
                bind(&mut stmt, &job.created_at_ms)?;
                bind(&mut stmt, &idem.expires_at_ms)?;
            }
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                claimed.insert(row.get::<_, String>(0)?);
            }
        }
        Ok(claimed)
    }

    /// The transactional path: idempotency claims and/or the heartbeat
    /// together with the jobs.
    fn write_in_transaction(
        &mut self,
        jobs: &[NewJob],
        keyed: &[&NewJob],
        heartbeat_ms: Option<i64>,
    ) -> rusqlite::Result<Vec<EnqueueOutcome>> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| {
            let claimed = if keyed.is_empty() {
                HashSet::new()
            } else {
                self.claim_keys(keyed)?
            };
            let outcomes: Vec<EnqueueOutcome> = jobs
                .iter()
                .map(|j| match j.idempotency {
                    Some(_) if !claimed.contains(j.id.as_str()) => {
                        EnqueueOutcome::IdempotencyConflict
                    }
                    _ => EnqueueOutcome::Inserted,
                })
                .collect();
            let inserts: Vec<&NewJob> = jobs
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| **o == EnqueueOutcome::Inserted)
                .map(|(j, _)| j)
                .collect();
            if !inserts.is_empty() {
                self.insert_jobs(&inserts)?;
            }
            if let Some(at) = heartbeat_ms {
                self.conn
                    .prepare_cached(
                        "INSERT INTO heartbeat (id, at) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                    )?
                    .execute([at])?;
            }
            self.conn.execute_batch("COMMIT")?;
            Ok(outcomes)
        })();
        if result.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl BatchWriter for SqliteWriter {
    fn write_batch(
        &mut self,
        jobs: &[NewJob],
        heartbeat_ms: Option<i64>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let keyed: Vec<&NewJob> = jobs.iter().filter(|j| j.idempotency.is_some()).collect();
        if keyed.is_empty() && heartbeat_ms.is_none() && jobs.len() <= MAX_ROWS_PER_STATEMENT {
            // One statement is its own transaction: one fsync'd commit.
            let all: Vec<&NewJob> = jobs.iter().collect();
            self.insert_jobs(&all)?;
            return Ok(vec![EnqueueOutcome::Inserted; jobs.len()]);
        }
        Ok(self.write_in_transaction(jobs, &keyed, heartbeat_ms)?)
    }

    fn purge_idempotency(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")?
            .execute([now_ms])?;
        Ok(n as u64)
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
            "SELECT id, trigger_id, principal, status, action, input, result, error, attempts, \
             request_id, created_at, updated_at FROM jobs WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(JobRecord {
            id: row.try_get("id")?,
            trigger_id: row.try_get("trigger_id")?,
            principal: row.try_get("principal")?,
            status: row.try_get("status")?,
            action: json_column(&row, "action")?.unwrap_or_default(),
            input: json_column(&row, "input")?.unwrap_or_default(),
            result: json_column(&row, "result")?,
            error: json_column(&row, "error")?,
            attempts: row.try_get("attempts")?,
            request_id: row.try_get("request_id")?,
            created_at_ms: row.try_get("created_at")?,
            updated_at_ms: row.try_get("updated_at")?,
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
        self.commit.purge(now_ms).await
    }

    async fn check_writable(&self, now_ms: i64) -> Result<(), StoreError> {
        self.commit.heartbeat(now_ms).await
    }

    async fn close(&self) {
        self.commit.close().await;
        self.read.close().await;
    }
}
