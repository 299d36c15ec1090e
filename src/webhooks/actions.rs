//! Mid-call actions: one upstream request under a hard deadline (DNS,
//! connect, TLS, request and response all inside it), its answer mapped to
//! a compact result by JSON pointers, an optional TTL cache with
//! single-flight loads, and the configured fallback when the upstream is
//! slow or failing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::client::{ACTION_BODY_LIMIT, EndpointClient, Outgoing};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::outbound::MidCallAction;
use crate::template::render_text;

/// One action's results by cache key.
pub type Cache = moka::future::Cache<String, Arc<Value>>;

/// Results by cache key, per action.
pub struct Caches(BTreeMap<String, Cache>);

impl Caches {
    pub fn build(config: &Catalog) -> Self {
        let mut out = BTreeMap::new();
        for (name, a) in &config.actions {
            if let Some(c) = &a.config.cache {
                out.insert(
                    name.clone(),
                    // `max_entries` counts results of up to 4 KiB; a larger
                    // one weighs one entry per 4 KiB, so memory stays
                    // bounded at about max_entries x 4 KiB.
                    moka::future::Cache::builder()
                        .max_capacity(c.max_entries)
                        .weigher(|_k: &String, v: &Arc<Value>| {
                            let size = v.to_string().len();
                            u32::try_from(1 + size / 4096).unwrap_or(u32::MAX)
                        })
                        .time_to_live(c.ttl)
                        .build(),
                );
            }
        }
        Self(out)
    }

    /// The cache of `action`, if it has one.
    pub fn get(&self, action: &str) -> Option<&Cache> {
        self.0.get(action)
    }
}

/// What one action's request goes through: its endpoint's client (SSRF
/// guard, breaker), its cache, the clock.
#[derive(Clone)]
pub struct Upstream {
    pub client: Arc<EndpointClient>,
    pub cache: Option<Cache>,
    pub clock: Arc<dyn Clock>,
}

/// The action's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub result: Value,
    /// The fallback stood in for the upstream.
    pub degraded: bool,
    pub cached: bool,
    /// Why the upstream was not used (with `degraded`).
    pub error: Option<String>,
}

/// The upstream failed or was too slow, and there is no fallback.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Runs `action` for `ctx` (`args`, `call`, `agent`, `action`).
///
/// The answer comes within the action's deadline, always. A cached
/// action's upstream request runs on as a task of its own past the
/// deadline (up to the endpoint's timeout), so a slow upstream still fills
/// the cache for the next lookup; an uncached one is dropped at the
/// deadline.
pub async fn invoke(
    upstream: Upstream,
    action: Arc<MidCallAction>,
    ctx: Value,
) -> Result<Answer, Unavailable> {
    let started = Instant::now();
    let deadline = action.config.deadline;
    let cache = upstream.cache.clone();
    // Per agent; and a key that renders empty or `null` (a withheld caller
    // number) is not cached: it would hand one caller's answer to others.
    let key = match (&action.cache_key, &cache) {
        (Some(t), Some(_)) => render_text(t, &ctx)
            .ok()
            .filter(|k| !k.is_empty() && k != "null")
            .map(|k| {
                format!(
                    "{}\u{1f}{k}",
                    ctx["agent"]["id"].as_str().unwrap_or_default()
                )
            }),
        _ => None,
    };
    let fetched = match (cache, key) {
        (Some(cache), Some(key)) => {
            let budget = deadline.max(action.endpoint.timeout);
            let (upstream2, action2, ctx2) = (upstream.clone(), action.clone(), ctx.clone());
            let load = tokio::spawn(async move {
                let loaded = std::sync::atomic::AtomicBool::new(false);
                let r = cache
                    .try_get_with(key, async {
                        loaded.store(true, std::sync::atomic::Ordering::Relaxed);
                        fetch(&upstream2, &action2, &ctx2, budget)
                            .await
                            .map(Arc::new)
                    })
                    .await;
                (r, loaded.load(std::sync::atomic::Ordering::Relaxed))
            });
            match tokio::time::timeout(deadline, load).await {
                Ok(Ok((Ok(v), loaded_here))) => Ok(((*v).clone(), !loaded_here)),
                Ok(Ok((Err(e), _))) => Err((*e).clone()),
                Ok(Err(e)) => Err(format!("lookup task failed: {e}")),
                Err(_) => Err(timeout_message(deadline)),
            }
        }
        _ => {
            match tokio::time::timeout(deadline, fetch(&upstream, &action, &ctx, deadline)).await {
                Ok(r) => r.map(|v| (v, false)),
                Err(_) => Err(timeout_message(deadline)),
            }
        }
    };
    let (answer, outcome) = match fetched {
        Ok((result, cached)) => (
            Ok(Answer {
                result,
                degraded: false,
                cached,
                error: None,
            }),
            if cached { "cached" } else { "ok" },
        ),
        Err(error) => match &action.fallback {
            Some(f) => {
                tracing::warn!(action = %action.name, %error, "mid-call action degraded to its fallback");
                (
                    Ok(Answer {
                        result: f.clone(),
                        degraded: true,
                        cached: false,
                        error: Some(error),
                    }),
                    "fallback",
                )
            }
            None => {
                tracing::warn!(action = %action.name, %error, "mid-call action failed (no fallback)");
                (Err(Unavailable(error)), "error")
            }
        },
    };
    metrics::histogram!("callgate_action_duration_seconds", "action" => action.name.clone(), "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    answer
}

fn timeout_message(deadline: Duration) -> String {
    format!(
        "the upstream did not answer within the {} ms deadline",
        deadline.as_millis()
    )
}

/// One upstream request; the mapped result or why not.
async fn fetch(
    upstream: &Upstream,
    action: &MidCallAction,
    ctx: &Value,
    deadline: Duration,
) -> Result<Value, String> {
    let client = &upstream.client;
    let mut url = action.endpoint.url.clone();
    if let Some(p) = &action.path {
        let path = render_text(p, &path_safe(ctx)).map_err(|e| format!("path: {e}"))?;
        let joined = format!(
            "{}{}",
            url.as_str().trim_end_matches('/'),
            if path.starts_with('/') || path.starts_with('?') {
                path
            } else {
                format!("/{path}")
            }
        );
        url = url::Url::parse(&joined).map_err(|e| format!("path: `{joined}`: {e}"))?;
    }
    let body = match &action.body {
        Some(t) => Some(t.render(ctx).map_err(|e| format!("body: {e}"))?.to_string()),
        None => None,
    };
    let mut headers = Vec::new();
    for (k, t) in &action.endpoint.headers {
        headers.push((
            k.clone(),
            render_text(t, ctx).map_err(|e| format!("header {k}: {e}"))?,
        ));
    }
    let method = reqwest::Method::from_bytes(action.config.method.to_ascii_uppercase().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let now_ms = upstream.clock.now_ms();
    let msg_id = crate::ids::MsgId::new(now_ms).into_string();
    // The endpoint's breaker (shared with its deliveries): while it is open
    // the action answers at once (fallback) instead of waiting out the
    // deadline on an upstream known to be down.
    if client.breaker_allow() == super::breaker::Allowance::None {
        return Err(format!(
            "endpoint `{}` is paused by its circuit breaker after repeated failures",
            action.endpoint.name
        ));
    }
    let mut settle = BreakerSettle {
        client,
        settled: false,
    };
    let out = client
        .exchange(
            Outgoing {
                method: &method,
                url: &url,
                headers: &headers,
                body: body.as_deref(),
                msg_id: Some(&msg_id),
                now_ms,
            },
            deadline,
            ACTION_BODY_LIMIT,
        )
        .await;
    settle.settled = true;
    if out.refused {
        client.breaker_cancel_probe();
    } else {
        client.breaker_record(!out.is_retryable(), Instant::now());
    }
    if let Some(e) = out.error {
        return Err(e);
    }
    let status = out.status.unwrap_or(0);
    if !(200..300).contains(&status) {
        return Err(format!("the upstream answered {status}"));
    }
    if !out.body_complete {
        return Err(format!(
            "the upstream's answer was cut short (over {} KiB, or not finished within the deadline)",
            ACTION_BODY_LIMIT / 1024
        ));
    }
    let answer: Value = if out.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&out.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.body).into_owned()))
    };
    Ok(map_result(&action.config.result, answer))
}

/// Counts an upstream request dropped at the deadline as a failure for the
/// breaker (and so settles a probe it may have been).
struct BreakerSettle<'a> {
    client: &'a EndpointClient,
    settled: bool,
}

impl Drop for BreakerSettle<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.client.breaker_record(false, Instant::now());
        }
    }
}

/// The context with every string percent-encoded, for rendering a URL
/// path: a value can fill a segment or a query value, never add `/`, `?`,
/// `#` or `..` of its own.
fn path_safe(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(path_safe).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), path_safe(v))).collect())
        }
        other => other.clone(),
    }
}

/// Picks the configured fields out of the upstream's answer (all of it
/// when none are configured; a missing pointer gives `null`).
pub fn map_result(pointers: &BTreeMap<String, String>, answer: Value) -> Value {
    if pointers.is_empty() {
        return answer;
    }
    let mut out = Map::new();
    for (name, ptr) in pointers {
        let v = if ptr.is_empty() {
            answer.clone()
        } else {
            answer.pointer(ptr).cloned().unwrap_or(Value::Null)
        };
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// The template context of an action call.
pub fn context(action: &str, agent: &str, call: &Value, args: &Value) -> Value {
    json!({"action": action, "agent": {"id": agent}, "call": call, "args": args})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_values_cannot_walk_the_path() {
        let ctx = json!({"args": {"id": "../../admin?x=1#y", "n": 5, "phone": "+15550121234"}});
        let safe = path_safe(&ctx);
        assert_eq!(safe["args"]["id"], "%2E%2E%2F%2E%2E%2Fadmin%3Fx%3D1%23y");
        assert_eq!(safe["args"]["n"], 5);
        assert_eq!(safe["args"]["phone"], "%2B15550121234");
    }

    #[test]
    fn results_are_picked_by_pointer() {
        let answer = json!({"customer": {"name": "Ada", "tier": "gold"}, "noise": [1, 2]});
        let ptrs = BTreeMap::from([
            ("name".to_owned(), "/customer/name".to_owned()),
            ("tier".to_owned(), "/customer/tier".to_owned()),
            ("missing".to_owned(), "/nope".to_owned()),
        ]);
        assert_eq!(
            map_result(&ptrs, answer.clone()),
            json!({"name": "Ada", "tier": "gold", "missing": null})
        );
        assert_eq!(map_result(&BTreeMap::new(), answer.clone()), answer);
    }
}
