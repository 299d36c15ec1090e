//! The delivery engine's side of an endpoint's circuit breaker shared
//! through the store (`Store::breaker_*`, rules in `store/shared.rs`): the
//! state gauge, giving a probe back, and recording an attempt's result.
//! Every instance sharing the database sees one breaker per endpoint.

use std::time::Instant;

use super::alerts::{Alert, AlertKind, AlertSink};
use super::client::{EndpointClient, Exchange};
use crate::store::{BreakerAdmission, BreakerPolicy, Store};

/// `callgate_breaker_state{endpoint}`: 0 closed, 1 open, 2 half-open.
pub(super) fn gauge(endpoint: &str, admission: BreakerAdmission) {
    let value = match admission {
        BreakerAdmission::Closed => 0.0,
        BreakerAdmission::Open { .. } => 1.0,
        BreakerAdmission::Probe => 2.0,
    };
    metrics::gauge!("callgate_breaker_state", "endpoint" => endpoint.to_owned()).set(value);
}

/// Gives the probe back untried (its lease would also expire).
pub(super) async fn cancel_probe(store: &dyn Store, endpoint: &str) {
    if let Err(e) = store.breaker_cancel_probe(endpoint).await {
        tracing::warn!(error = %e, endpoint, "giving back the breaker's probe failed; its lease expires");
    }
}

/// An attempt's result on the endpoint's shared breaker (and on the
/// in-process one mid-call actions consult); a failure that leaves it open
/// raises `breaker_opened` (deduplicated by the alert task, so a breaker
/// that reopens after a failed probe is not announced again within the
/// window).
pub(super) async fn record(
    store: &dyn Store,
    now_ms: i64,
    client: &EndpointClient,
    out: &Exchange,
    probe: bool,
    alerts: &AlertSink,
) {
    let endpoint = &client.endpoint;
    // The endpoint's fault: no answer, 408, 429, 5xx. A refusal by our own
    // guard says nothing about the endpoint; a probe it used is offered
    // again.
    if out.refused {
        client.breaker_cancel_probe();
        if probe {
            cancel_probe(store, &endpoint.name).await;
        }
        return;
    }
    let ok = !out.is_retryable();
    client.breaker_record(ok, Instant::now());
    let b = &endpoint.breaker;
    let policy = BreakerPolicy {
        failures: b.failures,
        cooldown_ms: b.cooldown.as_millis() as i64,
        max_cooldown_ms: b.max_cooldown.as_millis() as i64,
    };
    match store
        .breaker_record(&endpoint.name, ok, policy, now_ms)
        .await
    {
        Ok(row) => {
            metrics::gauge!("callgate_breaker_state", "endpoint" => endpoint.name.clone())
                .set(row.gauge(now_ms));
            if let (false, Some(until)) = (ok, row.open_until_ms.filter(|u| *u > now_ms)) {
                alerts.raise(|| Alert {
                    kind: AlertKind::BreakerOpened,
                    subject: endpoint.name.clone(),
                    summary: format!(
                        "endpoint `{}`: circuit breaker opened after {} failed attempts in a row; deliveries wait until {}",
                        endpoint.name,
                        row.failures,
                        crate::clock::rfc3339(until)
                    ),
                    details: serde_json::json!({
                        "endpoint": endpoint.name,
                        "failures": row.failures,
                        "open_until": crate::clock::rfc3339(until),
                        "last_status": out.status,
                        "last_error": out.error,
                    }),
                });
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, endpoint = %endpoint.name, "recording on the endpoint's breaker failed")
        }
    }
}
