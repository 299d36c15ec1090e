//! Calls: the filterable list (`GET /v1/calls`'s core; `jobs:read`) and a
//! call's page (status history, outcome, transcript and summary when the
//! provider sent them).

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::json;

use super::jobs::{next_link, pretty};
use super::render::{api_json, api_query, page};
use super::session::Session;
use crate::http::AppState;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::store::CallStatus;

pub async fn list(
    State(app): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, Response> {
    let (q, filter) = api_query(&session, raw.as_deref())?;
    let answer = crate::http::call_list::list_calls(
        State(app),
        Extension(session.principal.clone()),
        ApiQuery(q),
    )
    .await;
    let data = api_json(&session, answer).await?;
    let next = next_link("/console/calls", &filter, &data["next_cursor"]);
    let statuses: Vec<&str> = CallStatus::ALL.iter().map(|s| s.as_str()).collect();
    Ok(page(
        Some(&session),
        "calls.html",
        json!({"title": "Calls", "calls": data["calls"], "filter": filter, "next": next,
               "statuses": statuses}),
    ))
}

pub async fn detail(
    State(app): State<AppState>,
    session: Session,
    Path(call_id): Path<String>,
) -> Result<Response, Response> {
    let answer = crate::http::calls::get_call(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiPath(call_id.clone()),
    )
    .await;
    let call = api_json(&session, answer).await?;
    // The status history from the call's own times (each move the
    // provider reported that the record keeps).
    let history: Vec<_> = [
        ("created", &call["created_at"]),
        ("dial requested", &call["dialed_at"]),
        ("answered", &call["answered_at"]),
        ("ended", &call["ended_at"]),
    ]
    .into_iter()
    .filter(|(_, at)| at.is_string())
    .map(|(what, at)| json!({"what": what, "at": at}))
    .collect();
    Ok(page(
        Some(&session),
        "call.html",
        json!({"title": format!("Call {call_id}"), "call": call, "history": history,
               "variables": pretty(&call["variables"])}),
    ))
}
