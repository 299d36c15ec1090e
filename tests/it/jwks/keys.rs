//! Which keys of a key set are taken, and when a new `kid` is looked for.

use super::*;

#[tokio::test]
async fn a_rotated_key_set_takes_the_new_kid_and_refuses_the_old_one_even_when_cached() {
    let a = Key::es256("a");
    let b = Key::es256("b");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    idp.set_cache_control("max-age=1");
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&local(
            "rotate",
            &idp,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .start()
        .await;
    let iss = "https://rotate.test/";
    let old = a.token(iss, "user-a");
    assert_eq!(call(&app, &old).await.0, 202, "fetched at start");

    // A new kid appears: the token naming it is accepted once a fetch
    // brought it (at most a refresh interval later).
    idp.set_keys(vec![a.jwk.clone(), b.jwk.clone()]);
    accepted_within(&app, &b.token(iss, "user-b"), Duration::from_secs(15)).await;

    // The old key leaves: its token, though verified (and cached) before,
    // is refused once the set without it is in force.
    idp.set_keys(vec![b.jwk.clone()]);
    let refused = eventually(Duration::from_secs(15), "the old key to go", || async {
        let (status, detail) = call(&app, &old).await;
        (status == 401).then_some(detail)
    })
    .await;
    assert_eq!(refused, UNKNOWN_KID);
    assert_eq!(call(&app, &b.token(iss, "user-b2")).await.0, 202);
    assert_eq!(
        metric(&app, "callgate_jwks_keys{issuer=\"rotate\"}").await,
        1.0
    );
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"rotate\",outcome=\"ok\"}"
        )
        .await
            >= 3.0
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_min_refresh() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    let app = TestApp::builder()
        .main(&local("flood", &idp, "[\"ES256\"]", ""))
        .start()
        .await;
    assert_eq!(idp.hits(), 1, "one fetch at start");
    let iss = "https://flood.test/";
    let started = Instant::now();
    let mut sent = 0;
    // Made-up kids, 8 at a time, for 3.5 s (the interval is 1 s).
    while started.elapsed() < Duration::from_millis(3500) {
        let batch: Vec<String> = (0..8)
            .map(|i| a.token_as(iss, "flooder", &format!("random-{sent}-{i}")))
            .collect();
        let answers = futures_util::future::join_all(batch.iter().map(|t| call(&app, t))).await;
        for answer in answers {
            assert_eq!(answer, (401, UNKNOWN_KID.to_owned()));
        }
        sent += 8;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = idp.hits();
    assert!(sent >= 24, "only {sent} tokens sent");
    // The start's fetch, then at most one per started second.
    let bound = 1 + elapsed.ceil() as usize;
    assert!(
        (2..=bound).contains(&fetches),
        "{fetches} fetches for {sent} unknown kids in {elapsed:.1} s (bound {bound})"
    );
    // The known key still works.
    assert_eq!(call(&app, &a.token(iss, "user")).await.0, 202);
}

#[tokio::test]
async fn keys_of_other_types_uses_or_algorithms_are_ignored() {
    let rsa = Key::rs256("rsa");
    let ec = Key::es256("ec");
    let secret = "a-shared-secret-that-is-32-bytes-or-more!";
    let oct = json!({"kty": "oct", "kid": "hmac", "k": base64_url(secret.as_bytes())});
    let mut enc = rsa.jwk.clone();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    let idp = Idp::start(vec![rsa.jwk.clone(), ec.jwk.clone(), oct, enc]).await;
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&local("types", &idp, "[\"RS256\"]", ""))
        .start()
        .await;
    let iss = "https://types.test/";
    assert_eq!(call(&app, &rsa.token(iss, "ok")).await.0, 202);
    // Only the RSA signature key was taken.
    assert_eq!(
        metric(&app, "callgate_jwks_keys{issuer=\"types\"}").await,
        1.0
    );
    // An EC key does not widen an RS256-only issuer.
    let (status, detail) = call(&app, &ec.token(iss, "ec")).await;
    assert_eq!(status, 401);
    assert!(detail.contains("ES256 is not accepted"), "{detail}");
    // The ignored keys' kids name nothing (had they been taken, the
    // refusal would name their algorithms).
    for kid in ["ec", "hmac", "enc"] {
        assert_eq!(
            call(&app, &rsa.token_as(iss, "x", kid)).await,
            (401, UNKNOWN_KID.to_owned()),
            "{kid}"
        );
    }
    // The `oct` key's secret signs nothing acceptable.
    let hs = sign(
        Algorithm::HS256,
        Some("hmac"),
        &EncodingKey::from_secret(secret.as_bytes()),
        &token_claims(iss, "hs"),
    );
    let (status, detail) = call(&app, &hs).await;
    assert_eq!(status, 401);
    assert!(detail.contains("HS256 is not accepted"), "{detail}");
}

#[tokio::test]
async fn a_new_kid_waits_for_one_refetch_unless_the_last_fetch_is_too_recent() {
    let a = Key::es256("a");
    let b = Key::es256("b");
    let quick = Idp::start(vec![a.jwk.clone()]).await;
    let slow = Idp::start(vec![a.jwk.clone()]).await;
    let app = TestApp::builder()
        .main(&local("quick", &quick, "[\"ES256\"]", ""))
        .main(&issuer(
            "slow",
            "https://slow.test/",
            "[\"ES256\"]",
            &format!("jwks_url = \"{}\"", slow.jwks_url()),
            "allow_http = true\nallow_private = true\njwks_min_refresh = \"1h\"",
        ))
        .start()
        .await;
    let started = Instant::now();
    quick.set_keys(vec![a.jwk.clone(), b.jwk.clone()]);
    slow.set_keys(vec![a.jwk.clone(), b.jwk.clone()]);

    // Within an hour of its start-up fetch, `slow` refuses at once.
    assert_eq!(
        call(&app, &b.token("https://slow.test/", "u")).await,
        (401, UNKNOWN_KID.to_owned())
    );
    assert_eq!(slow.hits(), 1);

    // Once `quick`'s second has passed since its start-up fetch (which
    // began before `start` returned), the first token naming the new kid
    // asks for a refetch, waits for it and is accepted.
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    assert_eq!(
        call(&app, &b.token("https://quick.test/", "u")).await.0,
        202
    );
    assert_eq!(quick.hits(), 2);
}
