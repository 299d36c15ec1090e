//! The automation runner: workers claim due jobs with a lease, run them
//! (place calls, run automation steps) and record every state change.
//!
//! Policy:
//! - a claim is a lease (owner, expiry) renewed while the job runs; a job
//!   whose lease expired (its worker died or stalled) is claimed again:
//!   at-least-once, and a call step finds its call instead of placing
//!   another. Each claim has its own id, and the lease renewals and the
//!   final update are fenced on it: a stalled attempt that comes back
//!   after its job was claimed again (even by this same process) writes
//!   nothing;
//! - a failing step is retried with exponential backoff and full jitter up
//!   to `runner.max_attempts`, then the job is `failed` with the last error;
//!   every attempt is in the job's event log;
//! - waiting (busy lines, dial rate, a call to finish) and scheduling (the
//!   calling window, `schedule_at`) are states, not failures;
//! - on shutdown, running jobs get `runner.shutdown_grace`; then their
//!   leases are released for another worker;
//! - logs: a job's routine moves (waiting, scheduled) are DEBUG; its end, a
//!   failed attempt and a refusal are INFO; one that needs a person is WARN;
//!   ERROR only when its state could not be recorded.

mod dial;
mod events;
mod execute;
mod job;
mod reconcile;
mod steps;
mod update;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use events::{EVENTS_PRINCIPAL, event_jobs};
pub use execute::MAX_EVENT_DEPTH;
pub use update::backoff;
use update::update_level;

use crate::calls::Providers;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::ids::JobId;
use crate::store::{ClaimedJob, JobStatus, Store};

/// What a job does after this run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Next {
    Done(Value),
    /// The attempt failed; retried with backoff (or `failed` when exhausted).
    Retry(String),
    /// Fails now, without retrying (a config or input problem).
    Fail(String),
    Wait {
        until: i64,
        reason: String,
    },
    /// Every line of the agent is in use: wait until one frees (the store
    /// wakes waiters one per freed line; `runner.line_retry` is the backstop).
    LineBusy {
        agent: String,
        lines: u32,
    },
    Schedule {
        at: i64,
        reason: String,
    },
    Reject(String),
    Attention(String),
}

/// What the runner works with.
pub struct RunnerCtx {
    pub config: Arc<Catalog>,
    pub store: Arc<dyn Store>,
    pub providers: Arc<Providers>,
    pub clock: Arc<dyn Clock>,
    /// Poked when new jobs are due (accepted triggers, call events).
    pub wake: Arc<Notify>,
    /// Poked when a `webhook` step queues a delivery.
    pub deliveries_wake: Arc<Notify>,
    /// Where a job that needs attention is announced.
    pub alerts: crate::webhooks::AlertSink,
    pub owner: String,
}

/// A pool of workers in this process.
#[derive(Clone)]
pub struct Runner {
    ctx: Arc<RunnerCtx>,
}

impl Runner {
    pub fn new(
        config: Arc<Catalog>,
        store: Arc<dyn Store>,
        providers: Arc<Providers>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        deliveries_wake: Arc<Notify>,
        alerts: crate::webhooks::AlertSink,
    ) -> Self {
        let owner = format!("worker-{}", ulid::Ulid::generate());
        Self {
            ctx: Arc::new(RunnerCtx {
                config,
                store,
                providers,
                clock,
                wake,
                deliveries_wake,
                alerts,
                owner,
            }),
        }
    }

    /// Claims and runs due jobs one batch at a time until none is due
    /// (tests drive the runner with this instead of sleeping). Returns how
    /// many runs it made.
    pub async fn run_pending(&self) -> usize {
        let mut runs = 0;
        loop {
            let jobs = self.claim(16).await;
            if jobs.is_empty() {
                return runs;
            }
            runs += jobs.len();
            for job in jobs {
                self.ctx.execute(job).await;
            }
        }
    }

    async fn claim(&self, limit: usize) -> Vec<ClaimedJob> {
        let now = self.ctx.clock.now_ms();
        let lease = self.ctx.config.main.runner.lease.as_millis() as i64;
        match self
            .ctx
            .store
            .claim_jobs(&self.ctx.owner, now, now + lease, limit)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "claiming jobs failed");
                Vec::new()
            }
        }
    }

    /// The worker loop: until `token` is cancelled, claim as many due jobs
    /// as there are free workers and run them; then drain.
    pub async fn run(self, token: CancellationToken) {
        let cfg = self.ctx.config.main.runner.clone();
        let slots = Arc::new(Semaphore::new(cfg.workers.max(1)));
        let mut running = JoinSet::new();
        let reconcile = tokio::spawn(self.clone().reconcile_stale(token.clone()));
        tracing::info!(owner = %self.ctx.owner, workers = cfg.workers, "runner started");
        loop {
            let free = slots.available_permits();
            let mut claimed_all = false;
            if free > 0 && !token.is_cancelled() {
                let jobs = self.claim(free).await;
                claimed_all = !jobs.is_empty() && jobs.len() == free;
                for job in jobs {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    let ctx = self.ctx.clone();
                    running.spawn(async move {
                        ctx.execute(job).await;
                        drop(permit);
                    });
                }
            }
            if claimed_all {
                // More may be due; look again once a worker is free.
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = self.ctx.wake.notified() => {},
                _ = tokio::time::sleep(cfg.poll_interval) => {},
                Some(_) = running.join_next(), if !running.is_empty() => {},
            }
        }
        let drained = tokio::time::timeout(cfg.shutdown_grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            running.abort_all();
            let released = self
                .ctx
                .store
                .release_leases(&self.ctx.owner, self.ctx.clock.now_ms())
                .await;
            tracing::warn!(
                ?released,
                "runner: jobs still running after the grace period; leases released"
            );
        }
        reconcile.abort();
        tracing::info!("runner stopped");
    }
}

impl RunnerCtx {
    /// Runs one claimed job and records its next state.
    async fn execute(&self, claimed: ClaimedJob) {
        let renew = self.renew_while_running(&claimed.id, &claimed.claim_id);
        let update = match job::read(&claimed) {
            Ok((job, mut state)) => {
                let next = self.run_job(&job, &mut state).await;
                self.update_for(job.attempts, next, Some(&state))
            }
            // Never a default in its place: the job waits for an operator,
            // its stored progress untouched.
            Err(reason) => self.update_for(claimed.attempts, Next::Attention(reason), None),
        };
        renew.abort();
        let (job_id, claim_id) = (claimed.id, claimed.claim_id);
        let status = update.status;
        let level = update_level(&update);
        let reason = update.reason.clone();
        match self
            .store
            .finish_claim(&job_id, &claim_id, update, self.clock.now_ms())
            .await
        {
            Ok(true) => {
                if status == JobStatus::NeedsAttention {
                    self.alerts.raise(|| crate::webhooks::Alert {
                        kind: crate::webhooks::AlertKind::JobNeedsAttention,
                        subject: job_id.to_string(),
                        summary: format!(
                            "job {job_id} needs attention: {}",
                            reason.as_deref().unwrap_or("no reason recorded")
                        ),
                        details: serde_json::json!({"job_id": job_id, "reason": reason}),
                    });
                }
                let (status, reason) = (status.as_str(), reason.as_deref());
                // A level is part of an event's static metadata.
                match level {
                    tracing::Level::WARN => {
                        tracing::warn!(%job_id, status, reason, "job updated")
                    }
                    tracing::Level::INFO => {
                        tracing::info!(%job_id, status, reason, "job updated")
                    }
                    _ => tracing::debug!(%job_id, status, reason, "job updated"),
                }
            }
            Ok(false) => {
                tracing::warn!(%job_id, "lease lost before the job could be updated")
            }
            Err(e) => {
                tracing::error!(%job_id, error = %e, "recording the job's state failed; it will run again")
            }
        }
    }

    fn renew_while_running(&self, job_id: &JobId, claim_id: &str) -> tokio::task::JoinHandle<()> {
        let lease = self.config.main.runner.lease;
        let (store, clock, claim_id, job_id) = (
            self.store.clone(),
            self.clock.clone(),
            claim_id.to_owned(),
            job_id.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = clock.now_ms() + lease.as_millis() as i64;
                if !matches!(store.renew_lease(&job_id, &claim_id, until).await, Ok(true)) {
                    return;
                }
            }
        })
    }
}
