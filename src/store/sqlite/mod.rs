//! SQLite engine: one file, WAL, `synchronous=FULL`, through rusqlite.
//!
//! Every write goes through one writer thread (`writer.rs`): trigger jobs
//! are group-committed, and the runner's and the callbacks' writes (`jobs.rs`,
//! `calls.rs`, `deliveries.rs`) join the same batches, so there is never a second
//! writer waiting on the lock. Reads use a small pool of read-only
//! connections (`reads.rs`), off the async runtime.
//!
//! Policy: the settings that make a commit durable are set explicitly and
//! read back at start; the store refuses to open if they did not take.
//! Migrations run on the writer's connection before it starts.

mod alerts;
mod api_keys;
pub(crate) mod backup;
mod calls;
mod convert;
mod deliveries;
mod dnc;
mod jobs;
mod ops;
mod reads;
mod schema;
mod sessions;
mod shared;
mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::oneshot;

pub use writer::MAX_ROWS_PER_STATEMENT;

use super::{
    ApiKeyRecord, BreakerAdmission, BreakerPolicy, BreakerRow, CallEventIn, CallFilter, CallRecord,
    CallStatus, Cancel, ClaimedDelivery, ClaimedJob, ConsoleSession, DeliveryAttempt,
    DeliveryFilter, DeliveryRecord, DeliveryStatus, DncEntry, EndpointSuccess, EnqueueOutcome,
    EventApplied, EventJobs, GroupCommit, IdempotencyRecord, JobEvent, JobFilter, JobRecord,
    JobUpdate, NewCall, NewDelivery, NewJob, Replay, Reservation, Store, StoreError,
};
use super::{EndpointHealth, RefusalCount, Retry, StatsSeries, StatsWindow};
use crate::config::StorageConfig;
use crate::ids::{CallId, DeliveryId, JobId};
use reads::ReadPool;
use writer::{SqliteWriter, Task, task};

/// The SQLite store.
pub struct SqliteStore {
    reads: Arc<ReadPool>,
    commit: GroupCommit<Task>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, migrates it,
    /// verifies the durability settings and starts the writer.
    pub async fn open(path: &Path, cfg: &StorageConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
        }
        let (path, cfg) = (path.to_path_buf(), cfg.clone());
        tokio::task::spawn_blocking(move || {
            let mut writer = SqliteWriter::open(&path, &cfg)
                .with_context(|| format!("opening {}", path.display()))?;
            writer
                .migrate()
                .with_context(|| format!("migrating {}", path.display()))?;
            let reads = ReadPool::open(&path, &cfg)
                .with_context(|| format!("opening read connections to {}", path.display()))?;
            let commit = GroupCommit::spawn(writer, cfg.max_pending_writes, cfg.max_batch)
                .context("starting the writer thread")?;
            Ok(Self {
                reads: Arc::new(reads),
                commit,
            })
        })
        .await
        .context("opening the store")?
    }

    /// Runs `f` on the writer thread inside the next batch's transaction and
    /// returns its result once that transaction has committed.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.commit.submit(task(f, tx)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read-only connection, off the runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.reads.clone().run(f).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        self.commit.enqueue(job).await
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn| reads::job(conn, &id)).await
    }

    async fn jobs(
        &self,
        filter: JobFilter,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.read(move |conn| reads::jobs(conn, &filter, before.as_ref(), limit))
            .await
    }

    async fn count_jobs(&self, filter: JobFilter) -> Result<u64, StoreError> {
        self.read(move |conn| reads::count_jobs(conn, &filter))
            .await
    }

    async fn idempotency(
        &self,
        principal: &str,
        trigger_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let (principal, trigger_id, key) =
            (principal.to_owned(), trigger_id.to_owned(), key.to_owned());
        self.read(move |conn| reads::idempotency(conn, &principal, &trigger_id, &key, now_ms))
            .await
    }

    async fn purge_idempotency(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")?
                .execute([now_ms])?;
            Ok(n as u64)
        })
        .await
    }

    async fn check_writable(&self, now_ms: i64) -> Result<(), StoreError> {
        // try_submit: a full queue is exactly what readiness must report.
        let (tx, rx) = oneshot::channel();
        self.commit.try_submit(task(
            move |conn| {
                conn.prepare_cached(
                    "INSERT INTO heartbeat (id, at) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                )?
                .execute([now_ms])?;
                Ok(())
            },
            tx,
        ))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn close(&self) {
        self.commit.close().await;
        self.reads.close();
    }

    async fn claim_jobs(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let claim_id = super::new_claim_id(owner);
        self.write(move |conn| jobs::claim_jobs(conn, &claim_id, now_ms, lease_until_ms, limit))
            .await
    }

    async fn renew_lease(
        &self,
        job_id: &JobId,
        claim_id: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (job_id, claim_id) = (job_id.clone(), claim_id.to_owned());
        self.write(move |conn| jobs::renew_lease(conn, &job_id, &claim_id, until_ms))
            .await
    }

    async fn finish_claim(
        &self,
        job_id: &JobId,
        claim_id: &str,
        update: JobUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (job_id, claim_id) = (job_id.clone(), claim_id.to_owned());
        self.write(move |conn| jobs::finish_claim(conn, &job_id, &claim_id, &update, now_ms))
            .await
    }

    async fn release_leases(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| jobs::release_leases(conn, &owner, now_ms))
            .await
    }

    async fn wake_jobs(&self, job_ids: Vec<JobId>, now_ms: i64) -> Result<(), StoreError> {
        self.write(move |conn| jobs::wake_jobs(conn, &job_ids, now_ms))
            .await
    }

    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> Result<(), StoreError> {
        self.write(move |conn| jobs::insert_jobs(conn, &jobs)).await
    }

    async fn cancel_job(
        &self,
        job_id: &JobId,
        reason: String,
        now_ms: i64,
    ) -> Result<Cancel, StoreError> {
        let job_id = job_id.clone();
        self.write(move |conn| jobs::cancel_job(conn, &job_id, &reason, now_ms))
            .await
    }

    async fn retry_job(
        &self,
        job_id: &JobId,
        reason: String,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Result<Retry, StoreError> {
        let job_id = job_id.clone();
        self.write(move |conn| ops::retry_job(conn, &job_id, &reason, &detail, now_ms))
            .await
    }

    async fn endpoint_health(
        &self,
        endpoints: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<EndpointHealth>, StoreError> {
        self.read(move |conn| ops::endpoint_health(conn, &endpoints, now_ms))
            .await
    }

    async fn stats(&self, window: StatsWindow) -> Result<StatsSeries, StoreError> {
        self.read(move |conn| ops::stats(conn, window)).await
    }

    async fn add_refusals(&self, counts: Vec<RefusalCount>) -> Result<(), StoreError> {
        self.write(move |conn| ops::add_refusals(conn, &counts))
            .await
    }

    async fn purge_refusals(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| ops::purge_refusals(conn, before_ms))
            .await
    }

    async fn job_events(&self, job_id: &JobId) -> Result<Vec<JobEvent>, StoreError> {
        let job_id = job_id.clone();
        self.read(move |conn| reads::job_events(conn, &job_id))
            .await
    }

    async fn reserve_call(
        &self,
        call: NewCall,
        max_active: u32,
    ) -> Result<Reservation, StoreError> {
        self.write(move |conn| calls::reserve_call(conn, &call, max_active))
            .await
    }

    async fn call_dialed(
        &self,
        call_id: &CallId,
        provider_call_id: Option<&str>,
        status: CallStatus,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (call_id, provider_call_id) = (call_id.clone(), provider_call_id.map(str::to_owned));
        self.write(move |conn| {
            calls::call_dialed(conn, &call_id, provider_call_id.as_deref(), status, now_ms)
        })
        .await
    }

    async fn redial_call(
        &self,
        call_id: &CallId,
        max_active: u32,
        now_ms: i64,
    ) -> Result<Reservation, StoreError> {
        let call_id = call_id.clone();
        self.write(move |conn| calls::redial_call(conn, &call_id, max_active, now_ms))
            .await
    }

    async fn set_call_status(
        &self,
        call_id: &CallId,
        status: CallStatus,
        error: Option<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let call_id = call_id.clone();
        self.write(move |conn| {
            calls::set_call_status(conn, &call_id, status, error.as_deref(), now_ms)
        })
        .await
    }

    async fn call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn| calls::read_call(conn, &id)).await
    }

    async fn calls_for_job(&self, job_id: &JobId) -> Result<Vec<CallRecord>, StoreError> {
        let job_id = job_id.clone();
        self.read(move |conn| reads::calls_for_job(conn, &job_id))
            .await
    }

    async fn calls(
        &self,
        filter: CallFilter,
        before: Option<CallId>,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        self.read(move |conn| reads::calls(conn, &filter, before.as_ref(), limit))
            .await
    }

    async fn stale_calls(&self, before_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        self.read(move |conn| reads::stale_calls(conn, before_ms))
            .await
    }

    async fn apply_call_event(
        &self,
        event: CallEventIn,
        on_final: EventJobs,
    ) -> Result<EventApplied, StoreError> {
        self.write(move |conn| {
            let (applied, ended) = calls::apply_call_event(conn, &event)?;
            if let Some(call) = ended {
                jobs::wake_jobs(conn, std::slice::from_ref(&call.job_id), event.now_ms)?;
                let jobs = on_final(&call);
                jobs::insert_jobs(conn, &jobs)?;
            }
            Ok(applied)
        })
        .await
    }

    async fn add_do_not_call(
        &self,
        numbers: Vec<String>,
        added_by: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let added_by = added_by.to_owned();
        self.write(move |conn| dnc::add(conn, &numbers, &added_by, now_ms))
            .await
    }

    async fn remove_do_not_call(&self, number: &str) -> Result<bool, StoreError> {
        let number = number.to_owned();
        self.write(move |conn| dnc::remove(conn, &number)).await
    }

    async fn do_not_call(&self, number: &str) -> Result<Option<DncEntry>, StoreError> {
        let number = number.to_owned();
        self.read(move |conn| dnc::get(conn, &number)).await
    }

    async fn list_do_not_call(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<DncEntry>, StoreError> {
        self.read(move |conn| dnc::list(conn, after.as_deref(), limit))
            .await
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<bool, StoreError> {
        self.write(move |conn| api_keys::create(conn, &key)).await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(api_keys::list).await
    }

    async fn disable_api_key(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let name = name.to_owned();
        self.write(move |conn| api_keys::disable(conn, &name, now_ms))
            .await
    }

    async fn record_api_key_use(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.write(move |conn| api_keys::record_use(conn, &uses))
            .await
    }

    async fn claim_alert(
        &self,
        kind: &str,
        subject: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<bool, StoreError> {
        let (kind, subject) = (kind.to_owned(), subject.to_owned());
        self.write(move |conn| alerts::claim(conn, &kind, &subject, now_ms, window_ms))
            .await
    }

    async fn delivery_success(&self, since_ms: i64) -> Result<Vec<EndpointSuccess>, StoreError> {
        self.read(move |conn| alerts::success_since(conn, since_ms))
            .await
    }

    async fn create_console_session(&self, session: ConsoleSession) -> Result<(), StoreError> {
        self.write(move |conn| sessions::create(conn, &session))
            .await
    }

    async fn console_session(&self, id_hash: &str) -> Result<Option<ConsoleSession>, StoreError> {
        let id_hash = id_hash.to_owned();
        self.read(move |conn| sessions::get(conn, &id_hash)).await
    }

    async fn touch_console_session(&self, id_hash: &str, now_ms: i64) -> Result<(), StoreError> {
        let id_hash = id_hash.to_owned();
        self.write(move |conn| sessions::touch(conn, &id_hash, now_ms))
            .await
    }

    async fn delete_console_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let id_hash = id_hash.to_owned();
        self.write(move |conn| sessions::delete(conn, &id_hash))
            .await
    }

    async fn purge_console_sessions(
        &self,
        idle_before_ms: i64,
        created_before_ms: i64,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| sessions::purge(conn, idle_before_ms, created_before_ms))
            .await
    }

    async fn create_delivery(&self, delivery: NewDelivery) -> Result<DeliveryId, StoreError> {
        self.write(move |conn| deliveries::create(conn, &delivery))
            .await
    }

    async fn claim_deliveries(
        &self,
        endpoint: &str,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let (endpoint, claim_id) = (endpoint.to_owned(), super::new_claim_id(owner));
        self.write(move |conn| {
            deliveries::claim(conn, &endpoint, &claim_id, now_ms, lease_until_ms, limit)
        })
        .await
    }

    async fn claim_deliveries_capped(
        &self,
        endpoint: &str,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
        cap: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let (endpoint, claim_id) = (endpoint.to_owned(), super::new_claim_id(owner));
        self.write(move |conn| {
            shared::claim_capped(
                conn,
                &endpoint,
                &claim_id,
                now_ms,
                lease_until_ms,
                limit,
                cap,
            )
        })
        .await
    }

    async fn take_rate_token(
        &self,
        key: &str,
        interval_ms: i64,
        burst: u32,
        now_ms: i64,
    ) -> Result<Result<(), i64>, StoreError> {
        let key = key.to_owned();
        self.write(move |conn| shared::take_rate_token(conn, &key, interval_ms, burst, now_ms))
            .await
    }

    async fn breaker_admit(
        &self,
        endpoint: &str,
        now_ms: i64,
        probe_until_ms: i64,
    ) -> Result<BreakerAdmission, StoreError> {
        let endpoint = endpoint.to_owned();
        // The common case (closed) is a read, not a trip through the writer.
        let key = endpoint.clone();
        if self
            .read(move |conn| shared::breaker_closed(conn, &key))
            .await?
        {
            return Ok(BreakerAdmission::Closed);
        }
        self.write(move |conn| shared::breaker_admit(conn, &endpoint, now_ms, probe_until_ms))
            .await
    }

    async fn breaker_record(
        &self,
        endpoint: &str,
        ok: bool,
        policy: BreakerPolicy,
        now_ms: i64,
    ) -> Result<BreakerRow, StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| shared::breaker_record(conn, &endpoint, ok, policy, now_ms))
            .await
    }

    async fn breaker_cancel_probe(&self, endpoint: &str) -> Result<(), StoreError> {
        let endpoint = endpoint.to_owned();
        self.write(move |conn| shared::breaker_cancel_probe(conn, &endpoint))
            .await
    }

    async fn finish_delivery_attempt(
        &self,
        id: &DeliveryId,
        claim_id: &str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (id, claim_id) = (id.clone(), claim_id.to_owned());
        self.write(move |conn| {
            deliveries::finish_attempt(conn, &id, &claim_id, &attempt, status, now_ms)
        })
        .await
    }

    async fn release_deliveries(
        &self,
        ids: Vec<DeliveryId>,
        claim_id: &str,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let claim_id = claim_id.to_owned();
        self.write(move |conn| deliveries::release(conn, &ids, &claim_id, due_ms))
            .await
    }

    async fn delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        let id = id.clone();
        self.read(move |conn| deliveries::read(conn, &id)).await
    }

    async fn delivery_attempts(&self, id: &DeliveryId) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let id = id.clone();
        self.read(move |conn| deliveries::attempts(conn, &id)).await
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.read(move |conn| deliveries::list(conn, &filter)).await
    }

    async fn replay_delivery(&self, id: &DeliveryId, now_ms: i64) -> Result<Replay, StoreError> {
        let id = id.clone();
        self.write(move |conn| deliveries::replay(conn, &id, now_ms))
            .await
    }

    async fn fail_unconfigured_deliveries(
        &self,
        configured: Vec<String>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| deliveries::fail_unconfigured(conn, &configured, now_ms))
            .await
    }

    async fn purge_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        // In bounded batches, each its own write: trigger jobs keep flowing
        // between them.
        const BATCH: usize = 1000;
        let mut total = 0;
        loop {
            let n = self
                .write(move |conn| deliveries::purge(conn, before_ms, BATCH))
                .await?;
            total += n;
            if (n as usize) < BATCH {
                return Ok(total);
            }
        }
    }

    async fn status_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        self.read(reads::status_counts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{JobStatus, NewJob};

    #[tokio::test]
    async fn the_database_is_in_wal_mode_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("callgate.db");
        let store = SqliteStore::open(&path, &StorageConfig::default())
            .await
            .unwrap();
        let job = NewJob {
            id: JobId::new(1_000),
            trigger_id: None,
            principal: "key:test".into(),
            action_json: "{}".into(),
            input_json: "{}".into(),
            request_id: None,
            created_at_ms: 1_000,
            run_at_ms: 1_000,
            status: JobStatus::Queued,
            idempotency: None,
            dedupe_key: None,
            dedupe: None,
        };
        assert_eq!(store.enqueue(job).await.unwrap(), EnqueueOutcome::Inserted);
        // Another reader of the file sees the journal mode the store set.
        let conn =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        store.close().await;
    }
}
