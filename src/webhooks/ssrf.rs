//! The SSRF guard of the outbound HTTP clients: the rules of
//! `outbound::ssrf`, applied where the connection is made.
//!
//! Policy: the check runs on the addresses the connection actually uses: the guard
//! is the HTTP client's DNS resolver, so a name that resolves to a private
//! address (or flips to one, DNS rebinding) is refused at connect time, and
//! IP literals are checked before sending. `https` is required unless
//! `allow_http`; redirects are not followed unless `follow_redirects`, and
//! then each hop is checked the same way.

use std::net::SocketAddr;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub use crate::outbound::ssrf::{REFUSED_EXAMPLES, SsrfError, check_url, forbidden};

/// A DNS resolver that drops forbidden addresses (all of them refused: an
/// error), so the client can only connect to addresses that passed. An
/// allow-listed endpoint names its own host in `trusted_host`: that name may
/// resolve to anything; every other name (a redirect's) is still guarded.
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    pub trusted_host: Option<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let trusted = self
            .trusted_host
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(&host));
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| trusted || forbidden(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let err = match resolved.first() {
                    Some(a) => SsrfError::Forbidden {
                        addr: a.ip(),
                        why: forbidden(a.ip()).unwrap_or("forbidden"),
                    },
                    None => SsrfError::NoAllowedAddress(host),
                };
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A redirect policy: none unless `follow`; then at most 5 hops, each
/// passing `check_url`. Private addresses are allowed on a hop only when the
/// endpoint is allow-listed and the hop stays on the endpoint's own host.
/// An endpoint that sends credentials (`auth`, headers from the
/// environment) is only redirected on its own host: reqwest drops
/// `Authorization` on a cross-host hop, but not a custom header.
pub fn redirect_policy(
    follow: bool,
    endpoint_host: String,
    allow_private: bool,
    allow_http: bool,
    has_credentials: bool,
) -> reqwest::redirect::Policy {
    if !follow {
        return reqwest::redirect::Policy::none();
    }
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        let host = attempt.url().host_str().unwrap_or_default().to_owned();
        let same_host = host == endpoint_host;
        if has_credentials && !same_host {
            return attempt.error(RedirectRefused(host));
        }
        match check_url(attempt.url(), allow_private && same_host, allow_http) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

/// A redirect off the endpoint's host, refused because the endpoint sends
/// credentials.
#[derive(Debug, thiserror::Error)]
#[error(
    "redirect to `{0}` refused: this endpoint sends credentials, which must not leave its host"
)]
pub struct RedirectRefused(pub String);

/// Is `err` (or its cause) a refused redirect?
pub fn redirect_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<RedirectRefused>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Is `err` (or its cause) the guard's refusal?
pub fn refusal<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a SsrfError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(s) = e.downcast_ref::<SsrfError>() {
            return Some(s);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_at_resolution() {
        let r = GuardedResolver::default()
            .resolve("localhost".parse().unwrap())
            .await;
        let err = r.err().expect("localhost must be refused").to_string();
        assert!(err.contains("loopback"), "{err}");
    }
}
