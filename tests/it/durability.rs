//! Nothing accepted is lost: the real binary, SIGKILLed and SIGTERMed under
//! load; the writer blocked until backpressure shows.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    self, JWT_SECRET, TestApp, all_deliveries, all_jobs, count_status, demo_body, open_store,
    problem, read_response,
};

/// The `callgate serve` process with its stderr collected.
pub(crate) struct Gateway {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) logs: Arc<Mutex<String>>,
}

impl Gateway {
    pub(crate) fn start(config: &Path, data: &Path) -> Gateway {
        let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args([
                "--log-format",
                "json",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("TEST_JWT_SECRET", JWT_SECRET)
            .env("CALLGATE_LOG", "debug")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().parse::<SocketAddr>());
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("gateway did not start: {}", logs.lock().unwrap()))
            .unwrap();
        Gateway { child, addr, logs }
    }

    pub(crate) fn client(&self, data: &Path) -> reqwest::Client {
        let cert = std::fs::read(data.join("tls/cert.pem")).unwrap();
        support::client(&cert)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// GETs `path` with `key` and reads the JSON answer.
    async fn get_json(&self, client: &reqwest::Client, key: &str, path: &str) -> Value {
        let r = client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// The store's row counts by status for `table` (`jobs`, `calls`,
    /// `deliveries`), as `/metrics` reports them (scope `metrics:read`).
    pub(crate) async fn status_gauges(
        &self,
        client: &reqwest::Client,
        key: &str,
        table: &str,
    ) -> std::collections::HashMap<String, i64> {
        let r = client
            .get(self.url("/metrics"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let prefix = format!("callgate_{table}{{status=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|rest| rest.split_once("\"} "))
            .map(|(status, n)| (status.to_owned(), n.trim().parse::<f64>().unwrap() as i64))
            .collect()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Gateway {
    // A failing test must not leave a gateway running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn config_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for entry in [
        "agents.toml",
        "triggers.toml",
        "providers.toml",
        "automations.toml",
    ] {
        std::fs::copy(
            format!("{}/{entry}", support::REPO_CONFIG),
            dir.path().join(entry),
        )
        .unwrap();
    }
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::copy(
        format!("{}/schemas/demo-call.json", support::REPO_CONFIG),
        dir.path().join("schemas/demo-call.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("callgate.toml"),
        format!(
            "[limits]\nper_ip = {{ requests = 100000, per = \"1s\", burst = 100000 }}\n\
             per_principal = {{ requests = 100000, per = \"1s\", burst = 100000 }}\n\
             [auth.jwt.issuers.test]\nissuer = \"{}\"\naudience = \"{}\"\nalgorithms = [\"HS256\"]\n\
             [[auth.jwt.issuers.test.keys]]\nsecret = \"${{TEST_JWT_SECRET}}\"\n",
            support::JWT_ISS,
            support::JWT_AUD
        ),
    )
    .unwrap();
    let key = callgate::auth::api_key::add_to_file(
        &dir.path().join("keys.toml"),
        "zapier",
        &["triggers:run".into()],
        None,
        "now",
    )
    .unwrap();
    (dir, key)
}

/// Mints a key `ops` in the config dir `dir` that reads jobs, deliveries
/// and metrics (before the gateway starts).
pub(crate) fn ops_key(dir: &Path) -> String {
    callgate::auth::api_key::add_to_file(
        &dir.join("keys.toml"),
        "ops",
        &[
            "jobs:read".into(),
            "deliveries:read".into(),
            "metrics:read".into(),
        ],
        None,
        "now",
    )
    .unwrap()
}

/// Job ids answered 202, shared by load workers.
pub(crate) type Accepted = Arc<Mutex<Vec<String>>>;

/// Starts `workers` tasks that send triggers back to back until a request
/// fails (the server is gone); `reached` fires once `goal` are accepted.
pub(crate) fn spawn_load(
    client: &reqwest::Client,
    url: &str,
    credential: &str,
    workers: usize,
    accepted: &Accepted,
    goal: usize,
    reached: &Arc<tokio::sync::Notify>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let (client, url, credential) = (client.clone(), url.to_owned(), credential.to_owned());
            let (accepted, reached) = (accepted.clone(), reached.clone());
            tokio::spawn(async move {
                loop {
                    let Ok(r) = client
                        .post(&url)
                        .bearer_auth(&credential)
                        .json(&demo_body())
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status() != 202 {
                        continue;
                    }
                    let Ok(body) = r.json::<Value>().await else {
                        return;
                    };
                    let mut a = accepted.lock().unwrap();
                    a.push(body["job_id"].as_str().unwrap().to_owned());
                    if a.len() == goal {
                        reached.notify_one();
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_jobs_survive_sigkill_and_secrets_never_reach_the_logs() {
    let (config, key) = config_dir();
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(config.path(), data.path());
    let client = gw.client(data.path());
    let jwt = support::hs256(&support::claims("triggers:run"));

    // Keep 16 requests in flight (API keys and JWTs) and kill -9 the moment
    // 150 have been answered 202, while the rest are still in flight.
    let accepted: Accepted = Arc::default();
    let reached = Arc::new(tokio::sync::Notify::new());
    let url = gw.url("/v1/triggers/demo-call");
    let mut workers = spawn_load(&client, &url, &key, 8, &accepted, 150, &reached);
    workers.extend(spawn_load(&client, &url, &jwt, 8, &accepted, 150, &reached));
    tokio::time::timeout(Duration::from_secs(60), reached.notified())
        .await
        .unwrap();
    let mut gw = gw;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 150, "only {} accepted", accepted.len());
    let logs_before = gw.logs.lock().unwrap().clone();

    let store = open_store(data.path()).await;
    let on_disk = store
        .count_jobs(callgate::store::JobFilter::default())
        .await
        .unwrap() as i64;
    store.close().await;
    assert!(
        on_disk >= accepted.len() as i64,
        "{on_disk} on disk < {} accepted",
        accepted.len()
    );

    let gw2 = Gateway::start(config.path(), data.path());
    let client = gw2.client(data.path());
    for id in &accepted {
        let r = client
            .get(gw2.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let status = r.status();
        // JWT-created jobs belong to another principal: the key reads them with 403, which still proves existence.
        assert!(
            status == 200 || status == 403,
            "job {id} lost after SIGKILL: {status}"
        );
    }
    let mut gw2 = gw2;
    gw2.signal("TERM");
    assert!(gw2.child.wait().unwrap().success());
    let logs = format!("{logs_before}{}", gw2.logs.lock().unwrap());
    for secret in [key.as_str(), jwt.as_str(), JWT_SECRET] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    assert!(logs.contains("\"request_id\""), "logs carry request ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_accepted_jobs_survive_sigkill_and_a_restart() {
    let url = crate::pg_url_or_skip!("on_postgres_accepted_jobs_survive_sigkill_and_a_restart");
    let schema = support::pg::Schema::create(&url);
    let (config, key) = config_dir();
    let main = config.path().join("callgate.toml");
    let mut toml = std::fs::read_to_string(&main).unwrap();
    toml.push_str(&format!(
        "[storage]\nurl = \"{}\"\npool_size = 4\n",
        schema.url
    ));
    std::fs::write(&main, toml).unwrap();
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(config.path(), data.path());
    let client = gw.client(data.path());

    // 16 requests in flight; kill -9 the moment 150 have been answered 202.
    let accepted: Accepted = Arc::default();
    let reached = Arc::new(tokio::sync::Notify::new());
    let url = gw.url("/v1/triggers/demo-call");
    let workers = spawn_load(&client, &url, &key, 16, &accepted, 150, &reached);
    tokio::time::timeout(Duration::from_secs(60), reached.notified())
        .await
        .unwrap();
    let mut gw = gw;
    gw.child.kill().unwrap(); // SIGKILL
    gw.child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 150, "only {} accepted", accepted.len());

    // Every 202 is a committed row, seen by another client of the database.
    let cfg = callgate::config::StorageConfig {
        url: schema.url.clone(),
        pool_size: 2,
        ..Default::default()
    };
    let store = callgate::store::open(&cfg, data.path()).await.unwrap();
    for id in &accepted {
        let id = callgate::ids::JobId::from_stored(id.clone());
        assert!(store.job(&id).await.unwrap().is_some(), "{id} lost");
    }
    store.close().await;

    // And the restarted gateway serves them.
    let gw2 = Gateway::start(config.path(), data.path());
    let client = gw2.client(data.path());
    for id in &accepted {
        let r = client
            .get(gw2.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "job {id} after SIGKILL and restart");
    }
    let mut gw2 = gw2;
    gw2.signal("TERM");
    assert!(gw2.child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_in_flight_requests_flushes_and_exits_zero() {
    let (config, key) = config_dir();
    let data = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(config.path(), data.path());
    let client = gw.client(data.path());
    let accepted: Accepted = Arc::default();
    let reached = Arc::new(tokio::sync::Notify::new());
    let workers = spawn_load(
        &client,
        &gw.url("/v1/triggers/demo-call"),
        &key,
        16,
        &accepted,
        100,
        &reached,
    );
    // Ask for a graceful stop in the middle of the load.
    tokio::time::timeout(Duration::from_secs(60), reached.notified())
        .await
        .unwrap();
    gw.signal("TERM");
    let status = tokio::task::spawn_blocking(move || gw.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    for w in workers {
        w.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 100);
    let ids = job_ids(data.path()).await;
    for id in &accepted {
        assert!(ids.contains(id), "accepted job {id} missing after SIGTERM");
    }
}

/// Requests already in the server's sockets when SIGTERM arrives, on
/// keep-alive connections that were idle, are answered before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_requests_already_written_on_idle_keep_alive_connections() {
    use tokio::io::AsyncWriteExt;
    const CONNECTIONS: usize = 64;
    const ROUNDS: usize = 2;
    let (config, key) = config_dir();
    let body = demo_body().to_string();
    let request = format!(
        "POST /v1/triggers/demo-call HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         authorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    for round in 0..ROUNDS {
        let data = tempfile::tempdir().unwrap();
        let mut gw = Gateway::start(config.path(), data.path());
        let cert = std::fs::read(data.path().join("tls/cert.pem")).unwrap();
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut io = support::raw_tls(gw.addr, &cert).await;
            io.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(read_response(&mut io).await.unwrap().status, 200);
            conns.push(io);
        }
        // Frozen, the gateway cannot read anything: every request below is
        // complete in its sockets, unread, when SIGTERM is sent.
        gw.signal("STOP");
        for io in &mut conns {
            io.write_all(request.as_bytes()).await.unwrap();
            io.flush().await.unwrap();
        }
        gw.signal("TERM");
        gw.signal("CONT");
        let answers = futures_util::future::join_all(conns.into_iter().map(|mut io| async move {
            tokio::time::timeout(Duration::from_secs(30), read_response(&mut io))
                .await
                .unwrap_or_else(|_| panic!("no answer within 30 s"))
        }))
        .await;
        let mut accepted = Vec::new();
        let mut unanswered = Vec::new();
        for answer in answers {
            match answer {
                Ok(r) => {
                    assert_eq!(r.status, 202, "{r:?}");
                    accepted.push(r.json()["job_id"].as_str().unwrap().to_owned());
                }
                Err(e) => unanswered.push(e.to_string()),
            }
        }
        assert!(
            unanswered.is_empty(),
            "round {round}: {} of {CONNECTIONS} requests written before SIGTERM got no answer: {:?}",
            unanswered.len(),
            unanswered.first()
        );
        let status = tokio::task::spawn_blocking(move || gw.child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "exit status {status:?}");
        let ids = job_ids(data.path()).await;
        for id in &accepted {
            assert!(ids.contains(id), "accepted job {id} missing after SIGTERM");
        }
    }
}

/// The ids of every job a gateway that used `data` left in its store.
async fn job_ids(data: &Path) -> std::collections::HashSet<String> {
    let store = open_store(data).await;
    let ids = all_jobs(&*store)
        .await
        .into_iter()
        .map(|j| j.id.into_string())
        .collect();
    store.close().await;
    ids
}

/// Another process takes the SQLite database's write lock and holds it
/// until the connection is dropped. (SQLite-specific: it stands for the
/// engine being unable to write, which the test is about.)
fn hold_write_lock(app: &TestApp) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(app.data_dir.path().join("callgate.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_writer_answers_503_with_retry_after_instead_of_queueing() {
    let app = TestApp::builder()
        .storage("max_pending_writes = 1\nbusy_timeout = \"20s\"")
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    // The gateway's own background writes (delivery claims, housekeeping)
    // share the one-place queue, so the first trigger may meet a full
    // queue once: it is sent again until it is accepted.
    crate::runner::eventually(
        Duration::from_secs(15),
        "the first trigger accepted",
        || async {
            let r = app
                .trigger(app.key("zapier"), "demo-call", &demo_body())
                .await;
            match r.status().as_u16() {
                202 => Some(()),
                503 => None,
                other => panic!("unexpected {other}"),
            }
        },
    )
    .await;
    // Another process takes the database's write lock and holds it.
    let blocker = hold_write_lock(&app);

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..6 {
        let (client, url, key, done) = (
            app.client.clone(),
            app.url("/v1/triggers/demo-call"),
            app.key("zapier").to_owned(),
            done_tx.clone(),
        );
        tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&demo_body())
                .send()
                .await
                .unwrap();
            let _ = done.send(r);
        });
    }
    // At most two fit (one in the writer, one queued): the others are
    // refused at once, while the lock is still held.
    let mut overloaded = 0;
    while overloaded < 4 {
        let r = tokio::time::timeout(Duration::from_secs(15), done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.headers()["retry-after"], "1");
        let body = problem(r, 503).await;
        assert_eq!(body["type"], "urn:callgate:problem:overloaded", "{body}");
        overloaded += 1;
    }
    // Readiness reports the same condition.
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    drop(blocker); // rolls back, releasing the lock
    // What was queued commits once the lock is gone.
    let mut committed = 0;
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(15), done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        match r.status().as_u16() {
            202 => committed += 1,
            503 => {}
            other => panic!("unexpected {other}"),
        }
    }
    // What is in the writer may be one of the gateway's own background
    // writes rather than a trigger: every 202 is on disk, nothing else is.
    assert_eq!(app.jobs_on_disk().await, 1 + committed);
    // Ready again once the writer is free (one probe may still miss its
    // 2 s heartbeat budget on a loaded machine; readiness must return).
    crate::runner::eventually(Duration::from_secs(15), "ready again", || async {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_sigkill_with_calls_in_flight_every_job_finishes_once_and_no_number_is_dialed_twice()
{
    let (config, key) = config_dir();
    let dir = config.path();
    std::fs::write(
        dir.join("providers.toml"),
        format!(
            "[providers.simulator]\ntype = \"simulator\"\nring_time = \"200ms\"\nanswer_rate = 1.0\n\
             min_duration = \"300ms\"\nmax_duration = \"800ms\"\ncallback_secret = \"{}\"\n",
            crate::runner::SIM_SECRET
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("agents.toml"),
        crate::runner::ANYTIME_AGENT
            .replace("max_concurrent_calls = 3", "max_concurrent_calls = 8"),
    )
    .unwrap();
    let mut main = std::fs::read_to_string(dir.join("callgate.toml")).unwrap();
    main.push_str(
        "\n[runner]\nlease = \"2s\"\npoll_interval = \"100ms\"\nline_retry = \"100ms\"\n",
    );
    std::fs::write(dir.join("callgate.toml"), main).unwrap();
    let ops = ops_key(dir);
    let data = tempfile::tempdir().unwrap();

    let mut gw = Gateway::start(dir, data.path());
    let client = gw.client(data.path());
    for i in 0..30 {
        let r = client
            .post(gw.url("/v1/triggers/demo-call"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"phone_number": format!("+1555030{i:04}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // Kill it while calls are being dialed and are in progress.
    crate::runner::eventually(Duration::from_secs(30), "calls in flight", || async {
        let n: i64 = gw
            .status_gauges(&client, &ops, "calls")
            .await
            .values()
            .sum();
        (n >= 10).then_some(())
    })
    .await;
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let store = open_store(data.path()).await;
    let at_kill = count_status(&*store, "calls", None).await
        - count_status(&*store, "calls", Some("completed")).await;
    store.close().await;
    assert!(
        at_kill > 0,
        "some calls were still in flight when the process died"
    );

    let gw2 = Gateway::start(dir, data.path());
    let client = gw2.client(data.path());
    crate::runner::eventually(
        Duration::from_secs(60),
        "every job and call to finish",
        || async {
            let jobs = gw2.status_gauges(&client, &ops, "jobs").await;
            let calls = gw2.status_gauges(&client, &ops, "calls").await;
            let n = |g: &std::collections::HashMap<String, i64>, s: &str| g.get(s).copied();
            (n(&jobs, "succeeded") == Some(30) && n(&calls, "completed") == Some(30)).then_some(())
        },
    )
    .await;
    drop(gw2);
    let log = callgate::calls::simulator::read_log(&callgate::calls::simulator::log_path(
        data.path(),
        "simulator",
    ))
    .unwrap();
    let mut dials_per_number = std::collections::HashMap::new();
    for e in &log {
        if let callgate::calls::simulator::LogEntry::Dial { to, .. } = e {
            *dials_per_number.entry(to.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(dials_per_number.len(), 30);
    assert!(
        dials_per_number.values().all(|n| *n == 1),
        "a number was dialed twice: {dials_per_number:?}"
    );
    let store = open_store(data.path()).await;
    let mut succeeded_once = 0;
    for job in all_jobs(&*store).await {
        let events = store.job_events(&job.id).await.unwrap();
        let succeeded = events
            .iter()
            .filter(|e| e.status == callgate::store::JobStatus::Succeeded)
            .count();
        if succeeded == 1 {
            succeeded_once += 1;
        }
    }
    assert_eq!(succeeded_once, 30, "each job succeeded exactly once");
    assert_eq!(
        count_status(&*store, "calls", None).await,
        30,
        "one call per job"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_waiting_for_its_retry_survives_sigkill_and_is_sent_after_restart() {
    use crate::receiver::{Receiver, Reply};
    let rx = Receiver::start().await;
    // The first attempt is told to come back in 2 s: the process dies inside
    // that wait.
    rx.script([Reply::status(503).header("retry-after", "2")]);
    let (config, key) = config_dir();
    let dir = config.path();
    let endpoints = crate::deliveries::crm_endpoint(&rx.url("/hooks"), "").replace(
        "auth = { type = \"bearer\", token = \"${CRM_TOKEN}\" }\n",
        "",
    );
    std::fs::write(dir.join("endpoints.toml"), endpoints).unwrap();
    let mut automations = std::fs::read_to_string(dir.join("automations.toml")).unwrap();
    automations.push_str(
        "\n[automations.notify]\n[[automations.notify.steps]]\ntype = \"webhook\"\nendpoint = \"crm\"\n\
         payload = { phone = \"{{ input.phone_number }}\" }\n",
    );
    std::fs::write(dir.join("automations.toml"), automations).unwrap();
    let mut triggers = std::fs::read_to_string(dir.join("triggers.toml")).unwrap();
    triggers.push_str(
        "\n[triggers.notify]\nschema = \"schemas/demo-call.json\"\n\
         action = { type = \"automation\", name = \"notify\", to = \"/phone_number\" }\n",
    );
    std::fs::write(dir.join("triggers.toml"), triggers).unwrap();
    let ops = ops_key(dir);
    let data = tempfile::tempdir().unwrap();

    let mut gw = Gateway::start(dir, data.path());
    let client = gw.client(data.path());
    let r = client
        .post(gw.url("/v1/triggers/notify"))
        .bearer_auth(&key)
        .json(&demo_body())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    crate::runner::eventually(
        Duration::from_secs(20),
        "the first attempt logged",
        || async {
            let list = gw.get_json(&client, &ops, "/v1/deliveries").await;
            let id = list["deliveries"][0]["id"].as_str()?.to_owned();
            let d = gw
                .get_json(&client, &ops, &format!("/v1/deliveries/{id}"))
                .await;
            (d["attempts"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    gw.child.kill().unwrap(); // SIGKILL, inside the 2 s wait
    gw.child.wait().unwrap();
    assert_eq!(rx.received().len(), 1);
    let store = open_store(data.path()).await;
    assert_eq!(
        count_status(&*store, "deliveries", Some("pending")).await,
        1
    );
    store.close().await;

    let gw2 = Gateway::start(dir, data.path());
    let client = gw2.client(data.path());
    let got = rx.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].headers["webhook-id"], got[0].headers["webhook-id"]);
    crate::runner::eventually(
        Duration::from_secs(10),
        "the delivery to succeed",
        || async {
            let list = gw2
                .get_json(&client, &ops, "/v1/deliveries?status=succeeded")
                .await;
            let n = list["deliveries"]
                .as_array()?
                .iter()
                .filter(|d| d["attempt_count"] == 2)
                .count();
            (n == 1).then_some(())
        },
    )
    .await;
}

/// The shipped config plus a trigger `notify` whose automation sends one
/// webhook to the endpoint `crm` at `url` (no auth), with `main_extra`
/// appended to `callgate.toml`.
fn notify_config(url: &str, endpoint_extra: &str, main_extra: &str) -> (tempfile::TempDir, String) {
    let (config, key) = config_dir();
    let dir = config.path();
    let endpoints = crate::deliveries::crm_endpoint(url, endpoint_extra).replace(
        "auth = { type = \"bearer\", token = \"${CRM_TOKEN}\" }\n",
        "",
    );
    std::fs::write(dir.join("endpoints.toml"), endpoints).unwrap();
    let append = |file: &str, text: &str| {
        let mut s = std::fs::read_to_string(dir.join(file)).unwrap();
        s.push_str(text);
        std::fs::write(dir.join(file), s).unwrap();
    };
    append(
        "automations.toml",
        "\n[automations.notify]\n[[automations.notify.steps]]\ntype = \"webhook\"\nendpoint = \"crm\"\n\
         payload = { phone = \"{{ input.phone_number }}\" }\n",
    );
    append(
        "triggers.toml",
        "\n[triggers.notify]\nschema = \"schemas/demo-call.json\"\n\
         action = { type = \"automation\", name = \"notify\", to = \"/phone_number\" }\n",
    );
    append("callgate.toml", main_extra);
    (config, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_survive_repeated_sigkills_and_only_interrupted_attempts_are_sent_again() {
    use crate::receiver::{Receiver, Reply};
    const DELIVERIES: usize = 120;
    const KILLS: usize = 5;
    // Per endpoint, at most this many attempts are in flight: a kill can
    // interrupt no more than that many.
    const CONCURRENCY: usize = 4;
    let rx = Receiver::start().await;
    // Slow enough that a kill finds attempts in flight.
    rx.default_reply(Reply::ok("{}").after(Duration::from_millis(15)));
    let (config, key) = notify_config(
        &rx.url("/hooks"),
        &format!("timeout = \"1s\"\nconcurrency = {CONCURRENCY}\n"),
        "\n[deliveries]\nlease_grace = \"1s\"\n",
    );
    let dir = config.path();
    let ops = ops_key(dir);
    let data = tempfile::tempdir().unwrap();

    let mut gw = Gateway::start(dir, data.path());
    let client = gw.client(data.path());
    for i in 0..DELIVERIES {
        let r = client
            .post(gw.url("/v1/triggers/notify"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"phone_number": format!("+1555040{i:04}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let mut kills = Vec::new();
    for k in 1..=KILLS {
        rx.wait_for(k * DELIVERIES / (KILLS + 1), Duration::from_secs(60))
            .await;
        gw.child.kill().unwrap(); // SIGKILL, with attempts in flight
        gw.child.wait().unwrap();
        kills.push(std::time::Instant::now());
        gw = Gateway::start(dir, data.path());
    }
    let client = gw.client(data.path());
    crate::runner::eventually(
        Duration::from_secs(120),
        "every delivery to succeed",
        || async {
            let g = gw.status_gauges(&client, &ops, "deliveries").await;
            (g.get("succeeded") == Some(&(DELIVERIES as i64))).then_some(())
        },
    )
    .await;
    drop(gw); // every delivery is done: what the store holds is final
    let store = open_store(data.path()).await;
    let deliveries = all_deliveries(&*store).await;
    assert_eq!(
        deliveries.len(),
        DELIVERIES,
        "one delivery per job, however often its job ran"
    );

    // By webhook-id: how often it arrived, and whether its first arrival
    // had been answered before the kill that followed it.
    let answered = rx.answered();
    let mut seen = std::collections::HashMap::<String, (usize, bool)>::new();
    for (i, r) in rx.received().iter().enumerate() {
        let id = r.headers["webhook-id"].to_str().unwrap().to_owned();
        let next_kill = kills.iter().find(|k| **k > r.at);
        let answered_first = match (answered[i], next_kill) {
            (Some(a), Some(k)) => a < *k,
            _ => false,
        };
        let e = seen.entry(id).or_insert((0, answered_first));
        e.0 += 1;
    }
    assert_eq!(seen.len(), DELIVERIES, "every delivery arrived");
    let resent: Vec<&String> = seen
        .iter()
        .filter(|(_, (n, _))| *n > 1)
        .map(|(id, _)| id)
        .collect();
    let extra: usize = seen.values().map(|(n, _)| n - 1).sum();
    let after_answer = seen.values().filter(|(n, a)| *n > 1 && *a).count();
    eprintln!(
        "deliveries re-sent after a SIGKILL: {extra} of {DELIVERIES} ({:.1}%), {KILLS} kills; \
         {after_answer} of them had already been answered",
        100.0 * extra as f64 / DELIVERIES as f64
    );
    assert!(
        extra <= KILLS * CONCURRENCY,
        "{extra} re-sends: more than the attempts {KILLS} kills can interrupt"
    );
    // Every re-send follows an attempt that its process did not live to log.
    for id in resent {
        let mut interrupted = 0;
        for d in deliveries.iter().filter(|d| d.msg_id.as_str() == id) {
            interrupted += store
                .delivery_attempts(&d.id)
                .await
                .unwrap()
                .iter()
                .filter(|a| {
                    a.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("interrupted"))
                })
                .count();
        }
        assert!(
            interrupted >= 1,
            "{id} was sent again without an interrupted attempt"
        );
    }
    store.close().await;
}
