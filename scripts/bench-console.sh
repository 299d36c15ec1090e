#!/usr/bin/env bash
# Does an operator watching the console slow the accept path down? The
# trigger accept path under wrk load, alternately alone and with console
# pages refreshed once a second by a logged-in browser-like client, in one
# run, so the ratio is compared with the run-to-run noise of the same
# machine and build.
#
#   scripts/bench-console.sh        # prints a markdown report on stdout
#
# What it does:
#   1. cargo build --release --bin callgate (BENCH_SKIP_BUILD=1: skip)
#   2. a copy of scripts/bench/config (symlinks resolved) with a key file
#      holding one key made by `callgate key new` with the scopes the pages
#      need (console, jobs:read, metrics:read, deliveries:read); the load
#      is the same as scripts/bench.sh's (POST /v1/triggers/demo-call, an
#      HS256 JWT, wrk over HTTPS, 2 threads, 32 connections, post.lua)
#   3. one gateway (SQLite in a fresh temp data dir, runner off,
#      CALLGATE_LOG=warn); the console login is done with curl as a browser
#      does it (GET the login page for its CSRF cookie and field, POST the
#      form, keep the session cookie)
#   4. BENCH_ROUNDS rounds of: a measured wrk run alone ("plain"), then one
#      with the refresher running ("console"). The refresher GETs each of
#      BENCH_CONSOLE_PAGES once a second (each must answer 200 with HTML,
#      else the run is invalid), so the console's queries (job lists, the
#      overview's series over the growing jobs table) run next to the load.
#      Before the measured runs, one warm-up run.
#   5. report: accepted/s and p99 of each run; noise = spread of the plain
#      runs ((max - min) / mean); effect = mean(console) / mean(plain) - 1.
#      The console "does not move the accept path" when |effect| <= noise.
#      Checks: no non-2xx answers or socket errors in any run, every
#      refresh 200.
#
# Settings (environment): BENCH_DURATION=15, BENCH_WARMUP=3, BENCH_ROUNDS=2,
# BENCH_CONNECTIONS=32, BENCH_THREADS=2, BENCH_SKIP_BUILD=1,
# BENCH_CONSOLE_PAGES="/console /console/jobs /console/deliveries /console/calls",
# BENCH_KEEP=1 (keep the temp dir). Only 127.0.0.1 is used; every wait and
# run is bounded; about BENCH_ROUNDS x 2 x (BENCH_DURATION + 2) + warm-up
# + 10 s after the build.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-15}
WARMUP=${BENCH_WARMUP:-3}
ROUNDS=${BENCH_ROUNDS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-2}
PAGES=${BENCH_CONSOLE_PAGES:-/console /console/jobs /console/deliveries /console/calls}
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/callgate}
LUA=scripts/bench/post.lua
BODY_FILE=scripts/bench/body.json
TRIGGER_PATH=/v1/triggers/demo-call

log() { echo "bench-console: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}
for n in "$DURATION" "$WARMUP" "$ROUNDS" "$CONNECTIONS" "$THREADS"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION/WARMUP/ROUNDS/CONNECTIONS/THREADS must be positive integers"
done
for tool in wrk curl; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install $tool)"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgate-bench-console.XXXXXX")
PIDS=()
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
		timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	done
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

if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then
	log "cargo build --release --locked --bin callgate"
	cargo build --release --locked --bin callgate >&2 || die "build failed"
fi
[[ -x $GATEWAY_BIN ]] || die "missing $GATEWAY_BIN"

# Only our settings reach the gateway.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^CALLGATE_' || true)
CALLGATE_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export CALLGATE_JWT_SECRET

CONFIG=$TMP/config
cp -rL scripts/bench/config "$CONFIG"
KEY=$("$GATEWAY_BIN" key new --config "$CONFIG" --name console-bench --scope console \
	--scope jobs:read --scope metrics:read --scope deliveries:read 2>"$TMP/key.log" | grep -o 'cg_[A-Za-z0-9_-]*' | head -n 1) ||
	die "cannot make the console key: $(cat "$TMP/key.log")"
[[ -n $KEY ]] || die "callgate key new printed no key"
"$GATEWAY_BIN" check --config "$CONFIG" --data-dir "$TMP/gateway" >&2 || die "the config does not validate"
TOKEN=$("$GATEWAY_BIN" jwt mint --issuer bench --sub bench --scope triggers:run --config "$CONFIG") ||
	die "cannot mint a token"
export BENCH_TOKEN=$TOKEN BENCH_BODY_FILE=$ROOT/$BODY_FILE

PORT=$((20000 + RANDOM % 40000))
env CALLGATE_LOG=warn "$GATEWAY_BIN" serve --config "$CONFIG" --data-dir "$TMP/gateway" \
	--listen "127.0.0.1:$PORT" >"$TMP/gateway.out" 2>"$TMP/gateway.log" &
GW=$!
PIDS+=("$GW")
BASE=https://127.0.0.1:$PORT
CACERT=$TMP/gateway/tls/cert.pem
for _ in $(seq 1 150); do
	kill -0 "$GW" 2>/dev/null || die "the gateway exited: $(tail -n 20 "$TMP/gateway.log")"
	[[ -f $CACERT ]] && curl -sf --max-time 2 --cacert "$CACERT" "$BASE/healthz" >/dev/null 2>&1 && break
	sleep 0.2
done
curl -sf --max-time 2 --cacert "$CACERT" "$BASE/healthz" >/dev/null || die "the gateway is not ready within 30 s"

# Console login, as a browser does it.
JAR=$TMP/cookies
curl -sf --max-time 10 --cacert "$CACERT" -c "$JAR" -o "$TMP/login.html" "$BASE/console/login" ||
	die "GET /console/login failed"
LOGIN_CSRF=$(sed -n 's/.*name="login_csrf" value="\([^"]*\)".*/\1/p' "$TMP/login.html" | head -n 1)
[[ -n $LOGIN_CSRF ]] || die "no login_csrf field on the login page"
code=$(curl -s --max-time 10 --cacert "$CACERT" -b "$JAR" -c "$JAR" -o /dev/null -w '%{http_code}' \
	--data-urlencode "login_csrf=$LOGIN_CSRF" --data-urlencode "api_key=$KEY" "$BASE/console/login")
[[ $code == 303 ]] || die "console login answered $code, not 303"
grep -q callgate_console "$JAR" || die "no session cookie after the login"

# refresher OUT: GETs every page once a second until killed; one line per
# GET: "<page> <status> <seconds>".
refresher() {
	local out=$1 page
	while :; do
		for page in $PAGES; do
			curl -s --max-time 10 --cacert "$CACERT" -b "$JAR" -o /dev/null \
				-w "$page %{http_code} %{time_total}\n" "$BASE$page" >>"$out" || echo "$page 000 0" >>"$out"
		done
		sleep 1
	done
}

WRK_ARGS=(--threads "$THREADS" --connections "$CONNECTIONS" --timeout 5s --latency --script "$LUA")
run_wrk() {
	local out=$1 secs=$2
	timeout -k 5 $((secs + 30)) wrk "${WRK_ARGS[@]}" --duration "${secs}s" "$BASE$TRIGGER_PATH" >"$out" 2>&1 ||
		die "wrk failed: $(tail -n 5 "$out")"
	grep -q '^BENCH ' "$out" || die "wrk printed no BENCH line: $(tail -n 5 "$out")"
}
field() { grep '^BENCH ' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

log "warm-up ${WARMUP}s"
run_wrk "$TMP/warmup.txt" "$WARMUP"
for r in $(seq 1 "$ROUNDS"); do
	log "round $r: plain ${DURATION}s"
	run_wrk "$TMP/plain-$r.txt" "$DURATION"
	log "round $r: with the console refreshing ${DURATION}s"
	: >"$TMP/refresh-$r.txt"
	refresher "$TMP/refresh-$r.txt" &
	RP=$!
	PIDS+=("$RP")
	run_wrk "$TMP/console-$r.txt" "$DURATION"
	kill "$RP" 2>/dev/null || true
	wait "$RP" 2>/dev/null || true
done

# Checks.
for f in "$TMP"/plain-*.txt "$TMP"/console-*.txt; do
	for k in non2xx connect_errors read_errors write_errors timeouts; do
		[[ $(field "$f" "$k") == 0 ]] || die "$(basename "$f"): $k=$(field "$f" "$k")"
	done
done
REFRESHES=$(cat "$TMP"/refresh-*.txt | wc -l)
BAD=$(awk '$2 != 200' "$TMP"/refresh-*.txt | wc -l)
((REFRESHES > 0)) || die "the refresher made no request"
((BAD == 0)) || die "$BAD console refreshes did not answer 200: $(awk '$2 != 200' "$TMP"/refresh-*.txt | head -n 3)"

plain=() console=()
for r in $(seq 1 "$ROUNDS"); do
	plain+=("$(field "$TMP/plain-$r.txt" ok_per_s)")
	console+=("$(field "$TMP/console-$r.txt" ok_per_s)")
done
SUMMARY=$(printf '%s\n' "${plain[@]}" | awk -v c="${console[*]}" '
	{ p[NR] = $1; ps += $1; if (NR == 1 || $1 < pmin) pmin = $1; if ($1 > pmax) pmax = $1 }
	END { n = split(c, cs, " "); for (i = 1; i <= n; i++) cm += cs[i]; cm /= n; pm = ps / NR
	      noise = (pmax - pmin) / pm; effect = cm / pm - 1
	      printf "%.0f %.0f %.3f %.1f %.1f %s", pm, cm, cm / pm, 100 * noise, 100 * effect,
	             ((effect < 0 ? -effect : effect) <= noise ? "yes" : "no") }')
read -r PM CM RATIO NOISE EFFECT WITHIN <<<"$SUMMARY"
REFRESH_P50=$(awk '{ print $3 }' "$TMP"/refresh-*.txt | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", 1000 * a[int((NR + 1) / 2)] }')
REFRESH_MAX=$(awk '{ print $3 }' "$TMP"/refresh-*.txt | sort -n | tail -n 1 | awk '{ printf "%.1f", 1000 * $1 }')

cat <<EOF
## Accept path with the console refreshing (scripts/bench-console.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ))

| run | accepted/s | p50 | p99 |
|---|---:|---:|---:|
EOF
for r in $(seq 1 "$ROUNDS"); do
	for kind in plain console; do
		f=$TMP/$kind-$r.txt
		printf '| %s %d | %.0f | %.1f ms | %.1f ms |\n' "$kind" "$r" "$(field "$f" ok_per_s)" \
			"$(awk -v u="$(field "$f" p50_us)" 'BEGIN { print u / 1000 }')" \
			"$(awk -v u="$(field "$f" p99_us)" 'BEGIN { print u / 1000 }')"
	done
done
cat <<EOF

Mean accepted/s: plain $PM, with the console $CM (ratio $RATIO, effect $EFFECT %);
run-to-run noise of the plain runs $NOISE %. Within the noise: **$WITHIN**.
Console refreshes: $REFRESHES GETs of \`$PAGES\`, all 200; latency p50 $REFRESH_P50 ms,
max $REFRESH_MAX ms. wrk $THREADS threads, $CONNECTIONS connections,
${DURATION} s per run, HTTPS keep-alive; gateway \`$GATEWAY_BIN\` (SQLite, runner off).
EOF
