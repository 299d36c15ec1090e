//! Idempotency-Key handling (draft-ietf-httpapi-idempotency-key-header).
//!
//! Policy: keys are scoped per principal and trigger and kept for
//! `idempotency.retention`. The first answer (202 and its body) is stored in
//! the same transaction as the job; a repeat with the same body gets that
//! answer again with `Idempotent-Replayed: true` and creates nothing; a
//! repeat with a different body is 422; a repeat while the first is still in
//! flight in this process is 409. Across processes the store's unique key
//! decides: the loser replays the winner's answer. Either way, one job.
//! A key that is empty, over 255 characters or not printable ASCII is 400.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::http::HeaderMap;

use crate::crypto::sha256;

pub const HEADER: &str = "idempotency-key";

/// Why a request's Idempotency-Key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    /// Empty, too long, not printable ASCII, or sent twice (400).
    #[error("invalid Idempotency-Key: {0}")]
    BadKey(&'static str),
    /// The first request with this key is still being processed (409).
    #[error("a request with this Idempotency-Key is still in progress")]
    InFlight,
    /// The key was used with a different body (422).
    #[error("this Idempotency-Key was already used with a different request body")]
    Reused,
}
pub const MAX_KEY_LEN: usize = 255;

/// Reads and checks the `Idempotency-Key` header. The draft defines it as a
/// structured-field string (`"abc"`); the bare form (`abc`) is accepted too,
/// because most senders write it that way.
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, IdempotencyError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(IdempotencyError::BadKey(
            "the header appears more than once",
        ));
    }
    let raw = value
        .to_str()
        .map_err(|_| IdempotencyError::BadKey("must be printable ASCII"))?;
    let key = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    if key.is_empty() {
        return Err(IdempotencyError::BadKey("must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(IdempotencyError::BadKey("must be at most 255 characters"));
    }
    if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(IdempotencyError::BadKey("must be printable ASCII"));
    }
    Ok(Some(key.to_owned()))
}

/// Fingerprint of a request body (with its media type), to tell a true
/// repeat from a reused key.
pub fn request_hash(media_type: &str, body: &[u8]) -> String {
    let mut data = Vec::with_capacity(media_type.len() + 1 + body.len());
    data.extend_from_slice(media_type.as_bytes());
    data.push(0);
    data.extend_from_slice(body);
    hex::encode(sha256(&data))
}

/// Keys whose first request is still being processed in this process.
#[derive(Debug, Default)]
pub struct Inflight(Mutex<HashSet<[u8; 32]>>);

/// Holds an in-flight slot; dropping it frees the key.
pub struct InflightGuard<'a> {
    set: &'a Inflight,
    slot: [u8; 32],
}

impl Inflight {
    /// Claims `(principal, trigger, key)`, or `None` when a request with the
    /// same key is in flight.
    pub fn claim(&self, principal: &str, trigger_id: &str, key: &str) -> Option<InflightGuard<'_>> {
        let mut data = Vec::with_capacity(principal.len() + trigger_id.len() + key.len() + 2);
        for part in [principal, trigger_id, key] {
            data.extend_from_slice(part.as_bytes());
            data.push(0);
        }
        let slot = sha256(&data);
        let inserted = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot);
        inserted.then_some(InflightGuard { set: self, slot })
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_are_read_bare_or_quoted_and_bad_ones_are_refused() {
        assert_eq!(key_from(&headers(&[])).unwrap(), None);
        assert_eq!(
            key_from(&headers(&["abc-1"])).unwrap().as_deref(),
            Some("abc-1")
        );
        assert_eq!(
            key_from(&headers(&["\"abc-1\""])).unwrap().as_deref(),
            Some("abc-1")
        );
        for bad in [vec![""], vec!["\"\""], vec!["a", "b"]] {
            assert!(key_from(&headers(&bad)).is_err(), "{bad:?}");
        }
        assert!(key_from(&headers(&[&"k".repeat(256)])).is_err());
        assert!(key_from(&headers(&[&"k".repeat(255)])).is_ok());
    }

    #[test]
    fn a_claimed_key_is_busy_until_released() {
        let set = Inflight::default();
        let g = set.claim("key:a", "t", "k").unwrap();
        assert!(set.claim("key:a", "t", "k").is_none());
        assert!(set.claim("key:b", "t", "k").is_some());
        drop(g);
        assert!(set.claim("key:a", "t", "k").is_some());
    }

    #[test]
    fn the_hash_covers_media_type_and_body() {
        assert_eq!(
            request_hash("application/json", b"{}"),
            request_hash("application/json", b"{}")
        );
        assert_ne!(
            request_hash("application/json", b"{}"),
            request_hash("application/json", b"{ }")
        );
        assert_ne!(
            request_hash("application/json", b"a"),
            request_hash("application/x-www-form-urlencoded", b"a")
        );
    }
}
