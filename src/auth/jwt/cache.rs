//! Tokens that verified, by SHA-256 of the whole token, until their `exp`,
//! and only while the key set that verified them is in force.
//!
//! Service clients (Zapier, CRMs) send the same token for its whole life;
//! checking its signature and claims once is enough. Only tokens that passed
//! every check are cached, the key covers every byte of the token (so a
//! modified token never hits), an entry is dropped at the token's `exp`
//! (without the leeway), and an entry stops counting as soon as its
//! issuer's key set changes (a JWKS rotation): the token is then verified
//! again against the new set, so a token whose key was rotated out is
//! refused at once. Bounded: when full, expired entries go first, then
//! everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Issuer;
use crate::auth::Principal;

/// Most tokens remembered at once.
pub(super) const VERIFIED_CACHE_MAX: usize = 10_000;

/// A verified token: its principal, `exp` (Unix seconds), its issuer and
/// the generation of the issuer's key set that verified it.
struct Verified {
    principal: Arc<Principal>,
    exp: u64,
    issuer: Arc<Issuer>,
    generation: u64,
}

#[derive(Debug, Default)]
pub(super) struct VerifiedCache(Mutex<HashMap<[u8; 32], Verified>>);

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("principal", &self.principal.id)
            .field("exp", &self.exp)
            .finish()
    }
}

impl VerifiedCache {
    pub(super) fn get(&self, key: &[u8; 32], now: u64) -> Option<Arc<Principal>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|v| now < v.exp && v.issuer.ring.load().generation == v.generation)
            .map(|v| v.principal.clone())
    }

    pub(super) fn put(
        &self,
        key: [u8; 32],
        principal: Arc<Principal>,
        exp: u64,
        (issuer, generation): (Arc<Issuer>, u64),
        now: u64,
    ) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_CACHE_MAX {
            map.retain(|_, v| now < v.exp);
            if map.len() >= VERIFIED_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(
            key,
            Verified {
                principal,
                exp,
                issuer,
                generation,
            },
        );
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
