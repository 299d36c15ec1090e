#!/usr/bin/env bash
# Runs the cargo-fuzz targets of tests/fuzz/, one after another (never two at
# once), each for SECONDS (default 600) on one core.
#
#   scripts/fuzz.sh                  # every target, 10 minutes each
#   scripts/fuzz.sh 60 form phone    # these targets, a minute each
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz
# --locked`). Each target starts from its seeds (tests/fuzz/seeds/<target>/)
# plus what earlier runs kept in tests/fuzz/corpus/<target>/ (not committed).
# Fork mode keeps going after a crash; crashing inputs land in
# tests/fuzz/artifacts/<target>/. Once fixed, copy them to
# tests/fuzz/regressions/<target>/, where `cargo test` replays them on stable.
# The build is cargo-fuzz's default (release, debug assertions on, so
# arithmetic overflow panics; AddressSanitizer). The first build of the
# library with coverage instrumentation takes a while (tens of minutes on two
# busy cores).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(form json_schema phone signature jwt template)
fi

for t in "${targets[@]}"; do
  mkdir -p "tests/fuzz/corpus/$t" "tests/fuzz/artifacts/$t"
  cp -n tests/fuzz/seeds/"$t"/* "tests/fuzz/corpus/$t/" 2>/dev/null || true
  echo "== $t (${seconds}s)"
  cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" \
    "tests/fuzz/corpus/$t" -- \
    -artifact_prefix="tests/fuzz/artifacts/$t/" -max_total_time="$seconds" \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -timeout=10 -rss_limit_mb=2048 -max_len=4096 2>&1 \
    | grep -E '^#[0-9]+:|^INFO: (fuzzed|exiting)|crash|CRASH|panicked' || true
  ls "tests/fuzz/artifacts/$t"
done
