//! Limits shared by every instance through Redis (`limits.backend =
//! "redis"`), in front of the local limiters.
//!
//! Policy, for each check: (1) the local pre-filter: a key Redis has
//! refused is refused here, without a round trip, until the time Redis gave
//! (exact: GCRA admits nothing for a key before that time, whoever asks);
//! (2) Redis decides, with the whole limit; (3) when Redis is unreachable
//! the check fails open to the local limiter, which holds this instance's
//! share (limit ÷ `limits.instances`), counted in
//! `callgate_rate_limit_fallback_total{policy}`.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::redis::{Decision, Redis};
use super::{Policy, PolicyState, RateClock, RateLimited};
use crate::config::RateSpec;

/// The shared state of a `Limiters` on the Redis backend.
pub struct Shared {
    pub redis: Arc<Redis>,
    /// Redis key → until when (app monotonic ns) Redis refuses it.
    exhausted: Mutex<HashMap<String, u64>>,
    clock: RateClock,
    max_tracked_keys: usize,
}

impl Shared {
    pub fn new(redis: Arc<Redis>, clock: RateClock, max_tracked_keys: usize) -> Self {
        Self {
            redis,
            exhausted: Mutex::new(HashMap::new()),
            clock,
            max_tracked_keys,
        }
    }

    /// One check of `policy` (the whole limit) for `key`; `local` is the
    /// fallback limiter's check.
    pub async fn check(
        &self,
        policy: &Policy,
        key: &(dyn Display + Sync),
        local: impl FnOnce() -> Result<PolicyState, RateLimited>,
    ) -> Result<PolicyState, RateLimited> {
        let redis_key = self.redis.key(policy.name, key);
        let now = self.clock.0.monotonic_ns();
        if let Some(until) = self.exhausted_until(&redis_key, now) {
            return Err(policy
                .rejected(Duration::from_nanos(until - now))
                .into_error());
        }
        match self.redis.decide(&redis_key, policy.spec(), None).await {
            Ok(Decision::Allowed { remaining }) => Ok(policy.allowed(remaining)),
            Ok(Decision::Refused { retry_after }) => {
                // From the time the request was sent: the pre-filter never
                // refuses what Redis would admit.
                let until = now.saturating_add(u64::try_from(retry_after.as_nanos()).unwrap_or(0));
                self.remember(redis_key, until, now);
                Err(policy.rejected(retry_after).into_error())
            }
            Err(_) => {
                metrics::counter!("callgate_rate_limit_fallback_total", "policy" => policy.name)
                    .increment(1);
                local()
            }
        }
    }

    fn exhausted_until(&self, key: &str, now: u64) -> Option<u64> {
        let map = self.exhausted.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied().filter(|until| *until > now)
    }

    fn remember(&self, key: String, until: u64, now: u64) {
        let mut map = self.exhausted.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max_tracked_keys {
            map.retain(|_, u| *u > now);
        }
        // Still full of live entries: forgetting one only costs round trips.
        if map.len() < self.max_tracked_keys {
            map.insert(key, until);
        }
    }

    /// Drops entries whose time has passed; returns how many remain.
    pub fn housekeep(&self) -> usize {
        let now = self.clock.0.monotonic_ns();
        let mut map = self.exhausted.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, until| *until > now);
        map.shrink_to_fit();
        map.len()
    }
}

/// This instance's share of `spec` when `instances` share it: the rate and
/// the burst divided (the burst at least 1).
pub fn share(spec: RateSpec, instances: u32) -> RateSpec {
    let instances = instances.max(1);
    RateSpec {
        requests: spec.requests,
        per: spec.per.saturating_mul(instances),
        burst: (spec.burst / instances).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_divides_rate_and_burst() {
        let spec = RateSpec {
            requests: 10,
            per: Duration::from_secs(1),
            burst: 20,
        };
        let half = share(spec, 2);
        assert_eq!(half.replenish_interval(), Duration::from_millis(200));
        assert_eq!(half.burst, 10);
        assert_eq!(share(spec, 1), spec);
        assert_eq!(share(spec, 64).burst, 1);
    }
}
