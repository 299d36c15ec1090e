//! Scale-out on PostgreSQL: three real `callgate serve` processes on one
//! database, behind a load balancer (played by the fake platform, which
//! sends each call event to whichever instance is up, as the one public
//! URL would), dialing one fake voice platform. One instance is SIGKILLed
//! in the middle of 2,000 triggers and started again: every accepted job
//! finishes exactly once, no number is dialed twice, nothing is stuck.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::durability::Gateway;
use crate::runner::eventually;
use crate::support;

const SECRET: &str = "platform-s3cret";
/// The address every instance gives the platform for its events.
const PUBLIC_URL: &str = "http://lb.invalid";

/// A fake voice platform with a JSON API: `POST /calls` places a call
/// (`{to, callback}` → `{sid}`), `GET /calls/{sid}` looks one up; some
/// tens of milliseconds after a dial it posts `completed` to the callback,
/// through the "load balancer" (any live instance), until one takes it.
#[derive(Clone, Default)]
struct Platform {
    state: Arc<Mutex<PlatformState>>,
    /// Live instances (the load balancer's pool).
    pool: Arc<Mutex<Vec<SocketAddr>>>,
    next: Arc<AtomicUsize>,
}

#[derive(Default)]
struct PlatformState {
    dials: HashMap<String, u32>,
    calls: HashMap<String, bool>,
    undelivered: usize,
}

impl Platform {
    async fn start(&self) -> SocketAddr {
        let app = Router::new()
            .route("/calls", post(create_call))
            .route("/calls/{sid}", get(lookup))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn dials(&self) -> HashMap<String, u32> {
        self.state.lock().unwrap().dials.clone()
    }

    /// Posts the call's final event to a live instance, trying the next one
    /// when an instance is down, until one answers 2xx.
    async fn complete(self, sid: String, callback: String) {
        let path = callback.strip_prefix(PUBLIC_URL).unwrap().to_owned();
        let body = json!({"sid": sid, "status": "completed", "duration": 3, "event": format!("{sid}-end")});
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < deadline {
            let pool = self.pool.lock().unwrap().clone();
            if !pool.is_empty() {
                let addr = pool[self.next.fetch_add(1, Ordering::Relaxed) % pool.len()];
                let sent = client
                    .post(format!("http://{addr}{path}"))
                    .header("x-platform-secret", SECRET)
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if matches!(&sent, Ok(r) if r.status().is_success()) {
                    self.state.lock().unwrap().calls.insert(sid, true);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.state.lock().unwrap().undelivered += 1;
    }
}

async fn create_call(State(p): State<Platform>, Json(body): Json<Value>) -> Json<Value> {
    let to = body["to"].as_str().unwrap().to_owned();
    let callback = body["callback"].as_str().unwrap().to_owned();
    let sid = format!("CA{}", ulid::Ulid::generate());
    {
        let mut s = p.state.lock().unwrap();
        *s.dials.entry(to).or_default() += 1;
        s.calls.insert(sid.clone(), false);
    }
    let talk = Duration::from_millis(20 + rand::random::<u64>() % 200);
    let (platform, id) = (p.clone(), sid.clone());
    tokio::spawn(async move {
        tokio::time::sleep(talk).await;
        platform.complete(id, callback).await;
    });
    Json(json!({"sid": sid, "status": "queued"}))
}

async fn lookup(
    State(p): State<Platform>,
    UrlPath(sid): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    match p.state.lock().unwrap().calls.get(&sid) {
        Some(true) => (
            StatusCode::OK,
            Json(json!({"sid": sid, "status": "completed"})),
        ),
        Some(false) => (
            StatusCode::OK,
            Json(json!({"sid": sid, "status": "in-progress"})),
        ),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "not found"}))),
    }
}

fn providers_toml(platform: SocketAddr) -> String {
    format!(
        r#"
[providers.fake]
type = "http"
call_id = "/sid"
timeout = "5s"
[providers.fake.create_call]
method = "POST"
url = "http://{platform}/calls"
[providers.fake.create_call.body]
to = "{{{{ call.to }}}}"
callback = "{{{{ callback_url }}}}"
[providers.fake.lookup]
method = "GET"
url = "http://{platform}/calls/{{{{ call.provider_call_id }}}}"
status = "/status"
[providers.fake.callbacks]
signature = {{ scheme = "shared-secret", header = "x-platform-secret", secret = "{SECRET}" }}
format = "json"
status = "/status"
status_map = {{ queued = "queued", in-progress = "in_progress", completed = "completed" }}
provider_call_id = "/sid"
event_id = "/event"
duration_seconds = "/duration"
"#
    )
}

/// A config dir for the instances: the repository's trigger, the fake
/// platform's provider, an agent with room for many lines, PostgreSQL.
fn config_dir(storage_url: &str, platform: SocketAddr) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("schemas")).unwrap();
    std::fs::copy(
        format!("{}/schemas/demo-call.json", support::REPO_CONFIG),
        d.join("schemas/demo-call.json"),
    )
    .unwrap();
    std::fs::copy(
        format!("{}/triggers.toml", support::REPO_CONFIG),
        d.join("triggers.toml"),
    )
    .unwrap();
    std::fs::copy(
        format!("{}/automations.toml", support::REPO_CONFIG),
        d.join("automations.toml"),
    )
    .unwrap();
    std::fs::write(d.join("providers.toml"), providers_toml(platform)).unwrap();
    std::fs::write(
        d.join("agents.toml"),
        "[agents.demo-agent]\nname = \"Demo\"\nprovider = \"fake\"\nfrom_number = \"+15550009999\"\n\
         max_concurrent_calls = 100\ncalling_window = { enabled = false }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("callgate.toml"),
        format!(
            "[server]\nplain_http = true\npublic_url = \"{PUBLIC_URL}\"\n\
             [storage]\nurl = \"{storage_url}\"\npool_size = 6\n\
             [limits]\nper_ip = {{ requests = 100000, per = \"1s\", burst = 100000 }}\n\
             per_principal = {{ requests = 100000, per = \"1s\", burst = 100000 }}\n\
             per_provider = {{ requests = 100000, per = \"1s\", burst = 100000 }}\n\
             per_trigger = {{ requests = 100000, per = \"1s\", burst = 100000 }}\n\
             [runner]\nlease = \"2s\"\npoll_interval = \"100ms\"\nline_retry = \"100ms\"\n\
             stale_call_after = \"3s\"\n"
        ),
    )
    .unwrap();
    let key = callgate::auth::api_key::add_to_file(
        &d.join("keys.toml"),
        "zapier",
        &["triggers:run".into()],
        None,
        "now",
    )
    .unwrap();
    (dir, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_on_postgres_lose_nothing_and_dial_once_through_a_sigkill() {
    let url = crate::pg_url_or_skip!(
        "three_instances_on_postgres_lose_nothing_and_dial_once_through_a_sigkill"
    );
    let db = support::pg::Schema::create(&url);
    support::crypto();
    const TRIGGERS: usize = 2000;
    let started = std::time::Instant::now();
    let platform = Platform::default();
    let platform_addr = platform.start().await;
    let (config, key) = config_dir(&db.url, platform_addr);
    let data: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut instances: Vec<Gateway> = data
        .iter()
        .map(|d| Gateway::start(config.path(), d.path()))
        .collect();
    *platform.pool.lock().unwrap() = instances.iter().map(|i| i.addr).collect();
    let addrs = Arc::new(Mutex::new(
        instances.iter().map(|i| i.addr).collect::<Vec<_>>(),
    ));

    // Senders: each trigger goes to the next instance; a refused connection
    // or a 5xx is sent again, with the same Idempotency-Key, to another.
    let client = reqwest::Client::new();
    let accepted = Arc::new(Mutex::new(HashMap::<usize, String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let send_one = {
        let (client, key, addrs, accepted) =
            (client.clone(), key.clone(), addrs.clone(), accepted.clone());
        move |i: usize| {
            let (client, key, addrs, accepted) =
                (client.clone(), key.clone(), addrs.clone(), accepted.clone());
            async move {
                for attempt in 0.. {
                    assert!(attempt < 200, "trigger {i} was never accepted");
                    let list = addrs.lock().unwrap().clone();
                    let addr = list[(i + attempt) % list.len()];
                    let r = client
                        .post(format!("http://{addr}/v1/triggers/demo-call"))
                        .bearer_auth(&key)
                        .header("idempotency-key", format!("scale-{i}"))
                        .json(&json!({"phone_number": format!("+1555030{i:04}")}))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 202 || r.status() == 200 => {
                            let body: Value = r.json().await.unwrap();
                            let id = body["job_id"].as_str().unwrap().to_owned();
                            let previous = accepted.lock().unwrap().insert(i, id.clone());
                            assert!(previous.is_none_or(|p| p == id), "trigger {i}: two jobs");
                            return;
                        }
                        Ok(r) if r.status().is_client_error() && r.status() != 409 => {
                            panic!("trigger {i}: {} {}", r.status(), r.text().await.unwrap())
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        }
    };
    let workers: Vec<_> = (0..24)
        .map(|_| {
            let (next, send_one) = (next.clone(), send_one.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TRIGGERS {
                        return;
                    }
                    send_one(i).await;
                }
            })
        })
        .collect();

    // Kill the second instance once calls are being placed through it all.
    eventually(
        Duration::from_secs(180),
        "a quarter of the numbers dialed",
        || async { (platform.dials().len() >= TRIGGERS / 4).then_some(()) },
    )
    .await;
    let killed = instances[1].addr;
    addrs.lock().unwrap().retain(|a| *a != killed);
    platform.pool.lock().unwrap().retain(|a| *a != killed);
    instances[1].child.kill().unwrap();
    instances[1].child.wait().unwrap();
    let dials_at_kill = platform.dials().len();
    assert!(
        dials_at_kill < TRIGGERS,
        "killed after every dial: proves nothing"
    );
    // Started again on the same database (a new port).
    instances[1] = Gateway::start(config.path(), data[1].path());
    addrs.lock().unwrap().push(instances[1].addr);
    platform.pool.lock().unwrap().push(instances[1].addr);

    for w in workers {
        w.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), TRIGGERS);
    let all_accepted = started.elapsed();

    let storage = callgate::config::StorageConfig {
        url: db.url.clone(),
        pool_size: 2,
        ..Default::default()
    };
    let store = callgate::store::open(&storage, data[0].path())
        .await
        .unwrap();
    let store = &*store;
    let settled = eventually(Duration::from_secs(180), "every job to finish", || async {
        let jobs = support::all_jobs(store).await;
        let open = jobs.iter().filter(|j| !j.status.is_final()).count();
        (jobs.len() == TRIGGERS && open == 0).then_some(jobs)
    })
    .await;

    // Each number dialed at most once, and every accepted job is one of them.
    let dials = platform.dials();
    let twice: Vec<_> = dials.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "dialed twice: {twice:?}");
    let mut by_status = HashMap::<String, usize>::new();
    for job in &settled {
        *by_status.entry(job.status.as_str().to_owned()).or_default() += 1;
        let finals = store
            .job_events(&job.id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.status.is_final())
            .count();
        assert_eq!(finals, 1, "job {} finished {finals} times", job.id);
    }
    // Only a dial cut off by the kill (the platform placed it, the gateway
    // never heard the answer) may be left for a person; everything else
    // succeeded.
    let succeeded = by_status.get("succeeded").copied().unwrap_or(0);
    assert!(
        TRIGGERS - succeeded <= 25,
        "too many jobs not succeeded: {by_status:?}"
    );
    assert_eq!(platform.state.lock().unwrap().undelivered, 0);
    eprintln!(
        "scale-out: {TRIGGERS} accepted in {all_accepted:?}, settled after {:?}; killed after {dials_at_kill} dials; jobs {by_status:?}",
        started.elapsed()
    );
    let logs: String = instances
        .iter()
        .map(|i| i.logs.lock().unwrap().clone())
        .collect();
    assert!(!logs.contains("\"level\":\"ERROR\""), "errors logged");
    store.close().await;
}
