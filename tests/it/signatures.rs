//! Signed triggers over HTTPS: Standard Webhooks, HubSpot v3 and
//! GitHub-style HMAC senders without credentials; tampering, time windows,
//! replays, rotation, other triggers, `signatures_only`, the sender's limit.
//! Requests are signed here with the schemes' own recipes (the
//! `standardwebhooks` crate, HMAC over the documented strings), not with
//! the gateway's code.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::support::{TestApp, demo_body, now, problem};

const HUBSPOT_SECRET: &str = "c8f2a1e4-51b7-4f0e-9d3a-7b6e2c9f0a15";
const GH_SECRET: &str = "gh-webhook-secret-0123456789";

fn whsec(fill: u8) -> String {
    format!("whsec_{}", B64.encode([fill; 32]))
}

const TRIGGERS: &str = r#"
[triggers.signed-call]
schema = "schemas/demo-call.json"
action = { type = "start_call", agent = "demo-agent", to = "/phone_number" }
signatures = [
  { scheme = "standard-webhooks", secret = "${SW_OLD}" },
  { scheme = "standard-webhooks", secret = "${SW_NEW}" },
  { scheme = "hubspot-v3", secret = "${HUBSPOT_SECRET}" },
  { scheme = "hmac-sha256", header = "X-Hub-Signature-256", prefix = "sha256=", secret = "${GH_SECRET}", name = "github" },
]

[triggers.signed-only]
schema = "schemas/demo-call.json"
action = { type = "start_call", agent = "demo-agent", to = "/phone_number" }
signatures_only = true
signatures = [{ scheme = "standard-webhooks", secret = "${SW_OTHER}" }]
"#;

fn builder() -> crate::support::Builder {
    TestApp::builder()
        .key("zapier", &["triggers:run"])
        .key("ops", &["jobs:read"])
        .triggers(TRIGGERS)
        .env("SW_OLD", &whsec(1))
        .env("SW_NEW", &whsec(2))
        .env("SW_OTHER", &whsec(3))
        .env("HUBSPOT_SECRET", HUBSPOT_SECRET)
        .env("GH_SECRET", GH_SECRET)
        // HubSpot signs the URL it calls: without it `callgate check` fails.
        .env("CALLGATE_SERVER__PUBLIC_URL", "https://hooks.example.com")
}

/// A Standard Webhooks message as a sender signs it.
struct Message {
    id: String,
    ts: i64,
    body: Vec<u8>,
    signature: String,
}

fn message(secret: &str, id: &str, ts: i64, body: &Value) -> Message {
    let body = serde_json::to_vec(body).unwrap();
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    let signature = wh.sign(id, ts, &body).unwrap();
    Message {
        id: id.into(),
        ts,
        body,
        signature,
    }
}

async fn send(app: &TestApp, trigger: &str, m: &Message) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/triggers/{trigger}")))
        .header("content-type", "application/json")
        .header("webhook-id", &m.id)
        .header("webhook-timestamp", m.ts.to_string())
        .header("webhook-signature", &m.signature)
        .body(m.body.clone())
        .send()
        .await
        .unwrap()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// A 401 `bad-signature` whose challenge names `Signature` (and `Bearer`
/// when the trigger takes tokens too); returns the detail.
async fn bad_signature(response: reqwest::Response, bearer_too: bool) -> String {
    let challenges: Vec<String> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = problem(response, 401).await;
    assert_eq!(body["type"], "urn:callgate:problem:bad-signature", "{body}");
    assert!(challenges.contains(&"Signature realm=\"callgate\"".to_owned()));
    assert_eq!(
        challenges.contains(&"Bearer realm=\"callgate\"".to_owned()),
        bearer_too,
        "{challenges:?}"
    );
    body["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_standard_webhooks_message_runs_the_trigger_as_its_sender() {
    let app = builder().start().await;
    let m = message(&whsec(2), "msg_first", now(), &demo_body());
    let response = send(&app, "signed-call", &m).await;
    assert_eq!(response.status(), 202);
    // The sender's own limit answered too (per IP and per principal).
    let policies: Vec<&str> = response
        .headers()
        .get_all("ratelimit-policy")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        policies.iter().any(|p| p.contains("\"principal\"")),
        "{policies:?}"
    );
    let accepted: Value = response.json().await.unwrap();
    let jobs = app.all_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].principal, "sig:signed-call:standard-webhooks");
    assert_eq!(jobs[0].input["phone_number"], "+15550121234");
    // The job is readable through the API with its sender recorded.
    let job: Value = app
        .get(
            app.key("ops"),
            &format!("/v1/jobs/{}", accepted["job_id"].as_str().unwrap()),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["job_id"], accepted["job_id"], "{job}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_replayed_or_retried_message_gets_the_first_answer_and_never_a_second_job() {
    let app = builder().start().await;
    let first = message(&whsec(2), "msg_replay", now(), &demo_body());
    let response = send(&app, "signed-call", &first).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();

    // The same request again (a replay), and a retry as Standard Webhooks
    // senders make it: same id and body, a new timestamp and signature.
    let retry = message(&whsec(2), "msg_replay", now() + 1, &demo_body());
    for m in [&first, &retry] {
        let again = send(&app, "signed-call", m).await;
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let body: Value = again.json().await.unwrap();
        assert_eq!(body["job_id"], accepted["job_id"]);
    }
    // The Idempotency-Key header is not signed: a replay that sends fresh
    // keys still meets the signed message's key, and its first answer.
    for fresh in ["attacker-key-1", "attacker-key-2"] {
        let again = app
            .client
            .post(app.url("/v1/triggers/signed-call"))
            .header("content-type", "application/json")
            .header("idempotency-key", fresh)
            .header("webhook-id", &first.id)
            .header("webhook-timestamp", first.ts.to_string())
            .header("webhook-signature", &first.signature)
            .body(first.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let body: Value = again.json().await.unwrap();
        assert_eq!(body["job_id"], accepted["job_id"]);
    }
    assert_eq!(app.jobs_on_disk().await, 1, "no second job");
    // Another body under the old signature fails the signature…
    let mut forged = message(&whsec(2), "msg_replay", first.ts, &demo_body());
    forged.body = serde_json::to_vec(&json!({"phone_number": "+15550129999"})).unwrap();
    bad_signature(send(&app, "signed-call", &forged).await, true).await;
    // …and a sender that reuses an id for another body gets the 422.
    let reused = message(
        &whsec(2),
        "msg_replay",
        now(),
        &json!({"phone_number": "+15550129999"}),
    );
    let body = problem(send(&app, "signed-call", &reused).await, 422).await;
    assert_eq!(body["type"], "urn:callgate:problem:idempotency-key-reused");
    assert_eq!(app.jobs_on_disk().await, 1);
    // A new message id is a new job.
    let next = message(&whsec(2), "msg_next", now(), &demo_body());
    assert_eq!(send(&app, "signed-call", &next).await.status(), 202);
    assert_eq!(app.jobs_on_disk().await, 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn tampered_unsigned_stale_future_and_wrongly_keyed_messages_are_refused() {
    let app = builder().start().await;
    let good = message(&whsec(2), "msg_t", now(), &demo_body());

    let mut tampered = message(&whsec(2), "msg_t", good.ts, &demo_body());
    tampered.body = serde_json::to_vec(&json!({"phone_number": "+15550120000"})).unwrap();
    let detail = bad_signature(send(&app, "signed-call", &tampered).await, true).await;
    assert!(detail.contains("does not match"), "{detail}");
    // The detail never carries the expected signature.
    assert!(!detail.contains(good.signature.trim_start_matches("v1,")));

    let wrong_secret = message(&whsec(9), "msg_w", now(), &demo_body());
    bad_signature(send(&app, "signed-call", &wrong_secret).await, true).await;

    // Well outside the window: a slow machine between signing and checking
    // cannot bring a future timestamp back inside it.
    for ts in [now() - 400, now() + 400] {
        let m = message(&whsec(2), "msg_s", ts, &demo_body());
        let detail = bad_signature(send(&app, "signed-call", &m).await, true).await;
        assert!(detail.contains("5 minutes"), "{detail}");
    }

    // Each header left out in turn.
    for leave_out in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut request = app
            .client
            .post(app.url("/v1/triggers/signed-call"))
            .header("content-type", "application/json")
            .body(good.body.clone());
        for (name, value) in [
            ("webhook-id", good.id.clone()),
            ("webhook-timestamp", good.ts.to_string()),
            ("webhook-signature", good.signature.clone()),
        ] {
            if name != leave_out {
                request = request.header(name, value);
            }
        }
        let detail = bad_signature(request.send().await.unwrap(), true).await;
        assert!(detail.contains(&format!("`{leave_out}`")), "{detail}");
    }
    // Nothing at all: the answer names the headers a sender may sign with.
    let bare = app
        .client
        .post(app.url("/v1/triggers/signed-call"))
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    let detail = bad_signature(bare, true).await;
    assert!(
        detail.contains("`webhook-signature`") && detail.contains("`x-hubspot-signature-v3`"),
        "{detail}"
    );
    assert_eq!(app.jobs_on_disk().await, 0);
    // The good one still goes through: nothing above used it up.
    assert_eq!(send(&app, "signed-call", &good).await.status(), 202);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn both_secrets_of_a_rotation_are_accepted_as_the_same_sender() {
    let app = builder().start().await;
    let old = message(&whsec(1), "msg_old", now(), &demo_body());
    let new = message(&whsec(2), "msg_new", now(), &demo_body());
    assert_eq!(send(&app, "signed-call", &old).await.status(), 202);
    assert_eq!(send(&app, "signed-call", &new).await.status(), 202);
    // A retry signed with the new secret of a message first signed with the
    // old one is still the same message.
    let retried = message(&whsec(2), "msg_old", now(), &demo_body());
    let again = send(&app, "signed-call", &retried).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let principals: Vec<String> = app
        .all_jobs()
        .await
        .into_iter()
        .map(|j| j.principal)
        .collect();
    assert_eq!(principals, ["sig:signed-call:standard-webhooks"; 2]);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn signatures_are_per_trigger_and_a_trigger_without_them_wants_credentials() {
    let app = builder().start().await;
    // signed-only's secret on signed-call, and signed-call's on signed-only.
    let for_other = message(&whsec(3), "msg_o", now(), &demo_body());
    bad_signature(send(&app, "signed-call", &for_other).await, true).await;
    let for_call = message(&whsec(2), "msg_c", now(), &demo_body());
    bad_signature(send(&app, "signed-only", &for_call).await, false).await;
    // demo-call takes no signatures: the guard wants a credential.
    let response = send(&app, "demo-call", &for_call).await;
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"callgate\""
    );
    let body = problem(response, 401).await;
    assert_eq!(body["type"], "urn:callgate:problem:unauthorized");
    // An unknown trigger is no way around it.
    let body = problem(send(&app, "no-such-trigger", &for_call).await, 401).await;
    assert_eq!(body["type"], "urn:callgate:problem:unauthorized");
    assert_eq!(app.jobs_on_disk().await, 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_bearer_token_works_on_a_signed_trigger_unless_signatures_only() {
    let app = builder().start().await;
    let response = app
        .trigger(app.key("zapier"), "signed-call", &demo_body())
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(app.all_jobs().await[0].principal, "key:zapier");

    let response = app
        .trigger(app.key("zapier"), "signed-only", &demo_body())
        .await;
    let detail = bad_signature(response, false).await;
    assert!(detail.contains("signed requests only"), "{detail}");
    // A credential next to a valid signature is refused there too.
    let m = message(&whsec(3), "msg_both", now(), &demo_body());
    let response = app
        .client
        .post(app.url("/v1/triggers/signed-only"))
        .bearer_auth(app.key("zapier"))
        .header("content-type", "application/json")
        .header("webhook-id", &m.id)
        .header("webhook-timestamp", m.ts.to_string())
        .header("webhook-signature", &m.signature)
        .body(m.body.clone())
        .send()
        .await
        .unwrap();
    bad_signature(response, false).await;
    // Signed alone, it is accepted.
    assert_eq!(send(&app, "signed-only", &m).await.status(), 202);
    assert_eq!(app.jobs_on_disk().await, 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_hubspot_signature_covers_the_public_url_with_hubspots_decoding() {
    let app = builder().start().await;
    let body = br#"{"phone_number":"+15550121234","hs_object_id":"1234"}"#;
    let ts = (now() * 1000).to_string();
    // HubSpot signs the URL with `%3A` and `%2C` decoded, `%20` kept.
    let signed_url = "https://hooks.example.com/v1/triggers/signed-call?list=a:b,c%20d";
    let sign = |url: &str, ts: &str| {
        let data = [b"POST".as_slice(), url.as_bytes(), body, ts.as_bytes()].concat();
        B64.encode(hmac_sha256(HUBSPOT_SECRET.as_bytes(), &data))
    };
    let post = |signature: String, ts: String| {
        app.client
            .post(app.url("/v1/triggers/signed-call?list=a%3Ab%2Cc%20d"))
            .header("content-type", "application/json")
            .header("X-HubSpot-Signature-v3", signature)
            .header("X-HubSpot-Request-Timestamp", ts)
            .body(body.to_vec())
            .send()
    };
    let response = post(sign(signed_url, &ts), ts.clone()).await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        app.all_jobs().await[0].principal,
        "sig:signed-call:hubspot-v3"
    );
    // HubSpot has no message id: the same signed request again is a replay.
    let again = post(sign(signed_url, &ts), ts.clone()).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    // Signed for the address the request reached, not the public one.
    let local = format!("{}/v1/triggers/signed-call?list=a:b,c%20d", app.base);
    bad_signature(post(sign(&local, &ts), ts.clone()).await.unwrap(), true).await;
    // Another trigger's URL.
    let other = signed_url.replace("signed-call", "signed-only");
    bad_signature(post(sign(&other, &ts), ts.clone()).await.unwrap(), true).await;
    // Older than five minutes (HubSpot's timestamp is in milliseconds).
    let old = ((now() - 301) * 1000).to_string();
    let detail = bad_signature(post(sign(signed_url, &old), old).await.unwrap(), true).await;
    assert!(detail.contains("5 minutes"), "{detail}");
    let response = post("not base64!".into(), ts).await.unwrap();
    let detail = bad_signature(response, true).await;
    assert!(detail.contains("malformed"), "{detail}");
    assert_eq!(app.jobs_on_disk().await, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_github_style_hmac_header_is_verified_over_the_raw_body() {
    let app = builder().start().await;
    // Bytes a JSON parser would normalise: the signature is over these.
    let body = b"{ \"phone_number\" : \"+15550121234\" }";
    let good = format!(
        "sha256={}",
        hex::encode(hmac_sha256(GH_SECRET.as_bytes(), body))
    );
    let post = |sig: String, body: &'static [u8]| {
        app.client
            .post(app.url("/v1/triggers/signed-call"))
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(body)
            .send()
    };
    assert_eq!(post(good.clone(), body).await.unwrap().status(), 202);
    assert_eq!(app.all_jobs().await[0].principal, "sig:signed-call:github");
    let compact = b"{\"phone_number\":\"+15550121234\"}";
    bad_signature(post(good.clone(), compact).await.unwrap(), true).await;
    let upper = good.replace("sha256=", "SHA256=");
    bad_signature(post(upper, body).await.unwrap(), true).await;
    // Without a message id, the same signed body is the same message.
    let again = post(good, body).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.jobs_on_disk().await, 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_signed_sender_meets_the_body_limit_the_input_checks_and_its_own_rate_limit() {
    let app = builder()
        .limits(
            "per_ip = { requests = 100000, per = \"1s\", burst = 100000 }\n\
             per_principal = { requests = 1, per = \"1h\", burst = 2 }\n\
             per_trigger = { requests = 100000, per = \"1s\", burst = 100000 }\n\
             per_provider = { requests = 100000, per = \"1s\", burst = 100000 }\n",
        )
        .start()
        .await;
    let big = json!({"phone_number": "+15550121234", "pad": "x".repeat(5000)});
    let m = message(&whsec(2), "msg_big", now(), &big);
    problem(send(&app, "signed-call", &m).await, 413).await;

    // A verified sender still meets the trigger's schema (1 of its 2).
    let m = message(
        &whsec(2),
        "msg_bad",
        now(),
        &json!({"customer": "no number"}),
    );
    problem(send(&app, "signed-call", &m).await, 422).await;
    // …and its media types, once verified (2 of 2).
    let m = message(&whsec(2), "msg_text", now(), &demo_body());
    let response = app
        .client
        .post(app.url("/v1/triggers/signed-call"))
        .header("content-type", "text/plain")
        .header("webhook-id", &m.id)
        .header("webhook-timestamp", m.ts.to_string())
        .header("webhook-signature", &m.signature)
        .body(m.body.clone())
        .send()
        .await
        .unwrap();
    problem(response, 415).await;
    // Forgeries are charged per IP only, not to the sender's budget.
    let forged = message(&whsec(9), "msg_forged", now(), &demo_body());
    bad_signature(send(&app, "signed-call", &forged).await, true).await;
    // The budget is spent: the next verified request is 429.
    let m = message(&whsec(2), "msg_third", now(), &demo_body());
    let response = send(&app, "signed-call", &m).await;
    assert!(response.headers().contains_key("retry-after"));
    let body = problem(response, 429).await;
    assert_eq!(body["type"], "urn:callgate:problem:rate-limited");
    assert_eq!(app.jobs_on_disk().await, 0);
    app.stop().await.unwrap();
}

#[test]
fn callgate_check_names_the_file_and_key_of_each_bad_signature_entry() {
    let trigger = |signatures: &str| {
        format!(
            "[triggers.hooks]\nschema = \"schemas/demo-call.json\"\n\
             action = {{ type = \"start_call\", agent = \"demo-agent\" }}\n{signatures}\n"
        )
    };
    let err = crate::support::config_problems(&[(
        "triggers.toml",
        &trigger(
            r#"signatures = [
  { scheme = "standard-webhooks", secret = "whsec_c2hvcnQ=" },
  { scheme = "standard-webhooks", secret = "not-whsec" },
  { scheme = "hubspot-v3", secret = "short" },
  { scheme = "hmac-sha256", header = "X Sig", secret = "0123456789abcdef" },
  { scheme = "hubspot-v3", secret = "${NO_SUCH_SECRET}" },
]"#,
        ),
    )]);
    for (key, what) in [
        ("triggers.hooks.signatures[0].secret", "too short"),
        ("triggers.hooks.signatures[1].secret", "whsec_"),
        ("triggers.hooks.signatures[2].secret", "too short"),
        ("triggers.hooks.signatures[3].header", "not a header name"),
        ("triggers.hooks.signatures[4].secret", "NO_SUCH_SECRET"),
    ] {
        crate::support::assert_problem(&err, key, what);
    }
    assert!(err.0.iter().all(|p| p.file == "triggers.toml"), "{err}");
    // Secrets never reach the report.
    assert!(!err.to_string().contains("0123456789abcdef"), "{err}");

    for (entry, what) in [
        (
            r#"signatures = [{ scheme = "stripe", secret = "x" }]"#,
            "stripe",
        ),
        (r#"signatures = [{ scheme = "hubspot-v3" }]"#, "secret"),
        (
            r#"signatures = [{ scheme = "hmac-sha256", header = "X-S", secret = "0123456789abcdef", encoding = "base32" }]"#,
            "base32",
        ),
        ("signatures_only = true", "signatures"),
        (
            r#"signatures = [{ scheme = "hubspot-v3", secret = "0123456789abcdef" }]"#,
            "server.public_url",
        ),
    ] {
        let err = crate::support::config_problems(&[("triggers.toml", &trigger(entry))]);
        let found = err
            .0
            .iter()
            .find(|p| p.file == "triggers.toml" && p.key.starts_with("triggers.hooks"))
            .unwrap_or_else(|| panic!("{entry}: {err}"));
        assert!(found.to_string().contains(what), "{entry}: {found}");
    }
}

#[tokio::test]
async fn the_per_ip_limit_comes_before_any_signature_work() {
    let app = builder()
        .limits(
            "per_ip = { requests = 1, per = \"1h\", burst = 1 }\n\
             per_principal = { requests = 100000, per = \"1s\", burst = 100000 }\n\
             per_trigger = { requests = 100000, per = \"1s\", burst = 100000 }\n\
             per_provider = { requests = 100000, per = \"1s\", burst = 100000 }\n",
        )
        .start()
        .await;
    let forged = message(&whsec(9), "msg_f", now(), &demo_body());
    bad_signature(send(&app, "signed-call", &forged).await, true).await;
    // The address's budget is gone: even a good signature waits.
    let good = message(&whsec(2), "msg_g", now(), &demo_body());
    let response = send(&app, "signed-call", &good).await;
    let body = problem(response, 429).await;
    assert_eq!(body["type"], "urn:callgate:problem:rate-limited");
    assert_eq!(app.jobs_on_disk().await, 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_window_is_the_real_clock_not_the_gateways_business_clock() {
    // The gateway's rules run on a clock a day ahead; the sender's
    // timestamps are real time, and so is the window they are checked in.
    let clock = callgate::clock::ManualClock::new((now() + 86_400) * 1000);
    let app = builder().clock(clock).start().await;
    let m = message(&whsec(2), "msg_clock", now(), &demo_body());
    assert_eq!(send(&app, "signed-call", &m).await.status(), 202);
    let ahead = message(&whsec(2), "msg_ahead", now() + 86_400, &demo_body());
    bad_signature(send(&app, "signed-call", &ahead).await, true).await;
    app.stop().await.unwrap();
}

/// A trigger's `allowed_ips` holds for signed senders too: they skip
/// authentication, not the allowlist, which is judged before the body is
/// read.
#[tokio::test]
async fn a_signed_sender_outside_the_triggers_allowlist_is_refused_before_its_signature() {
    let triggers = r#"
[triggers.signed-office]
schema = "schemas/demo-call.json"
action = { type = "start_call", agent = "demo-agent", to = "/phone_number" }
allowed_ips = ["10.0.0.0/8"]
signatures = [{ scheme = "standard-webhooks", secret = "${SW_OLD}" }]

[triggers.signed-local]
schema = "schemas/demo-call.json"
action = { type = "start_call", agent = "demo-agent", to = "/phone_number" }
allowed_ips = ["127.0.0.0/8", "::1"]
signatures = [{ scheme = "standard-webhooks", secret = "${SW_OLD}" }]
"#;
    let app = TestApp::builder()
        .triggers(triggers)
        .env("SW_OLD", &whsec(1))
        .start()
        .await;
    let m = message(&whsec(1), "msg_outside", now(), &demo_body());
    let body = problem(send(&app, "signed-office", &m).await, 403).await;
    assert_eq!(
        body["type"], "urn:callgate:problem:ip-not-allowed",
        "{body}"
    );
    // Even an unsigned request learns nothing more: the same 403.
    let unsigned = app
        .client
        .post(app.url("/v1/triggers/signed-office"))
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    let body = problem(unsigned, 403).await;
    assert_eq!(
        body["type"], "urn:callgate:problem:ip-not-allowed",
        "{body}"
    );
    assert!(app.all_jobs().await.is_empty(), "nothing ran");

    let m = message(&whsec(1), "msg_inside", now(), &demo_body());
    assert_eq!(send(&app, "signed-local", &m).await.status(), 202);
}
