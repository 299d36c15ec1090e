//! The group-commit writer for SQLite: a rusqlite connection used only on
//! the writer thread.
//!
//! A batch of plain trigger jobs is one multi-row INSERT, its own
//! transaction (one round trip, one fsync). Anything else (idempotency
//! and campaign dedupe claims, runner tasks, call events) runs in one `BEGIN IMMEDIATE`
//! transaction, each task inside its own savepoint so that one failing task
//! does not undo the others.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::schema::check_durability;
use crate::config::StorageConfig;
use crate::store::{BatchWriter, DEDUPE_PRINCIPAL, EnqueueOutcome, NewJob, StoreError};

/// A write to run on the writer thread, inside the batch's transaction.
pub(super) type Task = Box<dyn FnOnce(&Connection) -> Outcome + Send>;

/// What a task did: keep its changes or roll its savepoint back, and how to
/// tell the caller once the batch's fate is known.
pub(super) struct Outcome {
    pub keep: bool,
    pub deliver: Deliver,
}

/// Tells a task's caller whether its batch committed.
pub(super) type Deliver = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Most jobs in one statement (SQLite allows 32766 bound values; a job row
/// binds 12).
pub const MAX_ROWS_PER_STATEMENT: usize = 2048;

const INSERT_JOBS: MultiRow = MultiRow {
    head: "INSERT INTO jobs (id, trigger_id, principal, status, action, input, request_id, \
           idempotency_key, created_at, updated_at, run_at, dedupe_key) VALUES ",
    row: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    tail: " ON CONFLICT (dedupe_key) DO NOTHING",
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

/// Built statements by row count (rusqlite then caches the prepared form).
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

pub(super) struct SqliteWriter {
    conn: Connection,
    statements: Statements,
}

impl SqliteWriter {
    pub(super) fn open(path: &Path, cfg: &StorageConfig) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(cfg.busy_timeout)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
        let journal: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        check_durability(synchronous, &journal)?;
        // Room for one prepared multi-row statement per batch size.
        conn.set_prepared_statement_cache_capacity(
            2 * cfg.max_batch.min(MAX_ROWS_PER_STATEMENT) + 64,
        );
        Ok(Self {
            conn,
            statements: Statements::default(),
        })
    }

    /// Applies pending migrations (before the writer thread starts).
    pub(super) fn migrate(&mut self) -> rusqlite::Result<()> {
        super::schema::migrate(&mut self.conn)
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
                bind(
                    &mut stmt,
                    &job.trigger_id.as_ref().map(|t| t.as_str()).unwrap_or(""),
                )?;
                bind(&mut stmt, &&*job.principal)?;
                bind(&mut stmt, &job.status.as_str())?;
                bind(&mut stmt, &job.action_json)?;
                bind(&mut stmt, &job.input_json)?;
                bind(&mut stmt, &job.request_id)?;
                bind(&mut stmt, &job.idempotency.as_ref().map(|i| i.key.as_str()))?;
                bind(&mut stmt, &job.created_at_ms)?;
                bind(&mut stmt, &job.created_at_ms)?;
                bind(&mut stmt, &job.run_at_ms)?;
                bind(&mut stmt, &job.dedupe_key)?;
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }

    /// Claims one key per job of `jobs` (its Idempotency-Key, or its
    /// campaign dedupe key with `dedupe`); returns the ids of the jobs whose
    /// key was free (or expired).
    fn claim_keys(&mut self, jobs: &[&NewJob], dedupe: bool) -> rusqlite::Result<HashSet<String>> {
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
                let Some(c) = Claim::of(job, dedupe) else {
                    continue;
                };
                bind(&mut stmt, &c.principal)?;
                bind(
                    &mut stmt,
                    &job.trigger_id.as_ref().map(|t| t.as_str()).unwrap_or(""),
                )?;
                bind(&mut stmt, &c.key)?;
                bind(&mut stmt, &c.request_hash)?;
                bind(&mut stmt, &job.id.as_str())?;
                bind(&mut stmt, &c.response_status)?;
                bind(&mut stmt, &c.response_body)?;
                bind(&mut stmt, &job.created_at_ms)?;
                bind(&mut stmt, &c.expires_at_ms)?;
            }
            let mut rows = stmt.raw_query();
            while let Some(row) = rows.next()? {
                claimed.insert(row.get::<_, String>(0)?);
            }
        }
        Ok(claimed)
    }

    /// Everything of a mixed batch, inside one open transaction; returns
    /// the jobs' outcomes and the tasks' deliveries.
    fn write_mixed(
        &mut self,
        jobs: &[NewJob],
        tasks: Vec<Task>,
        deliveries: &mut Vec<Deliver>,
    ) -> rusqlite::Result<Vec<EnqueueOutcome>> {
        // Dedupe keys first: a job that lost its dedupe key must not leave
        // an Idempotency-Key record behind that names no job.
        let deduped: Vec<&NewJob> = jobs.iter().filter(|j| j.dedupe.is_some()).collect();
        let won = if deduped.is_empty() {
            HashSet::new()
        } else {
            self.claim_keys(&deduped, true)?
        };
        let lost = |j: &NewJob| j.dedupe.is_some() && !won.contains(j.id.as_str());
        let keyed: Vec<&NewJob> = jobs
            .iter()
            .filter(|j| j.idempotency.is_some() && !lost(j))
            .collect();
        let claimed = if keyed.is_empty() {
            HashSet::new()
        } else {
            self.claim_keys(&keyed, false)?
        };
        let outcomes: Vec<EnqueueOutcome> = jobs
            .iter()
            .map(|j| match j.idempotency {
                _ if lost(j) => EnqueueOutcome::Duplicate,
                Some(_) if !claimed.contains(j.id.as_str()) => EnqueueOutcome::IdempotencyConflict,
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
        for task in tasks {
            self.conn.execute_batch("SAVEPOINT task")?;
            let outcome = task(&self.conn);
            if !outcome.keep {
                self.conn.execute_batch("ROLLBACK TO task")?;
            }
            self.conn.execute_batch("RELEASE task")?;
            deliveries.push(outcome.deliver);
        }
        Ok(outcomes)
    }
}

impl BatchWriter for SqliteWriter {
    type Task = Task;

    fn write_batch(
        &mut self,
        jobs: &[NewJob],
        tasks: Vec<Task>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let plain = tasks.is_empty()
            && jobs
                .iter()
                .all(|j| j.idempotency.is_none() && j.dedupe.is_none());
        if plain && jobs.len() <= MAX_ROWS_PER_STATEMENT {
            // One statement is its own transaction: one fsync'd commit.
            let all: Vec<&NewJob> = jobs.iter().collect();
            self.insert_jobs(&all)?;
            return Ok(vec![EnqueueOutcome::Inserted; jobs.len()]);
        }
        let mut deliveries = Vec::with_capacity(tasks.len());
        let result = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .and_then(|()| self.write_mixed(jobs, tasks, &mut deliveries))
            .and_then(|outcomes| self.conn.execute_batch("COMMIT").map(|()| outcomes));
        match result {
            Ok(outcomes) => {
                for deliver in deliveries {
                    deliver(Ok(()));
                }
                Ok(outcomes)
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                let err = StoreError::from(e);
                for deliver in deliveries {
                    deliver(Err(err.clone()));
                }
                Err(err)
            }
        }
    }
}

/// The values of one claim row in `idempotency_keys`.
struct Claim<'a> {
    principal: &'a str,
    key: &'a str,
    request_hash: &'a str,
    response_status: i64,
    response_body: &'a str,
    expires_at_ms: i64,
}

impl<'a> Claim<'a> {
    /// The job's Idempotency-Key claim, or (`dedupe`) its dedupe claim.
    fn of(job: &'a NewJob, dedupe: bool) -> Option<Self> {
        if dedupe {
            let d = job.dedupe.as_ref()?;
            return Some(Claim {
                principal: DEDUPE_PRINCIPAL,
                key: &d.key,
                request_hash: "",
                response_status: 202,
                response_body: &d.response_body,
                expires_at_ms: d.expires_at_ms,
            });
        }
        let i = job.idempotency.as_ref()?;
        Some(Claim {
            principal: &job.principal,
            key: &i.key,
            request_hash: &i.request_hash,
            response_status: i64::from(i.response_status),
            response_body: &i.response_body,
            expires_at_ms: i.expires_at_ms,
        })
    }
}

/// A write task that runs `f` in the batch transaction and sends its
/// result on `tx` once the batch has committed (or the error at once; the
/// task's savepoint is rolled back).
pub(super) fn task<T, F>(f: F, tx: tokio::sync::oneshot::Sender<Result<T, StoreError>>) -> Task
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
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
