//! `[runner]`, `[deliveries]` and `[calling]` in `callgate.toml`: how jobs,
//! outbound deliveries and calls are run.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// `[runner]`: the workers that execute accepted jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Run the workers inside `callgate serve` (`--no-runner` turns it off;
    /// `callgate run-worker` runs them alone).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Jobs executed at once by one process.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long a claim holds before another worker may take the job over;
    /// renewed while the job runs.
    #[serde(default = "default_lease", with = "duration")]
    pub lease: Duration,
    /// How often idle workers look for due jobs (new jobs wake them at once).
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    /// Attempts of a failing step before the job is `failed`.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Exponential backoff with full jitter between attempts.
    #[serde(default = "default_retry_base", with = "duration")]
    pub retry_base: Duration,
    #[serde(default = "default_retry_max", with = "duration")]
    pub retry_max: Duration,
    /// Backstop for jobs waiting for a free line: they are woken one per
    /// freed line, oldest first, and look again after this long at the
    /// latest (a safety net, e.g. after `max_concurrent_calls` was raised).
    #[serde(default = "default_line_retry", with = "duration")]
    pub line_retry: Duration,
    /// On shutdown, running jobs get this long before their leases are
    /// released for another worker.
    #[serde(default = "default_runner_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// A call with no news for this long is checked with its provider.
    #[serde(default = "default_stale_call", with = "duration")]
    pub stale_call_after: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: default_workers(),
            lease: default_lease(),
            poll_interval: default_poll(),
            max_attempts: default_attempts(),
            retry_base: default_retry_base(),
            retry_max: default_retry_max(),
            line_retry: default_line_retry(),
            shutdown_grace: default_runner_grace(),
            stale_call_after: default_stale_call(),
        }
    }
}

/// `[deliveries]` in `callgate.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesConfig {
    /// How long the delivery log keeps deliveries and their attempts.
    #[serde(with = "duration", default = "default_retention")]
    pub retention: Duration,
    /// Deliveries sent at once by one process (across endpoints).
    #[serde(default = "default_delivery_workers")]
    pub workers: usize,
    /// How long past its endpoint's timeout a claimed delivery stays leased
    /// to the process sending it. When that process dies mid-attempt, the
    /// delivery is sent again (same `webhook-id`) once the lease is over.
    #[serde(with = "duration", default = "default_lease_grace")]
    pub lease_grace: Duration,
}

impl Default for DeliveriesConfig {
    fn default() -> Self {
        Self {
            retention: default_retention(),
            workers: default_delivery_workers(),
            lease_grace: default_lease_grace(),
        }
    }
}

fn default_lease_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_delivery_workers() -> usize {
    16
}

/// `[calling]`: rules for every call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallingConfig {
    /// Do-not-call list: one E.164 number per line, `#` comments (relative
    /// to the config dir; a missing file is an empty list).
    #[serde(default = "default_dnc_file")]
    pub do_not_call_file: String,
    /// Input field with the callee's IANA time zone, when the sender knows it.
    #[serde(default = "default_tz_field")]
    pub timezone_field: String,
}

impl Default for CallingConfig {
    fn default() -> Self {
        Self {
            do_not_call_file: default_dnc_file(),
            timezone_field: default_tz_field(),
        }
    }
}

fn default_attempts() -> u32 {
    5
}
fn default_dnc_file() -> String {
    "do_not_call.txt".to_owned()
}
fn default_lease() -> Duration {
    Duration::from_secs(15)
}
fn default_line_retry() -> Duration {
    Duration::from_secs(30)
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_base() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}
fn default_runner_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_stale_call() -> Duration {
    Duration::from_secs(600)
}
fn default_tz_field() -> String {
    "/timezone".to_owned()
}
fn default_workers() -> usize {
    8
}
fn default_true() -> bool {
    true
}
