//! Rate limits: governor's GCRA, with IETF `RateLimit` headers.
//!
//! Policy: four limits, each a rate and a burst. `ip` (per client address,
//! before authentication, so credential checking cannot be used to burn CPU;
//! on provider callbacks it is charged only by callbacks whose signature
//! fails), `principal` (per API key or JWT subject; keys and issuers may
//! override the default), `trigger` (per trigger across all callers;
//! triggers may override) and `provider` (verified status callbacks per
//! voice provider; providers may override). A rejection is 429 problem+json with `Retry-After` in whole
//! seconds; every answer carries `RateLimit-Policy` and `RateLimit` for the
//! limits it passed (draft-ietf-httpapi-ratelimit-headers). Idle keys are
//! dropped by periodic housekeeping, so memory stays bounded however many
//! distinct clients appear.
//!
//! Backends (`limits.backend`): `memory`, each process its own limiters;
//! `redis`, one GCRA per limit and key in Redis shared by every instance
//! (`shared.rs`, `redis.rs`), with the local limiters as the fallback
//! holding this instance's share while Redis is unreachable. The memory
//! path stays synchronous inside the async checks (it never awaits).

pub mod client_ip;
mod headers;
mod redis;
mod shared;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

pub use headers::{Policy, PolicyState, RateLimited};
pub use redis::{Decision, Redis, check_redis_url};
pub use shared::share;

use crate::auth::Principal;
use crate::config::{LimitsBackend, LimitsConfig, RateSpec};
use crate::ids::TriggerId;

/// The governor quota of a rate spec.
pub fn quota(spec: &RateSpec) -> Quota {
    // Validated by `RateSpec::check` at config load; the fallbacks only keep this
    // total for unvalidated input.
    let interval = spec
        .replenish_interval()
        .max(std::time::Duration::from_nanos(1));
    let burst = NonZeroU32::new(spec.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// The application clock, as governor's time source: limits follow the
/// injected clock like every other rule (tests move it instead of waiting).
#[derive(Debug, Clone)]
pub struct RateClock(pub Arc<dyn crate::clock::Clock>);

impl Clock for RateClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.monotonic_ns())
    }
}

/// A keyed GCRA limiter with a policy name for its headers.
pub struct Keyed<K: Hash + Eq + Clone, C: Clock = RateClock> {
    policy: Policy,
    /// The whole limit's policy (what Redis enforces); `policy` when the
    /// limiter holds the whole limit itself.
    shared: Policy,
    inner: RateLimiter<K, DashMapStateStore<K>, C, StateInformationMiddleware>,
}

impl<K: Hash + Eq + Clone, C: Clock> Keyed<K, C> {
    /// A limiter on `clock`.
    pub fn with_clock(name: &'static str, spec: RateSpec, clock: C) -> Self {
        Self::share_of(name, spec, spec, clock)
    }

    /// A limiter holding `local`, this instance's share of `whole`.
    pub fn share_of(name: &'static str, whole: RateSpec, local: RateSpec, clock: C) -> Self {
        let inner = RateLimiter::dashmap_with_clock(quota(&local), clock)
            .with_middleware::<StateInformationMiddleware>();
        Self {
            policy: Policy::new(name, local),
            shared: Policy::new(name, whole),
            inner,
        }
    }

    /// Takes one request's worth of quota for `key`.
    pub fn check(&self, key: &K) -> Result<PolicyState, RateLimited> {
        match self.inner.check_key(key) {
            Ok(snapshot) => Ok(self.policy.allowed(snapshot.remaining_burst_capacity())),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.inner.clock().now());
                Err(self.policy.rejected(wait).into_error())
            }
        }
    }

    /// Drops keys whose state is back to fresh; returns how many remain.
    pub fn housekeep(&self) -> usize {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
        self.inner.len()
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// An unkeyed GCRA limiter (one per trigger, one per provider).
pub struct Direct {
    policy: Policy,
    /// The whole limit's policy (see `Keyed::shared`).
    shared: Policy,
    inner: RateLimiter<NotKeyed, InMemoryState, RateClock, StateInformationMiddleware>,
}

impl Direct {
    pub fn new(name: &'static str, spec: RateSpec, clock: RateClock) -> Self {
        Self::share_of(name, spec, spec, clock)
    }

    /// A limiter holding `local`, this instance's share of `whole`.
    pub fn share_of(
        name: &'static str,
        whole: RateSpec,
        local: RateSpec,
        clock: RateClock,
    ) -> Self {
        let inner = RateLimiter::direct_with_clock(quota(&local), clock)
            .with_middleware::<StateInformationMiddleware>();
        Self {
            policy: Policy::new(name, local),
            shared: Policy::new(name, whole),
            inner,
        }
    }

    pub fn check(&self) -> Result<PolicyState, RateLimited> {
        match self.inner.check() {
            Ok(snapshot) => Ok(self.policy.allowed(snapshot.remaining_burst_capacity())),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.inner.clock().now());
                Err(self.policy.rejected(wait).into_error())
            }
        }
    }
}

/// Every limiter the gateway uses.
pub struct Limiters {
    ip: Keyed<IpAddr>,
    principal: Keyed<Arc<str>>,
    /// One keyed limiter per distinct override spec (keys, issuers).
    principal_overrides: RwLock<HashMap<RateSpec, Arc<Keyed<Arc<str>>>>>,
    triggers: HashMap<TriggerId, Direct>,
    providers: HashMap<String, Direct>,
    clock: RateClock,
    max_tracked_keys: usize,
    ip_checks: AtomicU64,
    /// The Redis backend; `None` on the memory backend.
    shared: Option<shared::Shared>,
    /// How many instances share a limit (1 on the memory backend).
    instances: u32,
}

/// How many per-IP checks pass between looks at the key count.
const SIZE_CHECK_EVERY: u64 = 4096;

impl Limiters {
    /// `triggers` and `providers` with their effective specs (override or
    /// default). `redis` is the shared backend when `cfg.backend` is
    /// `redis`; the local limiters then hold this instance's share.
    pub fn new<'a>(
        cfg: &LimitsConfig,
        triggers: impl IntoIterator<Item = (&'a TriggerId, RateSpec)>,
        providers: impl IntoIterator<Item = (&'a String, RateSpec)>,
        clock: Arc<dyn crate::clock::Clock>,
        redis: Option<Arc<Redis>>,
    ) -> Self {
        let clock = RateClock(clock);
        let instances = match (cfg.backend, &redis) {
            (LimitsBackend::Redis, Some(_)) => cfg.instances.max(1),
            _ => 1,
        };
        let direct =
            |name, spec| Direct::share_of(name, spec, share(spec, instances), clock.clone());
        Self {
            ip: Keyed::share_of(
                "ip",
                cfg.per_ip,
                share(cfg.per_ip, instances),
                clock.clone(),
            ),
            principal: Keyed::share_of(
                "principal",
                cfg.per_principal,
                share(cfg.per_principal, instances),
                clock.clone(),
            ),
            principal_overrides: RwLock::new(HashMap::new()),
            triggers: triggers
                .into_iter()
                .map(|(id, spec)| (id.clone(), direct("trigger", spec)))
                .collect(),
            providers: providers
                .into_iter()
                .map(|(name, spec)| (name.clone(), direct("provider", spec)))
                .collect(),
            shared: redis
                .filter(|_| cfg.backend == LimitsBackend::Redis)
                .map(|r| shared::Shared::new(r, clock.clone(), cfg.max_tracked_keys)),
            clock,
            max_tracked_keys: cfg.max_tracked_keys,
            ip_checks: AtomicU64::new(0),
            instances,
        }
    }

    /// The Redis backend's client (`None` on the memory backend).
    pub fn redis(&self) -> Option<&Arc<Redis>> {
        self.shared.as_ref().map(|s| &s.redis)
    }

    /// Runs `local` on the memory backend; on Redis, asks Redis for
    /// `policy` (the whole limit) with `local` as the fallback.
    async fn decide(
        &self,
        policy: &Policy,
        key: &(dyn std::fmt::Display + Sync),
        local: impl FnOnce() -> Result<PolicyState, RateLimited>,
    ) -> Result<PolicyState, RateLimited> {
        match &self.shared {
            None => local(),
            Some(shared) => shared.check(policy, key, local).await,
        }
    }

    /// The pre-authentication limit on the client address.
    pub async fn check_ip(&self, ip: IpAddr) -> Result<PolicyState, RateLimited> {
        let key = client_ip::limiter_key(ip);
        self.decide(&self.ip.shared, &key, || self.check_ip_locally(key))
            .await
    }

    fn check_ip_locally(&self, key: IpAddr) -> Result<PolicyState, RateLimited> {
        if self.ip_checks.fetch_add(1, Ordering::Relaxed) % SIZE_CHECK_EVERY == SIZE_CHECK_EVERY - 1
            && self.ip.len() > self.max_tracked_keys
        {
            // Many distinct clients between two housekeeping runs: clean now.
            self.ip.housekeep();
        }
        self.ip.check(&key)
    }

    /// The per-principal limit (default, or the key's / issuer's override).
    pub async fn check_principal(&self, principal: &Principal) -> Result<PolicyState, RateLimited> {
        let id: &str = &principal.id;
        let Some(spec) = principal.rate_limit else {
            let limiter = &self.principal;
            return self
                .decide(&limiter.shared, &id, || limiter.check(&principal.id))
                .await;
        };
        let existing = self
            .principal_overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&spec)
            .cloned();
        let limiter = match existing {
            Some(l) => l,
            None => self
                .principal_overrides
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(spec)
                .or_insert_with(|| {
                    let local = share(spec, self.instances);
                    Arc::new(Keyed::share_of(
                        "principal",
                        spec,
                        local,
                        self.clock.clone(),
                    ))
                })
                .clone(),
        };
        self.decide(&limiter.shared, &id, || limiter.check(&principal.id))
            .await
    }

    /// The per-trigger limit (triggers unknown to the limiter are not limited
    /// here; the handler has answered 404 before asking).
    pub async fn check_trigger(&self, id: &TriggerId) -> Option<Result<PolicyState, RateLimited>> {
        let limiter = self.triggers.get(id)?;
        Some(self.decide(&limiter.shared, id, || limiter.check()).await)
    }

    /// The limit on a provider's verified callbacks (`None` for a provider
    /// the limiter does not know: its calls cannot exist).
    pub async fn check_provider(&self, name: &str) -> Option<Result<PolicyState, RateLimited>> {
        let limiter = self.providers.get(name)?;
        Some(
            self.decide(&limiter.shared, &name, || limiter.check())
                .await,
        )
    }

    /// Drops idle keys from every keyed limiter; returns the keys left.
    pub fn housekeep(&self) -> usize {
        let overrides: Vec<_> = self
            .principal_overrides
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        self.ip.housekeep()
            + self.principal.housekeep()
            + overrides.iter().map(|l| l.housekeep()).sum::<usize>()
            + self.shared.as_ref().map_or(0, shared::Shared::housekeep)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn spec(requests: u32, per_ms: u64, burst: u32) -> RateSpec {
        RateSpec {
            requests,
            per: Duration::from_millis(per_ms),
            burst,
        }
    }

    #[test]
    fn burst_then_rejection_with_retry_after_then_recovery() {
        let clock = FakeRelativeClock::default();
        let l: Keyed<u32, _> = Keyed::with_clock("t", spec(1, 2000, 2), clock.clone());
        assert_eq!(l.check(&1).unwrap().remaining, 1);
        assert_eq!(l.check(&1).unwrap().remaining, 0);
        match l.check(&1) {
            Err(refused) => assert_eq!(refused.retry_after_secs(), 2),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Another key has its own bucket.
        assert!(l.check(&2).is_ok());
        clock.advance(Duration::from_millis(2000));
        assert!(l.check(&1).is_ok());
    }

    #[test]
    fn housekeeping_keeps_memory_bounded_under_many_keys() {
        let clock = FakeRelativeClock::default();
        let l: Keyed<u32, _> = Keyed::with_clock("t", spec(10, 1000, 5), clock.clone());
        for k in 0..50_000u32 {
            l.check(&k).unwrap();
        }
        assert_eq!(l.len(), 50_000);
        // Still within the replenish window: nothing may be dropped.
        assert_eq!(l.housekeep(), 50_000);
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.housekeep(), 0);
    }

    #[test]
    fn zero_and_degenerate_specs_are_refused() {
        assert!(spec(0, 1000, 1).check().is_err());
        assert!(spec(1, 1000, 0).check().is_err());
        assert!(spec(1, 0, 1).check().is_err());
        assert!(spec(5, 1000, 10).check().is_ok());
    }
}
