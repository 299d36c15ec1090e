//! Fetching the key sets of JWKS issuers (`jwks_url`, `discovery`) and
//! keeping them fresh; the rules of what is taken are `auth::jwt::jwks`'s.
//!
//! Policy: one HTTPS client per issuer with the SSRF guard of outbound
//! requests (`webhooks::ssrf`: checked at the addresses actually
//! connected to, redirects followed at most 5 hops and each checked;
//! `allow_private` trusts the configured host only), the issuer's
//! `ca_file` beside the system's roots, no proxy from the environment, a
//! 5 s budget per fetch (discovery document and key set together), at
//! most 512 KiB per answer. A discovery document must name the configured
//! `issuer` exactly (OpenID Connect Discovery §4.3). A key set is kept for
//! its `Cache-Control: max-age` within the issuer's bounds, then fetched
//! again; a failure keeps the last good set and is retried after
//! `jwks_min_refresh`, doubling up to 5 minutes; a token with an unknown
//! `kid` can ask for a fetch sooner (at most once per
//! `jwks_min_refresh`). Metrics: `callgate_jwks_fetch_total{issuer,outcome}`
//! (`ok`, `error`, `refused` by the SSRF guard), `callgate_jwks_keys{issuer}`,
//! `callgate_jwks_last_success_timestamp_seconds{issuer}`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::ssrf::{self, GuardedResolver};
use crate::auth::jwt::Issuer;
use crate::auth::jwt::jwks::{FETCH_TIMEOUT, JwksSource, JwksTarget, MAX_DOCUMENT_BYTES};

/// One issuer's fetcher.
pub struct JwksFetcher {
    issuer: Arc<Issuer>,
    client: reqwest::Client,
}

/// A fetched key set and how long to keep it.
#[derive(Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub ttl: Duration,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub message: String,
    /// The SSRF guard refused the target.
    pub refused: bool,
}

impl FetchError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            refused: false,
        }
    }
}

impl JwksFetcher {
    /// The fetcher of a JWKS issuer (`None` for an issuer with key files).
    pub fn build(issuer: Arc<Issuer>) -> anyhow::Result<Option<Self>> {
        let Some(source) = issuer.jwks() else {
            return Ok(None);
        };
        let host = source.url().host_str().unwrap_or_default().to_owned();
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(ssrf::redirect_policy(
                true,
                host.clone(),
                source.allow_private,
                source.allow_http,
                false,
            ))
            .dns_resolver(GuardedResolver {
                trusted_host: source.allow_private.then_some(host),
            })
            .tls_certs_merge(source.ca_certificates.iter().cloned())
            // A proxy from the environment would be connected to instead
            // of the checked address.
            .no_proxy()
            .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Self { issuer, client }))
    }

    fn source(&self) -> Option<&JwksSource> {
        self.issuer.jwks()
    }

    /// One fetch: the discovery document when configured, then the key set.
    pub async fn fetch(&self) -> Result<Fetched, FetchError> {
        let source = self
            .source()
            .ok_or_else(|| FetchError::new("not a JWKS issuer"))?;
        let work = async {
            let jwks_url = match &source.target {
                JwksTarget::Url(url) => url.clone(),
                JwksTarget::Discovery(url) => self.discover(source, url).await?,
            };
            let (body, headers) = self.get(source, &jwks_url).await?;
            let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
            let ttl = source.ttl(
                header(reqwest::header::CACHE_CONTROL),
                header(reqwest::header::AGE),
            );
            Ok(Fetched { body, ttl })
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::new(format!(
                    "no answer within {} s",
                    FETCH_TIMEOUT.as_secs()
                )))
            })
    }

    /// The `jwks_uri` of the discovery document at `url`.
    async fn discover(&self, source: &JwksSource, url: &Url) -> Result<Url, FetchError> {
        let (body, _) = self.get(source, url).await?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| FetchError::new(format!("the discovery document is not JSON: {e}")))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.iss.as_str()) {
            return Err(FetchError::new(format!(
                "the discovery document's `issuer` is not `{}`",
                self.issuer.iss
            )));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| FetchError::new("the discovery document has no `jwks_uri`"))?;
        let jwks_url = Url::parse(jwks_uri)
            .map_err(|e| FetchError::new(format!("`jwks_uri` `{jwks_uri}`: {e}")))?;
        // `allow_private` covers the discovery host only.
        let same_host = jwks_url.host_str() == url.host_str();
        ssrf::check_url(
            &jwks_url,
            source.allow_private && same_host,
            source.allow_http,
        )
        .map_err(|e| FetchError {
            message: format!("`jwks_uri` `{jwks_uri}`: {e}"),
            refused: true,
        })?;
        Ok(jwks_url)
    }

    /// A GET of `url`: its body (at most `MAX_DOCUMENT_BYTES`) and headers.
    async fn get(
        &self,
        source: &JwksSource,
        url: &Url,
    ) -> Result<(Vec<u8>, reqwest::header::HeaderMap), FetchError> {
        ssrf::check_url(url, source.allow_private, source.allow_http).map_err(|e| FetchError {
            message: format!("`{url}`: {e}"),
            refused: true,
        })?;
        let mut resp = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| FetchError {
                refused: ssrf::refusal(&e).is_some(),
                message: format!("`{url}`: {}", describe(&e)),
            })?;
        if !resp.status().is_success() {
            return Err(FetchError::new(format!(
                "`{url}` answered {}",
                resp.status()
            )));
        }
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| FetchError::new(format!("`{url}`: {}", describe(&e))))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(FetchError::new(format!(
                    "`{url}` answered more than {MAX_DOCUMENT_BYTES} bytes"
                )));
            }
        }
        Ok((body, headers))
    }

    /// Fetches now, then whenever the set's time is up, a token asks, or
    /// (after a failure) the retry is due, until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        let Some(source) = self.source() else {
            return;
        };
        let issuer = self.issuer.id.clone();
        let mut failures = 0u32;
        let mut next = tokio::time::Instant::now();
        loop {
            let asked = tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(next) => false,
                _ = source.wanted() => true,
            };
            // A scheduled fetch that started just as a token asked already
            // serves it: no second fetch.
            if asked && !source.asked() {
                continue;
            }
            let n = source.fetch_started();
            let result = match self.fetch().await {
                Ok(f) => self
                    .issuer
                    .install_jwks(&f.body)
                    .map(|i| (i, f.ttl))
                    .map_err(FetchError::new),
                Err(e) => Err(e),
            };
            let outcome = match result {
                Ok((installed, ttl)) => {
                    failures = 0;
                    next = tokio::time::Instant::now() + ttl;
                    if installed.changed {
                        tracing::info!(
                            issuer,
                            keys = installed.keys,
                            ignored = installed.ignored,
                            refresh_in_s = ttl.as_secs(),
                            "JWKS key set in force"
                        );
                    } else {
                        tracing::debug!(
                            issuer,
                            keys = installed.keys,
                            refresh_in_s = ttl.as_secs(),
                            "JWKS key set unchanged"
                        );
                    }
                    // Real time: Prometheus reads it against its own `time()`.
                    let now_s = crate::clock::system_now_ms() as f64 / 1000.0;
                    metrics::gauge!("callgate_jwks_last_success_timestamp_seconds", "issuer" => issuer.clone()).set(now_s);
                    "ok"
                }
                Err(e) => {
                    failures += 1;
                    let retry = source.retry_after(failures);
                    next = tokio::time::Instant::now() + retry;
                    tracing::warn!(issuer, error = %e, keys_in_force = self.issuer.key_count(), retry_in_s = retry.as_secs(), "JWKS fetch failed; the keys in force stay");
                    if e.refused { "refused" } else { "error" }
                }
            };
            metrics::counter!("callgate_jwks_fetch_total", "issuer" => issuer.clone(), "outcome" => outcome).increment(1);
            metrics::gauge!("callgate_jwks_keys", "issuer" => issuer.clone())
                .set(self.issuer.key_count() as f64);
            source.fetch_ended(n);
        }
    }
}

/// A reqwest error in one line, with its causes (the guard's refusal,
/// DNS, connection refused, TLS …).
fn describe(e: &reqwest::Error) -> String {
    if let Some(refused) = ssrf::refusal(e) {
        return refused.to_string();
    }
    super::client::with_causes(e.to_string(), e)
}
