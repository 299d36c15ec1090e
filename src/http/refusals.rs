//! Refused trigger requests, counted by reason for `GET /v1/stats`: the
//! route layer `prometheus::track` sees every answer of `POST /v1/triggers/{trigger_id}` that
//! is a problem (its `type`'s slug: `unauthorized`, `forbidden`,
//! `rate-limited`, `validation-failed`, `payload-too-large`,
//! `bad-signature`, `ip-not-allowed`, `overloaded`, …) and adds one to an
//! in-memory count per minute and reason. `app` flushes the counts every
//! few seconds in one store call (`Store::add_refusals`, `+=`, so
//! instances add up).
//!
//! Policy: the accept path never waits on the database for this: a
//! refusal costs one uncontended mutex and a map update. Counts not yet
//! flushed when the process dies are lost (at most one flush interval);
//! a flush that fails keeps its counts for the next one. The two refusals
//! made before routing (a declared `Content-Length` over the limit, the
//! request timeout) are counted by the front door (`is_accept`).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::Method;
use axum::response::Response;

use super::AppState;
use super::error::ProblemSlug;
use crate::store::RefusalCount;

/// The route whose refusals are counted.
pub const ACCEPT_ROUTE: &str = "/v1/triggers/{trigger_id}";

const MINUTE_MS: i64 = 60_000;

/// Refusals not flushed yet, by (minute, reason).
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<HashMap<(i64, &'static str), i64>>,
}

impl Refusals {
    /// One refusal for `reason` at `now_ms`.
    pub fn add(&self, now_ms: i64, reason: &'static str) {
        let minute = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        *self.lock().entry((minute, reason)).or_default() += 1;
    }

    /// Takes every count (the map is left empty).
    pub fn take(&self) -> Vec<RefusalCount> {
        std::mem::take(&mut *self.lock())
            .into_iter()
            .map(|((minute_ms, reason), count)| RefusalCount {
                minute_ms,
                reason: reason.to_owned(),
                count,
            })
            .collect()
    }

    /// Puts back counts a flush could not write.
    pub fn restore(&self, counts: Vec<RefusalCount>) {
        let mut map = self.lock();
        for c in counts {
            if let Some(reason) = static_reason(&c.reason) {
                *map.entry((c.minute_ms, reason)).or_default() += c.count;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, &'static str), i64>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a request is for the accept route, by its raw path (before
/// routing): `POST /v1/triggers/<one segment>`.
pub fn is_accept(method: &Method, path: &str) -> bool {
    method == Method::POST
        && path
            .strip_prefix("/v1/triggers/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The slug as the `'static` one of the problem-type table.
fn static_reason(reason: &str) -> Option<&'static str> {
    super::error::PROBLEM_TYPES
        .iter()
        .map(|(_, slug, _)| *slug)
        .find(|s| *s == reason)
}

/// Counts `response` if it is a problem answer of the accept route
/// (`route`: the matched template). Called by the route layer
/// `prometheus::track`, which already wraps every route and knows the
/// matched path: one layer less on every request than a layer of its own
/// (each `from_fn` layer clones the routes below it per request).
pub fn note(app: &AppState, post: bool, route: &str, response: &Response) {
    if post
        && route == ACCEPT_ROUTE
        && let Some(ProblemSlug(reason)) = response.extensions().get::<ProblemSlug>()
    {
        app.refusals.add(app.clock.now_ms(), reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_route_is_told_apart_before_routing() {
        assert!(is_accept(&Method::POST, "/v1/triggers/demo-call"));
        assert!(!is_accept(&Method::GET, "/v1/triggers/demo-call"));
        for path in [
            "/v1/triggers/",
            "/v1/triggers",
            "/v1/triggers/a/b",
            "/v1/jobs/x",
        ] {
            assert!(!is_accept(&Method::POST, path), "{path}");
        }
    }

    #[test]
    fn refusals_are_counted_per_minute_and_reason_and_restored_after_a_failed_flush() {
        let r = Refusals::default();
        r.add(60_000, "unauthorized");
        r.add(119_999, "unauthorized");
        r.add(120_000, "unauthorized");
        r.add(61_000, "rate-limited");
        let mut taken = r.take();
        taken.sort_by(|a, b| (a.minute_ms, &a.reason).cmp(&(b.minute_ms, &b.reason)));
        let got: Vec<_> = taken
            .iter()
            .map(|c| (c.minute_ms, c.reason.as_str(), c.count))
            .collect();
        assert_eq!(
            got,
            [
                (60_000, "rate-limited", 1),
                (60_000, "unauthorized", 2),
                (120_000, "unauthorized", 1)
            ]
        );
        assert!(r.take().is_empty(), "taken once");
        r.restore(taken);
        r.add(60_000, "unauthorized");
        let again = r.take();
        let n = again
            .iter()
            .find(|c| c.minute_ms == 60_000 && c.reason == "unauthorized")
            .unwrap()
            .count;
        assert_eq!(n, 3);
    }
}
