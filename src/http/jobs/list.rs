//! `GET /v1/jobs`: jobs newest first, filtered by status, trigger,
//! creator, the number called and creation time, in pages of `limit`
//! (default 50, at most 200) joined by an opaque cursor.
//!
//! Policy: with `jobs:read` every job is listed; without it only the
//! principal's own (a `created_by` naming another principal is a 403).
//! Every parameter that does not parse is a 400 naming it.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::next_run_at;
use crate::auth::{Principal, Scope};
use crate::clock::rfc3339;
use crate::config::PhoneValidation;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, query_time};
use crate::ids::{JobId, TriggerId};
use crate::input::phone;
use crate::store::{JobFilter, JobRecord, JobStatus};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

/// The query string; every value is parsed here, so a bad one is a 400
/// that names its parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    trigger: Option<String>,
    created_by: Option<String>,
    phone: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A job as a listing shows it (`GET /v1/jobs/{job_id}` has the rest).
#[derive(Debug, Serialize)]
pub(super) struct JobListed {
    job_id: JobId,
    trigger_id: Option<TriggerId>,
    status: JobStatus,
    status_reason: Option<String>,
    created_by: String,
    created_at: String,
    updated_at: String,
    next_run_at: Option<String>,
    action: Value,
    attempts: i64,
    links: Value,
}

impl From<JobRecord> for JobListed {
    fn from(job: JobRecord) -> Self {
        JobListed {
            links: json!({"self": format!("/v1/jobs/{}", job.id)}),
            next_run_at: next_run_at(&job),
            job_id: job.id,
            trigger_id: job.trigger_id,
            status: job.status,
            status_reason: job.status_reason,
            created_by: job.principal,
            created_at: rfc3339(job.created_at_ms),
            updated_at: rfc3339(job.updated_at_ms),
            action: job.action,
            attempts: job.attempts,
        }
    }
}

pub async fn list_jobs(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut filter = filter(&q, &app.config.main.defaults.phone_region)?;
    if !principal.scopes.may_read_all_jobs() {
        match filter.created_by.as_deref() {
            Some(other) if other != &*principal.id => {
                return Err(ApiError::missing_scope(
                    vec![Scope::JobsRead],
                    "listing another principal's jobs needs the `jobs:read` scope",
                ));
            }
            _ => filter.created_by = Some(principal.id.to_string()),
        }
    }
    let limit = limit(q.limit.as_deref())?;
    let before = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = app.store.jobs(filter, before, limit + 1).await?;
    let next = (rows.len() > limit).then(|| encode_cursor(&rows[limit - 1].id));
    let next_link = next.as_ref().map(|c| {
        let query = ListQuery {
            cursor: Some(c.clone()),
            ..q
        };
        format!("/v1/jobs?{}", query_string(&query))
    });
    let jobs: Vec<JobListed> = rows.into_iter().take(limit).map(Into::into).collect();
    Ok(Json(json!({
        "jobs": jobs,
        "next_cursor": next,
        "links": {"next": next_link},
    })))
}

/// The store filter the query names (phone numbers read in `region`, as
/// automations read theirs).
fn filter(q: &ListQuery, region: &str) -> Result<JobFilter, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!(
                "`status` must be one of {} (got `{s}`)",
                all.join(", ")
            ))
        })?),
    };
    let trigger_id =
        match q.trigger.as_deref() {
            None => None,
            Some(t) => Some(TriggerId::parse(t).map_err(|e| {
                ApiError::bad_request(format!("`trigger` is not a trigger id: {e}"))
            })?),
        };
    if q.created_by.as_deref() == Some("") {
        return Err(ApiError::bad_request("`created_by` is empty"));
    }
    let phone = match q.phone.as_deref() {
        None => None,
        Some(raw) => Some(
            phone::Region::parse(region)
                .and_then(|r| phone::normalize(raw, r, PhoneValidation::Possible))
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "`phone` {e} (write `+` as `%2B` in a query string)"
                    ))
                })?,
        ),
    };
    let since_ms = query_time("since", q.since.as_deref())?;
    let until_ms = query_time("until", q.until.as_deref())?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && s > u
    {
        return Err(ApiError::bad_request("`since` is after `until`"));
    }
    Ok(JobFilter {
        status,
        trigger_id,
        created_by: q.created_by.clone(),
        phone,
        since_ms,
        until_ms,
    })
}

fn limit(value: Option<&str>) -> Result<usize, ApiError> {
    let Some(s) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "`limit` must be a whole number from 1 to {MAX_LIMIT} (got `{s}`)"
        ))),
    }
}

/// The cursor is the last listed job's id, base64url: opaque, so that the
/// order it encodes may change without breaking clients that pass it back.
fn encode_cursor(last: &JobId) -> String {
    URL_SAFE_NO_PAD.encode(last.as_str())
}

fn decode_cursor(c: &str) -> Result<JobId, ApiError> {
    URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| JobId::parse(&s))
        .ok_or_else(|| ApiError::bad_request("`cursor` is not a cursor from this API"))
}

/// `key=value&…` for the parameters that are set, percent-encoded.
fn query_string(q: &ListQuery) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let pairs = [
        ("status", &q.status),
        ("trigger", &q.trigger),
        ("created_by", &q.created_by),
        ("phone", &q.phone),
        ("since", &q.since),
        ("until", &q.until),
        ("limit", &q.limit),
        ("cursor", &q.cursor),
    ];
    for (k, v) in pairs {
        if let Some(v) = v {
            out.append_pair(k, v);
        }
    }
    out.finish()
}
