//! The do-not-call API over HTTPS: entries by number (normalised to
//! E.164), the bulk import, the listing, scopes, the seed file, and the
//! runner refusing to dial a number listed after its job was queued.

use callgate::calls::simulator::LogEntry;
use callgate::clock::ManualClock;
use serde_json::{Value, json};

use crate::runner::{ANYTIME_AGENT, fast_simulator, get_json};
use crate::support::{Builder, TestApp, forbidden, problem};

const T: i64 = 1_800_000_000_000;

/// The shipped config with an empty seed file (the shipped one lists a
/// number), and keys for each scope.
fn app_builder() -> Builder {
    TestApp::builder()
        .file("do_not_call.txt", "# nobody\n")
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", &["dnc:read", "dnc:write"])
        .key("reader", &["dnc:read"])
        .key("writer", &["dnc:write"])
}

async fn send(app: &TestApp, method: &str, key: &str, path: &str) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    app.client
        .request(method, app.url(path))
        .bearer_auth(app.key(key))
        .send()
        .await
        .unwrap()
}

async fn import(app: &TestApp, key: &str, content_type: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/do-not-call"))
        .bearer_auth(app.key(key))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn accept(app: &TestApp, body: &Value) -> String {
    let r = app.trigger(app.key("zapier"), "demo-call", body).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn dialed(app: &TestApp) -> Vec<String> {
    app.dial_log()
        .into_iter()
        .filter_map(|e| match e {
            LogEntry::Dial { to, .. } => Some(to),
            LogEntry::End { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_listed_after_its_jobs_were_queued_and_scheduled_is_never_dialed() {
    listed_numbers_are_not_dialed(app_builder()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_number_listed_after_its_jobs_were_queued_and_scheduled_is_never_dialed() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_a_number_listed_after_its_jobs_were_queued_and_scheduled_is_never_dialed"
    );
    listed_numbers_are_not_dialed(app_builder().postgres(&url)).await;
}

/// Jobs to a number are queued and scheduled, then the number is listed
/// through the API: neither dials. A job to another number, queued beside
/// them, dials (so the runner did run).
async fn listed_numbers_are_not_dialed(builder: Builder) {
    let clock = ManualClock::new(T);
    let app = builder.clock(clock.clone()).start().await;
    let queued = accept(&app, &json!({"phone_number": "+1 (555) 012-1234"})).await;
    let later = callgate::clock::rfc3339(T + 3_600_000);
    let scheduled = accept(
        &app,
        &json!({"phone_number": "+15550121234", "schedule_at": later}),
    )
    .await;
    let other = accept(&app, &json!({"phone_number": "+15550120000"})).await;

    let r = send(&app, "PUT", "ops", "/v1/do-not-call/+15550121234").await;
    assert_eq!(r.status(), 201);

    assert_eq!(app.run_pending().await, 2, "the two due jobs");
    clock.advance_ms(3_600_000);
    assert_eq!(app.run_pending().await, 1, "the scheduled job");
    let key = app.key("zapier").to_owned();
    for id in [&queued, &scheduled] {
        let job = get_json(&app, &key, &format!("/v1/jobs/{id}")).await;
        assert_eq!(job["status"], "rejected", "{job}");
        assert_eq!(
            job["status_reason"],
            "+15550121234 is on the do-not-call list"
        );
        assert_eq!(job["calls"], json!([]));
    }
    let job = get_json(&app, &key, &format!("/v1/jobs/{other}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(dialed(&app), ["+15550120000"]);
}

/// Two instances on one database: a number listed through one stops the
/// other's next dial (it reads the store at each dial; nothing to go
/// stale), and removing it through the other lets the next job dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_number_listed_through_one_instance_is_not_dialed_by_another() {
    let url = crate::pg_url_or_skip!(
        "on_postgres_a_number_listed_through_one_instance_is_not_dialed_by_another"
    );
    let a = app_builder().postgres(&url).start().await;
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = app_builder().storage_url(&shared).start().await;
    let listed = accept(&b, &json!({"phone_number": "+15550121234"})).await;
    let r = send(&a, "PUT", "ops", "/v1/do-not-call/+15550121234").await;
    assert_eq!(r.status(), 201);
    assert_eq!(b.run_pending().await, 1);
    let job = get_json(&b, b.key("zapier"), &format!("/v1/jobs/{listed}")).await;
    assert_eq!(job["status"], "rejected", "{job}");
    assert!(dialed(&b).is_empty());

    let r = send(&b, "DELETE", "ops", "/v1/do-not-call/+15550121234").await;
    assert_eq!(r.status(), 204);
    let again = accept(&a, &json!({"phone_number": "+15550121234"})).await;
    assert_eq!(a.run_pending().await, 1);
    let job = get_json(&a, a.key("zapier"), &format!("/v1/jobs/{again}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(dialed(&a), ["+15550121234"]);
}

#[tokio::test]
async fn a_number_is_added_read_and_removed_in_any_written_form() {
    let app = app_builder().start().await;
    let r = send(
        &app,
        "PUT",
        "ops",
        "/v1/do-not-call/%2B1%20(555)%20012-1234",
    )
    .await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["number"], "+15550121234");
    assert_eq!(body["sources"], json!(["api"]));
    assert_eq!(body["added_by"], "key:ops");
    assert!(body["added_at"].is_string());
    // Again: already listed, the first entry kept.
    let r = send(&app, "PUT", "writer", "/v1/do-not-call/+15550121234").await;
    assert_eq!(r.status(), 200);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again, body);
    // Without `+`, read in [defaults].phone_region (US).
    let got = get_json(&app, app.key("reader"), "/v1/do-not-call/555-012-1234").await;
    assert_eq!(got, body);

    let r = send(&app, "DELETE", "ops", "/v1/do-not-call/5550121234").await;
    assert_eq!(r.status(), 204);
    let r = send(&app, "GET", "ops", "/v1/do-not-call/+15550121234").await;
    let p = problem(r, 404).await;
    assert!(
        p["detail"].as_str().unwrap().contains("+15550121234"),
        "{p}"
    );
    let r = send(&app, "DELETE", "ops", "/v1/do-not-call/+15550121234").await;
    problem(r, 404).await;
}

#[tokio::test]
async fn a_number_that_does_not_normalise_is_a_422_naming_it() {
    let app = app_builder().start().await;
    for method in ["GET", "PUT", "DELETE"] {
        let r = send(&app, method, "ops", "/v1/do-not-call/555-CALL-NOW").await;
        let p = problem(r, 422).await;
        assert_eq!(p["type"], "urn:callgate:problem:validation-failed");
        assert!(
            p["detail"].as_str().unwrap().contains("`555-CALL-NOW`"),
            "{p}"
        );
        assert_eq!(p["errors"][0]["pointer"], "/number");
    }
    let r = send(&app, "PUT", "ops", "/v1/do-not-call/+1555").await;
    let p = problem(r, 422).await;
    assert!(p["detail"].as_str().unwrap().contains("`+1555`"), "{p}");
    // Nothing was stored.
    let list = get_json(&app, app.key("ops"), "/v1/do-not-call").await;
    assert_eq!(list["numbers"], json!([]));
}

#[tokio::test]
async fn reading_needs_dnc_read_and_changing_needs_dnc_write() {
    let app = app_builder().start().await;
    let path = "/v1/do-not-call/+15550121234";
    for method in ["PUT", "DELETE"] {
        forbidden(send(&app, method, "reader", path).await, "dnc:write").await;
        forbidden(send(&app, method, "zapier", path).await, "dnc:write").await;
    }
    forbidden(
        import(&app, "reader", "text/plain", "+15550121234\n").await,
        "dnc:write",
    )
    .await;
    forbidden(send(&app, "GET", "writer", path).await, "dnc:read").await;
    forbidden(
        send(&app, "GET", "writer", "/v1/do-not-call").await,
        "dnc:read",
    )
    .await;
    // The scope is checked before the number: a bad one is still a 403.
    forbidden(
        send(&app, "GET", "zapier", "/v1/do-not-call/x").await,
        "dnc:read",
    )
    .await;
    // None of the refused writes changed anything.
    let list = get_json(&app, app.key("ops"), "/v1/do-not-call").await;
    assert_eq!(list["numbers"], json!([]));
    let r = app.client.get(app.url(path)).send().await.unwrap();
    problem(r, 401).await;
}

#[tokio::test]
async fn the_seed_file_is_listed_with_the_stored_entries_and_cannot_be_removed_here() {
    let app = app_builder()
        .file(
            "do_not_call.txt",
            "# opted out\n+15550121234\n+442071838750\n",
        )
        .start()
        .await;
    let got = get_json(&app, app.key("reader"), "/v1/do-not-call/+15550121234").await;
    assert_eq!(
        got,
        json!({"number": "+15550121234", "sources": ["file"], "added_at": null, "added_by": null})
    );
    let r = send(&app, "DELETE", "ops", "/v1/do-not-call/+15550121234").await;
    let p = problem(r, 409).await;
    assert!(
        p["detail"].as_str().unwrap().contains("do_not_call.txt"),
        "{p}"
    );
    // Also stored: both sources; removing it is still refused.
    assert_eq!(
        send(&app, "PUT", "ops", "/v1/do-not-call/+15550121234")
            .await
            .status(),
        201
    );
    for n in ["+15550120000", "+15550129999"] {
        let r = send(&app, "PUT", "ops", &format!("/v1/do-not-call/{n}")).await;
        assert_eq!(r.status(), 201);
    }
    problem(
        send(&app, "DELETE", "ops", "/v1/do-not-call/+15550121234").await,
        409,
    )
    .await;

    // Pages of two, both sources merged in number order.
    let mut seen = Vec::new();
    let mut path = "/v1/do-not-call?limit=2".to_owned();
    loop {
        let page = get_json(&app, app.key("reader"), &path).await;
        let numbers = page["numbers"].as_array().unwrap();
        assert!(numbers.len() <= 2, "{page}");
        seen.extend(
            numbers
                .iter()
                .map(|e| (e["number"].clone(), e["sources"].clone())),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/do-not-call?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            (json!("+15550120000"), json!(["api"])),
            (json!("+15550121234"), json!(["api", "file"])),
            (json!("+15550129999"), json!(["api"])),
            (json!("+442071838750"), json!(["file"])),
        ]
    );
}

#[tokio::test]
async fn an_import_adds_the_valid_numbers_and_names_the_invalid_lines() {
    let app = app_builder().start().await;
    assert_eq!(
        send(&app, "PUT", "ops", "/v1/do-not-call/+15550120000")
            .await
            .status(),
        201
    );
    let text = "# opted out at the fair\n+1 555 012 1234\n\n+15550120000  # already listed\n\
                555-CALL-NOW\n5550121234\n+442071838750\n";
    let r = import(&app, "writer", "text/plain; charset=utf-8", text).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["added"], 2, "{body}");
    // The listed one, and the repeat of line 2 in another form.
    assert_eq!(body["already_present"], 2, "{body}");
    let invalid = body["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 1, "{body}");
    assert_eq!(invalid[0]["line"], 5);
    assert_eq!(invalid[0]["value"], "555-CALL-NOW");
    assert!(invalid[0]["message"].as_str().unwrap().contains("`C`"));

    let json_body = json!(["+15550129999", 15550121234u64, "(555) 012-0000", "nope"]);
    let r = import(&app, "ops", "application/json", &json_body.to_string()).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["added"].clone(), body["already_present"].clone()),
        (json!(1), json!(1))
    );
    let lines: Vec<&Value> = body["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["line"])
        .collect();
    assert_eq!(lines, [&json!(2), &json!(4)], "{body}");
    assert_eq!(body["invalid"][0]["message"], "must be a string");

    let list = get_json(&app, app.key("ops"), "/v1/do-not-call").await;
    let numbers: Vec<&str> = list["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["number"].as_str().unwrap())
        .collect();
    assert_eq!(
        numbers,
        [
            "+15550120000",
            "+15550121234",
            "+15550129999",
            "+442071838750"
        ]
    );
    assert_eq!(list["numbers"][1]["added_by"], "key:writer");
}

#[tokio::test]
async fn a_bad_import_or_listing_request_is_a_problem_with_its_status() {
    let app = app_builder().max_body_bytes(256).start().await;
    problem(import(&app, "ops", "text/csv", "+15550121234").await, 415).await;
    problem(
        import(&app, "ops", "text/plain; charset=latin1", "+15550121234").await,
        415,
    )
    .await;
    problem(
        import(&app, "ops", "application/json", "[\"+1555").await,
        400,
    )
    .await;
    let p = problem(
        import(&app, "ops", "application/json", "{\"numbers\": []}").await,
        422,
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "");
    let big = "+15550121234\n".repeat(40);
    problem(import(&app, "ops", "text/plain", &big).await, 413).await;
    for query in [
        "cursor=%2B1555",
        "cursor=abc",
        "limit=0",
        "limit=1001",
        "limit=x",
        "status=new",
    ] {
        let r = send(&app, "GET", "ops", &format!("/v1/do-not-call?{query}")).await;
        problem(r, 400).await;
    }
    // Nothing above was stored.
    let list = get_json(&app, app.key("ops"), "/v1/do-not-call").await;
    assert_eq!(list, json!({"numbers": [], "next_cursor": null}));
}
