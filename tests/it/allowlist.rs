//! IP allowlists (`allowed_ips` on triggers and API keys), against the real
//! server: a direct peer inside and outside, clients behind a trusted proxy,
//! a spoofed `X-Forwarded-For` from an untrusted peer, keys restricted to a
//! range (and changed while serving), IPv6 loopback, and the config errors
//! `callgate check` reports. Tests run on loopback only, so "outside" is
//! 10.0.0.0/8 for a 127.0.0.1 peer, and a trusted proxy (127.0.0.1)
//! presents other client addresses.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::runner::eventually;
use crate::support::{TestApp, demo_body, problem};

/// Two triggers like `demo-call`: one for loopback senders, one for a
/// private network the tests' peer is not in.
const TRIGGERS: &str = r#"
[triggers.loopback-only]
schema = "schemas/demo-call.json"
action = { type = "start_call", agent = "demo-agent", to = "/phone_number" }
allowed_ips = ["127.0.0.0/8"]

[triggers.office-only]
schema = "schemas/demo-call.json"
action = { type = "start_call", agent = "demo-agent", to = "/phone_number" }
allowed_ips = ["10.0.0.0/8", "192.0.2.7"]
"#;

/// A 403 `ip-not-allowed` naming `ip` and none of the allowlist.
async fn ip_refused(response: reqwest::Response, ip: &str, what: &str) -> Value {
    assert!(
        response.headers().get("www-authenticate").is_none(),
        "no credential would change this answer"
    );
    let body = problem(response, 403).await;
    assert_eq!(
        body["type"], "urn:callgate:problem:ip-not-allowed",
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap();
    assert_eq!(detail, format!("requests from {ip} may not {what}"));
    for secret in ["10.0.0.0", "192.0.2.7", "/8"] {
        assert!(!detail.contains(secret), "the list leaked: {detail}");
    }
    body
}

async fn post(app: &TestApp, path: &str, xff: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .bearer_auth(app.key("zapier"))
        .json(&demo_body());
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_direct_peer_runs_a_trigger_only_from_inside_its_list() {
    let app = TestApp::builder()
        .key("zapier", &["triggers:run"])
        .triggers(TRIGGERS)
        .start()
        .await;
    let r = post(&app, "/v1/triggers/loopback-only", None).await;
    assert_eq!(r.status(), 202);
    let r = post(&app, "/v1/triggers/office-only", None).await;
    let ratelimit = r.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(
        ratelimit.contains("\"ip\""),
        "passed the ip limit: {ratelimit}"
    );
    ip_refused(r, "127.0.0.1", "run this trigger").await;
    // Test mode is not a way around it.
    let r = post(&app, "/v1/triggers/office-only?mode=test", None).await;
    ip_refused(r, "127.0.0.1", "run this trigger").await;
    // Nor is a percent-encoded id the router decodes to the same trigger.
    let r = post(&app, "/v1/triggers/office%2Donly", None).await;
    ip_refused(r, "127.0.0.1", "run this trigger").await;
    // An id that does not decode is judged by no list, and runs nothing.
    problem(post(&app, "/v1/triggers/office%FFonly", None).await, 400).await;
    // Checked before credentials and before the body: no key and a body
    // that is not JSON still get the 403, not 401 or 400.
    let r = app
        .client
        .post(app.url("/v1/triggers/office-only"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    ip_refused(r, "127.0.0.1", "run this trigger").await;
    assert_eq!(app.jobs_on_disk().await, 1, "only the allowed request ran");
    // Triggers without a list are unaffected.
    assert_eq!(
        post(&app, "/v1/triggers/demo-call", None).await.status(),
        202
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_judged() {
    let app = TestApp::builder()
        .key("zapier", &["triggers:run"])
        .triggers(TRIGGERS)
        .start_with_trusted_proxy()
        .await;
    let office = "/v1/triggers/office-only";
    assert_eq!(post(&app, office, Some("10.20.30.40")).await.status(), 202);
    assert_eq!(post(&app, office, Some("192.0.2.7")).await.status(), 202);
    let r = post(&app, office, Some("203.0.113.9")).await;
    ip_refused(r, "203.0.113.9", "run this trigger").await;
    // A client outside that prepends an inside address is still outside:
    // the proxy appends the real one, and the chain is read from the right.
    let r = post(&app, office, Some("10.1.1.1, 203.0.113.9")).await;
    ip_refused(r, "203.0.113.9", "run this trigger").await;
    // An IPv4-mapped IPv6 client is judged by the IPv4 rules.
    assert_eq!(
        post(&app, office, Some("::ffff:10.20.30.40"))
            .await
            .status(),
        202
    );
    let r = post(&app, office, Some("[::ffff:203.0.113.9]:4711")).await;
    ip_refused(r, "203.0.113.9", "run this trigger").await;
    // The loopback trigger now sees the forwarded client, not the proxy.
    let r = post(&app, "/v1/triggers/loopback-only", Some("10.20.30.40")).await;
    ip_refused(r, "10.20.30.40", "run this trigger").await;
    // Without a forwarded hop the proxy itself is the client.
    assert_eq!(
        post(&app, "/v1/triggers/loopback-only", None)
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = TestApp::builder()
        .key("zapier", &["triggers:run"])
        .triggers(TRIGGERS)
        .start()
        .await;
    for xff in ["10.1.2.3", "192.0.2.7"] {
        let r = post(&app, "/v1/triggers/office-only", Some(xff)).await;
        ip_refused(r, "127.0.0.1", "run this trigger").await;
    }
    let r = app
        .client
        .post(app.url("/v1/triggers/office-only"))
        .bearer_auth(app.key("zapier"))
        .header("forwarded", "for=10.1.2.3")
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    ip_refused(r, "127.0.0.1", "run this trigger").await;
    assert_eq!(app.jobs_on_disk().await, 0);
}

/// `keys.toml` with one key per `(name, allowed_ips)`, and the keys.
fn keys_file(keys: &[(&str, &str)]) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut plain = Vec::new();
    for (name, allowed) in keys {
        let key = callgate::auth::api_key::generate();
        text.push_str(&format!(
            "[[keys]]\nname = \"{name}\"\nhash = \"{}\"\nscopes = [\"triggers:run\", \"jobs:read\"]\nallowed_ips = {allowed}\n",
            callgate::auth::api_key::hash_for_file(&key)
        ));
        plain.push(key);
    }
    (text, plain)
}

#[tokio::test]
async fn an_api_key_restricted_to_a_range_works_only_from_inside_it() {
    let (file, keys) = keys_file(&[
        ("office", "[\"10.0.0.0/8\"]"),
        ("local", "[\"127.0.0.1\", \"2001:db8::/32\"]"),
    ]);
    let app = TestApp::builder()
        .file("keys.toml", &file)
        .start_with_trusted_proxy()
        .await;
    let send = |key: &str, xff: Option<&str>, path: &str| {
        let mut req = app
            .client
            .post(app.url(path))
            .bearer_auth(key)
            .json(&demo_body());
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        req.send()
    };
    let demo = "/v1/triggers/demo-call";
    let r = send(&keys[0], None, demo).await.unwrap();
    ip_refused(r, "127.0.0.1", "use this API key").await;
    let r = send(&keys[0], Some("10.9.8.7"), demo).await.unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    // Every route, not only triggers; and X-Api-Key is judged the same.
    let path = format!("/v1/jobs/{}", job["job_id"].as_str().unwrap());
    let r = app
        .client
        .get(app.url(&path))
        .header("x-api-key", &keys[0])
        .send()
        .await
        .unwrap();
    ip_refused(r, "127.0.0.1", "use this API key").await;
    let r = app
        .client
        .get(app.url(&path))
        .header("x-api-key", &keys[0])
        .header("x-forwarded-for", "10.9.8.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A bare address is one host.
    assert_eq!(send(&keys[1], None, demo).await.unwrap().status(), 202);
    let r = send(&keys[1], Some("127.0.0.2"), demo).await.unwrap();
    ip_refused(r, "127.0.0.2", "use this API key").await;
    let r = send(&keys[1], Some("2001:db8::5"), demo).await.unwrap();
    assert_eq!(r.status(), 202);
    // A wrong key is still a 401: the allowlist needs a key to belong to.
    let r = send("cg_nope", None, demo).await.unwrap();
    problem(r, 401).await;
}

/// Replaces the key file, its modification time `step` seconds ahead: the
/// reloader watches the time, which a coarse file-system clock could leave
/// unchanged by two writes in quick succession.
fn rewrite(path: &std::path::Path, text: &str, step: u64) {
    std::fs::write(path, text).unwrap();
    let ahead = std::time::SystemTime::now() + Duration::from_secs(step);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(ahead)
        .unwrap();
}

#[tokio::test]
async fn a_changed_key_allowlist_applies_while_serving() {
    let (file, keys) = keys_file(&[("crm", "[]")]);
    let app = TestApp::builder().file("keys.toml", &file).start().await;
    let status = || async {
        app.client
            .get(app.url("/v1/triggers"))
            .bearer_auth(&keys[0])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status().await, 200);
    let keys_path = app.config_dir.path().join("keys.toml");
    let restricted = file.replace("allowed_ips = []", "allowed_ips = [\"10.0.0.0/8\"]");
    rewrite(&keys_path, &restricted, 1);
    eventually(Duration::from_secs(10), "the restriction", || async {
        (status().await == 403).then_some(())
    })
    .await;
    let r = app
        .client
        .get(app.url("/v1/triggers"))
        .bearer_auth(&keys[0])
        .send()
        .await
        .unwrap();
    ip_refused(r, "127.0.0.1", "use this API key").await;
    let widened = file.replace("allowed_ips = []", "allowed_ips = [\"127.0.0.0/8\"]");
    rewrite(&keys_path, &widened, 2);
    eventually(Duration::from_secs(10), "the widened list", || async {
        (status().await == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn ipv6_loopback_is_judged_as_itself() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        crate::support::say_skipped("ipv6_loopback_is_judged_as_itself", "IPv6 loopback");
        return;
    }
    let (file, keys) = keys_file(&[("v6", "[\"::1/128\"]"), ("v4", "[\"127.0.0.0/8\"]")]);
    let app = TestApp::builder()
        .file("keys.toml", &file)
        .triggers(
            "[triggers.v6-only]\nschema = \"schemas/demo-call.json\"\n\
             action = { type = \"start_call\", agent = \"demo-agent\", to = \"/phone_number\" }\n\
             allowed_ips = [\"::1\"]\n",
        )
        .ipv6()
        .start()
        .await;
    let send = |key: &str, trigger: &str| {
        app.client
            .post(app.url(&format!("/v1/triggers/{trigger}")))
            .bearer_auth(key)
            .json(&demo_body())
            .send()
    };
    assert_eq!(send(&keys[0], "v6-only").await.unwrap().status(), 202);
    assert_eq!(send(&keys[0], "demo-call").await.unwrap().status(), 202);
    let r = send(&keys[1], "demo-call").await.unwrap();
    ip_refused(r, "::1", "use this API key").await;
}

#[test]
fn check_reports_bad_allowlists_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        std::path::Path::new(crate::support::REPO_CONFIG),
        dir.path(),
    );
    let triggers = std::fs::read_to_string(dir.path().join("triggers.toml")).unwrap();
    std::fs::write(
        dir.path().join("triggers.toml"),
        format!("{triggers}\n[triggers.lan]\nschema = \"schemas/demo-call.json\"\naction = {{ type = \"start_call\", agent = \"demo-agent\" }}\nallowed_ips = [\"10.0.0.0/8\", \"nonsense\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!(
            "[[keys]]\nname = \"crm\"\nhash = \"{}\"\nallowed_ips = [\"10.0.0.0/33\"]\n",
            callgate::auth::api_key::hash_for_file("cg_x")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check", "--config", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "triggers.toml: triggers.lan.allowed_ips[1]: `nonsense` is not an IP network",
        "keys.toml: keys[0].allowed_ips[0]: `10.0.0.0/33` is not an IP network",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}

#[test]
fn key_new_takes_allowed_ips_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("callgate.toml"), "").unwrap();
    let key_new = |name: &str, ips: &[&str]| {
        let mut args = vec!["key", "new", "--name", name];
        for ip in ips {
            args.extend(["--allowed-ip", ip]);
        }
        args.extend(["--config", dir.path().to_str().unwrap()]);
        Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = key_new("lb", &["10.0.0.0/8", "2001:db8::1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.path().join("keys.toml")).unwrap();
    let file: callgate::config::KeysFile = toml::from_str(&text).unwrap();
    assert_eq!(file.keys[0].allowed_ips, ["10.0.0.0/8", "2001:db8::1"]);
    let out = key_new("bad", &["10.0.0.0/8", "office"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no key for a refused command");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`office`"));
    assert!(
        !std::fs::read_to_string(dir.path().join("keys.toml"))
            .unwrap()
            .contains("bad")
    );
}
