//! `GET /v1/calls` over HTTPS: calls placed by the real runner through the
//! simulator, listed newest first by filter and cursor; the scope and every
//! bad parameter.

use std::time::Duration;

use serde_json::{Value, json};

use crate::runner::{ANYTIME_AGENT, eventually, fast_simulator, get_json};
use crate::support::{TestApp, forbidden, problem};

const TRIGGERS: &str = "[triggers.demo-call]\nschema = \"schemas/demo-call.json\"\n\
    action = { type = \"start_call\", agent = \"demo-agent\" }\n\
    [triggers.other-call]\nschema = \"schemas/demo-call.json\"\n\
    action = { type = \"start_call\", agent = \"other-agent\" }\n";

fn agents() -> String {
    format!(
        "{ANYTIME_AGENT}[agents.other-agent]\nname = \"Other\"\nprovider = \"simulator\"\n\
         from_number = \"+15550008888\"\nmax_concurrent_calls = 3\ncalling_window = {{ enabled = false }}\n"
    )
}

fn numbers(list: &Value) -> Vec<&str> {
    list["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["to"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_listed_newest_first_by_filter_and_cursor() {
    let app = TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", &agents())
        .file("triggers.toml", TRIGGERS)
        .key("zapier", &["triggers:run"])
        .key("ops", &["jobs:read"])
        .start()
        .await;
    // One call at a time, so that their order is their creation order.
    for (trigger, to) in [
        ("demo-call", "+15550120001"),
        ("other-call", "+15550120002"),
        ("demo-call", "+15550120003"),
    ] {
        let r = app
            .trigger(app.key("zapier"), trigger, &json!({"phone_number": to}))
            .await;
        assert_eq!(r.status(), 202);
        assert_eq!(app.run_pending().await, 1);
    }
    let key = app.key("ops").to_owned();
    let all = eventually(Duration::from_secs(20), "three completed calls", || async {
        let list = get_json(&app, &key, "/v1/calls?status=completed").await;
        (list["calls"].as_array().unwrap().len() == 3).then_some(list)
    })
    .await;
    assert_eq!(
        numbers(&all),
        ["+15550120003", "+15550120002", "+15550120001"]
    );
    assert_eq!(all["next_cursor"], Value::Null);
    let first = &all["calls"][2];
    assert_eq!(first["agent_id"], "demo-agent");
    assert_eq!(first["outcome"], "interested");
    assert!(first["call_id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        first["links"]["self"],
        format!("/v1/calls/{}", first["call_id"].as_str().unwrap())
    );

    let list = |q: &'static str| {
        let key = key.clone();
        let app = &app;
        async move { get_json(app, &key, &format!("/v1/calls?{q}")).await }
    };
    assert_eq!(
        numbers(&list("phone=%2B15550120002").await),
        ["+15550120002"]
    );
    assert_eq!(
        numbers(&list("phone=%2B15550129999").await),
        Vec::<&str>::new()
    );
    assert_eq!(numbers(&list("agent=other-agent").await), ["+15550120002"]);
    assert_eq!(
        numbers(&list("agent=demo-agent&outcome=interested").await),
        ["+15550120003", "+15550120001"]
    );
    assert_eq!(
        numbers(&list("outcome=not_interested").await),
        Vec::<&str>::new()
    );
    assert_eq!(numbers(&list("status=failed").await), Vec::<&str>::new());
    assert_eq!(
        numbers(&list("since=2100-01-01T00:00:00Z").await),
        Vec::<&str>::new()
    );
    assert_eq!(
        numbers(&list("until=2000-01-01T00:00:00Z").await),
        Vec::<&str>::new()
    );
    assert_eq!(numbers(&list("since=2000-01-01T00:00:00Z").await).len(), 3);

    // Pages of two.
    let page = list("limit=2").await;
    assert_eq!(numbers(&page), ["+15550120003", "+15550120002"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, page["calls"][1]["call_id"].as_str().unwrap());
    let rest = get_json(&app, &key, &format!("/v1/calls?limit=2&cursor={cursor}")).await;
    assert_eq!(numbers(&rest), ["+15550120001"]);
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn listing_calls_needs_jobs_read_and_well_formed_parameters() {
    let app = TestApp::builder()
        .key("zapier", &["triggers:run", "deliveries:read"])
        .key("ops", &["jobs:read"])
        .start()
        .await;
    forbidden(app.get(app.key("zapier"), "/v1/calls").await, "jobs:read").await;
    let r = app.client.get(app.url("/v1/calls")).send().await.unwrap();
    problem(r, 401).await;
    for query in [
        "status=bogus",
        "phone=5550121234",
        "phone=%2B0123456789",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "cursor=abc",
        "cursor=job_01M8D4ESM3EGH6C20F1V4HEGA2",
        "limit=0",
        "limit=201",
        "phone=1",
    ] {
        let r = app.get(app.key("ops"), &format!("/v1/calls?{query}")).await;
        let p = problem(r, 400).await;
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{query}");
    }
    let empty = get_json(&app, app.key("ops"), "/v1/calls").await;
    assert_eq!(empty, json!({"calls": [], "next_cursor": null}));
}
