//! Signed triggers: senders that sign each request with a shared secret
//! (HubSpot workflows, Standard Webhooks senders, GitHub-style HMAC
//! headers) instead of sending a credential.
//!
//! Policy: the signature is checked over the raw body bytes before anything
//! in the body is read; comparisons are constant-time; timestamped schemes
//! refuse a timestamp more than five minutes from the gateway's real clock,
//! either way (replays, and requests signed for later). Several entries are
//! several secrets (rotation): the first that verifies decides. A verified
//! request yields a message key that the gateway uses as its
//! Idempotency-Key (an Idempotency-Key header, not being signed, never
//! replaces it), so that a replay or a retry
//! of one message never makes a second job: the Standard Webhooks
//! `webhook-id` (a sender's retries keep it), else a hash of the signature
//! (HubSpot and plain HMAC have no message id). Errors say what was wrong,
//! never the expected value.

use axum::http::HeaderMap;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::TriggerSignatureConfig;

/// How far a signed timestamp may be from the gateway's clock.
pub const TOLERANCE_MS: i64 = 5 * 60 * 1000;
/// Shortest shared secret accepted for `hubspot-v3` and `hmac-sha256`.
pub const MIN_SECRET_LEN: usize = 16;
/// Shortest Standard Webhooks key (decoded), as the specification asks.
pub const MIN_WHSEC_BYTES: usize = 24;

const WEBHOOK_ID: &str = "webhook-id";
const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
const WEBHOOK_SIGNATURE: &str = "webhook-signature";
const HUBSPOT_SIGNATURE: &str = "x-hubspot-signature-v3";
const HUBSPOT_TIMESTAMP: &str = "x-hubspot-request-timestamp";

/// Why a signed request was refused (never carries a secret or the
/// expected signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No scheme's headers were sent (the header names expected).
    #[error("no signature: send {0}, or a bearer token or API key if this trigger takes one")]
    Missing(String),
    /// A scheme's signature header came without another it needs.
    #[error("the `{0}` header is missing")]
    Incomplete(String),
    #[error("the `{0}` header is malformed")]
    Malformed(&'static str),
    #[error("the signed timestamp is more than 5 minutes from the gateway's clock")]
    Stale,
    #[error("the signature does not match this trigger's secret(s) for this request")]
    Mismatch,
}

impl SignatureError {
    /// Which error to report when every entry failed: the most specific.
    fn rank(&self) -> u8 {
        match self {
            SignatureError::Missing(_) => 0,
            SignatureError::Incomplete(_) | SignatureError::Malformed(_) => 1,
            SignatureError::Stale => 2,
            SignatureError::Mismatch => 3,
        }
    }
}

struct Entry {
    name: String,
    scheme: Scheme,
}

/// A trigger's accepted signatures, compiled.
pub struct Signatures {
    entries: Vec<Entry>,
    /// Only signed requests: bearer tokens and API keys are refused.
    pub only: bool,
}

impl std::fmt::Debug for Signatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        f.debug_struct("Signatures")
            .field("entries", &names)
            .field("only", &self.only)
            .finish()
    }
}

/// What a verifier looks at.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The full URL the sender called: `server.public_url` + path + query.
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Real time (the sender's clock is real), never the injected clock.
    pub now_ms: i64,
}

/// A request that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The matching entry's name (the principal's last part).
    pub name: &'a str,
    /// The message's idempotency key (printable ASCII, at most 255).
    pub message_key: String,
}

impl Signatures {
    /// Compiles a trigger's entries; `problem(key, message)` gets every
    /// problem (keys relative to the trigger, like `.signatures[0].secret`).
    pub fn compile(
        entries: &[TriggerSignatureConfig],
        only: bool,
        problem: &mut dyn FnMut(&str, String),
    ) -> Option<Self> {
        if entries.is_empty() {
            if only {
                problem(
                    ".signatures_only",
                    "needs at least one entry in `signatures`".into(),
                );
            }
            return None;
        }
        let compiled: Vec<Entry> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, cfg)| {
                let at = format!(".signatures[{i}]");
                let mut report = |key: &str, msg: String| problem(&format!("{at}{key}"), msg);
                let name = cfg.name();
                if !valid_name(name) {
                    report(".name", "must be 1-64 of `A-Z a-z 0-9 _ -`".into());
                }
                let scheme = compile_scheme(cfg, &mut report)?;
                valid_name(name).then(|| Entry {
                    name: name.to_owned(),
                    scheme,
                })
            })
            .collect();
        (compiled.len() == entries.len()).then_some(Self {
            entries: compiled,
            only,
        })
    }

    /// The first entry that verifies, or the most specific reason none did.
    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified<'_>, SignatureError> {
        let mut worst: Option<SignatureError> = None;
        let mut missing: Vec<&str> = Vec::new();
        for entry in &self.entries {
            match entry.scheme.verify(req) {
                Ok(message_key) => {
                    return Ok(Verified {
                        name: &entry.name,
                        message_key,
                    });
                }
                Err(e) => {
                    let h = entry.scheme.header_name();
                    let e = match e {
                        // The signature came without a part it needs.
                        SignatureError::Missing(part) if req.headers.contains_key(h) => {
                            SignatureError::Incomplete(part)
                        }
                        SignatureError::Missing(_) => {
                            if !missing.contains(&h) {
                                missing.push(h);
                            }
                            continue;
                        }
                        e => e,
                    };
                    if worst.as_ref().is_none_or(|w| e.rank() > w.rank()) {
                        worst = Some(e);
                    }
                }
            }
        }
        Err(worst.unwrap_or_else(|| {
            let names: Vec<String> = missing.iter().map(|h| format!("`{h}`")).collect();
            SignatureError::Missing(names.join(" or "))
        }))
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

mod schemes;

use schemes::{Scheme, compile_scheme};
pub use schemes::{hubspot_uri, hubspot_v3};

#[cfg(test)]
mod tests;
