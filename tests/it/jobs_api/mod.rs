//! The operations API for jobs over HTTPS: `GET /v1/jobs` (`list.rs`:
//! filters, pages, who sees what, every bad parameter) and
//! `POST /v1/jobs/{job_id}/cancel` (`cancel.rs`: with the real runner and
//! the simulator's dial log).

mod cancel;
mod list;
pub mod retry;

use serde_json::Value;

use crate::support::TestApp;

const T0: i64 = 1_800_000_000_000;

pub async fn accept(app: &TestApp, key: &str, trigger: &str, body: &Value) -> String {
    let r = app.trigger(app.key(key), trigger, body).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_owned())
        .collect()
}
