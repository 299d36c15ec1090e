//! Forms and their CSRF token.
//!
//! Policy: every state-changing request is a POST of a form whose `csrf`
//! field is the session's token (compared in constant time); missing or
//! wrong is a 403 page, checked after the session (no session: the login
//! page) and before anything else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::render::error_page;
use super::session::Session;
use crate::http::AppState;

/// `Ok` when `form` carries `session`'s CSRF token, else the 403 page.
pub fn check(session: &Session, form: &Form) -> Result<(), Response> {
    let given = form.get("csrf").unwrap_or_default();
    if !given.is_empty() && bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())) {
        return Ok(());
    }
    Err(error_page(
        Some(session),
        StatusCode::FORBIDDEN,
        "The form's CSRF token is missing or wrong. Reload the page and try again.",
    ))
}

/// Reads `body` as a form and checks its CSRF token.
pub async fn checked_form(
    app: &AppState,
    session: &Session,
    body: axum::body::Body,
) -> Result<Form, Response> {
    let form = Form::read(app, body).await?;
    check(session, &form)?;
    Ok(form)
}

/// A submitted `application/x-www-form-urlencoded` form.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Reads the request body as a form (at most `server.max_body_bytes`).
    pub async fn read(app: &AppState, body: axum::body::Body) -> Result<Form, Response> {
        let limit = app.config.main.server.max_body_bytes;
        let bytes = crate::http::extract::read_body(body, limit)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Form(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (checkboxes), in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
