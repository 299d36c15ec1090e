//! The schemes of `signed.rs`: compiling one entry, verifying one request
//! with it, and the message key it yields.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::{
    B64, HUBSPOT_SIGNATURE, HUBSPOT_TIMESTAMP, MIN_SECRET_LEN, MIN_WHSEC_BYTES, SignatureError,
    SignedRequest, TOLERANCE_MS, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
};
use crate::config::{SignatureEncoding, TriggerSignatureConfig};
use crate::crypto::sha256;

pub(super) enum Scheme {
    StandardWebhooks(standardwebhooks::Webhook),
    HubspotV3(SecretString),
    HmacSha256 {
        secret: SecretString,
        /// Lower case.
        header: String,
        prefix: String,
        encoding: SignatureEncoding,
    },
}

pub(super) fn compile_scheme(
    cfg: &TriggerSignatureConfig,
    report: &mut dyn FnMut(&str, String),
) -> Option<Scheme> {
    match cfg {
        TriggerSignatureConfig::StandardWebhooks { secret, .. } => {
            let s = secret.expose_secret();
            let Some(b64) = s.strip_prefix("whsec_") else {
                report(".secret", "must be `whsec_<base64>`".into());
                return None;
            };
            match B64.decode(b64) {
                Ok(key) if key.len() >= MIN_WHSEC_BYTES => Some(Scheme::StandardWebhooks(
                    standardwebhooks::Webhook::from_bytes(key).ok()?,
                )),
                Ok(key) => {
                    report(
                        ".secret",
                        format!(
                            "too short: {} bytes, Standard Webhooks asks for at least {MIN_WHSEC_BYTES}",
                            key.len()
                        ),
                    );
                    None
                }
                Err(_) => {
                    report(".secret", "the part after `whsec_` is not base64".into());
                    None
                }
            }
        }
        TriggerSignatureConfig::HubspotV3 { secret, .. } => {
            check_secret(secret, report).then(|| Scheme::HubspotV3(secret.clone()))
        }
        TriggerSignatureConfig::HmacSha256 {
            secret,
            header,
            prefix,
            encoding,
            ..
        } => {
            let secret_ok = check_secret(secret, report);
            let header_ok = axum::http::HeaderName::from_bytes(header.as_bytes()).is_ok();
            if !header_ok {
                report(".header", format!("`{header}` is not a header name"));
            }
            let prefix_ok = prefix.bytes().all(|b| (0x21..0x7f).contains(&b));
            if !prefix_ok {
                report(".prefix", "must be visible ASCII without spaces".into());
            }
            (secret_ok && header_ok && prefix_ok).then(|| Scheme::HmacSha256 {
                secret: secret.clone(),
                header: header.to_ascii_lowercase(),
                prefix: prefix.clone(),
                encoding: *encoding,
            })
        }
    }
}

fn check_secret(secret: &SecretString, report: &mut dyn FnMut(&str, String)) -> bool {
    let len = secret.expose_secret().len();
    if len < MIN_SECRET_LEN {
        report(
            ".secret",
            format!("too short: {len} characters, at least {MIN_SECRET_LEN}"),
        );
        return false;
    }
    true
}

impl Scheme {
    pub(super) fn header_name(&self) -> &str {
        match self {
            Scheme::StandardWebhooks(_) => WEBHOOK_SIGNATURE,
            Scheme::HubspotV3(_) => HUBSPOT_SIGNATURE,
            Scheme::HmacSha256 { header, .. } => header,
        }
    }

    /// The message key when the request verifies.
    pub(super) fn verify(&self, req: &SignedRequest<'_>) -> Result<String, SignatureError> {
        match self {
            Scheme::StandardWebhooks(wh) => standard_webhooks(wh, req),
            Scheme::HubspotV3(secret) => {
                let given = header(req.headers, HUBSPOT_SIGNATURE)?;
                let ts = header(req.headers, HUBSPOT_TIMESTAMP)?;
                let ms: i64 = ts
                    .parse()
                    .map_err(|_| SignatureError::Malformed("X-HubSpot-Request-Timestamp"))?;
                fresh(req.now_ms, ms)?;
                let given = B64
                    .decode(given.trim())
                    .map_err(|_| SignatureError::Malformed("X-HubSpot-Signature-v3"))?;
                let expected =
                    hubspot_v3(secret.expose_secret(), req.method, req.url, req.body, ts);
                ct_eq(&given, &expected)?;
                Ok(signature_key(&expected))
            }
            Scheme::HmacSha256 {
                secret,
                header: name,
                prefix,
                encoding,
            } => {
                let value = header(req.headers, name)?;
                let malformed = || SignatureError::Malformed("signature");
                let given = value
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or_else(malformed)?;
                let given = match encoding {
                    SignatureEncoding::Hex => hex::decode(given).map_err(|_| malformed())?,
                    SignatureEncoding::Base64 => B64.decode(given).map_err(|_| malformed())?,
                };
                let expected = hmac_sha256(secret.expose_secret().as_bytes(), &[req.body]);
                ct_eq(&given, &expected)?;
                Ok(signature_key(&expected))
            }
        }
    }
}

fn standard_webhooks(
    wh: &standardwebhooks::Webhook,
    req: &SignedRequest<'_>,
) -> Result<String, SignatureError> {
    let signatures = header(req.headers, WEBHOOK_SIGNATURE)?;
    let id = header(req.headers, WEBHOOK_ID)?;
    let ts = header(req.headers, WEBHOOK_TIMESTAMP)?;
    let seconds: i64 = ts
        .parse()
        .map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    fresh(req.now_ms, seconds.saturating_mul(1000))?;
    // The crate computes the signature (its own `verify` reads the system
    // clock with an overflowing subtraction; the window is checked above).
    // A body that is not UTF-8 cannot have been signed by it.
    let expected = wh
        .sign(id, seconds, req.body)
        .map_err(|_| SignatureError::Mismatch)?;
    let expected = expected
        .split_once(',')
        .map(|(_, sig)| sig)
        .ok_or(SignatureError::Mismatch)?;
    let mut seen_v1 = false;
    for candidate in signatures.split(' ').filter(|s| !s.is_empty()) {
        let Some(("v1", sig)) = candidate.split_once(',') else {
            continue;
        };
        seen_v1 = true;
        if sig.len() == expected.len() && bool::from(sig.as_bytes().ct_eq(expected.as_bytes())) {
            return Ok(message_id_key(id));
        }
    }
    if seen_v1 {
        Err(SignatureError::Mismatch)
    } else {
        Err(SignatureError::Malformed("webhook-signature"))
    }
}

/// `webhook-id:<id>` when that is a valid Idempotency-Key, else a hash of
/// the id.
pub(super) fn message_id_key(id: &str) -> String {
    let key = format!("webhook-id:{id}");
    if key.len() <= crate::idempotency::MAX_KEY_LEN
        && key.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        key
    } else {
        format!("webhook-id-sha256:{}", hex::encode(sha256(id.as_bytes())))
    }
}

/// For schemes without a message id: the signature identifies the message.
pub(super) fn signature_key(mac: &[u8]) -> String {
    format!("signature-sha256:{}", hex::encode(sha256(mac)))
}

pub(super) fn fresh(now_ms: i64, signed_ms: i64) -> Result<(), SignatureError> {
    // `abs_diff`: the timestamp is the sender's, any i64 at all.
    if now_ms.abs_diff(signed_ms) > TOLERANCE_MS.unsigned_abs() {
        Err(SignatureError::Stale)
    } else {
        Ok(())
    }
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .ok_or_else(|| SignatureError::Missing(name.to_owned()))?
        .to_str()
        .map_err(|_| SignatureError::Malformed("signature"))
}

pub(super) fn ct_eq(given: &[u8], expected: &[u8]) -> Result<(), SignatureError> {
    if given.len() == expected.len() && bool::from(given.ct_eq(expected)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

pub(super) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch cannot be taken.
        #[allow(clippy::expect_used)]
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&[0]).expect("a one-byte key is valid")
    });
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HubSpot's v3 signature: HMAC-SHA256 of method + URI + body + timestamp,
/// the URI with the characters HubSpot decodes before signing decoded.
pub fn hubspot_v3(secret: &str, method: &str, url: &str, body: &[u8], ts: &str) -> [u8; 32] {
    let uri = hubspot_uri(url);
    hmac_sha256(
        secret.as_bytes(),
        &[method.as_bytes(), uri.as_bytes(), body, ts.as_bytes()],
    )
}

/// The URI as HubSpot signs it: these percent-encodings decoded (HubSpot's
/// "Validating requests" guide, v3), every other byte as sent.
pub fn hubspot_uri(url: &str) -> String {
    const DECODED: &[(&str, char)] = &[
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3);
        match code.and_then(|c| DECODED.iter().find(|(e, _)| e.eq_ignore_ascii_case(c))) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}
