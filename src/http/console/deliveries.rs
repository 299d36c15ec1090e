//! Deliveries: the filterable log (`GET /v1/deliveries`'s core;
//! `deliveries:read`), a delivery's page with every attempt (redacted
//! headers, body, response excerpt, latency, error) and the replay button
//! (`POST /v1/deliveries/{id}/retry`'s core; `deliveries:write`).

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::csrf::checked_form;
use super::jobs::{next_link, pretty};
use super::render::{api_json, api_query, page};
use super::session::Session;
use crate::auth::Scope;
use crate::http::AppState;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::store::DeliveryStatus;

pub async fn list(
    State(app): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, Response> {
    let (q, filter) = api_query(&session, raw.as_deref())?;
    let answer = crate::http::deliveries::list_deliveries(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiQuery(q),
    )
    .await;
    let data = api_json(&session, answer).await?;
    let next = next_link("/console/deliveries", &filter, &data["next_cursor"]);
    let statuses: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
    let endpoints: Vec<&str> = app.config.endpoints.keys().map(|e| e.as_str()).collect();
    Ok(page(
        Some(&session),
        "deliveries.html",
        json!({"title": "Deliveries", "deliveries": data["deliveries"], "filter": filter,
               "next": next, "statuses": statuses, "endpoints": endpoints}),
    ))
}

pub async fn detail(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let answer = crate::http::deliveries::get_delivery(
        State(app),
        Extension(session.principal.clone()),
        ApiPath(id.clone()),
    )
    .await;
    let mut d = api_json(&session, answer).await?;
    // Bodies as indented text when they are JSON.
    if let Some(attempts) = d["attempts"].as_array_mut() {
        for a in attempts {
            let body = a["request"]["body"].clone();
            a["request_body"] = json!(readable(&body));
            a["request_headers"] = a["request"]["headers"].take();
        }
    }
    let replayable = matches!(d["status"].as_str(), Some("failed" | "dead"));
    Ok(page(
        Some(&session),
        "delivery.html",
        json!({"title": format!("Delivery {id}"), "d": d,
               "may_replay": replayable && session.may(&Scope::DeliveriesWrite)}),
    ))
}

pub async fn replay(
    State(app): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, Response> {
    checked_form(&app, &session, body).await?;
    let answer = crate::http::deliveries::retry_delivery(
        State(app),
        Extension(session.principal.clone()),
        ApiPath(id.clone()),
    )
    .await;
    api_json(&session, answer).await?;
    Ok(super::see_other(&format!("/console/deliveries/{id}")))
}

/// A stored body as text: indented when it is JSON.
fn readable(body: &Value) -> String {
    match body {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map(|v| pretty(&v))
            .unwrap_or_else(|_| s.clone()),
        other => pretty(other),
    }
}
