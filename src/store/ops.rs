//! Records of the operations API's store methods: retrying a job, an
//! endpoint's delivery health, the time series behind `GET /v1/stats`, and
//! the durable per-minute counts of refused triggers.

use super::status::JobStatus;

/// A job's calls are unique per job and `step`. An operator's retry
/// (`Store::retry_job`) starts a new round of the job's progress, whose
/// calls are stored at `round * CALL_ROUND_STRIDE + step`: a retried step
/// places its own call and never finds (or redials) one of an earlier
/// round, and every earlier call record stays as it was.
pub const CALL_ROUND_STRIDE: i64 = 1_000_000;

/// A stored call step as (round, step) (see `CALL_ROUND_STRIDE`).
pub fn call_round_and_step(stored: i64) -> (i64, i64) {
    (
        stored.div_euclid(CALL_ROUND_STRIDE),
        stored.rem_euclid(CALL_ROUND_STRIDE),
    )
}

/// What a retry request found (`Store::retry_job`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    NotFound,
    /// Now `queued`, due at once, its attempts reset, in a new round.
    Retried,
    /// Only `failed` and `needs_attention` jobs are retried.
    NotRetryable(JobStatus),
}

/// Delivery attempts of one endpoint over a window (`Store::endpoint_health`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptWindow {
    pub attempts: i64,
    /// Attempts answered 2xx without a transport error.
    pub succeeded: i64,
    /// Latency percentiles (nearest rank), `None` without attempts.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// An endpoint's last failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub at_ms: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub delivery_id: String,
}

/// One endpoint's delivery health, from the stored attempts and deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointHealth {
    pub endpoint: String,
    pub last_hour: AttemptWindow,
    pub last_day: AttemptWindow,
    pub last_error: Option<LastError>,
    pub pending: i64,
    pub dead: i64,
    /// The shared breaker's row (default: never tripped).
    pub breaker: super::BreakerRow,
}

/// One count in one time bucket of `Store::stats`: `bucket` is the
/// bucket's index from `since_ms` (`(t - since) / bucket_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCount {
    pub bucket: i64,
    /// What is counted (a refusal reason, a call outcome, an endpoint).
    pub key: String,
    pub count: i64,
}

/// Delivery attempts of one endpoint in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryBucket {
    pub bucket: i64,
    pub endpoint: String,
    pub succeeded: i64,
    pub failed: i64,
    /// Mean latency of the bucket's attempts.
    pub mean_latency_ms: i64,
}

/// Raw time series for `GET /v1/stats`, bucketed by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSeries {
    /// Jobs created by trigger requests (key: the trigger id).
    pub accepted: Vec<BucketCount>,
    /// Refused trigger requests (key: the problem type's slug).
    pub refused: Vec<BucketCount>,
    /// Calls created (key: the outcome when there is one, else the status).
    pub calls: Vec<BucketCount>,
    pub deliveries: Vec<DeliveryBucket>,
}

/// A window of `Store::stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsWindow {
    pub since_ms: i64,
    pub until_ms: i64,
    pub bucket_ms: i64,
}

/// Refused trigger requests of one minute and reason, added to the stored
/// count (`Store::add_refusals`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalCount {
    /// The minute's start (Unix ms, a multiple of 60 000).
    pub minute_ms: i64,
    pub reason: String,
    pub count: i64,
}

/// The 0-based offset of the `q` quantile's nearest rank among `n` sorted
/// values (`n >= 1`).
pub(crate) fn nearest_rank(n: i64, q: f64) -> i64 {
    ((q * n as f64).ceil() as i64).clamp(1, n) - 1
}
