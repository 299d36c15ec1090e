//! Building an issuer from its configuration: algorithms, audience,
//! leeway, keys (HMAC secrets of at least 32 bytes, or PEM public keys of
//! the algorithms' families) or where to fetch them (`jwks_url`,
//! `discovery`: an https URL the SSRF rules accept, public-key algorithms
//! only), each problem reported with its key.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use secrecy::ExposeSecret;

use arc_swap::ArcSwap;

use super::jwks::{JwksSource, JwksTarget};
use super::{Issuer, IssuerKey, KeyRing, MAX_LEEWAY, MIN_SECRET_BYTES, validation};
use crate::config::{IssuerConfig, JwtKeyConfig, Problem};
use crate::outbound::ssrf;

/// Shortest and longest `jwks_min_refresh`.
const MIN_REFRESH_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// Compiles one `[auth.jwt.issuers.<id>]`; problems are reported under
/// `file` and the issuer's key `at`.
pub(super) fn build_issuer(
    id: &str,
    cfg: &IssuerConfig,
    dir: &Path,
    file: &str,
    at: &str,
    problems: &mut Vec<Problem>,
) -> Issuer {
    let mut problem =
        |key: &str, msg: String| problems.push(Problem::new(file, format!("{at}{key}"), msg));
    let algorithms = check_settings(cfg, &mut problem);
    let audiences = cfg.audience.to_vec();
    let leeway = cfg.leeway.as_secs().min(MAX_LEEWAY.as_secs());
    let jwks = remote_source(cfg, &algorithms, dir, &mut problem);
    let mut keys = Vec::new();
    let mut families_with_keys = Vec::new();
    for (i, k) in cfg.keys.iter().enumerate() {
        let kat = format!(".keys[{i}]");
        let Some((family, decoding, encoding)) = load_key(k, dir, &algorithms, &kat, &mut problem)
        else {
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
        keys.push(IssuerKey {
            kid: k.kid.clone(),
            decoding,
            validation: validation(&cfg.issuer, leeway, algs, &audiences),
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
        algorithms,
        leeway,
        ring: ArcSwap::from_pointee(KeyRing {
            kids_in_use: keys.iter().any(|k| k.kid.is_some()),
            keys,
            generation: 0,
            fingerprint: None,
        }),
        jwks,
    }
}

/// Where a JWKS issuer's keys come from (`None` for keys from files, or
/// when its settings have problems, which are reported).
fn remote_source(
    cfg: &IssuerConfig,
    algorithms: &[Algorithm],
    dir: &Path,
    problem: &mut impl FnMut(&str, String),
) -> Option<JwksSource> {
    let sources = [!cfg.keys.is_empty(), cfg.jwks_url.is_some(), cfg.discovery];
    match sources.iter().filter(|s| **s).count() {
        0 => problem(
            ".keys",
            "set one of `keys`, `jwks_url` or `discovery = true`".into(),
        ),
        1 => {}
        _ => problem(
            "",
            "set only one of `keys`, `jwks_url` or `discovery = true`".into(),
        ),
    }
    let remote = cfg.jwks_url.is_some() || cfg.discovery;
    if !remote {
        for (set, key) in [
            (cfg.allow_http, ".allow_http"),
            (cfg.allow_private, ".allow_private"),
            (cfg.ca_file.is_some(), ".ca_file"),
        ] {
            if set {
                problem(key, "only applies with `jwks_url` or `discovery`".into());
            }
        }
        return None;
    }
    for alg in algorithms {
        if alg.family() == AlgorithmFamily::Hmac {
            problem(
                ".algorithms",
                format!(
                    "{alg:?} cannot take its key from a JWKS (key sets publish public keys only)"
                ),
            );
        }
    }
    let (lo, hi) = MIN_REFRESH_BOUNDS;
    if cfg.jwks_min_refresh < lo || cfg.jwks_min_refresh > hi {
        problem(".jwks_min_refresh", "must be from 1s to 1h".into());
    }
    if cfg.jwks_cache_min < lo {
        problem(".jwks_cache_min", "must be at least 1s".into());
    }
    if cfg.jwks_cache_max < cfg.jwks_cache_min {
        problem(
            ".jwks_cache_max",
            "must not be shorter than `jwks_cache_min`".into(),
        );
    }
    let (key, url) = match &cfg.jwks_url {
        Some(url) => (".jwks_url", url.clone()),
        None => (
            ".discovery",
            format!(
                "{}/.well-known/openid-configuration",
                cfg.issuer.trim_end_matches('/')
            ),
        ),
    };
    let url = match url::Url::parse(&url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => u,
        Ok(_) => {
            problem(key, format!("`{url}` has no host"));
            return None;
        }
        Err(e) => {
            problem(key, format!("`{url}` is not a URL: {e}"));
            return None;
        }
    };
    if let Err(e) = ssrf::check_url(&url, cfg.allow_private, cfg.allow_http) {
        problem(key, format!("`{url}`: {e}"));
    }
    let ca = match &cfg.ca_file {
        None => Vec::new(),
        Some(file) => {
            let path = dir.join(file);
            let certs = std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
                .and_then(|pem| crate::crypto::ca_certificates(&pem));
            match certs {
                Ok(certs) => certs,
                Err(e) => {
                    problem(".ca_file", e.to_string());
                    Vec::new()
                }
            }
        }
    };
    let target = if cfg.jwks_url.is_some() {
        JwksTarget::Url(url)
    } else {
        JwksTarget::Discovery(url)
    };
    Some(JwksSource::new(target, ca, cfg))
}

/// The issuer's algorithms (parsed), after checking its settings.
fn check_settings(cfg: &IssuerConfig, problem: &mut impl FnMut(&str, String)) -> Vec<Algorithm> {
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
    if let Some(rate) = &cfg.rate_limit
        && let Err(e) = rate.check()
    {
        problem(".rate_limit", e);
    }
    algorithms
}

/// A key's family and its decoding (and, for HMAC, encoding) key.
type LoadedKey = (AlgorithmFamily, DecodingKey, Option<EncodingKey>);

/// Loads one `[[keys]]` entry (a secret, or a public key file).
fn load_key(
    k: &JwtKeyConfig,
    dir: &Path,
    algorithms: &[Algorithm],
    kat: &str,
    problem: &mut impl FnMut(&str, String),
) -> Option<LoadedKey> {
    match (&k.secret, &k.public_key_file) {
        (Some(secret), None) => {
            let bytes = secret.expose_secret().as_bytes();
            if bytes.len() < MIN_SECRET_BYTES {
                problem(
                    &format!("{kat}.secret"),
                    format!("HMAC secrets must be at least {MIN_SECRET_BYTES} bytes"),
                );
                return None;
            }
            Some((
                AlgorithmFamily::Hmac,
                DecodingKey::from_secret(bytes),
                Some(EncodingKey::from_secret(bytes)),
            ))
        }
        (None, Some(path)) => match load_public_key(&dir.join(path), algorithms) {
            Ok((family, key)) => Some((family, key, None)),
            Err(e) => {
                problem(&format!("{kat}.public_key_file"), e);
                None
            }
        },
        _ => {
            problem(
                kat,
                "set exactly one of `secret` or `public_key_file`".into(),
            );
            None
        }
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
