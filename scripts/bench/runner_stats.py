#!/usr/bin/env python3
"""Runner benchmark figures from a callgate database (read-only).

    runner_stats.py DB pending              # prints: jobs=N pending_jobs=N active_calls=N
    runner_stats.py DB stats SINCE_MS WARMUP_MS   # prints key=value lines (below)

DB is the SQLite file, or a postgres:// URL (its schema chosen with
`?options=-csearch_path%3D<schema>`), read with `psql` (no Python driver
needed): `pending` counts in PostgreSQL; `stats` copies the columns it needs
(COPY ... TO STDOUT) into an in-memory SQLite database and runs the same
queries there, so both engines' figures are computed identically.

`stats` covers only the jobs accepted at or after SINCE_MS (Unix ms; the
load's start, so the sanity request's job is left out) and their calls;
latencies only those accepted at or after the first of them + WARMUP_MS.

Used by scripts/bench.sh. All times in the database are Unix milliseconds:
jobs.created_at is when the trigger was accepted (the 202), a job_events row
with status 'running' is written when a worker claims the job, one with
status 'succeeded' when the worker records the result (a start_call job
succeeds once the provider has taken the call), calls.ended_at is when the
gateway applied the call's final event (the simulator's callback).

`stats` keys:
  jobs, jobs_<status>, calls, calls_<status>, call_events
  accepted_span_ms        first to last accept
  first_running_ms, last_succeeded_ms, last_call_end_ms (Unix ms)
  jobs_per_s              succeeded / (last succeeded - first claim)
  calls_per_s             completed calls / (last call end - first claim)
  rate_first_per_s, rate_last_per_s, rate_tenths_per_s
                          execution rate over the first and last tenth of
                          the succeeded jobs (in the order they succeeded),
                          and over each tenth (comma-separated)
  done_at_last_accept_pct share of the jobs succeeded when the last trigger
                          was accepted
  claims                  'running' events (a job claimed again adds one)
  claim_p50_ms ... claim_max_ms          accepted -> first 'running'
  succeed_p50_ms ... succeed_max_ms      accepted -> 'succeeded'
  complete_p50_ms ... complete_max_ms    accepted -> call ended (completed)
  callback_p50_ms ... callback_max_ms    dial requested -> call ended
  measured_jobs           jobs the latencies cover
"""

import sqlite3
import subprocess
import sys

ACTIVE_JOB = ("queued", "running", "scheduled", "waiting")
ACTIVE_CALL = ("queued", "dialing", "ringing", "in_progress")


def is_pg(db):
    return db.startswith(("postgres://", "postgresql://"))


def connect(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def psql(url, sql):
    """Output lines of one statement run by psql (unaligned, tab-separated)."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return [line for line in out.split("\n") if line]


# The tables and columns `stats` reads (Unix-ms BIGINTs and TEXT ids/statuses).
PG_COPY = {
    "jobs": (("id", "TEXT"), ("created_at", "INTEGER"), ("status", "TEXT")),
    "job_events": (("job_id", "TEXT"), ("at", "INTEGER"), ("status", "TEXT")),
    "calls": (("id", "TEXT"), ("job_id", "TEXT"), ("status", "TEXT"), ("ended_at", "INTEGER"),
              ("dial_requested_at", "INTEGER")),
    "call_events": (("call_id", "TEXT"),),
}


def copy_from_pg(url):
    """An in-memory SQLite database holding PG_COPY's columns of the PostgreSQL schema."""
    db = sqlite3.connect(":memory:")
    for table, cols in PG_COPY.items():
        names = ", ".join(c for c, _ in cols)
        db.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in cols)})")
        rows = []
        for line in psql(url, f"COPY (SELECT {names} FROM {table}) TO STDOUT"):
            fields = line.split("\t")
            rows.append(tuple(
                None if v == "\\N" else (int(v) if t == "INTEGER" else v)
                for v, (_, t) in zip(fields, cols)
            ))
        db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})", rows)
    return db


def pending_pg(url):
    jobs, pj, ac = psql(url, f"""SELECT (SELECT count(*) FROM jobs),
        (SELECT count(*) FROM jobs WHERE status IN ({",".join(f"'{s}'" for s in ACTIVE_JOB)})),
        (SELECT count(*) FROM calls WHERE status IN ({",".join(f"'{s}'" for s in ACTIVE_CALL)}))""")[0].split("\t")
    print(f"jobs={jobs} pending_jobs={pj} active_calls={ac}")


def pct(values, p):
    """Nearest-rank percentile of a sorted list."""
    if not values:
        return None
    k = max(1, -(-len(values) * p // 100))  # ceil(n * p / 100)
    return values[int(k) - 1]


def rate(times):
    """Events per second over a sorted list of Unix-ms times."""
    if len(times) < 2 or times[-1] == times[0]:
        return None
    return (len(times) - 1) * 1000.0 / (times[-1] - times[0])


def fmt(v):
    if v is None:
        return "na"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def pending(db):
    q = lambda sql, args=(): db.execute(sql, args).fetchone()[0]
    jobs = q("SELECT count(*) FROM jobs")
    pj = q(f"SELECT count(*) FROM jobs WHERE status IN ({','.join('?' * len(ACTIVE_JOB))})", ACTIVE_JOB)
    ac = q(f"SELECT count(*) FROM calls WHERE status IN ({','.join('?' * len(ACTIVE_CALL))})", ACTIVE_CALL)
    print(f"jobs={jobs} pending_jobs={pj} active_calls={ac}")


def stats(db, since_ms, warmup_ms):
    out = {}
    q = lambda sql, args=(): db.execute(sql, args).fetchall()
    # The jobs of the load (and, through them, their events and calls).
    db.execute("CREATE TEMP TABLE load_jobs AS SELECT * FROM jobs WHERE created_at >= ?", (since_ms,))
    db.execute("CREATE INDEX temp.load_jobs_id ON load_jobs (id)")

    out["jobs"] = q("SELECT count(*) FROM load_jobs")[0][0]
    for status, n in q("SELECT status, count(*) FROM load_jobs GROUP BY status ORDER BY status"):
        out[f"jobs_{status}"] = n
    out["calls"] = q("SELECT count(*) FROM calls WHERE job_id IN (SELECT id FROM load_jobs)")[0][0]
    for status, n in q("SELECT status, count(*) FROM calls WHERE job_id IN (SELECT id FROM load_jobs) GROUP BY status ORDER BY status"):
        out[f"calls_{status}"] = n
    out["call_events"] = q("SELECT count(*) FROM call_events WHERE call_id IN (SELECT c.id FROM calls c JOIN load_jobs j ON c.job_id = j.id)")[0][0]
    out["claims"] = q("SELECT count(*) FROM job_events WHERE status = 'running' AND job_id IN (SELECT id FROM load_jobs)")[0][0]

    first_created, last_created = q("SELECT min(created_at), max(created_at) FROM load_jobs")[0]
    out["accepted_span_ms"] = (last_created - first_created) if first_created is not None else None
    first_running = q("SELECT min(at) FROM job_events WHERE status = 'running' AND job_id IN (SELECT id FROM load_jobs)")[0][0]
    out["first_running_ms"] = first_running

    succeeded = [r[0] for r in q("SELECT at FROM job_events WHERE status = 'succeeded' AND job_id IN (SELECT id FROM load_jobs) ORDER BY at")]
    out["last_succeeded_ms"] = succeeded[-1] if succeeded else None
    if succeeded and first_running is not None and succeeded[-1] > first_running:
        out["jobs_per_s"] = len(succeeded) * 1000.0 / (succeeded[-1] - first_running)
    tenth = max(2, len(succeeded) // 10)
    out["rate_first_per_s"] = rate(succeeded[:tenth]) if len(succeeded) >= 20 else None
    out["rate_last_per_s"] = rate(succeeded[-tenth:]) if len(succeeded) >= 20 else None
    if len(succeeded) >= 20:
        n = len(succeeded)
        tenths = [rate(succeeded[n * i // 10:n * (i + 1) // 10]) for i in range(10)]
        out["rate_tenths_per_s"] = ",".join(fmt(r) if r is None else f"{r:.0f}" for r in tenths)
        # Share of the jobs that had succeeded when the last trigger was accepted.
        out["done_at_last_accept_pct"] = 100.0 * sum(1 for t in succeeded if t <= last_created) / n

    ended = [r[0] for r in q("SELECT ended_at FROM calls WHERE status = 'completed' AND ended_at IS NOT NULL AND job_id IN (SELECT id FROM load_jobs) ORDER BY ended_at")]
    out["last_call_end_ms"] = ended[-1] if ended else None
    if ended and first_running is not None and ended[-1] > first_running:
        out["calls_per_s"] = len(ended) * 1000.0 / (ended[-1] - first_running)

    since = (first_created or 0) + warmup_ms
    out["measured_jobs"] = q("SELECT count(*) FROM load_jobs WHERE created_at >= ?", (since,))[0][0]
    series = {
        "claim": """SELECT min(e.at) - j.created_at FROM load_jobs j JOIN job_events e ON e.job_id = j.id
                    WHERE e.status = 'running' AND j.created_at >= ? GROUP BY j.id""",
        "succeed": """SELECT min(e.at) - j.created_at FROM load_jobs j JOIN job_events e ON e.job_id = j.id
                      WHERE e.status = 'succeeded' AND j.created_at >= ? GROUP BY j.id""",
        "complete": """SELECT c.ended_at - j.created_at FROM load_jobs j JOIN calls c ON c.job_id = j.id
                       WHERE c.status = 'completed' AND c.ended_at IS NOT NULL AND j.created_at >= ?""",
        "callback": """SELECT c.ended_at - c.dial_requested_at FROM load_jobs j JOIN calls c ON c.job_id = j.id
                       WHERE c.status = 'completed' AND c.ended_at IS NOT NULL AND j.created_at >= ?""",
    }
    for name, sql in series.items():
        values = sorted(r[0] for r in q(sql, (since,)))
        for p in (50, 90, 99):
            out[f"{name}_p{p}_ms"] = pct(values, p)
        out[f"{name}_max_ms"] = values[-1] if values else None
        out[f"{name}_n"] = len(values)

    for k, v in out.items():
        print(f"{k}={fmt(v)}")


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("pending", "stats"):
        sys.exit(__doc__)
    if sys.argv[2] == "pending":
        if is_pg(sys.argv[1]):
            pending_pg(sys.argv[1])
        else:
            pending(connect(sys.argv[1]))
    else:
        if len(sys.argv) != 5:
            sys.exit(__doc__)
        db = copy_from_pg(sys.argv[1]) if is_pg(sys.argv[1]) else connect(sys.argv[1])
        stats(db, int(sys.argv[3]), int(sys.argv[4]))


if __name__ == "__main__":
    main()
