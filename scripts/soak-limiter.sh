#!/usr/bin/env bash
# Memory of the per-IP rate limiter with 100,000 distinct client addresses.
#
#   scripts/soak-limiter.sh          # markdown report on stdout
#
# What it does, in order:
#   1. cargo build --release --locked --bin callgate
#   2. starts `callgate --log-format json serve --no-runner --config
#      scripts/soak/limiter-config` with a fresh temp data dir, logging
#      `rate limiter housekeeping` (debug, with the number of keys left) and
#      warnings and errors. That config serves plain HTTP, keeps a key in
#      memory for 120 s after one request and runs housekeeping every 5 s
#      (see its callgate.toml for why);
#   3. scripts/soak/driver.py limiter: 5 requests from 127.0.0.1 (warm-up),
#      then the server's RSS; then SOAK_LIMITER_ROUNDS rounds, each of one
#      unauthenticated POST /v1/triggers/demo-call from each of
#      SOAK_LIMITER_IPS new addresses (127.1.0.0 upwards; the client socket
#      is bound to the address; Linux routes all of 127.0.0.0/8 to lo), each
#      on its own connection, every answer a 401 (the per-IP limit is taken
#      before authentication, so each address becomes a limiter key); RSS
#      right after the round; then RSS (with LazyFree from smaps_rollup)
#      every second and the key counts the housekeeping logs, until
#      housekeeping has dropped the keys and RSS has not fallen for 15 s (at
#      most SOAK_LIMITER_WAIT s). The second round shows whether the memory
#      of the first is reused (bounded) or added to;
#   4. stops the gateway; ERROR lines in its log fail the run.
#
# Settings (environment):
#   SOAK_LIMITER_IPS=100000   distinct client addresses per round
#   SOAK_LIMITER_ROUNDS=2     rounds, each with new addresses
#   SOAK_LIMITER_CONCURRENCY=64  connections at a time
#   SOAK_LIMITER_WAIT=240     longest wait for housekeeping, seconds
#   SOAK_LIMITER_TLS=1        HTTPS instead of plain HTTP (much slower)
#   SOAK_SKIP_BUILD=1         use the existing target/release/callgate
#   SOAK_KEEP=1               keep the temp dir (also kept on failure)
#
# Exit status 1 on a wrong answer, an ERROR line in the gateway log, keys
# not dropped within SOAK_LIMITER_WAIT, or a setup failure. Takes the build
# and per round the send (~35 s on 2 vCPUs) and ~2.5 minutes of waiting for
# the keys to expire and be dropped.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

IPS=${SOAK_LIMITER_IPS:-100000}
ROUNDS=${SOAK_LIMITER_ROUNDS:-2}
CONCURRENCY=${SOAK_LIMITER_CONCURRENCY:-64}
WAIT=${SOAK_LIMITER_WAIT:-240}
TLS=${SOAK_LIMITER_TLS:-0}

BIN=$ROOT/target/release/callgate
CONFIG_DIR=scripts/soak/limiter-config
DRIVER=scripts/soak/driver.py

log() { echo "soak-limiter: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

for n in "$IPS" "$ROUNDS" "$CONCURRENCY" "$WAIT"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "SOAK_LIMITER_IPS, SOAK_LIMITER_ROUNDS, SOAK_LIMITER_CONCURRENCY and SOAK_LIMITER_WAIT must be positive integers"
done
[[ $TLS == 0 || $TLS == 1 ]] || die "SOAK_LIMITER_TLS must be 0 or 1"
command -v python3 >/dev/null || die "python3 is required"
command -v curl >/dev/null || die "curl is required"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgate-soak-limiter.XXXXXX")
GATEWAY_PID=

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

while read -r var; do
	unset "$var"
done < <(compgen -e | grep '^CALLGATE_' || true)
export CALLGATE_AUTH__KEYS_FILE=$TMP/keys.toml # none are made; nothing is read from the repository's config dir
if [[ $TLS == 1 ]]; then
	export CALLGATE_SERVER__PLAIN_HTTP=false
fi

"$BIN" check --config "$CONFIG_DIR" --data-dir "$TMP/data" >&2 || die "the limiter config does not validate"

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

# Warnings and errors, plus the housekeeping's debug line with the key count.
LOG_FILTER="warn,callgate::app=debug"
CALLGATE_LOG=$LOG_FILTER "$BIN" --log-format json serve --no-runner --config "$CONFIG_DIR" \
	--data-dir "$TMP/data" --listen "127.0.0.1:$PORT" >"$TMP/gateway.out" 2>"$TMP/gateway.log" &
GATEWAY_PID=$!
log "gateway: pid $GATEWAY_PID on 127.0.0.1:$PORT ($([[ $TLS == 1 ]] && echo HTTPS || echo plain HTTP))"

if [[ $TLS == 1 ]]; then
	SCHEME=https CURL_TLS=(--cacert "$TMP/data/tls/cert.pem") DRIVER_TLS=(--cacert "$TMP/data/tls/cert.pem")
else
	SCHEME=http CURL_TLS=() DRIVER_TLS=()
fi
ready=0
for _ in $(seq 1 150); do
	kill -0 "$GATEWAY_PID" 2>/dev/null || {
		tail -n 20 "$TMP/gateway.log" >&2
		die "the gateway exited during start-up"
	}
	if curl -sf --max-time 2 "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
		ready=1
		break
	fi
	sleep 0.2
done
((ready)) || die "the gateway was not ready within 30 s"

RC=0
python3 "$DRIVER" limiter --host 127.0.0.1 --port "$PORT" --pid "$GATEWAY_PID" --log "$TMP/gateway.log" \
	"${DRIVER_TLS[@]}" --ips "$IPS" --rounds "$ROUNDS" --concurrency "$CONCURRENCY" --wait "$WAIT" >"$TMP/report.md" || RC=$?
STOP_RC=0
stop_gateway || STOP_RC=$?
cat "$TMP/report.md"

ERRORS=$(grep -c '"level":"ERROR"' "$TMP/gateway.log" || true)
WARNS=$(grep -c '"level":"WARN"' "$TMP/gateway.log" || true)
CPU_MODEL=$(grep -m1 -E '^(model name|Model|cpu model)' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT + uncommitted changes in src/Cargo"
cat <<EOF

Gateway log: $ERRORS ERROR and $WARNS WARN lines$( ((WARNS == 0)) || printf ' (WARN by message: %s)' "$(grep '"level":"WARN"' "$TMP/gateway.log" | sed -E 's/.*"message":"([^"]*)".*/\1/' | sort | uniq -c | sort -rn | head -n 5 | awk '{ c = $1; $1 = ""; printf "%s%s ×%s", (NR > 1 ? "; " : ""), c, $0 }')"). Gateway exit status after SIGTERM: $STOP_RC.
Machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, Linux $(uname -r), shared with other work; commit $COMMIT.

Commands:
\`\`\`
$BUILD_CMD
CALLGATE_LOG=$LOG_FILTER target/release/callgate --log-format json serve --no-runner --config $CONFIG_DIR --data-dir \$TMP/data --listen 127.0.0.1:<port>
python3 $DRIVER limiter --host 127.0.0.1 --port <port> --pid <gateway pid> --log \$TMP/gateway.log ${DRIVER_TLS[*]:+--cacert \$TMP/data/tls/cert.pem }--ips $IPS --rounds $ROUNDS --concurrency $CONCURRENCY --wait $WAIT
\`\`\`
EOF
((ERRORS == 0)) || {
	log "the gateway logged errors (kept in $TMP/gateway.log)"
	RC=1
}
((STOP_RC == 0)) || RC=1
exit "$RC"
