//! Endpoint health checks (`health_check = { path, interval }`): one task
//! per endpoint `GET`s the endpoint's origin + `path` every `interval`
//! through the endpoint's own client (the same SSRF guard, CAs, credential
//! and timeout as its deliveries), and keeps the last result in memory.
//!
//! Policy: results are this instance's view (not stored): a check is a
//! probe of reachability from here. A 2xx answer is `ok`; anything else
//! (another status, no answer within the endpoint's `timeout`, a target
//! the SSRF guard refuses) is not, with the status or the error. The
//! check feeds neither breaker: a delivery's own attempts decide those.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::client::{EndpointClient, Outgoing};
use crate::clock::Clock;

/// Most response bytes a check reads (the answer is not kept).
const BODY_LIMIT: usize = 4096;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthResult {
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// Unix ms, the application clock.
    pub checked_at_ms: i64,
}

/// The last result of each checked endpoint.
#[derive(Debug, Default)]
pub struct HealthBoard {
    last: Mutex<BTreeMap<String, HealthResult>>,
}

impl HealthBoard {
    /// The last result for `endpoint`, if it was checked yet.
    pub fn last(&self, endpoint: &str) -> Option<HealthResult> {
        self.lock().get(endpoint).cloned()
    }

    fn record(&self, endpoint: &str, result: HealthResult) {
        self.lock().insert(endpoint.to_owned(), result);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HealthResult>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks `client`'s endpoint every interval until `token` is cancelled
/// (first check at once); nothing when it has no `health_check`.
pub async fn run(
    client: Arc<EndpointClient>,
    board: Arc<HealthBoard>,
    clock: Arc<dyn Clock>,
    token: CancellationToken,
) {
    let Some(check) = client.endpoint.health_check.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.now_ms();
        let out = tokio::select! {
            _ = token.cancelled() => return,
            out = client.exchange(
                Outgoing {
                    method: &reqwest::Method::GET,
                    url: &check.url,
                    headers: &[],
                    body: None,
                    msg_id: None,
                    now_ms: now,
                },
                client.endpoint.timeout,
                BODY_LIMIT,
            ) => out,
        };
        let result = HealthResult {
            ok: out.is_success(),
            status: out.status,
            latency_ms: out.latency.as_millis() as i64,
            error: out.error,
            checked_at_ms: now,
        };
        if !result.ok {
            tracing::info!(endpoint = %client.endpoint.name, status = ?result.status, error = ?result.error, "endpoint health check failed");
        }
        board.record(&client.endpoint.name, result);
    }
}
