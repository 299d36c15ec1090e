#!/usr/bin/env bash
# Benchmarks of the trigger accept path (against a bare axum baseline) and of
# the automation runner, in one run.
#
#   scripts/bench.sh            # from anywhere; prints a markdown report on stdout
#
# What it does, in order:
#   1. cargo build --release --bin callgate --example bench_baseline
#   2. baseline: target/release/examples/bench_baseline (a bare axum JSON
#      handler behind callgate's own TLS accept loop) on 127.0.0.1
#   3. gateway: target/release/callgate serve --config scripts/bench/config
#      with a fresh temp data dir (SQLite, self-signed certificate) and
#      CALLGATE_LOG=warn (no per-request access log lines). That config has
#      the runner off (`[runner] enabled = false`): accept path only.
#   For each server: wait for https://127.0.0.1:<port>/healthz, send one
#   sanity request with curl (must answer 202), a warm-up wrk run, the
#   measured wrk run, then stop the server.
#   4. checks: no non-2xx answers, no socket errors or timeouts, and for the
#      gateway that the database holds a job for every 2xx wrk counted
#      (a 202 means "on disk"; a benchmark of 401s or 429s would be worthless).
#   5. runner: callgate serve --config scripts/bench/runner-config (runner on,
#      embedded SQLite, the in-process simulator with zero ring and talk
#      time, which posts three signed events per call back over HTTPS), each
#      phase on a fresh gateway and data dir; the sanity trigger must end as
#      a succeeded job with a completed call before the load starts:
#      a. saturation: BENCH_RUNNER_JOBS triggers sent as fast as the gateway
#         accepts them (wrk, same threads/connections as above, at most
#         BENCH_RUNNER_LOAD s), then wait until every job and call is final;
#      b. steady: triggers paced at BENCH_RUNNER_RATE/s for
#         BENCH_RUNNER_STEADY s (default rate: half of what a. executed), then
#         the same wait. Its first BENCH_WARMUP s are left out of latencies.
#      Figures come from the database (scripts/bench/runner_stats.py, read
#      only): jobs executed/s = succeeded jobs / (last 'succeeded' event -
#      first 'running' event); claim latency = first 'running' event -
#      jobs.created_at (the accept); calls completed/s likewise up to the last
#      call's end. Checks: every job succeeded, every call completed, no
#      wrk errors, no ERROR in the gateway log; warnings are reported.
#
#   6. PostgreSQL (only with BENCH_PG_URL set; in the same run, so the ratios
#      compare): each part in a fresh schema of that database, created with
#      psql before and dropped on exit (the gateway selects it with the URL's
#      `options=-csearch_path%3D<schema>`; CALLGATE_STORAGE__URL):
#      a. accept path (after the SQLite gateway, before the runner): the same
#         warm-up, measured run and checks as 3./4. against
#         scripts/bench/config, jobs counted in PostgreSQL;
#      b. runner, saturation phase only (BENCH_PG_RUNNER_JOBS triggers, as
#         in 5a.): with one `serve` (runner on, scripts/bench/runner-config), and
#         with `serve --no-runner` plus two `run-worker` processes on the same
#         schema (a copy of runner-config with a shared simulator secret; the
#         workers' simulators post call events to the serve process via
#         server.public_url and trust its self-signed certificate). Figures
#         from PostgreSQL via runner_stats.py (psql). Server CPU = all the
#         callgate processes of the phase; PostgreSQL's own CPU is reported
#         separately (the postgres processes' /proc/<pid>/stat).
#
# Load: POST /v1/triggers/demo-call, JSON body scripts/bench/body.json,
# Authorization: Bearer <HS256 JWT minted by `callgate jwt mint`> (the
# baseline receives the same bytes), HTTPS (HTTP/1.1 keep-alive; wrk does not
# offer h2), wrk with 2 threads and 32 connections.
#
# Settings (environment):
#   BENCH_DURATION=20     measured seconds per server
#   BENCH_WARMUP=3        warm-up seconds per server (not measured)
#   BENCH_CONNECTIONS=32  BENCH_THREADS=2
#   BENCH_RUNNER=1        0 skips the runner benchmark
#   BENCH_RUNNER_JOBS=20000  triggers in the saturation phase
#   BENCH_RUNNER_LOAD=15  seconds wrk may take to send them
#   BENCH_RUNNER_RATE=    triggers/s in the steady phase (default: half the
#                         saturation phase's jobs executed/s)
#   BENCH_RUNNER_STEADY=15  seconds of the steady phase
#   BENCH_RUNNER_CONNECTIONS=16  wrk connections in the steady phase
#   BENCH_RUNNER_DRAIN=180  longest wait for the jobs to finish, per phase
#   BENCH_RUNNER_WORKERS= overrides [runner] workers (default 8)
#   BENCH_SKIP_BUILD=1    use the existing release binaries
#   BENCH_PG_URL=         e.g. postgres://postgres@127.0.0.1:5432/test: also
#                         benchmark PostgreSQL (6.); needs psql and a role
#                         that may CREATE SCHEMA; unset: SQLite only
#   BENCH_PG_RUNNER_JOBS= triggers per PostgreSQL runner phase (default
#                         BENCH_RUNNER_JOBS; each phase must drain within
#                         BENCH_RUNNER_DRAIN)
#   BENCH_KEEP=1          keep the temp dir (logs, wrk output, database);
#                         it is also kept when the run fails
#   TMPDIR                where the temp data dir goes (its disk's fsync rate
#                         bounds the gateway: every 202 is a committed job)
#
# Exit status: 0 valid run (the report says whether the targets were met),
# 1 invalid run or setup failure. Everything it starts is stopped on exit.
# Only 127.0.0.1 is used. Time is bounded: each wait and each wrk run has a
# timeout; the accept-path part takes about 2 x (warm-up + duration) + ~15 s
# after the build, the runner part about BENCH_RUNNER_JOBS / (jobs executed/s)
# + BENCH_RUNNER_STEADY + ~15 s (at most 2 x (BENCH_RUNNER_DRAIN + 60) s).
# BENCH_PG_URL adds warm-up + duration + ~10 s and two more saturation
# phases (at most 2 x (BENCH_RUNNER_DRAIN + 60) s).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-20}
WARMUP=${BENCH_WARMUP:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
WRK_TIMEOUT=5 # seconds; slower answers count as timeouts (and invalidate the run)
TARGET_RATIO=0.5
TARGET_P99_MS=10

GATEWAY_BIN=$ROOT/target/release/callgate
BASELINE_BIN=$ROOT/target/release/examples/bench_baseline
CONFIG_DIR=scripts/bench/config
RUNNER_CONFIG_DIR=scripts/bench/runner-config
LUA=scripts/bench/post.lua
RUNNER_LUA=scripts/bench/runner.lua
STATS=scripts/bench/runner_stats.py
BODY_FILE=scripts/bench/body.json
TRIGGER_PATH=/v1/triggers/demo-call

log() { echo "bench: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

RUNNER=${BENCH_RUNNER:-1}
RUNNER_JOBS=${BENCH_RUNNER_JOBS:-20000}
RUNNER_LOAD=${BENCH_RUNNER_LOAD:-15}
RUNNER_RATE=${BENCH_RUNNER_RATE:-}
RUNNER_STEADY=${BENCH_RUNNER_STEADY:-15}
RUNNER_CONNECTIONS=${BENCH_RUNNER_CONNECTIONS:-16}
RUNNER_DRAIN=${BENCH_RUNNER_DRAIN:-180}
RUNNER_WORKERS=${BENCH_RUNNER_WORKERS:-}
PG_URL=${BENCH_PG_URL:-}
PG_RUNNER_JOBS=${BENCH_PG_RUNNER_JOBS:-$RUNNER_JOBS}
PG_TARGET_RATIO=0.2
PG_TARGET_JOBS=1000

for n in "$DURATION" "$WARMUP" "$CONNECTIONS" "$THREADS" "$RUNNER_JOBS" "$RUNNER_LOAD" \
	"$RUNNER_STEADY" "$RUNNER_CONNECTIONS" "$RUNNER_DRAIN" "$PG_RUNNER_JOBS" ${RUNNER_RATE:+"$RUNNER_RATE"} \
	${RUNNER_WORKERS:+"$RUNNER_WORKERS"}; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION/WARMUP/CONNECTIONS/THREADS and BENCH_RUNNER_* must be positive integers"
done
[[ $RUNNER == 0 || $RUNNER == 1 ]] || die "BENCH_RUNNER must be 0 or 1"
[[ -z $PG_URL || $PG_URL =~ ^postgres(ql)?:// ]] || die "BENCH_PG_URL must be a postgres:// URL"
[[ $PG_URL != *options=* ]] || die "BENCH_PG_URL must not set options= (the script picks the schema with it)"

# ---------------------------------------------------------------- clean-up

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgate-bench.XXXXXX")
PIDS=()
PG_SCHEMAS=() # created by pg_schema, dropped by cleanup

# Stops one process we started: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
	local pid=$1
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "process $pid did not stop within 10 s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		stop_pid "$pid"
	done
	for schema in "${PG_SCHEMAS[@]+"${PG_SCHEMAS[@]}"}"; do
		if [[ ${BENCH_KEEP:-} == 1 ]]; then
			log "PostgreSQL schema kept: $schema"
		else
			timeout 60 psql -X -q -d "$PG_URL" -v ON_ERROR_STOP=1 \
				-c "SET client_min_messages = warning; SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS $schema CASCADE" >&2 ||
				log "could not drop the PostgreSQL schema $schema"
		fi
	done
	# Kept for a look after a failure (not after an interrupt): logs, wrk
	# output, the gateway's database (~40 MB).
	if [[ ${BENCH_KEEP:-} == 1 ]] || ((rc != 0 && rc != 130 && rc != 143)); then
		log "temp dir kept: $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk; then
	log "wrk not found; installing the Debian package"
	if [[ $(id -u) -eq 0 ]]; then
		DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y wrk >&2 ||
			{ timeout 120 apt-get update >&2 && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y wrk >&2; } ||
			die "cannot install wrk"
	else
		die "install wrk (apt-get install wrk) and run again"
	fi
fi
need curl || die "curl is required"
need cargo || [[ ${BENCH_SKIP_BUILD:-} == 1 ]] || die "cargo is required (or BENCH_SKIP_BUILD=1)"
HAVE_SQLITE=0
need sqlite3 && HAVE_SQLITE=1
if [[ $RUNNER == 1 ]]; then
	need python3 || die "python3 is required for the runner benchmark (or BENCH_RUNNER=0)"
	python3 -c 'import sqlite3' 2>/dev/null || die "python3 has no sqlite3 module (needed by $STATS)"
fi
if [[ -n $PG_URL ]]; then
	need psql || die "psql is required with BENCH_PG_URL (apt-get install postgresql-client)"
	timeout 20 psql -X -q -At -d "$PG_URL" -c 'SELECT 1' >/dev/null || die "cannot connect to BENCH_PG_URL"
fi

# ---------------------------------------------------------------- build

BUILD_CMD="cargo build --release --bin callgate --example bench_baseline"
if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then
	log "$BUILD_CMD"
	$BUILD_CMD >&2 || die "build failed"
fi
[[ -x $GATEWAY_BIN && -x $BASELINE_BIN ]] || die "missing $GATEWAY_BIN or $BASELINE_BIN"

# ---------------------------------------------------------------- environment

# Only our settings reach the gateway: no CALLGATE_<SECTION>__<KEY> override
# from the caller's shell may change the benchmark config.
while read -r var; do
	unset "$var"
done < <(compgen -e | grep '^CALLGATE_' || true)
# The bench issuer's HMAC secret (random per run, >= 32 bytes).
CALLGATE_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export CALLGATE_JWT_SECRET

"$GATEWAY_BIN" check --config "$CONFIG_DIR" --data-dir "$TMP/gateway" >&2 ||
	die "the bench config does not validate"
if [[ $RUNNER == 1 ]]; then
	"$GATEWAY_BIN" check --config "$RUNNER_CONFIG_DIR" --data-dir "$TMP/runner-check" >&2 ||
		die "the runner bench config does not validate"
fi
TOKEN=$("$GATEWAY_BIN" jwt mint --issuer bench --sub bench --scope triggers:run --config "$CONFIG_DIR") ||
	die "cannot mint a token"
export BENCH_TOKEN=$TOKEN BENCH_BODY_FILE=$ROOT/$BODY_FILE

# A port nobody listens on (checked with a connect attempt).
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# wait_ready NAME PID PORT CACERT: polls /healthz for up to 30 s.
wait_ready() {
	local name=$1 pid=$2 port=$3 cacert=$4
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || {
			tail -n 20 "$TMP/$name.log" >&2
			die "$name exited during start-up"
		}
		if [[ -f $cacert ]] && curl -sf --max-time 2 --cacert "$cacert" \
			"https://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	tail -n 20 "$TMP/$name.log" >&2
	die "$name not ready within 30 s"
}

# sanity NAME PORT CACERT: one trigger with curl; must be exactly 202.
sanity() {
	local name=$1 port=$2 cacert=$3 code
	code=$(curl -s --max-time 10 --cacert "$cacert" -o "$TMP/$name-sanity.json" -w '%{http_code}' \
		-X POST -H 'Content-Type: application/json' -H 'Accept: application/json' \
		-H "Authorization: Bearer $TOKEN" --data-binary "@$BODY_FILE" \
		"https://127.0.0.1:$port$TRIGGER_PATH") || code=000
	if [[ $code != 202 ]]; then
		cat "$TMP/$name-sanity.json" >&2 2>/dev/null || true
		echo >&2
		die "$name answered $code, not 202, to the sanity request"
	fi
	log "$name sanity request: 202 $(head -c 200 "$TMP/$name-sanity.json")"
}

WRK_ARGS=(--threads "$THREADS" --connections "$CONNECTIONS" --timeout "${WRK_TIMEOUT}s" --latency --script "$LUA")

# run_wrk OUTFILE SECONDS PORT [WRK ARGS]: one wrk run, bounded by
# `timeout`; the arguments default to WRK_ARGS.
run_wrk() {
	local out=$1 secs=$2 port=$3 pid rc=0
	shift 3
	(($# > 0)) || set -- "${WRK_ARGS[@]}"
	timeout -k 5 $((secs + 30)) wrk "$@" --duration "${secs}s" \
		"https://127.0.0.1:$port$TRIGGER_PATH" >"$out" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait "$pid" || rc=$?
	[[ $rc -eq 0 ]] || {
		cat "$out" >&2
		die "wrk failed (exit $rc)"
	}
	grep -q '^BENCH ' "$out" || {
		cat "$out" >&2
		die "wrk printed no BENCH line"
	}
}

# field FILE KEY: a value from the BENCH line.
field() { grep '^BENCH ' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# CPU time (user + system) of a process, in clock ticks.
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Per thread of a process: "tid name ticks" lines.
thread_ticks() {
	local t
	for t in /proc/"$1"/task/*; do
		# The name is in parentheses and may hold spaces; the fields after it are fixed.
		awk -v tid="${t##*/}" '{ s = $0; sub(/^[^(]*\(/, "", s); name = s; sub(/\).*$/, "", name)
			sub(/^.*\) /, "", s); split(s, f, " "); gsub(/ /, "_", name); print tid, name, f[12] + f[13] }' "$t/stat" 2>/dev/null || true
	done
}
CLK_TCK=$(getconf CLK_TCK)

# bench NAME PORT PID CACERT: warm-up, then the measured run; records the
# server's CPU use during the measured run in $TMP/NAME.cpu (cores).
bench() {
	local name=$1 port=$2 pid=$3 cacert=$4 c0 c1 t0 t1
	wait_ready "$name" "$pid" "$port" "$cacert"
	sanity "$name" "$port" "$cacert"
	log "$name: warm-up ${WARMUP}s"
	run_wrk "$TMP/$name-warmup.txt" "$WARMUP" "$port"
	log "$name: measuring ${DURATION}s ($THREADS threads, $CONNECTIONS connections)"
	c0=$(proc_ticks "$pid")
	t0=$(date +%s.%N)
	run_wrk "$TMP/$name.txt" "$DURATION" "$port"
	c1=$(proc_ticks "$pid")
	t1=$(date +%s.%N)
	awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" \
		'BEGIN { printf "%.2f", (c1 - c0) / hz / (t1 - t0) }' >"$TMP/$name.cpu"
	log "$name: $(grep '^BENCH ' "$TMP/$name.txt" | cut -c7-) server_cpu_cores=$(cat "$TMP/$name.cpu")"
}

# Share of all CPUs busy over one second (other load skews the numbers).
cpu_busy_pct() {
	local a b
	a=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	echo "$a $b" | awk '{ t = $3 - $1; i = $4 - $2; printf "%d", (t > 0 ? 100 * (t - i) / t : 0) }'
}

# ---------------------------------------------------------------- baseline

IDLE_BUSY=$(cpu_busy_pct)
if ((IDLE_BUSY > 15)); then
	log "warning: the machine was ${IDLE_BUSY}% busy before the run (other processes); results are skewed"
fi

BASELINE_PORT=$(free_port)
"$BASELINE_BIN" "127.0.0.1:$BASELINE_PORT" "$TMP/baseline" >"$TMP/baseline.out" 2>"$TMP/baseline.log" &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
log "baseline: pid $BASELINE_PID on 127.0.0.1:$BASELINE_PORT"
bench baseline "$BASELINE_PORT" "$BASELINE_PID" "$TMP/baseline/tls/cert.pem"
stop_pid "$BASELINE_PID"

# ---------------------------------------------------------------- gateway

# hide_password TEXT: TEXT with any URL's password replaced by ***.
hide_password() { sed -E 's#(://[^:/@ ]*):[^@/ ]*@#\1:***@#g' <<<"$1"; }

# start_gateway NAME CONFIG_DIR [VAR=VALUE...]: `callgate serve` with a fresh
# data dir $TMP/NAME, logs in $TMP/NAME.log; sets GATEWAY_PID, GATEWAY_PORT.
# SERVE_ARGS (an array, usually empty) is appended to the command line.
SERVE_ARGS=()
start_gateway() {
	local name=$1 config=$2
	shift 2
	GATEWAY_PORT=$(free_port)
	env CALLGATE_LOG=warn "$@" "$GATEWAY_BIN" serve --config "$config" --data-dir "$TMP/$name" \
		--listen "127.0.0.1:$GATEWAY_PORT" ${SERVE_ARGS[@]+"${SERVE_ARGS[@]}"} >"$TMP/$name.out" 2>"$TMP/$name.log" &
	GATEWAY_PID=$!
	PIDS+=("$GATEWAY_PID")
	log "$name: pid $GATEWAY_PID on 127.0.0.1:$GATEWAY_PORT ($config, CALLGATE_LOG=warn$(hide_password "${*:+ $*}")${SERVE_ARGS[*]+ ${SERVE_ARGS[*]}})"
}

# pg_schema NAME: creates a fresh schema in BENCH_PG_URL's database (dropped
# on exit) and sets PG_PHASE_URL to the URL that selects it.
pg_schema() {
	local schema
	schema="callgate_bench_$$_${1//-/_}"
	timeout 30 psql -X -q -d "$PG_URL" -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $schema" >&2 ||
		die "cannot create the PostgreSQL schema $schema"
	PG_SCHEMAS+=("$schema")
	if [[ $PG_URL == *\?* ]]; then
		PG_PHASE_URL="$PG_URL&options=-csearch_path%3D$schema"
	else
		PG_PHASE_URL="$PG_URL?options=-csearch_path%3D$schema"
	fi
}

# CPU time of every PostgreSQL server process (postmaster, backends,
# background workers), in clock ticks; other clients' work is counted too.
pg_ticks() {
	# A process that ends between the glob and the read makes cat fail.
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '$2 == "(postgres)" { t += $14 + $15 } END { print t + 0 }'
}

start_gateway gateway "$CONFIG_DIR"
bench gateway "$GATEWAY_PORT" "$GATEWAY_PID" "$TMP/gateway/tls/cert.pem"
# A clean stop commits the last batch; then the database can be counted.
stop_pid "$GATEWAY_PID"

# The same accept path on PostgreSQL (runner off, the jobs stay queued).
if [[ -n $PG_URL ]]; then
	pg_schema gateway-pg
	GATEWAY_PG_URL=$PG_PHASE_URL
	start_gateway gateway-pg "$CONFIG_DIR" "CALLGATE_STORAGE__URL=$GATEWAY_PG_URL"
	p0=$(pg_ticks)
	bench gateway-pg "$GATEWAY_PORT" "$GATEWAY_PID" "$TMP/gateway-pg/tls/cert.pem"
	p1=$(pg_ticks)
	# PostgreSQL's CPU over warm-up and measured run (cores, averaged).
	awk -v c="$((p1 - p0))" -v hz="$CLK_TCK" -v s="$((WARMUP + DURATION))" \
		'BEGIN { printf "%.2f", c / hz / s }' >"$TMP/gateway-pg.pgcpu"
	stop_pid "$GATEWAY_PID"
fi

# ---------------------------------------------------------------- runner

RUNNER_INVALID=()
RUNNER_NOTES=()

# rstat NAME KEY: a value from the runner phase's $TMP/NAME.stats.
rstat() { sed -n "s/^$2=//p" "$TMP/$1.stats" | head -n 1; }

# The current runner phase: its database (SQLite file or PostgreSQL URL)
# and its callgate processes ("role:pid").
PHASE_DB=""
PHASE_PIDS=()

# runner_pending NAME: "jobs=N pending_jobs=N active_calls=N".
runner_pending() { python3 "$STATS" "$PHASE_DB" pending 2>&1 | tail -n 1; }

# wait_drained NAME SECONDS: until the gateway's database has jobs, none of
# them still to run (queued, running, scheduled, waiting) and no call in
# progress (queued, dialing, ringing, in_progress). 1 on timeout.
wait_drained() {
	local name=$1 secs=$2 line="" deadline=$((SECONDS + $2)) last=$SECONDS
	while ((SECONDS < deadline)); do
		for rp in "${PHASE_PIDS[@]}"; do
			kill -0 "${rp#*:}" 2>/dev/null || {
				tail -n 20 "$TMP/$name.log" "$TMP/$name"-worker*.log >&2 2>/dev/null || true
				die "$name: ${rp%%:*} exited during the run"
			}
		done
		line=$(runner_pending "$name") || line=""
		if [[ $line =~ ^jobs=[1-9][0-9]*\ pending_jobs=0\ active_calls=0$ ]]; then
			return 0
		fi
		if ((SECONDS - last >= 10)); then
			log "$name: $line"
			last=$SECONDS
		fi
		sleep 0.5
	done
	log "$name: not finished after ${secs}s: $line"
	return 1
}

# phase_ticks: CPU ticks of all of the phase's processes.
phase_ticks() {
	local rp t=0
	for rp in "${PHASE_PIDS[@]}"; do
		t=$((t + $(proc_ticks "${rp#*:}")))
	done
	echo "$t"
}

# phase_thread_ticks: thread_ticks of every process of the phase; with more
# than one process, thread names get the process's role as a prefix.
phase_thread_ticks() {
	local rp
	for rp in "${PHASE_PIDS[@]}"; do
		if ((${#PHASE_PIDS[@]} > 1)); then
			thread_ticks "${rp#*:}" | awk -v r="${rp%%:*}" '{ print $1, r ":" $2, $3 }'
		else
			thread_ticks "${rp#*:}"
		fi
	done
}

# runner_phase NAME TRIGGERS RATE SECONDS CONNECTIONS WARMUP_MS [MODE]: a
# fresh gateway with the runner on; a sanity trigger that must end as a
# succeeded job with a completed call; then TRIGGERS triggers (RATE/s, 0: as
# fast as they are accepted) within SECONDS; then the wait for every job and
# call to finish; then a clean stop and the figures in $TMP/NAME.stats.
# Server CPU from the load's start to the end of the wait goes to
# $TMP/NAME.cpu (CPU seconds) and the wall time to $TMP/NAME.wall.
# MODE: sqlite (default: the embedded database in the data dir); pg (the
# same on a fresh PostgreSQL schema); pg-workers (`serve --no-runner` and
# two `run-worker` processes sharing a fresh PostgreSQL schema; PostgreSQL's
# CPU over the same span goes to $TMP/NAME.pgcpu with pg and pg-workers).
runner_phase() {
	local name=$1 total=$2 rate=$3 secs=$4 conns=$5 warmup_ms=$6 mode=${7:-sqlite} c0 c1 t0 t1 since drained=1 i wdir p0=0 p1=0
	local env_args=(${RUNNER_WORKERS:+"CALLGATE_RUNNER__WORKERS=$RUNNER_WORKERS"})
	case $mode in
	sqlite)
		PHASE_DB=$TMP/$name/callgate.db
		start_gateway "$name" "$RUNNER_CONFIG_DIR" ${env_args[@]+"${env_args[@]}"}
		;;
	pg)
		pg_schema "$name"
		PHASE_DB=$PG_PHASE_URL
		start_gateway "$name" "$RUNNER_CONFIG_DIR" "CALLGATE_STORAGE__URL=$PHASE_DB" ${env_args[@]+"${env_args[@]}"}
		;;
	pg-workers)
		pg_schema "$name"
		PHASE_DB=$PG_PHASE_URL
		SERVE_ARGS=(--no-runner)
		start_gateway "$name" "$PG_RUNNER_CONFIG_DIR" "CALLGATE_STORAGE__URL=$PHASE_DB"
		SERVE_ARGS=()
		;;
	*) die "unknown runner phase mode $mode" ;;
	esac
	PHASE_PIDS=("serve:$GATEWAY_PID")
	wait_ready "$name" "$GATEWAY_PID" "$GATEWAY_PORT" "$TMP/$name/tls/cert.pem"
	if [[ $mode == pg-workers ]]; then
		# The workers' simulators post call events to the serve process and
		# trust its self-signed certificate (read from <data dir>/tls/cert.pem).
		for i in 1 2; do
			wdir=$TMP/$name-worker$i
			mkdir -p "$wdir/tls"
			cp "$TMP/$name/tls/cert.pem" "$wdir/tls/cert.pem"
			env CALLGATE_LOG=warn "CALLGATE_STORAGE__URL=$PHASE_DB" \
				"CALLGATE_SERVER__PUBLIC_URL=https://127.0.0.1:$GATEWAY_PORT" ${env_args[@]+"${env_args[@]}"} \
				"$GATEWAY_BIN" run-worker --config "$PG_RUNNER_CONFIG_DIR" --data-dir "$wdir" \
				>"$wdir.out" 2>"$wdir.log" &
			PIDS+=("$!")
			PHASE_PIDS+=("worker$i:$!")
			log "$name: run-worker $i: pid $! ($PG_RUNNER_CONFIG_DIR, server.public_url https://127.0.0.1:$GATEWAY_PORT)"
		done
	fi
	sanity "$name" "$GATEWAY_PORT" "$TMP/$name/tls/cert.pem"
	wait_drained "$name" 15 || die "$name: the sanity trigger did not finish within 15 s"
	python3 "$STATS" "$PHASE_DB" stats 0 0 >"$TMP/$name-sanity.stats" ||
		die "cannot read the $name database"
	grep -qx 'jobs_succeeded=1' "$TMP/$name-sanity.stats" && grep -qx 'calls_completed=1' "$TMP/$name-sanity.stats" || {
		cat "$TMP/$name-sanity.stats" >&2
		die "$name: the sanity trigger did not end as a succeeded job with a completed call"
	}
	log "$name: sanity trigger ran: job succeeded, call completed"

	export BENCH_TOTAL=$total BENCH_RATE=$rate BENCH_WRK_THREADS=$THREADS BENCH_WRK_CONNS=$conns
	export BENCH_POST_LUA=$ROOT/$LUA
	log "$name: $total triggers$( ((rate > 0)) && echo " at $rate/s" || echo " as fast as accepted") (wrk $THREADS threads, $conns connections, at most ${secs}s)"
	since=$(date +%s%3N)
	c0=$(phase_ticks)
	phase_thread_ticks >"$TMP/$name.threads0"
	[[ $mode == sqlite ]] || p0=$(pg_ticks)
	t0=$(date +%s.%N)
	run_wrk "$TMP/$name.txt" "$secs" "$GATEWAY_PORT" --threads "$THREADS" --connections "$conns" \
		--timeout "${WRK_TIMEOUT}s" --latency --script "$RUNNER_LUA"
	log "$name: wrk done: $(grep '^BENCH ' "$TMP/$name.txt" | cut -c7-); waiting for the jobs (at most ${RUNNER_DRAIN}s)"
	wait_drained "$name" "$RUNNER_DRAIN" || drained=0
	c1=$(phase_ticks)
	phase_thread_ticks >"$TMP/$name.threads1"
	[[ $mode == sqlite ]] || p1=$(pg_ticks)
	t1=$(date +%s.%N)
	awk -v c0="$c0" -v c1="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (c1 - c0) / hz }' >"$TMP/$name.cpu"
	# CPU seconds by thread name; threads that ended meanwhile (blocking-pool
	# threads) are in "ended threads".
	awk -v hz="$CLK_TCK" -v total="$((c1 - c0))" '
		FNR == NR { before[$1] = $3; next }
		{ d = $3 - before[$1]; by[$2] += d; sum += d }
		END {
			for (n in by) if (by[n] > 0) printf "%s %.2f s, ", n, by[n] / hz
			printf "ended threads %.2f s", (total - sum) / hz
		}' "$TMP/$name.threads0" "$TMP/$name.threads1" >"$TMP/$name.cpu-threads"
	awk -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", t1 - t0 }' >"$TMP/$name.wall"
	[[ $mode == sqlite ]] || awk -v c="$((p1 - p0))" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", c / hz }' >"$TMP/$name.pgcpu"
	# Workers first, so the serve process still takes their last callbacks.
	for ((i = ${#PHASE_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PHASE_PIDS[i]#*:}"
	done
	python3 "$STATS" "$PHASE_DB" stats "$since" "$warmup_ms" >"$TMP/$name.stats" ||
		die "cannot read the $name database"
	((drained)) || RUNNER_INVALID+=("$name: jobs or calls still unfinished after ${RUNNER_DRAIN}s")
	log "$name: $(tr '\n' ' ' <"$TMP/$name.stats" | cut -c1-400)"
}

if [[ $RUNNER == 1 ]]; then
	RUNNER_BUSY=$(cpu_busy_pct)
	if ((RUNNER_BUSY > 15)); then
		log "warning: the machine was ${RUNNER_BUSY}% busy before the runner benchmark (other processes); results are skewed"
	fi
	runner_phase runner-saturation "$RUNNER_JOBS" 0 "$RUNNER_LOAD" "$CONNECTIONS" 0
	if [[ -z $RUNNER_RATE ]]; then
		RUNNER_RATE=$(awk -v r="$(rstat runner-saturation jobs_per_s)" \
			'BEGIN { v = int(r / 2 / 10) * 10; print (v >= 10 ? v : 10) }')
		RATE_NOTE="half the saturation phase's jobs executed/s, rounded down to tens"
	else
		RATE_NOTE="BENCH_RUNNER_RATE"
	fi
	runner_phase runner-steady $((RUNNER_RATE * RUNNER_STEADY)) "$RUNNER_RATE" $((RUNNER_STEADY + 3)) \
		"$RUNNER_CONNECTIONS" $((WARMUP * 1000))
fi

# PostgreSQL runner phases (saturation only): one serve with the runner, then
# serve --no-runner + two run-worker processes. The workers' config is the
# runner config with one simulator secret for all processes (the serve
# process verifies the events the workers' simulators send).
RUNNER_PG_PHASES=()
if [[ $RUNNER == 1 && -n $PG_URL ]]; then
	PG_RUNNER_CONFIG_DIR=$TMP/pg-runner-config
	cp -rL "$RUNNER_CONFIG_DIR" "$PG_RUNNER_CONFIG_DIR"
	printf '\n# Added by scripts/bench.sh: one secret for the serve and run-worker processes.\ncallback_secret = "whsec_%s"\n' \
		"$(head -c 24 /dev/urandom | base64 | tr -d '\n')" >>"$PG_RUNNER_CONFIG_DIR/providers.toml"
	"$GATEWAY_BIN" check --config "$PG_RUNNER_CONFIG_DIR" --data-dir "$TMP/pg-runner-check" >&2 ||
		die "the PostgreSQL runner bench config does not validate"
	RUNNER_PG_BUSY=$(cpu_busy_pct)
	if ((RUNNER_PG_BUSY > 15)); then
		log "warning: the machine was ${RUNNER_PG_BUSY}% busy before the PostgreSQL runner benchmark (other processes); results are skewed"
	fi
	runner_phase runner-pg "$PG_RUNNER_JOBS" 0 "$RUNNER_LOAD" "$CONNECTIONS" 0 pg
	runner_phase runner-pg-workers "$PG_RUNNER_JOBS" 0 "$RUNNER_LOAD" "$CONNECTIONS" 0 pg-workers
	RUNNER_PG_PHASES=(runner-pg runner-pg-workers)
fi

# ---------------------------------------------------------------- checks

INVALID=()
ACCEPT_SERVERS=(baseline gateway)
[[ -z $PG_URL ]] || ACCEPT_SERVERS+=(gateway-pg)
for name in "${ACCEPT_SERVERS[@]}"; do
	for f in "$TMP/$name-warmup.txt" "$TMP/$name.txt"; do
		for k in non2xx connect_errors read_errors write_errors timeouts; do
			v=$(field "$f" "$k")
			[[ $v == 0 ]] || INVALID+=("$name ($(basename "$f" .txt)): $k=$v")
		done
	done
done

# Every 2xx the gateway sent must be a job in the database: the sanity
# request + the 2xx of both wrk runs, plus at most one in-flight request per
# connection per run that committed after wrk stopped counting.
GW_OK_TOTAL=$((1 + $(field "$TMP/gateway-warmup.txt" ok) + $(field "$TMP/gateway.txt" ok)))
DB_CHECK="skipped (sqlite3 not installed)"
if [[ $HAVE_SQLITE == 1 ]]; then
	DB_JOBS=$(sqlite3 "$TMP/gateway/callgate.db" "SELECT count(*) FROM jobs WHERE trigger_id = 'demo-call'") ||
		die "cannot read the gateway database"
	SLACK=$((2 * CONNECTIONS))
	if ((DB_JOBS >= GW_OK_TOTAL && DB_JOBS <= GW_OK_TOTAL + SLACK)); then
		DB_CHECK="ok: $DB_JOBS jobs in SQLite for $GW_OK_TOTAL 2xx answers counted (sanity + warm-up + measured; up to $SLACK in flight at wrk's stop may add)"
	else
		DB_CHECK="FAILED: $DB_JOBS jobs in SQLite for $GW_OK_TOTAL 2xx answers counted"
		INVALID+=("gateway: database holds $DB_JOBS jobs, wrk counted $GW_OK_TOTAL 2xx")
	fi
	# The runner was off: no job may have left `queued`.
	DB_RAN=$(sqlite3 "$TMP/gateway/callgate.db" "SELECT count(*) FROM jobs WHERE status <> 'queued'") ||
		die "cannot read the gateway database"
	if ((DB_RAN == 0)); then
		DB_CHECK="$DB_CHECK; runner off: all of them still queued"
	else
		DB_CHECK="$DB_CHECK; FAILED: $DB_RAN jobs left queued, so the runner ran during the accept-path benchmark"
		INVALID+=("gateway: the runner ran ($DB_RAN jobs not queued)")
	fi
fi
# The same on PostgreSQL: counted in the run's schema.
PG_DB_CHECK=""
if [[ -n $PG_URL ]]; then
	PG_OK_TOTAL=$((1 + $(field "$TMP/gateway-pg-warmup.txt" ok) + $(field "$TMP/gateway-pg.txt" ok)))
	read -r PG_JOBS PG_RAN < <(timeout 60 psql -X -q -At -F ' ' -d "$GATEWAY_PG_URL" -v ON_ERROR_STOP=1 \
		-c "SELECT count(*) FILTER (WHERE trigger_id = 'demo-call'), count(*) FILTER (WHERE status <> 'queued') FROM jobs") ||
		die "cannot read the gateway-pg schema"
	SLACK=$((2 * CONNECTIONS))
	if ((PG_JOBS >= PG_OK_TOTAL && PG_JOBS <= PG_OK_TOTAL + SLACK)); then
		PG_DB_CHECK="ok: $PG_JOBS jobs in PostgreSQL for $PG_OK_TOTAL 2xx answers counted (sanity + warm-up + measured; up to $SLACK in flight at wrk's stop may add)"
	else
		PG_DB_CHECK="FAILED: $PG_JOBS jobs in PostgreSQL for $PG_OK_TOTAL 2xx answers counted"
		INVALID+=("gateway-pg: database holds $PG_JOBS jobs, wrk counted $PG_OK_TOTAL 2xx")
	fi
	if ((PG_RAN == 0)); then
		PG_DB_CHECK="$PG_DB_CHECK; runner off: all of them still queued"
	else
		PG_DB_CHECK="$PG_DB_CHECK; FAILED: $PG_RAN jobs left queued, so the runner ran during the accept-path benchmark"
		INVALID+=("gateway-pg: the runner ran ($PG_RAN jobs not queued)")
	fi
fi
# wrk sends the IP address as TLS SNI, which rustls logs (at warn) once per
# connection and ignores; anything else at warn or error is worth a look.
SNI_WARNINGS=$(grep -c 'Illegal SNI extension' "$TMP/gateway.log" || true)
for name in "${ACCEPT_SERVERS[@]:1}"; do
	if grep -v 'Illegal SNI extension' "$TMP/$name.log" | grep -qE ' (ERROR|WARN) '; then
		log "$name log has warnings/errors:"
		grep -v 'Illegal SNI extension' "$TMP/$name.log" | grep -E ' (ERROR|WARN) ' | head -n 10 >&2
	fi
	if grep -qE ' ERROR ' "$TMP/$name.log"; then
		INVALID+=("$name logged errors (kept in $TMP/$name.log)")
	fi
done

# Runner phases: wrk clean, one job per 2xx, every job succeeded with one
# completed call, no ERROR in the log. Warnings are listed in the report.
RUNNER_WARNINGS=""
if [[ $RUNNER == 1 ]]; then
	for name in runner-saturation runner-steady ${RUNNER_PG_PHASES[@]+"${RUNNER_PG_PHASES[@]}"}; do
		for k in non2xx connect_errors read_errors write_errors timeouts; do
			v=$(field "$TMP/$name.txt" "$k")
			[[ $v == 0 ]] || RUNNER_INVALID+=("$name: wrk $k=$v")
		done
		ok=$(field "$TMP/$name.txt" ok)
		jobs=$(rstat "$name" jobs)
		engine=SQLite
		[[ $name != runner-pg* ]] || engine=PostgreSQL
		[[ $jobs == "$ok" ]] || RUNNER_INVALID+=("$name: $jobs jobs in $engine for $ok 2xx counted by wrk")
		[[ $(rstat "$name" jobs_succeeded) == "$jobs" ]] ||
			RUNNER_INVALID+=("$name: of $jobs jobs $(rstat "$name" jobs_succeeded) succeeded ($(grep '^jobs_' "$TMP/$name.stats" | tr '\n' ' '))")
		[[ $(rstat "$name" calls_completed) == "$jobs" ]] ||
			RUNNER_INVALID+=("$name: $(rstat "$name" calls_completed) of $jobs calls completed ($(grep '^calls_' "$TMP/$name.stats" | tr '\n' ' '))")
		# The gateway's log, and with run-worker processes theirs too.
		logs=("$TMP/$name.log")
		for f in "$TMP/$name"-worker[0-9].log; do
			[[ -f $f ]] && logs+=("$f")
		done
		if grep -qE ' ERROR ' "${logs[@]}"; then
			RUNNER_INVALID+=("$name: the gateway logged errors (kept in ${logs[*]})")
		fi
		# Warnings and errors other than wrk's SNI, verbatim (first 10), and
		# counted by message with ids and times taken out.
		lines=$(cat "${logs[@]}" | grep -v 'Illegal SNI extension' | grep -E ' (ERROR|WARN) ' || true)
		if [[ -n $lines ]]; then
			RUNNER_WARNINGS+="
$name: $(wc -l <<<"$lines") warning/error lines in the gateway log; the first 10:
\`\`\`
$(head -n 10 <<<"$lines")
\`\`\`
by message (ids, numbers and times replaced):
\`\`\`
$(sed -E 's/^[0-9T:.-]+Z +//; s/[a-z]+_[0-9A-HJKMNP-TV-Z]{26}/<id>/g; s/[0-9]+/N/g' <<<"$lines" | sort | uniq -c | sort -rn | head -n 15)
\`\`\`"
		fi
	done
fi

# ---------------------------------------------------------------- report

ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }
BL_RPS=$(field "$TMP/baseline.txt" ok_per_s)
GW_RPS=$(field "$TMP/gateway.txt" ok_per_s)
RATIO=$(awk -v g="$GW_RPS" -v b="$BL_RPS" 'BEGIN { printf "%.2f", (b > 0 ? g / b : 0) }')
GW_P99_MS=$(ms "$(field "$TMP/gateway.txt" p99_us)")
RATIO_OK=$(awk -v r="$RATIO" -v t="$TARGET_RATIO" 'BEGIN { print (r >= t ? "met" : "MISSED") }')
P99_OK=$(awk -v p="$GW_P99_MS" -v t="$TARGET_P99_MS" 'BEGIN { print (p < t ? "met" : "MISSED") }')

row() {
	local label=$1 name=$2 f=$TMP/$2.txt cores
	cores=$(cat "$TMP/$name.cpu")
	printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n' "$label" \
		"$(field "$f" ok_per_s)" "$(ms "$(field "$f" p50_us)")" "$(ms "$(field "$f" p90_us)")" \
		"$(ms "$(field "$f" p99_us)")" "$(ms "$(field "$f" max_us)")" "$(field "$f" ok)" "$cores" \
		"$(awk -v c="$cores" -v r="$(field "$f" ok_per_s)" 'BEGIN { printf "%.0f", (r > 0 ? c * 1e6 / r : 0) }')"
}

CPU_MODEL=$(grep -m1 -E '^(model name|Model|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
FS=$(df -PT "$TMP" 2>/dev/null | awk 'NR == 2 { print $2 " on " $1 }')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT + uncommitted changes in src/Cargo"

cat <<EOF
## callgate accept-path benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ))

| server | 2xx/s | p50 ms | p90 ms | p99 ms | max ms | 2xx answers | server CPU (cores) | server CPU µs/request |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
$(row "baseline: bare axum JSON handler, same TLS accept loop" baseline)
$(row "gateway: POST $TRIGGER_PATH, full accept path" gateway)

- **throughput ratio gateway / baseline: $RATIO** (target >= $TARGET_RATIO: $RATIO_OK)
- **gateway p99: $GW_P99_MS ms** (target < $TARGET_P99_MS ms: $P99_OK)
- gateway 2xx are accepted triggers: $DB_CHECK
- validity: $(if ((${#INVALID[@]} == 0)); then echo "no non-2xx answers, socket errors or timeouts in any run"; else echo "INVALID: ${INVALID[*]}"; fi)

Setup: wrk $THREADS threads, $CONNECTIONS connections, HTTPS (TLS 1.3, HTTP/1.1 keep-alive), ${WARMUP}s warm-up then ${DURATION}s measured per server, baseline first; wrk and the server share the machine's cores.
Gateway: runner off (\`[runner] enabled = false\` in $CONFIG_DIR/callgate.toml; the jobs stay queued), JWT (HS256) auth, rate limits on but set to 1,000,000/s, JSON Schema validation and E.164 normalisation of the demo-call trigger, durable SQLite insert (WAL, synchronous=FULL, group commit) in a fresh temp data dir ($FS); logs at \`CALLGATE_LOG=warn\`, so no per-request access-log lines are written.
The gateway's log had $SNI_WARNINGS rustls "Illegal SNI extension" warnings (wrk sends the IP address as SNI; one per connection, harmless).
Machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r); ${IDLE_BUSY}% CPU busy just before the run; commit $COMMIT.

Command: \`scripts/bench.sh\` (BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_CONNECTIONS=$CONNECTIONS BENCH_THREADS=$THREADS), which runs:
\`\`\`
$BUILD_CMD
target/release/examples/bench_baseline 127.0.0.1:<port> \$TMP/baseline
CALLGATE_LOG=warn target/release/callgate serve --config $CONFIG_DIR --data-dir \$TMP/gateway --listen 127.0.0.1:<port>
target/release/callgate jwt mint --issuer bench --sub bench --scope triggers:run --config $CONFIG_DIR   # -> BENCH_TOKEN
BENCH_TOKEN=... BENCH_BODY_FILE=$BODY_FILE wrk ${WRK_ARGS[*]} --duration ${DURATION}s https://127.0.0.1:<port>$TRIGGER_PATH
\`\`\`
EOF

# ---------------------------------------------------------------- runner report

if [[ $RUNNER == 1 ]]; then
	# num VALUE [DECIMALS]: thousands separators; "n/a" when absent.
	num() {
		awk -v v="$1" -v d="${2:-0}" 'BEGIN {
			if (v == "" || v == "na") { print "n/a"; exit }
			s = sprintf("%.*f", d, v); sign = ""
			if (substr(s, 1, 1) == "-") { sign = "-"; s = substr(s, 2) }
			i = index(s, "."); frac = ""
			if (i > 0) { frac = substr(s, i); s = substr(s, 1, i - 1) }
			while (length(s) > 3) { frac = "," substr(s, length(s) - 2) frac; s = substr(s, 1, length(s) - 3) }
			print sign s frac
		}'
	}
	rrow() {
		local label=$1 n=$2 jobs cpu
		jobs=$(rstat "$n" jobs)
		cpu=$(cat "$TMP/$n.cpu")
		printf '| %s | %s | %s | %s | %s | %s | **%s** | %s | **%s** | **%s** | %s | %s / %s | %s |\n' "$label" \
			"$(num "$jobs")" \
			"$(num "$(awk -v n="$jobs" -v s="$(rstat "$n" accepted_span_ms)" 'BEGIN { if (s > 0) print (n - 1) * 1000 / s; else print "na" }')")" \
			"$(ms "$(field "$TMP/$n.txt" p99_us)")" \
			"$(num "$(rstat "$n" jobs_succeeded)")" "$(num "$(rstat "$n" calls_completed)")" \
			"$(num "$(rstat "$n" jobs_per_s)")" "$(num "$(rstat "$n" calls_per_s)")" \
			"$(num "$(rstat "$n" claim_p50_ms)")" "$(num "$(rstat "$n" claim_p99_ms)")" "$(num "$(rstat "$n" claim_max_ms)")" \
			"$(num "$(rstat "$n" complete_p50_ms)")" "$(num "$(rstat "$n" complete_p99_ms)")" \
			"$(awk -v c="$cpu" -v n="$jobs" 'BEGIN { printf "%.0f", (n > 0 ? c * 1e6 / n : 0) }')"
	}
	# span NAME: seconds from the first claim to the last call's end.
	span() {
		awk -v t0="$(rstat "$1" first_running_ms)" -v e="$(rstat "$1" last_call_end_ms)" \
			'BEGIN { if (t0 == "na" || e == "na" || t0 == "" || e == "") print "n/a"; else printf "%.1f", (e - t0) / 1000 }'
	}
	SAT_SENT=$(field "$TMP/runner-saturation.txt" requests)
	STEADY_SENT=$(field "$TMP/runner-steady.txt" requests)
	cat <<EOF

## callgate runner benchmark: simulator with zero ring time, embedded SQLite

| phase | triggers accepted | accept rate /s | accept p99 ms (wrk) | jobs succeeded | calls completed | jobs executed/s | calls completed/s | claim p50 ms | claim p99 ms | claim max ms | accepted → call completed p50 / p99 ms | server CPU µs/job |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(rrow "saturation: $(num "$RUNNER_JOBS") triggers as fast as accepted ($CONNECTIONS connections)" runner-saturation)
$(rrow "steady: $RUNNER_RATE triggers/s for ${RUNNER_STEADY}s ($RUNNER_CONNECTIONS connections; latencies without the first ${WARMUP}s)" runner-steady)

- jobs executed/s = succeeded jobs / (last \`succeeded\` event − first \`running\` event); calls completed/s = completed calls / (last call end − first \`running\` event); claim = first \`running\` event − \`jobs.created_at\` (the accept). All from the jobs, job_events and calls tables (Unix ms).
- saturation: wrk sent $(num "$SAT_SENT") of $(num "$RUNNER_JOBS") triggers within ${RUNNER_LOAD}s; first claim to last call end $(span runner-saturation) s; $(num "$(rstat runner-saturation done_at_last_accept_pct)")% of the jobs had succeeded when the last trigger was accepted. Execution rate over the first tenth of the jobs (deep backlog) **$(num "$(rstat runner-saturation rate_first_per_s)")/s**, over the last tenth (backlog almost empty) **$(num "$(rstat runner-saturation rate_last_per_s)")/s**; by tenths: $(rstat runner-saturation rate_tenths_per_s | sed 's/,/, /g') /s. Claim latency in this phase is mostly time in the backlog; the steady phase shows the claim path itself.
- steady: rate from $RATE_NOTE; wrk sent $(num "$STEADY_SENT") triggers; first claim to last call end $(span runner-steady) s; accepted → job succeeded p50/p99 $(num "$(rstat runner-steady succeed_p50_ms)") / $(num "$(rstat runner-steady succeed_p99_ms)") ms.
- callback path (zero ring time still means three signed HTTPS callbacks per call, ringing → in_progress → completed, each a durable write at the gateway, on the same cores): dial requested → call completed p50/p99 $(num "$(rstat runner-saturation callback_p50_ms)") / $(num "$(rstat runner-saturation callback_p99_ms)") ms (saturation), $(num "$(rstat runner-steady callback_p50_ms)") / $(num "$(rstat runner-steady callback_p99_ms)") ms (steady); call events stored: $(num "$(rstat runner-saturation call_events)") and $(num "$(rstat runner-steady call_events)") (3 per call expected).
- claims (\`running\` events): $(num "$(rstat runner-saturation claims)") and $(num "$(rstat runner-steady claims)") for $(num "$(rstat runner-saturation jobs)") and $(num "$(rstat runner-steady jobs)") jobs (a job claimed again after a lease expired or a retry adds one).
- server CPU: $(cat "$TMP/runner-saturation.cpu") and $(cat "$TMP/runner-steady.cpu") CPU seconds over $(cat "$TMP/runner-saturation.wall") and $(cat "$TMP/runner-steady.wall") s wall (load start to the last call's end, plus up to 0.5 s of polling): accept path, runner, simulator and callbacks together. By thread, saturation: $(cat "$TMP/runner-saturation.cpu-threads"); steady: $(cat "$TMP/runner-steady.cpu-threads").
- validity: $(if ((${#RUNNER_INVALID[@]} == 0)); then echo "no wrk errors, one job per 2xx, every job succeeded with one completed call, no ERROR in the gateway logs"; else echo "INVALID: ${RUNNER_INVALID[*]}"; fi)
- gateway log warnings (other than wrk's SNI): $(if [[ -z $RUNNER_WARNINGS ]]; then echo none; else echo "below"; fi)
${RUNNER_WARNINGS}

Setup: \`callgate serve --config $RUNNER_CONFIG_DIR\`, a fresh gateway and temp data dir per phase ($FS), runner on with $(if [[ -n $RUNNER_WORKERS ]]; then echo "workers = $RUNNER_WORKERS (BENCH_RUNNER_WORKERS)"; else echo "the shipped defaults (8 workers, 15 s lease, 1 s idle poll)"; fi), agent demo-agent without calling window and with 1,000,000 lines, simulator with ring and talk time 0 s and answer_rate 1.0 (each dial fsync'd to its dial log). A start_call job succeeds once the provider has taken the call; the call completes when its last event is applied. Each phase's sanity trigger (run and finished before the load) is not counted. wrk and the gateway share the machine's $(nproc) cores; ${RUNNER_BUSY}% CPU busy just before the runner benchmark.

Commands (runner part), per phase:
\`\`\`
${RUNNER_WORKERS:+CALLGATE_RUNNER__WORKERS=$RUNNER_WORKERS }CALLGATE_LOG=warn target/release/callgate serve --config $RUNNER_CONFIG_DIR --data-dir \$TMP/<phase> --listen 127.0.0.1:<port>
# saturation
BENCH_TOKEN=... BENCH_BODY_FILE=$BODY_FILE BENCH_POST_LUA=$LUA BENCH_TOTAL=$RUNNER_JOBS BENCH_RATE=0 BENCH_WRK_THREADS=$THREADS BENCH_WRK_CONNS=$CONNECTIONS wrk --threads $THREADS --connections $CONNECTIONS --timeout ${WRK_TIMEOUT}s --latency --script $RUNNER_LUA --duration ${RUNNER_LOAD}s https://127.0.0.1:<port>$TRIGGER_PATH
# steady
BENCH_TOKEN=... BENCH_BODY_FILE=$BODY_FILE BENCH_POST_LUA=$LUA BENCH_TOTAL=$((RUNNER_RATE * RUNNER_STEADY)) BENCH_RATE=$RUNNER_RATE BENCH_WRK_THREADS=$THREADS BENCH_WRK_CONNS=$RUNNER_CONNECTIONS wrk --threads $THREADS --connections $RUNNER_CONNECTIONS --timeout ${WRK_TIMEOUT}s --latency --script $RUNNER_LUA --duration $((RUNNER_STEADY + 3))s https://127.0.0.1:<port>$TRIGGER_PATH
# every 0.5 s until nothing is left to run; then, after a clean stop:
python3 $STATS \$TMP/<phase>/callgate.db pending
python3 $STATS \$TMP/<phase>/callgate.db stats <load start, Unix ms> <warm-up ms>
\`\`\`
EOF
fi

# ---------------------------------------------------------------- PostgreSQL report

if [[ -n $PG_URL ]]; then
	PG_RPS=$(field "$TMP/gateway-pg.txt" ok_per_s)
	PG_RATIO=$(awk -v g="$PG_RPS" -v b="$BL_RPS" 'BEGIN { printf "%.2f", (b > 0 ? g / b : 0) }')
	PG_VS_SQLITE=$(awk -v g="$PG_RPS" -v s="$GW_RPS" 'BEGIN { printf "%.2f", (s > 0 ? g / s : 0) }')
	PG_RATIO_OK=$(awk -v r="$PG_RATIO" -v t="$PG_TARGET_RATIO" 'BEGIN { print (r >= t ? "met" : "MISSED") }')
	PG_SETTINGS=$(timeout 30 psql -X -q -At -d "$PG_URL" -c "SELECT 'PostgreSQL ' || current_setting('server_version') || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit') || ', wal_sync_method=' || current_setting('wal_sync_method') || ', shared_buffers=' || current_setting('shared_buffers') || ', max_connections=' || current_setting('max_connections')" 2>/dev/null || echo "PostgreSQL (settings unreadable)")
	PG_URL_SHOWN=$(hide_password "$PG_URL")
	cat <<EOF

## callgate accept-path benchmark on PostgreSQL (same run as above)

| server | 2xx/s | p50 ms | p90 ms | p99 ms | max ms | 2xx answers | server CPU (cores) | server CPU µs/request |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
$(row "baseline: bare axum JSON handler, same TLS accept loop" baseline)
$(row "gateway on SQLite (table above)" gateway)
$(row "gateway on PostgreSQL: POST $TRIGGER_PATH, full accept path" gateway-pg)

- **throughput ratio PostgreSQL gateway / baseline: $PG_RATIO** (target >= $PG_TARGET_RATIO: $PG_RATIO_OK); PostgreSQL / SQLite gateway: $PG_VS_SQLITE
- **PostgreSQL gateway p50 / p99: $(ms "$(field "$TMP/gateway-pg.txt" p50_us)") / $(ms "$(field "$TMP/gateway-pg.txt" p99_us)") ms** (SQLite: $(ms "$(field "$TMP/gateway.txt" p50_us)") / $GW_P99_MS ms)
- PostgreSQL server processes' CPU over warm-up + measured run: $(cat "$TMP/gateway-pg.pgcpu") cores on average (all postgres processes, so other clients of the server count too); the gateway column above is callgate alone
- gateway 2xx are accepted triggers: $PG_DB_CHECK
- validity: $(if ((${#INVALID[@]} == 0)); then echo "no non-2xx answers, socket errors or timeouts in any run"; else echo "INVALID: ${INVALID[*]}"; fi)

Setup: as above, but \`storage.url\` = $PG_URL_SHOWN in a fresh schema (\`?options=-csearch_path%3D<schema>\`, created and dropped by the script), over TCP on the same machine; the shipped storage defaults (pool_size 16 + the group-commit writer's connection). $PG_SETTINGS. The PostgreSQL server shares the machine's $(nproc) cores with wrk and callgate.

Command (PostgreSQL part): \`BENCH_PG_URL=$PG_URL_SHOWN${BENCH_PG_RUNNER_JOBS:+ BENCH_PG_RUNNER_JOBS=$PG_RUNNER_JOBS} scripts/bench.sh\`, which adds:
\`\`\`
psql -d \$BENCH_PG_URL -c 'CREATE SCHEMA <schema>'
CALLGATE_LOG=warn CALLGATE_STORAGE__URL=\$BENCH_PG_URL?options=-csearch_path%3D<schema> target/release/callgate serve --config $CONFIG_DIR --data-dir \$TMP/gateway-pg --listen 127.0.0.1:<port>
BENCH_TOKEN=... BENCH_BODY_FILE=$BODY_FILE wrk ${WRK_ARGS[*]} --duration ${DURATION}s https://127.0.0.1:<port>$TRIGGER_PATH
psql -d <schema URL> -c "SELECT count(*) ... FROM jobs"; psql -d \$BENCH_PG_URL -c 'DROP SCHEMA <schema> CASCADE'
\`\`\`
EOF
	if ((${#RUNNER_PG_PHASES[@]} > 0)); then
		pg_jobs_ok() { awk -v r="$(rstat "$1" jobs_per_s)" -v t="$PG_TARGET_JOBS" 'BEGIN { print (r != "na" && r >= t ? "met" : "MISSED") }'; }
		# per_process NAME: CPU seconds by process role (from the thread table).
		per_process() {
			awk -v hz="$CLK_TCK" 'FNR == NR { before[$1] = $3; next }
				{ split($2, r, ":"); d = $3 - before[$1]; by[r[1]] += d }
				END { for (n in by) printf "%s %.1f s, ", n, by[n] / hz }' \
				"$TMP/$1.threads0" "$TMP/$1.threads1" | sed 's/, $//'
		}
		cat <<EOF

## callgate runner benchmark on PostgreSQL: saturation, simulator with zero ring time

| phase | triggers accepted | accept rate /s | accept p99 ms (wrk) | jobs succeeded | calls completed | jobs executed/s | calls completed/s | claim p50 ms | claim p99 ms | claim max ms | accepted → call completed p50 / p99 ms | server CPU µs/job |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(rrow "one \`serve\` (runner on): $(num "$PG_RUNNER_JOBS") triggers as fast as accepted" runner-pg)
$(rrow "\`serve --no-runner\` + 2 \`run-worker\`: $(num "$PG_RUNNER_JOBS") triggers as fast as accepted" runner-pg-workers)

- **jobs executed/s: one serve $(num "$(rstat runner-pg jobs_per_s)") (target >= $(num "$PG_TARGET_JOBS"): $(pg_jobs_ok runner-pg)), serve + 2 workers $(num "$(rstat runner-pg-workers jobs_per_s)") (target: $(pg_jobs_ok runner-pg-workers))**; SQLite saturation above: $(num "$(rstat runner-saturation jobs_per_s)")
- by tenths of the succeeded jobs: one serve $(rstat runner-pg rate_tenths_per_s | sed 's/,/, /g') /s; serve + 2 workers $(rstat runner-pg-workers rate_tenths_per_s | sed 's/,/, /g') /s; done when the last trigger was accepted: $(num "$(rstat runner-pg done_at_last_accept_pct)")% and $(num "$(rstat runner-pg-workers done_at_last_accept_pct)")%
- callback path, dial requested → call completed p50/p99: $(num "$(rstat runner-pg callback_p50_ms)") / $(num "$(rstat runner-pg callback_p99_ms)") ms and $(num "$(rstat runner-pg-workers callback_p50_ms)") / $(num "$(rstat runner-pg-workers callback_p99_ms)") ms; call events stored $(num "$(rstat runner-pg call_events)") and $(num "$(rstat runner-pg-workers call_events)"); claims $(num "$(rstat runner-pg claims)") and $(num "$(rstat runner-pg-workers claims)")
- CPU seconds, load start to the last call's end ($(cat "$TMP/runner-pg.wall") and $(cat "$TMP/runner-pg-workers.wall") s wall): callgate $(cat "$TMP/runner-pg.cpu") and $(cat "$TMP/runner-pg-workers.cpu") (by process, serve + workers: $(per_process runner-pg-workers)); PostgreSQL server processes $(cat "$TMP/runner-pg.pgcpu") and $(cat "$TMP/runner-pg-workers.pgcpu")
- by thread, one serve: $(cat "$TMP/runner-pg.cpu-threads"); serve + 2 workers: $(cat "$TMP/runner-pg-workers.cpu-threads")
- validity: $(if ((${#RUNNER_INVALID[@]} == 0)); then echo "no wrk errors, one job per 2xx, every job succeeded with one completed call, no ERROR in the callgate logs"; else echo "INVALID: ${RUNNER_INVALID[*]}"; fi)
- ${RUNNER_PG_BUSY}% CPU busy just before the PostgreSQL runner phases

Setup: each phase on a fresh schema; runner-config as for SQLite (workers $(if [[ -n $RUNNER_WORKERS ]]; then echo "= $RUNNER_WORKERS"; else echo "8 per process"; fi)); the two-worker phase's processes share a simulator secret and the workers send call events to the serve process (\`server.public_url\`), so every callback is accepted by \`serve\`. Figures from PostgreSQL: \`python3 $STATS <schema URL> stats <load start> 0\` (psql COPY into an in-memory SQLite, same queries as for SQLite).

Commands (PostgreSQL runner part):
\`\`\`
CALLGATE_LOG=warn CALLGATE_STORAGE__URL=<schema URL> target/release/callgate serve --config $RUNNER_CONFIG_DIR --data-dir \$TMP/runner-pg --listen 127.0.0.1:<port>
CALLGATE_LOG=warn CALLGATE_STORAGE__URL=<schema URL> target/release/callgate serve --config \$TMP/pg-runner-config --data-dir \$TMP/runner-pg-workers --listen 127.0.0.1:<port> --no-runner
CALLGATE_LOG=warn CALLGATE_STORAGE__URL=<schema URL> CALLGATE_SERVER__PUBLIC_URL=https://127.0.0.1:<port> target/release/callgate run-worker --config \$TMP/pg-runner-config --data-dir \$TMP/runner-pg-workers-worker<1|2>
# load: the saturation wrk command above; then as for SQLite with <schema URL> for the database
\`\`\`
EOF
	fi
fi

if ((${#INVALID[@]} + ${#RUNNER_INVALID[@]} > 0)); then
	log "the run is INVALID: ${INVALID[*]} ${RUNNER_INVALID[*]}"
	exit 1
fi
