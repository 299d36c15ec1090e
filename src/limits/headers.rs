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
use crate::http::error::ApiError;

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

impl PolicyState {
    pub(crate) fn into_error(self) -> ApiError {
        ApiError::RateLimited {
            policy: self.name,
            retry_after_secs: self.reset_secs,
            headers: RateLimitHeaders(vec![self]),
        }
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

/// The policies attached to a 429.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders(pub Vec<PolicyState>);

impl RateLimitHeaders {
    pub fn write_to(&self, headers: &mut HeaderMap) {
        for p in &self.0 {
            p.append_to(headers);
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
}
