//! `POST /v1/keys`: makes an API key stored in the database and answers it
//! once (201; only its SHA-256 hash is kept). The body is JSON: `name`,
//! `scopes`, optional `allowed_ips` and `rate_limit` (as in `keys.toml`).
//!
//! Policy: `keys:write` first (403); then the body (415 not JSON, 400
//! unparseable or an unknown field, naming it; 422 a bad name, scope,
//! network or rate, each listed); a scope the creator does not hold is a
//! 403 naming it (a key cannot grant more than its maker has); a name in
//! use, in `keys.toml` or stored (even disabled), is a 409.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;

use super::{require, stored_json};
use crate::auth::{IpAllowlist, Principal, Scope, api_key};
use crate::config::RateSpec;
use crate::crypto::sha256;
use crate::http::AppState;
use crate::http::error::{ApiError, Violation};
use crate::http::extract::read_body;
use crate::store::ApiKeyRecord;

/// The body of `POST /v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyIn {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    pub rate_limit: Option<RateSpec>,
}

/// Makes the key `new` describes for `principal` (who needs `keys:write`
/// and every scope given); the stored key's view plus `key`, the plaintext,
/// which is not kept anywhere.
pub async fn create_key(
    app: &AppState,
    principal: &Principal,
    new: NewKeyIn,
) -> Result<Value, ApiError> {
    require(principal, Scope::KeysWrite)?;
    let scopes = check(&new)?;
    let lacking: Vec<Scope> = scopes
        .into_iter()
        .filter(|s| !principal.scopes.covers(s))
        .collect();
    if !lacking.is_empty() {
        let names: Vec<String> = lacking.iter().map(ToString::to_string).collect();
        return Err(ApiError::missing_scope(
            lacking,
            format!(
                "a key cannot grant scopes its creator lacks: {}",
                names.join(", ")
            ),
        ));
    }
    let toml = app.keys.load();
    let taken = || ApiError::Conflict(format!("an API key named `{}` exists", new.name));
    if toml.has_name(&new.name) {
        return Err(taken());
    }
    let key = api_key::generate();
    let record = ApiKeyRecord {
        name: new.name.clone(),
        hash: sha256(key.as_bytes()),
        scopes: new.scopes,
        allowed_ips: new
            .allowed_ips
            .iter()
            .map(|s| s.trim().to_owned())
            .collect(),
        rate_limit: new.rate_limit,
        created_at_ms: app.clock.now_ms(),
        created_by: principal.id.to_string(),
        disabled_at_ms: None,
        last_used_at_ms: None,
    };
    if !app.store.create_api_key(record.clone()).await? {
        return Err(taken());
    }
    tracing::info!(principal = %principal.id, key = %record.name, "API key created");
    // Usable here at once; elsewhere on the first miss (within a second).
    if let Err(e) = app.db_keys.refresh(&toml).await {
        tracing::warn!(error = %e, "reading the stored API keys after a change failed");
    }
    let mut out = stored_json(&record);
    out["key"] = Value::String(key);
    Ok(out)
}

/// The scopes of a valid request, or a 422 listing every problem.
fn check(new: &NewKeyIn) -> Result<Vec<Scope>, ApiError> {
    let mut errors = Vec::new();
    if let Err(e) = api_key::check_name(&new.name) {
        errors.push(Violation::new("/name", e));
    }
    let mut scopes = Vec::new();
    for (i, s) in new.scopes.iter().enumerate() {
        match Scope::parse(s) {
            Some(scope) => scopes.push(scope),
            None => errors.push(Violation::new(
                format!("/scopes/{i}"),
                format!("unknown scope `{s}`"),
            )),
        }
    }
    if let Err(list) = IpAllowlist::parse(&new.allowed_ips) {
        for (j, e) in list {
            errors.push(Violation::new(format!("/allowed_ips/{j}"), e));
        }
    }
    if let Some(Err(e)) = new.rate_limit.map(|r| r.check()) {
        errors.push(Violation::new("/rate_limit", e));
    }
    if errors.is_empty() {
        return Ok(scopes);
    }
    Err(ApiError::InvalidValue {
        detail: "the key cannot be made as asked; see `errors`".into(),
        errors,
    })
}

pub async fn post_key(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&principal, Scope::KeysWrite)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the key's description as application/json".into(),
        ));
    }
    let bytes = read_body(body, app.config.main.server.max_body_bytes).await?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let new: NewKeyIn = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let pointer = if at == "." {
            String::new()
        } else {
            format!("/{}", at.replace('.', "/"))
        };
        ApiError::BadRequest {
            detail: format!("the body is not a key description: {}", e.inner()),
            errors: vec![Violation::new(pointer, e.inner().to_string())],
        }
    })?;
    let created = create_key(&app, &principal, new).await?;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    // The answer holds the only copy of the key.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
