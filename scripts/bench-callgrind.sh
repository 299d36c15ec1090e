#!/usr/bin/env bash
# Instructions per accepted request on the trigger accept path, counted with
# valgrind's callgrind on the server process. Unlike wall-clock figures
# (scripts/bench.sh), instruction counts barely move between runs (gateway
# within ~0.5 %, baseline ~2 %) or with other load on the machine, so two
# builds can be compared in one session even on a busy machine.
#
#   scripts/bench-callgrind.sh          # prints a markdown report on stdout
#   GATEWAY_BIN=/old/target/release/callgate \
#   BASELINE_BIN=/old/target/release/examples/bench_baseline \
#   CG_CONFIG_DIR=/old/scripts/bench/config scripts/bench-callgrind.sh
#
# It does not build: run `cargo build --release --bin callgate --example
# bench_baseline` first (or point the variables below at another build).
#
# Cases (CG_CASES, default all three):
#   baseline  bare axum JSON handler behind callgate's own TLS accept loop
#             (BASELINE_BIN <addr> <data dir>; answers 202)
#   durable   callgate serve --config CG_CONFIG_DIR (runner off), fresh data
#             dir, CALLGATE_LOG=warn: POST /v1/triggers/demo-call with
#             scripts/bench/body.json and an HS256 JWT from `callgate jwt
#             mint` (as scripts/bench.sh); answers 202 once the job is
#             committed (SQLite, synchronous=FULL)
#   test      the same with ?mode=test (validated, not stored; answers 200)
#   pg        durable, but on PostgreSQL: CALLGATE_STORAGE__URL = CG_PG_URL
#             with a fresh schema per run (`options=-csearch_path%3D<schema>`,
#             created and dropped with psql); only callgate's instructions
#             are counted, not the PostgreSQL server's. Default case list
#             includes it when CG_PG_URL is set.
#
# Method (start-up, TLS handshake, warm-up and shutdown left out): for each
# case the server is started under `valgrind --tool=callgrind` with a fresh
# data dir. A client (Python http.client; the client is not measured) opens
# ONE HTTPS connection (TLS 1.3, HTTP/1.1 keep-alive) as soon as the port
# accepts and sends CG_WARMUP sequential requests on it (lazy statics,
# allocator pages, first SQLite pages, the first use of each code path).
# Then `callgrind_control --zero` sets the server's counters to zero, the
# client sends CG_REQUESTS more requests (each after the previous answer),
# and `callgrind_control --dump` writes the counts. Every answer is checked
# (status, and that the connection was never reopened); for `durable` the
# database must then hold exactly the answered jobs, for `test` none
# (checked with sqlite3 when installed). So
#
#     instructions per request = Ir(dump) / CG_REQUESTS
#
# Ir is instructions executed in user space by all threads of the server
# process (kernel time, e.g. fsync, is not counted). The window holds only
# the requests and what the idle server does meanwhile (timers: the key
# file is stat'ed every 2 s, limiter housekeeping): ~3,500 instructions/s
# measured on an idle gateway, under 0.01 % of a window here.
#
# Why not the difference of two whole runs with N1 and N2 requests: start-up
# alone varies by a few million instructions between runs (a time-based
# clock calibration in a lazy static), which moved the per-request figure by
# up to 4 % with 1000 requests between the runs.
#
# Settings (environment):
#   GATEWAY_BIN    default target/release/callgate of this tree
#   BASELINE_BIN   default target/release/examples/bench_baseline
#   CG_CONFIG_DIR  default scripts/bench/config of this tree
#   CG_BODY_FILE   default scripts/bench/body.json of this tree
#   CG_WARMUP=200 CG_REQUESTS=2000   requests before and inside the window
#   CG_ROUNDS=1    runs per case (each a fresh server); the report lists each
#   CG_CASES="baseline durable test" (+ pg when CG_PG_URL is set)
#   CG_PG_URL=     e.g. postgres://postgres@127.0.0.1:5432/test (needs psql)
#   CG_OUT=DIR     keep the callgrind.out files (and logs) in DIR, e.g. for
#                  callgrind_annotate; by default they are deleted
#   CG_TIMEOUT=600 longest wait, in seconds, for one valgrind run
#
# Time: about 10-30 s per run on the project machine (2 vCPU), 3 runs per
# round. Exit status 0 valid run, 1 wrong answer, missing output or setup
# failure. Only 127.0.0.1 is used; every process it starts is stopped on
# exit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/callgate}
BASELINE_BIN=${BASELINE_BIN:-$ROOT/target/release/examples/bench_baseline}
CONFIG_DIR=${CG_CONFIG_DIR:-$ROOT/scripts/bench/config}
BODY_FILE=${CG_BODY_FILE:-$ROOT/scripts/bench/body.json}
WARMUP=${CG_WARMUP:-200}
REQUESTS=${CG_REQUESTS:-2000}
ROUNDS=${CG_ROUNDS:-1}
PG_URL=${CG_PG_URL:-}
CASES=${CG_CASES:-baseline durable test${PG_URL:+ pg}}
TIMEOUT=${CG_TIMEOUT:-600}
TRIGGER_PATH=/v1/triggers/demo-call

log() { echo "bench-callgrind: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for n in "$WARMUP" "$REQUESTS" "$ROUNDS" "$TIMEOUT"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "CG_WARMUP, CG_REQUESTS, CG_ROUNDS and CG_TIMEOUT must be positive integers"
done
for c in $CASES; do
	[[ $c == baseline || $c == durable || $c == test || $c == pg ]] || die "unknown case '$c' in CG_CASES"
	[[ $c != pg || -n $PG_URL ]] || die "the pg case needs CG_PG_URL"
done
if [[ -n $PG_URL ]]; then
	[[ $PG_URL =~ ^postgres(ql)?:// && $PG_URL != *options=* ]] ||
		die "CG_PG_URL must be a postgres:// URL without options="
	command -v psql >/dev/null 2>&1 || die "psql is required with CG_PG_URL"
fi
for t in valgrind callgrind_control python3; do
	command -v "$t" >/dev/null 2>&1 || die "$t is required"
done
[[ -x $GATEWAY_BIN ]] || die "missing $GATEWAY_BIN (cargo build --release --bin callgate)"
[[ -x $BASELINE_BIN ]] || die "missing $BASELINE_BIN (cargo build --release --example bench_baseline)"
[[ -d $CONFIG_DIR && -f $BODY_FILE ]] || die "missing $CONFIG_DIR or $BODY_FILE"
HAVE_SQLITE=0
command -v sqlite3 >/dev/null 2>&1 && HAVE_SQLITE=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgate-callgrind.XXXXXX")
SERVER_PID=
PG_SCHEMAS=()

# Stops the server we started: SIGTERM, up to CG_TIMEOUT s, then SIGKILL.
stop_server() {
	local pid=$SERVER_PID
	[[ -n $pid ]] || return 0
	SERVER_PID=
	kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 $((TIMEOUT * 5))); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "server $pid did not stop within ${TIMEOUT}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_server
	for schema in "${PG_SCHEMAS[@]+"${PG_SCHEMAS[@]}"}"; do
		timeout 60 psql -X -q -d "$PG_URL" -v ON_ERROR_STOP=1 \
			-c "SET client_min_messages = warning; SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS $schema CASCADE" >&2 ||
			log "could not drop the PostgreSQL schema $schema"
	done
	if [[ -n ${CG_OUT:-} ]]; then
		mkdir -p "$CG_OUT"
		cp "$TMP"/callgrind.* "$TMP"/*.log "$CG_OUT"/ 2>/dev/null || true
		log "callgrind output and logs copied to $CG_OUT"
	fi
	if ((rc != 0 && rc != 130 && rc != 143)); then
		log "temp dir kept: $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Only our settings reach the gateway (as in scripts/bench.sh).
while read -r var; do
	unset "$var"
done < <(compgen -e | grep '^CALLGATE_' || true)
CALLGATE_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export CALLGATE_JWT_SECRET
"$GATEWAY_BIN" check --config "$CONFIG_DIR" --data-dir "$TMP/check" >&2 ||
	die "the bench config does not validate"
TOKEN=$("$GATEWAY_BIN" jwt mint --issuer bench --sub bench --scope triggers:run --config "$CONFIG_DIR") ||
	die "cannot mint a token"

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

# The client: waits until the port accepts (a refused connect never reaches
# the server's code), then one TLS connection: warm-up, zero the counters,
# the measured requests, dump. Every answer is checked. Prints
# "ok=<measured answers> seconds=<time of the measured requests>".
cat >"$TMP/client.py" <<'EOF'
import http.client, os, ssl, subprocess, sys, time

port, cacert, path, warmup, n, expect, pid, deadline = sys.argv[1:9]
warmup, n, expect, deadline = int(warmup), int(n), int(expect), float(deadline)
body = open(os.environ["CG_BODY"], "rb").read()
headers = {"Content-Type": "application/json", "Accept": "application/json",
           "Authorization": "Bearer " + os.environ["CG_TOKEN"]}
end = time.monotonic() + deadline
while True:
    try:
        if not os.path.exists(cacert):
            raise FileNotFoundError(cacert)
        ctx = ssl.create_default_context(cafile=cacert)
        conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=deadline)
        conn.connect()
        break
    except (ConnectionRefusedError, FileNotFoundError):
        if time.monotonic() > end:
            sys.exit("server not listening within %ss" % deadline)
        time.sleep(0.2)
sock = conn.sock

def send(count, what):
    for i in range(count):
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != expect:
            sys.exit("%s request %d: status %d, expected %d: %r" % (what, i + 1, resp.status, expect, data[:300]))
        if conn.sock is not sock:
            sys.exit("%s request %d: the connection was closed and reopened" % (what, i + 1))

def control(opt):
    r = subprocess.run(["callgrind_control", opt, pid], capture_output=True, text=True, timeout=deadline)
    if r.returncode != 0 or "OK" not in r.stdout:
        sys.exit("callgrind_control %s %s failed: %s %s" % (opt, pid, r.stdout, r.stderr))

send(warmup, "warm-up")
control("--zero")
t0 = time.monotonic()
send(n, "measured")
t1 = time.monotonic()
control("--dump")
conn.close()
print("ok=%d seconds=%.1f" % (n, t1 - t0))
EOF

# run CASE ROUND: one valgrind run; sets IR (instructions in the window).
run() {
	local case=$1 round=$2 name port dir path expect out result jobs want schema_url="" schema
	name=$case-$round
	port=$(free_port)
	dir=$TMP/$name
	out=$TMP/callgrind.$name.out
	local vg=(valgrind --tool=callgrind --callgrind-out-file="$out" --log-file="$TMP/$name.valgrind.log")
	path=$TRIGGER_PATH expect=202
	if [[ $case == baseline ]]; then
		"${vg[@]}" "$BASELINE_BIN" "127.0.0.1:$port" "$dir" >"$TMP/$name.stdout.log" 2>"$TMP/$name.log" &
	else
		local store_env=()
		if [[ $case == pg ]]; then
			schema="callgate_cg_$$_$round"
			timeout 30 psql -X -q -d "$PG_URL" -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $schema" >&2 ||
				die "cannot create the PostgreSQL schema $schema"
			PG_SCHEMAS+=("$schema")
			if [[ $PG_URL == *\?* ]]; then schema_url="$PG_URL&"; else schema_url="$PG_URL?"; fi
			schema_url+="options=-csearch_path%3D$schema"
			store_env=("CALLGATE_STORAGE__URL=$schema_url")
		fi
		env CALLGATE_LOG=warn ${store_env[@]+"${store_env[@]}"} "${vg[@]}" "$GATEWAY_BIN" serve --config "$CONFIG_DIR" --data-dir "$dir" \
			--listen "127.0.0.1:$port" >"$TMP/$name.stdout.log" 2>"$TMP/$name.log" &
		[[ $case == test ]] && path="$TRIGGER_PATH?mode=test" expect=200
	fi
	SERVER_PID=$!
	log "$name: valgrind pid $SERVER_PID on 127.0.0.1:$port, $WARMUP + $REQUESTS x POST $path (expect $expect)"
	result=$(CG_TOKEN=$TOKEN CG_BODY=$BODY_FILE timeout -k 5 "$TIMEOUT" python3 "$TMP/client.py" \
		"$port" "$dir/tls/cert.pem" "$path" "$WARMUP" "$REQUESTS" "$expect" "$SERVER_PID" "$TIMEOUT") || {
		tail -n 20 "$TMP/$name.log" >&2
		die "$name: client failed"
	}
	[[ $result == "ok=$REQUESTS "* ]] || die "$name: client reported '$result', expected ok=$REQUESTS"
	stop_server
	# The dump is $out.1 (the file written at exit, $out, holds the rest).
	[[ -s $out.1 ]] || die "$name: callgrind wrote no dump ($TMP/$name.valgrind.log)"
	IR=$(awk '/^(summary|totals):/ { print $2; exit }' "$out.1")
	[[ $IR =~ ^[0-9]+$ ]] || die "$name: no instruction total in $out.1"
	grep -qE ' ERROR ' "$TMP/$name.log" && die "$name: the server logged errors ($TMP/$name.log)"
	local check=""
	if [[ $case == pg ]]; then
		want=$((WARMUP + REQUESTS))
		jobs=$(timeout 30 psql -X -q -At -d "$schema_url" -c "SELECT count(*) FROM jobs") ||
			die "$name: cannot read the PostgreSQL schema"
		((jobs == want)) || die "$name: PostgreSQL holds $jobs jobs, expected $want"
		check=", $jobs jobs in PostgreSQL"
	elif [[ $case != baseline ]] && ((HAVE_SQLITE)); then
		want=$((WARMUP + REQUESTS))
		[[ $case == test ]] && want=0
		jobs=$(sqlite3 "$dir/callgate.db" "SELECT count(*) FROM jobs") || die "$name: cannot read the database"
		((jobs == want)) || die "$name: the database holds $jobs jobs, expected $want"
		check=", $jobs jobs in the database"
	fi
	log "$name: $result, Ir in the window $IR ($((IR / REQUESTS)) per request$check)"
	rm -rf "$dir"
}

declare -A PER ALL
for c in $CASES; do
	ALL[$c]=""
	for r in $(seq 1 "$ROUNDS"); do
		run "$c" "$r"
		ALL[$c]+="${ALL[$c]:+, }$((IR / REQUESTS))"
	done
	# Median of the rounds (the only one with CG_ROUNDS=1).
	PER[$c]=$(tr ',' '\n' <<<"${ALL[$c]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
done

ratio() {
	if [[ -n ${PER[baseline]:-} && -n ${PER[$1]:-} ]]; then
		awk -v a="${PER[$1]}" -v b="${PER[baseline]}" 'BEGIN { printf "%.2f", a / b }'
	else
		echo "n/a"
	fi
}
label() {
	case $1 in
	baseline) echo "baseline: bare axum JSON handler, same TLS accept loop (202)" ;;
	durable) echo "gateway: POST $TRIGGER_PATH, durable accept (202, job committed)" ;;
	test) echo "gateway: POST $TRIGGER_PATH?mode=test (200, not stored)" ;;
	pg) echo "gateway on PostgreSQL: POST $TRIGGER_PATH, durable accept (202, job committed; callgate only)" ;;
	esac
}

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat <<EOF
## callgate accept path: instructions per request (callgrind, $(date -u +%Y-%m-%dT%H:%M:%SZ))

| case | instructions per request$( ((ROUNDS > 1)) && echo " (median)") | ratio to baseline |$( ((ROUNDS > 1)) && echo " rounds |")
|---|---:|---:|$( ((ROUNDS > 1)) && echo "---|")
$(for c in $CASES; do echo "| $(label "$c") | **${PER[$c]}** | $(ratio "$c") |$( ((ROUNDS > 1)) && echo " ${ALL[$c]} |")"; done)

Instructions (user space, all threads of the server process) counted by
callgrind between \`callgrind_control --zero\` and \`--dump\` over $REQUESTS
sequential requests on one HTTPS keep-alive connection, after $WARMUP
warm-up requests on it, divided by $REQUESTS. Binaries: \`$GATEWAY_BIN\`,
\`$BASELINE_BIN\`; config \`$CONFIG_DIR\`; script in commit $COMMIT;
$(valgrind --version).
EOF
