//! `GET /v1/stats` (`metrics:read`): time series for the charts, over
//! `[since, until)` (RFC 3339; default the 60 minutes up to now; `since`
//! is rounded down to the minute) in buckets of `bucket` (`1m`, `5m`, `1h`,
//! `1d`, …: whole minutes, hours or days; default `1m`):
//! trigger requests accepted (jobs created, by trigger) and refused (by
//! the problem type's slug), calls by outcome (else status), and delivery
//! attempts per endpoint (succeeded, failed, mean latency).
//!
//! Policy: every series has one value per bucket (zeros filled in). At
//! most `MAX_BUCKETS` buckets: more is a 422, as is a `bucket` that does
//! not parse; an unparseable time or `since` not before `until` is a 400.
//! Counts come from the store's read side; refusals are flushed from
//! memory every few seconds (`http::refusals`), so the last seconds' may
//! not show yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Principal, Scope};
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::error::{ApiError, Violation};
use crate::http::extract::{ApiQuery, query_time};
use crate::store::{BucketCount, StatsSeries, StatsWindow};

/// Most buckets one request may ask for.
pub const MAX_BUCKETS: i64 = 1440;
const MINUTE_MS: i64 = 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    since: Option<String>,
    until: Option<String>,
    bucket: Option<String>,
}

pub async fn get_stats(
    State(app): State<AppState>,
    Extension(principal): Extension<Arc<Principal>>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<Value>, ApiError> {
    if !principal.scopes.has(&Scope::MetricsRead) {
        return Err(ApiError::missing_scope(
            vec![Scope::MetricsRead],
            "the stats need the `metrics:read` scope",
        ));
    }
    let window = window(&q, app.clock.now_ms())?;
    let series = app.store.stats(window).await?;
    Ok(Json(stats_json(
        window,
        q.bucket.as_deref().unwrap_or("1m"),
        series,
    )))
}

/// The window asked for, checked.
pub fn window(q: &StatsQuery, now_ms: i64) -> Result<StatsWindow, ApiError> {
    let invalid = |detail: String| ApiError::InvalidValue {
        errors: vec![Violation::new("/bucket", detail.clone())],
        detail,
    };
    let bucket = q.bucket.as_deref().unwrap_or("1m");
    let bucket_ms = parse_bucket(bucket).ok_or_else(|| {
        invalid(format!(
            "`bucket` must be a whole number of minutes, hours or days such as `1m`, `5m`, `1h` \
             (got `{bucket}`)"
        ))
    })?;
    let until_ms = query_time("until", q.until.as_deref())?.unwrap_or(now_ms);
    // By default the 60 minutes up to `until` (the last one partly).
    let last_hour = (until_ms + MINUTE_MS - 1).div_euclid(MINUTE_MS) * MINUTE_MS - 3_600_000;
    let since_ms = query_time("since", q.since.as_deref())?.unwrap_or(last_hour);
    let since_ms = since_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    if since_ms >= until_ms {
        return Err(ApiError::bad_request("`since` must be before `until`"));
    }
    let buckets = (until_ms - since_ms + bucket_ms - 1) / bucket_ms;
    if buckets > MAX_BUCKETS {
        return Err(invalid(format!(
            "{buckets} buckets of `{bucket}` between `since` and `until`; at most {MAX_BUCKETS} \
             (choose a larger bucket or a shorter window)"
        )));
    }
    Ok(StatsWindow {
        since_ms,
        until_ms,
        bucket_ms,
    })
}

/// `<n>m`, `<n>h` or `<n>d` (n ≥ 1) in ms.
fn parse_bucket(s: &str) -> Option<i64> {
    let unit = match s.chars().last()? {
        'm' => MINUTE_MS,
        'h' => 60 * MINUTE_MS,
        'd' => 24 * 60 * MINUTE_MS,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    (n >= 1).then_some(n * unit)
}

/// The series with one value per bucket.
pub fn stats_json(w: StatsWindow, bucket: &str, s: StatsSeries) -> Value {
    let n = ((w.until_ms - w.since_ms + w.bucket_ms - 1) / w.bucket_ms) as usize;
    let starts: Vec<String> = (0..n)
        .map(|i| rfc3339(w.since_ms + i as i64 * w.bucket_ms))
        .collect();
    let by_key = |rows: &[BucketCount]| {
        let mut out: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for r in rows.iter().filter(|r| (0..n as i64).contains(&r.bucket)) {
            out.entry(&r.key).or_insert_with(|| vec![0; n])[r.bucket as usize] += r.count;
        }
        json!(out)
    };
    let mut accepted = vec![0; n];
    for r in s
        .accepted
        .iter()
        .filter(|r| (0..n as i64).contains(&r.bucket))
    {
        accepted[r.bucket as usize] += r.count;
    }
    let mut deliveries: BTreeMap<&str, Value> = BTreeMap::new();
    for d in s
        .deliveries
        .iter()
        .filter(|d| (0..n as i64).contains(&d.bucket))
    {
        let e = deliveries.entry(&d.endpoint).or_insert_with(|| {
            json!({"succeeded": vec![0; n], "failed": vec![0; n], "mean_latency_ms": vec![Value::Null; n]})
        });
        let i = d.bucket as usize;
        e["succeeded"][i] = json!(d.succeeded);
        e["failed"][i] = json!(d.failed);
        e["mean_latency_ms"][i] = json!(d.mean_latency_ms);
    }
    json!({
        "since": rfc3339(w.since_ms),
        "until": rfc3339(w.until_ms),
        "bucket": bucket,
        "bucket_seconds": w.bucket_ms / 1000,
        "buckets": starts,
        "triggers": {
            "accepted": accepted,
            "accepted_by_trigger": by_key(&s.accepted),
            "refused": by_key(&s.refused),
        },
        "calls": by_key(&s.calls),
        "deliveries": deliveries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_whole_minutes_hours_or_days() {
        assert_eq!(parse_bucket("1m"), Some(60_000));
        assert_eq!(parse_bucket("5m"), Some(300_000));
        assert_eq!(parse_bucket("1h"), Some(3_600_000));
        assert_eq!(parse_bucket("2d"), Some(172_800_000));
        for bad in [
            "", "m", "0m", "1s", "1.5h", "-1m", "1 m", "1M", "9999999m", "１m",
        ] {
            assert_eq!(parse_bucket(bad), None, "{bad}");
        }
    }
}
