#!/usr/bin/env python3
"""Load driver and report for scripts/soak.sh and scripts/soak-limiter.sh.

Python 3.11 standard library only.

    driver.py soak --url https://127.0.0.1:PORT --cacert PEM --pid PID --db DB \\
        --good-key KEY --limited-key KEY --jwt TOKEN --out RESULTS.json [options]
    driver.py report --results RESULTS.json --log GATEWAY.log
    driver.py limiter --host 127.0.0.1 --port PORT --pid PID --log GATEWAY.log \\
        [--cacert PEM] [--ips 100000] [--rounds 2] [options]

soak: open-loop load at a fixed total rate (request i is due at
start + i / rate, whether or not earlier answers have come back; latency is
measured from that due time, so a stalled server shows up as latency instead
of as a slower client). Requests are dealt round-robin (smoothly weighted)
over five kinds, each with the answer it must get:

    good          202, a new job (API key, or the JWT for every 4th;
                  every 2nd carries a fresh Idempotency-Key)
    bad_auth      401 (no credentials, an unknown API key, a JWT with a
                  forged signature; in turn)
    invalid       422 (bodies that break the demo-call schema; in turn)
    rate_limited  429 with Retry-After (the key minted with
                  --rate-limit 1/1s:1); the one request per second the key's
                  quota lets through is 202, so 202 is expected too, but at
                  most one per second of the run (plus the burst of 1)
    replayed      202 with `Idempotent-Replayed: true` and the job id of the
                  first answer (Idempotency-Keys whose first request was sent
                  before the load)

Every error answer must be application/problem+json. A worker thread per
connection sends them; each connection is closed and replaced after
--requests-per-connection requests, so TLS handshakes and connection
teardown are part of the soak. A connection the gateway closed after an
answer is noticed before reuse (as urllib3 does) and replaced; one it closed
while the next request was on its way gets that request again, once. Both
are counted by the status of the answer before the close. Every --sample
seconds the server's VmRSS, RssAnon, thread count and open file descriptors
(/proc/PID/fd) and the database's unfinished jobs and calls are sampled.
After the load the driver closes its connections, waits for every job and
call to finish (--drain seconds at most), then settles: at least
--settle-min seconds (tokio retires idle blocking-pool threads after 10 s),
and until the open sockets are back to their number before the load
(--settle seconds at most). Results go to RESULTS.json.

report: the markdown report from RESULTS.json and the gateway's JSON log
(ERROR and WARN lines, counted after the gateway stopped). Exit status 1 when
the run failed: an unexpected status for a kind (5xx included), a transport
error, an ERROR line or a line that is not JSON in the log, requests left
unsent, jobs or calls unfinished after the drain, or fewer jobs in the
database than fresh 202 answers.

limiter: --rounds rounds (default 2), each of one unauthenticated POST
/v1/triggers/demo-call from each of --ips new loopback addresses (127.1.0.0
upwards: the client socket is bound to the address before connecting; Linux
routes all of 127.0.0.0/8 to lo), each on its own connection; every answer
must be 401 (the per-IP limit is taken before authentication, so each address
becomes a limiter key). Reports server RSS (and LazyFree: pages the allocator
gave back with MADV_FREE, still counted in RSS) before, right after each
round, and after the gateway's limiter housekeeping has dropped the round's
keys (key counts from its `rate limiter housekeeping` debug lines), polling
until RSS stops falling or --wait seconds pass.
"""

import argparse
import asyncio
import base64
import collections
import http.client
import ipaddress
import json
import math
import os
import queue
import secrets
import select
import socket
import sqlite3
import ssl
import sys
import threading
import time
import urllib.parse

KINDS = ("good", "bad_auth", "invalid", "rate_limited", "replayed")
ACTIVE_JOB = ("queued", "running", "scheduled", "waiting")
ACTIVE_CALL = ("queued", "dialing", "ringing", "in_progress")
TRIGGER_PATH = "/v1/triggers/demo-call"
PROBLEM = "application/problem+json"


def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc


def proc_sample(pid):
    """VmRSS, RssAnon, VmHWM (kB), threads, open fds and CPU seconds of a process."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM", "Threads"):
                fields[key] = int(value.split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    ticks = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
    return {
        "rss_kb": fields.get("VmRSS", 0),
        "anon_kb": fields.get("RssAnon", 0),
        "hwm_kb": fields.get("VmHWM", 0),
        "threads": fields.get("Threads", 0),
        "fds": fds,
        "cpu_s": cpu,
    }


def fd_kinds(pid):
    """Open descriptors of a process by kind (socket, anon_inode, file, ...)."""
    kinds = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        else:
            kinds[os.path.basename(target)] += 1
    return dict(sorted(kinds.items()))


def thread_names(pid):
    """Threads of a process by name, digits folded (`sqlx-sqlite-worker-N`)."""
    names = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names["".join("N" if ch.isdigit() else ch for ch in f.read().strip())] += 1
        except OSError:
            continue
    return dict(sorted(names.items()))


def db_connect(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def db_pending(path):
    """(unfinished jobs, unfinished calls); (None, None) if unreadable."""
    try:
        db = db_connect(path)
        try:
            jobs = db.execute(
                f"SELECT count(*) FROM jobs WHERE status IN ({','.join('?' * len(ACTIVE_JOB))})", ACTIVE_JOB
            ).fetchone()[0]
            calls = db.execute(
                f"SELECT count(*) FROM calls WHERE status IN ({','.join('?' * len(ACTIVE_CALL))})", ACTIVE_CALL
            ).fetchone()[0]
            return jobs, calls
        finally:
            db.close()
    except sqlite3.Error:
        return None, None


def db_summary(path):
    db = db_connect(path)
    try:
        q = lambda sql: db.execute(sql).fetchall()
        return {
            "jobs": q("SELECT count(*) FROM jobs")[0][0],
            "jobs_by_status": dict(q("SELECT status, count(*) FROM jobs GROUP BY status")),
            "calls": q("SELECT count(*) FROM calls")[0][0],
            "calls_by_status": dict(q("SELECT status, count(*) FROM calls GROUP BY status")),
            "call_events": q("SELECT count(*) FROM call_events")[0][0],
        }
    finally:
        db.close()


def file_sizes(db):
    out = {}
    for suffix in ("", "-wal"):
        try:
            out["db" + suffix.replace("-", "_")] = os.path.getsize(db + suffix)
        except OSError:
            pass
    return out


def pct(sorted_values, p):
    """Nearest-rank percentile of a sorted list."""
    if not sorted_values:
        return None
    k = max(1, math.ceil(len(sorted_values) * p / 100))
    return sorted_values[k - 1]


# ---------------------------------------------------------------- soak


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_jwt(token):
    """The token with a random signature of the right length."""
    head, payload, _sig = token.split(".")
    return f"{head}.{payload}.{b64url(secrets.token_bytes(32))}"


def good_body(n):
    return {
        "phone_number": "+1 415 555 2671",
        "customer": {"name": "Soak Test", "crm_id": f"soak-{n}"},
        "variables": {"n": n, "topic": "soak"},
    }


INVALID_BODIES = [
    {"customer": {"name": "no phone number"}},
    {"phone_number": 14155552671},
    {"phone_number": "+1 415 555 2671", "customer": {"name": 5}},
    {"phone_number": "+1 415 555 2671", "customer": {"name": "x" * 201}},
    {"phone_number": "+1 415 555 2671", "variables": ["not", "an", "object"]},
]


class Plan:
    """Builds request n of a kind: (headers, body bytes, check name, extra)."""

    def __init__(self, args, run_id):
        self.good_key = args.good_key
        self.limited_key = args.limited_key
        self.jwt = args.jwt
        self.run_id = run_id
        self.replay_keys = []  # (idempotency key, body bytes, job id)

    @staticmethod
    def _headers(auth):
        h = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            h["Authorization"] = auth
        return h

    def build(self, kind, n):
        if kind == "good":
            auth = f"Bearer {self.jwt}" if n % 4 == 3 else f"Bearer {self.good_key}"
            h = self._headers(auth)
            if n % 2 == 0:
                h["Idempotency-Key"] = f"soak-{self.run_id}-{n}"
            return h, json.dumps(good_body(n)).encode(), None
        if kind == "bad_auth":
            variant = n % 3
            if variant == 0:
                auth = None
            elif variant == 1:
                auth = "Bearer cg_" + b64url(secrets.token_bytes(32))
            else:
                auth = "Bearer " + forged_jwt(self.jwt)
            return self._headers(auth), json.dumps(good_body(n)).encode(), None
        if kind == "invalid":
            body = INVALID_BODIES[n % len(INVALID_BODIES)]
            return self._headers(f"Bearer {self.good_key}"), json.dumps(body).encode(), None
        if kind == "rate_limited":
            return self._headers(f"Bearer {self.limited_key}"), json.dumps(good_body(n)).encode(), None
        if kind == "replayed":
            key, body, job_id = self.replay_keys[n % len(self.replay_keys)]
            h = self._headers(f"Bearer {self.good_key}")
            h["Idempotency-Key"] = key
            return h, body, job_id
        raise ValueError(kind)


def check(kind, status, headers, body, extra):
    """None if the answer is right for its kind, else what is wrong."""
    ctype = (headers.get("content-type") or "").split(";")[0].strip()
    replayed = headers.get("idempotent-replayed")
    if status >= 400 and ctype != PROBLEM:
        return f"{status} with Content-Type {ctype!r}, not {PROBLEM}"
    if kind == "good":
        if status != 202:
            return f"status {status}, expected 202"
        if replayed is not None:
            return "a fresh trigger was answered as a replay"
        return None
    if kind == "bad_auth":
        return None if status == 401 else f"status {status}, expected 401"
    if kind == "invalid":
        return None if status == 422 else f"status {status}, expected 422"
    if kind == "rate_limited":
        if status == 429:
            return None if headers.get("retry-after") else "429 without Retry-After"
        return None if status == 202 else f"status {status}, expected 429 (or 202 within the key's 1/s)"
    if kind == "replayed":
        if status != 202:
            return f"status {status}, expected 202"
        if (replayed or "").lower() != "true":
            return f"Idempotent-Replayed is {replayed!r}, expected 'true'"
        try:
            job_id = json.loads(body)["job_id"]
        except (ValueError, KeyError, TypeError):
            return "replayed 202 without a job_id"
        return None if job_id == extra else f"replayed job_id {job_id}, first answer had {extra}"
    return f"unknown kind {kind}"


class Stats:
    """One worker's tallies (merged at the end; no locking on the hot path)."""

    def __init__(self):
        self.status = {k: collections.Counter() for k in KINDS}
        self.latency = {k: [] for k in KINDS}
        self.failures = collections.Counter()
        self.examples = []
        self.connections = 0
        self.retries = 0
        self.server_closed = collections.Counter()
        self.fresh_202 = 0

    def merge(self, other):
        for k in KINDS:
            self.status[k].update(other.status[k])
            self.latency[k].extend(other.latency[k])
        self.failures.update(other.failures)
        self.examples.extend(other.examples[: max(0, 20 - len(self.examples))])
        self.connections += other.connections
        self.retries += other.retries
        self.server_closed.update(other.server_closed)
        self.fresh_202 += other.fresh_202


class Client:
    """A keep-alive HTTPS connection replaced every `per_conn` requests.

    Before a connection is reused it is checked the way urllib3 checks its
    pool: a keep-alive connection the server has closed (or written to)
    since its last answer is readable; then a new one is opened and the
    status of the answer after which the server closed it is counted. A
    reused connection that fails before any answer is retried once on a new
    one (the server closed it while the request was on its way).
    """

    def __init__(self, host, port, ctx, per_conn, stats, timeout):
        self.host, self.port, self.ctx = host, port, ctx
        self.per_conn, self.stats, self.timeout = per_conn, stats, timeout
        self.conn = None
        self.used = 0
        self.last_status = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def _fresh(self):
        self.close()
        self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        self.stats.connections += 1
        self.used = 0

    def _closed_by_server(self):
        sock = self.conn.sock if self.conn is not None else None
        if sock is None or self.used == 0:
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def post(self, path, headers, body):
        if self.conn is None or self.used >= self.per_conn:
            self._fresh()
        elif self._closed_by_server():
            self.stats.server_closed[str(self.last_status)] += 1
            self._fresh()
        for attempt in (0, 1):
            reused = self.used > 0
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                self.used += 1
                self.last_status = resp.status
                hdrs = {k.lower(): v for k, v in resp.getheaders()}
                if resp.will_close:
                    self.close()
                return resp.status, hdrs, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                self._fresh()
                if attempt == 0 and reused:
                    self.stats.retries += 1
                    self.stats.server_closed[f"{self.last_status} (found on reuse)"] += 1
                    continue
                raise
            except Exception:
                self.close()
                raise
        raise AssertionError("unreachable")


def smooth_pattern(weights):
    """Smooth weighted round-robin: each kind spread evenly over one cycle."""
    current = {k: 0 for k in weights}
    total = sum(weights.values())
    out = []
    for _ in range(total):
        for k, w in weights.items():
            current[k] += w
        pick = max(current, key=lambda k: current[k])
        current[pick] -= total
        out.append(pick)
    return out


def parse_mix(text):
    weights = {}
    for part in text.split(","):
        name, _, w = part.partition("=")
        name = name.strip()
        if name not in KINDS or not w.strip().isdigit():
            raise SystemExit(f"--mix: `{part}` is not KIND=WEIGHT with KIND one of {', '.join(KINDS)}")
        weights[name] = int(w)
    if any(weights.get(k, 0) <= 0 for k in KINDS):
        raise SystemExit(f"--mix: every kind needs a positive weight ({', '.join(KINDS)})")
    return {k: weights[k] for k in KINDS}


def soak(args):
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname, url.port
    ctx = ssl.create_default_context(cafile=args.cacert)
    ctx.check_hostname = False  # the generated certificate names localhost; the CA pin is what matters
    run_id = secrets.token_hex(4)
    plan = Plan(args, run_id)
    weights = parse_mix(args.mix)
    pattern = smooth_pattern(weights)
    total = int(args.seconds * args.rate)
    results = {
        "seconds": args.seconds,
        "rate": args.rate,
        "mix": weights,
        "connections": args.connections,
        "requests_per_connection": args.requests_per_connection,
        "sample_every": args.sample,
        "planned": total,
    }

    # Seeds for the replays: first answers, fresh 202s without the header.
    setup_stats = Stats()
    setup = Client(host, port, ctx, 10**9, setup_stats, args.timeout)
    for i in range(args.replay_keys):
        key = f"soak-{run_id}-replay-{i}"
        body = json.dumps(good_body(-1 - i)).encode()
        h = plan._headers(f"Bearer {args.good_key}")
        h["Idempotency-Key"] = key
        status, hdrs, data = setup.post(TRIGGER_PATH, h, body)
        if status != 202 or hdrs.get("idempotent-replayed") is not None:
            raise SystemExit(f"replay seed {i}: {status} {hdrs.get('idempotent-replayed')} {data[:300]!r}")
        plan.replay_keys.append((key, body, json.loads(data)["job_id"]))
    # One of each kind, checked, before the load: a misconfigured run stops here.
    for kind in KINDS:
        headers, body, extra = plan.build(kind, 0 if kind != "rate_limited" else 1)
        status, hdrs, data = setup.post(TRIGGER_PATH, headers, body)
        problem = check(kind, status, hdrs, data, extra)
        if problem is None and kind == "rate_limited" and status != 202:
            problem = f"the limited key's first request got {status}, expected 202"
        if problem:
            raise SystemExit(f"sanity request of kind {kind}: {problem}: {data[:300]!r}")
        if kind == "good" or (kind == "rate_limited" and status == 202):
            setup_stats.fresh_202 += 1
    setup.close()
    results["setup_fresh_202"] = args.replay_keys + setup_stats.fresh_202
    log(f"setup done: {args.replay_keys} replay seeds, one sanity request per kind")

    # Baseline after the setup: its connection is closed, the jobs ran.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and db_pending(args.db) != (0, 0):
        time.sleep(0.5)
    time.sleep(1)
    samples = []
    start = proc_sample(args.pid)
    start["t"] = 0.0
    start["pending_jobs"], start["active_calls"] = db_pending(args.db)
    results["start"] = start
    results["start_fd_kinds"] = fd_kinds(args.pid)
    results["start_threads"] = thread_names(args.pid)

    work = queue.Queue()
    stop_sampling = threading.Event()
    server_gone = threading.Event()
    worker_stats = []
    lateness = []

    def worker():
        st = Stats()
        worker_stats.append(st)
        client = Client(host, port, ctx, args.requests_per_connection, st, args.timeout)
        while True:
            item = work.get()
            if item is None:
                client.close()
                return
            n, kind, due = item
            headers, body, extra = plan.build(kind, n)
            try:
                status, hdrs, data = client.post(TRIGGER_PATH, headers, body)
            except Exception as e:  # noqa: BLE001 (every transport failure is a finding)
                st.status[kind][f"error:{type(e).__name__}"] += 1
                st.failures[f"{kind}: {type(e).__name__}"] += 1
                if len(st.examples) < 20:
                    st.examples.append(f"{kind} #{n}: {type(e).__name__}: {e}")
                continue
            done = time.monotonic()
            st.status[kind][status] += 1
            st.latency[kind].append((done - due) * 1000.0)
            problem = check(kind, status, hdrs, data, extra)
            if problem:
                st.failures[f"{kind}: {problem}"] += 1
                if len(st.examples) < 20:
                    st.examples.append(f"{kind} #{n}: {problem}: {data[:300]!r}")
            elif status == 202 and kind in ("good", "rate_limited"):
                st.fresh_202 += 1

    t0 = time.monotonic() + 0.2

    def sampler():
        next_at = t0 + args.sample
        while not stop_sampling.wait(max(0.0, next_at - time.monotonic())):
            try:
                s = proc_sample(args.pid)
            except OSError:
                server_gone.set()
                return
            s["t"] = round(time.monotonic() - t0, 1)
            s["pending_jobs"], s["active_calls"] = db_pending(args.db)
            s["backlog"] = work.qsize()
            samples.append(s)
            if len(samples) % max(1, int(60 / args.sample)) == 0:
                log(
                    f"t={s['t']:.0f}s rss={s['rss_kb'] / 1024:.1f}MB fds={s['fds']} threads={s['threads']} "
                    f"pending_jobs={s['pending_jobs']} active_calls={s['active_calls']} client_backlog={s['backlog']}"
                )
            next_at += args.sample

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.connections)]
    for t in threads:
        t.start()
    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    log(f"load: {total} requests at {args.rate}/s for {args.seconds}s, mix {weights}, {args.connections} connections")
    max_backlog = 0
    counters = collections.Counter()
    for i in range(total):
        due = t0 + i / args.rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -0.001:
            lateness.append(-wait * 1000.0)
        if server_gone.is_set():
            raise SystemExit(f"the gateway (pid {args.pid}) exited during the load")
        kind = pattern[i % len(pattern)]
        counters[kind] += 1
        work.put((counters[kind], kind, due))
        if i % 256 == 0:
            max_backlog = max(max_backlog, work.qsize())
    load_end = time.monotonic()
    for _ in threads:
        work.put(None)
    finish_by = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, finish_by - time.monotonic()))
    unfinished_workers = sum(t.is_alive() for t in threads)
    stop_sampling.set()
    sampling.join()
    end = proc_sample(args.pid)
    end["t"] = round(time.monotonic() - t0, 1)
    end["pending_jobs"], end["active_calls"] = db_pending(args.db)
    results["end"] = end
    results["end_threads"] = thread_names(args.pid)
    results["load_seconds"] = round(load_end - t0, 1)
    results["unfinished_workers"] = unfinished_workers
    results["unsent"] = work.qsize()
    samples.append(end)

    stats = Stats()
    for st in list(worker_stats):
        stats.merge(st)
    results["status"] = {k: {str(s): c for s, c in sorted(stats.status[k].items(), key=str)} for k in KINDS}
    results["latency_ms"] = {}
    for k in KINDS:
        lat = sorted(stats.latency[k])
        results["latency_ms"][k] = {
            "n": len(lat),
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "max": lat[-1] if lat else None,
        }
    lateness.sort()
    results["client"] = {
        "connections_opened": stats.connections,
        "keepalive_retries": stats.retries,
        "server_closed_after": dict(stats.server_closed),
        "late_sends": len(lateness),
        "late_p99_ms": pct(lateness, 99),
        "late_max_ms": lateness[-1] if lateness else 0.0,
        "max_backlog": max_backlog,
    }
    results["failures"] = dict(stats.failures)
    results["examples"] = stats.examples
    results["fresh_202"] = results["setup_fresh_202"] + stats.fresh_202
    allowed = stats.status["rate_limited"].get(202, 0)
    results["rate_limited_202"] = allowed
    # The key's quota: 1/s with a burst of 1, over the load (the sanity
    # request took the first one before the load; +2 covers the edges).
    results["rate_limited_202_max"] = int(results["load_seconds"]) + 2
    log(f"load done in {results['load_seconds']}s; waiting for jobs and calls to finish (at most {args.drain}s)")

    drain_from = time.monotonic()
    pending = db_pending(args.db)
    while pending != (0, 0) and time.monotonic() - drain_from < args.drain:
        time.sleep(1)
        pending = db_pending(args.db)
    results["drain_seconds"] = round(time.monotonic() - drain_from, 1)
    drained = proc_sample(args.pid)
    drained["pending_jobs"], drained["active_calls"] = pending
    results["drained"] = drained
    results["drained_fd_kinds"] = fd_kinds(args.pid)

    # Settling: at least --settle-min s (tokio retires idle blocking-pool
    # threads after 10 s), then until the sockets are back to their number
    # before the load (not all descriptors: the database pools open
    # connections on demand and keep them, up to their bound), at most
    # --settle s.
    start_sockets = results["start_fd_kinds"].get("socket", 0)
    settle_from = time.monotonic()
    settled, kinds = drained, results["drained_fd_kinds"]
    while time.monotonic() - settle_from < args.settle and (
        kinds.get("socket", 0) > start_sockets or time.monotonic() - settle_from < args.settle_min
    ):
        time.sleep(1)
        settled, kinds = proc_sample(args.pid), fd_kinds(args.pid)
    settled["after_s"] = round(time.monotonic() - settle_from, 1)
    results["settled"] = settled
    results["settled_fd_kinds"] = kinds
    results["settled_threads"] = thread_names(args.pid)
    results["samples"] = samples
    results["db"] = db_summary(args.db)
    results["db"].update(file_sizes(args.db))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"results in {args.out}")


# ---------------------------------------------------------------- report


def read_log(path):
    """(levels Counter, error lines, warn lines, non-JSON lines) of a JSON log."""
    levels = collections.Counter()
    errors, warns, other = [], [], []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                other.append(line)
                continue
            level = str(entry.get("level", "?")).upper()
            levels[level] += 1
            if level == "ERROR":
                errors.append(entry)
            elif level == "WARN":
                warns.append(entry)
    return levels, errors, warns, other


def mb(kb):
    return f"{kb / 1024:.1f}"


def slope_mb_per_min(samples, key="rss_kb"):
    """Least-squares slope of a sample series over its second half, MB/min."""
    pts = [(s["t"], s[key]) for s in samples if "t" in s]
    pts = pts[len(pts) // 2 :]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in pts) / den * 60 / 1024


def fmt_ms(v):
    return "n/a" if v is None else f"{v:.1f}"


def report(args):
    with open(args.results) as f:
        r = json.load(f)
    levels, errors, warns, other = read_log(args.log)
    failures = []
    unexpected = {k: v for k, v in r["failures"].items()}
    if unexpected:
        failures.append(f"{sum(unexpected.values())} answers with the wrong status or shape")
    five_xx = sum(
        c for k in KINDS for s, c in r["status"][k].items() if s.isdigit() and int(s) >= 500
    )
    if five_xx:
        failures.append(f"{five_xx} 5xx answers")
    if r["unsent"] or r["unfinished_workers"]:
        failures.append(f"{r['unsent']} requests unsent, {r['unfinished_workers']} workers still busy 60 s after the load")
    if r["rate_limited_202"] > r["rate_limited_202_max"]:
        failures.append(
            f"the 1/s key got {r['rate_limited_202']} 202s in {r['load_seconds']} s (at most {r['rate_limited_202_max']})"
        )
    if errors:
        failures.append(f"{len(errors)} ERROR lines in the gateway log")
    if other:
        failures.append(f"{len(other)} lines in the gateway log that are not JSON (panics?)")
    d = r["drained"]
    if (d.get("pending_jobs"), d.get("active_calls")) != (0, 0):
        failures.append(
            f"{d.get('pending_jobs')} jobs and {d.get('active_calls')} calls unfinished {r['drain_seconds']} s after the load"
        )
    db = r["db"]
    if db["jobs"] < r["fresh_202"]:
        failures.append(f"{db['jobs']} jobs in the database for {r['fresh_202']} fresh 202 answers")
    rss_slope = slope_mb_per_min(r["samples"])
    fd_slope = slope_mb_per_min(r["samples"], "fds")
    s0, s1, dr, st = r["start"], r["end"], r["drained"], r["settled"]
    samples = r["samples"]
    max_rss = max([s0["rss_kb"]] + [s["rss_kb"] for s in samples])
    max_anon = max([s0["anon_kb"]] + [s["anon_kb"] for s in samples])
    max_fds = max([s0["fds"]] + [s["fds"] for s in samples])
    max_threads = max([s0["threads"]] + [s["threads"] for s in samples])
    notes = []
    if r["settled_fd_kinds"].get("socket", 0) > r["start_fd_kinds"].get("socket", 0):
        notes.append(
            f"open sockets did not come back to their level before the load: {r['start_fd_kinds'].get('socket', 0)} "
            f"then {r['settled_fd_kinds'].get('socket', 0)} {st['after_s']} s after the drain"
        )

    out = []
    p = out.append
    total_sent = sum(sum(r["status"][k].values()) for k in KINDS)
    p(f"## callgate soak ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})")
    p("")
    p(
        f"{total_sent:,} requests in {r['load_seconds']} s: {r['rate']}/s open-loop, mix "
        + ", ".join(f"{k} {w}" for k, w in r["mix"].items())
        + f" (weights), {r['connections']} HTTPS keep-alive connections, each replaced after "
        f"{r['requests_per_connection']} requests ({r['client']['connections_opened']:,} connections opened)."
    )
    p("")
    p("| kind | expected | sent | answers | wrong | p50 ms | p99 ms | max ms |")
    p("|---|---|---:|---|---:|---:|---:|---:|")
    expected = {
        "good": "202",
        "bad_auth": "401",
        "invalid": "422",
        "rate_limited": "429 (202 ≤ 1/s)",
        "replayed": "202 + Idempotent-Replayed",
    }
    for k in KINDS:
        sent = sum(r["status"][k].values())
        answers = ", ".join(f"{s}: {c:,}" for s, c in r["status"][k].items())
        wrong = sum(c for f, c in unexpected.items() if f.startswith(k + ":"))
        lat = r["latency_ms"][k]
        p(
            f"| {k} | {expected[k]} | {sent:,} | {answers} | {wrong} | {fmt_ms(lat['p50'])} | {fmt_ms(lat['p99'])} | {fmt_ms(lat['max'])} |"
        )
    p("")
    p("Latency is from each request's scheduled send time to the end of its answer (client queueing included).")
    p("")
    p("| server | before the load | end of the load | max during the load | after the drain | after settling |")
    p("|---|---:|---:|---:|---:|---:|")
    p(f"| VmRSS MB | {mb(s0['rss_kb'])} | {mb(s1['rss_kb'])} | {mb(max_rss)} | {mb(dr['rss_kb'])} | {mb(st['rss_kb'])} |")
    p(f"| RssAnon MB | {mb(s0['anon_kb'])} | {mb(s1['anon_kb'])} | {mb(max_anon)} | {mb(dr['anon_kb'])} | {mb(st['anon_kb'])} |")
    p(f"| open FDs | {s0['fds']} | {s1['fds']} | {max_fds} | {dr['fds']} | {st['fds']} |")
    p(f"| threads | {s0['threads']} | {s1['threads']} | {max_threads} | {dr['threads']} | {st['threads']} |")
    p("")
    p(
        f"- RSS trend over the second half of the load: {'n/a' if rss_slope is None else f'{rss_slope:+.2f} MB/min'}; "
        f"open FDs {'n/a' if fd_slope is None else f'{fd_slope * 1024:+.2f}/min'}. "
        f"Server CPU during the load: {(s1['cpu_s'] - s0['cpu_s']) / max(1e-9, r['load_seconds']):.2f} cores."
    )
    p(
        f"- after the load: drained in {r['drain_seconds']} s; settled {st['after_s']} s after that "
        f"(FDs by kind before the load {r['start_fd_kinds']}, after settling {r['settled_fd_kinds']})."
    )
    p(
        f"- threads by name: before the load {r['start_threads']}; end of the load {r['end_threads']}; "
        f"after settling {r['settled_threads']}."
    )
    p(
        f"- 5xx answers: {five_xx}. Gateway log: {sum(levels.values()):,} JSON lines "
        + ", ".join(f"{lv} {c:,}" for lv, c in sorted(levels.items()))
        + f"; {len(other)} other lines."
    )
    if warns:
        by_msg = collections.Counter(str(w.get("message", w.get("fields", {}).get("message", "?"))) for w in warns)
        p("- WARN lines by message: " + "; ".join(f"{c} × {m!r}" for m, c in by_msg.most_common(10)))
    if errors:
        p("- ERROR lines (first 5):")
        for e in errors[:5]:
            p(f"  - `{json.dumps(e)[:400]}`")
    if other:
        p("- lines that are not JSON (first 5):")
        for line in other[:5]:
            p(f"  - `{line[:300]}`")
    p(
        f"- database: {db['jobs']:,} jobs {db['jobs_by_status']}, {db['calls']:,} calls {db['calls_by_status']}, "
        f"{db['call_events']:,} call events; {r['fresh_202']:,} fresh 202s sent (setup included); "
        f"file {db.get('db', 0) / 1e6:.1f} MB + WAL {db.get('db_wal', 0) / 1e6:.1f} MB."
    )
    c = r["client"]
    p(
        f"- client: {c['late_sends']:,} sends more than 1 ms later than scheduled (of those p99 {fmt_ms(c['late_p99_ms'])} ms, "
        f"max {fmt_ms(c['late_max_ms'])} ms), largest send backlog {c['max_backlog']}, keep-alive retries {c['keepalive_retries']}; "
        f"the rate-limited key got {r['rate_limited_202']} 202s (at most {r['rate_limited_202_max']} allowed)."
    )
    if c["server_closed_after"]:
        p(
            "- keep-alive connections the gateway closed after an answer (found closed before reuse, by the status "
            "of that answer): "
            + ", ".join(f"{k}: {v:,}" for k, v in sorted(c["server_closed_after"].items()))
            + "."
        )
    if r["examples"]:
        p("- wrong answers (first 10):")
        for e in r["examples"][:10]:
            p(f"  - {e[:300]}")
    for n in notes:
        p(f"- note: {n}")
    p("")
    p("Samples (every minute):")
    p("")
    p("| t s | VmRSS MB | RssAnon MB | FDs | threads | unfinished jobs | unfinished calls | client backlog |")
    p("|---:|---:|---:|---:|---:|---:|---:|---:|")
    every = max(1, int(60 / r["sample_every"]))
    rows = [s0] + samples[every - 1 :: every]
    if samples and rows[-1] is not samples[-1]:
        rows.append(samples[-1])
    for s in rows:
        p(
            f"| {s['t']:.0f} | {mb(s['rss_kb'])} | {mb(s['anon_kb'])} | {s['fds']} | {s['threads']} | "
            f"{s.get('pending_jobs')} | {s.get('active_calls')} | {s.get('backlog', 0)} |"
        )
    p("")
    p(f"**Result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}**")
    print("\n".join(out))
    return 1 if failures else 0


# ---------------------------------------------------------------- limiter


def housekeeping_counts(path, offset):
    """(new offset, [key counts]) of `rate limiter housekeeping` lines after offset."""
    counts = []
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            while True:
                line = f.readline()
                if not line.endswith("\n"):
                    break
                offset = f.tell()
                if "rate limiter housekeeping" not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                keys = entry.get("keys", entry.get("fields", {}).get("keys"))
                if keys is not None:
                    counts.append(int(keys))
    except OSError:
        pass
    return offset, counts


async def one_request(host, port, src, ctx, request, timeout):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(src, 0), ssl=ctx, server_hostname="localhost" if ctx else None),
        timeout,
    )
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        # Read the rest so the server's write completes before we close.
        await asyncio.wait_for(reader.read(), timeout)
        return status
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


LIMITER_REQUEST = (
    f"POST {TRIGGER_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    f"Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
).encode()


async def limiter_load(args, ctx, first):
    """One request from each of args.ips addresses from `first` on."""
    statuses = collections.Counter()
    examples = []
    sem = asyncio.Semaphore(args.concurrency)
    done = 0
    started = time.monotonic()

    async def go(i):
        nonlocal done
        src = str(first + i)
        async with sem:
            try:
                status = await one_request(args.host, args.port, src, ctx, LIMITER_REQUEST, args.timeout)
                statuses[status] += 1
            except Exception as e:  # noqa: BLE001
                statuses[f"error:{type(e).__name__}"] += 1
                if len(examples) < 10:
                    examples.append(f"{src}: {type(e).__name__}: {e}")
            done += 1
            if done % 20000 == 0:
                log(f"{done} addresses done, {done / (time.monotonic() - started):.0f}/s")

    batch = 4 * args.concurrency
    for start in range(0, args.ips, batch):
        await asyncio.gather(*(go(i) for i in range(start, min(args.ips, start + batch))))
    return statuses, examples, time.monotonic() - started


async def limiter_warm(args, ctx):
    statuses = collections.Counter()
    for _ in range(5):
        statuses[await one_request(args.host, args.port, "127.0.0.1", ctx, LIMITER_REQUEST, args.timeout)] += 1
    return statuses


def lazy_free_kb(pid):
    """LazyFree of a process (kB): pages it gave back with MADV_FREE that the
    kernel has not reclaimed yet; they still count in RSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("LazyFree:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def limiter_sample(pid):
    s = proc_sample(pid)
    s["lazy_kb"] = lazy_free_kb(pid)
    return s


def runs(values):
    """`a, b ×3, c`: consecutive repeats folded."""
    out = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return ", ".join(f"{v:,}" + (f" ×{n}" if n > 1 else "") for v, n in out)


def limiter_round(args, ctx, first, log_offset, baseline_keys):
    """Sends one round, then waits for housekeeping; returns the round's figures."""
    statuses, examples, secs = asyncio.run(limiter_load(args, ctx, first))
    after = limiter_sample(args.pid)
    log(f"sent in {secs:.1f}s: {dict(statuses)}; rss={mb(after['rss_kb'])}MB anon={mb(after['anon_kb'])}MB")
    # Housekeeping key counts from the log, RSS from /proc, until the keys
    # are gone and RSS has not fallen for --steady s, or --wait s.
    t0 = time.monotonic()
    series, counts_seen = [], []
    lowest, last_drop = after["rss_kb"], t0
    gone_at = None
    offset = log_offset
    while time.monotonic() - t0 < args.wait:
        time.sleep(1)
        offset, counts = housekeeping_counts(args.log, offset)
        counts_seen.extend(counts)
        s = limiter_sample(args.pid)
        s["t"] = round(time.monotonic() - t0, 1)
        s["keys"] = counts[-1] if counts else (series[-1]["keys"] if series else None)
        series.append(s)
        if s["rss_kb"] < lowest:
            lowest, last_drop = s["rss_kb"], time.monotonic()
        if gone_at is None and counts and counts[-1] <= baseline_keys:
            gone_at = s["t"]
            log(f"housekeeping left {counts[-1]} keys at +{s['t']}s; rss={mb(s['rss_kb'])}MB")
        if gone_at is not None and time.monotonic() - last_drop >= args.steady and s["t"] - gone_at >= args.steady:
            break
    return {
        "first": first,
        "last": first + (args.ips - 1),
        "statuses": statuses,
        "examples": examples,
        "secs": secs,
        "after": after,
        "final": series[-1] if series else after,
        "series": series,
        "counts": counts_seen,
        "max_keys": max(counts_seen) if counts_seen else None,
        "gone_at": gone_at,
        "lowest": lowest,
        "highest": max([after["rss_kb"]] + [x["rss_kb"] for x in series]),
        "offset": offset,
    }


def limiter(args):
    ctx = None
    if args.cacert:
        ctx = ssl.create_default_context(cafile=args.cacert)
        ctx.check_hostname = False
    base = ipaddress.IPv4Address(args.first_ip)
    last_ip = base + (args.ips * args.rounds - 1)
    if last_ip not in ipaddress.IPv4Network("127.0.0.0/8") or last_ip == ipaddress.IPv4Address("127.255.255.255"):
        raise SystemExit(f"{args.rounds} x {args.ips} addresses from {args.first_ip} leave 127.0.0.0/8")
    # A few requests from 127.0.0.1 first: the code paths are warm and the
    # before-figure has one limiter key (which stays: 5 requests keep it
    # from being fresh for minutes).
    warm = asyncio.run(limiter_warm(args, ctx))
    if set(warm) != {401}:
        raise SystemExit(f"warm-up answers {dict(warm)}, expected only 401")
    time.sleep(2)
    before = limiter_sample(args.pid)
    offset, _ = housekeeping_counts(args.log, 0)
    transport = "HTTPS" if ctx else "plain HTTP"
    log(f"before: rss={mb(before['rss_kb'])}MB anon={mb(before['anon_kb'])}MB; {args.rounds} round(s) of {args.ips} addresses over {transport}")
    rounds = []
    failures = []
    for i in range(args.rounds):
        r = limiter_round(args, ctx, base + i * args.ips, offset, 1)
        offset = r["offset"]
        rounds.append(r)
        if set(r["statuses"]) != {401}:
            failures.append(f"round {i + 1}: answers {dict(r['statuses'])}, expected only 401")
        if r["gone_at"] is None:
            failures.append(f"round {i + 1}: housekeeping did not drop the keys within {args.wait} s (last counts {r['counts'][-5:]})")

    def lazy(s):
        return "n/a" if s.get("lazy_kb") is None else mb(s["lazy_kb"])

    out = []
    p = out.append
    p(
        f"## callgate per-IP limiter with {args.ips:,} client addresses"
        f"{f' ({args.rounds} rounds of new ones)' if args.rounds > 1 else ''} ({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})"
    )
    p("")
    p(
        f"Each round: one unauthenticated `POST {TRIGGER_PATH}` from each of {args.ips:,} new addresses, each on a new "
        f"connection, {args.concurrency} at a time, over "
        + (
            "HTTPS"
            if ctx
            else "plain HTTP (`server.plain_http = true`: 100,000 TLS handshakes from a Python client would take far "
            "longer; the per-IP limiter, which is what is measured, sits behind TLS and is the same either way)"
        )
        + "; then a wait until the gateway's housekeeping (every 5 s) has dropped the keys and RSS has stopped falling."
    )
    p("")
    header = ["server", "before"]
    for i, r in enumerate(rounds, 1):
        header += [f"after round {i}", f"after housekeeping {i}"]
    p("| " + " | ".join(header) + " |")
    p("|---|" + "---:|" * (len(header) - 1))

    def row(label, f):
        cells = [label, f(before)]
        for r in rounds:
            cells += [f(r["after"]), f(r["final"])]
        p("| " + " | ".join(cells) + " |")

    row("VmRSS MB", lambda s: mb(s["rss_kb"]))
    row("RssAnon MB", lambda s: mb(s["anon_kb"]))
    row("of which LazyFree MB", lazy)
    row("open FDs", lambda s: str(s["fds"]))
    keys_cells = ["limiter keys (housekeeping log)", "1 (127.0.0.1)"]
    for r in rounds:
        keys_cells += [f"{r['max_keys']:,}" if r["max_keys"] is not None else "n/a", f"{r['counts'][-1]:,}" if r["counts"] else "n/a"]
    p("| " + " | ".join(keys_cells) + " |")
    p("")
    for i, r in enumerate(rounds, 1):
        prev = before if i == 1 else rounds[i - 2]["final"]
        p(
            f"- round {i}: {r['first']} … {r['last']}, sent in {r['secs']:.1f} s ({args.ips / r['secs']:,.0f}/s); answers "
            + ", ".join(f"{k}: {v:,}" for k, v in r["statuses"].items())
            + f". RssAnon {(r['after']['anon_kb'] - prev['anon_kb']) / 1024:+.1f} MB over the round "
            f"({(r['after']['anon_kb'] - prev['anon_kb']) * 1024 / args.ips:+.0f} bytes per address). Keys gone "
            f"{'at +' + str(r['gone_at']) + ' s' if r['gone_at'] is not None else 'NOT within the wait'} after the round; "
            f"key counts logged every 5 s: {runs(r['counts'])}. VmRSS {mb(r['final']['rss_kb'])} MB at +{r['final'].get('t', 0)} s "
            f"(lowest {mb(r['lowest'])}, highest {mb(r['highest'])} MB while waiting)."
        )
        if r["examples"]:
            p("  errors (first 10): " + "; ".join(r["examples"]))
    p(
        "- memory the gateway frees is kept by its allocator (mimalloc) for reuse and not necessarily returned to the "
        "OS; LazyFree counts pages given back with MADV_FREE that the kernel has not taken yet (they still count in RSS)."
    )
    p("")
    p("Every 10 s after each round (keys: the last count the housekeeping logged):")
    p("")
    p("| round | t s | VmRSS MB | RssAnon MB | LazyFree MB | keys |")
    p("|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rounds, 1):
        series = r["series"]
        for s in series[9::10] + ([series[-1]] if series and len(series) % 10 else []):
            p(f"| {i} | {s['t']:.0f} | {mb(s['rss_kb'])} | {mb(s['anon_kb'])} | {lazy(s)} | {s['keys'] if s['keys'] is not None else ''} |")
    p("")
    p(f"**Result: {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}**")
    print("\n".join(out))
    return 1 if failures else 0


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("soak")
    s.add_argument("--url", required=True)
    s.add_argument("--cacert", required=True)
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--db", required=True)
    s.add_argument("--good-key", required=True)
    s.add_argument("--limited-key", required=True)
    s.add_argument("--jwt", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seconds", type=float, default=600)
    s.add_argument("--rate", type=float, default=200)
    s.add_argument("--mix", default="good=8,bad_auth=3,invalid=3,rate_limited=3,replayed=3")
    s.add_argument("--connections", type=int, default=16)
    s.add_argument("--requests-per-connection", type=int, default=200)
    s.add_argument("--replay-keys", type=int, default=20)
    s.add_argument("--sample", type=float, default=5)
    s.add_argument("--timeout", type=float, default=10)
    s.add_argument("--drain", type=float, default=120)
    s.add_argument("--settle", type=float, default=120)
    s.add_argument("--settle-min", type=float, default=15)

    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--log", required=True)

    l = sub.add_parser("limiter")
    l.add_argument("--host", default="127.0.0.1")
    l.add_argument("--port", type=int, required=True)
    l.add_argument("--pid", type=int, required=True)
    l.add_argument("--log", required=True)
    l.add_argument("--cacert", help="HTTPS with this CA; plain HTTP without")
    l.add_argument("--ips", type=int, default=100_000)
    l.add_argument("--rounds", type=int, default=2)
    l.add_argument("--first-ip", default="127.1.0.0")
    l.add_argument("--concurrency", type=int, default=64)
    l.add_argument("--timeout", type=float, default=10)
    l.add_argument("--wait", type=float, default=240)
    l.add_argument("--steady", type=float, default=15)

    args = ap.parse_args()
    if args.cmd == "soak":
        soak(args)
        return 0
    if args.cmd == "report":
        return report(args)
    return limiter(args)


if __name__ == "__main__":
    sys.exit(main())
