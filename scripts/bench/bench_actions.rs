//! Mid-call action benchmark for `scripts/bench-actions.sh`: the gateway's
//! action path against calling the same upstream directly, in one run.
//!
//! Usage: `bench_actions <upstream port> <gateway https base> <token>
//!         [rate/s] [seconds per round] [rounds]`
//!
//! It serves the upstream itself (axum over plain HTTP on
//! `127.0.0.1:<upstream port>`: `GET /customers/{phone}` answers a small
//! JSON customer) and sends open-loop load at a fixed rate (each request
//! starts at its scheduled time, whatever the previous ones do; latency is
//! counted from when it is sent; tokio's timer has 1 ms granularity, so
//! counting from the scheduled time would add up to 1 ms of timer lag to
//! both sides), alternating rounds:
//! - `direct`: `GET http://127.0.0.1:<port>/customers/+1555…` (HTTP/1.1
//!   keep-alive), what a voice runtime calling the CRM itself would see;
//! - `action`: `POST <gateway>/v1/agents/demo-agent/actions/customer_lookup`
//!   over HTTPS keep-alive with a bearer JWT (auth, limits, routing, the
//!   upstream request with its SSRF-guarded client, result mapping).
//!
//! Prints percentiles per mode and the p99 overhead, and a machine line
//! `BENCH_ACTIONS …`. Exits non-zero if any request failed or degraded.

// A benchmark tool: it prints its figures and stops at the first failure.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    Action,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: bench_actions <upstream port> <gateway base> <token> [rate] [seconds] [rounds]"
    );
    let port: u16 = args[0].parse()?;
    let gateway = args[1].trim_end_matches('/').to_owned();
    let token = args[2].clone();
    let rate: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let secs: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let rounds: u64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(4);

    let upstream = Router::new().route(
        "/customers/{phone}",
        get(|Path(phone): Path<String>| async move {
            axum::Json(json!({"customer": {"phone": phone, "name": "Ada Lovelace", "tier": "gold", "open_tickets": 2}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, upstream).await;
    });

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        // The gateway's self-signed dev certificate; the handshake cost is
        // the same as with a trusted one (and paid once per connection).
        .danger_accept_invalid_certs(true)
        .pool_max_idle_per_host(256)
        .http1_only()
        .build()?;
    let direct_url = format!("http://127.0.0.1:{port}/customers/+15550121234");
    let action_url = format!("{gateway}/v1/agents/demo-agent/actions/customer_lookup");
    let body = json!({"call": {"id": "call_bench", "from": "+15550121234"}, "args": {"phone_number": "+15550121234"}}).to_string();

    let one = {
        let client = client.clone();
        move |mode: Mode| {
            let client = client.clone();
            let (direct_url, action_url, body, token) = (
                direct_url.clone(),
                action_url.clone(),
                body.clone(),
                token.clone(),
            );
            async move {
                let r = match mode {
                    Mode::Direct => client.get(&direct_url).send().await,
                    Mode::Action => {
                        client
                            .post(&action_url)
                            .bearer_auth(&token)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                    }
                };
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap_or_default();
                        match mode {
                            Mode::Action if v["degraded"] != false => Err(format!("degraded: {v}")),
                            Mode::Direct if v["customer"]["name"] != "Ada Lovelace" => {
                                Err(format!("bad body: {v}"))
                            }
                            _ => Ok(()),
                        }
                    }
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    };

    // Warm-up: connections, TLS sessions, caches.
    for mode in [Mode::Direct, Mode::Action] {
        run(mode, rate, 2, &one).await?;
    }
    let mut direct = Vec::new();
    let mut action = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..rounds {
        for mode in [Mode::Direct, Mode::Action] {
            let (lat, fails) = run(mode, rate, secs, &one).await?;
            match mode {
                Mode::Direct => direct.extend(lat),
                Mode::Action => action.extend(lat),
            }
            failures.extend(fails);
        }
    }
    let d = Stats::of(&mut direct);
    let a = Stats::of(&mut action);
    println!("| path | requests | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (name, s) in [("upstream directly", &d), ("through callgate", &a)] {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.n,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max)
        );
    }
    let overhead_p50 = a.p50.saturating_sub(d.p50);
    let overhead_p99 = a.p99.saturating_sub(d.p99);
    println!(
        "\nOverhead at {rate} requests/s: p50 {:.3} ms, p99 {:.3} ms (target p99 <= 1 ms: {}).",
        ms(overhead_p50),
        ms(overhead_p99),
        if overhead_p99 <= Duration::from_millis(1) {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "BENCH_ACTIONS rate={rate} direct_p50_us={} direct_p99_us={} action_p50_us={} action_p99_us={} overhead_p99_us={} failures={}",
        d.p50.as_micros(),
        d.p99.as_micros(),
        a.p50.as_micros(),
        a.p99.as_micros(),
        overhead_p99.as_micros(),
        failures.len()
    );
    if !failures.is_empty() {
        eprintln!(
            "bench_actions: {} failed requests, e.g. {}",
            failures.len(),
            failures[0]
        );
        std::process::exit(1);
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Stats {
    n: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(v: &mut [Duration]) -> Self {
        v.sort();
        let at = |q: f64| {
            v[((v.len() as f64 * q).ceil() as usize)
                .saturating_sub(1)
                .min(v.len() - 1)]
        };
        Stats {
            n: v.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: *v.last().unwrap(),
        }
    }
}

/// Open loop: request i starts at start + i/rate (whether or not earlier
/// ones have answered); its latency runs from its send to the end of its
/// answer.
async fn run<F, Fut>(
    mode: Mode,
    rate: u64,
    secs: u64,
    one: &F,
) -> anyhow::Result<(Vec<Duration>, Vec<String>)>
where
    F: Fn(Mode) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let results = Arc::new(Mutex::new((Vec::with_capacity(total as usize), Vec::new())));
    let start = Instant::now() + Duration::from_millis(10);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let fut = one(mode);
        let results = results.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(5), fut).await;
            let lat = sent.elapsed();
            let mut g = results.lock().await;
            match r {
                Ok(Ok(())) => g.0.push(lat),
                Ok(Err(e)) => g.1.push(e),
                Err(_) => g.1.push("no answer within 5 s".into()),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let out = std::mem::take(&mut *results.lock().await);
    Ok(out)
}
