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
//! - HMAC secrets are at least 32 bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

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

/// One trusted issuer, ready to verify tokens.
pub struct Issuer {
    pub id: String,
    pub iss: String,
    audiences: Vec<String>,
    scope_claim: String,
    rate_limit: Option<RateSpec>,
    keys: Vec<IssuerKey>,
    kids_in_use: bool,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of Debug output.
        f.debug_struct("Issuer")
            .field("id", &self.id)
            .field("iss", &self.iss)
            .field("keys", &self.keys.len())
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

/// Tokens that verified, by SHA-256 of the whole token, until their `exp`.
///
/// Service clients (Zapier, CRMs) send the same token for its whole life;
/// checking its signature and claims once is enough. Only tokens that passed
/// every check are cached, the key covers every byte of the token (so a
/// modified token never hits), and an entry is dropped at the token's `exp`
/// (without the leeway). Bounded: when full, expired entries go first, then
/// everything.
#[derive(Debug, Default)]
struct VerifiedCache(std::sync::Mutex<HashMap<[u8; 32], Verified>>);

/// A verified token's principal and `exp` (Unix seconds).
type Verified = (Arc<Principal>, u64);

/// Most tokens remembered at once.
const VERIFIED_CACHE_MAX: usize = 10_000;

impl VerifiedCache {
    fn get(&self, key: &[u8; 32], now: u64) -> Option<Arc<Principal>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, exp)| now < *exp)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, key: [u8; 32], principal: Arc<Principal>, exp: u64, now: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_CACHE_MAX {
            map.retain(|_, (_, e)| now < *e);
            if map.len() >= VERIFIED_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(key, (principal, exp));
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Why a token was refused (the 401 detail; never contains the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is missing, `none` or unsupported")]
    BadHeader,
    #[error("the token has no `iss` claim")]
    NoIssuer,
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    #[error("the token's `kid` does not name a configured key")]
    UnknownKid,
    #[error("the token's algorithm is not accepted for its issuer")]
    AlgorithmNotAllowed,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's signature or claims are invalid")]
    Invalid,
    #[error("the token is missing the required `{0}` claim")]
    MissingClaim(String),
    #[error("the token's audience is not accepted")]
    WrongAudience,
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
        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let cache_key = super::sha256(token.as_bytes());
        let now = unix_now();
        if let Some(principal) = self.verified.get(&cache_key, now) {
            return Ok(principal);
        }
        let (principal, exp) = self.verify_uncached(token)?;
        let principal = Arc::new(principal);
        self.verified.put(cache_key, principal.clone(), exp, now);
        Ok(principal)
    }

    /// The full check; returns the principal and the token's `exp`.
    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::BadHeader)?;
        let iss = unverified_issuer(token)?;
        let issuer = self.by_iss.get(&iss).ok_or(TokenError::UnknownIssuer)?;
        let candidates: Vec<&IssuerKey> = issuer
            .keys
            .iter()
            .filter(|k| !issuer.kids_in_use || (header.kid.is_some() && k.kid == header.kid))
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKid);
        }
        let mut last = TokenError::AlgorithmNotAllowed;
        for key in candidates {
            if !key.validation.algorithms.contains(&header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &key.validation)
            {
                Ok(data) => {
                    // Validated as a number by jsonwebtoken; rounded down.
                    let exp = data
                        .claims
                        .get("exp")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0) as u64;
                    return issuer.principal(&data.claims).map(|p| (p, exp));
                }
                Err(e) => last = classify(e.kind()),
            }
        }
        Err(last)
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
        let key = issuer
            .keys
            .iter()
            .find(|k| k.encoding.is_some())
            .ok_or_else(|| format!("issuer `{issuer_id}` has no HMAC secret to sign with"))?;
        let alg = key.validation.algorithms[0];
        let mut header = Header::new(alg);
        header.kid = key.kid.clone();
        let mut jti = [0u8; 16];
        super::random_bytes(&mut jti);
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
            .ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
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
        })
    }
}

/// Reads `iss` from the unverified payload, only to pick the issuer whose
/// keys then verify everything.
fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(TokenError::NoIssuer),
    }
}

fn classify(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
            TokenError::AlgorithmNotAllowed
        }
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        _ => TokenError::Invalid,
    }
}

fn build_issuer(
    id: &str,
    cfg: &IssuerConfig,
    dir: &Path,
    file: &str,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Issuer {
    let mut problem =
        |key: &str, msg: String| problems.push(Problem::new(file, format!("{at}{key}"), msg));
    let mut algorithms = Vec::new();
    for (i, name) in cfg.algorithms.iter().enumerate() {
        match name.parse::<Algorithm>() {
            Ok(alg) => algorithms.push(alg),
            Err(_) => problem(
                &format!(".algorithms[{i}]"),
                format!(
                    "unknown algorithm `{name}` (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                ),
            ),
        }
    }
    if cfg.algorithms.is_empty() {
        problem(".algorithms", "at least one algorithm is required".into());
    }
    if cfg.leeway > MAX_LEEWAY {
        problem(".leeway", "at most 60s".into());
    }
    let audiences = cfg.audience.to_vec();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        problem(
            ".audience",
            "at least one non-empty audience is required".into(),
        );
    }
    if cfg.keys.is_empty() {
        problem(".keys", "at least one key is required".into());
    }
    if let Some(rate) = &cfg.rate_limit
        && let Err(e) = crate::limits::check_rate(rate)
    {
        problem(".rate_limit", e);
    }
    let mut keys = Vec::new();
    let mut families_with_keys = Vec::new();
    for (i, k) in cfg.keys.iter().enumerate() {
        let kat = format!(".keys[{i}]");
        let loaded = match (&k.secret, &k.public_key_file) {
            (Some(secret), None) => {
                let bytes = secret.expose_secret().as_bytes();
                if bytes.len() < MIN_SECRET_BYTES {
                    problem(
                        &format!("{kat}.secret"),
                        format!("HMAC secrets must be at least {MIN_SECRET_BYTES} bytes"),
                    );
                    None
                } else {
                    Some((
                        AlgorithmFamily::Hmac,
                        DecodingKey::from_secret(bytes),
                        Some(EncodingKey::from_secret(bytes)),
                    ))
                }
            }
            (None, Some(path)) => match load_public_key(&dir.join(path), &algorithms) {
                Ok((family, key)) => Some((family, key, None)),
                Err(e) => {
                    problem(&format!("{kat}.public_key_file"), e);
                    None
                }
            },
            _ => {
                problem(
                    &kat,
                    "set exactly one of `secret` or `public_key_file`".into(),
                );
                None
            }
        };
        let Some((family, decoding, encoding)) = loaded else {
            continue;
        };
        let algs: Vec<Algorithm> = algorithms
            .iter()
            .copied()
            .filter(|a| a.family() == family)
            .collect();
        if algs.is_empty() {
            problem(
                &kat,
                format!("none of the issuer's algorithms can use this {family:?} key"),
            );
            continue;
        }
        families_with_keys.push(family);
        let mut validation = Validation::new(algs[0]);
        validation.algorithms = algs;
        validation.leeway = cfg.leeway.as_secs().min(MAX_LEEWAY.as_secs());
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[cfg.issuer.as_str()]);
        validation.set_audience(&audiences);
        keys.push(IssuerKey {
            kid: k.kid.clone(),
            decoding,
            validation,
            encoding,
        });
    }
    if !keys.is_empty() && keys.len() == cfg.keys.len() {
        for alg in &algorithms {
            if !families_with_keys.contains(&alg.family()) {
                problem(
                    ".algorithms",
                    format!("{alg:?} is listed but no key of its family is configured"),
                );
            }
        }
    }
    Issuer {
        id: id.to_owned(),
        iss: cfg.issuer.clone(),
        audiences,
        scope_claim: cfg.scope_claim.clone(),
        rate_limit: cfg.rate_limit,
        kids_in_use: keys.iter().any(|k| k.kid.is_some()),
        keys,
    }
}

/// Loads a PEM public key, trying the families the issuer's algorithms use.
fn load_public_key(
    path: &Path,
    algorithms: &[Algorithm],
) -> Result<(AlgorithmFamily, DecodingKey), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut families: Vec<AlgorithmFamily> = algorithms
        .iter()
        .map(|a| a.family())
        .filter(|f| *f != AlgorithmFamily::Hmac)
        .collect();
    families.dedup();
    for family in families {
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
            _ => continue,
        };
        if let Ok(key) = key {
            return Ok((family, key));
        }
    }
    Err(format!(
        "{} is not a PEM public key for any of the issuer's public-key algorithms",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str) -> Arc<Principal> {
        Arc::new(Principal {
            id: Arc::from(id),
            scopes: Scopes::default(),
            rate_limit: None,
        })
    }

    #[test]
    fn cached_tokens_expire_at_exp_and_the_cache_stays_bounded() {
        let cache = VerifiedCache::default();
        cache.put([1; 32], principal("a"), 100, 50);
        assert!(cache.get(&[1; 32], 99).is_some());
        assert!(cache.get(&[1; 32], 100).is_none(), "gone at exp");
        assert!(cache.get(&[2; 32], 50).is_none());
        for i in 0..(VERIFIED_CACHE_MAX as u32 + 10) {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            cache.put(key, principal("x"), 1000, 50);
        }
        assert!(cache.0.lock().unwrap().len() <= VERIFIED_CACHE_MAX);
    }
}
