//! The console's defences, each tried: no session, the headers of every
//! answer, CSRF on every write, escaping, scopes and the navigation.
//! (Logging in and out: `login.rs`; expiry: `sessions.rs`.)

use callgate::clock::rfc3339;
use serde_json::json;

use super::{Console, SESSION_COOKIE, client};
use crate::jobs_api::accept;
use crate::support::{TestApp, problem};

pub async fn console_app() -> TestApp {
    TestApp::builder()
        .key("zapier", &["triggers:run"])
        .key(
            "ops",
            &[
                "console",
                "jobs:read",
                "jobs:write",
                "dnc:read",
                "dnc:write",
                "deliveries:read",
                "triggers:run",
            ],
        )
        .key(
            "viewer",
            &["console", "jobs:read", "dnc:read", "deliveries:read"],
        )
        .key("api-only", &["jobs:read", "jobs:write"])
        .start()
        .await
}

fn later() -> String {
    rfc3339(callgate::clock::system_now_ms() + 3_600_000)
}

#[tokio::test]
async fn without_a_session_a_page_is_a_303_to_login_and_an_xhr_a_401_problem() {
    let app = console_app().await;
    let c = client(&app);
    for path in [
        "/console",
        "/console/jobs",
        "/console/calls",
        "/console/do-not-call",
    ] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/console/login", "{path}");
    }
    // A forged or stale cookie is no session either.
    let r = c
        .get(app.url("/console/jobs"))
        .header("cookie", format!("{SESSION_COOKIE}=0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    for (name, value) in [
        ("accept", "application/json"),
        ("x-requested-with", "XMLHttpRequest"),
        ("hx-request", "true"),
    ] {
        let r = c
            .get(app.url("/console/jobs"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        problem(r, 401).await;
    }
    // A POST without a session never reaches its handler.
    let r = c
        .post(app.url("/console/do-not-call"))
        .form(&[("number", "+15550120000")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        app.store()
            .do_not_call("+15550120000")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn every_console_answer_carries_the_security_headers() {
    let app = console_app().await;
    let console = Console::login(&app, "ops").await;
    let anonymous = client(&app);
    let answers = vec![
        console.get("/console/jobs").await,
        console.get("/console/jobs/job_nope").await,
        anonymous
            .get(app.url("/console/login"))
            .send()
            .await
            .unwrap(),
        anonymous
            .get(app.url("/console/jobs"))
            .send()
            .await
            .unwrap(),
    ];
    for r in answers {
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(
            csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
    }
    // Pages name their stylesheet by content hash; it is cached for a year.
    let html = console.html("/console/jobs").await;
    assert!(html.contains("name=\"viewport\""));
    assert!(!html.contains("<script") && !html.contains(" style=") && !html.contains("<style"));
    let at = html.find("/console/assets/console.").unwrap();
    let href = &html[at..at + html[at..].find('"').unwrap()];
    let css = anonymous.get(app.url(href)).send().await.unwrap();
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        css.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=31536000")
    );
    let stale = anonymous
        .get(app.url("/console/assets/console.0000000000000000.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 404);
}

#[tokio::test]
async fn a_write_without_the_sessions_csrf_token_is_403_and_changes_nothing() {
    let app = console_app().await;
    let console = Console::login(&app, "ops").await;
    let job = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234", "schedule_at": later()}),
    )
    .await;
    let other = Console::login(&app, "viewer").await;
    for token in [None, Some("wrong"), Some(other.csrf.as_str())] {
        let mut form = vec![("number", "+15550120000")];
        if let Some(t) = token {
            form.push(("csrf", t));
        }
        let r = console.post("/console/do-not-call", &form).await;
        assert_eq!(r.status(), 403, "{token:?}");
        let r = console
            .post(&format!("/console/jobs/{job}/cancel"), &form)
            .await;
        assert_eq!(r.status(), 403);
        let r = console.post("/console/logout", &form).await;
        assert_eq!(r.status(), 403);
    }
    assert!(
        app.store()
            .do_not_call("+15550120000")
            .await
            .unwrap()
            .is_none()
    );
    let page = console.html(&format!("/console/jobs/{job}")).await;
    assert!(page.contains("id=\"job-status\">scheduled<"), "{page}");
    // With the token, the same writes work.
    let r = console
        .post(
            &format!("/console/jobs/{job}/cancel"),
            &[("csrf", &console.csrf)],
        )
        .await;
    assert_eq!(r.status(), 303);
    let page = console.html(&format!("/console/jobs/{job}")).await;
    assert!(page.contains("id=\"job-status\">cancelled<"), "{page}");
}

#[tokio::test]
async fn a_script_in_a_trigger_input_is_shown_escaped() {
    let app = console_app().await;
    let console = Console::login(&app, "ops").await;
    let evil = "<script>alert(1)</script>";
    let job = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234", "customer": {"name": evil}, "schedule_at": later()}),
    )
    .await;
    let page = console.html(&format!("/console/jobs/{job}")).await;
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    // The test form shows the normalised input escaped too.
    let r = console
        .post(
            "/console/triggers/demo-call/test",
            &[
                ("csrf", &console.csrf),
                (
                    "payload",
                    &json!({"phone_number": "5550121234", "customer": {"name": evil}}).to_string(),
                ),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(!page.contains("<script"), "{page}");
    assert!(
        page.contains("HTTP 200") && page.contains("+15550121234"),
        "normalised: {page}"
    );
}

#[tokio::test]
async fn a_key_without_write_scopes_sees_no_write_button_and_its_forged_post_is_403() {
    let app = console_app().await;
    let viewer = Console::login(&app, "viewer").await;
    let job = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234", "schedule_at": later()}),
    )
    .await;
    let page = viewer.html(&format!("/console/jobs/{job}")).await;
    assert!(page.contains("id=\"job-status\">scheduled<"));
    assert!(!page.contains("id=\"cancel\""), "no cancel button");
    let dnc = viewer.html("/console/do-not-call").await;
    assert!(!dnc.contains("id=\"dnc-add\""), "no add form");
    // The forged writes carry a valid CSRF token: only the scope stops them.
    let r = viewer
        .post(
            &format!("/console/jobs/{job}/cancel"),
            &[("csrf", &viewer.csrf)],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("jobs:write"));
    let r = viewer
        .post(
            "/console/do-not-call",
            &[("csrf", &viewer.csrf), ("number", "+15550120000")],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(
        app.store()
            .do_not_call("+15550120000")
            .await
            .unwrap()
            .is_none()
    );
    let page = viewer.html(&format!("/console/jobs/{job}")).await;
    assert!(page.contains("id=\"job-status\">scheduled<"));
}

#[tokio::test]
async fn the_navigation_shows_only_what_the_session_may_read() {
    let app = TestApp::builder()
        .key("bare", &["console"])
        .key(
            "ops",
            &["console", "jobs:read", "deliveries:read", "dnc:read"],
        )
        .start()
        .await;
    let bare = Console::login(&app, "bare").await;
    let page = bare.html("/console/jobs").await;
    assert!(page.contains("href=\"/console/jobs\"") && page.contains("href=\"/console/triggers\""));
    for hidden in [
        "/console/calls",
        "/console/deliveries",
        "/console/do-not-call",
    ] {
        assert!(!page.contains(&format!("href=\"{hidden}\"")), "{hidden}");
    }
    // The page itself is refused as the API refuses it.
    assert_eq!(bare.get("/console/deliveries").await.status(), 403);
    let ops = Console::login(&app, "ops").await;
    let page = ops.html("/console/jobs").await;
    for shown in [
        "/console/calls",
        "/console/deliveries",
        "/console/do-not-call",
    ] {
        assert!(page.contains(&format!("href=\"{shown}\"")), "{shown}");
    }
}
