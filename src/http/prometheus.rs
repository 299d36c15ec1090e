//! Prometheus metrics through the `metrics` facade and
//! `metrics-exporter-prometheus` (its recorder only; `/metrics` is a route
//! of our own router, behind the same auth as the API: scope
//! `metrics:read`).
//!
//! Series (all prefixed `callgate_`):
//! - `http_requests_total{route,method,status}`,
//!   `http_request_duration_seconds{route,method}` (histogram)
//! - `rate_limited_total{policy}`
//! - `rate_limit_fallback_total{policy}` (decisions made by the local share
//!   while Redis was unreachable), `redis_up` (1 or 0; Redis backend only)
//! - `jobs{status}`, `calls{status}`, `deliveries{status}` (gauges, read
//!   from the store at scrape time by the housekeeping leader; 0 elsewhere)
//! - `deliveries_total{endpoint,outcome}`,
//!   `delivery_duration_seconds{endpoint}` (histogram)
//! - `leader` (1 on the instance running the housekeeping and reporting
//!   the status gauges, 0 on the others)
//! - `breaker_state{endpoint}` (0 closed, 1 open, 2 half-open)
//! - `action_duration_seconds{action,outcome}` (histogram; outcome `ok`,
//!   `cached`, `fallback`, `error`: fallbacks are its `fallback` count)
//! - `jwks_fetch_total{issuer,outcome}` (`ok`, `error`, `refused`),
//!   `jwks_keys{issuer}`, `jwks_last_success_timestamp_seconds{issuer}`
//!   (JWKS issuers; set by `webhooks::jwks`)
//!
//! The recorder is process-wide (one per process, installed on first use).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;
use crate::store::Store;

/// Request and upstream latency buckets, in seconds: fine below 10 ms (the
/// accept path and mid-call budgets live there), coarse up to 30 s.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0,
];

/// A handle that renders the exposition text.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// Status gauges set at the last scrape (reset to 0 when a status has
    /// no rows any more).
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

impl Metrics {
    /// The process's recorder (installed on the first call).
    pub fn install() -> Self {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            #[allow(clippy::expect_used)] // the buckets are a non-empty constant
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .expect("static, non-empty buckets");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness's) may be installed already:
            // ours still renders what goes through it, which is nothing; say so.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        });
        Self {
            handle: handle.clone(),
            seen: Default::default(),
        }
    }

    /// Refreshes the store gauges and renders everything.
    ///
    /// The status counts are the housekeeping leader's alone: they are
    /// whole-table counts of the shared database (not of this instance),
    /// so every instance counting at every scrape would multiply that
    /// load by the number of instances for one answer. A non-leader
    /// reports them as 0 (its earlier series included), so `sum` or `max`
    /// over the instances both give the database's counts, and
    /// `callgate_leader` says which instance reports them.
    pub async fn render(&self, store: &dyn Store) -> String {
        let leader = store.is_leader();
        metrics::gauge!("callgate_leader").set(if leader { 1.0 } else { 0.0 });
        let counts = if leader {
            store.status_counts().await
        } else {
            Ok(Vec::new())
        };
        match counts {
            Ok(rows) => {
                let gauge_name = |table: &str| match table {
                    "jobs" => "callgate_jobs",
                    "calls" => "callgate_calls",
                    _ => "callgate_deliveries",
                };
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                let now: std::collections::HashSet<(String, String)> = rows
                    .iter()
                    .map(|(t, s, _)| (t.clone(), s.clone()))
                    .collect();
                for (table, status) in seen.difference(&now) {
                    metrics::gauge!(gauge_name(table), "status" => status.clone()).set(0.0);
                }
                for (table, status, n) in rows {
                    metrics::gauge!(gauge_name(&table), "status" => status).set(n as f64);
                }
                seen.extend(now);
            }
            Err(e) => tracing::warn!(error = %e, "metrics: counting rows by status failed"),
        }
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// Route layer: counts and times every routed request by its route
/// template (never the raw path: ids would explode the label set). The
/// labels are static strings (the route table's templates, the usual
/// methods and statuses), so the accept path does not allocate for them.
pub async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| static_route(p.as_str()))
        .unwrap_or("unmatched");
    let method = static_method(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    // The accept route's refusals, counted for the stats here rather than
    // in a layer of their own (see `refusals::note`).
    super::refusals::note(&app, method == "POST", route, &response);
    let status = response.status().as_u16();
    metrics::histogram!("callgate_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    let status = match STATUSES.iter().find(|(code, _)| *code == status) {
        Some((_, text)) => metrics::SharedString::const_str(text),
        None => metrics::SharedString::from(status.to_string()),
    };
    metrics::counter!("callgate_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// The route table's own `&'static str` for a matched template.
fn static_route(matched: &str) -> Option<&'static str> {
    static ROUTES: OnceLock<Vec<&'static str>> = OnceLock::new();
    ROUTES
        .get_or_init(|| super::endpoints().iter().map(|e| e.path).collect())
        .iter()
        .copied()
        .find(|p| *p == matched)
}

fn static_method(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Statuses the gateway answers, as label text.
const STATUSES: [(u16, &str); 20] = [
    (200, "200"),
    (201, "201"),
    (202, "202"),
    (204, "204"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (409, "409"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
    (304, "304"),
];
