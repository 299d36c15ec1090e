//! Prometheus metrics through the `metrics` facade and
//! `metrics-exporter-prometheus` (its recorder only; `/metrics` is a route
//! of our own router, behind the same auth as the API: scope
//! `metrics:read`).
//!
//! Series (all prefixed `callgate_`):
//! - `http_requests_total{route,method,status}`,
//!   `http_request_duration_seconds{route,method}` (histogram)
//! - `rate_limited_total{policy}`
//! - `jobs{status}`, `calls{status}`, `deliveries{status}` (gauges, read
//!   from the store at scrape time)
//! - `deliveries_total{endpoint,outcome}`,
//!   `delivery_duration_seconds{endpoint}` (histogram)
//! - `breaker_state{endpoint}` (0 closed, 1 open, 2 half-open)
//! - `action_duration_seconds{action,outcome}` (histogram; outcome `ok`,
//!   `cached`, `fallback`, `error`: fallbacks are its `fallback` count)
//!
//! The recorder is process-wide (one per process, installed on first use).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
    pub async fn render(&self, store: &dyn Store) -> String {
        match store.status_counts().await {
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
/// template (never the raw path: ids would explode the label set).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("callgate_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("callgate_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
