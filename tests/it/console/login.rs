//! Logging in and out: wrong keys and missing scope, login CSRF, the
//! session cookie's attributes, logout, the per-IP limit on attempts, and
//! a console turned off.

use super::security::console_app;
use super::{Console, LOGIN_COOKIE, SESSION_COOKIE, client, login_form, post_login, set_cookie};
use crate::support::{TestApp, problem};

#[tokio::test]
async fn a_wrong_key_or_one_without_the_console_scope_gets_the_login_page_with_401() {
    let app = console_app().await;
    let c = client(&app);
    for key in [
        "cg_not-a-real-key".to_owned(),
        String::new(),
        app.key("api-only").to_owned(),
        app.key("zapier").to_owned(),
    ] {
        let r = post_login(&app, &c, &key).await;
        assert_eq!(r.status(), 401);
        assert!(set_cookie(&r, SESSION_COOKIE).is_none());
        let html = r.text().await.unwrap();
        assert!(html.contains("name=\"api_key\""), "the login page again");
        assert!(html.contains("role=\"alert\""));
        // The key is never echoed.
        assert!(key.is_empty() || !html.contains(&key));
    }
}

#[tokio::test]
async fn login_needs_the_forms_own_token_and_cookie() {
    let app = console_app().await;
    let c = client(&app);
    let key = app.key("ops");
    let (cookie, field) = login_form(&app, &c).await;
    // No cookie (another site's form), a wrong field, no field.
    let attempts = [
        (None, Some(field.as_str())),
        (Some(cookie.as_str()), Some("0000")),
        (Some(cookie.as_str()), None),
    ];
    for (cookie, field) in attempts {
        let mut req = c.post(app.url("/console/login"));
        if let Some(cookie) = cookie {
            req = req.header("cookie", format!("{LOGIN_COOKIE}={cookie}"));
        }
        let mut form = vec![("api_key", key)];
        if let Some(f) = field {
            form.push(("login_csrf", f));
        }
        let r = req.form(&form).send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(set_cookie(&r, SESSION_COOKIE).is_none());
    }
}

#[tokio::test]
async fn the_session_cookie_is_host_only_secure_http_only_and_strict() {
    let app = console_app().await;
    let c = client(&app);
    let r = post_login(&app, &c, app.key("ops")).await;
    assert_eq!(r.status(), 303);
    let (token, header) = set_cookie(&r, SESSION_COOKIE).unwrap();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(header.split("; ").any(|a| a == attr), "{attr} in {header}");
    }
    assert!(!header.to_ascii_lowercase().contains("domain="), "{header}");
    // The login cookie is cleared.
    let (cleared, header) = set_cookie(&r, LOGIN_COOKIE).unwrap();
    assert!(cleared.is_empty() && header.contains("Max-Age=0"));
    // Only the token's hash is stored.
    let hash = hex::encode(callgate::crypto::sha256(token.as_bytes()));
    let stored = app.store().console_session(&hash).await.unwrap().unwrap();
    assert_eq!(stored.principal, "key:ops");
    assert!(app.store().console_session(&token).await.unwrap().is_none());
}

#[tokio::test]
async fn logout_ends_the_session_everywhere() {
    let app = console_app().await;
    let console = Console::login(&app, "ops").await;
    let r = console
        .post("/console/logout", &[("csrf", &console.csrf)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let (cleared, _) = set_cookie(&r, SESSION_COOKIE).unwrap();
    assert!(cleared.is_empty());
    assert!(
        app.store()
            .console_session(&console.id_hash())
            .await
            .unwrap()
            .is_none()
    );
    // The old cookie, replayed, is no session.
    let r = console.get("/console/jobs").await;
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn login_attempts_are_charged_to_the_per_ip_limit() {
    let app = TestApp::builder()
        .limits(
            "per_ip = { requests = 3, per = \"1h\", burst = 3 }\n\
             per_principal = { requests = 100000, per = \"1s\", burst = 100000 }\n\
             per_trigger = { requests = 100000, per = \"1s\", burst = 100000 }\n\
             per_provider = { requests = 100000, per = \"1s\", burst = 100000 }\n",
        )
        .key("ops", &["console"])
        .start()
        .await;
    let c = client(&app);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post_login(&app, &c, "cg_wrong").await.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    // Even the right key waits now.
    let r = post_login(&app, &c, app.key("ops")).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(set_cookie(&r, SESSION_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("Too many attempts"));
}

#[tokio::test]
async fn a_disabled_console_is_not_served() {
    let app = TestApp::builder()
        .main("[console]\nenabled = false")
        .key("ops", &["console"])
        .start()
        .await;
    let r = client(&app)
        .get(app.url("/console/login"))
        .send()
        .await
        .unwrap();
    problem(r, 404).await;
}

#[tokio::test]
async fn a_key_restricted_to_other_addresses_cannot_log_in_from_here() {
    let (office, local) = (
        callgate::auth::api_key::generate(),
        callgate::auth::api_key::generate(),
    );
    let mut keys = String::new();
    for (name, key, allowed) in [
        ("office", &office, "10.0.0.0/8"),
        ("local", &local, "127.0.0.1"),
    ] {
        keys.push_str(&format!(
            "[[keys]]\nname = \"{name}\"\nhash = \"{}\"\nscopes = [\"console\"]\nallowed_ips = [\"{allowed}\"]\n",
            callgate::auth::api_key::hash_for_file(key)
        ));
    }
    let app = TestApp::builder().file("keys.toml", &keys).start().await;
    let c = client(&app);
    let r = post_login(&app, &c, &office).await;
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, SESSION_COOKIE).is_none());
    assert_eq!(post_login(&app, &c, &local).await.status(), 303);
}

/// The key's allowlist holds for the session's every request, not only at
/// login: the same cookie from an address outside it is refused.
#[tokio::test]
async fn a_sessions_requests_from_outside_its_keys_allowlist_are_403() {
    let key = callgate::auth::api_key::generate();
    let keys = format!(
        "[[keys]]\nname = \"local\"\nhash = \"{}\"\nscopes = [\"console\", \"jobs:read\"]\nallowed_ips = [\"127.0.0.1\"]\n",
        callgate::auth::api_key::hash_for_file(&key)
    );
    let app = TestApp::builder()
        .file("keys.toml", &keys)
        .start_with_trusted_proxy()
        .await;
    let c = client(&app);
    let r = post_login(&app, &c, &key).await;
    assert_eq!(r.status(), 303);
    let (token, _) = set_cookie(&r, SESSION_COOKIE).unwrap();
    let get = |xff: Option<&'static str>| {
        let mut req = c
            .get(app.url("/console/jobs"))
            .header("cookie", format!("{SESSION_COOKIE}={token}"));
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 200);
    let refused = get(Some("192.0.2.1")).await.unwrap();
    let body = problem(refused, 403).await;
    assert_eq!(body["type"], "urn:callgate:problem:ip-not-allowed");
    assert_eq!(get(Some("127.0.0.1")).await.unwrap().status(), 200);
}
