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

/// One limit's state after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    pub name: &'static str,
    pub quota: u32,
    pub window_secs: u64,
    pub remaining: u32,
    pub reset_secs: u64,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl PolicyState {
    pub(crate) fn allowed(name: &'static str, spec: &RateSpec, remaining: u32) -> Self {
        let interval = spec.replenish_interval();
        Self {
            name,
            quota: spec.burst,
            window_secs: ceil_secs(interval * spec.burst).max(1),
            remaining,
            reset_secs: ceil_secs(interval * spec.burst.saturating_sub(remaining)),
        }
    }

    pub(crate) fn rejected(name: &'static str, spec: &RateSpec, wait: Duration) -> Self {
        let mut s = Self::allowed(name, spec, 0);
        s.reset_secs = ceil_secs(wait).max(1);
        s
    }

    pub(crate) fn into_error(self) -> ApiError {
        ApiError::RateLimited {
            policy: self.name,
            retry_after_secs: self.reset_secs,
            headers: RateLimitHeaders(vec![self]),
        }
    }

    /// Appends this policy's items to `headers`.
    pub fn append_to(&self, headers: &mut HeaderMap) {
        let policy = format!("\"{}\";q={};w={}", self.name, self.quota, self.window_secs);
        let state = format!(
            "\"{}\";r={};t={}",
            self.name, self.remaining, self.reset_secs
        );
        if let (Ok(p), Ok(s)) = (
            HeaderValue::from_str(&policy),
            HeaderValue::from_str(&state),
        ) {
            headers.append(RATELIMIT_POLICY.clone(), p);
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
        PolicyState::allowed("principal", &spec, 15).append_to(&mut h);
        assert_eq!(h["ratelimit-policy"], "\"principal\";q=20;w=2");
        assert_eq!(h["ratelimit"], "\"principal\";r=15;t=1");
        let r = PolicyState::rejected("ip", &spec, Duration::from_millis(1500));
        assert_eq!((r.remaining, r.reset_secs), (0, 2));
    }
}
