//! The delivery log: `GET /v1/deliveries` (filters, newest first, cursor),
//! `GET /v1/deliveries/{id}` (with every attempt) and
//! `POST /v1/deliveries/{id}/retry` (replays a failed or dead delivery with
//! its original `webhook-id`). Scopes `deliveries:read` / `deliveries:write`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery, query_time};
use crate::ids::DeliveryId;
use crate::store::{DeliveryFilter, DeliveryStatus, Replay};
use crate::webhooks::delivery::{attempt_json, delivery_json};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

fn require(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.scopes.has(&scope) {
        return Ok(());
    }
    let detail = format!("this needs the `{scope}` scope");
    Err(ApiError::missing_scope(vec![scope], detail))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    endpoint: Option<String>,
    job_id: Option<String>,
    call_id: Option<String>,
    /// RFC 3339: deliveries created at or after.
    since: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<usize>,
}

pub async fn list_deliveries(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&principal, Scope::DeliveriesRead)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`status` must be one of pending, sending, succeeded, failed, dead (got `{s}`)"
            ))
        })?),
    };
    let since_ms = query_time("since", q.since.as_deref())?;
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            DeliveryId::parse(c)
                .ok_or_else(|| ApiError::bad_request("`cursor` is not a cursor from this API"))?,
        ),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let rows = app
        .store
        .deliveries(DeliveryFilter {
            status,
            endpoint: q.endpoint,
            job_id: q.job_id,
            call_id: q.call_id,
            since_ms,
            before,
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() > limit;
    let page: Vec<Value> = rows.iter().take(limit).map(delivery_json).collect();
    let next = more.then(|| rows[limit - 1].id.clone());
    Ok(Json(json!({"deliveries": page, "next_cursor": next})))
}

pub async fn get_delivery(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    require(&principal, Scope::DeliveriesRead)?;
    let not_found = || ApiError::NotFound(format!("no delivery `{id}`"));
    let id = DeliveryId::parse(&id).ok_or_else(not_found)?;
    let d = app.store.delivery(&id).await?.ok_or_else(not_found)?;
    let attempts = app.store.delivery_attempts(&id).await?;
    let mut out = delivery_json(&d);
    out["request"] = json!({"headers": redacted(&d.headers), "body": d.body});
    out["attempts"] = attempts.iter().map(attempt_json).collect();
    Ok(Json(out))
}

pub async fn retry_delivery(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&principal, Scope::DeliveriesWrite)?;
    let Some(id) = DeliveryId::parse(&id) else {
        return Err(ApiError::NotFound(format!("no delivery `{id}`")));
    };
    if let Some(d) = app.store.delivery(&id).await?
        && app.outbound.client(&d.endpoint).is_none()
    {
        return Err(ApiError::Conflict(format!(
            "delivery `{id}` goes to endpoint `{}`, which is not configured; add it to endpoints.toml first",
            d.endpoint
        )));
    }
    match app.store.replay_delivery(&id, app.clock.now_ms()).await? {
        Replay::NotFound => Err(ApiError::NotFound(format!("no delivery `{id}`"))),
        Replay::NotReplayable(status) => Err(ApiError::Conflict(format!(
            "delivery `{id}` is {}; only failed and dead deliveries are replayed",
            status.as_str()
        ))),
        Replay::Queued(d) => {
            tracing::info!(delivery = %d.id, principal = %principal.id, "delivery replayed");
            app.outbound.wake.notify_one();
            Ok((StatusCode::ACCEPTED, Json(delivery_json(&d))))
        }
    }
}

/// Stored headers with secret-looking values hidden.
fn redacted(headers: &Value) -> Value {
    match headers.as_object() {
        Some(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if crate::webhooks::client::is_secret_header(k) {
                        Value::String("[redacted]".into())
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        None => Value::Object(Default::default()),
    }
}

pub async fn metrics(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    require(&principal, Scope::MetricsRead)?;
    let text = app.metrics.render(&*app.store).await;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
