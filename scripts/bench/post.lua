-- wrk script for scripts/bench.sh: POST one demo-call trigger per request.
--
-- Environment:
--   BENCH_TOKEN      bearer token sent in Authorization (both servers get
--                    the same bytes; the baseline ignores it)
--   BENCH_BODY_FILE  the JSON body (scripts/bench/body.json; bench.sh's
--                    sanity request sends the same file with curl)
--
-- No `response` hook on purpose: with one, wrk parses every response's
-- headers and body in Lua, which costs client CPU on the same cores as the
-- server. wrk counts non-2xx/3xx answers itself (summary.errors.status);
-- bench.sh additionally checks the jobs in the gateway's database.
--
-- done() prints one machine-readable line:
--   BENCH requests=N duration_us=N ok_per_s=F ok=N non2xx=N connect_errors=N
--         read_errors=N write_errors=N timeouts=N p50_us=N p90_us=N
--         p99_us=N max_us=N mean_us=F

wrk.method = "POST"
wrk.path = "/v1/triggers/demo-call"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
local body_file = os.getenv("BENCH_BODY_FILE") or "scripts/bench/body.json"
local f = assert(io.open(body_file, "rb"), "cannot open " .. body_file)
wrk.body = f:read("*a")
f:close()

function done(summary, latency, requests)
  local e = summary.errors
  local ok = summary.requests - e.status
  local secs = summary.duration / 1e6
  io.write(string.format(
    "BENCH requests=%d duration_us=%d ok_per_s=%.1f ok=%d non2xx=%d "
      .. "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d "
      .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, ok / secs, ok, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
