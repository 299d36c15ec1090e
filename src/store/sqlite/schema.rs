//! The SQLite schema, its migrations (applied in order, each once) and the
//! durability check every write connection must pass.

use rusqlite::OptionalExtension;

/// Schema versions. Types stay portable to PostgreSQL (TEXT, BIGINT,
/// INTEGER); times are Unix milliseconds.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "jobs and idempotency keys",
        r#"
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            trigger_id TEXT NOT NULL,
            principal TEXT NOT NULL,
            status TEXT NOT NULL,
            action TEXT NOT NULL,
            input TEXT NOT NULL,
            result TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            request_id TEXT,
            idempotency_key TEXT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            run_at BIGINT NOT NULL
        );
        CREATE INDEX jobs_due ON jobs (status, run_at);
        CREATE TABLE idempotency_keys (
            principal TEXT NOT NULL,
            trigger_id TEXT NOT NULL,
            idem_key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            job_id TEXT NOT NULL,
            response_status INTEGER NOT NULL,
            response_body TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            PRIMARY KEY (principal, trigger_id, idem_key)
        );
        CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at);
        CREATE TABLE heartbeat (id INTEGER PRIMARY KEY, at BIGINT NOT NULL);
        "#,
    ),
    (
        2,
        "runner: leases, job log, calls, call events",
        r#"
        ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
        ALTER TABLE jobs ADD COLUMN lease_expires_at BIGINT;
        ALTER TABLE jobs ADD COLUMN state TEXT;
        ALTER TABLE jobs ADD COLUMN status_reason TEXT;
        ALTER TABLE jobs ADD COLUMN dedupe_key TEXT;
        CREATE UNIQUE INDEX jobs_dedupe ON jobs (dedupe_key);
        CREATE INDEX jobs_lease ON jobs (status, lease_expires_at);
        CREATE TABLE job_events (
            job_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            at BIGINT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            attempt INTEGER,
            detail TEXT,
            PRIMARY KEY (job_id, seq)
        );
        CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            step INTEGER NOT NULL,
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
            dial_attempts INTEGER NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            dial_requested_at BIGINT,
            answered_at BIGINT,
            ended_at BIGINT,
            UNIQUE (job_id, step)
        );
        CREATE INDEX calls_agent_status ON calls (agent_id, status);
        CREATE INDEX calls_status_updated ON calls (status, updated_at);
        CREATE TABLE call_events (
            call_id TEXT NOT NULL,
            event_key TEXT NOT NULL,
            received_at BIGINT NOT NULL,
            status TEXT,
            applied INTEGER NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (call_id, event_key)
        );
        "#,
    ),
    (
        3,
        "partial indexes for leases and active calls",
        r#"
        DROP INDEX jobs_lease;
        CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
        DROP INDEX calls_status_updated;
        CREATE INDEX calls_active ON calls (updated_at)
            WHERE status IN ('queued', 'dialing', 'ringing', 'in_progress');
        "#,
    ),
    (
        4,
        "outbound webhook deliveries and their attempts",
        r#"
        CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
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
        CREATE INDEX deliveries_lease ON deliveries (lease_expires_at) WHERE status = 'sending';
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
        5,
        "line waiters by agent (woken one per freed line, oldest first)",
        r#"
        ALTER TABLE jobs ADD COLUMN wait_agent TEXT;
        UPDATE jobs SET wait_agent = substr(status_reason, 13)
            WHERE status = 'waiting' AND status_reason LIKE 'lines busy: %';
        CREATE INDEX jobs_line_waiters ON jobs (wait_agent, created_at) WHERE status = 'waiting';
        "#,
    ),
    (
        6,
        "rate tokens and endpoint breakers (the same rules as on PostgreSQL)",
        r#"
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
        7,
        "the do-not-call list as stored through the API; calls by number",
        r#"
        CREATE TABLE do_not_call (
            number TEXT PRIMARY KEY,
            added_at BIGINT NOT NULL,
            added_by TEXT NOT NULL
        );
        CREATE INDEX calls_to ON calls (to_number);
        "#,
    ),
    (
        8,
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
        9,
        "API keys made through the API",
        r#"
        -- scopes and allowed_ips: JSON arrays of text; hash: SHA-256, hex.
        CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
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
        10,
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
        11,
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

/// Applies the migrations not applied yet, each in its own transaction.
pub(super) fn migrate(conn: &mut rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS callgate_migrations (version BIGINT PRIMARY KEY, \
         name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )?;
    for (version, name, sql) in MIGRATIONS {
        let tx = conn.transaction()?;
        let applied: Option<i64> = tx
            .query_row(
                "SELECT version FROM callgate_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if applied.is_some() {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO callgate_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, crate::clock::system_now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(version, name, "applied migration");
    }
    Ok(())
}

/// Refuses settings under which a commit would not be durable.
pub(super) fn check_durability(synchronous: i64, journal: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        synchronous == 2,
        "PRAGMA synchronous is {synchronous}, expected 2 (FULL)"
    );
    anyhow::ensure!(
        journal.eq_ignore_ascii_case("wal"),
        "PRAGMA journal_mode is {journal}, expected wal"
    );
    Ok(())
}
