//! Shared rate limits on Redis (`limits.backend = "redis"`), against the
//! real Redis at `CALLGATE_TEST_REDIS_URL`, each test under its own key
//! prefix: a burst spread over two instances admits exactly the burst, and
//! cutting the link to Redis (a TCP proxy in the test) fails open to each
//! instance's share, then shares again once the link is back, without a
//! restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{TestApp, demo_body};

const FAST: &str = "{ requests = 100000, per = \"1s\", burst = 100000 }";
/// Ten at once, then one an hour: nothing is earned back during a test.
const TEN_AN_HOUR: &str = "{ requests = 1, per = \"1h\", burst = 10 }";

/// The test Redis, or `None` (with the skip line) when it is not set.
fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("CALLGATE_TEST_REDIS_URL").ok();
    if url.is_none() {
        crate::support::say_skipped(test, "CALLGATE_TEST_REDIS_URL");
    }
    url
}

/// A key prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("callgate-test:{}:", ulid::Ulid::generate())
}

/// An app whose trigger limit is `TEN_AN_HOUR`, shared through Redis.
async fn shared_app(url: &str, prefix: &str, instances: u32) -> TestApp {
    // Exactness across instances is what these tests check: a busy test
    // machine must not turn a slow answer into a fallback.
    shared_app_with_timeout(url, prefix, instances, Duration::from_secs(2)).await
}

async fn shared_app_with_timeout(
    url: &str,
    prefix: &str,
    instances: u32,
    timeout: Duration,
) -> TestApp {
    TestApp::builder()
        .limits(&format!(
            "per_ip = {FAST}\nper_principal = {FAST}\nper_trigger = {TEN_AN_HOUR}\n\
             backend = \"redis\"\nredis_url = \"{url}\"\nredis_prefix = \"{prefix}\"\n\
             instances = {instances}\nredis_timeout = \"{}ms\"\n",
            timeout.as_millis()
        ))
        .key("zapier", &["triggers:run"])
        .key("prom", &["metrics:read"])
        .start()
        .await
}

/// How many of `n` trigger requests to `app` were admitted (the rest must
/// be 429s from the trigger limit).
async fn admitted(app: &TestApp, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let r = app
            .trigger(app.key("zapier"), "demo-call", &demo_body())
            .await;
        match r.status().as_u16() {
            202 => ok += 1,
            429 => assert!(r.headers().contains_key("retry-after")),
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    ok
}

async fn readyz_limits(app: &TestApp) -> Value {
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["limits"].clone()
}

/// `callgate_rate_limit_fallback_total{policy="trigger"}` (0 before the
/// first fallback).
async fn trigger_fallbacks(app: &TestApp) -> f64 {
    let r = app.get(app.key("prom"), "/metrics").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("callgate_rate_limit_fallback_total{policy=\"trigger\"} "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Deletes the test's keys (best effort; they expire anyway).
async fn clean_up(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

#[tokio::test]
async fn a_burst_spread_over_two_instances_admits_exactly_the_burst() {
    let Some(url) =
        redis_url("limits_redis::a_burst_spread_over_two_instances_admits_exactly_the_burst")
    else {
        return;
    };
    let prefix = unique_prefix();
    let a = shared_app(&url, &prefix, 2).await;
    let b = shared_app(&url, &prefix, 2).await;
    // 30 requests at once, half to each instance.
    let body = demo_body();
    let body = &body;
    let sends = (0..30).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.trigger(app.key("zapier"), "demo-call", body)
    });
    let statuses: Vec<u16> = futures_util::future::join_all(sends)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((accepted, refused), (10, 20), "{statuses:?}");
    // Each instance on its own would have admitted 10 (its memory limit)
    // or 5 (its share): the ten are shared, whichever instance took them.
    assert_eq!(a.jobs_on_disk().await + b.jobs_on_disk().await, 10);
    assert_eq!(admitted(&a, 2).await + admitted(&b, 2).await, 0);
    assert_eq!(readyz_limits(&a).await["redis_reachable"], true);
    clean_up(&url, &prefix).await;
}

#[tokio::test]
async fn when_redis_is_cut_off_limits_fail_open_to_the_share_then_share_again() {
    let Some(url) = redis_url(
        "limits_redis::when_redis_is_cut_off_limits_fail_open_to_the_share_then_share_again",
    ) else {
        return;
    };
    let prefix = unique_prefix();
    let proxy = Proxy::start(&url).await;
    let app = shared_app(&proxy.url, &prefix, 2).await;

    // Shared: three of the ten go through Redis.
    assert_eq!(admitted(&app, 3).await, 3);
    assert_eq!(readyz_limits(&app).await["redis_reachable"], true);
    let before = trigger_fallbacks(&app).await;

    // Cut: this instance admits its share, 10 ÷ 2 = 5, then refuses.
    proxy.cut();
    assert_eq!(admitted(&app, 8).await, 5);
    assert_eq!(
        readyz_limits(&app).await,
        serde_json::json!({"backend": "redis", "redis_reachable": false})
    );
    assert!(trigger_fallbacks(&app).await >= before + 8.0);

    // Back: no restart; once the probe reconnects, Redis decides again and
    // still holds the three from before: seven more, whatever the local
    // share (spent) says.
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while readyz_limits(&app).await["redis_reachable"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis not reachable again 10 s after the link came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admitted(&app, 9).await, 7);
    clean_up(&url, &prefix).await;
}

#[tokio::test]
async fn a_key_redis_refused_is_refused_locally_until_redis_said() {
    let Some(url) =
        redis_url("limits_redis::a_key_redis_refused_is_refused_locally_until_redis_said")
    else {
        return;
    };
    let prefix = unique_prefix();
    let a = shared_app(&url, &prefix, 1).await;
    assert_eq!(admitted(&a, 11).await, 10);
    // Redis forgets the key: it would admit a full burst again. `a` does
    // not ask it (it knows the key is refused for an hour); another
    // instance, which has not been refused, asks and is admitted.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deleted: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}trigger:demo-call"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the trigger's key is <prefix>trigger:<id>");
    let r = a.trigger(a.key("zapier"), "demo-call", &demo_body()).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry_after), "{retry_after}");
    let b = shared_app(&url, &prefix, 1).await;
    assert_eq!(admitted(&b, 1).await, 1);
    clean_up(&url, &prefix).await;
}

#[tokio::test]
async fn a_gateway_starts_and_serves_while_redis_is_unreachable() {
    let Some(url) =
        redis_url("limits_redis::a_gateway_starts_and_serves_while_redis_is_unreachable")
    else {
        return;
    };
    let prefix = unique_prefix();
    let proxy = Proxy::start(&url).await;
    proxy.cut();
    let app = shared_app(&proxy.url, &prefix, 2).await;
    assert_eq!(readyz_limits(&app).await["redis_reachable"], false);
    assert_eq!(admitted(&app, 7).await, 5);
    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while readyz_limits(&app).await["redis_reachable"] != true {
        assert!(tokio::time::Instant::now() < deadline, "Redis not back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Redis never saw the five: the whole burst is there.
    assert_eq!(admitted(&app, 11).await, 10);
    clean_up(&url, &prefix).await;
}

#[tokio::test]
async fn a_redis_that_stops_answering_delays_a_request_by_the_command_timeout_at_most() {
    let Some(url) = redis_url(
        "limits_redis::a_redis_that_stops_answering_delays_a_request_by_the_command_timeout_at_most",
    ) else {
        return;
    };
    let prefix = unique_prefix();
    let proxy = Proxy::start(&url).await;
    let timeout = Duration::from_secs(1);
    let app = shared_app_with_timeout(&proxy.url, &prefix, 2, timeout).await;
    assert_eq!(admitted(&app, 1).await, 1);
    // The connection stays open but nothing comes back (a stalled Redis,
    // a dead peer without a reset): the first decision gives up after
    // `limits.redis_timeout`, the next ones do not wait at all.
    proxy.freeze();
    let started = std::time::Instant::now();
    assert_eq!(admitted(&app, 1).await, 1);
    let first = started.elapsed();
    assert!(
        first >= timeout && first < timeout + Duration::from_millis(1500),
        "{first:?}"
    );
    assert_eq!(readyz_limits(&app).await["redis_reachable"], false);
    let started = std::time::Instant::now();
    assert_eq!(admitted(&app, 6).await, 4, "the share of 5, one spent");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    clean_up(&url, &prefix).await;
}

/// A TCP proxy to Redis that can be cut: existing connections are closed
/// and new ones are accepted but never answered (a dead link), until it is
/// restored; or frozen: connections stay open and nothing is forwarded.
struct Proxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
    frozen: tokio::sync::watch::Sender<bool>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    links: Vec<JoinHandle<()>>,
    held: Vec<TcpStream>,
}

impl Proxy {
    async fn start(redis_url: &str) -> Proxy {
        // redis://[auth@]host:port[/db]
        let rest = redis_url.strip_prefix("redis://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (auth, host) = match authority.rsplit_once('@') {
            Some((auth, host)) => (format!("{auth}@"), host.to_owned()),
            None => (String::new(), authority.to_owned()),
        };
        let upstream = if host.contains(':') {
            host
        } else {
            format!("{host}:6379")
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{auth}{}/{path}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let (frozen, frozen_rx) = tokio::sync::watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if state.cut {
                    state.held.push(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut frozen = frozen_rx.clone();
                state.links.push(tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let froze = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        r = frozen.wait_for(|f| *f) => r.is_ok(),
                    };
                    if froze {
                        // Both sockets stay open, unread, until the link is cut.
                        std::future::pending::<()>().await;
                    }
                }));
            }
        });
        Proxy {
            url,
            state,
            frozen,
            accept,
        }
    }

    fn freeze(&self) {
        self.state.lock().unwrap().cut = true;
        self.frozen.send_replace(true);
    }

    fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for link in state.links.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        let mut state = self.state.lock().unwrap();
        for link in state.links.drain(..) {
            link.abort();
        }
        self.frozen.send_replace(false);
        state.cut = false;
        state.held.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
