//! `x-request-id`: kept when the client (or a proxy) sent a sane one, so one
//! id follows a request across systems; otherwise minted (`req_<ULID>`).
//! A value that is too long or holds characters outside `A-Z a-z 0-9 - _ . :`
//! is replaced rather than trusted into logs.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

/// The request's id, as an extension for handlers and logs.
#[derive(Debug, Clone)]
pub struct RequestIdValue(pub HeaderValue);

impl RequestIdValue {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// Keeps a sane incoming id or mints one; records it on the request (header
/// and extension) and returns it for the response.
pub fn assign(req: &mut Request) -> HeaderValue {
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if acceptable(v) => v.clone(),
        _ => {
            let minted = format!("req_{}", ulid::Ulid::generate());
            let v =
                HeaderValue::from_str(&minted).unwrap_or(HeaderValue::from_static("req_unknown"));
            req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
            v
        }
    };
    req.extensions_mut().insert(RequestIdValue(id.clone()));
    id
}
