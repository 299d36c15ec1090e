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

    mod props {
        //! The body fingerprint: a function of exactly (media type, bytes).

        use proptest::prelude::*;

        use super::*;

        /// Media types as a header carries them: visible ASCII and spaces.
        fn media_type() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::char::range(' ', '~'), 1..40).prop_map(String::from_iter)
        }

        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(any::<u8>(), 0..256)
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                // Found cases become named unit tests; no files beside the sources.
                failure_persistence: None,
                ..ProptestConfig::with_cases(256)
            })]

            #[test]
            fn the_same_request_always_has_the_same_hash(mt in media_type(), b in body()) {
                prop_assert_eq!(request_hash(&mt, &b), request_hash(&mt.clone(), &b.clone()));
                prop_assert_eq!(request_hash(&mt, &b).len(), 64);
            }

            #[test]
            fn any_change_to_the_body_changes_the_hash(
                mt in media_type(),
                b in body(),
                at in any::<prop::sample::Index>(),
                flip in 1..=255u8,
                extra in prop::collection::vec(any::<u8>(), 1..8),
            ) {
                let h = request_hash(&mt, &b);
                if !b.is_empty() {
                    let mut changed = b.clone();
                    changed[at.index(b.len())] ^= flip;
                    prop_assert_ne!(&h, &request_hash(&mt, &changed));
                    prop_assert_ne!(&h, &request_hash(&mt, &b[..b.len() - 1]));
                    let i = at.index(b.len());
                    let mut inserted = b.clone();
                    inserted.splice(i..i, extra.iter().copied());
                    prop_assert_ne!(&h, &request_hash(&mt, &inserted));
                }
                let appended = [b.as_slice(), &extra].concat();
                prop_assert_ne!(&h, &request_hash(&mt, &appended));
            }

            #[test]
            fn the_media_type_is_part_of_the_hash(a in media_type(), b in media_type(), body in body()) {
                prop_assume!(a != b);
                prop_assert_ne!(request_hash(&a, &body), request_hash(&b, &body));
            }

            #[test]
            fn bytes_cannot_move_between_media_type_and_body(
                mt in media_type(),
                moved in media_type(),
                rest in body(),
            ) {
                // `text/plain` + `xyz` must differ from `text/plainx` + `yz`.
                let body = [moved.as_bytes(), &rest].concat();
                let longer = format!("{mt}{moved}");
                prop_assert_ne!(request_hash(&mt, &body), request_hash(&longer, &rest));
            }
        }
    }
}
