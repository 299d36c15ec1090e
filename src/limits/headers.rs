//! `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers).
//!
//! For a GCRA limit the quota `q` is the burst and the window `w` the time in
//! which a whole burst is earned back. `r` is what is left, `t` the seconds
//! until the whole quota is back (on a rejection: until the next request is
//! allowed, the same number as `Retry-After`). Each limit a request passed
//! appends its own item, so clients see every policy that applies to them.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::RateSpec;

pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A limit's fixed description: its name, spec and `RateLimit-Policy` item
/// (built once, not per request).
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: &'static str,
    spec: RateSpec,
    header: HeaderValue,
}

impl Policy {
    pub fn new(name: &'static str, spec: RateSpec) -> Self {
        // Saturating: a (silly but valid) spec of centuries must not
        // overflow `Duration` arithmetic.
        let window = ceil_secs(spec.replenish_interval().saturating_mul(spec.burst)).max(1);
        let text = format!("\"{name}\";q={};w={window}", spec.burst);
        Self {
            name,
            spec,
            header: HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("\"limit\"")),
        }
    }

    /// The quota this policy describes.
    pub fn spec(&self) -> &RateSpec {
        &self.spec
    }

    pub(crate) fn allowed(&self, remaining: u32) -> PolicyState {
        let missing = self.spec.burst.saturating_sub(remaining);
        PolicyState {
            name: self.name,
            policy: self.header.clone(),
            remaining,
            reset_secs: ceil_secs(self.spec.replenish_interval().saturating_mul(missing)),
        }
    }

    pub(crate) fn rejected(&self, wait: Duration) -> PolicyState {
        let mut s = self.allowed(0);
        s.reset_secs = ceil_secs(wait).max(1);
        s
    }
}

/// One limit's state after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    pub name: &'static str,
    policy: HeaderValue,
    pub remaining: u32,
    pub reset_secs: u64,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A request refused by an exhausted limit: the limit's state (`r=0`, and
/// `t` the seconds until the next request is allowed, as `Retry-After`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit `{}` exceeded", .0.name)]
pub struct RateLimited(pub PolicyState);

impl RateLimited {
    /// Whole seconds until a request may be sent again (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.0.reset_secs
    }

    /// The exhausted limit's name.
    pub fn policy(&self) -> &'static str {
        self.0.name
    }
}

impl PolicyState {
    /// The refusal (counted in `callgate_rate_limited_total{policy}`).
    pub(crate) fn into_error(self) -> RateLimited {
        metrics::counter!("callgate_rate_limited_total", "policy" => self.name).increment(1);
        RateLimited(self)
    }

    /// Appends this policy's items to `headers`.
    pub fn append_to(&self, headers: &mut HeaderMap) {
        let state = format!(
            "\"{}\";r={};t={}",
            self.name, self.remaining, self.reset_secs
        );
        if let Ok(s) = HeaderValue::from_str(&state) {
            headers.append(RATELIMIT_POLICY.clone(), self.policy.clone());
            headers.append(RATELIMIT.clone(), s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_the_draft_syntax() {
        let spec = RateSpec {
            requests: 10,
            per: Duration::from_secs(1),
            burst: 20,
        };
        let mut h = HeaderMap::new();
        Policy::new("principal", spec).allowed(15).append_to(&mut h);
        assert_eq!(h["ratelimit-policy"], "\"principal\";q=20;w=2");
        assert_eq!(h["ratelimit"], "\"principal\";r=15;t=1");
        let r = Policy::new("ip", spec).rejected(Duration::from_millis(1500));
        assert_eq!((r.remaining, r.reset_secs), (0, 2));
    }

    #[test]
    fn a_window_of_centuries_saturates_instead_of_overflowing() {
        // `Duration * u32` panicked here (found by a property test).
        let spec = RateSpec {
            requests: 1,
            per: Duration::from_secs(u64::MAX / 2),
            burst: 3,
        };
        let mut h = HeaderMap::new();
        let policy = Policy::new("principal", spec);
        policy.allowed(0).append_to(&mut h);
        assert_eq!(
            h["ratelimit-policy"],
            format!("\"principal\";q=3;w={}", u64::MAX).as_str()
        );
        assert_eq!(policy.rejected(Duration::MAX).reset_secs, u64::MAX);
    }

    mod props {
        //! The fields against the limiter they describe (governor's GCRA on
        //! a fake clock): `r` never above `q`, `t` never above `w`, a 429
        //! has `r=0` and `t` = `Retry-After` >= 1, and both waits are honest:
        //! after `Retry-After` a request passes, and after an answer's `t`
        //! the whole quota is back.

        use std::collections::BTreeMap;

        use governor::clock::FakeRelativeClock;
        use proptest::prelude::*;

        use super::*;
        use crate::limits::Keyed;

        fn spec() -> impl Strategy<Value = RateSpec> {
            (1..=1000u32, 1..=600_000u64, 1..=50u32)
                .prop_map(|(requests, per_ms, burst)| RateSpec {
                    requests,
                    per: Duration::from_millis(per_ms),
                    burst,
                })
                .prop_filter("a usable quota", |s| s.check().is_ok())
        }

        /// The parameters of the one item in `name`'s field lines.
        fn item(headers: &HeaderMap, name: &HeaderName) -> BTreeMap<String, u64> {
            let lines: Vec<_> = headers.get_all(name).iter().collect();
            assert_eq!(lines.len(), 1, "{name}: {lines:?}");
            let text = lines[0].to_str().unwrap();
            let (label, params) = text.split_once(';').unwrap();
            assert_eq!(label, "\"p\"", "{text}");
            params
                .split(';')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_owned(), v.parse().unwrap())
                })
                .collect()
        }

        /// `(q, w, r, t)` of an answer, checked against each other.
        fn fields(state: &PolicyState, spec: &RateSpec) -> (u64, u64, u64, u64) {
            let mut h = HeaderMap::new();
            state.append_to(&mut h);
            let policy = item(&h, &RATELIMIT_POLICY);
            let now = item(&h, &RATELIMIT);
            let (q, w, r, t) = (policy["q"], policy["w"], now["r"], now["t"]);
            assert_eq!(q, u64::from(spec.burst));
            assert!(w >= 1, "w={w}");
            assert!(r <= q, "r={r} above q={q}");
            assert!(t <= w, "t={t} above w={w}");
            (q, w, r, t)
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                // Found cases become named unit tests; no files beside the sources.
                failure_persistence: None,
                ..ProptestConfig::with_cases(128)
            })]

            #[test]
            fn the_fields_describe_the_limiter_truthfully(
                spec in spec(),
                steps in prop::collection::vec((0..3_000u64, 1..6u32), 1..30),
            ) {
                let clock = FakeRelativeClock::default();
                let limiter: Keyed<u8, _> = Keyed::with_clock("p", spec, clock.clone());
                let mut last_t = 0;
                for (advance_ms, requests) in steps {
                    clock.advance(Duration::from_millis(advance_ms));
                    for _ in 0..requests {
                        match limiter.check(&0) {
                            Ok(state) => last_t = fields(&state, &spec).3,
                            Err(refused) => {
                                let (_, _, r, t) = fields(&refused.0, &spec);
                                prop_assert_eq!(r, 0);
                                prop_assert!(t >= 1);
                                prop_assert_eq!(t, refused.retry_after_secs());
                                clock.advance(Duration::from_secs(t));
                                let after = limiter.check(&0);
                                prop_assert!(after.is_ok(), "refused again after Retry-After: {}", t);
                                last_t = fields(&after.unwrap(), &spec).3;
                            }
                        }
                    }
                }
                // `t` seconds after the last answer the whole quota is back.
                clock.advance(Duration::from_secs(last_t));
                for i in 0..spec.burst {
                    prop_assert!(limiter.check(&0).is_ok(), "request {} of a quota of {} refused", i + 1, spec.burst);
                }
            }

            #[test]
            fn extreme_specs_do_not_overflow(
                requests in 1..=u32::MAX,
                per_secs in 0..=u64::MAX / 2,
                burst in 1..=u32::MAX,
                remaining in any::<u32>(),
                wait_secs in any::<u64>(),
            ) {
                let spec = RateSpec { requests, per: Duration::from_secs(per_secs), burst };
                let policy = Policy::new("p", spec);
                let allowed = policy.allowed(remaining.min(burst));
                prop_assert!(allowed.remaining <= burst);
                let rejected = policy.rejected(Duration::from_secs(wait_secs));
                prop_assert!(rejected.reset_secs >= 1);
                prop_assert_eq!(rejected.remaining, 0);
            }
        }
    }
}
