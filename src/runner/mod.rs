//! The automation runner: workers claim due jobs with a lease, run them
//! (place calls, run automation steps) and record every state change.
//!
//! Policy:
//! - a claim is a lease (owner, expiry) renewed while the job runs; a job
//!   whose lease expired (its worker died) is claimed again: at-least-once,
//!   and a call step finds its call instead of placing another;
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
mod steps;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use events::{EVENTS_PRINCIPAL, event_jobs};
pub use execute::MAX_EVENT_DEPTH;

use crate::calls::{Lookup, Providers};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::ids::JobId;
use crate::store::CallStatus;
use crate::store::{CallEventIn, ClaimedJob, JobStatus, JobUpdate, Store};
use job::JobState;

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

    /// Every `runner.stale_call_after / 4` (at least 5 s), reconciles stale
    /// calls.
    async fn reconcile_stale(self, token: CancellationToken) {
        let every = (self.ctx.config.main.runner.stale_call_after / 4).max(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(every) => {},
            }
            self.reconcile_stale_calls().await;
        }
    }

    /// Asks providers about calls with no news for `runner.stale_call_after`
    /// (their events may have been lost) and applies what they say through
    /// the same path as a callback. Returns how many calls changed.
    pub async fn reconcile_stale_calls(&self) -> usize {
        let after = self.ctx.config.main.runner.stale_call_after;
        let now = self.ctx.clock.now_ms();
        let Ok(stale) = self
            .ctx
            .store
            .stale_calls(now - after.as_millis() as i64)
            .await
        else {
            return 0;
        };
        let mut changed = 0;
        for call in stale {
            let Some(provider) = self.ctx.providers.get(&call.provider) else {
                continue;
            };
            let ctx = self.ctx.call_context(&call);
            let status = match provider.lookup(&call, &ctx).await {
                Ok(Lookup::Found {
                    status: Some(s), ..
                }) => s,
                Ok(Lookup::NotFound) => CallStatus::Failed,
                _ => continue,
            };
            let mut event = CallEventIn::new(
                call.id.clone(),
                format!("reconcile:{}", status.as_str()),
                json!({"reconciled": status}).to_string(),
                now,
            );
            event.status = Some(status);
            let config = self.ctx.config.clone();
            let on_final =
                Box::new(move |c: &crate::store::CallRecord| event_jobs(&config, c, now));
            match self.ctx.store.apply_call_event(event, on_final).await {
                Ok(crate::store::EventApplied::Applied { moved_to: Some(_) }) => changed += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(call_id = %call.id, error = %e, "reconciling a stale call failed")
                }
            }
        }
        if changed > 0 {
            tracing::info!(
                calls = changed,
                "stale calls reconciled with their providers"
            );
            self.ctx.wake.notify_one();
        }
        changed
    }
}

impl RunnerCtx {
    /// Runs one claimed job and records its next state.
    async fn execute(&self, claimed: ClaimedJob) {
        let renew = self.renew_while_running(&claimed.id);
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
        let job_id = claimed.id;
        let status = update.status;
        let level = update_level(&update);
        let reason = update.reason.clone();
        match self
            .store
            .finish_claim(&job_id, &self.owner, update, self.clock.now_ms())
            .await
        {
            Ok(true) => {
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

    fn renew_while_running(&self, job_id: &JobId) -> tokio::task::JoinHandle<()> {
        let lease = self.config.main.runner.lease;
        let (store, clock, owner, job_id) = (
            self.store.clone(),
            self.clock.clone(),
            self.owner.clone(),
            job_id.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = clock.now_ms() + lease.as_millis() as i64;
                if !matches!(store.renew_lease(&job_id, &owner, until).await, Ok(true)) {
                    return;
                }
            }
        })
    }

    /// The job's next state after a run that started with `attempts`
    /// failed attempts; `state: None` leaves its stored progress as it is
    /// (it could not be read).
    fn update_for(&self, attempts: i64, next: Next, state: Option<&JobState>) -> JobUpdate {
        let now = self.clock.now_ms();
        let state_json = state.and_then(|s| serde_json::to_value(s).ok());
        let base = |status: JobStatus, reason: Option<String>, run_at: i64| JobUpdate {
            status,
            reason,
            run_at_ms: run_at,
            state: state_json.clone(),
            result: None,
            error: None,
            attempts,
            detail: None,
            line_wait: None,
        };
        match next {
            Next::Done(result) => JobUpdate {
                result: Some(result),
                ..base(JobStatus::Succeeded, None, now)
            },
            Next::Wait { until, reason } => base(JobStatus::Waiting, Some(reason), until),
            Next::LineBusy { agent, lines } => JobUpdate {
                line_wait: Some(crate::store::LineWait {
                    agent_id: agent.clone(),
                    lines,
                }),
                ..base(
                    JobStatus::Waiting,
                    Some(format!("lines busy: {agent}")),
                    now + self.config.main.runner.line_retry.as_millis() as i64,
                )
            },
            Next::Schedule { at, reason } => base(JobStatus::Scheduled, Some(reason), at),
            Next::Reject(reason) => JobUpdate {
                error: Some(json!({"message": reason})),
                ..base(JobStatus::Rejected, Some(reason), now)
            },
            Next::Attention(reason) => JobUpdate {
                error: Some(json!({"message": reason})),
                ..base(JobStatus::NeedsAttention, Some(reason), now)
            },
            Next::Fail(message) => JobUpdate {
                error: Some(json!({"message": message})),
                detail: Some(json!({"error": message})),
                ..base(JobStatus::Failed, Some(message.clone()), now)
            },
            Next::Retry(message) => {
                let attempts = attempts + 1;
                let cfg = &self.config.main.runner;
                if attempts >= i64::from(cfg.max_attempts) {
                    JobUpdate {
                        error: Some(json!({"message": message, "attempts": attempts})),
                        detail: Some(json!({"error": message})),
                        attempts,
                        ..base(
                            JobStatus::Failed,
                            Some(format!("gave up after {attempts} attempts")),
                            now,
                        )
                    }
                } else {
                    let delay = backoff(cfg.retry_base, cfg.retry_max, attempts);
                    JobUpdate {
                        error: Some(json!({"message": message, "attempts": attempts})),
                        detail: Some(json!({"error": message})),
                        attempts,
                        ..base(
                            JobStatus::Queued,
                            Some(format!("retrying: {message}")),
                            now + delay.as_millis() as i64,
                        )
                    }
                }
            }
        }
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, base·2^n)).
pub fn backoff(base: Duration, max: Duration, attempt: i64) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.clamp(0, 20) as u32)
        .min(max);
    let mut b = [0u8; 8];
    crate::crypto::random_bytes(&mut b);
    exp.mul_f64(u64::from_le_bytes(b) as f64 / u64::MAX as f64)
}

/// How loud a job's update is logged: a job that needs a person WARN; its
/// end, a failed attempt (to be retried) or a refusal INFO; routine moves
/// (waiting for a line or a call, scheduled for the calling window) DEBUG.
fn update_level(update: &JobUpdate) -> tracing::Level {
    match update.status {
        JobStatus::NeedsAttention => tracing::Level::WARN,
        s if s.is_final() || update.error.is_some() => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routine_job_moves_are_debug_and_ends_and_failures_info() {
        let update = |status, error: Option<Value>| JobUpdate {
            status,
            reason: None,
            run_at_ms: 0,
            state: None,
            result: None,
            error,
            attempts: 0,
            detail: None,
            line_wait: None,
        };
        use tracing::Level;
        for status in [JobStatus::Waiting, JobStatus::Scheduled, JobStatus::Queued] {
            assert_eq!(
                update_level(&update(status, None)),
                Level::DEBUG,
                "{status:?}"
            );
        }
        // A failed attempt that will be retried (queued again, with its error).
        let retry = update(JobStatus::Queued, Some(json!({"message": "HTTP 500"})));
        assert_eq!(update_level(&retry), Level::INFO);
        for status in [JobStatus::Succeeded, JobStatus::Failed, JobStatus::Rejected] {
            assert_eq!(
                update_level(&update(status, None)),
                Level::INFO,
                "{status:?}"
            );
        }
        assert_eq!(
            update_level(&update(JobStatus::NeedsAttention, None)),
            Level::WARN
        );
    }

    #[test]
    fn backoff_is_jittered_under_an_exponential_cap() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        for attempt in 0..10 {
            let cap = base.saturating_mul(1 << attempt).min(max);
            for _ in 0..20 {
                assert!(backoff(base, max, attempt) <= cap);
            }
        }
        let spread: std::collections::HashSet<u128> =
            (0..20).map(|_| backoff(base, max, 5).as_millis()).collect();
        assert!(spread.len() > 10, "full jitter spreads retries");
    }
}
