//! `[auth]` in `callgate.toml` (JWT issuers) and `keys.toml` (API key
//! hashes).

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::RateSpec;
use super::duration;

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API key hashes, managed by `callgate key new` (relative to config dir).
    #[serde(default = "default_keys_file")]
    pub keys_file: String,
    /// How often the keys file is checked for changes while serving.
    #[serde(default = "default_keys_reload", with = "duration")]
    pub keys_reload_interval: Duration,
    /// How often the API keys stored in the database (`POST /v1/keys`)
    /// are read again: a key disabled at one instance stops working at
    /// every instance within it.
    #[serde(default = "default_db_keys_refresh", with = "duration")]
    pub db_keys_refresh: Duration,
    #[serde(default)]
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            keys_file: default_keys_file(),
            keys_reload_interval: default_keys_reload(),
            db_keys_refresh: default_db_keys_refresh(),
            jwt: JwtConfig::default(),
        }
    }
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default)]
    pub issuers: BTreeMap<String, IssuerConfig>,
}

/// `[auth.jwt.issuers.<id>]`: one trusted token issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Expected `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values (one must match).
    pub audience: OneOrMany,
    /// Accepted algorithms. The token header never widens this list.
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf` (at most 60 s).
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// Claim holding scopes: a space-separated string or an array.
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Per-subject rate limit for this issuer's tokens.
    pub rate_limit: Option<RateSpec>,
    /// Verification keys (several during rotation). Exactly one of `keys`,
    /// `jwks_url` or `discovery`.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// The issuer's JWKS (RFC 7517 key set) URL: keys fetched at start,
    /// cached by the answer's `Cache-Control` and refreshed in the background.
    pub jwks_url: Option<String>,
    /// Find the JWKS URL in the issuer's OpenID discovery document,
    /// `<issuer>/.well-known/openid-configuration` (its `jwks_uri`).
    #[serde(default)]
    pub discovery: bool,
    /// Allow plain `http` for the JWKS and discovery fetches.
    #[serde(default)]
    pub allow_http: bool,
    /// Allow the JWKS or discovery host to be a private, loopback or
    /// link-local address (an identity provider on the internal network).
    #[serde(default)]
    pub allow_private: bool,
    /// A PEM CA bundle trusted (beside the system's roots) for the JWKS and
    /// discovery fetches, relative to the config dir.
    pub ca_file: Option<String>,
    /// Shortest time between two fetches asked for by a token with an
    /// unknown `kid` (a flood of made-up `kid`s cannot do more).
    #[serde(default = "default_jwks_min_refresh", with = "duration")]
    pub jwks_min_refresh: Duration,
    /// Lower bound on how long a fetched key set is cached (`max-age` below
    /// it, `no-cache` and `no-store` are raised to it).
    #[serde(default = "default_jwks_cache_min", with = "duration")]
    pub jwks_cache_min: Duration,
    /// Upper bound on how long a fetched key set is cached.
    #[serde(default = "default_jwks_cache_max", with = "duration")]
    pub jwks_cache_max: Duration,
}

/// One verification key of an issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Matches the token header's `kid`. When any key of the issuer has one,
    /// tokens must name a configured `kid`.
    pub kid: Option<String>,
    /// HMAC secret (use `${ENV_VAR}`; never commit it).
    pub secret: Option<SecretString>,
    /// PEM public key (RSA, EC P-256/P-384 or Ed25519), relative to config dir.
    pub public_key_file: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `keys.toml`: API keys, hashes only.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default)]
    pub keys: Vec<ApiKeyConfig>,
}

/// One `[[keys]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Unique name; the principal is `key:<name>`.
    pub name: String,
    /// `sha256:<64 hex digits>` of the plaintext key.
    pub hash: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub created_at: Option<String>,
    /// Overrides `[limits.per_principal]` for this key.
    pub rate_limit: Option<RateSpec>,
    /// A disabled key is rejected like an unknown one.
    #[serde(default)]
    pub disabled: bool,
    /// Networks (CIDRs, or addresses) the key may be used from; empty:
    /// anywhere. Judged on the client address (trusted-proxy aware).
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

fn default_keys_file() -> String {
    "keys.toml".to_owned()
}
fn default_keys_reload() -> Duration {
    Duration::from_secs(2)
}
fn default_db_keys_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_cache_min() -> Duration {
    Duration::from_secs(60)
}
fn default_jwks_cache_max() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_scope_claim() -> String {
    "scope".to_owned()
}
