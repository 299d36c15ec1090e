//! `GET /v1/jobs`.

use callgate::clock::{ManualClock, rfc3339};
use serde_json::{Value, json};

use super::{T0, accept, ids};
use crate::runner::{ANYTIME_AGENT, fast_simulator, get_json};
use crate::support::{TestApp, forbidden, problem};

/// Five jobs a second apart (T0 … T0+4 s): by two keys, on two triggers,
/// to two numbers, the last held until later. Newest first.
async fn five_jobs(app: &TestApp, clock: &ManualClock) -> Vec<String> {
    let later = rfc3339(T0 + 3_600_000);
    let sent = [
        (
            "zapier",
            "demo-call",
            json!({"phone_number": "+15550120001"}),
        ),
        (
            "crm",
            "demo-call",
            json!({"phone_number": "(555) 012-0002"}),
        ),
        (
            "zapier",
            "demo-automation",
            json!({"phone_number": "+15550120002"}),
        ),
        ("crm", "demo-call", json!({"phone_number": "+15550120001"})),
        (
            "zapier",
            "demo-call",
            json!({"phone_number": "+15550120003", "schedule_at": later}),
        ),
    ];
    let mut ids = Vec::new();
    for (key, trigger, body) in sent {
        ids.push(accept(app, key, trigger, &body).await);
        clock.advance_ms(1_000);
    }
    ids.reverse();
    ids
}

async fn app(clock: &std::sync::Arc<ManualClock>) -> TestApp {
    TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .key("crm", &["triggers:run"])
        .key("ops", &["jobs:read"])
        .clock(clock.clone())
        .start()
        .await
}

#[tokio::test]
async fn jobs_are_listed_newest_first_by_every_filter() {
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let all = five_jobs(&app, &clock).await;
    let ops = app.key("ops");
    let app = &app;
    let list = |q: &str| {
        let path = format!("/v1/jobs{q}");
        async move { ids(&get_json(app, ops, &path).await) }
    };
    let pick = |idx: &[usize]| -> Vec<String> { idx.iter().map(|i| all[*i].clone()).collect() };

    let page = get_json(app, ops, "/v1/jobs").await;
    assert_eq!(ids(&page), all);
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(page["links"]["next"], Value::Null);
    let newest = &page["jobs"][0];
    assert_eq!(newest["status"], "scheduled");
    assert_eq!(newest["trigger_id"], "demo-call");
    assert_eq!(newest["created_by"], "key:zapier");
    assert_eq!(newest["next_run_at"], rfc3339(T0 + 3_600_000));
    assert_eq!(newest["action"]["to"], "+15550120003");
    assert_eq!(newest["links"]["self"], format!("/v1/jobs/{}", all[0]));

    assert_eq!(list("?status=scheduled").await, pick(&[0]));
    assert_eq!(list("?status=queued").await, pick(&[1, 2, 3, 4]));
    assert_eq!(list("?trigger=demo-automation").await, pick(&[2]));
    assert_eq!(list("?created_by=key:crm").await, pick(&[1, 3]));
    // The number is read like trigger input: `+` escaped, or national.
    assert_eq!(list("?phone=%2B15550120001").await, pick(&[1, 4]));
    assert_eq!(list("?phone=555-012-0002").await, pick(&[2, 3]));
    assert_eq!(list("?phone=%2B15550129999").await, pick(&[]));
    let (since, until) = (rfc3339(T0 + 1_000), rfc3339(T0 + 3_000));
    assert_eq!(
        list(&format!("?since={since}&until={until}")).await,
        pick(&[2, 3]),
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        list(&format!(
            "?since={since}&created_by=key:zapier&status=queued"
        ))
        .await,
        pick(&[2])
    );
}

#[tokio::test]
async fn pages_follow_the_next_link_and_cover_every_job_once() {
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let all = five_jobs(&app, &clock).await;
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=2&trigger=demo-call".to_owned();
    loop {
        let page = get_json(&app, app.key("ops"), &path).await;
        let got = ids(&page);
        assert!(got.len() <= 2, "{page}");
        seen.extend(got);
        match page["links"]["next"].as_str() {
            Some(next) => {
                assert!(next.contains("trigger=demo-call"), "filters kept: {next}");
                assert!(next.contains(page["next_cursor"].as_str().unwrap()));
                path = next.to_owned();
            }
            None => break,
        }
    }
    let want: Vec<String> = [0, 1, 3, 4].iter().map(|i| all[*i].clone()).collect();
    assert_eq!(seen, want);
    // A new job does not shift the pages after a cursor.
    let first = get_json(&app, app.key("ops"), "/v1/jobs?limit=2").await;
    accept(
        &app,
        "crm",
        "demo-call",
        &json!({"phone_number": "+15550120009"}),
    )
    .await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = get_json(
        &app,
        app.key("ops"),
        &format!("/v1/jobs?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&second), all[2..4].to_vec());
}

#[tokio::test]
async fn without_jobs_read_a_principal_lists_only_its_own_jobs() {
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let all = five_jobs(&app, &clock).await;
    let crm = app.key("crm");
    assert_eq!(
        ids(&get_json(&app, crm, "/v1/jobs").await),
        vec![all[1].clone(), all[3].clone()]
    );
    assert_eq!(
        ids(&get_json(
            &app,
            crm,
            "/v1/jobs?created_by=key:crm&phone=%2B15550120001"
        )
        .await),
        vec![all[1].clone()]
    );
    // Asking for another principal's jobs is refused, not quietly emptied.
    let body = forbidden(
        app.get(crm, "/v1/jobs?created_by=key:zapier").await,
        "jobs:read",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("jobs:read"));
    // A filter cannot widen what a principal sees.
    assert!(ids(&get_json(&app, crm, "/v1/jobs?trigger=demo-automation").await).is_empty());
    problem(
        app.client.get(app.url("/v1/jobs")).send().await.unwrap(),
        401,
    )
    .await;
}

#[tokio::test]
async fn every_bad_list_parameter_is_a_400_naming_it() {
    let app = TestApp::builder().key("ops", &["jobs:read"]).start().await;
    let cases = [
        ("status=done", "status"),
        ("status=", "status"),
        ("trigger=Not%20A%20Trigger", "trigger"),
        ("created_by=", "created_by"),
        ("phone=call-me", "phone"),
        ("phone=%2B1555012000100000", "phone"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        (
            "since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
            "since",
        ),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("cursor=job_01M8D4F4J5D0XTTTQXYCB8EWAS", "cursor"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm9wZQ", "cursor"),
        ("colour=red", "colour"),
        ("limit=1&limit=2", "limit"),
    ];
    for (query, names) in cases {
        let r = app.get(app.key("ops"), &format!("/v1/jobs?{query}")).await;
        let body = problem(r, 400).await;
        assert_eq!(
            body["type"], "urn:callgate:problem:malformed-request",
            "{query}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(names), "{query}: {detail}");
    }
}
