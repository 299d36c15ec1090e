//! The Redis side of shared limits: the connection, the GCRA script
//! (`gcra.lua`) and whether Redis is reachable.
//!
//! Policy: one decision is one `EVALSHA` (the script is loaded again on
//! `NOSCRIPT`, e.g. after a Redis restart) within `limits.redis_timeout`. Any
//! failure marks Redis down: from then on decisions do not wait for Redis
//! at all (the caller uses its local fallback) until the background probe
//! (`watch`, every `PROBE_EVERY`) reaches Redis again on a fresh
//! connection. Going down is logged as a warning at most once per
//! `WARN_EVERY`, and `callgate_redis_up` is 1 or 0.

use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RateSpec;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an unreachable Redis is tried again (in the background; no
/// request waits for it).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// At most one "Redis unreachable" warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The outcome of one shared decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed { remaining: u32 },
    Refused { retry_after: Duration },
}

/// Redis did not answer (error, timeout, or known to be down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Whether `url` is a Redis URL this build can use (`redis://` only: no TLS
/// client is built in).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("redis") => {}
        Some("rediss") => {
            return Err(
                "`rediss://` (TLS) is not supported; reach Redis over a private \
                        network or a TLS tunnel and use `redis://`"
                    .into(),
            );
        }
        _ => return Err("must be a `redis://[user:password@]host[:port][/db]` URL".into()),
    }
    // The error text is not repeated: it could echo the password.
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|_| "is not a valid `redis://[user:password@]host[:port][/db]` URL".into())
}

/// The shared-limit client.
pub struct Redis {
    client: redis::Client,
    conn: ArcSwap<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    /// How long one command may take (`limits.redis_timeout`).
    timeout: Duration,
    up: AtomicBool,
    went_down: Notify,
    /// When the last warning was logged (log throttling, so real time).
    last_warn: Mutex<Option<Instant>>,
}

impl Redis {
    /// A client for `url` (checked by `check_redis_url`); tries Redis once,
    /// and starts in fallback (with a warning) when it does not answer.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = manager(&client, timeout)?;
        let redis = Self {
            client,
            conn: ArcSwap::from_pointee(conn),
            script: redis::Script::new(include_str!("gcra.lua")),
            prefix: prefix.to_owned(),
            timeout,
            up: AtomicBool::new(true),
            went_down: Notify::new(),
            last_warn: Mutex::new(None),
        };
        match redis.probe().await {
            Ok(conn) => {
                redis.conn.store(conn.into());
                metrics::gauge!("callgate_redis_up").set(1.0);
            }
            Err(e) => redis.mark_down(&e),
        }
        Ok(redis)
    }

    /// The key of `limit` for `key`: `<prefix><limit>:<key>`.
    pub fn key(&self, limit: &str, key: &dyn Display) -> String {
        format!("{}{limit}:{key}", self.prefix)
    }

    /// Whether decisions currently go to Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// One GCRA decision on `key` for `spec`. `now_us` replaces Redis
    /// `TIME`, for tests only.
    pub async fn decide(
        &self,
        key: &str,
        spec: &RateSpec,
        now_us: Option<u64>,
    ) -> Result<Decision, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        let interval_ns = u64::try_from(spec.replenish_interval().as_nanos()).unwrap_or(u64::MAX);
        let mut invocation = self.script.prepare_invoke();
        invocation.key(key).arg(interval_ns).arg(spec.burst);
        if let Some(now) = now_us {
            invocation.arg(now);
        }
        let mut conn = ConnectionManager::clone(&self.conn.load());
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64, i64)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((1, remaining, _))) => Ok(Decision::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
            }),
            Ok(Ok((_, _, retry_us))) => Ok(Decision::Refused {
                retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
            }),
            Ok(Err(e)) => {
                self.mark_down(&e);
                Err(Unavailable)
            }
            Err(_) => {
                self.mark_down(&format!("no answer within {:?}", self.timeout));
                Err(Unavailable)
            }
        }
    }

    /// Whether Redis answers a `PING` now (for `/readyz`); a failure marks
    /// it down like a failed decision.
    pub async fn reachable(&self) -> bool {
        if !self.is_up() {
            return false;
        }
        let mut conn = ConnectionManager::clone(&self.conn.load());
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                self.mark_down(&e);
                false
            }
            Err(_) => {
                self.mark_down(&format!("no PING answer within {:?}", self.timeout));
                false
            }
        }
    }

    /// Brings Redis back after an outage: while it is down, a fresh
    /// connection is tried every `PROBE_EVERY`; the first one that answers
    /// replaces the old connection and decisions go to Redis again.
    pub async fn watch(&self, token: CancellationToken) {
        loop {
            if self.is_up() {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = self.went_down.notified() => continue,
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
            match self.probe().await {
                Ok(conn) => {
                    self.conn.store(conn.into());
                    self.up.store(true, Ordering::Relaxed);
                    metrics::gauge!("callgate_redis_up").set(1.0);
                    tracing::info!("Redis reachable again: rate limits are shared again");
                }
                Err(e) => self.warn(&e),
            }
        }
    }

    /// A fresh connection that has answered a `PING`.
    async fn probe(&self) -> Result<ConnectionManager, String> {
        let mut conn = manager(&self.client, self.timeout).map_err(|e| e.to_string())?;
        let ping = redis::cmd("PING");
        match tokio::time::timeout(PROBE_EVERY, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no PING answer within {PROBE_EVERY:?}")),
        }
    }

    fn mark_down(&self, cause: &dyn Display) {
        if self.up.swap(false, Ordering::Relaxed) {
            metrics::gauge!("callgate_redis_up").set(0.0);
            self.went_down.notify_one();
        }
        self.warn(cause);
    }

    fn warn(&self, cause: &dyn Display) {
        let mut last = self.last_warn.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            error = %cause,
            "Redis unreachable: rate limits fall back to each instance's share \
             (limit ÷ limits.instances) until it is back"
        );
    }
}

/// A connection manager that fails fast: short timeouts and a single
/// reconnect attempt (the probe makes further ones).
fn manager(client: &redis::Client, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

#[cfg(test)]
mod tests {
    use governor::clock::{Clock as _, FakeRelativeClock};

    use super::*;
    use crate::limits::Keyed;

    #[test]
    fn only_plain_redis_urls_are_accepted() {
        assert!(check_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_redis_url("redis://:secret@cache.internal:6379/2").is_ok());
        assert!(
            check_redis_url("rediss://cache:6380")
                .unwrap_err()
                .contains("TLS")
        );
        assert!(check_redis_url("http://cache:6379").is_err());
        assert!(check_redis_url("cache:6379").is_err());
        let bad = check_redis_url("redis://:hunter2@cache:notaport").unwrap_err();
        assert!(!bad.contains("hunter2"), "{bad}");
    }

    /// Redis for a test, or `None` (with the skip line) when
    /// `CALLGATE_TEST_REDIS_URL` is unset.
    #[allow(clippy::print_stderr)]
    fn test_redis_url(test: &str) -> Option<String> {
        let url = std::env::var("CALLGATE_TEST_REDIS_URL").ok();
        if url.is_none() {
            eprintln!("skipped {test}: CALLGATE_TEST_REDIS_URL not set");
        }
        url
    }

    /// The script against governor on the same sequence, step by step:
    /// the same decisions, the same remaining burst, the same wait (to the
    /// µs the script counts in), and keys that expire when their bucket is
    /// full again.
    #[tokio::test]
    async fn the_lua_gcra_decides_like_the_memory_gcra() {
        let Some(url) =
            test_redis_url("limits::redis::tests::the_lua_gcra_decides_like_the_memory_gcra")
        else {
            return;
        };
        let prefix = format!("callgate-test:{}:", ulid::Ulid::generate());
        // 2 s, not the 100 ms default: a busy machine must not turn a slow
        // answer into a refusal here (this compares decisions, not speed).
        let redis = Redis::connect(&url, &prefix, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(redis.is_up(), "Redis at {url} does not answer");
        // Intervals of a second or more: keys expire in Redis's real time
        // while this test moves its own clock, so a key must outlive the
        // real time between two steps for the comparison to hold.
        let specs = [
            (10, 10_000, 5),
            (3, 10_000, 4),
            (1, 60_000, 1),
            (1000, 1_000_000, 50),
            (7, 21_000, 20),
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move |below: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % below
        };
        let (mut allowed, mut refused) = (0, 0);
        for (case, (requests, per_ms, burst)) in specs.into_iter().enumerate() {
            let spec = RateSpec {
                requests,
                per: Duration::from_millis(per_ms),
                burst,
            };
            let clock = FakeRelativeClock::default();
            let memory: Keyed<u8, _> = Keyed::with_clock("p", spec, clock.clone());
            let key = redis.key("p", &case);
            // Any epoch: the script only compares times it is given.
            let mut now_us: u64 = 1_764_000_000_000_000;
            for step in 0..300 {
                let advance_ms = match random(4) {
                    0 => 0,
                    1 => random(5),
                    2 => random(per_ms / u64::from(requests) + 1),
                    _ => random(per_ms * 2),
                };
                clock.advance(Duration::from_millis(advance_ms));
                now_us += advance_ms * 1000;
                let expected = memory.inner.check_key(&0);
                let got = redis.decide(&key, &spec, Some(now_us)).await.unwrap();
                let at = format!("case {case} ({spec:?}), step {step}");
                match (expected, got) {
                    (Ok(snapshot), Decision::Allowed { remaining }) => {
                        assert_eq!(snapshot.remaining_burst_capacity(), remaining, "{at}");
                        allowed += 1;
                    }
                    (Err(not_until), Decision::Refused { retry_after }) => {
                        let wait = not_until.wait_time_from(clock.now());
                        let diff = wait.abs_diff(retry_after);
                        assert!(
                            diff <= Duration::from_micros(1),
                            "{at}: {wait:?} vs {retry_after:?}"
                        );
                        refused += 1;
                    }
                    (expected, got) => panic!("{at}: memory {expected:?}, Redis {got:?}"),
                }
            }
            // The key lives until its bucket is full again, no longer.
            let mut conn = ConnectionManager::clone(&redis.conn.load());
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let full_after = spec.replenish_interval().saturating_mul(burst).as_millis();
            assert!(
                pttl > 0 && u128::try_from(pttl).unwrap() <= full_after + 1,
                "{pttl} ms"
            );
        }
        assert!(
            allowed > 100 && refused > 100,
            "{allowed} allowed, {refused} refused"
        );
    }
}
