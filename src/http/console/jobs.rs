//! Jobs: the filterable list (`GET /v1/jobs`'s core), a job's page (its
//! timeline of events, its calls and deliveries) and the cancel button
//! (`POST /v1/jobs/{id}/cancel`'s core; `jobs:write`) and the retry button
//! for failed and needs_attention jobs (`POST /v1/jobs/{id}/retry`'s core;
//! `jobs:write`), with the "no call was placed" confirmation the API asks
//! for when the last call is unknown or dialing (a 409 is an error page
//! with the API's message).

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::csrf::checked_form;
use super::render::{api_json, api_query, page};
use super::session::Session;
use crate::auth::Scope;
use crate::http::AppState;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::store::JobStatus;

pub async fn list(
    State(app): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, Response> {
    let (q, filter) = api_query(&session, raw.as_deref())?;
    let answer = crate::http::jobs::list_jobs(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiQuery(q),
    )
    .await;
    let data = api_json(&session, answer).await?;
    let next = next_link("/console/jobs", &filter, &data["next_cursor"]);
    let statuses: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
    let triggers: Vec<&str> = app.config.triggers.keys().map(|t| t.as_str()).collect();
    Ok(page(
        Some(&session),
        "jobs.html",
        json!({"title": "Jobs", "jobs": data["jobs"], "filter": filter, "next": next,
               "statuses": statuses, "triggers": triggers}),
    ))
}

pub async fn detail(
    State(app): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
) -> Result<Response, Response> {
    let answer = crate::http::jobs::get_job(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiPath(job_id.clone()),
    )
    .await;
    let job = api_json(&session, answer).await?;
    let deliveries = if session.may(&Scope::DeliveriesRead) {
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("job_id", &job_id)
            .finish();
        let q = api_query(&session, Some(&qs))?.0;
        let answer = crate::http::deliveries::list_deliveries(
            State(app.clone()),
            Extension(session.principal.clone()),
            ApiQuery(q),
        )
        .await;
        api_json(&session, answer).await?["deliveries"].take()
    } else {
        Value::Null
    };
    let cancellable = matches!(
        job["status"].as_str(),
        Some("queued" | "scheduled" | "waiting")
    );
    let retryable = matches!(job["status"].as_str(), Some("failed" | "needs_attention"));
    // The API asks for `confirm_no_call` when the last call may have
    // reached the callee: the form then shows the checkbox.
    let last_call = job["calls"].as_array().and_then(|c| c.last());
    let confirm =
        last_call.is_some_and(|c| matches!(c["status"].as_str(), Some("unknown" | "dialing")));
    Ok(page(
        Some(&session),
        "job.html",
        json!({
            "title": format!("Job {job_id}"),
            "job": job,
            "input": pretty(&job["input"]),
            "deliveries": deliveries,
            "may_cancel": cancellable && session.may(&Scope::JobsWrite),
            "may_retry": retryable && session.may(&Scope::JobsWrite),
            "confirm_no_call": confirm,
        }),
    ))
}

pub async fn cancel(
    State(app): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
    body: Body,
) -> Result<Response, Response> {
    checked_form(&app, &session, body).await?;
    let answer = crate::http::jobs::cancel_job(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiPath(job_id.clone()),
    )
    .await;
    api_json(&session, answer).await?;
    Ok(super::see_other(&format!("/console/jobs/{job_id}")))
}

pub async fn retry(
    State(app): State<AppState>,
    session: Session,
    Path(job_id): Path<String>,
    body: Body,
) -> Result<Response, Response> {
    let form = checked_form(&app, &session, body).await?;
    let confirm = form.get("confirm_no_call") == Some("true");
    let qs = format!("confirm_no_call={confirm}");
    let q = api_query(&session, Some(&qs))?.0;
    let answer = crate::http::jobs::retry_job(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiPath(job_id.clone()),
        ApiQuery(q),
    )
    .await;
    api_json(&session, answer).await?;
    Ok(super::see_other(&format!("/console/jobs/{job_id}")))
}

/// The next page's link: the same filter with the API's cursor.
pub(super) fn next_link(
    base: &str,
    filter: &serde_json::Map<String, Value>,
    cursor: &Value,
) -> Option<String> {
    let cursor = cursor.as_str()?;
    let mut qs = form_urlencoded::Serializer::new(String::new());
    for (k, v) in filter.iter().filter(|(k, _)| *k != "cursor") {
        qs.append_pair(k, v.as_str().unwrap_or_default());
    }
    qs.append_pair("cursor", cursor);
    Some(format!("{base}?{}", qs.finish()))
}

/// JSON as indented text, for a `<pre>`.
pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}
