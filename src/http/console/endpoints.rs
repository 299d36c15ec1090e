//! Endpoints: every configured outbound endpoint's health (`GET
//! /v1/endpoints`' core) and one endpoint's page (`GET
//! /v1/endpoints/{name}`'s), with links to its pending and dead
//! deliveries. `deliveries:read`, as over the API.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;

use super::render::{api_json, page};
use super::session::Session;
use crate::http::AppState;
use crate::http::extract::ApiPath;

pub async fn list(State(app): State<AppState>, session: Session) -> Result<Response, Response> {
    let answer =
        crate::http::endpoints::list_endpoints(State(app), Extension(session.principal.clone()))
            .await;
    let data = api_json(&session, answer).await?;
    Ok(page(
        Some(&session),
        "endpoints.html",
        json!({"title": "Endpoints", "endpoints": data["endpoints"]}),
    ))
}

pub async fn detail(
    State(app): State<AppState>,
    session: Session,
    Path(name): Path<String>,
) -> Result<Response, Response> {
    let answer = crate::http::endpoints::get_endpoint(
        State(app),
        Extension(session.principal.clone()),
        ApiPath(name.clone()),
    )
    .await;
    let endpoint = api_json(&session, answer).await?;
    Ok(page(
        Some(&session),
        "endpoint.html",
        json!({"title": format!("Endpoint {name}"), "e": endpoint}),
    ))
}
