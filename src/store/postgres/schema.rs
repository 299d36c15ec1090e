//! The PostgreSQL schema and its versioned migrations (`callgate_migrations`).
//!
//! Policy: migrations run at start under a session advisory lock keyed by
//! the schema they apply to, so several instances starting at once apply
//! each version exactly once (the others wait, then find it applied). Each
//! version is its own transaction. Types mirror the SQLite engine: ids and
//! statuses as text, times as Unix milliseconds (BIGINT), JSON as text
//! (stored verbatim: nothing queries inside it, and the runner is handed
//! exactly the text the request handler wrote).

use tokio_postgres::Client;

/// `pg_advisory_lock`'s first key: callgate's locks (the second key is a
/// hash of what is locked).
pub(super) const LOCK_MIGRATIONS: i32 = 0x6367_0001;
/// First key of the per-agent line lock (`pg_advisory_xact_lock`).
pub(super) const LOCK_AGENT: i32 = 0x6367_0002;
/// First key of the housekeeping leader's session lock (`leader.rs`).
pub(super) const LOCK_LEADER: i32 = 0x6367_0003;
/// First key of the per-endpoint delivery claim lock
/// (`pg_advisory_xact_lock`, the concurrency cap across instances).
pub(super) const LOCK_ENDPOINT: i32 = 0x6367_0004;
/// The NOTIFY channel of a schema's new jobs (migration 2's trigger).
pub(super) const JOBS_CHANNEL_PREFIX: &str = "callgate_jobs_";

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "jobs, idempotency keys, job log, calls, call events, deliveries",
        r#"
    CREATE TABLE jobs (
        id TEXT COLLATE "C" PRIMARY KEY,
        trigger_id TEXT NOT NULL,
        principal TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        action TEXT NOT NULL,
        input TEXT NOT NULL,
        state TEXT,
        result TEXT,
        error TEXT,
        attempts BIGINT NOT NULL DEFAULT 0,
        request_id TEXT,
        idempotency_key TEXT,
        dedupe_key TEXT,
        lease_owner TEXT,
        lease_expires_at BIGINT,
        wait_agent TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        run_at BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX jobs_dedupe ON jobs (dedupe_key);
    CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('queued', 'scheduled', 'waiting');
    CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
    CREATE INDEX jobs_line_waiters ON jobs (wait_agent, created_at) WHERE status = 'waiting';
    CREATE INDEX jobs_status ON jobs (status);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE TABLE idempotency_keys (
        principal TEXT NOT NULL,
        trigger_id TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        job_id TEXT NOT NULL,
        response_status BIGINT NOT NULL,
        response_body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (principal, trigger_id, idem_key)
    );
    CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);
    CREATE TABLE heartbeat (id BIGINT PRIMARY KEY, at BIGINT NOT NULL);
    -- seq: one sequence for every job's log; a job's events are written
    -- under its row lock, so they take increasing values in order.
    CREATE TABLE job_events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        attempt BIGINT,
        detail TEXT
    );
    CREATE INDEX job_events_job ON job_events (job_id, seq);
    CREATE TABLE calls (
        id TEXT COLLATE "C" PRIMARY KEY,
        job_id TEXT NOT NULL,
        step BIGINT NOT NULL,
        agent_id TEXT NOT NULL,
        to_number TEXT NOT NULL,
        from_number TEXT NOT NULL,
        provider TEXT NOT NULL,
        provider_call_id TEXT,
        status TEXT NOT NULL,
        outcome TEXT,
        duration_seconds BIGINT,
        custom TEXT NOT NULL,
        variables TEXT NOT NULL,
        origin TEXT NOT NULL,
        transcript TEXT,
        summary TEXT,
        recording_url TEXT,
        error TEXT,
        dial_attempts BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        dial_requested_at BIGINT,
        answered_at BIGINT,
        ended_at BIGINT,
        UNIQUE (job_id, step)
    );
    CREATE INDEX calls_agent_status ON calls (agent_id, status);
    CREATE INDEX calls_active ON calls (updated_at)
        WHERE status IN ('queued', 'dialing', 'ringing', 'in_progress');
    CREATE TABLE call_events (
        call_id TEXT NOT NULL,
        event_key TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        status TEXT,
        applied BOOLEAN NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (call_id, event_key)
    );
    CREATE TABLE deliveries (
        id TEXT COLLATE "C" PRIMARY KEY,
        msg_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        event TEXT NOT NULL,
        job_id TEXT,
        call_id TEXT,
        status TEXT NOT NULL,
        headers TEXT NOT NULL,
        body TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        budget_start BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        lease_owner TEXT,
        lease_expires_at BIGINT,
        last_status_code BIGINT,
        last_error TEXT,
        dedupe_key TEXT UNIQUE,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (endpoint, next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_lease ON deliveries (endpoint, lease_expires_at) WHERE status = 'sending';
    CREATE INDEX deliveries_job ON deliveries (job_id);
    CREATE INDEX deliveries_call ON deliveries (call_id);
    CREATE INDEX deliveries_created ON deliveries (created_at);
    CREATE INDEX deliveries_status ON deliveries (status);
    CREATE INDEX deliveries_finished ON deliveries (updated_at)
        WHERE status IN ('succeeded', 'failed', 'dead');
    CREATE TABLE delivery_attempts (
        delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        attempt BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        request_headers TEXT NOT NULL,
        request_body TEXT NOT NULL,
        response_status BIGINT,
        response_body TEXT,
        latency_ms BIGINT NOT NULL,
        error TEXT,
        next_attempt_at BIGINT,
        PRIMARY KEY (delivery_id, attempt)
    );
    "#,
    ),
    (
        2,
        "NOTIFY callgate_jobs_<schema> when jobs are inserted",
        r#"
    -- One notification per statement that inserted rows (a batch of jobs is
    -- one statement), on a channel per schema; listeners wake their runner.
    CREATE FUNCTION callgate_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM inserted_rows) THEN
            PERFORM pg_notify('callgate_jobs_' || TG_TABLE_SCHEMA, '');
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs
        REFERENCING NEW TABLE AS inserted_rows
        FOR EACH STATEMENT EXECUTE FUNCTION callgate_jobs_inserted();
    "#,
    ),
    (
        3,
        "rate tokens and endpoint breakers shared by every instance",
        r#"
    -- tat: a GCRA's theoretical arrival time (ms); NULL until first used.
    CREATE TABLE rate_tokens (key TEXT PRIMARY KEY, tat BIGINT);
    CREATE TABLE endpoint_breakers (
        endpoint TEXT PRIMARY KEY,
        failures BIGINT NOT NULL DEFAULT 0,
        open_until BIGINT,
        cooldown_ms BIGINT NOT NULL DEFAULT 0,
        probe_until BIGINT
    );
    "#,
    ),
    (
        4,
        "the do-not-call list as stored through the API; calls by number",
        r#"
    -- COLLATE "C": listed in byte order, as on SQLite (the cursor is a number).
    CREATE TABLE do_not_call (
        number TEXT COLLATE "C" PRIMARY KEY,
        added_at BIGINT NOT NULL,
        added_by TEXT NOT NULL
    );
    -- GET /v1/calls?to=…: a number's calls.
    CREATE INDEX calls_to ON calls (to_number);
    "#,
    ),
    (
        5,
        "the operations API: refused triggers per minute; attempts and calls by time",
        r#"
    CREATE TABLE trigger_refusals (
        minute BIGINT NOT NULL,
        reason TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (minute, reason)
    );
    CREATE INDEX delivery_attempts_started ON delivery_attempts (started_at);
    CREATE INDEX calls_created ON calls (created_at);
    "#,
    ),
    (
        6,
        "API keys made through the API",
        r#"
    -- scopes and allowed_ips: JSON arrays of text; hash: SHA-256, hex.
    -- COLLATE "C": listed in byte order, as on SQLite.
    CREATE TABLE api_keys (
        name TEXT COLLATE "C" PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        allowed_ips TEXT NOT NULL,
        rate_requests BIGINT,
        rate_per_ms BIGINT,
        rate_burst BIGINT,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        disabled_at BIGINT,
        last_used_at BIGINT
    );
    "#,
    ),
    (
        7,
        "alerts sent (deduplication across instances)",
        r#"
    CREATE TABLE alerts_sent (
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        sent_at BIGINT NOT NULL,
        PRIMARY KEY (kind, subject)
    );
    "#,
    ),
    (
        8,
        "console sessions (the token only as its SHA-256)",
        r#"
    CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        scopes TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL
    );
    "#,
    ),
];

/// Applies the migrations not applied yet to the connection's current
/// schema, holding the migration lock of that schema throughout.
pub(super) async fn migrate(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext(current_schema()))",
            &[&LOCK_MIGRATIONS],
        )
        .await?;
    let result = apply(client).await;
    // Released even when a migration failed (the session ends soon anyway,
    // which also releases it).
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
            &[&LOCK_MIGRATIONS],
        )
        .await;
    result?;
    unlocked.map(|_| ())
}

async fn apply(client: &mut Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS callgate_migrations (version BIGINT PRIMARY KEY, \
             name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await?;
    for (version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        let applied = tx
            .query_opt(
                "SELECT version FROM callgate_migrations WHERE version = $1",
                &[version],
            )
            .await?;
        if applied.is_some() {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO callgate_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &crate::clock::system_now_ms()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}
