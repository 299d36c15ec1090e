//! `endpoints.toml` compiled: defaults applied, the URL checked against the
//! SSRF rules, headers compiled as templates (or kept secret when they came
//! from the environment), signing secrets and limits checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{DELIVERY_NAMES, Endpoint, HealthCheck, ssrf, template, valid_name};
use crate::config::outbound::{
    BreakerConfig, EndpointAuth, EndpointConfig, EndpointsFile, HealthCheckConfig, RetryPolicy,
};
use crate::config::{ENDPOINTS_FILE, Problem};
use crate::template::JsonTemplate;

/// Most retries a schedule may list.
const MAX_RETRIES: usize = 20;
/// Most deliveries in flight to one endpoint.
const MAX_CONCURRENCY: usize = 1024;
/// Longest wait for an endpoint's answer.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Compiles `endpoints.toml` (`ca_file`s relative to `dir`); endpoints with
/// problems are left out.
pub fn compile_endpoints(
    file: &EndpointsFile,
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Endpoint>> {
    let d = &file.defaults;
    let default_cas = {
        let mut p = reporter("defaults", problems);
        check_delivery(&d.retry, d.concurrency, d.timeout, &d.breaker, &mut p);
        // Read once; a bad default file is reported once, under `defaults`.
        d.ca_file
            .as_deref()
            .map(|f| ca_file(dir, f, &mut p).unwrap_or_default())
    };
    let mut out = BTreeMap::new();
    for (name, e) in &file.endpoints {
        let before = problems.len();
        let endpoint = {
            let at = format!("endpoints.{name}");
            let mut p = reporter(&at, problems);
            let ca_certificates = match &e.ca_file {
                Some(f) => ca_file(dir, f, &mut p).unwrap_or_default(),
                None => default_cas.clone().unwrap_or_default(),
            };
            compile_endpoint(name, e, file, &mut p).map(|mut endpoint| {
                endpoint.ca_certificates = ca_certificates;
                endpoint
            })
        };
        if problems.len() == before
            && let Some(endpoint) = endpoint
        {
            out.insert(name.clone(), Arc::new(endpoint));
        }
    }
    out
}

/// Reports a problem under `at` + the key given, in `endpoints.toml`.
fn reporter<'a>(at: &'a str, problems: &'a mut Vec<Problem>) -> impl FnMut(&str, String) + 'a {
    move |key, msg| problems.push(Problem::new(ENDPOINTS_FILE, format!("{at}{key}"), msg))
}

/// One endpoint with the defaults applied; `None` when its URL or method
/// cannot be used (every problem is reported either way).
fn compile_endpoint(
    name: &str,
    e: &EndpointConfig,
    file: &EndpointsFile,
    p: &mut impl FnMut(&str, String),
) -> Option<Endpoint> {
    let d = &file.defaults;
    if !valid_name(name) {
        p("", "names are 1-64 of a-z, 0-9, - and _".into());
    }
    let url = parse_url(e, p);
    let method = parse_method(e.method.as_deref().or(d.method.as_deref()), p);
    let (headers, secret_headers) = compile_headers(name, e, file, p);
    let signing_secret = e
        .signing_secret
        .clone()
        .or_else(|| d.signing_secret.clone());
    let auth = e.auth.clone().or_else(|| d.auth.clone());
    check_credentials(signing_secret.as_ref(), auth.as_ref(), p);
    let retry = e.retry.clone().unwrap_or_else(|| d.retry.clone());
    let concurrency = e.concurrency.unwrap_or(d.concurrency);
    let timeout = e.timeout.unwrap_or(d.timeout);
    let breaker = e.breaker.clone().unwrap_or_else(|| d.breaker.clone());
    check_delivery(&retry, concurrency, timeout, &breaker, p);
    let url = url?;
    let health_check = e
        .health_check
        .as_ref()
        .and_then(|h| health_check(&url, h, p));
    Some(Endpoint {
        name: name.to_owned(),
        url,
        method: method?,
        headers,
        secret_headers,
        auth,
        signing_secret,
        timeout,
        retry,
        concurrency,
        breaker,
        allow_private: e.allow_private,
        allow_http: e.allow_http,
        follow_redirects: e.follow_redirects,
        ca_certificates: Vec::new(),
        health_check,
    })
}

/// Shortest and longest time between two health checks.
const HEALTH_INTERVAL: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3600));

/// `health_check`: an absolute path on the endpoint's origin, an interval
/// within bounds.
fn health_check(
    endpoint: &url::Url,
    h: &HealthCheckConfig,
    p: &mut impl FnMut(&str, String),
) -> Option<HealthCheck> {
    if h.interval < HEALTH_INTERVAL.0 || h.interval > HEALTH_INTERVAL.1 {
        p(".health_check.interval", "must be between 5s and 1h".into());
    }
    if !h.path.starts_with('/') || h.path.starts_with("//") || h.path.contains('#') {
        p(
            ".health_check.path",
            "must be an absolute path such as `/health` (no host, no fragment)".into(),
        );
        return None;
    }
    match endpoint.join(&h.path) {
        Ok(url) if url.origin() == endpoint.origin() => Some(HealthCheck {
            url,
            path: h.path.clone(),
            interval: h.interval,
        }),
        _ => {
            p(
                ".health_check.path",
                "is not a path on the endpoint's origin".into(),
            );
            None
        }
    }
}

/// The CA certificates of the PEM bundle `file` (relative to `dir`), to
/// trust beside the system's roots; a file that cannot be read or holds no
/// certificate is reported under `.ca_file`.
pub fn ca_file(
    dir: &Path,
    file: &str,
    p: &mut impl FnMut(&str, String),
) -> Option<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(dir.join(file))
        .map_err(|e| p(".ca_file", format!("cannot read {file}: {e}")))
        .ok()?;
    crate::crypto::ca_certificates(&pem)
        .map_err(|e| p(".ca_file", format!("{file}: {e}")))
        .ok()
}

/// The endpoint's URL, parsed and checked against the SSRF rules (a
/// refused URL is reported and still returned: the endpoint is left out by
/// its problem).
fn parse_url(e: &EndpointConfig, p: &mut impl FnMut(&str, String)) -> Option<url::Url> {
    match url::Url::parse(&e.url) {
        Ok(u) => {
            if let Err(err) = ssrf::check_url(&u, e.allow_private, e.allow_http) {
                p(".url", err.to_string());
            }
            if u.host_str().is_none_or(str::is_empty) {
                p(".url", "has no host".into());
            }
            Some(u)
        }
        Err(err) => {
            p(".url", format!("`{}`: {err}", e.url));
            None
        }
    }
}

/// The HTTP method (POST when neither the endpoint nor the defaults say).
fn parse_method(name: Option<&str>, p: &mut impl FnMut(&str, String)) -> Option<reqwest::Method> {
    let name = name.unwrap_or("POST");
    match reqwest::Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
        Ok(m) => Some(m),
        Err(_) => {
            p(".method", format!("`{name}` is not an HTTP method"));
            None
        }
    }
}

/// Header templates and secret headers.
type Headers = (Vec<(String, JsonTemplate)>, Vec<(String, SecretString)>);

/// The defaults' headers then the endpoint's (a later one replaces an
/// earlier one of the same name, in any case): templates, except values
/// that came from the environment, which are secrets sent as they are and
/// never stored with the delivery or logged.
fn compile_headers(
    name: &str,
    e: &EndpointConfig,
    file: &EndpointsFile,
    p: &mut impl FnMut(&str, String),
) -> Headers {
    let mut headers: Vec<(String, JsonTemplate)> = Vec::new();
    let mut secret_headers: Vec<(String, SecretString)> = Vec::new();
    let sources = file
        .defaults
        .headers
        .iter()
        .map(|(h, v)| ("defaults", h, v))
        .chain(e.headers.iter().map(|(h, v)| (name, h, v)));
    for (owner, h, v) in sources {
        let key = format!(".headers.{h}");
        if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
            p(&key, "not a valid header name".into());
            continue;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("webhook-") || lower == "content-length" || lower == "host" {
            p(&key, "set by callgate; cannot be configured".into());
            continue;
        }
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(h));
        secret_headers.retain(|(k, _)| !k.eq_ignore_ascii_case(h));
        if file.secret_headers.contains(&(owner.to_owned(), h.clone())) {
            if v.contains("{{") || v.contains("{%") {
                p(
                    &key,
                    "a header from the environment cannot also be a template".into(),
                );
            }
            secret_headers.push((h.clone(), SecretString::from(v.clone())));
        } else if let Some(t) = template(&toml::Value::String(v.clone()), &DELIVERY_NAMES, |m| {
            p(&key, m)
        }) {
            headers.push((h.clone(), t));
        }
    }
    (headers, secret_headers)
}

/// The signing secret is a Standard Webhooks secret (or a `${VAR}` not
/// set, reported elsewhere); a header credential's name is a header name.
fn check_credentials(
    signing_secret: Option<&SecretString>,
    auth: Option<&EndpointAuth>,
    p: &mut impl FnMut(&str, String),
) {
    if let Some(secret) = signing_secret {
        let s = secret.expose_secret();
        if !s.starts_with("${")
            && (!s.starts_with("whsec_") || standardwebhooks::Webhook::new(s).is_err())
        {
            p(
                ".signing_secret",
                "not a Standard Webhooks secret (whsec_<base64>)".into(),
            );
        }
    }
    if let Some(EndpointAuth::Header { name, .. }) = auth
        && reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        p(".auth.name", "not a valid header name".into());
    }
}

/// Retries, concurrency, timeout and breaker within their bounds.
fn check_delivery(
    retry: &RetryPolicy,
    concurrency: usize,
    timeout: Duration,
    breaker: &BreakerConfig,
    p: &mut impl FnMut(&str, String),
) {
    if retry.schedule.len() > MAX_RETRIES {
        p(".retry.schedule", format!("at most {MAX_RETRIES} retries"));
    }
    if retry.schedule.iter().any(Duration::is_zero) {
        p(".retry.schedule", "waits must be longer than zero".into());
    }
    if concurrency == 0 || concurrency > MAX_CONCURRENCY {
        p(
            ".concurrency",
            format!("must be between 1 and {MAX_CONCURRENCY}"),
        );
    }
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        p(".timeout", "must be between 1ms and 2m".into());
    }
    if breaker.failures == 0 {
        p(".breaker.failures", "must be at least 1".into());
    }
}
