//! JWT bearer tokens: the accepted kinds and every attack the issue lists,
//! each refused with a detail that says what is wrong with the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::{
    JWT_AUD, JWT_ISS, JWT_SECRET, TestApp, claims, demo_body, fixture, hs256, now, problem, sign,
};

async fn status_and_detail(app: &TestApp, token: &str) -> (u16, String) {
    let r = app.trigger(token, "demo-call", &demo_body()).await;
    let status = r.status().as_u16();
    if status == 401 {
        let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(www.contains("invalid_token"), "{www}");
        let body = problem(r, 401).await;
        (status, body["detail"].as_str().unwrap().to_owned())
    } else {
        (status, String::new())
    }
}

#[tokio::test]
async fn hmac_rsa_ec_and_eddsa_tokens_from_configured_issuers_are_accepted() {
    let app = TestApp::start().await;
    assert_eq!(
        status_and_detail(&app, &hs256(&claims("triggers:run")))
            .await
            .0,
        202
    );

    let rsa = EncodingKey::from_rsa_pem(&fixture("jwt/rsa-private.pem")).unwrap();
    let mut c = claims("trigger:demo-call");
    c["iss"] = json!("https://rsa.test/");
    c["aud"] = json!(["other"]);
    assert_eq!(
        status_and_detail(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa, &c))
            .await
            .0,
        202
    );

    let ec = EncodingKey::from_ec_pem(&fixture("jwt/ec-private.pem")).unwrap();
    let mut c = claims("triggers:run");
    c["iss"] = json!("https://ec.test/");
    assert_eq!(
        status_and_detail(&app, &sign(Algorithm::ES256, None, &ec, &c))
            .await
            .0,
        202
    );

    let ed = EncodingKey::from_ed_pem(&fixture("jwt/ed-private.pem")).unwrap();
    let mut c = claims("");
    c["iss"] = json!("https://ed.test/");
    c["scp"] = json!(["triggers:run"]);
    assert_eq!(
        status_and_detail(&app, &sign(Algorithm::EdDSA, None, &ed, &c))
            .await
            .0,
        202
    );

    // The principal is issuer + subject; jobs record it.
    let r = app
        .trigger(&hs256(&claims("triggers:run")), "demo-call", &demo_body())
        .await;
    let accepted: Value = r.json().await.unwrap();
    let job: Value = app
        .get(
            &hs256(&claims("triggers:run")),
            accepted["links"]["self"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["created_by"], "jwt:test:user-1");
}

/// A token from raw JSON parts with a junk signature (for refusals that
/// come before the signature is checked).
fn raw(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn malformed_tokens_and_headers_are_refused_saying_which_part_is_wrong() {
    let app = TestApp::start().await;
    let c = claims("triggers:run");
    let malformed = "the bearer token is neither an API key (`cg_…`) nor a well-formed JWT: ";
    let hs = json!({"alg": "HS256", "typ": "JWT"});
    let good = hs256(&c);
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(String, String)> = vec![
        (
            "x".repeat(9000),
            "the bearer token is longer than 8192 bytes".into(),
        ),
        (
            "a.b".into(),
            format!("{malformed}it must be three base64url parts separated by dots"),
        ),
        (
            format!("{good}.more"),
            format!("{malformed}it must be three base64url parts separated by dots"),
        ),
        (
            format!("!!.{}.{}", parts[1], parts[2]),
            format!("{malformed}its header is not a base64url-encoded JSON object"),
        ),
        (
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode("[1]"),
                parts[1],
                parts[2]
            ),
            format!("{malformed}its header is not a base64url-encoded JSON object"),
        ),
        (
            format!("{}.e30K!.{}", parts[0], parts[2]),
            format!("{malformed}its payload is not a base64url-encoded JSON object"),
        ),
        (
            format!("{}.{}.not*base64", parts[0], parts[1]),
            format!("{malformed}a part is not unpadded base64url"),
        ),
        (
            raw(&json!({"alg": "HS256", "kid": 5}), &c),
            format!("{malformed}its header's `kid` is not a string"),
        ),
        (
            raw(&json!({"typ": "JWT"}), &c),
            "the token's header has no `alg`".into(),
        ),
        (
            raw(&json!({"alg": "HS999"}), &c),
            "the token's `alg` is not a JWS algorithm callgate supports \
             (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                .into(),
        ),
        (
            raw(&hs, &json!({"sub": "x"})),
            "the token has no `iss` claim".into(),
        ),
        (
            raw(&hs, &json!({"iss": "https://evil.test/"})),
            "the token's issuer is not trusted".into(),
        ),
    ];
    for (token, detail) in cases {
        assert_eq!(
            status_and_detail(&app, &token).await,
            (401, detail),
            "{}",
            &token[..token.len().min(80)]
        );
    }
}

#[tokio::test]
async fn a_key_named_by_kid_takes_only_its_own_algorithms() {
    // One issuer with an RSA key and an HMAC secret, chosen by `kid`.
    let app = TestApp::builder()
        .main(&format!(
            "[auth.jwt.issuers.mixed]\nissuer = \"https://mixed.test/\"\naudience = \"callgate\"\n\
             algorithms = [\"RS256\", \"HS256\"]\n\
             [[auth.jwt.issuers.mixed.keys]]\nkid = \"r\"\npublic_key_file = \"{}/jwt/rsa-public.pem\"\n\
             [[auth.jwt.issuers.mixed.keys]]\nkid = \"h\"\nsecret = \"${{TEST_JWT_SECRET}}\"\n",
            crate::support::FIXTURES
        ))
        .start()
        .await;
    let mut c = claims("triggers:run");
    c["iss"] = json!("https://mixed.test/");
    let public = fixture("jwt/rsa-public.pem");
    // HS/RS confusion through `kid`: the RSA key's bytes as an HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        Some("r"),
        &EncodingKey::from_secret(&public),
        &c,
    );
    let (status, detail) = status_and_detail(&app, &confused).await;
    assert_eq!(
        (status, detail.as_str()),
        (
            401,
            "the token's algorithm HS256 does not fit the key its `kid` names (that key takes: RS256)"
        )
    );
    // The details name algorithms, never key material or key names.
    for secret in [JWT_SECRET, "rsa-public", "BEGIN", "\"r\""] {
        assert!(!detail.contains(secret), "{detail}");
    }
    let secret = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    assert_eq!(
        status_and_detail(&app, &sign(Algorithm::HS256, Some("h"), &secret, &c))
            .await
            .0,
        202
    );
    let rsa = EncodingKey::from_rsa_pem(&fixture("jwt/rsa-private.pem")).unwrap();
    assert_eq!(
        status_and_detail(&app, &sign(Algorithm::RS256, Some("h"), &rsa, &c)).await,
        (
            401,
            "the token's algorithm RS256 does not fit the key its `kid` names (that key takes: HS256)"
                .into()
        )
    );
    assert_eq!(
        status_and_detail(&app, &sign(Algorithm::RS256, Some("r"), &rsa, &c))
            .await
            .0,
        202
    );
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let app = TestApp::start().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims("triggers:run").to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2ln"),
    ] {
        assert_eq!(
            status_and_detail(&app, &token).await,
            (
                401,
                "the token is unsigned (`alg: none`); unsigned tokens are never accepted".into()
            )
        );
    }
}

#[tokio::test]
async fn an_hmac_token_signed_with_the_rsa_public_key_is_rejected() {
    let app = TestApp::start().await;
    // The classic confusion: the attacker knows the public key and uses its
    // bytes as an HMAC secret, hoping the server verifies HS256 with it.
    let mut c = claims("triggers:run");
    c["iss"] = json!("https://rsa.test/");
    let public = fixture("jwt/rsa-public.pem");
    for alg in [Algorithm::HS256, Algorithm::HS512] {
        let token = sign(alg, Some("rsa-1"), &EncodingKey::from_secret(&public), &c);
        let (status, detail) = status_and_detail(&app, &token).await;
        assert_eq!(status, 401);
        assert_eq!(
            detail,
            format!(
                "the token's algorithm {alg:?} is not accepted by this issuer (accepted: RS256)"
            )
        );
    }
    // And an RS256 token presented to the HMAC-only issuer.
    let rsa = EncodingKey::from_rsa_pem(&fixture("jwt/rsa-private.pem")).unwrap();
    let token = sign(Algorithm::RS256, None, &rsa, &claims("triggers:run"));
    assert_eq!(
        status_and_detail(&app, &token).await,
        (
            401,
            "the token's algorithm RS256 is not accepted by this issuer (accepted: HS256)".into()
        )
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_rejected_beyond_the_leeway() {
    let app = TestApp::start().await;
    let mut c = claims("triggers:run");
    c["exp"] = json!(now() - 120);
    let (status, detail) = status_and_detail(&app, &hs256(&c)).await;
    assert_eq!((status, detail.as_str()), (401, "the token has expired"));

    // Within the configured 30 s leeway: still accepted.
    c["exp"] = json!(now() - 5);
    assert_eq!(status_and_detail(&app, &hs256(&c)).await.0, 202);

    let mut c = claims("triggers:run");
    c["nbf"] = json!(now() + 600);
    let (status, detail) = status_and_detail(&app, &hs256(&c)).await;
    assert_eq!(
        (status, detail.as_str()),
        (401, "the token is not valid yet")
    );
}

#[tokio::test]
async fn wrong_audience_wrong_issuer_and_missing_claims_are_rejected() {
    let app = TestApp::start().await;
    let mut c = claims("triggers:run");
    c["aud"] = json!("someone-else");
    assert_eq!(
        status_and_detail(&app, &hs256(&c)).await,
        (
            401,
            "the token's audience is not accepted by this issuer".into()
        )
    );

    let mut c = claims("triggers:run");
    c["iss"] = json!("https://evil.test/");
    let (status, detail) = status_and_detail(&app, &hs256(&c)).await;
    assert_eq!(
        (status, detail.as_str()),
        (401, "the token's issuer is not trusted")
    );

    for missing in ["exp", "aud", "sub"] {
        let mut c = claims("triggers:run");
        c.as_object_mut().unwrap().remove(missing);
        assert_eq!(
            status_and_detail(&app, &hs256(&c)).await,
            (
                401,
                format!("the token is missing the required `{missing}` claim")
            ),
        );
    }
    let mut c = claims("triggers:run");
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        status_and_detail(&app, &hs256(&c)).await,
        (401, "the token has no `iss` claim".into())
    );
    // CVE-2026-25537: a string-typed exp must not bypass expiry; and a
    // claim of the wrong type is named as such, not as missing.
    let number = "a number: seconds since the epoch";
    for (claim, value, must) in [
        ("exp", json!("99999999999"), number),
        ("exp", json!("never"), number),
        ("exp", json!(-1), number),
        ("nbf", json!("0"), number),
        ("aud", json!(7), "a string or an array of strings"),
        ("sub", json!(42), "a non-empty string"),
        ("sub", json!(""), "a non-empty string"),
        ("iss", json!(["https://idp.test/"]), "a string"),
    ] {
        let mut c = claims("triggers:run");
        c[claim] = value.clone();
        assert_eq!(
            status_and_detail(&app, &hs256(&c)).await,
            (401, format!("the token's `{claim}` claim must be {must}")),
            "{claim}: {value}"
        );
    }
    // A fractional NumericDate is a number (RFC 7519 §2).
    let mut c = claims("triggers:run");
    c["exp"] = json!(now() as f64 + 300.5);
    assert_eq!(status_and_detail(&app, &hs256(&c)).await.0, 202);
    // `null` is as good as absent.
    let mut c = claims("triggers:run");
    c["exp"] = Value::Null;
    assert_eq!(
        status_and_detail(&app, &hs256(&c)).await,
        (401, "the token is missing the required `exp` claim".into())
    );
}

#[tokio::test]
async fn a_tampered_payload_or_signature_is_rejected() {
    let app = TestApp::start().await;
    let token = hs256(&claims("trigger:other"));
    // The genuine token verifies (and is remembered) but lacks the scope: 403.
    assert_eq!(status_and_detail(&app, &token).await.0, 403);
    let parts: Vec<&str> = token.split('.').collect();
    // Escalate the scope, keep the signature.
    let forged = URL_SAFE_NO_PAD.encode(claims("triggers:run jobs:read").to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    let (status, detail) = status_and_detail(&app, &tampered).await;
    assert_eq!(
        (status, detail.as_str()),
        (401, "the token's signature does not verify")
    );
    // A token signed with another secret.
    let other = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another-secret-another-secret-another!!"),
        &claims("triggers:run"),
    );
    assert_eq!(
        status_and_detail(&app, &other).await,
        (401, "the token's signature does not verify".into())
    );
    assert_eq!(status_and_detail(&app, &token).await.0, 403);
    assert!(JWT_SECRET.len() >= 32 && !JWT_ISS.is_empty() && !JWT_AUD.is_empty());
}

#[tokio::test]
async fn a_kid_that_names_no_configured_key_is_rejected() {
    let app = TestApp::start().await;
    let rsa = EncodingKey::from_rsa_pem(&fixture("jwt/rsa-private.pem")).unwrap();
    let mut c = claims("triggers:run");
    c["iss"] = json!("https://rsa.test/");
    for (kid, detail) in [
        (
            Some("rsa-2"),
            "the token's `kid` does not name a configured key of this issuer",
        ),
        (
            None,
            "the token has no `kid`; this issuer's keys are chosen by `kid`",
        ),
    ] {
        assert_eq!(
            status_and_detail(&app, &sign(Algorithm::RS256, kid, &rsa, &c)).await,
            (401, detail.to_owned()),
            "kid {kid:?}"
        );
    }
    assert_eq!(
        status_and_detail(&app, &sign(Algorithm::RS256, Some("rsa-1"), &rsa, &c))
            .await
            .0,
        202
    );
}

#[tokio::test]
async fn callgate_jwt_mint_produces_a_token_the_gateway_accepts() {
    let app = TestApp::start().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "jwt",
            "mint",
            "--issuer",
            "test",
            "--sub",
            "cli-user",
            "--scope",
            "triggers:run",
            "--ttl",
            "5m",
            "--config",
        ])
        .arg(app.config_dir.path())
        .env("TEST_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.lines().count(), 1, "stdout holds only the token");
    assert_eq!(status_and_detail(&app, token.trim()).await.0, 202);
}
