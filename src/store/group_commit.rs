//! Group commit: one writer thread owns the write connection and commits the
//! jobs of all concurrent requests in one transaction.
//!
//! Why: every commit costs an fsync (about 2,000/s on the reference disk), so
//! one transaction per request would cap throughput there. The writer takes
//! whatever has queued up while the previous commit was syncing (up to
//! `max_batch`) and commits it at once; nobody waits on a timer.
//!
//! The writer is a dedicated OS thread, not a task: a commit blocks in fsync
//! for about a millisecond, which must not stall a runtime worker, and the
//! engine can then call its database synchronously without a hand-off per
//! statement. (An async engine can `block_on` its driver on this thread.)
//!
//! Policy: the queue is bounded. When it is full, `enqueue` fails at once
//! with `Backpressure` (503 + Retry-After upstream), never an unbounded wait.
//! `close` stops intake, commits everything already queued, and returns when
//! the writer has exited.

use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{EnqueueOutcome, NewJob, StoreError};

/// What an engine implements to be driven by `GroupCommit` (called on the
/// writer thread; blocking is expected).
pub trait BatchWriter: Send + 'static {
    /// Commits `jobs` (and, if `heartbeat_ms` is set, the heartbeat row)
    /// durably; one outcome per job, in order.
    fn write_batch(
        &mut self,
        jobs: &[NewJob],
        heartbeat_ms: Option<i64>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError>;

    /// Deletes idempotency records expired at `now_ms`.
    fn purge_idempotency(&mut self, now_ms: i64) -> Result<u64, StoreError>;
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

// Jobs are nearly every message and the hot path; boxing them to shrink the
// rare variants would add an allocation per accepted request.
#[allow(clippy::large_enum_variant)]
enum Op {
    Job(NewJob, Reply<EnqueueOutcome>),
    Heartbeat(i64, Reply<()>),
    Purge(i64, Reply<u64>),
    Shutdown,
}

/// Handle to the writer thread.
pub struct GroupCommit {
    tx: mpsc::Sender<Op>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the writer with a queue of `capacity` and batches of at most
    /// `max_batch` jobs.
    pub fn spawn<W: BatchWriter>(
        writer: W,
        capacity: usize,
        max_batch: usize,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("callgate-writer".into())
            .spawn(move || run(writer, rx, max_batch.max(1)))?;
        Ok(Self {
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn offer<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Backpressure,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        Ok(rx)
    }

    /// Queues a job and waits for its commit.
    pub async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        let rx = self.offer(|reply| Op::Job(job, reply))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits a heartbeat through the writer (readiness).
    pub async fn heartbeat(&self, now_ms: i64) -> Result<(), StoreError> {
        let rx = self.offer(|reply| Op::Heartbeat(now_ms, reply))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs idempotency clean-up on the writer (it owns the write lock).
    pub async fn purge(&self, now_ms: i64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Purge(now_ms, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops intake, commits what is queued, and waits for the writer.
    pub async fn close(&self) {
        let _ = self.tx.send(Op::Shutdown).await;
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run<W: BatchWriter>(mut writer: W, mut rx: mpsc::Receiver<Op>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    let mut job_replies: Vec<Reply<EnqueueOutcome>> = Vec::with_capacity(max_batch);
    let mut heartbeats: Vec<Reply<()>> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut heartbeat_ms = None;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Job(job, reply) => {
                    jobs.push(job);
                    job_replies.push(reply);
                }
                Op::Heartbeat(at, reply) => {
                    heartbeat_ms = Some(at);
                    heartbeats.push(reply);
                }
                Op::Purge(now, reply) => {
                    let _ = reply.send(writer.purge_idempotency(now));
                }
                // Refuse new work; what is already queued is still received
                // (and committed) by this loop before `blocking_recv` ends.
                Op::Shutdown => rx.close(),
            }
            if jobs.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if jobs.is_empty() && heartbeat_ms.is_none() {
            continue;
        }
        let result = writer.write_batch(&jobs, heartbeat_ms);
        jobs.clear();
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in job_replies.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                for reply in heartbeats.drain(..) {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; the batch's requests get 503");
                for reply in job_replies.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
                for reply in heartbeats.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
