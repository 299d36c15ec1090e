//! Rendering: the embedded templates (one minijinja environment, HTML
//! autoescaping for every template), the context every page shares, error
//! pages, and turning an API handler's answer into a page's data.

use std::sync::LazyLock;

use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{AutoEscape, Environment};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::session::Session;
use super::{NAV, assets};
use crate::http::error::ApiError;

/// Every template, embedded in the binary (no file is read at run time).
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("job.html", include_str!("templates/job.html")),
    ("calls.html", include_str!("templates/calls.html")),
    ("call.html", include_str!("templates/call.html")),
    ("deliveries.html", include_str!("templates/deliveries.html")),
    ("delivery.html", include_str!("templates/delivery.html")),
    ("triggers.html", include_str!("templates/triggers.html")),
    ("trigger.html", include_str!("templates/trigger.html")),
    ("dnc.html", include_str!("templates/dnc.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("endpoints.html", include_str!("templates/endpoints.html")),
    ("endpoint.html", include_str!("templates/endpoint.html")),
    ("keys.html", include_str!("templates/keys.html")),
    (
        "key_created.html",
        include_str!("templates/key_created.html"),
    ),
];

// The templates are constants of the binary, not configuration: built once
// on first use. One that does not compile is left out and its pages answer
// 500; the unit test below finds that before a release.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Escape everything, whatever a template's name.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "console template does not compile");
        }
    }
    env
});

/// Renders `template` with `ctx` (an object) and what every page shows:
/// the navigation the session may use, who is logged in, the CSRF token.
pub fn page(session: Option<&Session>, template: &str, ctx: Value) -> Response {
    page_status(session, StatusCode::OK, template, ctx)
}

pub fn page_status(
    session: Option<&Session>,
    status: StatusCode,
    template: &str,
    mut ctx: Value,
) -> Response {
    if let Some(s) = session {
        let nav: Vec<Value> = NAV
            .iter()
            .filter(|e| e.needs.as_ref().is_none_or(|scope| s.may(scope)))
            .map(|e| json!({"path": e.path, "label": e.label}))
            .collect();
        ctx["nav"] = json!(nav);
        ctx["principal"] = json!(&*s.principal.id);
        ctx["csrf"] = json!(s.csrf);
    }
    ctx["css"] = json!(assets::css_path());
    let rendered = ENV
        .get_template(template)
        .and_then(|t| t.render(minijinja::value::Serde(&ctx)));
    match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "console page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the page could not be rendered (see the server log)",
            )
                .into_response()
        }
    }
}

/// An error page with `status` and a message for the operator.
pub fn error_page(session: Option<&Session>, status: StatusCode, message: &str) -> Response {
    let ctx = json!({"title": status.canonical_reason().unwrap_or("Error"), "status": status.as_u16(), "message": message});
    page_status(session, status, "error.html", ctx)
}

/// The page for an API error: its status and detail (a 5xx's cause stays in
/// the log, as over the API).
pub fn api_error_page(session: &Session, e: ApiError) -> Response {
    let status = e.status();
    let message = if status.is_server_error() {
        tracing::error!(error = %e, "console: the API core failed");
        "Something failed on the server's side; the log has the cause. Try again shortly."
            .to_owned()
    } else {
        e.to_string()
    };
    error_page(Some(session), status, &message)
}

/// What an API handler answered, as JSON (`null` for an empty body), or
/// the error page for its error.
pub async fn api_json<T: IntoResponse>(
    session: &Session,
    answer: Result<T, ApiError>,
) -> Result<Value, Response> {
    let response = answer
        .map_err(|e| api_error_page(session, e))?
        .into_response();
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
        .await
        .map_err(|e| api_error_page(session, ApiError::Internal(e.to_string())))?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| api_error_page(session, ApiError::Internal(e.to_string())))
}

/// An API list's query from a console form's query string: fields left
/// empty are dropped (a form sends every field), the rest parsed as the
/// API parses them. Also returns the kept fields, to fill the form again.
pub fn api_query<T: DeserializeOwned>(
    session: &Session,
    raw: Option<&str>,
) -> Result<(T, serde_json::Map<String, Value>), Response> {
    let mut kept = serde_json::Map::new();
    let mut qs = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let v = v.trim();
        if !v.is_empty() {
            qs.append_pair(&k, v);
            kept.insert(k.into_owned(), json!(v));
        }
    }
    let uri: Uri = format!("/?{}", qs.finish())
        .parse()
        .map_err(|_| error_page(Some(session), StatusCode::BAD_REQUEST, "bad query string"))?;
    let query = axum::extract::Query::<T>::try_from_uri(&uri).map_err(|e| {
        error_page(
            Some(session),
            StatusCode::BAD_REQUEST,
            &format!("invalid filter: {}", e.body_text()),
        )
    })?;
    Ok((query.0, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn values_are_escaped_in_every_template() {
        let ctx = json!({"title": "<script>alert(1)</script>", "message": "<b>x</b>"});
        let html = ENV
            .get_template("error.html")
            .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
            .unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
                || html.contains("&lt;script&gt;")
        );
        assert!(!html.contains("<b>x</b>"));
    }
}
