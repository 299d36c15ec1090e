//! The do-not-call list: `GET`, `PUT` and `DELETE` on
//! `/v1/do-not-call/{number}`, `GET /v1/do-not-call` (listed in number
//! order, with a cursor) and the bulk import `POST /v1/do-not-call`
//! (`import.rs`). Scopes `dnc:read` (reading) and `dnc:write` (changing),
//! checked before anything else.
//!
//! Numbers are normalised to E.164 as trigger inputs are (a number without
//! `+` is read in `[defaults].phone_region`), always with `possible`
//! validation: a list of numbers never to call should refuse none that a
//! trigger could dial. A number that does not normalise is a 422 naming
//! it. The list is two sources: the seed file (`calling.do_not_call_file`,
//! read at start, changed only by editing it) and the stored entries added
//! here; the dial path checks both. Removing a number that the seed file
//! lists is a 409: the API cannot make it callable.

mod import;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

pub use import::import_do_not_call;

use crate::auth::{Principal, Scope};
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::{ApiError, Violation};
use crate::http::extract::{ApiPath, ApiQuery};
use crate::input::phone::{self, PhoneValidation, Region};
use crate::store::DncEntry;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

fn require(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.scopes.has(&scope) {
        return Ok(());
    }
    let detail = format!("this needs the `{scope}` scope");
    Err(ApiError::missing_scope(vec![scope], detail))
}

/// `raw` in E.164, or why not.
pub(super) fn normalise(app: &AppState, raw: &str) -> Result<String, String> {
    // Checked when the config was compiled; a failure here is a bug.
    let region = Region::parse(&app.config.main.defaults.phone_region)
        .map_err(|e| format!("[defaults].phone_region: {e}"))?;
    phone::normalize(raw, region, PhoneValidation::Possible)
}

/// The path's number in E.164, or a 422 naming it.
fn path_number(app: &AppState, raw: &str) -> Result<String, ApiError> {
    normalise(app, raw).map_err(|message| ApiError::InvalidValue {
        detail: format!("`{raw}` is not a phone number callgate can normalise: {message}"),
        errors: vec![Violation::new("/number", message)],
    })
}

/// A number as the API shows it: where it is listed, and the stored entry's
/// details when it has one.
fn entry_json(number: &str, in_file: bool, stored: Option<&DncEntry>) -> Value {
    let mut sources = Vec::new();
    if stored.is_some() {
        sources.push("api");
    }
    if in_file {
        sources.push("file");
    }
    json!({
        "number": number,
        "sources": sources,
        "added_at": stored.map(|e| rfc3339(e.added_at_ms)),
        "added_by": stored.map(|e| e.added_by.as_str()),
    })
}

pub async fn get_do_not_call(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    require(&principal, Scope::DncRead)?;
    let number = path_number(&app, &raw)?;
    let in_file = app.config.do_not_call.contains(&number);
    let stored = app.store.do_not_call(&number).await?;
    if !in_file && stored.is_none() {
        return Err(ApiError::NotFound(format!(
            "{number} is not on the do-not-call list"
        )));
    }
    Ok(Json(entry_json(&number, in_file, stored.as_ref())))
}

/// Adds a number: 201 when it is new on the stored list, 200 when it was
/// there already (its first entry is kept).
pub async fn put_do_not_call(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    require(&principal, Scope::DncWrite)?;
    let number = path_number(&app, &raw)?;
    let added = app
        .store
        .add_do_not_call(vec![number.clone()], &principal.id, app.clock.now_ms())
        .await?;
    let stored = app.store.do_not_call(&number).await?;
    if added > 0 {
        tracing::info!(principal = %principal.id, "number added to the do-not-call list");
    }
    let status = if added > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = entry_json(
        &number,
        app.config.do_not_call.contains(&number),
        stored.as_ref(),
    );
    Ok((status, Json(body)).into_response())
}

pub async fn delete_do_not_call(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(raw): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require(&principal, Scope::DncWrite)?;
    let number = path_number(&app, &raw)?;
    if app.config.do_not_call.contains(&number) {
        return Err(ApiError::Conflict(format!(
            "{number} is listed in the seed file `{}`, which the API does not change; \
             remove it there and restart",
            app.config.main.calling.do_not_call_file
        )));
    }
    if app.store.remove_do_not_call(&number).await? {
        tracing::info!(principal = %principal.id, "number removed from the do-not-call list");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "{number} is not on the do-not-call list"
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Both sources merged, in number order; the cursor is the last number's
/// digits (no `+`, so it needs no escaping in a query string).
pub async fn list_do_not_call(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&principal, Scope::DncRead)?;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) if !c.is_empty() && c.len() <= 15 && c.bytes().all(|b| b.is_ascii_digit()) => {
            Some(format!("+{c}"))
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "`cursor` is not a cursor from this API",
            ));
        }
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    // One more than a page from each source tells whether more follow.
    let stored = app.store.list_do_not_call(after.clone(), limit + 1).await?;
    let file = &app.config.do_not_call;
    let mut merged: BTreeMap<String, Option<DncEntry>> = file
        .sorted_after(after.as_deref(), limit + 1)
        .into_iter()
        .map(|n| (n, None))
        .collect();
    for e in stored {
        merged.insert(e.number.clone(), Some(e));
    }
    let more = merged.len() > limit;
    let page: Vec<Value> = merged
        .iter()
        .take(limit)
        .map(|(n, e)| entry_json(n, file.contains(n), e.as_ref()))
        .collect();
    let next = more
        .then(|| merged.keys().nth(limit - 1))
        .flatten()
        .map(|n| n.trim_start_matches('+').to_owned());
    Ok(Json(json!({"numbers": page, "next_cursor": next})))
}
