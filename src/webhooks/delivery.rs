//! The delivery engine: claims due deliveries per endpoint (within the
//! endpoint's concurrency cap and its circuit breaker, both kept in the
//! store so that they hold across every instance sharing it), sends each attempt signed with
//! the delivery's fixed `webhook-id`, logs it, and schedules the next one.
//!
//! Retries are rows in the store (`pending` with `next_attempt_at`), never
//! timers in memory: a restart picks them up where they were. A process
//! that dies (or stalls) mid-attempt leaves a `sending` lease that expires
//! and is claimed again (at-least-once; receivers deduplicate on
//! `webhook-id`); the attempt's log is fenced on its claim's id, so a
//! stalled attempt never overwrites the outcome of the claim after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::{EndpointClient, Exchange, Outgoing};
use super::outbound::Outbound;
use super::shared_breaker;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::outbound::Endpoint;
use crate::store::{
    BreakerAdmission, ClaimedDelivery, DeliveryAttempt, DeliveryRecord, DeliveryStatus, Store,
};

/// How often idle workers look for due deliveries (new ones wake them).
const POLL: Duration = Duration::from_millis(500);
/// The shortest wait a `Retry-After` can ask for.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long in-flight attempts may finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Deliverer {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Catalog>,
    store: Arc<dyn Store>,
    outbound: Arc<Outbound>,
    clock: Arc<dyn Clock>,
    owner: String,
    /// Deliveries in flight in this process, across endpoints.
    slots: Arc<Semaphore>,
    /// Which endpoint dispatch starts with (round robin).
    turn: std::sync::atomic::AtomicUsize,
}

impl Deliverer {
    pub fn new(
        config: Arc<Catalog>,
        store: Arc<dyn Store>,
        outbound: Arc<Outbound>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.main.deliveries.workers.max(1)));
        Self {
            inner: Arc::new(Inner {
                config,
                store,
                outbound,
                clock,
                owner: format!("deliverer-{}", ulid::Ulid::generate()),
                slots,
                turn: Default::default(),
            }),
        }
    }

    /// Runs until `token` is cancelled, then lets in-flight attempts finish
    /// (up to a grace period).
    pub async fn run(self, token: CancellationToken) {
        let mut inflight = JoinSet::new();
        let mut last_purge = Instant::now() - Duration::from_secs(3600);
        loop {
            while inflight.try_join_next().is_some() {}
            self.dispatch(&mut inflight).await;
            if last_purge.elapsed() >= Duration::from_secs(600) {
                last_purge = Instant::now();
                // Retention is housekeeping: the leader's alone.
                if self.inner.store.is_leader() {
                    self.purge().await;
                }
                self.fail_unconfigured().await;
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = self.inner.outbound.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            }
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, async {
            while inflight.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                "deliveries still in flight at shutdown; their leases expire and they are sent again"
            );
            inflight.abort_all();
        }
    }

    /// Claims and starts what every endpoint may send now. Returns how many
    /// attempts started.
    pub async fn dispatch(&self, inflight: &mut JoinSet<()>) -> usize {
        let mut started = 0;
        // A different endpoint goes first each time, so that the global
        // slots are not always offered in the same (alphabetical) order.
        let clients: Vec<&Arc<EndpointClient>> = self.inner.outbound.clients.values().collect();
        let n = clients.len().max(1);
        let first = self
            .inner
            .turn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % n;
        for client in clients.iter().cycle().skip(first).take(clients.len()) {
            let free = client
                .permits
                .available_permits()
                .min(self.inner.slots.available_permits());
            if free == 0 {
                continue;
            }
            let now = self.inner.clock.now_ms();
            let lease = client.endpoint.timeout + self.inner.config.main.deliveries.lease_grace;
            let lease_until = now + lease.as_millis() as i64;
            // The breaker and the cap are shared by every instance on the
            // store; when the store cannot say, nothing is sent (the
            // claim needs it anyway).
            let name = &client.endpoint.name;
            let admission = match self.inner.store.breaker_admit(name, now, lease_until).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, endpoint = %name, "reading the endpoint's breaker failed");
                    continue;
                }
            };
            shared_breaker::gauge(name, admission);
            let probe = admission == BreakerAdmission::Probe;
            let want = match admission {
                BreakerAdmission::Closed => free,
                BreakerAdmission::Probe => 1,
                BreakerAdmission::Open { .. } => continue,
            };
            let claimed = match self
                .inner
                .store
                .claim_deliveries_capped(
                    name,
                    &self.inner.owner,
                    now,
                    lease_until,
                    want,
                    client.endpoint.concurrency,
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, endpoint = %name, "claiming deliveries failed");
                    if probe {
                        shared_breaker::cancel_probe(&*self.inner.store, name).await;
                    }
                    continue;
                }
            };
            if claimed.is_empty() && probe {
                shared_breaker::cancel_probe(&*self.inner.store, name).await;
            }
            for ClaimedDelivery { claim_id, delivery } in claimed {
                let (Ok(slot), Ok(permit)) = (
                    self.inner.slots.clone().try_acquire_owned(),
                    client.permits.clone().try_acquire_owned(),
                ) else {
                    // Cannot happen (claims stay under the free permits);
                    // hand it back rather than over-commit.
                    let _ = self
                        .inner
                        .store
                        .release_deliveries(vec![delivery.id], &claim_id, now)
                        .await;
                    continue;
                };
                let this = self.clone();
                let client = Arc::clone(client);
                started += 1;
                inflight.spawn(async move {
                    this.attempt(&client, delivery, &claim_id, probe).await;
                    drop((slot, permit));
                });
            }
        }
        started
    }

    /// Sends every due delivery now and waits for the attempts (tests and
    /// `run_pending`-style driving).
    pub async fn run_due(&self) -> usize {
        let mut set = JoinSet::new();
        let n = self.dispatch(&mut set).await;
        while set.join_next().await.is_some() {}
        n
    }

    /// Sends `d` once and logs the outcome, fenced on `claim_id`.
    async fn attempt(
        &self,
        client: &EndpointClient,
        d: DeliveryRecord,
        claim_id: &str,
        probe: bool,
    ) {
        let endpoint = &client.endpoint;
        let attempt = d.attempts + 1;
        let used = attempt - d.budget_start;
        let headers = stored_headers(&d.headers);
        let started_ms = self.inner.clock.now_ms();
        let out = client
            .exchange(
                Outgoing {
                    method: &endpoint.method,
                    url: &endpoint.url,
                    headers: &headers,
                    body: Some(&d.body),
                    msg_id: Some(d.msg_id.as_str()),
                    now_ms: started_ms,
                },
                endpoint.timeout,
                super::client::LOG_EXCERPT,
            )
            .await;
        let now_ms = self.inner.clock.now_ms();
        let (status, next) = next_step(&out, endpoint, used, now_ms);
        // The answer is recorded before anything else: a process killed
        // between the receiver's answer and this commit sends the delivery
        // again after its lease (at-least-once; the `webhook-id` is stable),
        // so this window is kept as short as it can be.
        let log = DeliveryAttempt {
            attempt,
            started_at_ms: started_ms,
            request_headers: out.request_headers.clone(),
            request_body: d.body.clone(),
            response_status: out.status.map(i64::from),
            response_body: out.excerpt(),
            latency_ms: out.latency.as_millis() as i64,
            error: out.error.clone(),
            next_attempt_at_ms: next,
        };
        match self
            .inner
            .store
            .finish_delivery_attempt(&d.id, claim_id, log, status, now_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %d.id, "lease lost before the attempt was logged")
            }
            Err(e) => {
                tracing::error!(delivery = %d.id, error = %e, "logging a delivery attempt failed; the lease expires and it is sent again")
            }
        }
        let alerts = &self.inner.outbound.alerts;
        shared_breaker::record(&*self.inner.store, now_ms, client, &out, probe, alerts).await;
        observe(client, &d, &out, status, used);
        if status == DeliveryStatus::Dead {
            // By endpoint: a burst of dead deliveries is one alert per window.
            alerts.raise(|| super::Alert {
                kind: super::AlertKind::DeliveryDead,
                subject: endpoint.name.clone(),
                summary: format!(
                    "endpoint `{}`: delivery {} ({}) is dead after {used} attempts: {}",
                    endpoint.name,
                    d.id,
                    d.event,
                    out.error
                        .clone()
                        .or(out.status.map(|s| format!("HTTP {s}")))
                        .unwrap_or_default()
                ),
                details: serde_json::json!({
                    "endpoint": endpoint.name,
                    "delivery_id": d.id,
                    "event": d.event,
                    "job_id": d.job_id,
                    "attempts": used,
                    "last_status": out.status,
                    "last_error": out.error,
                }),
            });
        }
        if status == DeliveryStatus::Pending {
            // Due soon: make sure the loop looks again in time.
            self.inner.outbound.wake.notify_one();
        }
    }

    /// Deletes finished deliveries older than `deliveries.retention`
    /// (the run loop does this every 10 minutes). Returns how many.
    pub async fn purge_expired(&self) -> u64 {
        self.purge().await
    }

    async fn fail_unconfigured(&self) {
        let configured: Vec<String> = self.inner.outbound.clients.keys().cloned().collect();
        match self
            .inner
            .store
            .fail_unconfigured_deliveries(configured, self.inner.clock.now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                failed = n,
                "pending deliveries to endpoints that are no longer configured were failed (replay them once the endpoint is back)"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "checking deliveries for unconfigured endpoints failed")
            }
        }
    }

    async fn purge(&self) -> u64 {
        let keep = self.inner.config.main.deliveries.retention;
        let before = self.inner.clock.now_ms() - keep.as_millis() as i64;
        // The refused-trigger counts (`GET /v1/stats`) are kept as long as
        // the delivery log the same charts read.
        match self.inner.store.purge_refusals(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "purged refused-trigger counts past retention"),
            Err(e) => tracing::warn!(error = %e, "purging refused-trigger counts failed"),
        }
        match self.inner.store.purge_deliveries(before).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(deleted = n, "purged deliveries past retention");
                }
                n
            }
            Err(e) => {
                tracing::warn!(error = %e, "purging deliveries failed");
                0
            }
        }
    }
}

impl EndpointClient {
    pub(crate) fn breaker_allow(&self) -> super::breaker::Allowance {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let a = b.allow(Instant::now());
        metrics::gauge!("callgate_breaker_state", "endpoint" => self.endpoint.name.clone())
            .set(b.gauge());
        a
    }

    pub(crate) fn breaker_cancel_probe(&self) {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel_probe(Instant::now());
    }

    pub(crate) fn breaker_record(&self, ok: bool, now: Instant) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        b.record(ok, now);
        metrics::gauge!("callgate_breaker_state", "endpoint" => self.endpoint.name.clone())
            .set(b.gauge());
    }
}

/// A wait drawn uniformly from `[0, cap]`.
pub fn full_jitter(cap: Duration) -> Duration {
    let mut b = [0u8; 8];
    crate::crypto::random_bytes(&mut b);
    cap.mul_f64(u64::from_le_bytes(b) as f64 / u64::MAX as f64)
}

/// A delivery as the API shows it (headers redacted).
pub fn delivery_json(d: &DeliveryRecord) -> Value {
    serde_json::json!({
        "id": d.id,
        "webhook_id": d.msg_id,
        "endpoint": d.endpoint,
        "event": d.event,
        "job_id": d.job_id,
        "call_id": d.call_id,
        "status": d.status,
        "attempt_count": d.attempts,
        "next_attempt_at": d.next_attempt_at_ms.filter(|_| d.status == DeliveryStatus::Pending).map(crate::clock::rfc3339),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": crate::clock::rfc3339(d.created_at_ms),
        "updated_at": crate::clock::rfc3339(d.updated_at_ms),
    })
}

/// One logged attempt as the API shows it.
pub fn attempt_json(a: &DeliveryAttempt) -> Value {
    serde_json::json!({
        "attempt": a.attempt,
        "started_at": crate::clock::rfc3339(a.started_at_ms),
        "request": {"headers": a.request_headers, "body": a.request_body},
        "response": a.response_status.map(|s| serde_json::json!({"status": s, "body_excerpt": a.response_body})),
        "latency_ms": a.latency_ms,
        "error": a.error,
        "next_attempt_at": a.next_attempt_at_ms.map(crate::clock::rfc3339),
    })
}

/// The delivery's stored headers (rendered when it was created) as text.
fn stored_headers(headers: &Value) -> Vec<(String, String)> {
    headers
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = v.as_str().map(str::to_owned);
                    (k.clone(), text.unwrap_or_else(|| v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What an exchange makes of the delivery: succeeded, failed (not worth
/// another try), dead (the retry budget of `used` attempts is spent), or
/// pending again at the time returned (the receiver's `Retry-After`, at
/// least `MIN_RETRY_AFTER`, else full jitter under the schedule's wait).
fn next_step(
    out: &Exchange,
    endpoint: &Endpoint,
    used: i64,
    now_ms: i64,
) -> (DeliveryStatus, Option<i64>) {
    if out.is_success() {
        return (DeliveryStatus::Succeeded, None);
    }
    if !out.is_retryable() {
        return (DeliveryStatus::Failed, None);
    }
    if used >= i64::from(endpoint.retry.max_attempts()) {
        return (DeliveryStatus::Dead, None);
    }
    let cap = endpoint.retry.schedule[(used - 1).max(0) as usize];
    // A receiver's `Retry-After: 0` must not burn the whole budget in a
    // second.
    let wait = out
        .retry_after
        .map(|d| d.max(MIN_RETRY_AFTER))
        .unwrap_or_else(|| full_jitter(cap));
    (
        DeliveryStatus::Pending,
        Some(now_ms + wait.as_millis() as i64),
    )
}

/// Metrics and log after an attempt was recorded.
fn observe(
    client: &EndpointClient,
    d: &DeliveryRecord,
    out: &Exchange,
    status: DeliveryStatus,
    used: i64,
) {
    let endpoint = &client.endpoint;
    let outcome = status.as_str();
    metrics::counter!("callgate_deliveries_total", "endpoint" => endpoint.name.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("callgate_delivery_duration_seconds", "endpoint" => endpoint.name.clone())
        .record(out.latency.as_secs_f64());
    match status {
        DeliveryStatus::Dead => {
            tracing::warn!(delivery = %d.id, endpoint = %endpoint.name, attempts = used, error = out.error.as_deref(), status = out.status, "delivery is dead: every attempt failed")
        }
        DeliveryStatus::Failed => {
            tracing::warn!(delivery = %d.id, endpoint = %endpoint.name, error = out.error.as_deref(), status = out.status, "delivery failed (not retried)")
        }
        _ => {
            tracing::debug!(delivery = %d.id, endpoint = %endpoint.name, status = outcome, "delivery attempt")
        }
    }
}
