//! Verifying voice providers' callback signatures.
//!
//! Policy: every callback is verified before anything in it is believed
//! (401 otherwise); comparisons are constant-time; schemes with a timestamp
//! refuse events older or newer than five minutes (replays). Schemes:
//! Standard Webhooks (the specification's `standardwebhooks` crate), Twilio
//! (`X-Twilio-Signature`), Retell (`X-Retell-Signature`), plain HMAC-SHA256
//! of the body, and a shared secret header.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::config::{SignatureConfig, SignatureEncoding};

/// Replay window for timestamped schemes.
pub const TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// Why a callback was refused (never includes the secret or the signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the `{0}` header is missing")]
    Missing(String),
    #[error("the signature does not match")]
    Mismatch,
    #[error("the signed timestamp is outside the 5 minute window")]
    Stale,
    #[error("the signature header is malformed")]
    Malformed,
}

/// A configured verifier.
pub enum Verifier {
    StandardWebhooks(standardwebhooks::Webhook),
    Twilio(SecretString),
    Retell(SecretString),
    HmacSha256 {
        header: String,
        secret: SecretString,
        encoding: SignatureEncoding,
        prefix: String,
    },
    SharedSecret {
        header: String,
        secret: SecretString,
    },
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Verifier::StandardWebhooks(_) => "standard-webhooks",
            Verifier::Twilio(_) => "twilio",
            Verifier::Retell(_) => "retell",
            Verifier::HmacSha256 { .. } => "hmac-sha256",
            Verifier::SharedSecret { .. } => "shared-secret",
        };
        write!(f, "Verifier({name})")
    }
}

/// What a verifier may look at.
pub struct Signed<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The full URL the provider called (`public_url` + path + query).
    pub url: &'a str,
    /// Wall-clock time (replay windows are about the request's freshness,
    /// so this is the system clock, not the runner's business clock).
    pub now_ms: i64,
}

impl Verifier {
    pub fn from_config(cfg: &SignatureConfig) -> Result<Self, String> {
        Ok(match cfg {
            SignatureConfig::StandardWebhooks { secret } => Verifier::StandardWebhooks(
                standardwebhooks::Webhook::new(secret.expose_secret())
                    .map_err(|_| "not a Standard Webhooks secret (whsec_<base64>)".to_owned())?,
            ),
            SignatureConfig::Twilio { auth_token } => Verifier::Twilio(auth_token.clone()),
            SignatureConfig::Retell { api_key } => Verifier::Retell(api_key.clone()),
            SignatureConfig::HmacSha256 {
                header,
                secret,
                encoding,
                prefix,
            } => Verifier::HmacSha256 {
                header: header.to_ascii_lowercase(),
                secret: secret.clone(),
                encoding: *encoding,
                prefix: prefix.clone(),
            },
            SignatureConfig::SharedSecret { header, secret } => Verifier::SharedSecret {
                header: header.to_ascii_lowercase(),
                secret: secret.clone(),
            },
        })
    }

    pub fn verify(&self, s: &Signed<'_>) -> Result<(), SignatureError> {
        match self {
            Verifier::StandardWebhooks(wh) => {
                for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
                    if !s.headers.contains_key(h) {
                        return Err(SignatureError::Missing(h.to_owned()));
                    }
                }
                // The crate checks the ±5 min window against the system clock.
                wh.verify(s.body, s.headers).map_err(|e| match e {
                    standardwebhooks::WebhookError::TimestampTooOldError
                    | standardwebhooks::WebhookError::FutureTimestampError => SignatureError::Stale,
                    standardwebhooks::WebhookError::InvalidTimestamp
                    | standardwebhooks::WebhookError::InvalidHeader(_) => SignatureError::Malformed,
                    _ => SignatureError::Mismatch,
                })
            }
            Verifier::Twilio(token) => {
                let given = header(s.headers, "x-twilio-signature")?;
                let expected = twilio_signature(token.expose_secret(), s.url, s.body);
                ct_eq(given.as_bytes(), expected.as_bytes())
            }
            Verifier::Retell(key) => {
                let value = header(s.headers, "x-retell-signature")?;
                let (ms, digest) = parse_retell(value).ok_or(SignatureError::Malformed)?;
                // `abs_diff`: the timestamp is the sender's, any i64 at all;
                // `now - ms` overflowed for ones far in the past.
                if s.now_ms.abs_diff(ms) > TOLERANCE_MS.unsigned_abs() {
                    return Err(SignatureError::Stale);
                }
                let mut data = s.body.to_vec();
                data.extend_from_slice(ms.to_string().as_bytes());
                let expected = hex::encode(hmac_sha256(key.expose_secret().as_bytes(), &data));
                ct_eq(digest.to_ascii_lowercase().as_bytes(), expected.as_bytes())
            }
            Verifier::HmacSha256 {
                header: name,
                secret,
                encoding,
                prefix,
            } => {
                let given = header(s.headers, name)?;
                let given = given
                    .strip_prefix(prefix.as_str())
                    .ok_or(SignatureError::Malformed)?;
                let mac = hmac_sha256(secret.expose_secret().as_bytes(), s.body);
                let expected = match encoding {
                    SignatureEncoding::Hex => hex::encode(mac),
                    SignatureEncoding::Base64 => B64.encode(mac),
                };
                let given = if *encoding == SignatureEncoding::Hex {
                    given.to_ascii_lowercase()
                } else {
                    given.to_owned()
                };
                ct_eq(given.as_bytes(), expected.as_bytes())
            }
            Verifier::SharedSecret {
                header: name,
                secret,
            } => {
                let given = header(s.headers, name)?;
                ct_eq(given.as_bytes(), secret.expose_secret().as_bytes())
            }
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .ok_or_else(|| SignatureError::Missing(name.to_owned()))?
        .to_str()
        .map_err(|_| SignatureError::Malformed)
}

fn ct_eq(a: &[u8], b: &[u8]) -> Result<(), SignatureError> {
    if a.len() == b.len() && bool::from(a.ct_eq(b)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this branch cannot be taken.
        #[allow(clippy::expect_used)]
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&[0]).expect("a one-byte key is valid")
    });
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Twilio's scheme: base64(HMAC-SHA1(token, url + sorted(name + value)...)).
pub fn twilio_signature(token: &str, url: &str, form_body: &[u8]) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(form_body).into_owned().collect();
    pairs.sort();
    let mut data = url.to_owned();
    for (k, v) in pairs {
        data.push_str(&k);
        data.push_str(&v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap_or_else(|_| {
        #[allow(clippy::expect_used)] // HMAC takes keys of any length
        hmac::Hmac::<sha1::Sha1>::new_from_slice(&[0]).expect("a one-byte key is valid")
    });
    mac.update(data.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// `v=<ms>,d=<hex>`.
fn parse_retell(value: &str) -> Option<(i64, &str)> {
    let mut ms = None;
    let mut digest = None;
    for part in value.split(',') {
        match part.trim().split_once('=') {
            Some(("v", v)) => ms = v.parse().ok(),
            Some(("d", d)) => digest = Some(d),
            _ => {}
        }
    }
    Some((ms?, digest?))
}

/// Signs a Retell-style header (tests and the docs' examples).
pub fn retell_header(api_key: &str, body: &[u8], ms: i64) -> String {
    let mut data = body.to_vec();
    data.extend_from_slice(ms.to_string().as_bytes());
    format!(
        "v={ms},d={}",
        hex::encode(hmac_sha256(api_key.as_bytes(), &data))
    )
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn standard_webhooks_matches_the_specification_test_vector() {
        let wh = standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = wh
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn standard_webhooks_refuses_tampering_and_old_timestamps() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let v = Verifier::from_config(&SignatureConfig::StandardWebhooks {
            secret: secret.into(),
        })
        .unwrap();
        let wh = standardwebhooks::Webhook::new(secret).unwrap();
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"status":"completed"}"#;
        let h = |ts: i64, body: &[u8]| {
            headers(&[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", wh.sign("msg_1", ts, body).unwrap()),
            ])
        };
        let signed = |h: &HeaderMap, body: &[u8]| {
            v.verify(&Signed {
                headers: h,
                body,
                url: "",
                now_ms: now * 1000,
            })
        };
        assert_eq!(signed(&h(now, body), body), Ok(()));
        assert_eq!(
            signed(&h(now, body), br#"{"status":"failed"}"#),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            signed(&h(now - 600, body), body),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            signed(&h(now + 600, body), body),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            signed(&HeaderMap::new(), body),
            Err(SignatureError::Missing("webhook-id".into()))
        );
    }

    #[test]
    fn twilio_signatures_cover_url_and_every_parameter() {
        let body = crate::fixtures::sample("twilio-status-callback.txt");
        let url = "https://gw.example.com/v1/calls/call_1/events";
        let sig = twilio_signature("token", url, &body);
        let v = Verifier::Twilio("token".into());
        let ok = headers(&[("x-twilio-signature", sig.clone())]);
        assert_eq!(
            v.verify(&Signed {
                headers: &ok,
                body: &body,
                url,
                now_ms: 0
            }),
            Ok(())
        );
        let other_url = "https://gw.example.com/v1/calls/call_2/events";
        assert_eq!(
            v.verify(&Signed {
                headers: &ok,
                body: &body,
                url: other_url,
                now_ms: 0
            }),
            Err(SignatureError::Mismatch)
        );
        let tampered = [body.as_slice(), b"&CallDuration=9999"].concat();
        assert_eq!(
            v.verify(&Signed {
                headers: &ok,
                body: &tampered,
                url,
                now_ms: 0
            }),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn retell_signatures_expire_after_five_minutes() {
        let body = br#"{"event":"call_ended"}"#;
        let now = 1_800_000_000_000;
        let v = Verifier::Retell("key_123".into());
        let h = headers(&[("x-retell-signature", retell_header("key_123", body, now))]);
        assert_eq!(
            v.verify(&Signed {
                headers: &h,
                body,
                url: "",
                now_ms: now + 1000
            }),
            Ok(())
        );
        assert_eq!(
            v.verify(&Signed {
                headers: &h,
                body,
                url: "",
                now_ms: now + 6 * 60_000
            }),
            Err(SignatureError::Stale)
        );
        let wrong = headers(&[("x-retell-signature", retell_header("other", body, now))]);
        assert_eq!(
            v.verify(&Signed {
                headers: &wrong,
                body,
                url: "",
                now_ms: now
            }),
            Err(SignatureError::Mismatch)
        );
        // The oldest timestamp overflowed `now - ms` (a panic with overflow
        // checks on); also replayed from tests/fuzz/regressions/signature/.
        let ancient = headers(&[("x-retell-signature", format!("v={},d=00", i64::MIN))]);
        assert_eq!(
            v.verify(&Signed {
                headers: &ancient,
                body,
                url: "",
                now_ms: now
            }),
            Err(SignatureError::Stale)
        );
        let junk = headers(&[("x-retell-signature", "nonsense".into())]);
        assert_eq!(
            v.verify(&Signed {
                headers: &junk,
                body,
                url: "",
                now_ms: now
            }),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn hmac_and_shared_secret_schemes() {
        let body = b"{}";
        let v = Verifier::HmacSha256 {
            header: "x-signature".into(),
            secret: "s3cret".into(),
            encoding: SignatureEncoding::Hex,
            prefix: "sha256=".into(),
        };
        let good = format!("sha256={}", hex::encode(hmac_sha256(b"s3cret", body)));
        let h = headers(&[("x-signature", good)]);
        assert_eq!(
            v.verify(&Signed {
                headers: &h,
                body,
                url: "",
                now_ms: 0
            }),
            Ok(())
        );
        let h = headers(&[("x-signature", "sha256=00".into())]);
        assert_eq!(
            v.verify(&Signed {
                headers: &h,
                body,
                url: "",
                now_ms: 0
            }),
            Err(SignatureError::Mismatch)
        );
        let v = Verifier::SharedSecret {
            header: "x-vapi-secret".into(),
            secret: "abc".into(),
        };
        let h = headers(&[("x-vapi-secret", "abc".into())]);
        assert_eq!(
            v.verify(&Signed {
                headers: &h,
                body,
                url: "",
                now_ms: 0
            }),
            Ok(())
        );
        let h = headers(&[("x-vapi-secret", "abd".into())]);
        assert_eq!(
            v.verify(&Signed {
                headers: &h,
                body,
                url: "",
                now_ms: 0
            }),
            Err(SignatureError::Mismatch)
        );
    }
}
