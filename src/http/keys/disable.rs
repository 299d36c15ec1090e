//! `POST /v1/keys/{name}/disable`: a stored key stops working at this
//! instance at once and at every other within `auth.db_keys_refresh`.
//! Disabling a disabled key answers it again (200); a `keys.toml` key is a
//! 409 (the file is changed by editing it), an unknown one a 404.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::Value;

use super::{require, stored_json};
use crate::auth::{Principal, Scope};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;

/// Disables the stored key `name` for `principal` (who needs `keys:write`);
/// the key as it is now.
pub async fn disable_key(
    app: &AppState,
    principal: &Principal,
    name: &str,
) -> Result<Value, ApiError> {
    require(principal, Scope::KeysWrite)?;
    let toml = app.keys.load();
    if toml.has_name(name) {
        return Err(ApiError::Conflict(format!(
            "`{name}` is a key of `{}`, which the API does not change; set `disabled = true` \
             on it there (the file is read again within `auth.keys_reload_interval`)",
            app.config.main.auth.keys_file
        )));
    }
    let Some(key) = app.store.disable_api_key(name, app.clock.now_ms()).await? else {
        return Err(ApiError::NotFound(format!("there is no API key `{name}`")));
    };
    tracing::info!(principal = %principal.id, key = %name, "API key disabled");
    // In force here at once; the other instances read it at their refresh.
    if let Err(e) = app.db_keys.refresh(&toml).await {
        tracing::warn!(error = %e, "reading the stored API keys after a change failed");
    }
    Ok(stored_json(&key))
}

pub async fn post_disable_key(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(disable_key(&app, &principal, &name).await?))
}
