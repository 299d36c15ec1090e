//! The endpoints pages over HTTPS against a real local receiver: an
//! endpoint whose breaker opened shows it (list, detail, overview), with
//! its last error and its pending deliveries linked to the filtered
//! deliveries list; without `deliveries:read` the pages are 403.

use std::time::Duration;

use super::Console;
use crate::deliveries::{
    NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, crm_endpoint, notify,
};
use crate::receiver::{Receiver, Reply};
use crate::runner::eventually;
use crate::support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_breaker_shows_with_its_last_error_and_pending_deliveries() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(503));
    let breaker = "breaker = { failures = 2, cooldown = \"1h\" }";
    let app = TestApp::builder()
        .file("endpoints.toml", &crm_endpoint(&rx.url("/hooks"), breaker))
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", &["console", "jobs:read", "deliveries:read"])
        .key("viewer", &["console", "jobs:read"])
        .background_runner()
        .start()
        .await;
    notify(&app).await;
    let console = Console::login(&app, "ops").await;
    let list = eventually(Duration::from_secs(20), "the breaker to open", || async {
        let html = console.html("/console/endpoints").await;
        html.contains(">open<").then_some(html)
    })
    .await;
    assert!(list.contains(r#"href="/console/endpoints/crm""#), "{list}");
    assert!(list.contains("0.0% of 2"), "{list}");
    let page = console.html("/console/endpoints/crm").await;
    assert!(page.contains(r#"id="breaker">open<"#), "{page}");
    assert!(page.contains("HTTP 503"), "the last error: {page}");
    assert!(page.contains("2 failures in a row"));
    let pending = "/console/deliveries?endpoint=crm&amp;status=pending";
    assert!(page.contains(&format!(r#"href="{pending}">1<"#)), "{page}");
    // The link leads to the one pending delivery.
    let deliveries = console.html(&pending.replace("&amp;", "&")).await;
    assert!(
        deliveries.contains("/console/deliveries/dlv_"),
        "{deliveries}"
    );
    // The overview lists it among the open breakers.
    let overview = console.html("/console").await;
    assert!(
        overview.contains(r#"href="/console/endpoints/crm">crm</a>"#),
        "{overview}"
    );
    assert!(
        !page.contains(&rx.url("/hooks")),
        "the URL (maybe a credential) is not shown"
    );

    let viewer = Console::login(&app, "viewer").await;
    assert!(!viewer.html("/console").await.contains("/console/endpoints"));
    for path in ["/console/endpoints", "/console/endpoints/crm"] {
        assert_eq!(viewer.get(path).await.status(), 403, "{path}");
    }
    assert_eq!(console.get("/console/endpoints/nope").await.status(), 404);
}
