//! `ca_file` for outbound TLS: endpoints (deliveries and mid-call actions,
//! which share the endpoint's client) and HTTP voice providers reach a
//! server whose certificate comes from a private CA only when told to trust
//! that CA, and still refuse one from any other CA; a missing or bad file is
//! a config problem with its file and key.

use std::time::Duration;

use serde_json::{Value, json};

use crate::calls::{FAKE_AGENT, fake_twilio};
use crate::deliveries::{
    NOTIFY_AUTOMATION, NOTIFY_TRIGGER, REPO_AUTOMATIONS, crm_endpoint, delivery_when, notify,
};
use crate::receiver::{PrivateCa, Receiver, Reply};
use crate::runner::get_json;
use crate::support::{TestApp, assert_problem, config_problems, demo_body};

/// The notify trigger → webhook to `crm` set-up of `deliveries.rs`, with
/// `private-ca.pem` (holding `ca_pem`) in the config dir.
async fn notify_app(endpoints: &str, ca_pem: &str) -> TestApp {
    TestApp::builder()
        .file("endpoints.toml", endpoints)
        .file("private-ca.pem", ca_pem)
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", &["deliveries:read", "deliveries:write"])
        .background_runner()
        .start()
        .await
}

/// The TLS refusal every attempt of a dead delivery recorded.
async fn refused_delivery(app: &TestApp, rx: &Receiver) -> String {
    let job_id = notify(app).await;
    let d = delivery_when(app, &job_id, "dead").await;
    let error = d["last_error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "a TLS/certificate error: {d}"
    );
    assert_eq!(rx.received().len(), 0, "nothing got past the handshake");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_to_a_private_ca_server_needs_the_endpoints_ca_file() {
    let ca = PrivateCa::new("Internal CRM CA");
    let rx = Receiver::start_https(&ca).await;
    let url = rx.url("/hooks");

    // The system's roots do not know the CA: every attempt fails the handshake.
    let app = notify_app(&crm_endpoint(&url, ""), &ca.ca_pem).await;
    refused_delivery(&app, &rx).await;
    drop(app);

    // With the CA's bundle the same endpoint is reached.
    let app = notify_app(
        &crm_endpoint(&url, "ca_file = \"private-ca.pem\""),
        &ca.ca_pem,
    )
    .await;
    let job_id = notify(&app).await;
    let d = delivery_when(&app, &job_id, "succeeded").await;
    assert_eq!(d["attempt_count"], 1, "{d}");
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "/hooks");
    drop(app);

    // Trusting one private CA is not trusting any: a bundle of another CA
    // still fails against this server.
    let other = PrivateCa::new("Someone else's CA");
    let app = notify_app(
        &crm_endpoint(&url, "ca_file = \"private-ca.pem\""),
        &other.ca_pem,
    )
    .await;
    let before = rx.received().len();
    let job_id = notify(&app).await;
    let d = delivery_when(&app, &job_id, "dead").await;
    assert!(
        d["last_error"].as_str().unwrap().contains("UnknownIssuer"),
        "{d}"
    );
    assert_eq!(rx.received().len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_defaults_ca_file_reaches_deliveries_and_mid_call_actions() {
    let ca = PrivateCa::new("Internal CRM CA");
    let rx = Receiver::start_https(&ca).await;
    rx.default_reply(Reply::ok(r#"{"customer": {"name": "Ada"}}"#));
    let endpoints = format!(
        "[defaults]\nca_file = \"private-ca.pem\"\n\n{}",
        // Actions have no job for the test endpoint's per-job header.
        crm_endpoint(&rx.url(""), "").replace(", \"X-Job\" = \"{{ job.id }}\"", "")
    );
    let app = TestApp::builder()
        .file("endpoints.toml", &endpoints)
        .file("private-ca.pem", &ca.ca_pem)
        .file(
            "actions.toml",
            "[actions.lookup]\nendpoint = \"crm\"\nmethod = \"GET\"\npath = \"/customers/1\"\n\
             deadline = \"3s\"\nresult = { name = \"/customer/name\" }\n",
        )
        .file(
            "automations.toml",
            &format!("{REPO_AUTOMATIONS}\n{NOTIFY_AUTOMATION}"),
        )
        .triggers(NOTIFY_TRIGGER)
        .key("zapier", &["triggers:run", "jobs:read"])
        .key("ops", &["deliveries:read"])
        .key("voice", &["actions:invoke"])
        .background_runner()
        .start()
        .await;
    let r = app
        .client
        .post(app.url("/v1/agents/demo-agent/actions/lookup"))
        .bearer_auth(app.key("voice"))
        .json(&json!({"call": {"id": "call_1"}, "args": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"], json!({"name": "Ada"}), "{v}");
    assert_eq!(v["degraded"], false, "{v}");
    let job_id = notify(&app).await;
    delivery_when(&app, &job_id, "succeeded").await;
    let paths: Vec<String> = rx
        .wait_for(2, Duration::from_secs(10))
        .await
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(paths, ["/customers/1", "/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_provider_behind_a_private_ca_needs_its_ca_file() {
    let ca = PrivateCa::new("Voice platform CA");
    let rx = Receiver::start_https(&ca).await;
    rx.default_reply(
        Reply::ok(r#"{"sid": "CA123", "status": "queued"}"#)
            .header("content-type", "application/json"),
    );
    let start = |providers: String| {
        TestApp::builder()
            .file("providers.toml", &providers)
            .file("agents.toml", FAKE_AGENT)
            .file("private-ca.pem", &ca.ca_pem)
            .key("zapier", &["triggers:run", "jobs:read"])
            .start()
    };
    let app = start(fake_twilio(&rx, "")).await;
    let job = dial(&app).await;
    let errors: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"]["error"].as_str())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("certificate") && e.contains("UnknownIssuer")),
        "the dial failed on the certificate: {job}"
    );
    assert_ne!(job["status"], "succeeded", "{job}");
    assert_eq!(rx.received().len(), 0);
    drop(app);

    let app = start(fake_twilio(&rx, "ca_file = \"private-ca.pem\"")).await;
    let job = dial(&app).await;
    assert_eq!(rx.received().len(), 1, "{job}");
    let call = get_json(
        &app,
        app.key("zapier"),
        job["calls"][0]["links"]["self"].as_str().unwrap(),
    )
    .await;
    assert_eq!(call["provider_call_id"], "CA123", "{call}");
}

/// Runs `demo-call` once (one dial) and returns the job.
async fn dial(app: &TestApp) -> Value {
    let r = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    assert_eq!(r.status(), 202);
    let path = r.json::<Value>().await.unwrap()["links"]["self"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_pending().await;
    get_json(app, app.key("zapier"), &path).await
}

#[test]
fn missing_or_bad_ca_files_are_config_problems_with_file_and_key() {
    let ca = PrivateCa::new("Internal CRM CA");
    let endpoints = "[defaults]\nca_file = \"nowhere.pem\"\n\n\
        [endpoints.a]\nurl = \"https://crm.example.com/hooks\"\nca_file = \"not-a-cert.pem\"\n\n\
        [endpoints.b]\nurl = \"https://crm.example.com/hooks\"\nca_file = \"key-only.pem\"\n\n\
        [endpoints.c]\nurl = \"https://crm.example.com/hooks\"\nca_file = \"ca.pem\"\n";
    let providers = "[providers.simulator]\ntype = \"simulator\"\n\n\
        [providers.fake]\ntype = \"http\"\ncall_id = \"/sid\"\nca_file = \"missing.pem\"\n\
        [providers.fake.create_call]\nurl = \"https://voice.example.com/calls\"\n\
        [providers.fake.callbacks]\nsignature = { scheme = \"twilio\", auth_token = \"tok\" }\n\
        status = \"/CallStatus\"\nstatus_map = { completed = \"completed\" }\n";
    let err = config_problems(&[
        ("endpoints.toml", endpoints),
        ("providers.toml", providers),
        ("not-a-cert.pem", "hello"),
        ("key-only.pem", &ca.key_pem),
        ("ca.pem", &ca.ca_pem),
    ]);
    assert_problem(&err, "defaults.ca_file", "cannot read nowhere.pem");
    assert_problem(&err, "endpoints.a.ca_file", "not-a-cert.pem");
    assert_problem(
        &err,
        "endpoints.b.ca_file",
        "no `-----BEGIN CERTIFICATE-----`",
    );
    assert_problem(&err, "providers.fake.ca_file", "cannot read missing.pem");
    let listed = err.to_string();
    assert!(
        listed.contains("endpoints.toml: defaults.ca_file")
            && listed.contains("providers.toml: providers.fake.ca_file"),
        "{listed}"
    );
    assert!(
        !err.0.iter().any(|p| p.key.starts_with("endpoints.c")),
        "c's bundle is good:\n{err}"
    );
}
