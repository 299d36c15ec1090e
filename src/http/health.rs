//! `GET /healthz` (the process answers) and `GET /readyz` (the store commits
//! a heartbeat through the job writer within 2 s; 503 otherwise).
//!
//! Policy: the answer names the storage engine and says whether this
//! instance is the housekeeping leader (`Store::is_leader`; always with
//! SQLite). A 503 says why by its slug:
//! `overloaded` (the writer is behind: the database answers, but not fast
//! enough), `storage-unavailable` (the database cannot be reached or
//! written: PostgreSQL down or unreachable, a disk that refuses writes).
//! With the Redis limits backend it also says whether Redis answers; an
//! unreachable Redis leaves the instance ready (limits fail open to its
//! local share).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::http::AppState;
use crate::http::error::ApiError;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = app.clock.now_ms();
    match tokio::time::timeout(Duration::from_secs(2), app.store.check_writable(now)).await {
        Ok(Ok(())) => {
            let limits = match app.limiters.redis() {
                None => json!({"backend": "memory"}),
                Some(redis) => {
                    json!({"backend": "redis", "redis_reachable": redis.reachable().await})
                }
            };
            Ok(Json(
                json!({"status": "ready", "storage": app.store.engine(), "storage_reachable": true, "leader": app.store.is_leader(), "limits": limits}),
            ))
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::StorageUnavailable(
            "heartbeat did not commit within 2 s".into(),
        )),
    }
}
