//! What the server logs, and how loud: ERROR only for our own faults (a
//! slow client's 503 and an upstream's 504 are WARN), routine job moves at
//! DEBUG, fields written as values, and no WARN that any client can provoke
//! (an IP address as TLS SNI).
//!
//! Logs are captured by a subscriber that is the default for the test's
//! thread only, so these tests run on tokio's current-thread runtime: the
//! server's tasks then run, and log, on that thread too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::deliveries::crm_endpoint;
use crate::receiver::{Receiver, Reply};
use crate::runner::{ANYTIME_AGENT, eventually, fast_simulator};
use crate::support::{TestApp, demo_body, problem};

/// Log lines written while it lives, filtered as `callgate serve` filters
/// them for `CALLGATE_LOG=<spec>`.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn start(spec: &str) -> Capture {
        // rustls logs through the `log` crate, as in `callgate serve`.
        let _ = tracing_log::LogTracer::init();
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(callgate::telemetry::filter(Some(spec)))
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        Capture {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.buf.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The lines that contain every one of `parts`.
    fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .collect()
    }

    /// Fails if anything was logged at ERROR.
    fn assert_no_error(&self) {
        let errors = self.matching(&[" ERROR "]);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}

/// The one line with all of `parts`, which must be at `level`.
fn one_at(capture: &Capture, level: &str, parts: &[&str]) -> String {
    let lines = capture.matching(parts);
    assert_eq!(lines.len(), 1, "{parts:?} in {:#?}", capture.lines());
    assert!(lines[0].contains(&format!(" {level} ")), "{}", lines[0]);
    lines[0].clone()
}

#[tokio::test]
async fn an_upstreams_504_is_a_warning_not_an_error() {
    let capture = Capture::start("info");
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(500));
    let endpoints = crm_endpoint(&rx.url(""), "").replace(", \"X-Job\" = \"{{ job.id }}\"", "");
    let app = TestApp::builder()
        .file("endpoints.toml", &endpoints)
        .file(
            "actions.toml",
            "[actions.strict_lookup]\nendpoint = \"crm\"\npath = \"/strict\"\ndeadline = \"300ms\"\n",
        )
        .key("voice", &["actions:invoke"])
        .start()
        .await;
    let r = app
        .client
        .post(app.url("/v1/agents/demo-agent/actions/strict_lookup"))
        .bearer_auth(app.key("voice"))
        .json(&json!({"call": {"id": "c1"}, "args": {}}))
        .send()
        .await
        .unwrap();
    problem(r, 504).await;
    one_at(&capture, "WARN", &["request failed", "status=504"]);
    capture.assert_no_error();
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_body_gets_503_logged_as_a_warning() {
    let capture = Capture::start("info");
    let app = TestApp::builder()
        .env("CALLGATE_SERVER__REQUEST_TIMEOUT", "300ms")
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    // Half a body, then nothing until well past the request timeout.
    let body = demo_body().to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let chunks = vec![first.to_owned(), rest.to_owned()];
    let slow = futures_util::stream::unfold(chunks.into_iter(), |mut chunks| async move {
        let chunk = chunks.next()?;
        if chunks.len() == 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Some((Ok::<_, std::io::Error>(chunk), chunks))
    });
    let r = app
        .client
        .post(app.url("/v1/triggers/demo-call"))
        .bearer_auth(app.key("zapier"))
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(reqwest::Body::wrap_stream(slow))
        .send()
        .await
        .unwrap();
    let p = problem(r, 503).await;
    assert_eq!(p["type"], "urn:callgate:problem:timeout");
    one_at(&capture, "WARN", &["request failed", "status=503"]);
    capture.assert_no_error();
}

#[tokio::test]
async fn a_failed_delivery_is_logged_with_its_status_as_a_plain_value() {
    let capture = Capture::start("info");
    let rx = Receiver::start().await;
    rx.default_reply(Reply::status(302).header("location", "https://elsewhere.test/"));
    let automation = "[automations.notify]\n[[automations.notify.steps]]\ntype = \"webhook\"\n\
        endpoint = \"crm\"\npayload = { job_id = \"{{ job.id }}\" }\n";
    let app = TestApp::builder()
        .file("endpoints.toml", &crm_endpoint(&rx.url("/hooks"), ""))
        .file(
            "automations.toml",
            &format!(
                "{}\n{automation}",
                include_str!("../../config/automations.toml")
            ),
        )
        .triggers(
            "[triggers.notify]\nschema = \"schemas/demo-call.json\"\n\
             action = { type = \"automation\", name = \"notify\", to = \"/phone_number\" }\n",
        )
        .key("zapier", &["triggers:run"])
        .background_runner()
        .start()
        .await;
    let r = app.trigger(app.key("zapier"), "notify", &demo_body()).await;
    assert_eq!(r.status(), 202);
    let line = eventually(
        Duration::from_secs(20),
        "the failed delivery's log line",
        || {
            let lines = capture.matching(&["delivery failed"]);
            async move { lines.into_iter().next() }
        },
    )
    .await;
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("status=302"), "{line}");
    // Only present fields, as values: no `error=None`, no `Some(302)`.
    assert!(!line.contains("None") && !line.contains("Some("), "{line}");
    assert!(!line.contains("error="), "{line}");
    capture.assert_no_error();
}

#[tokio::test]
async fn routine_job_moves_are_debug_and_a_job_done_or_refused_is_info() {
    let capture = Capture::start("debug");
    // One line, and calls that ring for an hour: a second job waits for
    // the line.
    let ringing = fast_simulator("").replace("ring_time = \"10ms\"", "ring_time = \"1h\"");
    let one_line = ANYTIME_AGENT.replace("max_concurrent_calls = 3", "max_concurrent_calls = 1");
    let app = TestApp::builder()
        .file("providers.toml", &ringing)
        .file("agents.toml", &one_line)
        .file("do_not_call.txt", "+15550121299\n")
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let first = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    let first: Value = first.json().await.unwrap();
    app.run_pending().await;
    let waiting = app
        .trigger(app.key("zapier"), "demo-call", &demo_body())
        .await;
    let waiting: Value = waiting.json().await.unwrap();
    let refused = app
        .trigger(
            app.key("zapier"),
            "demo-call",
            &json!({"phone_number": "+15550121299"}),
        )
        .await;
    let refused: Value = refused.json().await.unwrap();
    app.run_pending().await;
    let id = |v: &Value| format!("job_id={}", v["job_id"].as_str().unwrap());
    one_at(
        &capture,
        "DEBUG",
        &["job updated", &id(&waiting), "status=\"waiting\""],
    );
    one_at(
        &capture,
        "INFO",
        &["job updated", &id(&first), "status=\"succeeded\""],
    );
    one_at(
        &capture,
        "INFO",
        &["job updated", &id(&refused), "status=\"rejected\""],
    );
    capture.assert_no_error();
}

/// A TLS 1.3 ClientHello whose SNI is `host` written as a host name
/// (RFC 6066 forbids IP literals there; wrk and some health checks send
/// them anyway). rustls clients never do, hence the bytes by hand.
fn client_hello(host: &str) -> Vec<u8> {
    fn vec16(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }
    fn ext(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut v = kind.to_be_bytes().to_vec();
        v.extend(vec16(body));
        v
    }
    let mut sni = vec![0u8]; // host_name
    sni.extend(vec16(host.as_bytes()));
    // RFC 7748 §6.1, Alice's X25519 public key: a valid share.
    let share =
        hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a").unwrap();
    let mut key_share = 0x001du16.to_be_bytes().to_vec();
    key_share.extend(vec16(&share));
    let mut extensions = Vec::new();
    extensions.extend(ext(0x0000, &vec16(&sni)));
    extensions.extend(ext(0x002b, &[2, 0x03, 0x04])); // supported_versions: TLS 1.3
    extensions.extend(ext(0x000a, &vec16(&[0x00, 0x1d]))); // supported_groups: x25519
    extensions.extend(ext(0x0033, &vec16(&key_share)));
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, ed25519
    extensions.extend(ext(0x000d, &vec16(&[0x04, 0x03, 0x08, 0x04, 0x08, 0x07])));
    let mut hello = vec![0x03, 0x03]; // legacy_version
    hello.extend([7u8; 32]); // random
    hello.push(32);
    hello.extend([9u8; 32]); // legacy_session_id
    hello.extend(vec16(&[0x13, 0x01])); // TLS_AES_128_GCM_SHA256
    hello.extend([1, 0]); // compression: null
    hello.extend(vec16(&extensions));
    let mut handshake = vec![0x01]; // client_hello
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(vec16(&handshake));
    record
}

#[tokio::test]
async fn an_ip_address_as_sni_is_accepted_without_a_warning() {
    let capture = Capture::start("info");
    let app = TestApp::start().await;
    for host in ["127.0.0.1", "localhost"] {
        let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        tcp.write_all(&client_hello(host)).await.unwrap();
        let mut head = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
            .await
            .expect("no answer to the ClientHello")
            .unwrap();
        // A handshake record holding a ServerHello, not an alert: the
        // server goes on with the handshake.
        assert_eq!(
            (head[0], head[5]),
            (0x16, 0x02),
            "{host}: answered {head:02x?}"
        );
    }
    // A real client still gets through.
    assert_eq!(
        app.get(app.key("zapier"), "/v1/triggers").await.status(),
        200
    );
    let loud = capture.matching(&[" WARN "]);
    assert!(loud.is_empty(), "{loud:#?}");
    assert!(
        capture.matching(&["SNI"]).is_empty(),
        "{:#?}",
        capture.lines()
    );
}
