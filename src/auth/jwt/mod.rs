//! JWT bearer tokens, verified with `jsonwebtoken`.
//!
//! Policy (each point has an attack test in `tests/it/auth.rs`):
//! - the issuer is chosen by the token's `iss`, then everything else comes
//!   from that issuer's config: accepted algorithms (never from the token
//!   header), keys, audience, leeway (at most 60 s);
//! - `exp`, `iss`, `aud` and `sub` are required; `nbf` is checked when present;
//! - `alg: none`, an algorithm outside the issuer's list, an HMAC token
//!   against a public key (each key only verifies its own family), an unknown
//!   `kid`, a bad signature, an expired or not-yet-valid token: all 401;
//! - HMAC secrets are at least 32 bytes;
//! - keys come from files, or from the issuer's JWKS (`jwks`: only keys
//!   that fit the configured algorithms; a token with an unknown `kid` may
//!   wait for one refresh, at most once per `jwks_min_refresh`); a cached
//!   verification counts only while the key set that made it is in force;
//! - every refusal says what is wrong with the token (its algorithm and the
//!   issuer's accepted ones, a missing `kid`, a claim of the wrong type),
//!   never anything about the keys beyond their algorithms.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

mod build;
mod cache;
pub mod jwks;

use arc_swap::ArcSwap;
use build::build_issuer;
use cache::VerifiedCache;
pub use jwks::{JwksInstalled, JwksSource, JwksTarget};

use super::{Principal, Scopes};
use crate::config::{IssuerConfig, Problem, RateSpec};

/// Largest leeway allowed on `exp`/`nbf`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);
/// Shortest HMAC secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest token looked at (larger ones are refused before any parsing).
const MAX_TOKEN_LEN: usize = 8 * 1024;

struct IssuerKey {
    kid: Option<String>,
    decoding: DecodingKey,
    /// Only the issuer's algorithms of this key's family.
    validation: Validation,
    /// For `callgate jwt mint` (HMAC keys only).
    encoding: Option<EncodingKey>,
}

/// What jsonwebtoken checks for a key: only the issuer's algorithms of its
/// family, `exp`, `nbf`, `iss`, `aud` and `sub` required, the leeway.
fn validation(iss: &str, leeway: u64, algs: Vec<Algorithm>, audiences: &[String]) -> Validation {
    let mut validation = Validation::new(algs[0]);
    validation.algorithms = algs;
    validation.leeway = leeway;
    validation.validate_nbf = true;
    validation.validate_exp = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.set_issuer(&[iss]);
    validation.set_audience(audiences);
    validation
}

/// An issuer's keys at one moment: fixed for keys from files, replaced
/// whole when a JWKS fetch brings a different set.
#[derive(Default)]
struct KeyRing {
    keys: Vec<IssuerKey>,
    kids_in_use: bool,
    /// Bumped each time the set changes: a verified token is only taken
    /// from the cache while the set that verified it is still in force.
    generation: u64,
    /// SHA-256 of the JWKS keys taken (`None` for keys from files), to
    /// tell a fetch that changed nothing.
    fingerprint: Option<[u8; 32]>,
}

/// One trusted issuer, ready to verify tokens.
pub struct Issuer {
    pub id: String,
    pub iss: String,
    audiences: Vec<String>,
    scope_claim: String,
    rate_limit: Option<RateSpec>,
    /// Every algorithm the issuer accepts, as configured.
    algorithms: Vec<Algorithm>,
    /// Allowed skew on `exp`/`nbf`, in seconds.
    leeway: u64,
    ring: ArcSwap<KeyRing>,
    /// Where the keys come from when they are fetched (`jwks_url`, `discovery`).
    jwks: Option<JwksSource>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of Debug output.
        f.debug_struct("Issuer")
            .field("id", &self.id)
            .field("iss", &self.iss)
            .field("keys", &self.ring.load().keys.len())
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

/// All configured issuers, by `iss` value.
#[derive(Debug, Clone, Default)]
pub struct Issuers {
    by_iss: Arc<HashMap<String, Arc<Issuer>>>,
    by_id: Arc<BTreeMap<String, Arc<Issuer>>>,
    verified: Arc<VerifiedCache>,
}

/// Real time in Unix seconds: jsonwebtoken checks `exp` and `nbf` against
/// the system clock, and the cache of verified tokens must agree with it.
fn unix_now() -> u64 {
    crate::clock::system_now_ms().div_euclid(1000).max(0) as u64
}

/// Why a token was refused (the 401 detail; never contains the token nor
/// anything about the keys but their algorithms).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON (the reason says which part).
    #[error("the bearer token is neither an API key (`cg_…`) nor a well-formed JWT: {0}")]
    Malformed(&'static str),
    #[error("the bearer token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the token's header has no `alg`")]
    NoAlgorithm,
    #[error("the token is unsigned (`alg: none`); unsigned tokens are never accepted")]
    Unsigned,
    #[error(
        "the token's `alg` is not a JWS algorithm callgate supports \
         (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
    )]
    UnsupportedAlgorithm,
    #[error("the token has no `iss` claim")]
    NoIssuer,
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    /// The header's algorithm is not one of the issuer's.
    #[error("the token's algorithm {alg:?} is not accepted by this issuer (accepted: {accepted})")]
    AlgorithmNotAllowed { alg: Algorithm, accepted: String },
    #[error("the token has no `kid`; this issuer's keys are chosen by `kid`")]
    NoKid,
    #[error("the token's `kid` does not name a configured key of this issuer")]
    UnknownKid,
    /// A JWKS issuer whose key set has not been fetched yet.
    #[error("this issuer's signing keys could not be fetched yet; try again later")]
    KeysUnavailable,
    /// The issuer accepts the algorithm, but not with the key `kid` names.
    #[error(
        "the token's algorithm {alg:?} does not fit the key its `kid` names (that key takes: {accepted})"
    )]
    AlgorithmNotForKey { alg: Algorithm, accepted: String },
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is missing the required `{0}` claim")]
    MissingClaim(&'static str),
    /// A registered claim is present with the wrong JSON type.
    #[error("the token's `{claim}` claim must be {must}")]
    ClaimType {
        claim: &'static str,
        must: &'static str,
    },
    #[error("the token's audience is not accepted by this issuer")]
    WrongAudience,
    /// A failure that should not happen with a valid configuration.
    #[error("the token could not be verified")]
    Invalid,
}

/// The registered claims that are checked, and the type each must have.
const CLAIM_TYPES: [(&str, &str); 5] = [
    ("exp", "a number: seconds since the epoch"),
    ("nbf", "a number: seconds since the epoch"),
    ("iss", "a string"),
    ("aud", "a string or an array of strings"),
    ("sub", "a non-empty string"),
];

/// A required claim that is absent (or `null`) is missing; one that is
/// present did not have its type.
fn claim_error(claim: &str, claims: &Map<String, Value>) -> TokenError {
    let Some(&(claim, must)) = CLAIM_TYPES.iter().find(|(c, _)| *c == claim) else {
        return TokenError::Invalid;
    };
    match claims.get(claim) {
        None | Some(Value::Null) => TokenError::MissingClaim(claim),
        Some(_) => TokenError::ClaimType { claim, must },
    }
}

/// Algorithms as the detail lists them: `RS256, PS256`.
fn list(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Issuers {
    /// Builds the issuers, reporting problems under `file` / `auth.jwt.issuers.<id>`.
    pub fn build(
        configs: &BTreeMap<String, IssuerConfig>,
        config_dir: &Path,
        file: &str,
        problems: &mut Vec<Problem>,
    ) -> Issuers {
        let mut by_iss = HashMap::new();
        let mut by_id = BTreeMap::new();
        for (id, cfg) in configs {
            let at = format!("auth.jwt.issuers.{id}");
            let before = problems.len();
            let issuer = build_issuer(id, cfg, config_dir, file, &at, problems);
            if by_iss.contains_key(&cfg.issuer) {
                problems.push(Problem::new(
                    file,
                    format!("{at}.issuer"),
                    format!("`{}` is configured twice", cfg.issuer),
                ));
            }
            if problems.len() == before {
                let issuer = Arc::new(issuer);
                by_iss.insert(cfg.issuer.clone(), issuer.clone());
                by_id.insert(id.clone(), issuer);
            }
        }
        Issuers {
            by_iss: Arc::new(by_iss),
            by_id: Arc::new(by_id),
            verified: Arc::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_iss.is_empty()
    }

    /// Verifies `token` and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let cache_key = crate::crypto::sha256(token.as_bytes());
        let now = unix_now();
        if let Some(principal) = self.verified.get(&cache_key, now) {
            return Ok(principal);
        }
        let (principal, exp, by) = self.verify_uncached(token)?;
        let principal = Arc::new(principal);
        self.verified
            .put(cache_key, principal.clone(), exp, by, now);
        Ok(principal)
    }

    /// `verify`, and when the token names a `kid` a JWKS issuer does not
    /// have (or its keys were never fetched): one refresh of that issuer's
    /// key set, waited for (at most `jwks::REFRESH_WAIT`), then the token
    /// is checked again. Such refreshes happen at most once per the
    /// issuer's `jwks_min_refresh`; within it the token is refused at once.
    pub async fn verify_fresh(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        let first = self.verify(token);
        if !matches!(
            first,
            Err(TokenError::UnknownKid | TokenError::KeysUnavailable)
        ) {
            return first;
        }
        let issuer = unverified_parts(token)
            .ok()
            .and_then(|(_, claims)| self.by_iss.get(claims.get("iss")?.as_str()?).cloned());
        match issuer.as_ref().and_then(|i| i.jwks.as_ref()) {
            Some(jwks) if jwks.refresh_for_unknown_kid().await => self.verify(token),
            _ => first,
        }
    }

    /// The issuers whose keys come from a JWKS (for the fetcher).
    pub fn remote(&self) -> impl Iterator<Item = &Arc<Issuer>> {
        self.by_id.values().filter(|i| i.jwks.is_some())
    }

    /// The full check; returns the principal and the token's `exp`.
    ///
    /// Order: shape, header, issuer (by the unverified `iss`), the issuer's
    /// algorithms, `kid`, then signature and claims with each candidate key.
    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64, VerifiedBy), TokenError> {
        let (header, claims) = unverified_parts(token)?;
        let alg = header_algorithm(&header)?;
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => return Err(TokenError::NoIssuer),
            Some(_) => return Err(claim_error("iss", &claims)),
        };
        let issuer = self.by_iss.get(iss).ok_or(TokenError::UnknownIssuer)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed {
                alg,
                accepted: list(&issuer.algorithms),
            });
        }
        let ring = issuer.ring.load();
        if ring.keys.is_empty() {
            return Err(TokenError::KeysUnavailable);
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(TokenError::Malformed("its header's `kid` is not a string")),
        };
        let candidates: Vec<&IssuerKey> = match (ring.kids_in_use, kid) {
            (false, _) => ring.keys.iter().collect(),
            (true, None) => return Err(TokenError::NoKid),
            (true, Some(kid)) => ring
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
        };
        if candidates.is_empty() {
            return Err(TokenError::UnknownKid);
        }
        let fitting: Vec<&IssuerKey> = candidates
            .iter()
            .copied()
            .filter(|k| k.validation.algorithms.contains(&alg))
            .collect();
        if fitting.is_empty() {
            // Only with `kid`: without it every key is a candidate, and the
            // issuer's list is the union of the keys' algorithms.
            let mut accepted: Vec<Algorithm> = Vec::new();
            for a in candidates.iter().flat_map(|k| &k.validation.algorithms) {
                if !accepted.contains(a) {
                    accepted.push(*a);
                }
            }
            return Err(TokenError::AlgorithmNotForKey {
                alg,
                accepted: list(&accepted),
            });
        }
        let mut refused = None;
        for key in fitting {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &key.validation)
            {
                Ok(data) => {
                    // Validated as a number by jsonwebtoken; rounded down.
                    let exp = data
                        .claims
                        .get("exp")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0) as u64;
                    let by = (issuer.clone(), ring.generation);
                    return issuer.principal(&data.claims).map(|p| (p, exp, by));
                }
                Err(e) => {
                    let e = classify(e.kind(), &claims);
                    // A key whose signature verified has the better reason
                    // than another key's "does not verify".
                    if refused.is_none() || e != TokenError::BadSignature {
                        refused = Some(e);
                    }
                }
            }
        }
        Err(refused.unwrap_or(TokenError::Invalid))
    }

    /// Signs a token with the issuer's first HMAC key (`callgate jwt mint`).
    pub fn mint(
        &self,
        issuer_id: &str,
        sub: &str,
        scopes: &[String],
        ttl: Duration,
        now_secs: u64,
    ) -> Result<String, String> {
        let issuer = self
            .by_id
            .get(issuer_id)
            .ok_or_else(|| format!("no JWT issuer `{issuer_id}` is configured"))?;
        let ring = issuer.ring.load();
        let key = ring
            .keys
            .iter()
            .find(|k| k.encoding.is_some())
            .ok_or_else(|| format!("issuer `{issuer_id}` has no HMAC secret to sign with"))?;
        let alg = key.validation.algorithms[0];
        let mut header = Header::new(alg);
        header.kid = key.kid.clone();
        let mut jti = [0u8; 16];
        crate::crypto::random_bytes(&mut jti);
        let mut claims = serde_json::json!({
            "iss": issuer.iss,
            "aud": issuer.audiences[0],
            "sub": sub,
            "iat": now_secs,
            "nbf": now_secs,
            "exp": now_secs + ttl.as_secs(),
            "jti": hex::encode(jti),
        });
        claims[issuer.scope_claim.as_str()] = Value::String(scopes.join(" "));
        let encoding = key.encoding.as_ref().ok_or("no signing key")?;
        jsonwebtoken::encode(&header, &claims, encoding).map_err(|e| format!("signing failed: {e}"))
    }
}

impl Issuer {
    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, TokenError> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| claim_error("sub", claims))?;
        let scopes = match claims.get(&self.scope_claim) {
            Some(Value::String(s)) => Scopes::parse_lenient(s.split_whitespace()),
            Some(Value::Array(items)) => {
                Scopes::parse_lenient(items.iter().filter_map(Value::as_str))
            }
            _ => Scopes::default(),
        };
        Ok(Principal {
            id: Arc::from(format!("jwt:{}:{sub}", self.id)),
            scopes,
            rate_limit: self.rate_limit,
            allowed_ips: None,
        })
    }
}

/// The issuer and the generation of its key set that verified a token.
type VerifiedBy = (Arc<Issuer>, u64);

/// A JWT part decoded as a JSON object.
type JsonObject = Map<String, Value>;

/// The unverified header and claims, only to pick the issuer, algorithm
/// and key that then verify everything (and to say what is wrong).
fn unverified_parts(token: &str) -> Result<(JsonObject, JsonObject), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "it must be three base64url parts separated by dots",
        ));
    };
    let json = |part: &str| -> Option<JsonObject> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let header = json(header).ok_or(TokenError::Malformed(
        "its header is not a base64url-encoded JSON object",
    ))?;
    let claims = json(payload).ok_or(TokenError::Malformed(
        "its payload is not a base64url-encoded JSON object",
    ))?;
    Ok((header, claims))
}

/// The header's `alg`: present, not `none`, and one jsonwebtoken knows.
fn header_algorithm(header: &Map<String, Value>) -> Result<Algorithm, TokenError> {
    match header.get("alg") {
        None | Some(Value::Null) => Err(TokenError::NoAlgorithm),
        Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => Err(TokenError::Unsigned),
        Some(Value::String(alg)) => alg
            .parse::<Algorithm>()
            .map_err(|_| TokenError::UnsupportedAlgorithm),
        Some(_) => Err(TokenError::UnsupportedAlgorithm),
    }
}

/// jsonwebtoken's refusal, in terms of the token (`claims` are its
/// unverified claims, to tell a missing claim from one of the wrong type).
fn classify(kind: &ErrorKind, claims: &Map<String, Value>) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::UnknownIssuer,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
            claim_error(c, claims)
        }
        ErrorKind::Base64(_) => TokenError::Malformed("a part is not unpadded base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            TokenError::Malformed("its header is not a valid JWS header")
        }
        _ => TokenError::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str) -> Arc<Principal> {
        Arc::new(Principal {
            id: Arc::from(id),
            scopes: Scopes::default(),
            rate_limit: None,
            allowed_ips: None,
        })
    }

    fn issuer() -> Arc<Issuer> {
        Arc::new(Issuer {
            id: "t".into(),
            iss: "https://t.test/".into(),
            audiences: vec!["a".into()],
            scope_claim: "scope".into(),
            rate_limit: None,
            algorithms: vec![Algorithm::RS256],
            leeway: 0,
            ring: ArcSwap::from_pointee(KeyRing::default()),
            jwks: None,
        })
    }

    #[test]
    fn cached_tokens_expire_at_exp_and_the_cache_stays_bounded() {
        let cache = VerifiedCache::default();
        let by = || (issuer(), 0);
        cache.put([1; 32], principal("a"), 100, by(), 50);
        assert!(cache.get(&[1; 32], 99).is_some());
        assert!(cache.get(&[1; 32], 100).is_none(), "gone at exp");
        assert!(cache.get(&[2; 32], 50).is_none());
        for i in 0..(cache::VERIFIED_CACHE_MAX as u32 + 10) {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            cache.put(key, principal("x"), 1000, by(), 50);
        }
        assert!(cache.len() <= cache::VERIFIED_CACHE_MAX);
    }

    #[test]
    fn cached_tokens_stop_counting_when_their_issuers_keys_change() {
        let cache = VerifiedCache::default();
        let issuer = issuer();
        cache.put([1; 32], principal("a"), 100, (issuer.clone(), 0), 50);
        assert!(cache.get(&[1; 32], 60).is_some());
        issuer.ring.store(Arc::new(KeyRing {
            generation: 1,
            ..KeyRing::default()
        }));
        assert!(cache.get(&[1; 32], 60).is_none(), "a new key set");
    }
}
