//! API keys through the API, over HTTPS: a key made with `POST /v1/keys`
//! works at once, on this instance and on another sharing the PostgreSQL
//! database; disabling it stops it here at once and there within
//! `auth.db_keys_refresh`; a key cannot grant scopes its creator lacks;
//! `keys.toml` keys are listed but not disabled here; every bad request
//! is a problem+json with its status.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Builder, TestApp, demo_body, forbidden, problem};

/// How long a change may take to reach another instance in these tests
/// (they refresh every 200 ms).
const DEADLINE: Duration = Duration::from_secs(10);

fn builder() -> Builder {
    TestApp::builder()
        .env("CALLGATE_AUTH__DB_KEYS_REFRESH", "200ms")
        .key(
            "admin",
            &["keys:read", "keys:write", "triggers:run", "jobs:read"],
        )
        .key("narrow", &["keys:write", "trigger:demo-call"])
        .key("reader", &["keys:read"])
}

async fn create(app: &TestApp, as_key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/keys"))
        .bearer_auth(app.key(as_key))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Makes a key; its plaintext.
async fn made(app: &TestApp, as_key: &str, body: &Value) -> String {
    let r = create(app, as_key, body).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["name"], body["name"]);
    assert_eq!(out["source"], "db");
    assert_eq!(out["disabled"], false);
    out["key"].as_str().unwrap().to_owned()
}

async fn disable(app: &TestApp, as_key: &str, name: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/keys/{name}/disable")))
        .bearer_auth(app.key(as_key))
        .send()
        .await
        .unwrap()
}

async fn trigger_status(app: &TestApp, key: &str) -> u16 {
    app.trigger(key, "demo-call", &demo_body())
        .await
        .status()
        .as_u16()
}

/// Waits (bounded) until `key`'s trigger request answers `status`.
async fn until_status(app: &TestApp, key: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = trigger_status(app, key).await;
        if got == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {got}, not {status}, after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn listed(app: &TestApp) -> Vec<Value> {
    let r = app.get(app.key("admin"), "/v1/keys").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["keys"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_made_key_works_at_once_is_listed_without_its_hash_and_stops_when_disabled() {
    let app = builder().start().await;
    let key = made(
        &app,
        "admin",
        &json!({"name": "crm", "scopes": ["triggers:run"]}),
    )
    .await;
    assert_eq!(trigger_status(&app, &key).await, 202);
    // Its principal is `key:crm`, like a file key's.
    let jobs = app.all_jobs().await;
    assert_eq!(&*jobs[0].principal, "key:crm");

    let keys = listed(&app).await;
    let names: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k["name"].as_str().unwrap(), k["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("admin", "toml"),
            ("narrow", "toml"),
            ("reader", "toml"),
            ("crm", "db")
        ]
    );
    let text = serde_json::to_string(&keys).unwrap();
    let hash = hex::encode(callgate::crypto::sha256(key.as_bytes()));
    assert!(
        !text.contains(&hash) && !text.contains(&key) && !text.contains("hash"),
        "{text}"
    );
    assert_eq!(keys[3]["created_by"], "key:admin");
    assert_eq!(keys[3]["scopes"], json!(["triggers:run"]));

    // The use is recorded (batched, within a refresh).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while listed(&app).await[3]["last_used_at"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "no last use");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let r = disable(&app, "admin", "crm").await;
    assert_eq!(r.status(), 200);
    let out: Value = r.json().await.unwrap();
    assert_eq!(out["disabled"], true);
    // Here at once, over either header.
    let refused = problem(app.trigger(&key, "demo-call", &demo_body()).await, 401).await;
    assert_eq!(refused["detail"], "unknown or disabled API key");
    let r = app
        .client
        .get(app.url("/v1/triggers"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    problem(r, 401).await;
    // Disabling again answers the key again, with its first time.
    let again: Value = disable(&app, "admin", "crm").await.json().await.unwrap();
    assert_eq!(again["disabled_at"], out["disabled_at"]);
    // The name stays taken.
    problem(
        create(&app, "admin", &json!({"name": "crm", "scopes": []})).await,
        409,
    )
    .await;
    // And after the next refreshes too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(trigger_status(&app, &key).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_key_made_at_one_instance_works_at_another_and_its_disabling_reaches_it() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_a_key_made_at_one_instance_works_at_another_and_its_disabling_reaches_it"
    );
    let a = builder().postgres(&url).start().await;
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = builder().storage_url(&shared).start().await;
    let key = made(
        &a,
        "admin",
        &json!({"name": "crm", "scopes": ["triggers:run"]}),
    )
    .await;
    // B has never seen it: its miss reads the stored keys again.
    assert_eq!(trigger_status(&b, &key).await, 202);
    assert_eq!(trigger_status(&a, &key).await, 202);
    // Listed at B as stored.
    let r = b.get(b.key("admin"), "/v1/keys").await;
    let body: Value = r.json().await.unwrap();
    assert!(
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "crm" && k["source"] == "db"),
        "{body}"
    );
    // Disabled at B: refused at B at once, at A within its refresh.
    assert_eq!(disable(&b, "admin", "crm").await.status(), 200);
    assert_eq!(trigger_status(&b, &key).await, 401);
    until_status(&a, &key, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_grant_a_scope_its_creator_lacks() {
    let app = builder().start().await;
    // `narrow` holds keys:write and one trigger only.
    for scopes in [json!(["triggers:run"]), json!(["jobs:read"])] {
        let body = json!({"name": "wider", "scopes": scopes});
        let scope = scopes[0].as_str().unwrap();
        let refused = forbidden(create(&app, "narrow", &body).await, scope).await;
        assert!(
            refused["detail"].as_str().unwrap().contains(scope),
            "{refused}"
        );
    }
    // One lacking scope among held ones is enough to refuse the key.
    let body = json!({"name": "maker", "scopes": ["trigger:demo-call", "keys:write", "keys:read"]});
    forbidden(create(&app, "narrow", &body).await, "keys:read").await;
    assert!(listed(&app).await.iter().all(|k| k["source"] == "toml"));
    // What it holds, it may pass on; `triggers:run` covers one trigger.
    let one = json!({"name": "one", "scopes": ["trigger:demo-call"]});
    let key = made(&app, "narrow", &one).await;
    assert_eq!(trigger_status(&app, &key).await, 202);
    let via_all = json!({"name": "two", "scopes": ["trigger:demo-call"]});
    made(&app, "admin", &via_all).await;
    // Without keys:write nothing is made, and without keys:read nothing listed.
    forbidden(create(&app, "reader", &one).await, "keys:write").await;
    forbidden(disable(&app, "reader", "one").await, "keys:write").await;
    forbidden(app.get(app.key("narrow"), "/v1/keys").await, "keys:read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_key_is_held_to_its_networks() {
    let app = builder().start().await;
    let body = json!({"name": "far", "scopes": ["triggers:run"], "allowed_ips": ["192.0.2.0/24"]});
    let key = made(&app, "admin", &body).await;
    let refused = problem(app.trigger(&key, "demo-call", &demo_body()).await, 403).await;
    assert_eq!(refused["type"], "urn:callgate:problem:ip-not-allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_key_requests_are_problems_with_their_status() {
    let app = builder().start().await;
    // Not JSON.
    let r = app
        .client
        .post(app.url("/v1/keys"))
        .bearer_auth(app.key("admin"))
        .header("content-type", "text/plain")
        .body("name=crm")
        .send()
        .await
        .unwrap();
    problem(r, 415).await;
    let r = app
        .client
        .post(app.url("/v1/keys"))
        .bearer_auth(app.key("admin"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    for (body, pointer) in [
        (
            json!({"name": "x", "scopes": [], "hash": "sha256:00"}),
            "/hash",
        ),
        (json!({"name": "x", "scopes": "triggers:run"}), "/scopes"),
        (json!({"scopes": []}), ""),
        (
            json!({"name": "x", "scopes": [], "rate_limit": {"requests": 1, "per": "soon", "burst": 1}}),
            "/rate_limit/per",
        ),
    ] {
        let p = problem(create(&app, "admin", &body).await, 400).await;
        assert_eq!(p["type"], "urn:callgate:problem:malformed-request", "{p}");
        assert_eq!(p["errors"][0]["pointer"], pointer, "{p}");
    }
    let body = json!({
        "name": "bad name",
        "scopes": ["triggers:run", "admin"],
        "allowed_ips": ["10.0.0.0/40"],
        "rate_limit": {"requests": 0, "per": "1m", "burst": 1},
    });
    let p = problem(create(&app, "admin", &body).await, 422).await;
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/name", "/scopes/1", "/allowed_ips/0", "/rate_limit"]
    );
    // A file key's name is taken; a file key is not disabled here.
    let taken = json!({"name": "reader", "scopes": []});
    problem(create(&app, "admin", &taken).await, 409).await;
    let p = problem(disable(&app, "admin", "admin").await, 409).await;
    assert!(p["detail"].as_str().unwrap().contains("keys.toml"), "{p}");
    assert_eq!(trigger_status(&app, app.key("admin")).await, 202);
    problem(disable(&app, "admin", "nobody").await, 404).await;
    // A well-formed key nobody made, and one that is not even that.
    let unknown = format!("cg_{}", "A".repeat(43));
    problem(app.trigger(&unknown, "demo-call", &demo_body()).await, 401).await;
    problem(
        app.trigger("cg_short", "demo-call", &demo_body()).await,
        401,
    )
    .await;
    assert!(listed(&app).await.iter().all(|k| k["source"] == "toml"));
}

#[test]
fn a_zero_refresh_interval_is_a_config_problem() {
    let shipped =
        std::fs::read_to_string(format!("{}/callgate.toml", crate::support::REPO_CONFIG)).unwrap();
    let main = shipped.replace("db_keys_refresh = \"5s\"", "db_keys_refresh = \"0s\"");
    assert_ne!(main, shipped);
    let err = crate::support::config_problems(&[("callgate.toml", &main)]);
    crate::support::assert_problem(&err, "auth.db_keys_refresh", "longer than 0s");
}
