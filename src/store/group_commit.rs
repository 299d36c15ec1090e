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
    /// Any other write (runner claims, call updates, readiness heartbeats),
    /// committed in the same transaction as the jobs of its batch.
    type Task: Send + 'static;

    /// Commits `jobs` and `tasks` durably. Returns one outcome per job, in
    /// order. Each task's own result is delivered by the writer, after the
    /// commit, exactly once (an error when the commit fails).
    fn write_batch(
        &mut self,
        jobs: &[NewJob],
        tasks: Vec<Self::Task>,
    ) -> Result<Vec<EnqueueOutcome>, StoreError>;
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

// Jobs are nearly every message and the hot path; boxing them to shrink the
// rare variants would add an allocation per accepted request.
#[allow(clippy::large_enum_variant)]
enum Op<T> {
    Job(NewJob, Reply<EnqueueOutcome>),
    Task(T),
    Shutdown,
}

/// Handle to the writer thread.
pub struct GroupCommit<T> {
    tx: mpsc::Sender<Op<T>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Starts the writer with a queue of `capacity` and batches of at most
    /// `max_batch` jobs.
    pub fn spawn<W: BatchWriter<Task = T>>(
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

    /// Queues a job and waits for its commit; `Backpressure` at once when
    /// the queue is full.
    pub async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Op::Job(job, reply))
            .map_err(full_or_closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a task, waiting for room (the runner and callbacks are not
    /// turned away; trigger requests are).
    pub async fn submit(&self, task: T) -> Result<(), StoreError> {
        self.tx
            .send(Op::Task(task))
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Queues a task only if there is room now.
    pub fn try_submit(&self, task: T) -> Result<(), StoreError> {
        self.tx.try_send(Op::Task(task)).map_err(full_or_closed)
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

fn full_or_closed<T>(e: mpsc::error::TrySendError<T>) -> StoreError {
    match e {
        mpsc::error::TrySendError::Full(_) => StoreError::Backpressure,
        mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
    }
}

fn run<W: BatchWriter>(mut writer: W, mut rx: mpsc::Receiver<Op<W::Task>>, max_batch: usize) {
    let mut jobs = Vec::with_capacity(max_batch);
    let mut job_replies: Vec<Reply<EnqueueOutcome>> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        let mut tasks = Vec::new();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Job(job, reply) => {
                    jobs.push(job);
                    job_replies.push(reply);
                }
                Op::Task(task) => tasks.push(task),
                // Refuse new work; what is already queued is still received
                // (and committed) by this loop before `blocking_recv` ends.
                Op::Shutdown => rx.close(),
            }
            if jobs.len() + tasks.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        let result = writer.write_batch(&jobs, tasks);
        jobs.clear();
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in job_replies.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group commit failed; the batch's requests get 503");
                for reply in job_replies.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
