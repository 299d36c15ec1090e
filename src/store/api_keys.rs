//! How an `ApiKeyRecord` is stored, the same on both engines: the hash as
//! hex, scopes and allowed IPs as JSON arrays of text, the rate limit as
//! three nullable integers. A row that does not read back is `Corrupt`.
//! `ApiKeyRecord` itself is here too.

use std::time::Duration;

use super::StoreError;
use crate::config::RateSpec;

/// The columns of `api_keys`, in table order.
pub(crate) const COLUMNS: &str = "name, hash, scopes, allowed_ips, rate_requests, rate_per_ms, \
     rate_burst, created_at, created_by, disabled_at, last_used_at";

/// An `ApiKeyRecord` as its columns.
pub(crate) struct ApiKeyColumns {
    pub name: String,
    pub hash: String,
    pub scopes: String,
    pub allowed_ips: String,
    pub rate_requests: Option<i64>,
    pub rate_per_ms: Option<i64>,
    pub rate_burst: Option<i64>,
    pub created_at: i64,
    pub created_by: String,
    pub disabled_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiKeyColumns {
    pub(crate) fn from_record(k: &ApiKeyRecord) -> Self {
        let list = |v: &[String]| serde_json::Value::from(v.to_vec()).to_string();
        Self {
            name: k.name.clone(),
            hash: hex::encode(k.hash),
            scopes: list(&k.scopes),
            allowed_ips: list(&k.allowed_ips),
            rate_requests: k.rate_limit.map(|r| i64::from(r.requests)),
            rate_per_ms: k
                .rate_limit
                .map(|r| i64::try_from(r.per.as_millis()).unwrap_or(i64::MAX)),
            rate_burst: k.rate_limit.map(|r| i64::from(r.burst)),
            created_at: k.created_at_ms,
            created_by: k.created_by.clone(),
            disabled_at: k.disabled_at_ms,
            last_used_at: k.last_used_at_ms,
        }
    }

    pub(crate) fn into_record(self) -> Result<ApiKeyRecord, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("api_keys `{}`: {what}", self.name));
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&self.hash, &mut hash).map_err(|_| corrupt("hash"))?;
        let list = |text: &str, what: &str| {
            serde_json::from_str::<Vec<String>>(text).map_err(|_| corrupt(what))
        };
        let rate_limit = match (self.rate_requests, self.rate_per_ms, self.rate_burst) {
            (None, None, None) => None,
            (Some(requests), Some(per_ms), Some(burst)) => Some(RateSpec {
                requests: u32::try_from(requests).map_err(|_| corrupt("rate_requests"))?,
                per: Duration::from_millis(
                    u64::try_from(per_ms).map_err(|_| corrupt("rate_per_ms"))?,
                ),
                burst: u32::try_from(burst).map_err(|_| corrupt("rate_burst"))?,
            }),
            _ => return Err(corrupt("rate limit")),
        };
        Ok(ApiKeyRecord {
            scopes: list(&self.scopes, "scopes")?,
            allowed_ips: list(&self.allowed_ips, "allowed_ips")?,
            name: self.name,
            hash,
            rate_limit,
            created_at_ms: self.created_at,
            created_by: self.created_by,
            disabled_at_ms: self.disabled_at,
            last_used_at_ms: self.last_used_at,
        })
    }
}

/// An API key stored in the database (made through `POST /v1/keys`), so a
/// key made at one instance works at every instance. Only its SHA-256
/// hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Unique, also against the names in `keys.toml`.
    pub name: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// As written (`triggers:run`, `trigger:<id>`, …).
    pub scopes: Vec<String>,
    /// CIDRs or addresses; empty: anywhere.
    pub allowed_ips: Vec<String>,
    /// A per-key override of the principal rate limit.
    pub rate_limit: Option<crate::config::RateSpec>,
    pub created_at_ms: i64,
    /// The principal that made it.
    pub created_by: String,
    pub disabled_at_ms: Option<i64>,
    /// Recorded at most about once a minute per key (`record_api_key_use`).
    pub last_used_at_ms: Option<i64>,
}
