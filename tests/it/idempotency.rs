//! Idempotency-Key: replay, reuse, in-flight duplicates, scope, expiry.

use std::time::Duration;

use callgate::clock::ManualClock;
use serde_json::{Value, json};

use crate::support::{TestApp, demo_body, problem};

async fn post(app: &TestApp, key_name: &str, idem: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/triggers/demo-call"))
        .bearer_auth(app.key(key_name))
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeat_with_the_same_body_replays_the_first_answer_and_creates_nothing() {
    let app = TestApp::start().await;
    let first = post(&app, "zapier", "zap-123", &demo_body()).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_location = first.headers()["location"].clone();
    let first_body: Value = first.json().await.unwrap();

    let again = post(&app, "zapier", "zap-123", &demo_body()).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], first_location);
    assert!(again.headers().contains_key("x-request-id"));
    let again_body: Value = again.json().await.unwrap();
    assert_eq!(again_body, first_body);
    assert_eq!(app.jobs_on_disk().await, 1);
    // The quoted structured-field form names the same key.
    assert_eq!(
        post(&app, "zapier", "\"zap-123\"", &demo_body())
            .await
            .headers()["idempotent-replayed"],
        "true"
    );
}

#[tokio::test]
async fn the_same_key_with_a_different_body_gets_422() {
    let app = TestApp::start().await;
    assert_eq!(post(&app, "zapier", "k1", &demo_body()).await.status(), 202);
    let mut other = demo_body();
    other["customer"]["name"] = json!("Grace Hopper");
    let body = problem(post(&app, "zapier", "k1", &other).await, 422).await;
    assert_eq!(body["type"], "urn:callgate:problem:idempotency-key-reused");
    assert_eq!(app.jobs_on_disk().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_create_exactly_one_job() {
    let app = TestApp::start().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, key) = (
            app.client.clone(),
            app.url("/v1/triggers/demo-call"),
            app.key("zapier").to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "burst-1")
                .json(&demo_body())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let replayed = r.headers().contains_key("idempotent-replayed");
            let body: Value = r.json().await.unwrap();
            (status, replayed, body)
        }));
    }
    let mut job_ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let (status, replayed, body) = t.await.unwrap();
        match status {
            202 => {
                fresh += usize::from(!replayed);
                job_ids.insert(body["job_id"].as_str().unwrap().to_owned());
            }
            409 => assert_eq!(
                body["type"],
                "urn:callgate:problem:idempotency-key-in-flight"
            ),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one request created the job");
    assert_eq!(job_ids.len(), 1);
    assert_eq!(app.jobs_on_disk().await, 1);
}

#[tokio::test]
async fn keys_are_scoped_per_principal_and_per_trigger() {
    let app = TestApp::builder()
        .triggers("[triggers.second]\nschema = \"schemas/demo-call.json\"\naction = { type = \"start_call\", agent = \"demo-agent\" }\n")
        .key("a", &["triggers:run"])
        .key("b", &["triggers:run"])
        .start()
        .await;
    assert_eq!(post(&app, "a", "shared", &demo_body()).await.status(), 202);
    let r = post(&app, "b", "shared", &demo_body()).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let r = app
        .client
        .post(app.url("/v1/triggers/second"))
        .bearer_auth(app.key("a"))
        .header("idempotency-key", "shared")
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.jobs_on_disk().await, 3);
}

#[tokio::test]
async fn empty_overlong_or_repeated_keys_get_400() {
    let app = TestApp::start().await;
    for bad in [String::new(), "k".repeat(256), "\"\"".to_owned()] {
        let body = problem(post(&app, "zapier", &bad, &demo_body()).await, 400).await;
        assert_eq!(body["type"], "urn:callgate:problem:invalid-idempotency-key");
    }
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .bearer_auth(app.key("zapier"))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    assert_eq!(
        post(&app, "zapier", &"k".repeat(255), &demo_body())
            .await
            .status(),
        202
    );
    assert_eq!(app.jobs_on_disk().await, 1);
}

#[tokio::test]
async fn a_key_is_forgotten_after_its_retention() {
    let clock = ManualClock::new(1_800_000_000_000);
    let app = TestApp::builder()
        .main("[idempotency]\nretention = \"24h\"")
        .key("zapier", &["triggers:run"])
        .clock(clock.clone())
        .start()
        .await;
    let first: Value = post(&app, "zapier", "daily", &demo_body())
        .await
        .json()
        .await
        .unwrap();
    clock.advance_ms(Duration::from_secs(23 * 3600).as_millis() as i64);
    let replay: Value = post(&app, "zapier", "daily", &demo_body())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replay["job_id"], first["job_id"]);
    clock.advance_ms(Duration::from_secs(2 * 3600).as_millis() as i64);
    let r = post(&app, "zapier", "daily", &demo_body()).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let fresh: Value = r.json().await.unwrap();
    assert_ne!(fresh["job_id"], first["job_id"]);
    assert_eq!(app.jobs_on_disk().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_one_key_sent_to_two_instances_at_once_makes_one_job() {
    let url =
        crate::pg_url_or_skip!("on_postgres_one_key_sent_to_two_instances_at_once_makes_one_job");
    let a = TestApp::builder().postgres(&url).start().await;
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = TestApp::builder().storage_url(&shared).start().await;
    // A JWT names the same principal on both instances.
    let jwt = crate::support::hs256(&crate::support::claims("triggers:run"));
    let sends = (0..16).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.client
            .post(app.url("/v1/triggers/demo-call"))
            .bearer_auth(&jwt)
            .header("idempotency-key", "shared-key")
            .json(&demo_body())
            .send()
    });
    let mut first = Vec::new();
    let mut job_ids = std::collections::HashSet::new();
    for r in futures_util::future::join_all(sends).await {
        let r = r.unwrap();
        match r.status().as_u16() {
            202 => {
                let replayed = r.headers().contains_key("idempotent-replayed");
                let body: Value = r.json().await.unwrap();
                job_ids.insert(body["job_id"].as_str().unwrap().to_owned());
                if !replayed {
                    first.push(body);
                }
            }
            // Still in flight in the same instance.
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(first.len(), 1, "one original answer: {first:?}");
    assert_eq!(
        job_ids.len(),
        1,
        "every 202 names the same job: {job_ids:?}"
    );
    assert_eq!(a.jobs_on_disk().await, 1);
    assert_eq!(b.jobs_on_disk().await, 1);
}
