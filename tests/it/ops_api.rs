//! The operations API's health and chart reads over HTTPS:
//! `GET /v1/endpoints[/{name}]` against a real local receiver (breaker,
//! attempts, last error, the health check answering 200 then 500) and
//! `GET /v1/stats` (accepted and refused triggers, calls, bad parameters).

use std::time::Duration;

use callgate::clock::{ManualClock, rfc3339};
use serde_json::{Value, json};

use crate::deliveries::{
    NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, crm_endpoint, notify,
};
use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, eventually, fast_simulator, get_json};
use crate::support::{Builder, TestApp, forbidden, problem};

async fn endpoints_app(builder: Builder, endpoints: &str) -> TestApp {
    builder
        .file("endpoints.toml", endpoints)
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", &["deliveries:read"])
        .background_runner()
        .start()
        .await
}

/// `GET /v1/endpoints/crm` once `check` holds for it.
async fn crm_when(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(20), what, || async {
        let v = get_json(app, app.key("ops"), "/v1/endpoints/crm").await;
        check(&v).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_shows_its_open_breaker_failed_attempts_and_last_error() {
    endpoint_with_failures(TestApp::builder()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_an_endpoint_shows_its_open_breaker_failed_attempts_and_last_error() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_an_endpoint_shows_its_open_breaker_failed_attempts_and_last_error"
    );
    endpoint_with_failures(TestApp::builder().postgres(&url)).await;
}

async fn endpoint_with_failures(builder: Builder) {
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(503));
    let breaker = "breaker = { failures = 2, cooldown = \"1h\" }";
    let app = endpoints_app(builder, &crm_endpoint(&rx.url("/hooks"), breaker)).await;
    notify(&app).await;
    let crm = crm_when(&app, "the breaker to open", |v| {
        v["breaker"]["state"] == "open"
    })
    .await;
    assert_eq!(crm["name"], "crm");
    assert_eq!(crm["host"], "127.0.0.1");
    assert!(crm["breaker"]["opened_at"].is_string(), "{crm}");
    assert_eq!(crm["breaker"]["consecutive_failures"], 2);
    for window in ["last_hour", "last_day"] {
        let w = &crm[window];
        assert_eq!(
            (&w["attempts"], &w["succeeded"]),
            (&json!(2), &json!(0)),
            "{crm}"
        );
        assert_eq!(w["success_rate"], 0.0);
        assert!(
            w["latency_ms"]["p50"].is_i64() && w["latency_ms"]["p95"].is_i64(),
            "{crm}"
        );
    }
    assert_eq!(crm["last_error"]["status"], 503);
    assert!(
        crm["last_error"]["delivery_id"]
            .as_str()
            .unwrap()
            .starts_with("dlv_")
    );
    // Held by the open breaker, the delivery waits; none is dead.
    assert_eq!(
        (&crm["pending"], &crm["dead"]),
        (&json!(1), &json!(0)),
        "{crm}"
    );
    assert_eq!(crm["health_check"], Value::Null);
    assert_eq!(rx.received().len(), 2, "nothing more while it is open");

    let list = get_json(&app, app.key("ops"), "/v1/endpoints").await;
    let names: Vec<&str> = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crm"]);
    assert_eq!(list["endpoints"][0]["breaker"]["state"], "open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_health_check_reports_a_200_then_a_500_from_a_real_receiver() {
    let rx = Receiver::start().await;
    rx.script([Reply::ok("{\"status\":\"up\"}")]);
    rx.default_reply(Reply::status(500));
    let check = "health_check = { path = \"/health?deep=1\", interval = \"5s\" }";
    let app = endpoints_app(TestApp::builder(), &crm_endpoint(&rx.url("/hooks"), check)).await;
    let up = crm_when(&app, "a first check", |v| {
        !v["health_check"]["last"].is_null()
    })
    .await;
    let hc = &up["health_check"];
    assert_eq!(
        (&hc["path"], &hc["interval_seconds"]),
        (&json!("/health?deep=1"), &json!(5))
    );
    assert_eq!(
        (&hc["last"]["ok"], &hc["last"]["status"]),
        (&json!(true), &json!(200)),
        "{up}"
    );
    assert!(hc["last"]["checked_at"].is_string() && hc["last"]["latency_ms"].is_i64());
    let down = crm_when(&app, "a failed check", |v| {
        v["health_check"]["last"]["ok"] == false
    })
    .await;
    assert_eq!(down["health_check"]["last"]["status"], 500, "{down}");
    let got = rx.received();
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("GET", "/health")
    );
    assert_eq!(got[0].query.as_deref(), Some("deep=1"));
    // The endpoint's credential goes with it, as with deliveries.
    assert!(
        got[0].headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ")
    );
    // A check is not a delivery attempt.
    assert_eq!(down["last_hour"]["attempts"], 0);
    assert_eq!(down["breaker"]["state"], "closed");
}

#[tokio::test]
async fn endpoint_health_needs_deliveries_read_and_a_configured_name() {
    let rx = Receiver::start().await;
    let app = endpoints_app(TestApp::builder(), &crm_endpoint(&rx.url("/hooks"), "")).await;
    for path in ["/v1/endpoints", "/v1/endpoints/crm", "/v1/endpoints/nope"] {
        forbidden(app.get(app.key("zapier"), path).await, "deliveries:read").await;
        let r = app.client.get(app.url(path)).send().await.unwrap();
        problem(r, 401).await;
    }
    for name in ["nope", "CRM", "crm%20"] {
        let body = problem(
            app.get(app.key("ops"), &format!("/v1/endpoints/{name}"))
                .await,
            404,
        )
        .await;
        assert_eq!(body["type"], "urn:callgate:problem:not-found");
    }
}

const T0: i64 = 1_800_000_000_000;

#[tokio::test]
async fn stats_chart_accepted_and_refused_triggers_and_calls_by_minute() {
    stats_chart(TestApp::builder()).await;
}

#[tokio::test]
async fn on_postgres_stats_chart_accepted_and_refused_triggers_and_calls_by_minute() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_stats_chart_accepted_and_refused_triggers_and_calls_by_minute"
    );
    stats_chart(TestApp::builder().postgres(&url)).await;
}

async fn stats_chart(builder: Builder) {
    let app = builder
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .key("stranger", &["jobs:read"])
        .key("charts", &["metrics:read"])
        .max_body_bytes(1024)
        .clock(ManualClock::new(T0 + 30_000))
        .start()
        .await;
    let body = json!({"phone_number": "+15550121234"});
    for _ in 0..2 {
        assert_eq!(
            app.trigger(app.key("zapier"), "demo-call", &body)
                .await
                .status(),
            202
        );
    }
    let refusals = [
        app.trigger("not-a-key", "demo-call", &body).await,
        app.trigger(app.key("stranger"), "demo-call", &body).await,
        app.trigger(app.key("zapier"), "demo-call", &json!({"phone_number": 5}))
            .await,
        app.trigger(app.key("zapier"), "demo-call", &json!({}))
            .await,
        // Refused at the front door, before routing, by its Content-Length.
        app.trigger(
            app.key("zapier"),
            "demo-call",
            &json!({"pad": "x".repeat(2048)}),
        )
        .await,
    ];
    let statuses: Vec<u16> = refusals.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [401, 403, 422, 422, 413]);
    assert_eq!(app.run_pending().await, 2);
    // Refusals reach the store with the next flush (every few seconds).
    let path = format!(
        "/v1/stats?since={}&until={}&bucket=1m",
        rfc3339(T0 - 60_000),
        rfc3339(T0 + 120_000)
    );
    let path = path.replace('+', "%2B");
    let stats = eventually(
        Duration::from_secs(20),
        "the refusals to be flushed",
        || async {
            let v = get_json(&app, app.key("charts"), &path).await;
            (v["triggers"]["refused"]["validation-failed"][1] == 2).then_some(v)
        },
    )
    .await;
    assert_eq!(stats["bucket_seconds"], 60);
    assert_eq!(stats["buckets"].as_array().unwrap().len(), 3);
    assert_eq!(stats["buckets"][1], rfc3339(T0));
    assert_eq!(stats["triggers"]["accepted"], json!([0, 2, 0]), "{stats}");
    assert_eq!(
        stats["triggers"]["accepted_by_trigger"]["demo-call"],
        json!([0, 2, 0])
    );
    let refused = &stats["triggers"]["refused"];
    assert_eq!(refused["unauthorized"], json!([0, 1, 0]), "{stats}");
    assert_eq!(refused["forbidden"], json!([0, 1, 0]), "{stats}");
    assert_eq!(refused["payload-too-large"], json!([0, 1, 0]), "{stats}");
    let calls: i64 = stats["calls"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s[1].as_i64().unwrap())
        .sum();
    assert_eq!(calls, 2, "{stats}");
    assert_eq!(stats["deliveries"], json!({}));
}

#[tokio::test]
async fn stats_refuse_bad_windows_and_buckets_and_need_metrics_read() {
    let app = TestApp::builder()
        .key("charts", &["metrics:read"])
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let ok = get_json(&app, app.key("charts"), "/v1/stats").await;
    assert_eq!(
        ok["buckets"].as_array().unwrap().len(),
        60,
        "the last hour by minute"
    );
    let ok = get_json(
        &app,
        app.key("charts"),
        "/v1/stats?bucket=1d&since=2026-01-01T00:00:00Z",
    )
    .await;
    assert!(ok["triggers"]["accepted"].as_array().unwrap().len() >= 300);
    for (query, status, kind) in [
        ("bucket=1s", 422, "validation-failed"),
        ("bucket=0m", 422, "validation-failed"),
        ("bucket=soon", 422, "validation-failed"),
        (
            "since=2026-01-01T00:00:00Z&until=2026-01-03T00:00:01Z",
            422,
            "validation-failed",
        ),
        ("since=yesterday", 400, "malformed-request"),
        ("until=2026-13-01T00:00:00Z", 400, "malformed-request"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            400,
            "malformed-request",
        ),
        ("step=1m", 400, "malformed-request"),
    ] {
        let r = app
            .get(app.key("charts"), &format!("/v1/stats?{query}"))
            .await;
        let body = problem(r, status).await;
        assert_eq!(
            body["type"],
            format!("urn:callgate:problem:{kind}"),
            "{query}: {body}"
        );
    }
    forbidden(
        app.get(app.key("zapier"), "/v1/stats").await,
        "metrics:read",
    )
    .await;
}

#[test]
fn a_health_check_off_the_endpoints_origin_or_too_frequent_is_a_config_problem() {
    let endpoint = |name: &str, check: &str| {
        crm_endpoint(
            "http://127.0.0.1:9/hooks",
            &format!("health_check = {check}"),
        )
        .replace("[endpoints.crm]", &format!("[endpoints.{name}]"))
    };
    let endpoints = [
        endpoint("a", "{ path = \"/health\", interval = \"1s\" }"),
        endpoint(
            "b",
            "{ path = \"//evil.example/health\", interval = \"30s\" }",
        ),
        endpoint("c", "{ path = \"health\", interval = \"2h\" }"),
    ]
    .join("\n");
    let err = crate::support::config_problems(&[("endpoints.toml", &endpoints)]);
    for (key, what) in [
        ("endpoints.a.health_check.interval", "between 5s and 1h"),
        ("endpoints.b.health_check.path", "absolute path"),
        ("endpoints.c.health_check.path", "absolute path"),
        ("endpoints.c.health_check.interval", "between 5s and 1h"),
    ] {
        crate::support::assert_problem(&err, key, what);
    }
    let missing = endpoint("d", "{ path = \"/health\" }");
    let err = crate::support::config_problems(&[("endpoints.toml", &missing)]);
    crate::support::assert_problem(&err, "endpoints.d.health_check", "interval");
}
