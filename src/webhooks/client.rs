//! One HTTP client per endpoint (SSRF guard, redirect policy, timeout, the
//! endpoint's private CAs beside the system's roots), its
//! concurrency permits and circuit breaker, and one request/response
//! exchange with the log record it produces.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::breaker::Breaker;
use super::ssrf::{self, GuardedResolver};
use crate::config::outbound::EndpointAuth;
use crate::outbound::Endpoint;

/// Most response bytes kept in the delivery log.
pub const LOG_EXCERPT: usize = 4096;
/// Most response bytes a mid-call action reads.
pub const ACTION_BODY_LIMIT: usize = 256 * 1024;

/// An endpoint's client, permits and breaker.
pub struct EndpointClient {
    pub endpoint: Arc<Endpoint>,
    client: reqwest::Client,
    /// Requests in flight to this endpoint at once.
    pub permits: Arc<Semaphore>,
    pub breaker: Mutex<Breaker>,
}

impl EndpointClient {
    pub fn build(endpoint: Arc<Endpoint>) -> anyhow::Result<Self> {
        let host = endpoint.url.host_str().unwrap_or_default().to_owned();
        let own_host = endpoint.allow_private.then(|| host.clone());
        let client = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout.min(Duration::from_secs(10)))
            .redirect(ssrf::redirect_policy(
                endpoint.follow_redirects,
                host,
                endpoint.allow_private,
                endpoint.allow_http,
                endpoint.auth.is_some() || !endpoint.secret_headers.is_empty(),
            ))
            .dns_resolver(GuardedResolver {
                trusted_host: own_host,
            })
            // A proxy from the environment would be connected to instead
            // of the checked address.
            .no_proxy()
            // `ca_file`: a private CA beside the system's roots, never
            // instead of them.
            .tls_certs_merge(endpoint.ca_certificates.iter().cloned())
            .user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(endpoint.concurrency)),
            breaker: Mutex::new(Breaker::new(endpoint.breaker.clone())),
            endpoint,
            client,
        })
    }

    /// Sends one request. Never panics, never hangs past `deadline`.
    pub async fn exchange(
        &self,
        req: Outgoing<'_>,
        deadline: Duration,
        body_limit: usize,
    ) -> Exchange {
        let started = Instant::now();
        let mut headers = Headers::default();
        if let Err(e) = self.put_headers(&req, &mut headers) {
            return Exchange::error(started, Value::Object(headers.shown), e, false);
        }
        let Headers { sent, shown } = headers;
        let logged = Value::Object(shown);
        if let Err(e) = ssrf::check_url(
            req.url,
            self.endpoint.allow_private,
            self.endpoint.allow_http,
        ) {
            return Exchange::error(started, logged, e.to_string(), true);
        }
        let mut builder = self
            .client
            .request(req.method.clone(), req.url.clone())
            .headers(sent)
            .timeout(deadline);
        if let Some(b) = req.body {
            builder = builder.body(b.to_owned());
        }
        let until = tokio::time::Instant::now() + deadline;
        let resp = match tokio::time::timeout_at(until, builder.send()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let refused = ssrf::refusal(&e).is_some() || ssrf::redirect_refusal(&e);
                return Exchange::error(started, logged, describe(&e), refused);
            }
            Err(_) => {
                let msg = format!("no answer within {} ms", deadline.as_millis());
                return Exchange::error(started, logged, msg, false);
            }
        };
        // The status is in: from here on a stalled or broken body shortens
        // the excerpt; it does not turn a 2xx into a failure.
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, req.now_ms));
        let (body, body_complete) = read_body(resp, until, body_limit).await;
        Exchange {
            status: Some(status),
            body,
            body_complete,
            retry_after,
            latency: started.elapsed(),
            error: None,
            refused: false,
            request_headers: logged,
        }
    }

    /// The request's headers: content type, the template headers, the
    /// endpoint's secret headers and credential, and the Standard Webhooks
    /// signature when the endpoint has a secret.
    fn put_headers(&self, req: &Outgoing<'_>, headers: &mut Headers) -> Result<(), String> {
        if req.body.is_some() {
            headers.put("content-type", "application/json", false);
        }
        for (k, v) in req.headers {
            headers.put(k, v, false);
        }
        for (k, v) in &self.endpoint.secret_headers {
            headers.put(k, v.expose_secret(), true);
        }
        match &self.endpoint.auth {
            Some(EndpointAuth::Bearer { token }) => headers.put(
                "authorization",
                &format!("Bearer {}", token.expose_secret()),
                true,
            ),
            Some(EndpointAuth::Basic { username, password }) => {
                use base64::Engine;
                let raw = format!("{username}:{}", password.expose_secret());
                let enc = base64::engine::general_purpose::STANDARD.encode(raw);
                headers.put("authorization", &format!("Basic {enc}"), true)
            }
            Some(EndpointAuth::Header { name, value }) => {
                headers.put(name, value.expose_secret(), true)
            }
            None => {}
        }
        if let (Some(secret), Some(msg_id)) = (&self.endpoint.signing_secret, req.msg_id) {
            let ts = req.now_ms.div_euclid(1000);
            let sig = sign(
                secret.expose_secret(),
                msg_id,
                ts,
                req.body.unwrap_or_default(),
            )
            .map_err(|e| format!("signing: {e}"))?;
            headers.put("webhook-id", msg_id, false);
            headers.put("webhook-timestamp", &ts.to_string(), false);
            headers.put("webhook-signature", &sig, false);
        }
        Ok(())
    }
}

/// One request to send.
pub struct Outgoing<'a> {
    pub method: &'a reqwest::Method,
    pub url: &'a url::Url,
    /// Rendered, non-secret headers.
    pub headers: &'a [(String, String)],
    pub body: Option<&'a str>,
    /// Standard Webhooks `webhook-id` (signed when the endpoint has a secret).
    pub msg_id: Option<&'a str>,
    /// When it is sent (Unix ms, the application clock): the signed
    /// `webhook-timestamp`, and what an HTTP-date `Retry-After` is read
    /// against.
    pub now_ms: i64,
}

/// What came back (or why nothing did).
#[derive(Debug)]
pub struct Exchange {
    pub status: Option<u16>,
    pub body: Vec<u8>,
    /// The whole body was read (not cut by the limit, the deadline or a
    /// broken connection).
    pub body_complete: bool,
    pub retry_after: Option<Duration>,
    pub latency: Duration,
    pub error: Option<String>,
    /// The SSRF guard refused the target.
    pub refused: bool,
    pub request_headers: Value,
}

impl Exchange {
    fn error(started: Instant, headers: Value, error: String, refused: bool) -> Self {
        Self {
            status: None,
            body: Vec::new(),
            body_complete: false,
            retry_after: None,
            latency: started.elapsed(),
            error: Some(error),
            refused,
            request_headers: headers,
        }
    }

    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// Worth trying again: no answer, 408, 429 or 5xx.
    pub fn is_retryable(&self) -> bool {
        match self.status {
            None => !self.refused && self.error.is_some(),
            Some(s) => s == 408 || s == 429 || s >= 500,
        }
    }

    /// At most `LOG_EXCERPT` bytes of the body, as text.
    pub fn excerpt(&self) -> Option<String> {
        self.status?;
        let mut end = self.body.len().min(LOG_EXCERPT);
        while end > 0 && std::str::from_utf8(&self.body[..end]).is_err() {
            end -= 1;
        }
        Some(String::from_utf8_lossy(&self.body[..end]).into_owned())
    }
}

/// The headers sent, and what the delivery log shows of them (secrets
/// redacted).
#[derive(Default)]
struct Headers {
    sent: reqwest::header::HeaderMap,
    shown: Map<String, Value>,
}

impl Headers {
    /// Adds a header (a later one of the same name replaces it); names or
    /// values that are not valid HTTP are left out.
    fn put(&mut self, name: &str, value: &str, secret: bool) {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            let shown = if secret || is_secret_header(name) {
                "[redacted]"
            } else {
                value
            };
            self.shown
                .insert(n.as_str().to_owned(), Value::String(shown.to_owned()));
            self.sent.insert(n, v);
        }
    }
}

/// Up to `limit` bytes of the body, until `until`; whether it was whole.
async fn read_body(
    mut resp: reqwest::Response,
    until: tokio::time::Instant,
    limit: usize,
) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    let mut complete = true;
    while body.len() < limit {
        match tokio::time::timeout_at(until, resp.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            Ok(Ok(None)) => break,
            Ok(Err(_)) | Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if body.len() > limit {
        body.truncate(limit);
        complete = false;
    }
    (body, complete)
}

/// The Standard Webhooks `webhook-signature` value (`v1,<base64>`) for a
/// message, with the specification's own crate.
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp_s: i64,
    body: &str,
) -> Result<String, standardwebhooks::WebhookError> {
    standardwebhooks::Webhook::new(secret)?.sign(msg_id, timestamp_s, body.as_bytes())
}

/// Header names whose values never go into the log.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "x-api-key"
    ) || ["token", "secret", "password", "api-key", "apikey"]
        .iter()
        .any(|w| n.contains(w))
}

/// `Retry-After`: delay-seconds or an HTTP date (read against `now_ms`);
/// capped at a day.
pub fn parse_retry_after(v: &str, now_ms: i64) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let ms = at.timestamp_millis() - now_ms;
        Duration::from_millis(ms.max(0) as u64)
    };
    Some(d.min(Duration::from_secs(24 * 3600)))
}

/// A reqwest error in one line, with its causes (the guard's refusal, DNS,
/// connection refused, TLS …).
fn describe(e: &reqwest::Error) -> String {
    if let Some(refused) = ssrf::refusal(e) {
        return refused.to_string();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirect refused"
    } else {
        "request failed"
    };
    with_causes(kind.to_owned(), e)
}

/// `msg`, then each cause of `e` after a colon (reqwest's own message stops
/// at "error sending request"; the causes say why).
pub(crate) fn with_causes(mut msg: String, e: &dyn std::error::Error) -> String {
    let mut cur = e.source();
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now - 1_000),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now + 5_000),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("999999999", now),
            Some(Duration::from_secs(86400))
        );
    }

    #[test]
    fn secrets_are_recognised_by_header_name() {
        for h in [
            "Authorization",
            "X-Api-Key",
            "x-auth-token",
            "X-Client-Secret",
            "cookie",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        for h in ["content-type", "webhook-signature", "x-request-id"] {
            assert!(!is_secret_header(h), "{h}");
        }
    }
}
