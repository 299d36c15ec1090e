//! Do-not-call: search, list (`GET /v1/do-not-call`'s core; `dnc:read`),
//! add and remove (`PUT` / `DELETE /v1/do-not-call/{number}`'s cores;
//! `dnc:write`). Numbers are normalised as the API normalises them.

use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::csrf::{Form, checked_form};
use super::jobs::next_link;
use super::render::{api_error_page, api_json, api_query, page};
use super::session::Session;
use crate::auth::Scope;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery};

pub async fn list(
    State(app): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, Response> {
    let (mut filter, _) = api_query::<serde_json::Map<String, Value>>(&session, raw.as_deref())?;
    // A search is one number's entry; otherwise the list, by cursor.
    let search = filter
        .remove("number")
        .and_then(|v| v.as_str().map(str::to_owned));
    let mut found = Value::Null;
    let mut missing = false;
    if let Some(number) = &search {
        let answer = crate::http::dnc::get_do_not_call(
            State(app.clone()),
            Extension(session.principal.clone()),
            ApiPath(number.clone()),
        )
        .await;
        match answer {
            Err(ApiError::NotFound(_)) => missing = true,
            other => found = api_json(&session, other).await?,
        }
    }
    let cursor = filter.get("cursor").cloned();
    let qs = cursor
        .as_ref()
        .and_then(Value::as_str)
        .map(|c| format!("cursor={c}"));
    let q = api_query(&session, qs.as_deref())?.0;
    let answer = crate::http::dnc::list_do_not_call(
        State(app),
        Extension(session.principal.clone()),
        ApiQuery(q),
    )
    .await;
    let data = api_json(&session, answer).await?;
    let next = next_link(
        "/console/do-not-call",
        &Default::default(),
        &data["next_cursor"],
    );
    Ok(page(
        Some(&session),
        "dnc.html",
        json!({"title": "Do-not-call", "numbers": data["numbers"], "next": next,
               "search": search, "found": found, "missing": missing,
               "may_write": session.may(&Scope::DncWrite)}),
    ))
}

pub async fn add(
    State(app): State<AppState>,
    session: Session,
    body: Body,
) -> Result<Response, Response> {
    let form = checked_form(&app, &session, body).await?;
    let number = number(&session, &form)?;
    let answer = crate::http::dnc::put_do_not_call(
        State(app),
        Extension(session.principal.clone()),
        ApiPath(number.clone()),
    )
    .await;
    let entry = api_json(&session, answer).await?;
    let shown = entry["number"].as_str().unwrap_or(&number).to_owned();
    Ok(super::see_other(&search_url(&shown)))
}

pub async fn remove(
    State(app): State<AppState>,
    session: Session,
    body: Body,
) -> Result<Response, Response> {
    let form = checked_form(&app, &session, body).await?;
    let number = number(&session, &form)?;
    let answer = crate::http::dnc::delete_do_not_call(
        State(app),
        Extension(session.principal.clone()),
        ApiPath(number.clone()),
    )
    .await;
    api_json(&session, answer).await?;
    Ok(super::see_other(&search_url(&number)))
}

/// The form's `number`, or a 400 page.
fn number(session: &Session, form: &Form) -> Result<String, Response> {
    match form.get("number").map(str::trim) {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(api_error_page(
            session,
            ApiError::bad_request("enter a phone number"),
        )),
    }
}

fn search_url(number: &str) -> String {
    let qs = form_urlencoded::Serializer::new(String::new())
        .append_pair("number", number)
        .finish();
    format!("/console/do-not-call?{qs}")
}
