//! Triggers: the list the session may run (`GET /v1/triggers`'s core), a
//! trigger's page (input schema, a curl snippet, the Zapier settings) and
//! its test form, which sends the payload through the accept path itself
//! with `?mode=test` (validation, normalisation, the action it would run;
//! no job is created).

use axum::Extension;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::csrf::checked_form;
use super::jobs::pretty;
use super::render::{api_json, page};
use super::session::Session;
use crate::http::AppState;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::middleware::RequestIdValue;

pub async fn list(State(app): State<AppState>, session: Session) -> Result<Response, Response> {
    let answer =
        crate::http::triggers::list_triggers(State(app), Extension(session.principal.clone()))
            .await;
    let data = api_json(&session, Ok(answer)).await?;
    Ok(page(
        Some(&session),
        "triggers.html",
        json!({"title": "Triggers", "triggers": data["triggers"]}),
    ))
}

pub async fn detail(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    trigger_page(&app, &session, &headers, &id, None, Value::Null).await
}

/// `POST /console/triggers/{id}/test`: the payload through the accept path
/// in test mode; the page shows what it answered (the normalised input and
/// the action, or the problem with each violation).
pub async fn test(
    State(app): State<AppState>,
    session: Session,
    Extension(request_id): Extension<RequestIdValue>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, Response> {
    let form = checked_form(&app, &session, body).await?;
    let payload = form.get("payload").unwrap_or_default().to_owned();
    let mut sent = HeaderMap::new();
    sent.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let uri: Uri = format!("/v1/triggers/{id}?mode=test")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/v1/triggers?mode=test"));
    let query = serde_json::from_value(json!({"mode": "test"})).map_err(|e| {
        super::render::api_error_page(
            &session,
            crate::http::error::ApiError::Internal(e.to_string()),
        )
    })?;
    let answer = crate::http::triggers::accept_trigger(
        State(app.clone()),
        Some(Extension(session.principal.clone())),
        Extension(request_id),
        ApiPath(id.clone()),
        ApiQuery(query),
        (Method::POST, OriginalUri(uri), sent),
        Body::from(payload.clone()),
    )
    .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = response.status();
    let shown = api_json(&session, Ok(response)).await?;
    let result = json!({"status": status.as_u16(), "ok": status.is_success(),
                        "body": pretty(&shown)});
    trigger_page(&app, &session, &headers, &id, Some(payload), result).await
}

async fn trigger_page(
    app: &AppState,
    session: &Session,
    headers: &HeaderMap,
    id: &str,
    payload: Option<String>,
    result: Value,
) -> Result<Response, Response> {
    let answer = crate::http::triggers::get_trigger(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiPath(id.to_owned()),
    )
    .await;
    let t = api_json(session, answer).await?;
    let url = format!(
        "{}{}",
        base_url(app, headers),
        t["url"].as_str().unwrap_or_default()
    );
    let example = t["input_schema"]["examples"][0].clone();
    let example = if example.is_null() {
        json!({})
    } else {
        example
    };
    let curl = format!(
        "curl -X POST '{url}' \\\n  -H \"Authorization: Bearer $CALLGATE_KEY\" \\\n  \
         -H 'Content-Type: application/json' \\\n  -H \"Idempotency-Key: $(uuidgen)\" \\\n  \
         -d '{}'",
        example.to_string().replace('\'', "'\\''")
    );
    Ok(page(
        Some(session),
        "trigger.html",
        json!({"title": format!("Trigger {id}"), "t": t, "schema": pretty(&t["input_schema"]),
               "url": url, "curl": curl, "payload": payload.unwrap_or_else(|| pretty(&example)),
               "result": result}),
    ))
}

/// Where senders reach this gateway: `server.public_url`, else the host
/// the browser used.
fn base_url(app: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &app.config.main.server.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8443");
    format!("https://{host}")
}
