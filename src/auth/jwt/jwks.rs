//! Issuers whose keys come from a JWKS URL (`jwks_url`, or the `jwks_uri`
//! of the OpenID discovery document with `discovery = true`).
//!
//! This module holds the rules; the fetch itself (HTTPS through the SSRF
//! guard) is the services layer's (`webhooks::jwks`), which hands each
//! answer to `Issuer::install_jwks` and drives `JwksSource`'s counters.
//!
//! Policy:
//! - only keys that fit the issuer's configured algorithms are taken: an
//!   RSA key for RS*/PS*, an EC key for ES256 (P-256) or ES384 (P-384), an
//!   Ed25519 key for EdDSA, narrowed to the key's own `alg` when it has
//!   one; keys for encryption (`use = "enc"`, `key_ops` without `verify`),
//!   symmetric (`oct`) keys and anything else are ignored and logged once.
//!   A key set never widens what the issuer accepts;
//! - a fetch that fails, or brings no usable key, keeps the last good set;
//! - a changed set replaces the old one whole and bumps its generation, so
//!   cached verifications made with a key that left are void;
//! - a token with an unknown `kid` (or arriving before the first fetch
//!   succeeded) asks for one refresh and waits for it (at most
//!   `REFRESH_WAIT`); such refreshes start at most once per
//!   `jwks_min_refresh` (counted from the last fetch of any cause), and a
//!   token arriving within it while no refresh is under way is refused at
//!   once with 401.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use url::Url;

use super::{Issuer, IssuerKey, KeyRing, list, validation};

/// Longest a whole fetch (discovery document and key set) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a request with an unknown `kid` waits for the refresh it asked for.
pub const REFRESH_WAIT: Duration = Duration::from_secs(6);
/// Largest discovery document or key set read.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// How long a key set is kept when its answer has no `max-age` (then
/// bounded by `jwks_cache_min` and `jwks_cache_max`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Longest wait between two attempts while the provider keeps failing
/// (the first retry comes after `jwks_min_refresh`, then doubling).
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// What is fetched first.
#[derive(Debug, Clone)]
pub enum JwksTarget {
    /// `jwks_url`: the key set itself.
    Url(Url),
    /// `discovery = true`: `<issuer>/.well-known/openid-configuration`,
    /// whose `jwks_uri` is the key set.
    Discovery(Url),
}

/// Where a JWKS issuer's keys come from, how the fetches may go, and the
/// bookkeeping of refreshes asked for by unknown `kid`s.
pub struct JwksSource {
    pub target: JwksTarget,
    pub allow_http: bool,
    pub allow_private: bool,
    /// Trusted beside the system's roots (`ca_file`).
    pub ca_certificates: Vec<reqwest::Certificate>,
    pub min_refresh: Duration,
    pub cache_min: Duration,
    pub cache_max: Duration,
    wanted: Notify,
    state: Mutex<RefreshState>,
    /// The number of the last fetch that ended (fetches are numbered from 1).
    completed: watch::Sender<u64>,
    /// Ignored keys already logged (`kid` or index, and why).
    logged: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct RefreshState {
    /// Fetches started.
    started: u64,
    /// When the last fetch started, or a refresh was asked for.
    last_start: Option<Instant>,
    /// The fetch an unknown `kid` asked for, until it has ended.
    pending: Option<u64>,
}

/// What one key set brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksInstalled {
    /// Keys taken.
    pub keys: usize,
    /// Keys ignored (wrong type, curve, algorithm or use).
    pub ignored: usize,
    /// The set differs from the one in force (it replaced it).
    pub changed: bool,
}

impl JwksSource {
    pub(super) fn new(
        target: JwksTarget,
        ca_certificates: Vec<reqwest::Certificate>,
        cfg: &crate::config::IssuerConfig,
    ) -> Self {
        Self {
            target,
            allow_http: cfg.allow_http,
            allow_private: cfg.allow_private,
            ca_certificates,
            min_refresh: cfg.jwks_min_refresh,
            cache_min: cfg.jwks_cache_min,
            cache_max: cfg.jwks_cache_max,
            wanted: Notify::new(),
            state: Mutex::default(),
            completed: watch::Sender::new(0),
            logged: Mutex::default(),
        }
    }

    /// The first URL fetched (the key set, or the discovery document).
    pub fn url(&self) -> &Url {
        match &self.target {
            JwksTarget::Url(u) | JwksTarget::Discovery(u) => u,
        }
    }

    /// Resolves when a token asked for a refresh.
    pub async fn wanted(&self) {
        self.wanted.notified().await
    }

    /// Whether a refresh asked for by a token has not started yet (a
    /// fetch that began meanwhile, on schedule, may have served it).
    pub fn asked(&self) -> bool {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pending.is_some_and(|p| p > st.started)
    }

    /// Records that a fetch starts; returns its number.
    pub fn fetch_started(&self) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.started += 1;
        st.last_start = Some(Instant::now());
        st.started
    }

    /// Records that fetch `n` ended (well or not): its waiters go on.
    pub fn fetch_ended(&self, n: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.pending.is_some_and(|p| p <= n) {
            st.pending = None;
        }
        drop(st);
        self.completed.send_replace(n);
    }

    /// Waits (at most `wait`) until the first fetch has ended.
    pub async fn first_fetch(&self, wait: Duration) {
        let mut rx = self.completed.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|n| *n >= 1)).await;
    }

    /// Asks for a refresh (or joins the one asked for) and waits for it;
    /// `false` when none may start yet (within `jwks_min_refresh` of the
    /// last fetch) or it did not end within `REFRESH_WAIT`.
    pub(super) async fn refresh_for_unknown_kid(&self) -> bool {
        let target = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match st.pending {
                Some(n) => n,
                None if st
                    .last_start
                    .is_some_and(|t| t.elapsed() < self.min_refresh) =>
                {
                    return false;
                }
                None => {
                    let n = st.started + 1;
                    st.pending = Some(n);
                    st.last_start = Some(Instant::now());
                    self.wanted.notify_one();
                    n
                }
            }
        };
        let mut rx = self.completed.subscribe();
        matches!(
            tokio::time::timeout(REFRESH_WAIT, rx.wait_for(|n| *n >= target)).await,
            Ok(Ok(_))
        )
    }

    /// How long a key set is kept: the answer's `max-age` less its `Age`
    /// (`no-store`/`no-cache`: nothing; no `max-age`: `DEFAULT_TTL`),
    /// within `jwks_cache_min` and `jwks_cache_max`.
    pub fn ttl(&self, cache_control: Option<&str>, age: Option<&str>) -> Duration {
        let mut max_age = None;
        let mut no_cache = false;
        for directive in cache_control.unwrap_or_default().split(',') {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age") {
                max_age = value.and_then(|v| v.parse::<u64>().ok());
            }
        }
        let age = age.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0);
        let ttl = match (no_cache, max_age) {
            (true, _) => Duration::ZERO,
            (false, Some(secs)) => Duration::from_secs(secs.saturating_sub(age)),
            (false, None) => DEFAULT_TTL,
        };
        ttl.clamp(self.cache_min, self.cache_max.max(self.cache_min))
    }

    /// The wait before the next attempt after `failures` failed ones in a
    /// row: `jwks_min_refresh`, doubling, at most `MAX_RETRY` (or
    /// `jwks_min_refresh` when that is longer).
    pub fn retry_after(&self, failures: u32) -> Duration {
        let doubled = self
            .min_refresh
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(MAX_RETRY.max(self.min_refresh))
    }

    /// Logs an ignored key the first time it is seen.
    fn log_ignored(&self, issuer: &str, key: String, why: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.insert(format!("{key}: {why}")) {
            tracing::info!(issuer, key, why, "JWKS key ignored");
        }
    }
}

impl Issuer {
    /// Where the keys come from, for a JWKS issuer.
    pub fn jwks(&self) -> Option<&JwksSource> {
        self.jwks.as_ref()
    }

    /// Keys in force.
    pub fn key_count(&self) -> usize {
        self.ring.load().keys.len()
    }

    /// Takes a fetched key set (the JWKS document's bytes): the keys that
    /// fit the issuer's algorithms replace the set in force when they
    /// differ from it. An error (not a key set, no usable key) leaves the
    /// set in force as it is.
    pub fn install_jwks(&self, body: &[u8]) -> Result<JwksInstalled, String> {
        let source = self.jwks.as_ref().ok_or("not a JWKS issuer")?;
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| format!("the key set is not JSON: {e}"))?;
        let entries = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the key set has no `keys` array")?;
        let mut keys = Vec::new();
        let mut taken = Vec::new();
        let mut ignored = 0;
        for (i, raw) in entries.iter().enumerate() {
            let kid = raw.get("kid").and_then(Value::as_str).map(str::to_owned);
            match usable(raw, &self.algorithms) {
                Ok((algs, decoding)) => {
                    taken.push(serde_json::json!([raw, list(&algs)]));
                    keys.push(IssuerKey {
                        kid,
                        decoding,
                        validation: validation(&self.iss, self.leeway, algs, &self.audiences),
                        encoding: None,
                    });
                }
                Err(why) => {
                    ignored += 1;
                    let key = kid.map_or_else(|| format!("keys[{i}]"), |k| format!("kid {k}"));
                    source.log_ignored(&self.id, key, &why);
                }
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "the key set has no key usable with the issuer's algorithms ({}); {} ignored",
                list(&self.algorithms),
                ignored
            ));
        }
        let fingerprint = crate::crypto::sha256(Value::Array(taken).to_string().as_bytes());
        let current = self.ring.load();
        let count = keys.len();
        if current.fingerprint == Some(fingerprint) {
            return Ok(JwksInstalled {
                keys: count,
                ignored,
                changed: false,
            });
        }
        self.ring.store(Arc::new(KeyRing {
            kids_in_use: keys.iter().any(|k| k.kid.is_some()),
            keys,
            generation: current.generation + 1,
            fingerprint: Some(fingerprint),
        }));
        Ok(JwksInstalled {
            keys: count,
            ignored,
            changed: true,
        })
    }
}

/// The issuer's algorithms a JWK may verify, and its decoding key; or why
/// it is ignored.
fn usable(raw: &Value, issuer: &[Algorithm]) -> Result<(Vec<Algorithm>, DecodingKey), String> {
    use Algorithm::*;
    let jwk: Jwk = serde_json::from_value(raw.clone())
        .map_err(|_| "not a JWK callgate can read".to_owned())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("its `use` is `enc` (encryption)".into());
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("its `key_ops` do not include `verify`".into());
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => return Err("an EC key on a curve callgate does not verify".into()),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![EdDSA],
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (`oct`) key: secrets are never taken from a key set".into());
        }
        _ => return Err("a key type callgate does not verify".into()),
    };
    let mut algs: Vec<Algorithm> = issuer
        .iter()
        .copied()
        .filter(|a| family.contains(a))
        .collect();
    if let Some(alg) = jwk.common.key_algorithm {
        let alg = Algorithm::try_from(alg)
            .map_err(|_| format!("its `alg` {alg} is not a JWS signature algorithm"))?;
        algs.retain(|a| *a == alg);
    }
    if algs.is_empty() {
        return Err(format!(
            "it fits none of the issuer's algorithms ({})",
            list(issuer)
        ));
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unreadable: {e}"))?;
    Ok((algs, decoding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(min: u64, max: u64) -> JwksSource {
        let cfg: crate::config::IssuerConfig = serde_json::from_value(json!({
            "issuer": "https://idp.test/",
            "audience": "a",
            "algorithms": ["RS256"],
            "jwks_url": "https://idp.test/jwks",
            "jwks_cache_min": format!("{min}s"),
            "jwks_cache_max": format!("{max}s"),
            "jwks_min_refresh": "10s",
        }))
        .unwrap();
        let url = Url::parse("https://idp.test/jwks").unwrap();
        JwksSource::new(JwksTarget::Url(url), Vec::new(), &cfg)
    }

    #[test]
    fn cache_headers_set_the_ttl_within_bounds() {
        let s = source(60, 86_400);
        let secs = |cc: Option<&str>, age: Option<&str>| s.ttl(cc, age).as_secs();
        assert_eq!(secs(Some("public, max-age=600"), None), 600);
        assert_eq!(secs(Some("max-age=\"600\""), Some("100")), 500);
        assert_eq!(
            secs(Some("max-age=15, stale-while-revalidate=15"), None),
            60
        );
        assert_eq!(secs(Some("max-age=9999999"), None), 86_400);
        assert_eq!(secs(Some("no-cache"), None), 60);
        assert_eq!(secs(Some("no-store, max-age=600"), None), 60);
        assert_eq!(secs(None, None), 3600);
        assert_eq!(secs(Some("max-age=junk"), None), 3600);
    }

    #[test]
    fn retries_double_from_the_min_refresh_up_to_five_minutes() {
        let s = source(60, 86_400);
        let secs: Vec<u64> = (1..=7).map(|f| s.retry_after(f).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn only_signature_keys_of_the_issuers_algorithms_are_usable() {
        let rsa = json!({"kty": "RSA", "n": "sXch", "e": "AQAB"});
        let ec = json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"});
        let ec384 = json!({"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"});
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"});
        let algs = |raw: &Value, issuer: &[Algorithm]| usable(raw, issuer).map(|(a, _)| a);
        use Algorithm::*;
        assert_eq!(algs(&rsa, &[RS256, ES256]), Ok(vec![RS256]));
        assert_eq!(algs(&rsa, &[PS256, RS256]), Ok(vec![PS256, RS256]));
        assert!(algs(&rsa, &[ES256]).is_err());
        assert_eq!(algs(&ec, &[RS256, ES256]), Ok(vec![ES256]));
        assert!(algs(&ec, &[ES384]).is_err(), "the curve decides");
        assert_eq!(algs(&ec384, &[ES384]), Ok(vec![ES384]));
        assert!(algs(&oct, &[HS256]).is_err(), "never a secret");
        assert_eq!(algs(&ed, &[EdDSA]), Ok(vec![EdDSA]));
        let mut narrowed = rsa.clone();
        narrowed["alg"] = json!("PS256");
        assert_eq!(algs(&narrowed, &[RS256, PS256]), Ok(vec![PS256]));
        assert!(algs(&narrowed, &[RS256]).is_err());
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        assert!(algs(&enc, &[RS256]).is_err());
        let mut oaep = rsa.clone();
        oaep["alg"] = json!("RSA-OAEP");
        assert!(algs(&oaep, &[RS256]).is_err());
        let mut ops = rsa.clone();
        ops["key_ops"] = json!(["encrypt"]);
        assert!(algs(&ops, &[RS256]).is_err());
        assert!(algs(&json!({"kty": "XYZ"}), &[RS256]).is_err());
    }
}
