#!/usr/bin/env bash
# Benchmark of the trigger accept path against a bare axum baseline, in one run.
#
#   scripts/bench.sh            # from anywhere; prints a markdown report on stdout
#
# What it does, in order:
#   1. cargo build --release --bin callgate --example bench_baseline
#   2. baseline: target/release/examples/bench_baseline (a bare axum JSON
#      handler behind callgate's own TLS accept loop) on 127.0.0.1
#   3. gateway: target/release/callgate serve --config scripts/bench/config
#      with a fresh temp data dir (SQLite, self-signed certificate) and
#      CALLGATE_LOG=warn (no per-request access log lines)
#   For each server: wait for https://127.0.0.1:<port>/healthz, send one
#   sanity request with curl (must answer 202), a warm-up wrk run, the
#   measured wrk run, then stop the server.
#   4. checks: no non-2xx answers, no socket errors or timeouts, and for the
#      gateway that the database holds a job for every 2xx wrk counted
#      (a 202 means "on disk"; a benchmark of 401s or 429s would be worthless).
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
#   BENCH_SKIP_BUILD=1    use the existing release binaries
#   BENCH_KEEP=1          keep the temp dir (logs, wrk output, database);
#                         it is also kept when the run fails
#   TMPDIR                where the temp data dir goes (its disk's fsync rate
#                         bounds the gateway: every 202 is a committed job)
#
# Exit status: 0 valid run (the report says whether the targets were met),
# 1 invalid run or setup failure. Everything it starts is stopped on exit.
# Only 127.0.0.1 is used. Time is bounded: each wait and each wrk run has a
# timeout; the whole run takes about 2 x (warm-up + duration) + ~15 s after
# the build.

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
LUA=scripts/bench/post.lua
BODY_FILE=scripts/bench/body.json
TRIGGER_PATH=/v1/triggers/demo-call

log() { echo "bench: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for n in "$DURATION" "$WARMUP" "$CONNECTIONS" "$THREADS"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION/WARMUP/CONNECTIONS/THREADS must be positive integers"
done

# ---------------------------------------------------------------- clean-up

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgate-bench.XXXXXX")
PIDS=()

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

# run_wrk OUTFILE SECONDS PORT: one wrk run, bounded by `timeout`.
run_wrk() {
	local out=$1 secs=$2 port=$3 pid rc=0
	timeout -k 5 $((secs + 30)) wrk "${WRK_ARGS[@]}" --duration "${secs}s" \
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

GATEWAY_PORT=$(free_port)
CALLGATE_LOG=warn "$GATEWAY_BIN" serve --config "$CONFIG_DIR" --data-dir "$TMP/gateway" \
	--listen "127.0.0.1:$GATEWAY_PORT" >"$TMP/gateway.out" 2>"$TMP/gateway.log" &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
log "gateway: pid $GATEWAY_PID on 127.0.0.1:$GATEWAY_PORT (CALLGATE_LOG=warn)"
bench gateway "$GATEWAY_PORT" "$GATEWAY_PID" "$TMP/gateway/tls/cert.pem"
# A clean stop commits the last batch; then the database can be counted.
stop_pid "$GATEWAY_PID"

# ---------------------------------------------------------------- checks

INVALID=()
for name in baseline gateway; do
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
fi
# wrk sends the IP address as TLS SNI, which rustls logs (at warn) once per
# connection and ignores; anything else at warn or error is worth a look.
SNI_WARNINGS=$(grep -c 'Illegal SNI extension' "$TMP/gateway.log" || true)
if grep -v 'Illegal SNI extension' "$TMP/gateway.log" | grep -qE ' (ERROR|WARN) '; then
	log "gateway log has warnings/errors:"
	grep -v 'Illegal SNI extension' "$TMP/gateway.log" | grep -E ' (ERROR|WARN) ' | head -n 10 >&2
fi
if grep -qE ' ERROR ' "$TMP/gateway.log"; then
	INVALID+=("gateway logged errors (kept in $TMP/gateway.log)")
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
Gateway: JWT (HS256) auth, rate limits on but set to 1,000,000/s, JSON Schema validation and E.164 normalisation of the demo-call trigger, durable SQLite insert (WAL, synchronous=FULL, group commit) in a fresh temp data dir ($FS); logs at \`CALLGATE_LOG=warn\`, so no per-request access-log lines are written.
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

if ((${#INVALID[@]} > 0)); then
	log "the run is INVALID: ${INVALID[*]}"
	exit 1
fi
