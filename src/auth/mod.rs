//! Authentication: who is calling, from an API key or a JWT bearer token.
//!
//! Policy: API keys (`cg_…`) are accepted in `Authorization: Bearer` or
//! `X-Api-Key`; anything else in `Authorization: Bearer` is treated as a JWT.
//! No credentials → 401 with `WWW-Authenticate: Bearer`; credentials that do
//! not verify → 401 with `error="invalid_token"`. Scope checks (403) happen
//! where the resource is known, in the handlers. Credentials never reach a
//! log or an error body.

pub mod allowlist;
pub mod api_key;
pub mod db_keys;
pub mod jwt;
pub mod scope;
pub mod signed;

use std::sync::Arc;

use crate::config::RateSpec;

pub use allowlist::IpAllowlist;
pub use api_key::KeySet;
pub use db_keys::DbKeys;
pub use jwt::Issuers;
pub use scope::{Scope, Scopes};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<name>` or `jwt:<issuer id>:<sub>`; jobs record it.
    pub id: Arc<str>,
    pub scopes: Scopes,
    /// A per-key or per-issuer override of the principal rate limit.
    pub rate_limit: Option<RateSpec>,
    /// Where this credential may be used from (an API key's
    /// `allowed_ips`); `None`: anywhere.
    pub allowed_ips: Option<Arc<IpAllowlist>>,
}
