#!/usr/bin/env bash
# Soak benchmark: the gateway under a steady mixed load for a long time, with
# its memory and open file descriptors watched.
#
#   scripts/soak.sh                  # 10 minutes; markdown report on stdout
#   SOAK_SECONDS=60 scripts/soak.sh  # shorter
#
# What it does, in order:
#   1. cargo build --release --locked --bin callgate
#   2. mints two API keys with `callgate key new` (one plain, one with
#      `--rate-limit 1/1s:1`) into a temp key file (CALLGATE_AUTH__KEYS_FILE)
#      and one HS256 JWT with `callgate jwt mint` (issuer `soak`, secret
#      random per run);
#   3. starts `callgate --log-format json serve --config scripts/soak/config`
#      with a fresh temp data dir (SQLite, self-signed certificate), the
#      runner on and the simulator with 1 s ring and 1-3 s talk time (see
#      scripts/soak/config/callgate.toml for how that config differs from
#      config/);
#   4. scripts/soak/driver.py soak: over HTTPS (pinned to the generated
#      certificate), SOAK_RATE requests/s open-loop for SOAK_SECONDS, dealt
#      over five kinds: good triggers (202), bad auth (401), schema-invalid
#      bodies (422), the 1/s key (429, and 202 at most once a second) and
#      Idempotency-Key replays (202 with Idempotent-Replayed: true); every
#      SOAK_SAMPLE s the gateway's VmRSS, RssAnon, threads and open FDs
#      (/proc/<pid>) and the unfinished jobs and calls in its database;
#      after the load: wait for the jobs and calls to finish (120 s at
#      most), then at least 15 s (idle blocking-pool threads retire) and
#      until the open sockets are back to their number before the load
#      (120 s at most);
#   5. stops the gateway (SIGTERM; it must exit 0), then
#      scripts/soak/driver.py report: answers and latency p50/p99/max per
#      kind, 5xx, RSS and FDs at start, end and max, ERROR and WARN lines
#      in the gateway's log, jobs and calls in the database.
#
# Exit status 1 when the run failed: any answer with the wrong status (5xx
# included) or shape for its kind, transport errors, an ERROR line (or a
# line that is not JSON) in the gateway log, jobs or calls unfinished after
# the drain, a gateway that did not stop cleanly, or a setup failure.
#
# Settings (environment):
#   SOAK_SECONDS=600   load duration
#   SOAK_RATE=200      requests/s, all kinds together
#   SOAK_MIX=good=8,bad_auth=3,invalid=3,rate_limited=3,replayed=3   weights
#   SOAK_CONNECTIONS=16   client connections (one thread each)
#   SOAK_CONN_REQUESTS=200  requests per connection before it is replaced
#   SOAK_SAMPLE=5      seconds between samples
#   SOAK_LOG=info      the gateway's CALLGATE_LOG (info: one access-log line
#                      per request, as a default deployment writes)
#   SOAK_SKIP_BUILD=1  use the existing target/release/callgate
#   SOAK_KEEP=1        keep the temp dir (log, results.json, database); also
#                      kept when the run fails
#   TMPDIR             where the temp dir goes
#
# Only 127.0.0.1 is used. Everything started is stopped on exit. Time: the
# build, SOAK_SECONDS, then usually ~20 s of drain and settling (at most
# ~4 minutes).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${SOAK_SECONDS:-600}
RATE=${SOAK_RATE:-200}
MIX=${SOAK_MIX:-good=8,bad_auth=3,invalid=3,rate_limited=3,replayed=3}
CONNECTIONS=${SOAK_CONNECTIONS:-16}
CONN_REQUESTS=${SOAK_CONN_REQUESTS:-200}
SAMPLE=${SOAK_SAMPLE:-5}
GATEWAY_LOG_FILTER=${SOAK_LOG:-info}

BIN=$ROOT/target/release/callgate
CONFIG_DIR=scripts/soak/config
DRIVER=scripts/soak/driver.py

log() { echo "soak: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for n in "$DURATION" "$RATE" "$CONNECTIONS" "$CONN_REQUESTS" "$SAMPLE"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "SOAK_SECONDS, SOAK_RATE, SOAK_CONNECTIONS, SOAK_CONN_REQUESTS and SOAK_SAMPLE must be positive integers"
done
command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgate-soak.XXXXXX")
GATEWAY_PID=

# SIGTERM, up to 15 s, then SIGKILL; returns the process's exit status.
stop_gateway() {
	local pid=$GATEWAY_PID rc=0
	[[ -n $pid ]] || return 0
	GATEWAY_PID=
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 150); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "gateway $pid did not stop within 15 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" || rc=$?
	return "$rc"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_gateway || true
	if [[ ${SOAK_KEEP:-} == 1 ]] || ((rc != 0 && rc != 130 && rc != 143)); then
		log "temp dir kept: $TMP"
	else
		rm -rf "$TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BUILD_CMD="cargo build --release --locked --bin callgate"
if [[ ${SOAK_SKIP_BUILD:-} != 1 ]]; then
	log "$BUILD_CMD"
	$BUILD_CMD >&2 || die "build failed"
fi
[[ -x $BIN ]] || die "missing $BIN"

# Only our settings reach the gateway.
while read -r var; do
	unset "$var"
done < <(compgen -e | grep '^CALLGATE_' || true)
CALLGATE_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
CALLGATE_AUTH__KEYS_FILE=$TMP/keys.toml
export CALLGATE_JWT_SECRET CALLGATE_AUTH__KEYS_FILE

"$BIN" check --config "$CONFIG_DIR" --data-dir "$TMP/data" >&2 || die "the soak config does not validate"
GOOD_KEY=$("$BIN" key new --name soak --config "$CONFIG_DIR") || die "cannot mint the API key"
LIMITED_KEY=$("$BIN" key new --name soak-limited --rate-limit 1/1s:1 --config "$CONFIG_DIR") ||
	die "cannot mint the rate-limited API key"
JWT=$("$BIN" jwt mint --issuer soak --sub soak-jwt --scope triggers:run --ttl "$((DURATION + 3600))s" \
	--config "$CONFIG_DIR") || die "cannot mint the JWT"

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
PORT=$(free_port)

SERVE_CMD="$BIN --log-format json serve --config $CONFIG_DIR --data-dir $TMP/data --listen 127.0.0.1:$PORT"
CALLGATE_LOG=$GATEWAY_LOG_FILTER $SERVE_CMD >"$TMP/gateway.out" 2>"$TMP/gateway.log" &
GATEWAY_PID=$!
log "gateway: pid $GATEWAY_PID on 127.0.0.1:$PORT (CALLGATE_LOG=$GATEWAY_LOG_FILTER)"

CACERT=$TMP/data/tls/cert.pem
ready=0
for _ in $(seq 1 150); do
	kill -0 "$GATEWAY_PID" 2>/dev/null || {
		tail -n 20 "$TMP/gateway.log" >&2
		die "the gateway exited during start-up"
	}
	if [[ -f $CACERT ]] && curl -sf --max-time 2 --cacert "$CACERT" "https://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
		ready=1
		break
	fi
	sleep 0.2
done
((ready)) || die "the gateway was not ready within 30 s"

BUSY=$(
	a=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
	echo "$a $b" | awk '{ t = $3 - $1; i = $4 - $2; printf "%d", (t > 0 ? 100 * (t - i) / t : 0) }'
)

python3 "$DRIVER" soak --url "https://127.0.0.1:$PORT" --cacert "$CACERT" --pid "$GATEWAY_PID" \
	--db "$TMP/data/callgate.db" --good-key "$GOOD_KEY" --limited-key "$LIMITED_KEY" --jwt "$JWT" \
	--out "$TMP/results.json" --seconds "$DURATION" --rate "$RATE" --mix "$MIX" \
	--connections "$CONNECTIONS" --requests-per-connection "$CONN_REQUESTS" --sample "$SAMPLE" ||
	die "the driver failed"

STOP_RC=0
stop_gateway || STOP_RC=$?

RC=0
python3 "$DRIVER" report --results "$TMP/results.json" --log "$TMP/gateway.log" >"$TMP/report.md" || RC=$?
cat "$TMP/report.md"
CPU_MODEL=$(grep -m1 -E '^(model name|Model|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT + uncommitted changes in src/Cargo"
cat <<EOF

Gateway exit status after SIGTERM: $STOP_RC$( ((STOP_RC == 0)) || echo " (FAIL: expected 0)").
Machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r); ${BUSY}% CPU busy just before the load (the client shares the cores); commit $COMMIT.

Commands:
\`\`\`
$BUILD_CMD
CALLGATE_AUTH__KEYS_FILE=\$TMP/keys.toml target/release/callgate key new --name soak --config $CONFIG_DIR
CALLGATE_AUTH__KEYS_FILE=\$TMP/keys.toml target/release/callgate key new --name soak-limited --rate-limit 1/1s:1 --config $CONFIG_DIR
target/release/callgate jwt mint --issuer soak --sub soak-jwt --scope triggers:run --ttl $((DURATION + 3600))s --config $CONFIG_DIR
CALLGATE_LOG=$GATEWAY_LOG_FILTER target/release/callgate --log-format json serve --config $CONFIG_DIR --data-dir \$TMP/data --listen 127.0.0.1:<port>
python3 $DRIVER soak --url https://127.0.0.1:<port> --cacert \$TMP/data/tls/cert.pem --pid <gateway pid> --db \$TMP/data/callgate.db --good-key ... --limited-key ... --jwt ... --out \$TMP/results.json --seconds $DURATION --rate $RATE --mix $MIX --connections $CONNECTIONS --requests-per-connection $CONN_REQUESTS --sample $SAMPLE
python3 $DRIVER report --results \$TMP/results.json --log \$TMP/gateway.log
\`\`\`
EOF
((STOP_RC == 0)) || RC=1
exit "$RC"
