//! Group commit for PostgreSQL: one task per instance commits the jobs of
//! all concurrent requests as ONE statement (`INSERT … SELECT FROM unnest(…)`
//! with the Idempotency-Key claim in the same statement), on a connection
//! of its own, with `synchronous_commit = on`: a request gets its answer
//! only once the commit is durable.
//!
//! Why a batch per statement: a commit waits for the WAL flush, so one
//! transaction per request would cap throughput at the disk's flush rate;
//! the writer takes whatever queued up while the previous commit was
//! flushing (up to `max_batch`) and commits it at once, never on a timer.
//! Up to `in_flight` batches run at once, each on a connection of its own
//! (`storage.write_connections`): one batch's statement runs while
//! another's commit flushes. Each request is answered when ITS batch has
//! committed. Two batches in flight may carry one Idempotency-Key: the
//! unique index makes the later statement wait for the earlier commit and
//! lose to it (`ON CONFLICT`), as between two instances. Each batch claims
//! its keys (and dedupe keys) in sorted order, so two batches sharing
//! several keys take them in one order rather than deadlocking.
//!
//! Policy (as the SQLite engine's `GroupCommit`): the queue is bounded; when
//! it is full, `enqueue` fails at once with `Backpressure` and the readiness
//! heartbeat is refused the same way. `close` stops intake, commits what is
//! queued, and returns when the writer has exited. Idempotency-Keys are
//! unique in the table (`ON CONFLICT`), so two instances racing on one key
//! insert one job, and the loser replays the winner's record.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::store::{EnqueueOutcome, NewJob, StoreError};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

// Jobs are nearly every message and the hot path; boxing them to shrink the
// rare variants would add an allocation per accepted request.
#[allow(clippy::large_enum_variant)]
enum Op {
    Job(NewJob, Reply<EnqueueOutcome>),
    /// The readiness probe: a row committed with the next batch.
    Heartbeat(i64, Reply<()>),
    Shutdown,
}

/// Inserts a batch: claims the campaign dedupe keys (principal `~dedupe`,
/// `DEDUPE_PRINCIPAL`), then the Idempotency-Keys of the jobs that did not
/// lose a dedupe key (an expired record is replaced, a live one wins and
/// its row is not returned), then inserts the jobs whose keys were all
/// claimed. Returns the ids of the jobs whose keys were claimed, tagged
/// `i` (Idempotency-Key) or `d` (dedupe).
const INSERT_BATCH: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::text[], $12::text[],
        $13::bigint[], $14::text[], $15::bigint[], $16::text[], $17::text[], $18::bigint[])
    AS t(id, trigger_id, principal, status, action, input, request_id, idem_key, created_at,
        run_at, dedupe_key, request_hash, response_status, response_body, expires_at,
        dd_key, dd_body, dd_expires_at)
),
deduped AS (
    INSERT INTO idempotency_keys (principal, trigger_id, idem_key, request_hash, job_id,
        response_status, response_body, created_at, expires_at)
    SELECT '~dedupe', trigger_id, dd_key, '', id, 202, dd_body, created_at, dd_expires_at
    FROM input WHERE dd_key IS NOT NULL
    ORDER BY trigger_id, dd_key
    ON CONFLICT (principal, trigger_id, idem_key) DO UPDATE SET
        job_id = excluded.job_id, response_body = excluded.response_body,
        created_at = excluded.created_at, expires_at = excluded.expires_at
        WHERE idempotency_keys.expires_at <= excluded.created_at
    RETURNING job_id
),
claimed AS (
    INSERT INTO idempotency_keys (principal, trigger_id, idem_key, request_hash, job_id,
        response_status, response_body, created_at, expires_at)
    SELECT principal, trigger_id, idem_key, request_hash, id, response_status, response_body,
        created_at, expires_at FROM input WHERE idem_key IS NOT NULL
        AND (dd_key IS NULL OR id IN (SELECT job_id FROM deduped))
    ORDER BY principal, trigger_id, idem_key
    ON CONFLICT (principal, trigger_id, idem_key) DO UPDATE SET
        request_hash = excluded.request_hash, job_id = excluded.job_id,
        response_status = excluded.response_status, response_body = excluded.response_body,
        created_at = excluded.created_at, expires_at = excluded.expires_at
        WHERE idempotency_keys.expires_at <= excluded.created_at
    RETURNING job_id
),
inserted AS (
    INSERT INTO jobs (id, trigger_id, principal, status, action, input, request_id,
        idempotency_key, created_at, updated_at, run_at, dedupe_key)
    SELECT id, trigger_id, principal, status, action, input, request_id, idem_key, created_at,
        created_at, run_at, dedupe_key FROM input
    WHERE (idem_key IS NULL OR id IN (SELECT job_id FROM claimed))
        AND (dd_key IS NULL OR id IN (SELECT job_id FROM deduped))
    ORDER BY dedupe_key, id
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
)
SELECT job_id, 'i' FROM claimed UNION ALL SELECT job_id, 'd' FROM deduped";

const HEARTBEAT: &str = "INSERT INTO heartbeat (id, at) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET at = excluded.at";

/// Handle to the writer task.
pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer on `pool` (its own connections) with a queue of
    /// `capacity`, batches of at most `max_batch` jobs and at most
    /// `in_flight` batches at once; a batch taking longer than `timeout`
    /// fails (its requests get 503).
    pub(super) fn spawn(
        pool: Pool,
        capacity: usize,
        max_batch: usize,
        in_flight: usize,
        timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let limits = Limits {
            max_batch: max_batch.max(1),
            in_flight: in_flight.max(1),
            timeout,
        };
        let task = tokio::spawn(run(pool, rx, limits));
        Self {
            tx,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues a job and waits for its commit; `Backpressure` at once when
    /// the queue is full.
    pub(super) async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Op::Job(job, reply))
            .map_err(full_or_closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits a heartbeat with the next batch, only if there is room now
    /// (a full queue is exactly what readiness must report).
    pub(super) async fn heartbeat(&self, now_ms: i64) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Op::Heartbeat(now_ms, reply))
            .map_err(full_or_closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops intake, commits what is queued, and waits for the writer.
    pub(super) async fn close(&self) {
        let _ = self.tx.send(Op::Shutdown).await;
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn full_or_closed<T>(e: mpsc::error::TrySendError<T>) -> StoreError {
    match e {
        mpsc::error::TrySendError::Full(_) => StoreError::Backpressure,
        mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
    }
}

#[derive(Clone, Copy)]
struct Limits {
    max_batch: usize,
    in_flight: usize,
    timeout: Duration,
}

/// Gathers batches and commits each in a task of its own, at most
/// `in_flight` at once. A batch is gathered only once a slot is free, so
/// what queues up meanwhile makes the next batch bigger.
async fn run(pool: Pool, mut rx: mpsc::Receiver<Op>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    let mut batches = JoinSet::new();
    loop {
        // Never closed, so never an error.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        while batches.try_join_next().is_some() {}
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut batch = Batch::default();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Job(job, reply) => {
                    batch.jobs.push(job);
                    batch.job_replies.push(reply);
                }
                Op::Heartbeat(at, reply) => batch.beats.push((at, reply)),
                // Refuse new work; what is already queued is still received
                // (and committed) by this loop before `recv` ends.
                Op::Shutdown => rx.close(),
            }
            if batch.jobs.len() + batch.beats.len() < limits.max_batch {
                next = rx.try_recv().ok();
            }
        }
        let pool = pool.clone();
        batches.spawn(async move {
            batch.commit(&pool, limits.timeout).await;
            drop(slot);
        });
    }
    // `close` returns once every batch in flight has been answered.
    while batches.join_next().await.is_some() {}
}

/// One group commit's work and the requests waiting for it.
#[derive(Default)]
struct Batch {
    jobs: Vec<NewJob>,
    job_replies: Vec<Reply<EnqueueOutcome>>,
    beats: Vec<(i64, Reply<()>)>,
}

impl Batch {
    async fn commit(self, pool: &Pool, timeout: Duration) {
        let beat_at = self.beats.iter().map(|(at, _)| *at).max();
        let result =
            match tokio::time::timeout(timeout, write_batch(pool, &self.jobs, beat_at)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "group commit did not finish within {timeout:?}"
                ))),
            };
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in self.job_replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                for (_, reply) in self.beats {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; the batch's requests get 503");
                for reply in self.job_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for (_, reply) in self.beats {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The batch's columns, one array each (the statement's parameters).
#[derive(Default)]
struct Columns<'a> {
    id: Vec<&'a str>,
    trigger_id: Vec<&'a str>,
    principal: Vec<&'a str>,
    status: Vec<&'a str>,
    action: Vec<&'a str>,
    input: Vec<&'a str>,
    request_id: Vec<Option<&'a str>>,
    idem_key: Vec<Option<&'a str>>,
    created_at: Vec<i64>,
    run_at: Vec<i64>,
    dedupe_key: Vec<Option<&'a str>>,
    request_hash: Vec<Option<&'a str>>,
    response_status: Vec<Option<i64>>,
    response_body: Vec<Option<&'a str>>,
    expires_at: Vec<Option<i64>>,
    dd_key: Vec<Option<&'a str>>,
    dd_body: Vec<Option<&'a str>>,
    dd_expires_at: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, j: &'a NewJob) {
        let idem = j.idempotency.as_ref();
        self.id.push(j.id.as_str());
        self.trigger_id
            .push(j.trigger_id.as_ref().map(|t| t.as_str()).unwrap_or(""));
        self.principal.push(&j.principal);
        self.status.push(j.status.as_str());
        self.action.push(&j.action_json);
        self.input.push(&j.input_json);
        self.request_id.push(j.request_id.as_deref());
        self.idem_key.push(idem.map(|i| i.key.as_str()));
        self.created_at.push(j.created_at_ms);
        self.run_at.push(j.run_at_ms);
        self.dedupe_key.push(j.dedupe_key.as_deref());
        self.request_hash
            .push(idem.map(|i| i.request_hash.as_str()));
        self.response_status
            .push(idem.map(|i| i64::from(i.response_status)));
        self.response_body
            .push(idem.map(|i| i.response_body.as_str()));
        self.expires_at.push(idem.map(|i| i.expires_at_ms));
        let dd = j.dedupe.as_ref();
        self.dd_key.push(dd.map(|d| d.key.as_str()));
        self.dd_body.push(dd.map(|d| d.response_body.as_str()));
        self.dd_expires_at.push(dd.map(|d| d.expires_at_ms));
    }
}

/// Commits `jobs` (and the heartbeat) durably; one outcome per job.
async fn write_batch(
    pool: &Pool,
    jobs: &[NewJob],
    heartbeat: Option<i64>,
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    // Within one batch a key is claimed by its first job only (one
    // statement cannot update a row twice); the others lost to it.
    let mut outcomes = vec![EnqueueOutcome::Inserted; jobs.len()];
    let mut seen = HashSet::new();
    let mut seen_dd = HashSet::new();
    let mut cols = Columns::default();
    for (j, outcome) in jobs.iter().zip(outcomes.iter_mut()) {
        if let Some(d) = &j.dedupe
            && !seen_dd.insert((j.trigger_id.as_ref().map(|t| t.as_str()), &d.key))
        {
            *outcome = EnqueueOutcome::Duplicate;
            continue;
        }
        if let Some(idem) = &j.idempotency {
            let key = (
                &*j.principal,
                j.trigger_id.as_ref().map(|t| t.as_str()),
                &idem.key,
            );
            if !seen.insert(key) {
                *outcome = EnqueueOutcome::IdempotencyConflict;
                continue;
            }
        }
        cols.push(j);
    }
    let mut client = pool.get().await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 18] = [
        &cols.id,
        &cols.trigger_id,
        &cols.principal,
        &cols.status,
        &cols.action,
        &cols.input,
        &cols.request_id,
        &cols.idem_key,
        &cols.created_at,
        &cols.run_at,
        &cols.dedupe_key,
        &cols.request_hash,
        &cols.response_status,
        &cols.response_body,
        &cols.expires_at,
        &cols.dd_key,
        &cols.dd_body,
        &cols.dd_expires_at,
    ];
    let insert = client.prepare_cached(INSERT_BATCH).await?;
    let rows = match heartbeat {
        // One statement is its own transaction: one durable commit, one
        // round trip.
        None => client.query(&insert, &params).await?,
        Some(at) => {
            let beat = client.prepare_cached(HEARTBEAT).await?;
            // A transaction dropped before its commit (an error, a timeout)
            // is rolled back before the connection's next statement.
            let tx = client.transaction().await?;
            let rows = tx.query(&insert, &params).await?;
            tx.execute(&beat, &[&at]).await?;
            tx.commit().await?;
            rows
        }
    };
    let (mut claimed, mut deduped) = (HashSet::new(), HashSet::new());
    for r in &rows {
        let id = super::convert::get::<&str>(r, 0)?;
        match super::convert::get::<&str>(r, 1)? {
            "d" => deduped.insert(id),
            _ => claimed.insert(id),
        };
    }
    for (j, outcome) in jobs.iter().zip(outcomes.iter_mut()) {
        if *outcome != EnqueueOutcome::Inserted {
            continue;
        }
        if j.dedupe.is_some() && !deduped.contains(j.id.as_str()) {
            *outcome = EnqueueOutcome::Duplicate;
        } else if j.idempotency.is_some() && !claimed.contains(j.id.as_str()) {
            *outcome = EnqueueOutcome::IdempotencyConflict;
        }
    }
    Ok(outcomes)
}
