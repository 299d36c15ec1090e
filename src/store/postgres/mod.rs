//! PostgreSQL engine (`postgres://…`), through tokio-postgres and a
//! deadpool connection pool; several callgate instances may share one
//! database (and schema).
//!
//! Trigger jobs are group-committed by one writer task per instance on a
//! connection of its own (`writer.rs`); every other operation takes a
//! pooled connection and runs as one statement or one transaction, so the
//! runners of several instances work side by side: claims skip rows
//! another instance holds (`FOR UPDATE SKIP LOCKED`), line counts are
//! serialised per agent by an advisory transaction lock (`calls.rs`).
//!
//! Policy: a dead or unreachable server is `StoreError::Unavailable`
//! within bounded time, never a hang: connecting is bounded by
//! `connect_timeout`, waiting for a pooled connection and each statement
//! (server-side `statement_timeout`) by `busy_timeout`, and every
//! operation as a whole by both (a client-side timer, for a server that
//! stopped answering). Commits are durable: the store sets
//! `synchronous_commit = on` on its connections and refuses to start if
//! the server runs with `fsync` off. Migrations run at start under an
//! advisory lock (`schema.rs`).

mod alerts;
mod api_keys;
mod calls;
mod connect;
mod convert;
mod deliveries;
mod dnc;
mod jobs;
mod leader;
mod listen;
mod ops;
mod reads;
mod schema;
mod sessions;
mod shared;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::{
    ApiKeyRecord, BreakerAdmission, BreakerPolicy, BreakerRow, CallEventIn, CallFilter, CallRecord,
    CallStatus, Cancel, ClaimedDelivery, ClaimedJob, ConsoleSession, DeliveryAttempt,
    DeliveryFilter, DeliveryRecord, DeliveryStatus, DncEntry, EndpointSuccess, EnqueueOutcome,
    EventApplied, EventJobs, IdempotencyRecord, JobEvent, JobFilter, JobRecord, JobUpdate, NewCall,
    NewDelivery, NewJob, Replay, Reservation, Store, StoreError,
};
use super::{EndpointHealth, RefusalCount, Retry, StatsSeries, StatsWindow};
use crate::config::StorageConfig;
use crate::ids::{CallId, DeliveryId, JobId};
use writer::Writer;

/// Whether `url` is a PostgreSQL URL (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Parses a PostgreSQL URL (libpq style: `postgres://user:pw@host:port/db?
/// options=-csearch_path%3Dcallgate`); the message never echoes a password.
/// `sslmode=require` is refused: the engine connects without TLS for now,
/// and a URL that asks for it must not silently get a plain connection.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    let pg =
        tokio_postgres::Config::from_str(url).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(
            "sslmode=require: TLS to PostgreSQL is not supported yet (use a local or \
             tunnelled server with sslmode=disable or prefer)"
                .into(),
        );
    }
    Ok(pg)
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    writer: Writer,
    /// Bound on one whole operation.
    op_timeout: Duration,
    /// The connection settings (for the LISTEN session).
    pg: tokio_postgres::Config,
    connect_timeout: Duration,
    poll_only: bool,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Housekeeping leadership (a session of its own).
    leader: leader::Leader,
}

impl PgStore {
    /// Connects, checks durability, migrates, and starts the writer.
    pub async fn open(cfg: &StorageConfig) -> anyhow::Result<Self> {
        let pg = connect::session_config(cfg)?;
        connect::prepare_retrying(
            &pg,
            cfg.connect_timeout + cfg.busy_timeout,
            cfg.start_timeout,
        )
        .await
        .context("preparing the PostgreSQL schema")?;
        let pool = connect::pool_of(&pg, cfg, cfg.pool_size.max(1))?;
        let in_flight = cfg.write_connections.max(1);
        let writer_pool = connect::pool_of(&pg, cfg, in_flight)?;
        let op_timeout = cfg.connect_timeout + cfg.busy_timeout;
        let writer = Writer::spawn(
            writer_pool,
            cfg.max_pending_writes,
            cfg.max_batch,
            in_flight,
            op_timeout,
        );
        Ok(Self {
            pool,
            writer,
            op_timeout,
            connect_timeout: cfg.connect_timeout,
            poll_only: cfg.poll_only,
            listener: std::sync::Mutex::new(None),
            leader: leader::Leader::new(&pg, op_timeout, !cfg.poll_only),
            pg,
        })
    }

    /// Runs one operation within the store's time bound.
    async fn timed<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {:?}",
                self.op_timeout
            ))),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        Ok(self.pool.get().await?)
    }
}

impl Drop for PgStore {
    // A store dropped without `close` does not leave its LISTEN session
    // behind.
    fn drop(&mut self) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = listener {
            task.abort();
        }
    }
}

/// One transaction: `$body` runs with `$tx` bound to it, and commits when
/// it returns `Ok` (an error rolls it back).
macro_rules! in_tx {
    ($self:ident, |$tx:ident| $body:expr) => {
        $self
            .timed(async {
                let mut client = $self.client().await?;
                let $tx = client.transaction().await?;
                let value = $body;
                $tx.commit().await?;
                Ok(value)
            })
            .await
    };
}

/// One statement on a pooled connection.
macro_rules! on_conn {
    ($self:ident, |$c:ident| $body:expr) => {
        $self
            .timed(async {
                let $c = $self.client().await?;
                $body
            })
            .await
    };
}

#[async_trait]
impl Store for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        self.writer.enqueue(job).await
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        on_conn!(self, |c| reads::job(&c, id).await)
    }

    async fn jobs(
        &self,
        filter: JobFilter,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        on_conn!(self, |c| reads::jobs(&c, &filter, before.as_ref(), limit)
            .await)
    }

    async fn count_jobs(&self, filter: JobFilter) -> Result<u64, StoreError> {
        on_conn!(self, |c| reads::count_jobs(&c, &filter).await)
    }

    async fn idempotency(
        &self,
        principal: &str,
        trigger_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        on_conn!(self, |c| reads::idempotency(
            &c, principal, trigger_id, key, now_ms
        )
        .await)
    }

    async fn purge_idempotency(&self, now_ms: i64) -> Result<u64, StoreError> {
        on_conn!(self, |c| convert::execute(
            &c,
            "DELETE FROM idempotency_keys WHERE expires_at <= $1",
            &[&now_ms]
        )
        .await)
    }

    async fn check_writable(&self, now_ms: i64) -> Result<(), StoreError> {
        self.writer.heartbeat(now_ms).await
    }

    async fn close(&self) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = listener {
            task.abort();
        }
        self.leader.close().await;
        self.writer.close().await;
        self.pool.close();
    }

    async fn claim_jobs(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedJob>, StoreError> {
        let claim_id = super::new_claim_id(owner);
        on_conn!(self, |c| jobs::claim_jobs(
            &c,
            &claim_id,
            now_ms,
            lease_until_ms,
            limit
        )
        .await)
    }

    async fn renew_lease(
        &self,
        job_id: &JobId,
        claim_id: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        on_conn!(self, |c| jobs::renew_lease(&c, job_id, claim_id, until_ms)
            .await)
    }

    async fn finish_claim(
        &self,
        job_id: &JobId,
        claim_id: &str,
        update: JobUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        in_tx!(self, |tx| jobs::finish_claim(
            &tx, job_id, claim_id, &update, now_ms
        )
        .await?)
    }

    async fn release_leases(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
        on_conn!(self, |c| jobs::release_leases(&c, owner, now_ms).await)
    }

    async fn wake_jobs(&self, job_ids: Vec<JobId>, now_ms: i64) -> Result<(), StoreError> {
        on_conn!(self, |c| jobs::wake_jobs(&c, &job_ids, now_ms).await)
    }

    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> Result<(), StoreError> {
        in_tx!(self, |tx| jobs::insert_jobs(&tx, &jobs).await?)
    }

    async fn job_events(&self, job_id: &JobId) -> Result<Vec<JobEvent>, StoreError> {
        on_conn!(self, |c| reads::job_events(&c, job_id).await)
    }

    async fn cancel_job(
        &self,
        job_id: &JobId,
        reason: String,
        now_ms: i64,
    ) -> Result<Cancel, StoreError> {
        in_tx!(self, |tx| jobs::cancel_job(&tx, job_id, &reason, now_ms)
            .await?)
    }

    async fn retry_job(
        &self,
        job_id: &JobId,
        reason: String,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Result<Retry, StoreError> {
        in_tx!(self, |tx| ops::retry_job(
            &tx, job_id, &reason, &detail, now_ms
        )
        .await?)
    }

    async fn endpoint_health(
        &self,
        endpoints: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<EndpointHealth>, StoreError> {
        on_conn!(self, |c| ops::endpoint_health(&c, &endpoints, now_ms).await)
    }

    async fn stats(&self, window: StatsWindow) -> Result<StatsSeries, StoreError> {
        on_conn!(self, |c| ops::stats(&c, window).await)
    }

    async fn add_refusals(&self, counts: Vec<RefusalCount>) -> Result<(), StoreError> {
        on_conn!(self, |c| ops::add_refusals(&c, &counts).await)
    }

    async fn purge_refusals(&self, before_ms: i64) -> Result<u64, StoreError> {
        on_conn!(self, |c| ops::purge_refusals(&c, before_ms).await)
    }

    async fn reserve_call(
        &self,
        call: NewCall,
        max_active: u32,
    ) -> Result<Reservation, StoreError> {
        in_tx!(self, |tx| calls::reserve_call(&tx, &call, max_active)
            .await?)
    }

    async fn call_dialed(
        &self,
        call_id: &CallId,
        provider_call_id: Option<&str>,
        status: CallStatus,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| calls::call_dialed(
            &tx,
            call_id,
            provider_call_id,
            status,
            now_ms
        )
        .await?)
    }

    async fn redial_call(
        &self,
        call_id: &CallId,
        max_active: u32,
        now_ms: i64,
    ) -> Result<Reservation, StoreError> {
        in_tx!(self, |tx| calls::redial_call(
            &tx, call_id, max_active, now_ms
        )
        .await?)
    }

    async fn set_call_status(
        &self,
        call_id: &CallId,
        status: CallStatus,
        error: Option<String>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        in_tx!(self, |tx| calls::set_call_status(
            &tx,
            call_id,
            status,
            error.as_deref(),
            now_ms
        )
        .await?)
    }

    async fn call(&self, id: &CallId) -> Result<Option<CallRecord>, StoreError> {
        on_conn!(self, |c| calls::read_call(&c, id).await)
    }

    async fn calls_for_job(&self, job_id: &JobId) -> Result<Vec<CallRecord>, StoreError> {
        on_conn!(self, |c| reads::calls_for_job(&c, job_id).await)
    }

    async fn calls(
        &self,
        filter: CallFilter,
        before: Option<CallId>,
        limit: usize,
    ) -> Result<Vec<CallRecord>, StoreError> {
        on_conn!(self, |c| reads::calls(&c, &filter, before.as_ref(), limit)
            .await)
    }

    async fn stale_calls(&self, before_ms: i64) -> Result<Vec<CallRecord>, StoreError> {
        on_conn!(self, |c| reads::stale_calls(&c, before_ms).await)
    }

    async fn apply_call_event(
        &self,
        event: CallEventIn,
        on_final: EventJobs,
    ) -> Result<EventApplied, StoreError> {
        in_tx!(self, |tx| {
            let (applied, ended) = calls::apply_call_event(&tx, &event).await?;
            if let Some(call) = ended {
                jobs::wake_jobs(&tx, std::slice::from_ref(&call.job_id), event.now_ms).await?;
                let jobs = on_final(&call);
                jobs::insert_jobs(&tx, &jobs).await?;
            }
            applied
        })
    }

    async fn create_delivery(&self, delivery: NewDelivery) -> Result<DeliveryId, StoreError> {
        on_conn!(self, |c| deliveries::create(&c, &delivery).await)
    }

    async fn claim_deliveries(
        &self,
        endpoint: &str,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let claim_id = super::new_claim_id(owner);
        on_conn!(self, |c| deliveries::claim(
            &c,
            endpoint,
            &claim_id,
            now_ms,
            lease_until_ms,
            limit
        )
        .await)
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
        let claim_id = super::new_claim_id(owner);
        in_tx!(self, |tx| shared::claim_capped(
            &tx,
            endpoint,
            &claim_id,
            now_ms,
            lease_until_ms,
            limit,
            cap
        )
        .await?)
    }

    async fn take_rate_token(
        &self,
        key: &str,
        interval_ms: i64,
        burst: u32,
        now_ms: i64,
    ) -> Result<Result<(), i64>, StoreError> {
        in_tx!(self, |tx| shared::take_rate_token(
            &tx,
            key,
            interval_ms,
            burst,
            now_ms
        )
        .await?)
    }

    async fn breaker_admit(
        &self,
        endpoint: &str,
        now_ms: i64,
        probe_until_ms: i64,
    ) -> Result<BreakerAdmission, StoreError> {
        in_tx!(self, |tx| shared::breaker_admit(
            &tx,
            endpoint,
            now_ms,
            probe_until_ms
        )
        .await?)
    }

    async fn breaker_record(
        &self,
        endpoint: &str,
        ok: bool,
        policy: BreakerPolicy,
        now_ms: i64,
    ) -> Result<BreakerRow, StoreError> {
        in_tx!(self, |tx| shared::breaker_record(
            &tx, endpoint, ok, policy, now_ms
        )
        .await?)
    }

    async fn breaker_cancel_probe(&self, endpoint: &str) -> Result<(), StoreError> {
        on_conn!(self, |c| shared::breaker_cancel_probe(&c, endpoint).await)
    }

    async fn finish_delivery_attempt(
        &self,
        id: &DeliveryId,
        claim_id: &str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        in_tx!(self, |tx| deliveries::finish_attempt(
            &tx, id, claim_id, &attempt, status, now_ms
        )
        .await?)
    }

    async fn release_deliveries(
        &self,
        ids: Vec<DeliveryId>,
        claim_id: &str,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        on_conn!(self, |c| deliveries::release(&c, &ids, claim_id, due_ms)
            .await)
    }

    async fn delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        on_conn!(self, |c| deliveries::read(&c, id).await)
    }

    async fn delivery_attempts(&self, id: &DeliveryId) -> Result<Vec<DeliveryAttempt>, StoreError> {
        on_conn!(self, |c| deliveries::attempts(&c, id).await)
    }

    async fn deliveries(&self, filter: DeliveryFilter) -> Result<Vec<DeliveryRecord>, StoreError> {
        on_conn!(self, |c| deliveries::list(&c, &filter).await)
    }

    async fn replay_delivery(&self, id: &DeliveryId, now_ms: i64) -> Result<Replay, StoreError> {
        in_tx!(self, |tx| deliveries::replay(&tx, id, now_ms).await?)
    }

    async fn fail_unconfigured_deliveries(
        &self,
        configured: Vec<String>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        on_conn!(self, |c| deliveries::fail_unconfigured(
            &c,
            &configured,
            now_ms
        )
        .await)
    }

    async fn purge_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        // In bounded batches, each its own statement: few row locks at once.
        const BATCH: usize = 1000;
        let mut total = 0;
        loop {
            let n = on_conn!(self, |c| deliveries::purge(&c, before_ms, BATCH).await)?;
            total += n;
            if (n as usize) < BATCH {
                return Ok(total);
            }
        }
    }

    async fn add_do_not_call(
        &self,
        numbers: Vec<String>,
        added_by: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        on_conn!(self, |c| dnc::add(&c, &numbers, added_by, now_ms).await)
    }

    async fn remove_do_not_call(&self, number: &str) -> Result<bool, StoreError> {
        on_conn!(self, |c| dnc::remove(&c, number).await)
    }

    async fn do_not_call(&self, number: &str) -> Result<Option<DncEntry>, StoreError> {
        on_conn!(self, |c| dnc::get_entry(&c, number).await)
    }

    async fn list_do_not_call(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<DncEntry>, StoreError> {
        on_conn!(self, |c| dnc::list(&c, after.as_deref(), limit).await)
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> Result<bool, StoreError> {
        on_conn!(self, |c| api_keys::create(&c, &key).await)
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        on_conn!(self, |c| api_keys::list(&c).await)
    }

    async fn disable_api_key(
        &self,
        name: &str,
        now_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        on_conn!(self, |c| api_keys::disable(&c, name, now_ms).await)
    }

    async fn record_api_key_use(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        on_conn!(self, |c| api_keys::record_use(&c, &uses).await)
    }

    async fn claim_alert(
        &self,
        kind: &str,
        subject: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<bool, StoreError> {
        on_conn!(self, |c| alerts::claim(
            &c, kind, subject, now_ms, window_ms
        )
        .await)
    }

    async fn delivery_success(&self, since_ms: i64) -> Result<Vec<EndpointSuccess>, StoreError> {
        on_conn!(self, |c| alerts::success_since(&c, since_ms).await)
    }

    async fn create_console_session(&self, session: ConsoleSession) -> Result<(), StoreError> {
        on_conn!(self, |c| sessions::create(&c, &session).await)
    }

    async fn console_session(&self, id_hash: &str) -> Result<Option<ConsoleSession>, StoreError> {
        on_conn!(self, |c| sessions::get_session(&c, id_hash).await)
    }

    async fn touch_console_session(&self, id_hash: &str, now_ms: i64) -> Result<(), StoreError> {
        on_conn!(self, |c| sessions::touch(&c, id_hash, now_ms).await)
    }

    async fn delete_console_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        on_conn!(self, |c| sessions::delete(&c, id_hash).await)
    }

    async fn purge_console_sessions(
        &self,
        idle_before_ms: i64,
        created_before_ms: i64,
    ) -> Result<u64, StoreError> {
        on_conn!(self, |c| sessions::purge(
            &c,
            idle_before_ms,
            created_before_ms
        )
        .await)
    }

    async fn status_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        on_conn!(self, |c| reads::status_counts(&c).await)
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        self.leader.try_lead().await
    }

    fn is_leader(&self) -> bool {
        self.leader.is_leader()
    }

    fn notify_new_jobs(&self, wake: Arc<tokio::sync::Notify>) {
        if self.poll_only {
            return;
        }
        let task = tokio::spawn(listen::run(self.pg.clone(), wake, self.connect_timeout));
        let old = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }
}
