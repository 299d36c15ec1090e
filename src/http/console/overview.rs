//! The overview at `/console`: the last hour in 1-minute buckets from
//! `GET /v1/stats`' core (`metrics:read`; without it the charts are left
//! out with a note), the endpoints whose breaker is not closed
//! (`GET /v1/endpoints`' core, `deliveries:read`) and the jobs that need
//! attention (`GET /v1/jobs`' core, linking to the filtered list).

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::chart::{self, PALETTE, Series};
use super::render::{api_json, api_query, page};
use super::session::Session;
use crate::auth::Scope;
use crate::clock::rfc3339;
use crate::http::AppState;
use crate::http::extract::ApiQuery;

const MINUTE_MS: i64 = 60_000;

/// How many jobs needing attention the overview lists.
const ATTENTION_SHOWN: &str = "20";

pub async fn overview(State(app): State<AppState>, session: Session) -> Result<Response, Response> {
    let charts = if session.may(&Scope::MetricsRead) {
        // The 60 whole minutes ending with the current one, so that this
        // minute is the last bucket, in full (what came in at this very
        // millisecond included).
        let end = (app.clock.now_ms().div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
        let qs = form_urlencoded::Serializer::new(String::new())
            .append_pair("since", &rfc3339(end - 60 * MINUTE_MS))
            .append_pair("until", &rfc3339(end))
            .append_pair("bucket", "1m")
            .finish();
        let q = api_query(&session, Some(&qs))?.0;
        let answer = crate::http::stats::get_stats(
            State(app.clone()),
            Extension(session.principal.clone()),
            ApiQuery(q),
        )
        .await;
        charts(&api_json(&session, answer).await?)
    } else {
        Value::Null
    };
    let breakers = if session.may(&Scope::DeliveriesRead) {
        let names = app.config.endpoints.keys().cloned().collect();
        let all = crate::http::endpoints::endpoints_json(&app, names)
            .await
            .map_err(|e| super::render::api_error_page(&session, e))?;
        let open: Vec<Value> = all
            .into_iter()
            .filter(|e| e["breaker"]["state"] != "closed")
            .collect();
        json!(open)
    } else {
        Value::Null
    };
    let qs = format!("status=needs_attention&limit={ATTENTION_SHOWN}");
    let q = api_query(&session, Some(&qs))?.0;
    let answer = crate::http::jobs::list_jobs(
        State(app.clone()),
        Extension(session.principal.clone()),
        ApiQuery(q),
    )
    .await;
    let attention = api_json(&session, answer).await?;
    Ok(page(
        Some(&session),
        "overview.html",
        json!({
            "title": "Overview",
            "charts": charts,
            "breakers": breakers,
            "attention": attention["jobs"],
            "attention_more": !attention["next_cursor"].is_null(),
        }),
    ))
}

/// The overview's charts from `/v1/stats`' answer: each an SVG and a
/// legend table (per series: its colour, the hour's total, the last
/// minute's value).
fn charts(stats: &Value) -> Value {
    let labels: Vec<String> = stats["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            b.as_str()
                .unwrap_or_default()
                .get(11..16)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let mut triggers = vec![Series::counts(
        "accepted",
        &ints(&stats["triggers"]["accepted"]),
    )];
    triggers.extend(by_key(&stats["triggers"]["refused"], "refused: "));
    let calls = by_key(&stats["calls"], "");
    let mut success = Vec::new();
    let mut latency = Vec::new();
    for (endpoint, d) in stats["deliveries"].as_object().into_iter().flatten() {
        let ok = ints(&d["succeeded"]);
        let failed = ints(&d["failed"]);
        let rate = ok.iter().zip(&failed).map(|(s, f)| {
            (s + f > 0).then(|| (*s as f64 * 1000.0 / (s + f) as f64).round() / 10.0)
        });
        success.push(Series {
            name: endpoint.clone(),
            values: rate.collect(),
        });
        let mean = d["mean_latency_ms"].as_array().into_iter().flatten();
        latency.push(Series {
            name: endpoint.clone(),
            values: mean.map(|v| v.as_f64().map(f64::round)).collect(),
        });
    }
    let chart = |id: &str, heading: &str, svg: String, legend: Vec<Value>, what: &str| json!({"id": id, "heading": heading, "svg": svg, "legend": legend, "what": what});
    json!([
        chart(
            "triggers",
            "Triggers per minute",
            chart::stacked_bars(
                "chart-triggers",
                "Triggers per minute, accepted and refused by reason",
                &labels,
                &triggers,
            ),
            legend(&triggers, true),
            "Total",
        ),
        chart(
            "calls",
            "Calls by outcome",
            chart::stacked_bars(
                "chart-calls",
                "Calls per minute by outcome",
                &labels,
                &calls
            ),
            legend(&calls, true),
            "Total",
        ),
        chart(
            "success",
            "Delivery success rate (%)",
            chart::lines(
                "chart-success",
                "Delivery success rate per endpoint",
                &labels,
                &success,
                Some(100.0),
                "%",
            ),
            legend(&success, false),
            "Mean",
        ),
        chart(
            "latency",
            "Mean delivery latency (ms)",
            chart::lines(
                "chart-latency",
                "Mean delivery latency per endpoint",
                &labels,
                &latency,
                None,
                " ms",
            ),
            legend(&latency, false),
            "Mean",
        ),
    ])
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|n| n.as_i64().unwrap_or(0))
        .collect()
}

/// One count series per key of a `{key: [counts]}` object.
fn by_key(v: &Value, prefix: &str) -> Vec<Series> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, counts)| Series::counts(&format!("{prefix}{k}"), &ints(counts)))
        .collect()
}

/// A legend row per series: `total` sums counts; for rates and latencies
/// (`sum` false) it is the mean of the minutes with data.
fn legend(series: &[Series], sum: bool) -> Vec<Value> {
    series
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let present: Vec<f64> = s.values.iter().flatten().copied().collect();
            let total = match (sum, present.len()) {
                (true, _) => Some(present.iter().sum::<f64>()),
                (false, 0) => None,
                (false, n) => Some((present.iter().sum::<f64>() / n as f64 * 10.0).round() / 10.0),
            };
            json!({
                "name": s.name,
                "colour": PALETTE[k % PALETTE.len()],
                "total": total.map(number),
                "last": s.values.last().copied().flatten().map(number),
            })
        })
        .collect()
}

/// A whole number without its `.0`; others as they are.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}
