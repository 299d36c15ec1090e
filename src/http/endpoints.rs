//! Endpoint health: `GET /v1/endpoints` and `GET /v1/endpoints/{name}`
//! (`deliveries:read`). Per configured outbound endpoint: its shared
//! breaker's state, success rate and latency p50/p95 of its delivery
//! attempts over the last hour and day, its last failed attempt, how many
//! deliveries are pending and dead (all read from the store), and this
//! instance's last health-check result (`health_check`, in memory).
//!
//! Policy: only configured endpoints are shown (a name that is not one is
//! a 404, whatever the delivery log holds); the endpoint's URL is not (it
//! may carry a credential in its query): its host is.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};

use crate::auth::{Principal, Scope};
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::store::{AttemptWindow, BreakerRow, EndpointHealth};

fn require_read(principal: &Principal) -> Result<(), ApiError> {
    if principal.scopes.has(&Scope::DeliveriesRead) {
        return Ok(());
    }
    Err(ApiError::missing_scope(
        vec![Scope::DeliveriesRead],
        "endpoint health needs the `deliveries:read` scope",
    ))
}

pub async fn list_endpoints(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Json<Value>, ApiError> {
    require_read(&principal)?;
    let names: Vec<String> = app.config.endpoints.keys().cloned().collect();
    Ok(Json(
        json!({"endpoints": endpoints_json(&app, names).await?}),
    ))
}

pub async fn get_endpoint(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    require_read(&principal)?;
    if !app.config.endpoints.contains_key(&name) {
        return Err(ApiError::NotFound(format!("no endpoint `{name}`")));
    }
    let mut one = endpoints_json(&app, vec![name]).await?;
    Ok(Json(one.pop().unwrap_or(Value::Null)))
}

/// The health of the configured endpoints `names`, as the API shows it
/// (the console shows the same).
pub async fn endpoints_json(app: &AppState, names: Vec<String>) -> Result<Vec<Value>, ApiError> {
    let now = app.clock.now_ms();
    let rows = app.store.endpoint_health(names, now).await?;
    Ok(rows
        .into_iter()
        .map(|h| endpoint_json(app, h, now))
        .collect())
}

fn endpoint_json(app: &AppState, h: EndpointHealth, now: i64) -> Value {
    let endpoint = app.config.endpoints.get(&h.endpoint);
    let check = endpoint.and_then(|e| e.health_check.as_ref()).map(|c| {
        let last = app.outbound.health.last(&h.endpoint).map(|r| {
            json!({
                "ok": r.ok,
                "status": r.status,
                "latency_ms": r.latency_ms,
                "error": r.error,
                "checked_at": rfc3339(r.checked_at_ms),
            })
        });
        json!({"path": c.path, "interval_seconds": c.interval.as_secs(), "last": last})
    });
    json!({
        "name": h.endpoint,
        "host": endpoint.and_then(|e| e.url.host_str()),
        "breaker": breaker_json(&h.breaker, now),
        "last_hour": window_json(&h.last_hour),
        "last_day": window_json(&h.last_day),
        "last_error": h.last_error.map(|e| json!({
            "at": rfc3339(e.at_ms),
            "status": e.status,
            "error": e.error,
            "delivery_id": e.delivery_id,
        })),
        "pending": h.pending,
        "dead": h.dead,
        "health_check": check,
        "links": {
            "self": format!("/v1/endpoints/{}", h.endpoint),
            "deliveries": format!("/v1/deliveries?endpoint={}", h.endpoint),
        },
    })
}

/// The shared breaker at `now`: open until its cool-down ends, then
/// half-open (one probe at a time) until an attempt closes or reopens it.
fn breaker_json(b: &BreakerRow, now: i64) -> Value {
    let state = match b.open_until_ms {
        None => "closed",
        Some(until) if until > now => "open",
        Some(_) => "half_open",
    };
    json!({
        "state": state,
        "opened_at": b.open_until_ms.map(|u| rfc3339(u - b.cooldown_ms)),
        "open_until": b.open_until_ms.map(rfc3339),
        "consecutive_failures": b.failures,
    })
}

fn window_json(w: &AttemptWindow) -> Value {
    let rate = (w.attempts > 0).then(|| w.succeeded as f64 / w.attempts as f64);
    json!({
        "attempts": w.attempts,
        "succeeded": w.succeeded,
        "success_rate": rate,
        "latency_ms": {"p50": w.p50_ms, "p95": w.p95_ms},
    })
}
