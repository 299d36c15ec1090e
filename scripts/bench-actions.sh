#!/usr/bin/env bash
# Mid-call action benchmark: the gateway's action path against calling the
# same upstream directly, in one run, at a fixed request rate.
#
#   scripts/bench-actions.sh     # prints a markdown table on stdout
#
# 1. cargo build --release --bin callgate --example bench_actions
#    (BENCH_SKIP_BUILD=1 uses the existing binaries)
# 2. copies scripts/bench/actions-config to a temp dir and writes its
#    endpoints.toml: endpoint `crm` = http://127.0.0.1:<free port>
#    (allow-listed: the upstream is local, plain HTTP)
# 3. starts `callgate serve` on it (fresh data dir, CALLGATE_LOG=warn)
# 4. runs target/release/examples/bench_actions, which serves the upstream
#    on that port and sends open-loop load at BENCH_ACTIONS_RATE requests/s
#    (default 200), alternating BENCH_ACTIONS_ROUNDS (6) rounds of
#    BENCH_ACTIONS_SECONDS (5) s of "upstream directly" and "through
#    callgate", after a 2 s warm-up of each. Latency counts from each
#    request's send (the schedule only decides when it is sent).
# Exit status: non-zero if the build, the start or any request failed (a
# degraded answer counts as failed). Only 127.0.0.1 is used; it takes about
# 2 x ROUNDS x SECONDS + 10 s after the build.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RATE=${BENCH_ACTIONS_RATE:-200}
SECONDS_PER_ROUND=${BENCH_ACTIONS_SECONDS:-5}
ROUNDS=${BENCH_ACTIONS_ROUNDS:-6}
GATEWAY_BIN=$ROOT/target/release/callgate
LOAD_BIN=$ROOT/target/release/examples/bench_actions

log() { echo "bench-actions: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then
	cargo build --release --bin callgate --example bench_actions >&2 || die "build failed"
fi
[[ -x $GATEWAY_BIN && -x $LOAD_BIN ]] || die "missing $GATEWAY_BIN or $LOAD_BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/callgate-bench-actions.XXXXXX")
GW_PID=
cleanup() {
	local rc=$?
	[[ -n $GW_PID ]] && kill -TERM "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
	if ((rc != 0)); then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
	exit "$rc"
}
trap cleanup EXIT

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

while read -r var; do unset "$var"; done < <(compgen -e | grep '^CALLGATE_' || true)
CALLGATE_JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export CALLGATE_JWT_SECRET

UPSTREAM_PORT=$(free_port)
cp -rL scripts/bench/actions-config "$TMP/config"
cat >"$TMP/config/endpoints.toml" <<TOML
[endpoints.crm]
url = "http://127.0.0.1:$UPSTREAM_PORT"
allow_private = true
allow_http = true
timeout = "2s"
concurrency = 256
TOML
"$GATEWAY_BIN" check --config "$TMP/config" --data-dir "$TMP/data" >&2 || die "the bench config does not validate"
TOKEN=$("$GATEWAY_BIN" jwt mint --issuer bench --sub voice-runtime --scope actions:invoke --config "$TMP/config") ||
	die "cannot mint a token"

GW_PORT=$(free_port)
CALLGATE_LOG=warn "$GATEWAY_BIN" serve --config "$TMP/config" --data-dir "$TMP/data" \
	--listen "127.0.0.1:$GW_PORT" >"$TMP/gateway.out" 2>"$TMP/gateway.log" &
GW_PID=$!
for _ in $(seq 1 150); do
	curl -skf --max-time 2 "https://127.0.0.1:$GW_PORT/healthz" >/dev/null 2>&1 && break
	kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited: $(tail -n 5 "$TMP/gateway.log")"
	sleep 0.2
done

log "gateway pid $GW_PID on 127.0.0.1:$GW_PORT, upstream on 127.0.0.1:$UPSTREAM_PORT, $RATE req/s, $ROUNDS x 2 x $SECONDS_PER_ROUND s"
echo "## Mid-call action overhead ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))"
echo
timeout $((2 * ROUNDS * SECONDS_PER_ROUND + 60)) "$LOAD_BIN" "$UPSTREAM_PORT" "https://127.0.0.1:$GW_PORT" "$TOKEN" \
	"$RATE" "$SECONDS_PER_ROUND" "$ROUNDS"
if grep -q '"level":"ERROR"\|ERROR' "$TMP/gateway.log"; then
	die "the gateway logged errors: $(grep ERROR "$TMP/gateway.log" | head -n 3)"
fi
