//! Bad input gets a clear problem+json: 400, 413, 415, 422.

use futures_util::stream;
use serde_json::{Value, json};

use crate::support::{RawResponse, TestApp, problem, raw_tls, read_response};

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

/// What an over-limit upload looks like to a client that writes its whole
/// body before it reads (Python `requests`, many CRM integrations).
const UPLOAD: usize = 2 * 1024 * 1024;

async fn upload_then_read(app: &TestApp, chunked: bool, close: bool) -> RawResponse {
    use tokio::io::AsyncWriteExt;
    let mut io = raw_tls(app.addr, app.cert_pem.as_bytes()).await;
    // A small send buffer keeps the client uploading until the server has
    // read (or discarded) nearly all of it, whatever the kernel's tuning.
    socket2::SockRef::from(io.get_ref().0)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {UPLOAD}")
    };
    let connection = if close { "connection: close\r\n" } else { "" };
    let head = format!(
        "POST /v1/triggers/demo-call HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         authorization: Bearer {}\r\ncontent-type: application/json\r\n{framing}\r\n\
         {connection}\r\n",
        app.key("zapier")
    );
    io.write_all(head.as_bytes()).await.unwrap();
    let piece = vec![b' '; 64 * 1024];
    for _ in 0..UPLOAD / piece.len() {
        let written = if chunked {
            io.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await
                .and(io.write_all(&piece).await)
                .and(io.write_all(b"\r\n").await)
        } else {
            io.write_all(&piece).await
        };
        written
            .unwrap_or_else(|e| panic!("upload cut off (chunked {chunked}, close {close}): {e}"));
    }
    if chunked {
        io.write_all(b"0\r\n\r\n").await.unwrap();
    }
    io.flush().await.unwrap();
    read_response(&mut io)
        .await
        .unwrap_or_else(|e| panic!("no answer (chunked {chunked}, close {close}): {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_uploads_everything_before_reading_still_reads_the_413() {
    let app = TestApp::start().await; // max_body_bytes = 4096 in tests
    for chunked in [false, true] {
        for close in [false, true] {
            let r = upload_then_read(&app, chunked, close).await;
            assert_eq!(r.status, 413, "chunked {chunked}, close {close}: {r:?}");
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
            // The rest of the body is never read: the connection cannot be
            // reused, and the client is told so.
            assert_eq!(r.header("connection"), Some("close"));
            let body = r.json();
            assert_eq!(body["type"], "urn:callgate:problem:payload-too-large");
            assert!(body["detail"].as_str().unwrap().contains("4096"), "{body}");
        }
    }
    assert_eq!(app.jobs_on_disk().await, 0);
}

#[tokio::test]
async fn an_h2_upload_of_megabytes_over_the_limit_gets_413_declared_or_streamed() {
    let app = TestApp::start().await;
    let big = vec![b' '; UPLOAD];
    let r = post_raw(&app, "application/json", big.clone()).await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    problem(r, 413).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
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
async fn form_text_that_is_not_utf8_gets_400_naming_the_field() {
    let app = TestApp::start().await;
    let form = "application/x-www-form-urlencoded";
    // Latin-1 `é`, percent-encoded (what a Latin-1 sender's form encoder
    // writes), in both nestings, and raw.
    for (body, key) in [
        (
            &b"phone_number=%2B15550121234&customer[name]=Jos%E9"[..],
            "customer[name]",
        ),
        (
            b"phone_number=%2B15550121234&customer__name=Jos%E9",
            "customer__name",
        ),
        (
            b"phone_number=%2B15550121234&customer[name]=Jos\xe9",
            "customer[name]",
        ),
    ] {
        let body = problem(post_raw(&app, form, body.to_vec()).await, 400).await;
        assert_eq!(body["type"], "urn:callgate:problem:malformed-request");
        assert_eq!(body["errors"][0]["pointer"], "/customer/name", "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("`{key}`")) && detail.contains("UTF-8"),
            "{detail}"
        );
    }
    // In a key.
    let body = problem(
        post_raw(&app, form, "phone_number=%2B15550121234&na%E9me=x").await,
        400,
    )
    .await;
    assert_eq!(body["errors"][0]["pointer"], "/na\u{FFFD}me", "{body}");
    // Under `?mode=test` too.
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call?mode=test"))
        .bearer_auth(app.key("zapier"))
        .header("content-type", form)
        .body("phone_number=%2B15550121234&customer[name]=Jos%E9")
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    assert_eq!(app.jobs_on_disk().await, 0);
    // The same name in UTF-8 is accepted and stored as sent.
    let r = post_raw(
        &app,
        form,
        "phone_number=%2B15550121234&customer[name]=Jos%C3%A9",
    )
    .await;
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
    assert_eq!(job["input"]["customer"]["name"], "José");
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
