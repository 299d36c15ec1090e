//! The scheme code against the published vectors
//! (`tests/fixtures/signatures/`), then tampering, time windows, rotation
//! and configuration problems.

use axum::http::HeaderValue;
use base64::Engine;
use serde_json::Value;

use super::schemes::{hmac_sha256, message_id_key};
use super::*;

fn vector(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/signatures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn compile(toml_entries: &str, only: bool) -> (Option<Signatures>, Vec<(String, String)>) {
    #[derive(serde::Deserialize)]
    struct T {
        signatures: Vec<TriggerSignatureConfig>,
    }
    let t: T = toml::from_str(&format!("signatures = [{toml_entries}]")).unwrap();
    let mut problems = Vec::new();
    let sigs = Signatures::compile(&t.signatures, only, &mut |k, m| {
        problems.push((k.to_owned(), m))
    });
    (sigs, problems)
}

fn request<'a>(h: &'a HeaderMap, body: &'a [u8], url: &'a str, now_ms: i64) -> SignedRequest<'a> {
    SignedRequest {
        method: "POST",
        url,
        headers: h,
        body,
        now_ms,
    }
}

#[test]
fn standard_webhooks_accepts_the_published_vector_and_refuses_its_invalid_one() {
    let v = vector("standard-webhooks-vectors.json");
    let (sigs, problems) = compile(
        &format!(
            r#"{{ scheme = "standard-webhooks", secret = "{}" }}"#,
            s(&v, "secret")
        ),
        false,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let sigs = sigs.unwrap();
    let ts = v["timestamp"].as_i64().unwrap();
    let (id, body) = (s(&v, "msg_id"), s(&v, "payload"));
    let ts_text = ts.to_string();
    let at = ts * 1000 + 1000;
    let ok = headers(&[
        ("webhook-id", &id),
        ("webhook-timestamp", &ts_text),
        ("webhook-signature", &s(&v, "signature")),
    ]);
    let verified = sigs.verify(&request(&ok, body.as_bytes(), "", at)).unwrap();
    assert_eq!(verified.name, "standard-webhooks");
    assert_eq!(verified.message_key, format!("webhook-id:{id}"));
    // Several signatures in the header: any may match.
    let listed = format!(
        "{} v1a,xyz {}",
        s(&v, "invalid_signature"),
        s(&v, "signature")
    );
    let several = headers(&[
        ("webhook-id", &id),
        ("webhook-timestamp", &ts_text),
        ("webhook-signature", &listed),
    ]);
    assert!(
        sigs.verify(&request(&several, body.as_bytes(), "", at))
            .is_ok()
    );
    let bad = headers(&[
        ("webhook-id", &id),
        ("webhook-timestamp", &ts_text),
        ("webhook-signature", &s(&v, "invalid_signature")),
    ]);
    let refused = sigs.verify(&request(&bad, body.as_bytes(), "", at));
    assert_eq!(refused, Err(SignatureError::Mismatch));
    // The message is signed with its id and timestamp: changing either fails.
    let other_id = headers(&[
        ("webhook-id", "msg_other"),
        ("webhook-timestamp", &ts_text),
        ("webhook-signature", &s(&v, "signature")),
    ]);
    let refused = sigs.verify(&request(&other_id, body.as_bytes(), "", at));
    assert_eq!(refused, Err(SignatureError::Mismatch));
    let tampered = sigs.verify(&request(&ok, b"{\"test\": 2432232315}", "", at));
    assert_eq!(tampered, Err(SignatureError::Mismatch));
}

#[test]
fn timestamps_outside_five_minutes_either_way_are_stale() {
    let v = vector("standard-webhooks-vectors.json");
    let (sigs, _) = compile(
        &format!(
            r#"{{ scheme = "standard-webhooks", secret = "{}" }}"#,
            s(&v, "secret")
        ),
        false,
    );
    let sigs = sigs.unwrap();
    let ts = v["timestamp"].as_i64().unwrap();
    let ts_text = ts.to_string();
    let h = headers(&[
        ("webhook-id", &s(&v, "msg_id")),
        ("webhook-timestamp", &ts_text),
        ("webhook-signature", &s(&v, "signature")),
    ]);
    let body = s(&v, "payload");
    let at = |ms: i64| sigs.verify(&request(&h, body.as_bytes(), "", ms)).err();
    assert_eq!(at(ts * 1000 + TOLERANCE_MS), None);
    assert_eq!(at(ts * 1000 - TOLERANCE_MS), None);
    assert_eq!(
        at(ts * 1000 + TOLERANCE_MS + 1),
        Some(SignatureError::Stale)
    );
    assert_eq!(
        at(ts * 1000 - TOLERANCE_MS - 1),
        Some(SignatureError::Stale)
    );
    // The sender's timestamp may be any number at all.
    let ancient = headers(&[
        ("webhook-id", "x"),
        ("webhook-timestamp", &i64::MIN.to_string()),
        ("webhook-signature", "v1,AAAA"),
    ]);
    let refused = sigs.verify(&request(&ancient, b"{}", "", 0));
    assert_eq!(refused, Err(SignatureError::Stale));
    let junk = headers(&[
        ("webhook-id", "x"),
        ("webhook-timestamp", "soon"),
        ("webhook-signature", "v1,AAAA"),
    ]);
    let refused = sigs.verify(&request(&junk, b"{}", "", 0));
    assert_eq!(refused, Err(SignatureError::Malformed("webhook-timestamp")));
}

#[test]
fn hubspot_v3_matches_an_independent_computation_over_the_decoded_uri() {
    let v = vector("hubspot-v3-vector.json");
    assert_eq!(hubspot_uri(&s(&v, "url_as_sent")), s(&v, "url_as_signed"));
    let (sigs, problems) = compile(
        &format!(
            r#"{{ scheme = "hubspot-v3", secret = "{}" }}"#,
            s(&v, "client_secret")
        ),
        false,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let sigs = sigs.unwrap();
    let ts = s(&v, "timestamp");
    let ms: i64 = ts.parse().unwrap();
    let h = headers(&[
        ("X-HubSpot-Signature-v3", &s(&v, "signature")),
        ("X-HubSpot-Request-Timestamp", &ts),
    ]);
    let (body, url) = (s(&v, "body"), s(&v, "url_as_sent"));
    let verified = sigs
        .verify(&request(&h, body.as_bytes(), &url, ms + 1000))
        .unwrap();
    assert_eq!(verified.name, "hubspot-v3");
    assert!(verified.message_key.starts_with("signature-sha256:"));
    // The URL is signed: another path or query fails.
    let other = url.replace("portal=62515", "portal=62516");
    let refused = sigs.verify(&request(&h, body.as_bytes(), &other, ms));
    assert_eq!(refused, Err(SignatureError::Mismatch));
    let refused = sigs.verify(&request(&h, b"{}", &url, ms));
    assert_eq!(refused, Err(SignatureError::Mismatch));
    let refused = sigs.verify(&request(&h, body.as_bytes(), &url, ms + TOLERANCE_MS + 1));
    assert_eq!(refused, Err(SignatureError::Stale));
}

#[test]
fn hubspot_decodes_only_its_listed_characters() {
    assert_eq!(
        hubspot_uri("https://h.example/p%3a%2F%3F%40%21%24%27%28%29%2A%2C%3B"),
        "https://h.example/p:/?@!$'()*,;"
    );
    // Others stay encoded, and stray percent signs are kept.
    assert_eq!(hubspot_uri("/a%20b%2Bc%25%3"), "/a%20b%2Bc%25%3");
    assert_eq!(hubspot_uri("%"), "%");
}

#[test]
fn hmac_sha256_accepts_githubs_published_example() {
    let v = vector("github-vector.json");
    let (sigs, problems) = compile(
        &format!(
            r#"{{ scheme = "hmac-sha256", header = "{}", prefix = "sha256=", secret = "{}", name = "github" }}"#,
            s(&v, "header"),
            s(&v, "secret"),
        ),
        false,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let sigs = sigs.unwrap();
    let h = headers(&[("x-hub-signature-256", &s(&v, "signature"))]);
    let body = s(&v, "payload");
    let verified = sigs.verify(&request(&h, body.as_bytes(), "", 0)).unwrap();
    assert_eq!(verified.name, "github");
    let refused = sigs.verify(&request(&h, b"Hello, World?", "", 0));
    assert_eq!(refused, Err(SignatureError::Mismatch));
    let no_prefix = headers(&[("x-hub-signature-256", &s(&v, "signature")[7..])]);
    let refused = sigs.verify(&request(&no_prefix, body.as_bytes(), "", 0));
    assert_eq!(refused, Err(SignatureError::Malformed("signature")));
    let not_hex = headers(&[("x-hub-signature-256", "sha256=zz")]);
    let refused = sigs.verify(&request(&not_hex, body.as_bytes(), "", 0));
    assert_eq!(refused, Err(SignatureError::Malformed("signature")));
}

#[test]
fn hmac_sha256_in_base64_and_the_same_body_gives_the_same_key() {
    let (sigs, _) = compile(
        r#"{ scheme = "hmac-sha256", header = "X-Signature", encoding = "base64", secret = "0123456789abcdef0123" }"#,
        false,
    );
    let sigs = sigs.unwrap();
    let mac = hmac_sha256(b"0123456789abcdef0123", &[b"{}"]);
    let h = headers(&[("x-signature", &B64.encode(mac))]);
    let a = sigs.verify(&request(&h, b"{}", "", 0)).unwrap();
    let b = sigs.verify(&request(&h, b"{}", "", 0)).unwrap();
    assert_eq!(a.message_key, b.message_key);
    // Hex is valid base64 too, of the wrong length: a mismatch.
    let h = headers(&[("x-signature", &hex::encode(mac))]);
    assert_eq!(
        sigs.verify(&request(&h, b"{}", "", 0)),
        Err(SignatureError::Mismatch)
    );
    let h = headers(&[("x-signature", "not base64!")]);
    assert_eq!(
        sigs.verify(&request(&h, b"{}", "", 0)),
        Err(SignatureError::Malformed("signature"))
    );
}

#[test]
fn any_entry_may_match_and_the_most_specific_failure_is_reported() {
    let old = format!("whsec_{}", B64.encode([1u8; 32]));
    let new = format!("whsec_{}", B64.encode([2u8; 32]));
    let (sigs, _) = compile(
        &format!(
            r#"{{ scheme = "standard-webhooks", secret = "{old}" }}, {{ scheme = "standard-webhooks", secret = "{new}" }}, {{ scheme = "hubspot-v3", secret = "0123456789abcdef" }}"#
        ),
        false,
    );
    let sigs = sigs.unwrap();
    let now = 1_800_000_000_000i64;
    let signed_with = |secret: &str| {
        let wh = standardwebhooks::Webhook::new(secret).unwrap();
        let sig = wh.sign("msg_1", now / 1000, b"{}").unwrap();
        headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &(now / 1000).to_string()),
            ("webhook-signature", &sig),
        ])
    };
    for secret in [&old, &new] {
        let h = signed_with(secret);
        assert!(sigs.verify(&request(&h, b"{}", "", now)).is_ok());
    }
    let stranger = format!("whsec_{}", B64.encode([3u8; 32]));
    let h = signed_with(&stranger);
    assert_eq!(
        sigs.verify(&request(&h, b"{}", "", now)),
        Err(SignatureError::Mismatch)
    );
    let none = sigs.verify(&request(&HeaderMap::new(), b"{}", "", now));
    let Err(SignatureError::Missing(names)) = none else {
        panic!("{none:?}")
    };
    assert_eq!(names, "`webhook-signature` or `x-hubspot-signature-v3`");
    // The detail never shows the expected value.
    let text = SignatureError::Mismatch.to_string();
    assert!(!text.contains(&B64.encode(hmac_sha256(&[2u8; 32], &[b"{}"]))));
}

#[test]
fn configuration_problems_name_their_key() {
    let cases = [
        (
            r#"{ scheme = "standard-webhooks", secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }"#,
            ".signatures[0].secret",
            "whsec_",
        ),
        (
            r#"{ scheme = "standard-webhooks", secret = "whsec_c2hvcnQ=" }"#,
            ".signatures[0].secret",
            "too short",
        ),
        (
            r#"{ scheme = "standard-webhooks", secret = "whsec_!!!" }"#,
            ".signatures[0].secret",
            "not base64",
        ),
        (
            r#"{ scheme = "hubspot-v3", secret = "short" }"#,
            ".signatures[0].secret",
            "too short",
        ),
        (
            r#"{ scheme = "hmac-sha256", header = "bad header", secret = "0123456789abcdef" }"#,
            ".signatures[0].header",
            "not a header name",
        ),
        (
            r#"{ scheme = "hmac-sha256", header = "X-S", prefix = "sha 256", secret = "0123456789abcdef" }"#,
            ".signatures[0].prefix",
            "visible ASCII",
        ),
        (
            r#"{ scheme = "hubspot-v3", secret = "0123456789abcdef", name = "no spaces" }"#,
            ".signatures[0].name",
            "A-Z",
        ),
    ];
    for (entry, key, what) in cases {
        let (sigs, problems) = compile(entry, false);
        assert!(sigs.is_none(), "{entry}");
        assert!(
            problems.iter().any(|(k, m)| k == key && m.contains(what)),
            "{entry}: {problems:?}"
        );
    }
    let (sigs, problems) = compile("", true);
    assert!(sigs.is_none());
    assert_eq!(problems[0].0, ".signatures_only");
    let (sigs, problems) = compile("", false);
    assert!(sigs.is_none() && problems.is_empty());
}

#[test]
fn long_or_unprintable_message_ids_are_hashed_into_a_valid_key() {
    assert_eq!(message_id_key("msg_1"), "webhook-id:msg_1");
    let long = message_id_key(&"x".repeat(300));
    assert!(long.starts_with("webhook-id-sha256:") && long.len() <= 255);
    assert!(message_id_key("caf\u{e9}").starts_with("webhook-id-sha256:"));
}

#[test]
fn a_signature_without_a_part_it_needs_names_that_part() {
    let (sigs, _) = compile(
        r#"{ scheme = "standard-webhooks", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }, { scheme = "hubspot-v3", secret = "0123456789abcdef" }"#,
        false,
    );
    let sigs = sigs.unwrap();
    let h = headers(&[("X-HubSpot-Signature-v3", "AAAA")]);
    assert_eq!(
        sigs.verify(&request(&h, b"{}", "", 0)),
        Err(SignatureError::Incomplete(
            "x-hubspot-request-timestamp".into()
        ))
    );
    let h = headers(&[("webhook-signature", "v1,AAAA"), ("webhook-id", "m")]);
    let refused = sigs.verify(&request(&h, b"{}", "", 0));
    assert_eq!(
        refused,
        Err(SignatureError::Incomplete("webhook-timestamp".into()))
    );
    assert_eq!(
        refused.unwrap_err().to_string(),
        "the `webhook-timestamp` header is missing"
    );
}
