//! Housekeeping leadership: of the instances sharing one schema, the one
//! holding a session advisory lock (`pg_try_advisory_lock`, keyed by the
//! schema) on a connection of its own runs the housekeeping (retention
//! purges, stale-call checks, idempotency expiry, the status counts).
//!
//! Policy: the lock lives exactly as long as that session. The session is
//! not pooled (a pool would hand the lock's connection to other work and
//! recycle it); when it is lost (the server restarted, the connection was
//! cut or terminated, a check did not answer within the store's bound)
//! leadership is lost with it, and the server frees the lock when it sees
//! the session end, so another instance's next attempt takes it. Callers
//! ask again every few seconds (`Store::try_lead`). For the moments around
//! a hand-over two instances may both believe they lead (the old leader
//! learns of its loss at its next check): everything gated by leadership
//! is idempotent, so that only costs a duplicate pass, never wrong data.
//!
//! With `storage.poll_only` (a pooler in transaction mode in front, so no
//! session of one's own: a session lock would stay on whichever server
//! connection the pooler picked, and be found "held" by other clients
//! sharing it) there is no election: every instance leads, as every
//! instance ran the housekeeping before leadership existed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::schema::LOCK_LEADER;
use crate::store::StoreError;

/// The leadership session and what it last found.
pub(super) struct Leader {
    pg: tokio_postgres::Config,
    /// Bound on one attempt (connecting and the statement).
    timeout: Duration,
    session: tokio::sync::Mutex<Option<Session>>,
    leading: AtomicBool,
    closed: AtomicBool,
    /// `false` with `storage.poll_only`: always the leader.
    elect: bool,
}

struct Session {
    client: Client,
    connection: tokio::task::JoinHandle<()>,
    /// This session holds the lock.
    holds: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Ends the session at once (and so frees the lock server-side).
        self.connection.abort();
    }
}

impl Leader {
    pub(super) fn new(pg: &tokio_postgres::Config, timeout: Duration, elect: bool) -> Self {
        let mut pg = pg.clone();
        // Named, so an operator sees which session holds leadership
        // (`pg_stat_activity`).
        let name = format!("{}-leader", pg.get_application_name().unwrap_or("callgate"));
        pg.application_name(&name);
        Self {
            pg,
            timeout,
            session: tokio::sync::Mutex::new(None),
            leading: AtomicBool::new(!elect),
            closed: AtomicBool::new(false),
            elect,
        }
    }

    /// The answer of the last attempt.
    pub(super) fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Takes the lock if free, or checks the session holding it is alive.
    pub(super) async fn try_lead(&self) -> Result<bool, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        if !self.elect {
            return Ok(true);
        }
        let mut slot = self.session.lock().await;
        let result = match tokio::time::timeout(self.timeout, self.attempt(&mut slot)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the leadership session did not answer within {:?}",
                self.timeout
            ))),
        };
        if result.is_err() {
            // Whatever state the session is in, it is not trusted with the
            // lock any more; the next attempt starts a new one.
            *slot = None;
        }
        self.set(*result.as_ref().unwrap_or(&false), result.as_ref().err());
        result
    }

    async fn attempt(&self, slot: &mut Option<Session>) -> Result<bool, StoreError> {
        if slot.as_ref().is_some_and(|s| s.client.is_closed()) {
            *slot = None;
        }
        let session = match slot {
            Some(session) => session,
            None => {
                let (client, connection) = self.pg.connect(NoTls).await?;
                let connection = tokio::spawn(async move {
                    let _ = connection.await;
                });
                self.bound_session(&client).await;
                slot.insert(Session {
                    client,
                    connection,
                    holds: false,
                })
            }
        };
        if session.holds {
            // The lock is the session's: alive session, still the leader.
            session.client.simple_query("SELECT 1").await?;
            return Ok(true);
        }
        let row = session
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
                &[&LOCK_LEADER],
            )
            .await?;
        session.holds = row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(format!("pg_try_advisory_lock: {e}")))?;
        Ok(session.holds)
    }

    /// A leader whose machine vanished (no FIN, no RST reaches the server)
    /// must not keep the lock for as long as TCP takes to notice (hours by
    /// default): the server ends the session itself once it has been idle
    /// for `idle` (a live leader checks in every few seconds), and probes
    /// the socket sooner than its default. Best effort: a server older
    /// than PostgreSQL 14 has no `idle_session_timeout`, and keepalive
    /// settings are ignored where the platform has none.
    async fn bound_session(&self, client: &Client) {
        let idle = (self.timeout * 2).max(Duration::from_secs(10)).as_millis();
        for set in [
            format!("SET idle_session_timeout = {idle}"),
            "SET tcp_keepalives_idle = 10".to_owned(),
            "SET tcp_keepalives_interval = 5".to_owned(),
            "SET tcp_keepalives_count = 3".to_owned(),
        ] {
            if let Err(e) = client.batch_execute(&set).await {
                tracing::debug!(error = %e, statement = set, "leadership session setting refused");
            }
        }
    }

    fn set(&self, leading: bool, error: Option<&StoreError>) {
        let was = self.leading.swap(leading, Ordering::Relaxed);
        match (was, leading) {
            (false, true) => tracing::info!("housekeeping leadership gained"),
            (true, false) => tracing::info!(
                error = error.map(ToString::to_string),
                "housekeeping leadership lost"
            ),
            _ => {}
        }
    }

    /// Ends the session (another instance may lead from now on).
    pub(super) async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.session.lock().await.take();
        self.set(false, None);
    }
}
