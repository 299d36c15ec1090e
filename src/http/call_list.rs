//! `GET /v1/calls`: every call, newest first, filtered by status, outcome,
//! agent, number called and creation window, in pages with a cursor (the
//! last call's id). Needs `jobs:read` (403 before anything else): the list
//! spans every principal's jobs. A parameter that does not parse is a 400
//! naming it.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::calls::CallOut;
use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, query_time};
use crate::ids::CallId;
use crate::store::{CallFilter, CallStatus};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    outcome: Option<String>,
    agent: Option<String>,
    /// The number called, in E.164 (`phone`, as in `GET /v1/jobs`).
    phone: Option<String>,
    /// RFC 3339: calls created at or after.
    since: Option<String>,
    /// RFC 3339: calls created before.
    until: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `+`, then 7-15 digits, the first not 0 (as stored: calls are placed to
/// normalised numbers only).
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (7..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

pub async fn list_calls(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if !principal.scopes.may_read_all_jobs() {
        return Err(ApiError::missing_scope(
            vec![Scope::JobsRead],
            "listing calls needs the `jobs:read` scope",
        ));
    }
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<CallStatus>().map_err(|_| {
                let all: Vec<&str> = CallStatus::ALL.iter().map(|c| c.as_str()).collect();
                ApiError::bad_request(format!(
                    "`status` must be one of {} (got `{s}`)",
                    all.join(", ")
                ))
            })
        })
        .transpose()?;
    if let Some(phone) = q.phone.as_deref().filter(|t| !is_e164(t)) {
        return Err(ApiError::bad_request(format!(
            "`phone` must be an E.164 number such as +15550121234, with `+` written `%2B` (got `{phone}`)"
        )));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            CallId::parse(c)
                .ok_or_else(|| ApiError::bad_request("`cursor` is not a cursor from this API"))?,
        ),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let filter = CallFilter {
        status,
        outcome: q.outcome,
        agent_id: q.agent,
        to: q.phone,
        since_ms: query_time("since", q.since.as_deref())?,
        until_ms: query_time("until", q.until.as_deref())?,
    };
    let rows = app.store.calls(filter, before, limit + 1).await?;
    let more = rows.len() > limit;
    let next = more.then(|| rows[limit - 1].id.clone());
    let page: Vec<CallOut> = rows.into_iter().take(limit).map(CallOut::from).collect();
    Ok(Json(json!({"calls": page, "next_cursor": next})))
}
