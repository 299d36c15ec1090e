//! API keys through the API: `GET /v1/keys` lists every key (those of
//! `keys.toml` and those stored in the database; never a hash),
//! `POST /v1/keys` makes a stored key and answers it once (`create.rs`),
//! `POST /v1/keys/{name}/disable` disables a stored key (`disable.rs`).
//! Scopes `keys:read` and `keys:write`, checked before anything else.
//!
//! A stored key works at every instance sharing the database within about
//! a second (`auth::db_keys`). A key made here carries no scope its
//! creator lacks (403, naming them). `keys.toml` keys are listed but not
//! changed here: disabling one is a 409 (edit the file). The functions
//! behind the routes (`create_key`, `key_list`, `disable_key`) are what
//! the console calls too.

mod create;
mod disable;

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};

pub use create::{NewKeyIn, create_key, post_key};
pub use disable::{disable_key, post_disable_key};

use crate::auth::{Principal, Scope};
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::store::ApiKeyRecord;

fn require(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.scopes.has(&scope) {
        return Ok(());
    }
    let detail = format!("this needs the `{scope}` scope");
    Err(ApiError::missing_scope(vec![scope], detail))
}

/// A stored key as the API shows it.
fn stored_json(k: &ApiKeyRecord) -> Value {
    json!({
        "name": k.name,
        "source": "db",
        "scopes": k.scopes,
        "allowed_ips": k.allowed_ips,
        "created_at": rfc3339(k.created_at_ms),
        "created_by": k.created_by,
        "last_used_at": k.last_used_at_ms.map(rfc3339),
        "disabled": k.disabled_at_ms.is_some(),
        "disabled_at": k.disabled_at_ms.map(rfc3339),
    })
}

/// Every key, `keys.toml`'s first, then the stored ones, each by name.
/// The file's keys carry no use record (`last_used_at` is null).
pub async fn key_list(app: &AppState) -> Result<Vec<Value>, ApiError> {
    let toml = app.keys.load();
    let mut keys: Vec<Value> = toml
        .listed()
        .iter()
        .map(|k| {
            json!({
                "name": k.name,
                "source": "toml",
                "scopes": k.scopes,
                "allowed_ips": null,
                "created_at": k.created_at,
                "created_by": null,
                "last_used_at": null,
                "disabled": k.disabled,
                "disabled_at": null,
            })
        })
        .collect();
    let stored = app.store.api_keys().await?;
    keys.extend(
        stored
            .iter()
            .filter(|k| !toml.has_name(&k.name))
            .map(stored_json),
    );
    Ok(keys)
}

pub async fn list_keys(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Result<Json<Value>, ApiError> {
    require(&principal, Scope::KeysRead)?;
    Ok(Json(json!({ "keys": key_list(&app).await? })))
}
