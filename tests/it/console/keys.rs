//! The API keys page over HTTPS: a key made in the console is shown once
//! (no-store), works against the API at once and stops when disabled
//! there; no hash is ever shown; a read-only session sees no form or
//! button and its forged POSTs are 403; bad forms are error pages.

use super::Console;
use crate::support::TestApp;

async fn app() -> TestApp {
    TestApp::builder()
        .key(
            "admin",
            &[
                "console",
                "keys:read",
                "keys:write",
                "jobs:read",
                "triggers:run",
            ],
        )
        .key("reader", &["console", "keys:read"])
        .key("nokeys", &["console", "jobs:read"])
        .start()
        .await
}

async fn api_status(app: &TestApp, key: &str) -> u16 {
    app.get(key, "/v1/jobs").await.status().as_u16()
}

#[tokio::test]
async fn a_key_made_in_the_console_is_shown_once_works_and_stops_when_disabled() {
    let app = app().await;
    let console = Console::login(&app, "admin").await;
    let list = console.html("/console/keys").await;
    assert!(list.contains(r#"id="key-reader""#), "{list}");
    assert!(!list.contains("sha256"), "never a hash");
    assert!(list.contains(r#"value="jobs:read""#) && !list.contains(r#"value="dnc:write""#));
    let r = console
        .post(
            "/console/keys",
            &[
                ("csrf", &console.csrf),
                ("name", "crm-sync"),
                ("scope", "jobs:read"),
                ("scope", "triggers:run"),
                ("allowed_ips", "127.0.0.1, ::1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    let marker = r#"id="new-key-value">"#;
    let at = html.find(marker).expect("the key is shown") + marker.len();
    let key = html[at..at + html[at..].find('<').unwrap()].to_owned();
    assert!(key.starts_with("cg_"), "{key}");
    assert_eq!(api_status(&app, &key).await, 200, "it works at once");
    let list = console.html("/console/keys").await;
    assert!(
        list.contains(r#"id="key-crm-sync""#) && !list.contains(&key),
        "shown once"
    );
    assert!(list.contains("jobs:read, triggers:run") && list.contains("127.0.0.1, ::1"));
    let stored = app.store().api_keys().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].created_by, "key:admin");

    let r = console
        .post("/console/keys/crm-sync/disable", &[("csrf", &console.csrf)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(api_status(&app, &key).await, 401);
    let list = console.html("/console/keys").await;
    assert!(!list.contains(r#"id="disable-crm-sync""#), "{list}");
    // keys.toml keys have no disable button: the file rules them.
    assert!(!list.contains(r#"id="disable-reader""#));
}

#[tokio::test]
async fn a_read_only_session_sees_no_form_and_its_forged_posts_are_403() {
    let app = app().await;
    let admin = Console::login(&app, "admin").await;
    let r = admin
        .post(
            "/console/keys",
            &[
                ("csrf", &admin.csrf),
                ("name", "kept"),
                ("scope", "jobs:read"),
            ],
        )
        .await;
    assert_eq!(r.status(), 201);
    let reader = Console::login(&app, "reader").await;
    let page = reader.html("/console/keys").await;
    assert!(page.contains(r#"id="key-kept""#));
    assert!(!page.contains("/console/keys/kept/disable") && !page.contains(r#"id="new-key""#));
    let r = reader
        .post(
            "/console/keys",
            &[
                ("csrf", &reader.csrf),
                ("name", "sneaky"),
                ("scope", "keys:read"),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = reader
        .post("/console/keys/kept/disable", &[("csrf", &reader.csrf)])
        .await;
    assert_eq!(r.status(), 403);
    let stored = app.store().api_keys().await.unwrap();
    assert_eq!(stored.len(), 1, "nothing made");
    assert!(stored[0].disabled_at_ms.is_none(), "nothing disabled");

    let none = Console::login(&app, "nokeys").await;
    assert!(!none.html("/console").await.contains("/console/keys"));
    assert_eq!(none.get("/console/keys").await.status(), 403);
}

#[tokio::test]
async fn bad_key_forms_are_error_pages_and_change_nothing() {
    let app = app().await;
    let c = Console::login(&app, "admin").await;
    for (form, status, says) in [
        (vec![("name", "x"), ("scope", "jobs:read")], 403, "CSRF"),
        (vec![("csrf", "wrong"), ("name", "x")], 403, "CSRF"),
        (
            vec![
                ("csrf", &c.csrf),
                ("name", "bad name!"),
                ("scope", "jobs:read"),
            ],
            422,
            "name",
        ),
        (
            vec![("csrf", &c.csrf), ("name", "y"), ("scope", "no:such")],
            422,
            "unknown scope",
        ),
        (
            vec![
                ("csrf", &c.csrf),
                ("name", "z"),
                ("allowed_ips", "not-an-ip"),
            ],
            422,
            "allowed_ips",
        ),
        (
            vec![("csrf", &c.csrf), ("name", "w"), ("scope", "dnc:write")],
            403,
            "dnc:write",
        ),
        (
            vec![
                ("csrf", &c.csrf),
                ("name", "reader"),
                ("scope", "jobs:read"),
            ],
            409,
            "exists",
        ),
    ] {
        let r = c.post("/console/keys", &form).await;
        assert_eq!(r.status(), status, "{form:?}");
        let html = r.text().await.unwrap();
        assert!(html.contains(says), "{form:?}: {html}");
    }
    assert!(app.store().api_keys().await.unwrap().is_empty());
    let r = c
        .post("/console/keys/reader/disable", &[("csrf", &c.csrf)])
        .await;
    assert_eq!(r.status(), 409, "a keys.toml key is not disabled here");
}
