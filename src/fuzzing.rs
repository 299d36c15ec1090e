//! Thin entry points for the cargo-fuzz targets in `tests/fuzz/` and for the
//! regression tests that replay what they found (`tests/it/fuzz.rs`).
//!
//! Not part of the supported API (hidden from the docs). Policy: each entry
//! point takes arbitrary bytes, drives one parser of untrusted input the way
//! the server does, and panics only when an invariant the server relies on
//! is broken; an `Err` for bad input is the expected outcome, not a finding.

// A panic here is the fuzzer's finding, and the fixtures built here are
// constants that either build or make every run fail at once.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};

use crate::auth::jwt::Issuers;
use crate::auth::signed::{Signatures, SignedRequest};
use crate::calls::signature::{Signed, Verifier};
use crate::config::{FormNesting, IssuerConfig, SignatureConfig};
use crate::input::phone::{self, PhoneValidation, Region};
use crate::input::{self, BodyKind};
use crate::schema::{self, CompiledSchema};
use crate::template::{self, JsonTemplate};

/// A fuzz entry point: arbitrary bytes in, a panic when an invariant breaks.
pub type Entry = fn(&[u8]);

/// The fuzz targets, by name (the names of `tests/fuzz/fuzz_targets/*.rs`
/// and of the folders under `tests/fuzz/regressions/`).
pub const TARGETS: [(&str, Entry); 6] = [
    ("form", form),
    ("json_schema", json_schema),
    ("phone", phone),
    ("signature", signature),
    ("jwt", jwt),
    ("template", template),
];

/// Splits off the first byte (a selector) from the rest.
fn split_first(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, &[]),
    }
}

/// Splits at the first `0` byte (the second part is empty without one).
fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A form body through the trigger path's parser, in the nesting style the
/// first byte selects. Invariants: the result is a JSON object whose leaves
/// are strings, and arrays hold only strings.
pub fn form(data: &[u8]) {
    let (sel, body) = split_first(data);
    let nesting = [
        FormNesting::Auto,
        FormNesting::Brackets,
        FormNesting::DoubleUnderscore,
        FormNesting::None,
    ][usize::from(sel % 4)];
    let Ok(value) = input::parse(BodyKind::Form, body, nesting) else {
        return;
    };
    assert!(value.is_object(), "a form parses to an object: {value}");
    fn check(v: &Value, in_array: bool) {
        match v {
            Value::String(_) => {}
            Value::Array(items) if !in_array => items.iter().for_each(|i| check(i, true)),
            Value::Object(map) if !in_array => map.values().for_each(|i| check(i, false)),
            other => panic!("a form value of an unexpected shape: {other}"),
        }
    }
    check(&value, false);
}

/// Schemas the JSON target validates against: the shapes operators write
/// (required fields, nested objects, formats asserted, patterns, unions).
fn schemas() -> &'static [CompiledSchema] {
    static SCHEMAS: OnceLock<Vec<CompiledSchema>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        [
            json!({
                "$schema": schema::DRAFT_2020_12,
                "type": "object",
                "required": ["phone_number"],
                "properties": {
                    "phone_number": {"type": "string", "minLength": 3},
                    "email": {"type": "string", "format": "email"},
                    "when": {"type": "string", "format": "date-time"},
                    "site": {"type": "string", "format": "uri"},
                    "ip": {"type": "string", "format": "ipv4"},
                    "id": {"type": "string", "format": "uuid"},
                    "customer": {
                        "type": "object",
                        "properties": {"name": {"type": "string", "maxLength": 50}},
                        "additionalProperties": {"type": ["string", "number"]}
                    },
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5, "uniqueItems": true},
                    "age": {"type": "integer", "minimum": 0, "maximum": 150, "multipleOf": 1}
                },
                "additionalProperties": false
            }),
            json!({
                "type": "object",
                "patternProperties": {"^x-[a-z]+$": {"type": "string", "pattern": "^[A-Z]{2}\\d+$"}},
                "propertyNames": {"maxLength": 20},
                "oneOf": [
                    {"required": ["a"], "properties": {"a": {"const": 1}}},
                    {"required": ["b"], "properties": {"b": {"enum": ["x", null, 2.5]}}}
                ],
                "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
                "properties": {"list": {"$ref": "#/$defs/node"}}
            }),
        ]
        .iter()
        .map(|s| CompiledSchema::compile(s).expect("the fuzz schemas compile"))
        .collect()
    })
}

/// A JSON body through the trigger path's parser, then schema validation.
/// Invariants: validation agrees with itself (no violations exactly when
/// valid) and every violation's pointer is RFC 6901 syntax.
pub fn json_schema(data: &[u8]) {
    let (sel, body) = split_first(data);
    let Ok(value) = input::parse(BodyKind::Json, body, FormNesting::Auto) else {
        return;
    };
    let schemas = schemas();
    let schema = &schemas[usize::from(sel) % schemas.len()];
    for v in schema.violations(&value) {
        assert!(
            schema::is_valid_pointer(&v.pointer),
            "violation pointer `{}` is not RFC 6901",
            v.pointer
        );
    }
    let _ = input::run_at(&value);
    let _ = crate::calling::check_timezone(&value, "/timezone");
}

/// Regions the phone target reads numbers in.
const REGIONS: [&str; 8] = ["US", "GB", "CA", "DE", "FR", "IN", "AU", "BR"];

/// A phone number through normalisation, in the region and strictness the
/// first byte selects. Invariants: a result is `+` and 2 to 15 digits, and
/// normalising it again gives itself (the stored number is stable).
pub fn phone(data: &[u8]) {
    let (sel, raw) = split_first(data);
    let Ok(raw) = std::str::from_utf8(raw) else {
        return;
    };
    let Ok(region) = Region::parse(REGIONS[usize::from(sel & 7)]) else {
        unreachable!("the fuzz regions are known");
    };
    let strictness = if sel & 8 == 0 {
        PhoneValidation::Possible
    } else {
        PhoneValidation::Valid
    };
    let Ok(e164) = phone::normalize(raw, region, strictness) else {
        return;
    };
    let digits = e164.strip_prefix('+').unwrap_or_default();
    assert!(
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
        "`{raw}` normalised to `{e164}`, which is not E.164"
    );
    assert_eq!(
        phone::normalize(&e164, region, strictness).as_deref(),
        Ok(e164.as_str()),
        "`{raw}` normalised to `{e164}`, which does not normalise to itself"
    );
}

/// The signature schemes a provider callback is checked with.
fn verifiers() -> &'static [Verifier; 3] {
    static VERIFIERS: OnceLock<[Verifier; 3]> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let build = |cfg: SignatureConfig| Verifier::from_config(&cfg).expect("valid config");
        [
            build(SignatureConfig::StandardWebhooks {
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            }),
            build(SignatureConfig::Twilio {
                auth_token: "twilio-token".into(),
            }),
            build(SignatureConfig::Retell {
                api_key: "retell-key".into(),
            }),
        ]
    })
}

/// A signed trigger's schemes: Standard Webhooks, HubSpot v3 and a
/// GitHub-style HMAC header, one entry each.
fn trigger_signatures() -> &'static Signatures {
    static SIGNATURES: OnceLock<Signatures> = OnceLock::new();
    SIGNATURES.get_or_init(|| {
        #[derive(serde::Deserialize)]
        struct Entries {
            signatures: Vec<crate::config::TriggerSignatureConfig>,
        }
        let entries: Entries = toml::from_str(
            r#"signatures = [
              { scheme = "standard-webhooks", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" },
              { scheme = "hubspot-v3", secret = "c8f2a1e4-51b7-4f0e-9d3a-7b6e2c9f0a15" },
              { scheme = "hmac-sha256", header = "X-Hub-Signature-256", prefix = "sha256=", secret = "It's a Secret to Everybody" },
            ]"#,
        )
        .expect("the fuzz signatures parse");
        let mut problems = Vec::new();
        Signatures::compile(&entries.signatures, false, &mut |k, m| {
            problems.push(format!("{k}: {m}"))
        })
        .unwrap_or_else(|| panic!("{problems:?}"))
    })
}

/// A provider callback, or a signed trigger request, through signature
/// verification. The first byte selects the scheme (Standard Webhooks,
/// Twilio, Retell; 3: a signed trigger's schemes); then, up to a `0` byte,
/// `name: value` header lines; the rest is the body. Invariants:
/// verification returns (no panic) for anything sent; a verified trigger
/// request's message key is a valid Idempotency-Key.
pub fn signature(data: &[u8]) {
    let (sel, rest) = split_first(data);
    let (head, body) = split_nul(rest);
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if sel % 4 == 3 {
        let verified = trigger_signatures().verify(&SignedRequest {
            method: "POST",
            url: "https://gw.example.com/v1/triggers/hooks?x=a%3Ab",
            headers: &headers,
            body,
            now_ms: 1_800_000_000_000,
        });
        if let Ok(v) = verified {
            let key = &v.message_key;
            assert!(
                !key.is_empty()
                    && key.len() <= crate::idempotency::MAX_KEY_LEN
                    && key.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "message key {key:?} is not a valid Idempotency-Key"
            );
        }
        return;
    }
    let verifier = &verifiers()[usize::from(sel % 4)];
    let _ = verifier.verify(&Signed {
        headers: &headers,
        body,
        url: "https://gw.example.com/v1/calls/call_1/events?x=1",
        now_ms: 1_800_000_000_000,
    });
}

/// HMAC secret of the JWT target's issuer.
const JWT_SECRET: &str = "fuzz-secret-that-is-at-least-32-bytes-long";

fn issuers() -> &'static Issuers {
    static ISSUERS: OnceLock<Issuers> = OnceLock::new();
    ISSUERS.get_or_init(|| {
        let cfg: IssuerConfig = serde_json::from_value(json!({
            "issuer": "https://idp.example",
            "audience": ["callgate"],
            "algorithms": ["HS256"],
            "leeway": "30s",
            "keys": [{"secret": JWT_SECRET}]
        }))
        .expect("the fuzz issuer config parses");
        let mut problems = Vec::new();
        let issuers = Issuers::build(
            &BTreeMap::from([("idp".to_owned(), cfg)]),
            std::path::Path::new("."),
            "fuzz",
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        issuers
    })
}

/// A bearer token through JWT verification. With the selector's low bit
/// clear the bytes are the token as sent; with it set they are a header and
/// a claims set (split at a `0` byte) that get a valid HS256 signature, so
/// the claim checks and the principal's scopes are reached. Invariant: a
/// token is accepted only with a non-empty `sub`, the issuer's `iss`, an
/// accepted `aud` and an `exp`.
pub fn jwt(data: &[u8]) {
    let (sel, rest) = split_first(data);
    let token = if sel & 1 == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        token.to_owned()
    } else {
        let (header, claims) = split_nul(rest);
        let signing_input = format!("{}.{}", B64URL.encode(header), B64URL.encode(claims));
        let mac =
            crate::calls::signature::hmac_sha256(JWT_SECRET.as_bytes(), signing_input.as_bytes());
        format!("{signing_input}.{}", B64URL.encode(mac))
    };
    let Ok(principal) = issuers().verify(&token) else {
        return;
    };
    let claims: Value = token
        .split('.')
        .nth(1)
        .and_then(|p| B64URL.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("an accepted token has a JSON claims set");
    assert_eq!(claims["iss"], "https://idp.example", "{claims}");
    assert!(claims.get("exp").is_some_and(Value::is_number), "{claims}");
    let sub = claims["sub"].as_str().unwrap_or_default();
    assert!(!sub.is_empty(), "{claims}");
    assert_eq!(&*principal.id, format!("jwt:idp:{sub}"));
}

/// A template and a context (split at a `0` byte): the template compiled as
/// config loading does, then rendered against the context (a JSON object,
/// as the runner builds). Invariant: compile and render return, and a
/// template without `{{`/`{%` renders as itself.
pub fn template(data: &[u8]) {
    let (source, ctx) = split_nul(data);
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    // Templates come from the operator's config; cap their size so the
    // fuzzer explores syntax rather than huge loops.
    if source.len() > 512 {
        return;
    }
    let ctx: Value = match serde_json::from_slice(ctx) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            json!({"input": {"name": "Ada", "n": 3, "tags": ["a", "b"]}, "call": {"id": "call_1"}})
        }
    };
    let as_json = serde_json::from_str::<Value>(source).ok();
    let compiled = match &as_json {
        Some(v) => JsonTemplate::compile(v),
        None => template::compile_text(source),
    };
    let Ok(t) = compiled else {
        return;
    };
    let _ = t.variables();
    let rendered = t.render(&ctx);
    if as_json.is_none() && !source.contains("{{") && !source.contains("{%") {
        assert_eq!(
            rendered.as_ref().ok(),
            Some(&Value::String(source.to_owned()))
        );
    }
}
