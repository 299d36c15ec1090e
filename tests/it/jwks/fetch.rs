//! Fetching: outages, cache headers, discovery, the SSRF guard and `ca_file`.

use super::*;

#[tokio::test]
async fn when_the_provider_goes_down_the_last_good_keys_keep_working() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    idp.set_cache_control("max-age=1");
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&local(
            "down",
            &idp,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .start()
        .await;
    let iss = "https://down.test/";
    assert_eq!(call(&app, &a.token(iss, "before")).await.0, 202);
    idp.set_down(true);
    let at_outage = idp.hits();
    eventually(Duration::from_secs(15), "two failed fetches", || async {
        (idp.hits() >= at_outage + 2).then_some(())
    })
    .await;
    // A token never seen (not in the verified cache) still verifies.
    assert_eq!(call(&app, &a.token(iss, "during")).await.0, 202);
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"down\",outcome=\"error\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(&app, "callgate_jwks_keys{issuer=\"down\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_provider_down_at_start_gives_401_until_its_keys_arrive() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    idp.set_down(true);
    let app = TestApp::builder()
        .main(&local("late", &idp, "[\"ES256\"]", ""))
        .start()
        .await;
    let token = a.token("https://late.test/", "user");
    assert_eq!(call(&app, &token).await, (401, NOT_FETCHED.to_owned()));
    idp.set_down(false);
    accepted_within(&app, &token, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn cache_control_decides_when_the_key_set_is_fetched_again() {
    let a = Key::es256("a");
    let short = Idp::start(vec![a.jwk.clone()]).await;
    short.set_cache_control("public, max-age=1");
    let long = Idp::start(vec![a.jwk.clone()]).await;
    long.set_cache_control("public, max-age=86400");
    let _app = TestApp::builder()
        .main(&local(
            "short",
            &short,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .main(&local(
            "long",
            &long,
            "[\"ES256\"]",
            "jwks_cache_min = \"1s\"",
        ))
        .start()
        .await;
    eventually(Duration::from_secs(15), "max-age=1 refetches", || async {
        (short.hits() >= 3).then_some(())
    })
    .await;
    assert_eq!(long.hits(), 1, "max-age=86400 is not due yet");
}

#[tokio::test]
async fn discovery_finds_the_key_set_and_checks_what_it_says() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    let iss = idp.base();
    *idp.state.discovery.lock().unwrap() = Some(json!({"issuer": iss, "jwks_uri": idp.jwks_url()}));
    // A document that names another issuer is not taken.
    let liar = Idp::start(vec![a.jwk.clone()]).await;
    *liar.state.discovery.lock().unwrap() =
        Some(json!({"issuer": "https://someone-else.test/", "jwks_uri": liar.jwks_url()}));
    // `allow_private` covers the discovery host, not a `jwks_uri` elsewhere.
    let elsewhere = Idp::start(vec![a.jwk.clone()]).await;
    *elsewhere.state.discovery.lock().unwrap() = Some(json!({
        "issuer": elsewhere.base(),
        "jwks_uri": format!("http://localhost:{}/jwks", elsewhere.addr.port()),
    }));
    let relaxed = "discovery = true\nallow_http = true\nallow_private = true";
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&issuer("disc", &iss, "[\"ES256\"]", relaxed, ""))
        .main(&issuer("liar", &liar.base(), "[\"ES256\"]", relaxed, ""))
        .main(&issuer(
            "far",
            &elsewhere.base(),
            "[\"ES256\"]",
            relaxed,
            "",
        ))
        .start()
        .await;
    assert_eq!(call(&app, &a.token(&iss, "user")).await.0, 202);
    assert_eq!(idp.state.discovery_hits.load(Ordering::SeqCst), 1);
    assert_eq!(idp.hits(), 1);

    assert_eq!(
        call(&app, &a.token(&liar.base(), "user")).await,
        (401, NOT_FETCHED.to_owned())
    );
    assert_eq!(liar.hits(), 0, "its jwks_uri was never fetched");

    assert_eq!(
        call(&app, &a.token(&elsewhere.base(), "user")).await,
        (401, NOT_FETCHED.to_owned())
    );
    assert_eq!(elsewhere.hits(), 0);
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"far\",outcome=\"refused\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_hosts_and_redirects_without_allow_private() {
    let a = Key::es256("a");
    let idp = Idp::start(vec![a.jwk.clone()]).await;
    let hop = Idp::start(vec![a.jwk.clone()]).await;
    // 127.0.0.1 is allowed for `hop`; its redirect to another private
    // host is not.
    *hop.state.redirect.lock().unwrap() =
        Some(format!("http://localhost:{}/jwks", idp.addr.port()));
    let by_name = format!("http://localhost:{}/jwks", idp.addr.port());
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .main(&issuer(
            "named",
            "https://named.test/",
            "[\"ES256\"]",
            &format!("jwks_url = \"{by_name}\"\nallow_http = true"),
            "",
        ))
        .main(&local("hop", &hop, "[\"ES256\"]", ""))
        .start()
        .await;
    for (id, iss) in [
        ("named", "https://named.test/"),
        ("hop", "https://hop.test/"),
    ] {
        assert_eq!(
            call(&app, &a.token(iss, "user")).await,
            (401, NOT_FETCHED.to_owned()),
            "{id}"
        );
        let refused = format!("callgate_jwks_fetch_total{{issuer=\"{id}\",outcome=\"refused\"}}");
        assert!(metric(&app, &refused).await >= 1.0, "{id}");
    }
    assert_eq!(idp.hits(), 0, "the private JWKS was never reached");
    assert!(hop.hits() >= 1);
}

#[tokio::test]
async fn ca_file_trusts_a_private_ca_for_an_https_key_set_and_redirects_stay_on_https() {
    crate::support::crypto();
    let (ca_pem, tls) = ca_signed_tls();
    let a = Key::es256("a");
    let idp = Idp::serve(vec![a.jwk.clone()], Some(tls.clone())).await;
    // An https key set that redirects to plain http on its own host:
    // refused without `allow_http`.
    let plain = Idp::start(vec![a.jwk.clone()]).await;
    let downgrade = Idp::serve(vec![a.jwk.clone()], Some(tls)).await;
    *downgrade.state.redirect.lock().unwrap() = Some(plain.jwks_url());
    let url = format!("jwks_url = \"{}\"\nallow_private = true", idp.jwks_url());
    let app = TestApp::builder()
        .key("prom", &["metrics:read"])
        .file("idp-ca.pem", &ca_pem)
        .main(&issuer(
            "withca",
            "https://withca.test/",
            "[\"ES256\"]",
            &url,
            "ca_file = \"idp-ca.pem\"",
        ))
        .main(&issuer(
            "noca",
            "https://noca.test/",
            "[\"ES256\"]",
            &url,
            "",
        ))
        .main(&issuer(
            "downgrade",
            "https://downgrade.test/",
            "[\"ES256\"]",
            &format!(
                "jwks_url = \"{}\"\nallow_private = true",
                downgrade.jwks_url()
            ),
            "ca_file = \"idp-ca.pem\"",
        ))
        .start()
        .await;
    assert_eq!(
        call(&app, &a.token("https://withca.test/", "u")).await.0,
        202
    );
    assert_eq!(
        call(&app, &a.token("https://noca.test/", "u")).await,
        (401, NOT_FETCHED.to_owned()),
        "without ca_file the certificate is not trusted"
    );
    assert!(
        metric(
            &app,
            "callgate_jwks_fetch_total{issuer=\"noca\",outcome=\"error\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        call(&app, &a.token("https://downgrade.test/", "u")).await,
        (401, NOT_FETCHED.to_owned())
    );
    assert!(downgrade.hits() >= 1);
    assert_eq!(plain.hits(), 0, "the plain-http hop was never taken");
    let refused = "callgate_jwks_fetch_total{issuer=\"downgrade\",outcome=\"refused\"}";
    assert!(metric(&app, refused).await >= 1.0);
}
