//! API keys: the list (`GET /v1/keys`' core: name, source, scopes,
//! created, last use, disabled; never a hash), the create form
//! (`POST /v1/keys`' core) and the disable button for stored keys
//! (`POST /v1/keys/{name}/disable`'s core).
//!
//! Policy: `keys:read` to see the page, `keys:write` to see and use the
//! form and buttons; the cores check the scopes again, so a forged POST
//! without them is a 403. The form offers only the scopes the session
//! holds (a key cannot grant more than its maker has). A new key is shown
//! once, on the answer to the POST (`Cache-Control: no-store`), and is
//! never stored or shown again.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::csrf::checked_form;
use super::render::{api_error_page, error_page, page, page_status};
use super::session::Session;
use crate::auth::Scope;
use crate::auth::scope::NAMED_SCOPES;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::keys::NewKeyIn;

pub async fn list(State(app): State<AppState>, session: Session) -> Result<Response, Response> {
    if !session.may(&Scope::KeysRead) {
        let e = ApiError::missing_scope(vec![Scope::KeysRead], "this needs the `keys:read` scope");
        return Err(api_error_page(&session, e));
    }
    let keys = crate::http::keys::key_list(&app)
        .await
        .map_err(|e| api_error_page(&session, e))?;
    let grantable: Vec<&str> = NAMED_SCOPES
        .iter()
        .filter(|(_, s)| session.may(s))
        .map(|(n, _)| *n)
        .collect();
    Ok(page(
        Some(&session),
        "keys.html",
        json!({"title": "API keys", "keys": keys, "grantable": grantable,
               "may_write": session.may(&Scope::KeysWrite)}),
    ))
}

pub async fn create(
    State(app): State<AppState>,
    session: Session,
    body: Body,
) -> Result<Response, Response> {
    let form = checked_form(&app, &session, body).await?;
    let new = NewKeyIn {
        name: form.get("name").unwrap_or_default().trim().to_owned(),
        scopes: form.all("scope").map(str::to_owned).collect(),
        allowed_ips: form
            .get("allowed_ips")
            .unwrap_or_default()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        rate_limit: None,
    };
    let made = match crate::http::keys::create_key(&app, &session.principal, new).await {
        Ok(made) => made,
        Err(ApiError::InvalidValue { errors, .. }) => {
            let why: Vec<String> = errors
                .iter()
                .map(|v| format!("{}: {}", v.pointer.trim_start_matches('/'), v.message))
                .collect();
            let msg = format!("The key was not made: {}.", why.join("; "));
            return Err(error_page(
                Some(&session),
                StatusCode::UNPROCESSABLE_ENTITY,
                &msg,
            ));
        }
        Err(e) => return Err(api_error_page(&session, e)),
    };
    let mut response = page_status(
        Some(&session),
        StatusCode::CREATED,
        "key_created.html",
        json!({"title": "API key made", "made": made}),
    );
    // The key is in this page only: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn disable(
    State(app): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, Response> {
    checked_form(&app, &session, body).await?;
    crate::http::keys::disable_key(&app, &session.principal, &name)
        .await
        .map_err(|e| api_error_page(&session, e))?;
    Ok(super::see_other("/console/keys"))
}
