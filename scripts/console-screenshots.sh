#!/usr/bin/env bash
# Refreshes the console screenshots the README shows (scripts/screenshots/).
#
#   scripts/console-screenshots.sh
#
# Runs the console's browser tests in headless Chromium (they fail, rather
# than skip, without chromedriver: CALLGATE_REQUIRE_BROWSER=1), which save
# every page they visit under target/console-screenshots/ at a desktop
# width (1280x900), then copies the chosen pages here. Each is compressed
# losslessly with oxipng or optipng when either is installed (Chromium's
# PNGs are already small) and must stay under MAX_BYTES.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_BYTES=153600
from="${CARGO_TARGET_DIR:-target}/console-screenshots"
to=scripts/screenshots
# README name <- the test's screenshot.
pages=(
  "overview:overview-overview"
  "jobs:filter-jobs-jobs"
  "job:job-timeline-job"
  "delivery:replay-delivery-delivery-replayed"
  "endpoints:endpoints-endpoints"
  "keys:keys-keys"
)

rm -rf "$from"
CALLGATE_REQUIRE_BROWSER=1 cargo test --locked --test it console::browser

mkdir -p "$to"
for page in "${pages[@]}"; do
  name="${page%%:*}"
  shot="$from/${page#*:}.png"
  [ -f "$shot" ] || { echo "missing $shot (did its test change?)" >&2; exit 1; }
  cp "$shot" "$to/$name.png"
  if command -v oxipng >/dev/null; then
    oxipng -q -o 4 --strip safe "$to/$name.png"
  elif command -v optipng >/dev/null; then
    optipng -quiet -o2 -strip all "$to/$name.png"
  fi
  size=$(wc -c <"$to/$name.png")
  if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "$to/$name.png is $size bytes, over $MAX_BYTES" >&2
    exit 1
  fi
  echo "$to/$name.png: $size bytes"
done
