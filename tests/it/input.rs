//! Bad input gets a clear problem+json: 400, 413, 415, 422.

use futures_util::stream;
use serde_json::{Value, json};

use crate::support::{TestApp, problem};

async fn post_raw(
    app: &TestApp,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .post(app.url("/v1/triggers/demo-call"))
        .bearer_auth(app.key("zapier"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn other_media_types_get_415() {
    let app = TestApp::start().await;
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=iso-8859-1",
    ] {
        let body = problem(post_raw(&app, ct, "{}").await, 415).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("application/json")
                || ct.contains("charset"),
            "{body}"
        );
    }
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .bearer_auth(app.key("zapier"))
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(r, 415).await;
    assert_eq!(app.jobs_on_disk().await, 0);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_declared_or_streamed() {
    let app = TestApp::start().await; // max_body_bytes = 4096 in tests
    let big =
        json!({"phone_number": "+15550121234", "variables": {"pad": "x".repeat(5000)}}).to_string();
    let body = problem(post_raw(&app, "application/json", big.clone()).await, 413).await;
    assert!(body["detail"].as_str().unwrap().contains("4096"));
    // Chunked, without Content-Length: the limit holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = post_raw(
        &app,
        "application/json",
        reqwest::Body::wrap_stream(stream::iter(chunks)),
    )
    .await;
    problem(r, 413).await;
    assert_eq!(app.jobs_on_disk().await, 0);
}

#[tokio::test]
async fn malformed_json_gets_400_saying_where() {
    let app = TestApp::start().await;
    let body = problem(
        post_raw(
            &app,
            "application/json",
            "{\"phone_number\": \"+1\",\n  \"customer\": }",
        )
        .await,
        400,
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("line 2") && detail.contains("column"),
        "{detail}"
    );
    assert_eq!(body["type"], "urn:callgate:problem:malformed-request");
    problem(post_raw(&app, "application/json", "").await, 400).await;
    problem(
        post_raw(&app, "application/x-www-form-urlencoded", "a=1&a[b]=2").await,
        400,
    )
    .await;
    problem(
        post_raw(&app, "application/x-www-form-urlencoded", vec![0xff, 0xfe]).await,
        400,
    )
    .await;
}

#[tokio::test]
async fn form_keys_that_are_empty_or_too_deep_get_400_and_the_limit_itself_is_accepted() {
    let app = TestApp::start().await;
    let form = "application/x-www-form-urlencoded";
    for key in ["", "a__", "__a", "[b]", "a____b", "a[__]", "a[b][__c]"] {
        let body = format!("phone_number=%2B15550121234&{key}=1");
        let p = problem(post_raw(&app, form, body).await, 400).await;
        assert!(
            p["detail"].as_str().unwrap().contains("empty"),
            "{key}: {p}"
        );
    }
    let deep = format!("phone_number=%2B15550121234&a{}=1", "[b]".repeat(16));
    let p = problem(post_raw(&app, form, deep).await, 400).await;
    assert!(
        p["detail"].as_str().unwrap().contains("nesting marks"),
        "{p}"
    );
    let mixed = format!(
        "phone_number=%2B15550121234&a{}{}=1",
        "[b]".repeat(8),
        "__c".repeat(8)
    );
    problem(post_raw(&app, form, mixed).await, 400).await;
    // 15 marks (16 levels) is the deepest accepted.
    let deepest = format!("phone_number=%2B15550121234&a{}=1", "__b".repeat(15));
    let r = post_raw(&app, form, deepest).await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn schema_violations_get_422_listing_every_one() {
    let app = TestApp::start().await;
    let r = post_raw(
        &app,
        "application/json",
        json!({"customer": {"name": 7, "crm_id": ["x"]}, "variables": "nope"}).to_string(),
    )
    .await;
    let body = problem(r, 422).await;
    assert_eq!(body["type"], "urn:callgate:problem:validation-failed");
    let mut pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    pointers.sort();
    assert_eq!(
        pointers,
        [
            "/customer/crm_id",
            "/customer/name",
            "/phone_number",
            "/variables"
        ]
    );
    for e in body["errors"].as_array().unwrap() {
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    // A JSON array is not an object.
    problem(post_raw(&app, "application/json", "[1]").await, 422).await;
    assert_eq!(app.jobs_on_disk().await, 0);
}

#[tokio::test]
async fn phone_numbers_are_normalised_or_rejected_naming_the_field() {
    let app = TestApp::start().await;
    for (raw, e164) in [
        ("+1 (555) 012-1234", "+15550121234"),
        ("555.012.1234", "+15550121234"),
        ("+44 20 7946 0958", "+442079460958"),
        // Other countries' numbers keep every digit in a US-region trigger
        // (the parser used to strip US prefixes from them: +44 632960961).
        ("+44 1632 960961", "+441632960961"),
        ("+55 11 91234 5678", "+5511912345678"),
        ("+44 (0)20 7946 0958", "+442079460958"),
    ] {
        let r = post_raw(
            &app,
            "application/json",
            json!({"phone_number": raw}).to_string(),
        )
        .await;
        assert_eq!(r.status(), 202, "{raw}");
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
        assert_eq!(job["input"]["phone_number"], e164);
    }
    for raw in [
        "555-CALL-NOW",
        "123",
        "+999 1234 5678",
        "call me maybe",
        // 16 digits: a possible German length, but longer than E.164.
        "+49 91 987471547158",
    ] {
        let body = problem(
            post_raw(
                &app,
                "application/json",
                json!({"phone_number": raw}).to_string(),
            )
            .await,
            422,
        )
        .await;
        assert_eq!(
            body["errors"][0]["pointer"], "/phone_number",
            "{raw}: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("phone number"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_unknown_mode_gets_400() {
    let app = TestApp::start().await;
    for q in ["mode=dry", "mode="] {
        let r = app
            .client
            .post(app.url(&format!("/v1/triggers/demo-call?{q}")))
            .bearer_auth(app.key("zapier"))
            .json(&json!({"phone_number": "+15550121234"}))
            .send()
            .await
            .unwrap();
        problem(r, 400).await;
    }
}
