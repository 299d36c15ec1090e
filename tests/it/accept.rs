//! `POST /v1/triggers/{id}`: the happy paths and what they leave on disk.

use serde_json::{Value, json};

use crate::support::{TestApp, demo_body, fixture};

#[tokio::test]
async fn demo_call_is_accepted_with_202_location_and_a_job_on_disk() {
    let app = TestApp::start().await;
    let before = chrono::Utc::now();
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(r.headers().contains_key("x-request-id"));
    let policies: Vec<_> = r
        .headers()
        .get_all("ratelimit-policy")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        policies.iter().any(|p| p.starts_with("\"trigger\";q=")),
        "{policies:?}"
    );
    assert!(
        policies.iter().any(|p| p.starts_with("\"principal\";q=")),
        "{policies:?}"
    );
    assert!(
        policies.iter().any(|p| p.starts_with("\"ip\";q=")),
        "{policies:?}"
    );
    let body: Value = r.json().await.unwrap();
    let job_id = body["job_id"].as_str().unwrap();
    assert!(job_id.starts_with("job_") && job_id.len() == 30, "{job_id}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["trigger_id"], "demo-call");
    assert_eq!(location, format!("/v1/jobs/{job_id}"));
    assert_eq!(body["links"]["self"], location);
    let created =
        chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    assert!(created >= before - chrono::Duration::seconds(1));

    // The answer came after the commit: the row is in the file now.
    assert_eq!(app.jobs_on_disk().await, 1);
    let job: Value = app
        .get(app.key("zapier"), &location)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["input"]["phone_number"], "+15550121234");
    assert_eq!(job["input"]["customer"]["name"], "Ada Lovelace");
    assert_eq!(
        job["action"],
        json!({"type": "start_call", "agent": "demo-agent", "to": "+15550121234"})
    );
    assert_eq!(job["created_by"], "key:zapier");
    assert!(job["result"].is_null() && job["error"].is_null());
}

#[tokio::test]
async fn zapier_form_payload_is_accepted_with_double_underscore_nesting() {
    let app = TestApp::start().await;
    let body = fixture("samples/zapier-form.txt");
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .header("authorization", format!("Bearer {}", app.key("zapier")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let job: Value = app
        .get(
            app.key("zapier"),
            accepted["links"]["self"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["input"]["phone_number"], "+15550121234");
    assert_eq!(
        job["input"]["customer"],
        json!({"name": "Ada Lovelace", "crm_id": "0031x00000ABC"})
    );
    assert_eq!(job["input"]["follow_up_required"], "true");
}

#[tokio::test]
async fn zapier_json_payload_and_bracketed_form_keys_are_accepted() {
    let app = TestApp::start().await;
    let sample: Value = serde_json::from_slice(&fixture("samples/zapier-json.json")).unwrap();
    assert_eq!(
        app.trigger(app.key("zapier"), "demo-call", &sample)
            .await
            .status(),
        202
    );

    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call?mode=test"))
        .bearer_auth(app.key("zapier"))
        .form(&[
            ("phone_number", "555-012-1234"),
            ("customer[name]", "Ada"),
            ("customer[crm_id]", "42"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tested: Value = r.json().await.unwrap();
    assert_eq!(
        tested["input"]["customer"],
        json!({"name": "Ada", "crm_id": "42"})
    );
}

#[tokio::test]
async fn test_mode_answers_200_with_the_normalised_input_and_creates_no_job() {
    let app = TestApp::start().await;
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call?mode=test"))
        .bearer_auth(app.key("zapier"))
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["mode"], "test");
    assert_eq!(body["trigger_id"], "demo-call");
    assert_eq!(body["input"]["phone_number"], "+15550121234");
    assert_eq!(
        body["would_run"],
        json!({"type": "start_call", "agent": "demo-agent", "to": "+15550121234"})
    );
    assert_eq!(app.jobs_on_disk().await, 0);

    // Test mode still validates: a bad number is the same 422 as for real.
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call?mode=test"))
        .bearer_auth(app.key("zapier"))
        .json(&json!({"phone_number": "12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn listing_triggers_shows_only_what_the_caller_may_run_with_schemas() {
    let app = TestApp::builder()
        .triggers("[triggers.second]\nschema = \"schemas/demo-call.json\"\naction = { type = \"start_call\", agent = \"demo-agent\" }\n")
        .key("all", &["triggers:run"])
        .key("one", &["trigger:second"])
        .start()
        .await;
    let all: Value = app
        .get(app.key("all"), "/v1/triggers")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = all["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["demo-automation", "demo-call", "second"]);
    assert_eq!(
        all["triggers"][1]["input_schema"]["required"],
        json!(["phone_number"])
    );
    assert_eq!(all["triggers"][1]["url"], "/v1/triggers/demo-call");
    assert_eq!(all["triggers"][0]["action"]["type"], "automation");

    let one: Value = app
        .get(app.key("one"), "/v1/triggers")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["triggers"].as_array().unwrap().len(), 1);
    let detail = app.get(app.key("one"), "/v1/triggers/second").await;
    assert_eq!(detail.status(), 200);
    assert_eq!(
        app.get(app.key("one"), "/v1/triggers/demo-call")
            .await
            .status(),
        403
    );
    assert_eq!(
        app.get(app.key("all"), "/v1/triggers/nope").await.status(),
        404
    );
}
