//! Console logins with API keys stored in the database (`POST /v1/keys`):
//! they log in as `keys.toml` keys do, their sessions live while the key
//! does, and end once it is disabled.

use serde_json::{Value, json};

use super::{Console, post_login};
use crate::support::TestApp;

async fn app() -> TestApp {
    TestApp::builder()
        .key(
            "admin",
            &["keys:read", "keys:write", "console", "jobs:read"],
        )
        .start()
        .await
}

/// Makes a stored key `name` with `scopes`; its plaintext.
async fn stored_key(app: &TestApp, name: &str, scopes: &[&str]) -> String {
    let r = app
        .client
        .post(app.url("/v1/keys"))
        .bearer_auth(app.key("admin"))
        .json(&json!({"name": name, "scopes": scopes}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out: Value = r.json().await.unwrap();
    out["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_stored_key_logs_in_and_its_session_lives_until_the_key_is_disabled() {
    let app = app().await;
    let key = stored_key(&app, "night-ops", &["console", "jobs:read"]).await;
    let console = Console::login_key(&app, &key).await;
    // Several pages later the session still stands (the session check
    // finds the stored key, not only `keys.toml`).
    for _ in 0..3 {
        let html = console.html("/console/jobs").await;
        assert!(html.contains("key:night-ops"), "the page names who acts");
    }
    let r = app
        .client
        .post(app.url("/v1/keys/night-ops/disable"))
        .bearer_auth(app.key("admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Disabling refreshes this instance's keys at once.
    let r = console.get("/console/jobs").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    // And the key no longer logs in.
    let again = post_login(&app, &super::client(&app), &key).await;
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn a_stored_key_without_console_does_not_log_in() {
    let app = app().await;
    let key = stored_key(&app, "reader", &["jobs:read"]).await;
    let r = post_login(&app, &super::client(&app), &key).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("lacks the `console` scope")
    );
}
