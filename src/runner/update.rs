//! What a run makes of a job: the store update for its next step (done,
//! waiting, scheduled, retried with backoff, failed, refused, or left for an
//! operator), and how loudly that is logged.

use std::time::Duration;

use serde_json::json;

use super::job::JobState;
use super::{Next, RunnerCtx};
use crate::store::{JobStatus, JobUpdate, LineWait};

impl RunnerCtx {
    /// The job's next state after a run that started with `attempts`
    /// failed attempts; `state: None` leaves its stored progress as it is
    /// (it could not be read).
    pub(super) fn update_for(
        &self,
        attempts: i64,
        next: Next,
        state: Option<&JobState>,
    ) -> JobUpdate {
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
                line_wait: Some(LineWait {
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
pub(super) fn update_level(update: &JobUpdate) -> tracing::Level {
    match update.status {
        JobStatus::NeedsAttention => tracing::Level::WARN,
        s if s.is_final() || update.error.is_some() => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
