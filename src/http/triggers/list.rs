//! `GET /v1/triggers` and `GET /v1/triggers/{trigger_id}`: what the caller
//! may run, with input schemas (for Zapier-style dynamic fields).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;

use super::authorize;
use crate::auth::Principal;
use crate::config::{ActionConfig, FormNesting};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiPath;
use crate::trigger::Trigger;

/// One trigger as a caller sees it.
#[derive(Debug, Serialize)]
pub struct TriggerOut<'a> {
    id: &'a str,
    description: &'a str,
    url: String,
    action: &'a ActionConfig,
    input_schema: &'a Value,
    accepts: [&'static str; 2],
    form_nesting: FormNesting,
    phone_fields: &'a [String],
}

impl<'a> TriggerOut<'a> {
    fn new(t: &'a Trigger) -> Self {
        Self {
            id: t.id.as_str(),
            description: &t.description,
            url: format!("/v1/triggers/{}", t.id),
            action: &t.action,
            input_schema: &t.schema_json,
            accepts: ["application/json", "application/x-www-form-urlencoded"],
            form_nesting: t.form_nesting,
            phone_fields: &t.phone_pointers,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TriggerList<'a> {
    triggers: Vec<TriggerOut<'a>>,
}

pub async fn list_triggers(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Response {
    let triggers = app
        .config
        .triggers
        .values()
        .filter(|t| principal.scopes.may_run(t.id.as_str()))
        .map(|t| TriggerOut::new(t))
        .collect();
    Json(TriggerList { triggers }).into_response()
}

pub async fn get_trigger(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiPath(trigger_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let trigger = authorize(&app, &principal, &trigger_id)?;
    Ok(Json(TriggerOut::new(&trigger)).into_response())
}
