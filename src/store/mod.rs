//! Durable storage: one `Store` interface, chosen once at start from the
//! storage URL. SQLite (`sqlite:`) is the embedded default.
//!
//! Policy: `enqueue` returns only after the job is committed to disk
//! (fsync'd); concurrent enqueues share one transaction (group commit, see
//! `group_commit.rs`), and when the writer is behind by more than the
//! configured bound, enqueue fails at once with `Backpressure` instead of
//! queueing without limit. Errors are classified by kind, never by message.

mod group_commit;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use group_commit::{BatchWriter, GroupCommit};

use crate::config::StorageConfig;
use crate::ids::JobId;
use crate::trigger::TriggerId;

/// A job to insert, already serialised by the request handler (so the
/// writer only binds values).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub trigger_id: TriggerId,
    pub principal: Arc<str>,
    /// JSON: what the job will run.
    pub action_json: String,
    /// JSON: the normalised input.
    pub input_json: String,
    pub request_id: Option<String>,
    pub created_at_ms: i64,
    pub idempotency: Option<NewIdempotency>,
}

/// The Idempotency-Key record stored with a job, in the same transaction.
#[derive(Debug, Clone)]
pub struct NewIdempotency {
    pub key: String,
    pub request_hash: String,
    pub response_status: u16,
    pub response_body: String,
    pub expires_at_ms: i64,
}

/// What happened to one enqueued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Committed.
    Inserted,
    /// Another request committed the same live Idempotency-Key first; no job
    /// was inserted. Look the key up and replay.
    IdempotencyConflict,
}

/// A stored job.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub trigger_id: String,
    pub principal: String,
    pub status: String,
    pub action: serde_json::Value,
    pub input: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub attempts: i64,
    pub request_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A stored Idempotency-Key and the first answer given for it.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub job_id: String,
    pub response_status: u16,
    pub response_body: String,
}

/// Storage failures, by kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The writer is behind by more than `max_pending_writes`.
    #[error("the durable writer is behind; try again shortly")]
    Backpressure,
    /// The store is shutting down or its writer has stopped.
    #[error("the store is closed")]
    Closed,
    /// The database could not be reached or written (message for logs).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back (message for logs).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// The storage interface every engine implements.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short engine name for logs and `/readyz`.
    fn engine(&self) -> &'static str;

    /// Durably inserts a job (and its idempotency record); returns once
    /// committed.
    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError>;

    async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError>;

    /// The live (unexpired at `now_ms`) record for an Idempotency-Key.
    async fn idempotency(
        &self,
        principal: &str,
        trigger_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Deletes expired idempotency records; returns how many.
    async fn purge_idempotency(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Proves the store is writable by committing a heartbeat through the
    /// same writer that commits jobs.
    async fn check_writable(&self, now_ms: i64) -> Result<(), StoreError>;

    /// Flushes pending writes and stops the writer.
    async fn close(&self);
}

/// Opens the store named by `cfg.url` (relative SQLite paths are inside
/// `data_dir`).
pub async fn open(cfg: &StorageConfig, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = cfg.url.strip_prefix("sqlite:") {
        let path = path.trim_start_matches("//");
        let path = if Path::new(path).is_absolute() {
            Path::new(path).to_path_buf()
        } else {
            data_dir.join(path)
        };
        let store = sqlite::SqliteStore::open(&path, cfg).await?;
        return Ok(Arc::new(store));
    }
    anyhow::bail!(
        "storage.url `{}`: unsupported engine (expected `sqlite:<path>`)",
        cfg.url
    )
}

/// Checks the storage URL's form (for `callgate check`).
pub fn check_url(url: &str) -> Result<(), String> {
    match url.strip_prefix("sqlite:") {
        Some(p) if !p.trim_start_matches("//").is_empty() => Ok(()),
        _ => Err(format!(
            "`{url}`: unsupported storage URL (expected `sqlite:<path>`)"
        )),
    }
}
