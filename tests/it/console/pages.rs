//! Every console page over HTTPS: each renders for an operator, each bad
//! filter or unknown id is an error page with the API's status, the
//! trigger test form shows violations and creates nothing, do-not-call
//! numbers are added and removed, and no secret reaches a page.

use serde_json::json;

use super::Console;
use crate::deliveries::{
    NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, WH_SECRET, crm_endpoint, delivery_when,
    notify,
};
use crate::jobs_api::accept;
use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, fast_simulator};
use crate::support::{CRM_TOKEN, TestApp};

const OPS: &[&str] = &[
    "console",
    "jobs:read",
    "jobs:write",
    "dnc:read",
    "dnc:write",
    "deliveries:read",
    "deliveries:write",
    "triggers:run",
];

async fn app() -> TestApp {
    TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .key("ops", OPS)
        .start()
        .await
}

#[tokio::test]
async fn every_page_renders_for_an_operator() {
    let app = app().await;
    let job = accept(
        &app,
        "zapier",
        "demo-call",
        &json!({"phone_number": "+15550121234"}),
    )
    .await;
    app.run_pending().await;
    let console = Console::login(&app, "ops").await;
    let page = console.html(&format!("/console/jobs/{job}")).await;
    let at = page
        .find("/console/calls/call_")
        .expect("the job's call is linked");
    let call = &page[at..at + page[at..].find('"').unwrap()];
    for (path, shows) in [
        ("/console/jobs".to_owned(), job.clone()),
        (
            "/console/jobs?trigger=demo-call&phone=%2B15550121234".to_owned(),
            job.clone(),
        ),
        ("/console/calls".to_owned(), "+15550121234".to_owned()),
        (call.to_owned(), "Status history".to_owned()),
        (
            "/console/deliveries".to_owned(),
            "No deliveries match.".to_owned(),
        ),
        ("/console/triggers".to_owned(), "demo-call".to_owned()),
        (
            "/console/triggers/demo-call".to_owned(),
            "Webhooks by Zapier".to_owned(),
        ),
        ("/console/do-not-call".to_owned(), "+15550100000".to_owned()),
    ] {
        let html = console.html(&path).await;
        assert!(html.contains(&shows), "{path} shows {shows}: {html}");
        assert!(
            html.contains("<main>") && html.contains("Log out"),
            "{path}"
        );
    }
    let trigger = console.html("/console/triggers/demo-call").await;
    assert!(trigger.contains("curl -X POST") && trigger.contains("/v1/triggers/demo-call"));
    assert!(trigger.contains("phone_number"), "the input schema");
    // Empty form fields are no filter (a form sends every field).
    let all = console
        .html("/console/jobs?status=&trigger=&phone=&since=")
        .await;
    assert!(all.contains(&job));
}

#[tokio::test]
async fn bad_filters_and_unknown_ids_are_error_pages_with_the_apis_status() {
    let app = app().await;
    let console = Console::login(&app, "ops").await;
    for (path, status, says) in [
        ("/console/jobs?status=bogus", 400, "status"),
        ("/console/jobs?since=yesterday", 400, "since"),
        ("/console/jobs?cursor=nope", 400, "cursor"),
        ("/console/jobs?color=red", 400, "color"),
        ("/console/jobs/job_nope", 404, "no job"),
        ("/console/calls?phone=abc", 400, "phone"),
        ("/console/calls/call_nope", 404, "no call"),
        ("/console/deliveries?status=lost", 400, "status"),
        ("/console/deliveries/dlv_nope", 404, "no delivery"),
        ("/console/triggers/nope", 404, "no trigger"),
        ("/console/do-not-call?number=abc", 422, "abc"),
        ("/console/nowhere", 404, ""),
    ] {
        let r = console.get(path).await;
        assert_eq!(r.status(), status, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
    }
    let r = console
        .post("/console/jobs/job_nope/cancel", &[("csrf", &console.csrf)])
        .await;
    assert_eq!(r.status(), 404);
    let r = console
        .post(
            "/console/do-not-call",
            &[("csrf", &console.csrf), ("number", "")],
        )
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_trigger_test_form_shows_violations_and_creates_no_job() {
    let app = app().await;
    let console = Console::login(&app, "ops").await;
    for (payload, status, says) in [
        ("{}", "HTTP 422", "phone_number"),
        ("not json", "HTTP 400", "JSON"),
        (r#"{"phone_number": "12"}"#, "HTTP 422", "phone"),
    ] {
        let r = console
            .post(
                "/console/triggers/demo-call/test",
                &[("csrf", &console.csrf), ("payload", payload)],
            )
            .await;
        assert_eq!(r.status(), 200, "the page itself is fine");
        let html = r.text().await.unwrap();
        assert!(
            html.contains(status) && html.contains(says),
            "{payload}: {html}"
        );
        assert!(html.contains("class=\"card bad\""), "{payload}");
    }
    assert_eq!(app.jobs_on_disk().await, 0);
    // A trigger the key may not run.
    let r = console
        .post(
            "/console/triggers/nope/test",
            &[("csrf", &console.csrf), ("payload", "{}")],
        )
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn do_not_call_numbers_are_added_normalised_and_removed() {
    let app = app().await;
    let console = Console::login(&app, "ops").await;
    let r = console
        .post(
            "/console/do-not-call",
            &[("csrf", &console.csrf), ("number", "(555) 012-1234")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console/do-not-call?number=%2B15550121234"
    );
    let entry = app
        .store()
        .do_not_call("+15550121234")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.added_by, "key:ops");
    let page = console
        .html("/console/do-not-call?number=%2B15550121234")
        .await;
    assert!(page.contains("id=\"dnc-remove\""), "{page}");
    let r = console
        .post(
            "/console/do-not-call/remove",
            &[("csrf", &console.csrf), ("number", "+15550121234")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        app.store()
            .do_not_call("+15550121234")
            .await
            .unwrap()
            .is_none()
    );
    let page = console
        .html("/console/do-not-call?number=%2B15550121234")
        .await;
    assert!(page.contains("is not on the list"), "{page}");
    // The seed file's numbers are not removed here (the API's 409).
    let page = console
        .html("/console/do-not-call?number=%2B15550100000")
        .await;
    assert!(!page.contains("id=\"dnc-remove\""));
    let r = console
        .post(
            "/console/do-not-call/remove",
            &[("csrf", &console.csrf), ("number", "+15550100000")],
        )
        .await;
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_a_delivery_page() {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::ok("{}"));
    let app = TestApp::builder()
        .file("endpoints.toml", &crm_endpoint(&rx.url("/hooks"), ""))
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", OPS)
        .background_runner()
        .start()
        .await;
    let job = notify(&app).await;
    let d = delivery_when(&app, &job, "succeeded").await;
    let console = Console::login(&app, "ops").await;
    let page = console
        .html(&format!(
            "/console/deliveries/{}",
            d["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        page.contains("Attempt 1") && page.contains("lead.created"),
        "{page}"
    );
    assert!(
        page.contains("[redacted]"),
        "the Authorization header is shown redacted"
    );
    for secret in [CRM_TOKEN, WH_SECRET, &WH_SECRET[6..]] {
        assert!(!page.contains(secret), "a secret on the page");
    }
    let job_page = console.html(&format!("/console/jobs/{job}")).await;
    assert!(
        job_page.contains(d["id"].as_str().unwrap()),
        "the job links its delivery"
    );
}
