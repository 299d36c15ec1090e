//! Durable storage: one `Store` interface, chosen once at start from the
//! storage URL. SQLite (`sqlite:`) is the embedded default; PostgreSQL
//! (`postgres://`) lets several instances share one database.
//!
//! Policy: `enqueue` returns only after the job is committed to disk
//! (fsync'd); concurrent enqueues share one transaction (group commit, see
//! `group_commit.rs`), and when the writer is behind by more than the
//! configured bound, enqueue fails at once with `Backpressure` instead of
//! queueing without limit. Errors are classified by kind, never by message.

mod api_keys;
mod backup;
mod group_commit;
mod ops;
pub mod postgres;
mod session;
mod shared;
pub mod sqlite;
mod status;
mod types;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::StorageConfig;
use crate::ids::{CallId, DeliveryId, JobId};
pub use api_keys::ApiKeyRecord;
pub use backup::{BackupError, BackupReport, backup};
pub use group_commit::{BatchWriter, GroupCommit};
pub use ops::*;
pub use session::ConsoleSession;
pub use shared::{BreakerAdmission, BreakerPolicy, BreakerRow, gcra};
pub use status::{CallStatus, DeliveryStatus, JobStatus};
pub use types::*;

/// Decides which jobs a call's final status starts (post-call
/// automations). The engine calls it inside the transaction that applies
/// the event, so the jobs are committed with it or not at all; it must not
/// block or touch the store.
pub type EventJobs = Box<dyn FnOnce(&CallRecord) -> Vec<NewJob> + Send>;

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

/// The storage interface every engine implements.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short engine name for logs and `/readyz`.
    fn engine(&self) -> &'static str;

    /// Durably inserts a job (and its idempotency record); returns once
    /// committed.
    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError>;

    async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError>;

    /// Jobs matching `filter`, newest first, at most `limit` (at least 1);
    /// `before` is the cursor: only jobs whose id sorts before it (ids sort
    /// by creation time).
    async fn jobs(
        &self,
        filter: JobFilter,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError>;

    /// How many jobs match `filter`.
    async fn count_jobs(&self, filter: JobFilter) -> Result<u64, StoreError>;

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

    // --- the runner ---

    /// Claims up to `limit` due jobs for `owner` until `lease_until_ms`: jobs
    /// queued, scheduled or waiting whose time has come, and running jobs
    /// whose lease has expired (their worker died or stalled). Each claim
    /// gets a fresh `ClaimedJob::claim_id` (`store::new_claim_id`): every
    /// later write on the job is fenced on it, so a stalled attempt can
    /// never finish a job that was claimed again, even by the same owner.
    async fn claim_jobs(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, StoreError>;

    /// Extends a claim; `false` (nothing written) when `claim_id` is no
    /// longer the job's current claim.
    async fn renew_lease(
        &self,
        job_id: &JobId,
        claim_id: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Leaves a claimed job in its next state and logs the change; `false`
    /// (nothing written) when `claim_id` is no longer the job's current
    /// claim (its lease expired and it was claimed again).
    async fn finish_claim(
        &self,
        job_id: &JobId,
        claim_id: &str,
        update: JobUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Gives up every lease `owner` holds, whatever the claim (graceful
    /// shutdown past its grace): the jobs are due to any claimer at once.
    async fn release_leases(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError>;

    /// Makes a waiting job due now (its call ended, or a line freed up).
    async fn wake_jobs(&self, job_ids: Vec<JobId>, now_ms: i64) -> Result<(), StoreError>;

    /// Inserts jobs that are not trigger requests (automation starts);
    /// duplicates by `dedupe_key` are skipped.
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> Result<(), StoreError>;

    async fn job_events(&self, job_id: &JobId) -> Result<Vec<JobEvent>, StoreError>;

    /// Cancels a queued, scheduled or waiting job, logging `reason`: one
    /// conditional update on its status, so it and a claim cannot both
    /// win (a job claimed first is `NotCancellable(Running)`; one cancelled
    /// first is never claimed).
    async fn cancel_job(
        &self,
        job_id: &JobId,
        reason: String,
        now_ms: i64,
    ) -> Result<Cancel, StoreError>;

    /// Moves a `failed` or `needs_attention` job back to `queued`, due at
    /// `now_ms`, for a fresh attempt: one conditional update on its status
    /// (two concurrent retries: one `Retried`, the other `NotRetryable`),
    /// which also resets its attempts and starts a new round of its
    /// progress (`CALL_ROUND_STRIDE`: the retried step dials its own call;
    /// earlier calls stay), and logs a `queued` event with `reason` and
    /// `detail`.
    async fn retry_job(
        &self,
        job_id: &JobId,
        reason: String,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Result<Retry, StoreError>;

    // --- calls ---

    /// Atomically: the step's existing call, or `Busy` when the agent has
    /// `max_active` calls in progress, or a new call row in `dialing`.
    async fn reserve_call(&self, call: NewCall, max_active: u32)
    -> Result<Reservation, StoreError>;

    /// Records the provider's answer to a dial (its call id and status;
    /// never moves the call backwards).
    async fn call_dialed(
        &self,
        call_id: &CallId,
        provider_call_id: Option<&str>,
        status: CallStatus,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Takes a line again for a call whose dial the provider refused, and
    /// moves it back to `dialing` for another dial: `Created(id)` when it
    /// holds a line now, `Busy` (nothing changed) when all `max_active` of
    /// its agent's lines are in use. The line count is checked in the same
    /// transaction, as in `reserve_call`.
    async fn redial_call(
        &self,
        call_id: &CallId,
        max_active: u32,
        now_ms: i64,
    ) -> Result<Reservation, StoreError>;

    /// Sets a call's status outright (a failed dial, `unknown` after an
    /// ambiguous crash), with an error. Use `redial_call` to dial again.
    async fn set_call_status(
        &self,
        call_id: &CallId,
        status: CallStatus,
        error: Option<String>,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    async fn call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError>;

    async fn calls_for_job(&self, job_id: &JobId) -> Result<Vec<CallRecord>, StoreError>;

    /// Calls matching `filter`, newest first, at most `limit` (at least
    /// 1); `before` is the cursor: only calls whose id sorts before it (ids
    /// sort by creation time).
    async fn calls(
        &self,
        filter: CallFilter,
        before: Option<CallId>,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError>;

    /// Calls not final and not updated since `before_ms` (to reconcile).
    async fn stale_calls(&self, before_ms: i64) -> Result<Vec<CallRecord>, StoreError>;

    /// Applies a provider event idempotently and monotonically; when the call
    /// reaches a final status, in the same transaction, wakes the job that
    /// placed it, wakes jobs waiting for the agent's lines and inserts the
    /// jobs `on_final` returns.
    async fn apply_call_event(
        &self,
        event: CallEventIn,
        on_final: EventJobs,
    ) -> Result<EventApplied, StoreError>;

    // The do-not-call list as stored (the API's entries; the seed file
    // stays in the catalog). The dial path reads it at every dial, so an
    // entry applies at once to every instance sharing the store.

    /// Adds each of `numbers` (E.164) not on the list yet, as added by
    /// `added_by` at `now_ms`; returns how many were added. A number already
    /// on it keeps its first entry; a number twice in `numbers` counts once.
    async fn add_do_not_call(
        &self,
        numbers: Vec<String>,
        added_by: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Removes a number; `false` when it was not on the list.
    async fn remove_do_not_call(&self, number: &str) -> Result<bool, StoreError>;

    /// The entry of a number, if it is on the list.
    async fn do_not_call(&self, number: &str) -> Result<Option<DncEntry>, StoreError>;

    /// Entries in number order (bytewise), only those after `after` (the
    /// cursor), at most `limit` (at least 1).
    async fn list_do_not_call(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<DncEntry>, StoreError>;

    // API keys made through the API (`keys.toml` keys stay in the
    // catalog). Every instance serves them from a snapshot it refreshes
    // with `api_keys` (`auth::db_keys`).

    /// Stores a new key; `false` (nothing written) when a key of that name
    /// exists (enabled or not).
    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<bool, StoreError>;

    /// Every stored key, disabled ones too, by name.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Disables a key (disabling it again keeps the first time); the key
    /// after it, `None` when there is no such key.
    async fn disable_api_key(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Records keys' last uses, batched (one name once): each key's
    /// `last_used_at` moves forward to its time, never back.
    async fn record_api_key_use(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError>;

    // Alerts (`webhooks::alerts`).

    /// Claims the alert (`kind`, `subject`) for sending at `now_ms`:
    /// `true` when it was not claimed within the last `window_ms` by any
    /// process sharing the store (atomic; claims older than the window
    /// are forgotten).
    async fn claim_alert(
        &self,
        kind: &str,
        subject: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Per endpoint, the delivery attempts started since `since_ms` and
    /// how many got a 2xx, by endpoint name.
    async fn delivery_success(&self, since_ms: i64) -> Result<Vec<EndpointSuccess>, StoreError>;

    // Console sessions (`console::session`): read on the read connections,
    // written through the writer like every other write.

    /// Stores a new session.
    async fn create_console_session(&self, session: ConsoleSession) -> Result<(), StoreError>;

    /// The session whose token hashes to `id_hash`, expired or not (the
    /// caller judges expiry by its own clock and settings).
    async fn console_session(&self, id_hash: &str) -> Result<Option<ConsoleSession>, StoreError>;

    /// Sets a session's `last_seen_at` to `now_ms`, never backwards.
    async fn touch_console_session(&self, id_hash: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Deletes a session; `false` when there was none.
    async fn delete_console_session(&self, id_hash: &str) -> Result<bool, StoreError>;

    /// Deletes the sessions last seen before `idle_before_ms` or created
    /// before `created_before_ms`; returns how many.
    async fn purge_console_sessions(
        &self,
        idle_before_ms: i64,
        created_before_ms: i64,
    ) -> Result<u64, StoreError>;

    // Outbound webhook deliveries (the delivery log).

    /// Creates a delivery due now; returns its id (the existing one's when
    /// its `dedupe_key` was seen before).
    async fn create_delivery(&self, delivery: NewDelivery) -> Result<DeliveryId, StoreError>;

    /// Claims due deliveries of one endpoint for `owner` under a lease, with
    /// a fresh claim id (as `claim_jobs`).
    async fn claim_deliveries(
        &self,
        endpoint: &str,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Logs an attempt and sets the delivery's new status (and next attempt
    /// time) in one transaction, if `claim_id` is still the delivery's
    /// current claim; `false` (nothing written) otherwise.
    async fn finish_delivery_attempt(
        &self,
        id: &DeliveryId,
        claim_id: &str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Hands claimed deliveries back untried, due at `due_ms`: those of
    /// `ids` whose current claim is still `claim_id`.
    async fn release_deliveries(
        &self,
        ids: Vec<DeliveryId>,
        claim_id: &str,
        due_ms: i64,
    ) -> Result<(), StoreError>;

    async fn delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError>;

    async fn delivery_attempts(&self, id: &DeliveryId) -> Result<Vec<DeliveryAttempt>, StoreError>;

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Queues a failed or dead delivery again (same `webhook-id`).
    async fn replay_delivery(&self, id: &DeliveryId, now_ms: i64) -> Result<Replay, StoreError>;

    /// Fails the pending deliveries whose endpoint is not in `configured`
    /// (renamed or removed from `endpoints.toml`), and those whose attempt
    /// was interrupted (lease expired): visible, replayable once the
    /// endpoint is back, instead of waiting for ever.
    async fn fail_unconfigured_deliveries(
        &self,
        configured: Vec<String>,
        now_ms: i64,
    ) -> Result<u64, StoreError>;

    /// Deletes finished deliveries last updated before `before_ms`.
    async fn purge_deliveries(&self, before_ms: i64) -> Result<u64, StoreError>;

    // The operations API's reads (on read connections) and the refusal
    // counts (`ops.rs`).

    /// Delivery health of each of `endpoints` at `now_ms`: attempts,
    /// successes and latency p50/p95 over the last hour and day, the last
    /// failed attempt, pending and dead counts, the shared breaker's row.
    async fn endpoint_health(
        &self,
        endpoints: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<EndpointHealth>, StoreError>;

    /// Counts in `window` (times in `[since, until)`), by bucket: jobs
    /// created by triggers, refused trigger requests, calls created by
    /// outcome, delivery attempts by endpoint.
    async fn stats(&self, window: StatsWindow) -> Result<StatsSeries, StoreError>;

    /// Adds refused-trigger counts to the stored per-minute counts (`+=`,
    /// so instances sharing a database add up), in one statement.
    async fn add_refusals(&self, counts: Vec<RefusalCount>) -> Result<(), StoreError>;

    /// Deletes the refusal counts of minutes before `before_ms`.
    async fn purge_refusals(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Rows by status of jobs, calls and deliveries: (table, status, count).
    async fn status_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// Housekeeping leadership: tries to become (or checks it still is)
    /// the one process, of those sharing the database, that runs the
    /// housekeeping (retention purges, stale-call checks, idempotency
    /// expiry, the status counts); `Ok(true)` when it leads. Callers ask
    /// every few seconds and before each pass read `is_leader`. On an error
    /// the process does not lead. The default always leads: an engine only
    /// one process writes has nobody to share the work with.
    async fn try_lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// The answer of the last `try_lead` (no I/O; `false` before the first
    /// on a shared engine).
    fn is_leader(&self) -> bool {
        true
    }

    // State shared by every instance on the database (`shared.rs`).

    /// Takes one token of the rate `key` (a GCRA: one every `interval_ms`,
    /// up to `burst` at once), atomically for every process sharing the
    /// store: `Ok(Err(wait_ms))` when the budget is spent.
    async fn take_rate_token(
        &self,
        key: &str,
        interval_ms: i64,
        burst: u32,
        now_ms: i64,
    ) -> Result<Result<(), i64>, StoreError>;

    /// What `endpoint`'s shared breaker lets through now; takes the
    /// half-open probe (leased until `probe_until_ms`) when it is due.
    async fn breaker_admit(
        &self,
        endpoint: &str,
        now_ms: i64,
        probe_until_ms: i64,
    ) -> Result<BreakerAdmission, StoreError>;

    /// Records an attempt's result on `endpoint`'s shared breaker; returns
    /// the row after it (for the gauge and logs).
    async fn breaker_record(
        &self,
        endpoint: &str,
        ok: bool,
        policy: BreakerPolicy,
        now_ms: i64,
    ) -> Result<BreakerRow, StoreError>;

    /// Gives the half-open probe back untried (nothing was due).
    async fn breaker_cancel_probe(&self, endpoint: &str) -> Result<(), StoreError>;

    /// `claim_deliveries` within the endpoint's concurrency cap across
    /// every instance: at most `cap` minus the endpoint's unexpired leases
    /// (counted and claimed under one lock per endpoint).
    async fn claim_deliveries_capped(
        &self,
        endpoint: &str,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
        cap: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// From now until `close`, calls `wake.notify_one()` when any process
    /// sharing the database commits new jobs (PostgreSQL: LISTEN/NOTIFY),
    /// so this process's runner claims them without waiting for its next
    /// poll (which stays the backstop). The default does nothing: an
    /// engine only one process writes has nobody else to hear from.
    fn notify_new_jobs(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = wake;
    }
}

/// Opens the store named by `cfg.url` (relative SQLite paths are inside
/// `data_dir`; a PostgreSQL database is migrated at start).
pub async fn open(cfg: &StorageConfig, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = sqlite_path(&cfg.url, data_dir) {
        let store = sqlite::SqliteStore::open(&path, cfg).await?;
        return Ok(Arc::new(store));
    }
    if postgres::is_postgres_url(&cfg.url) {
        let store = postgres::PgStore::open(cfg).await?;
        return Ok(Arc::new(store));
    }
    // The URL is not repeated: it may hold a password.
    anyhow::bail!("storage.url: unsupported engine (expected `sqlite:<path>` or `postgres://…`)")
}

/// The file a `sqlite:<path>` URL names (relative paths are inside
/// `data_dir`); `None` for other URLs.
fn sqlite_path(url: &str, data_dir: &Path) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    Some(if Path::new(path).is_absolute() {
        Path::new(path).to_path_buf()
    } else {
        data_dir.join(path)
    })
}

/// Checks the storage URL's form (for `callgate check`).
pub fn check_url(url: &str) -> Result<(), String> {
    if postgres::is_postgres_url(url) {
        // The parser's message names the problem; the URL itself is not
        // repeated (it may hold a password).
        return postgres::parse_url(url).map(|_| ());
    }
    match url.strip_prefix("sqlite:") {
        Some(p) if !p.trim_start_matches("//").is_empty() => Ok(()),
        _ => Err(
            "unsupported storage URL (expected `sqlite:<path>` or `postgres://…`; the URL is not \
             repeated here: it may hold a password)"
                .to_owned(),
        ),
    }
}

/// A fresh id for one claim by `owner` (a runner's or deliverer's process
/// id): `<ULID>/<owner>`, stored as the row's `lease_owner`. Every write a
/// claimer makes afterwards is fenced on this exact id, so an attempt that
/// outlived its lease cannot write over the claim that replaced it, even
/// when the same process made both. The ULID has a fixed width (26
/// characters), so the owner is exactly `substr(lease_owner, 28)` in SQL:
/// `release_leases` matches on that, safe for any owner string (no prefix
/// or pattern match that one owner's name could extend into another's).
pub(crate) fn new_claim_id(owner: &str) -> String {
    format!("{}/{owner}", ulid::Ulid::generate())
}
