-- wrk script for the runner benchmark in scripts/bench.sh: the same request
-- and BENCH line as post.lua, plus a request budget and optional pacing.
--
-- Environment (besides post.lua's BENCH_TOKEN and BENCH_BODY_FILE):
--   BENCH_POST_LUA     path of post.lua (loaded for the request and done())
--   BENCH_TOTAL        requests to send in all, split over the threads
--                      (0: no budget; wrk's --duration alone ends the run)
--   BENCH_RATE         requests per second in all, paced per thread on a
--                      fixed schedule (0: as fast as the server answers)
--   BENCH_WRK_THREADS  wrk's --threads
--   BENCH_WRK_CONNS    wrk's --connections
--
-- A thread that has sent its budget stops itself once every one of its
-- connections is idle (each connection asks delay() once more after its
-- last answer, HTTP/1.1 without pipelining), so no request is cut off;
-- wrk's main thread still sleeps until --duration ends. Pacing: a thread
-- sends its k-th request at start + k * threads / BENCH_RATE; a request
-- that is late (all of the thread's connections were busy) goes out at
-- once, so the offered rate catches up while there are enough connections.

dofile(os.getenv("BENCH_POST_LUA") or "scripts/bench/post.lua")

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local function env_number(name)
  return tonumber(os.getenv(name) or "") or 0
end

local TOTAL = env_number("BENCH_TOTAL")
local RATE = env_number("BENCH_RATE")
local THREADS = math.max(1, env_number("BENCH_WRK_THREADS"))
local CONNS = math.max(1, math.floor(env_number("BENCH_WRK_CONNS") / THREADS))

-- Main Lua state: numbers the threads (setup() runs for each thread before
-- that thread starts; thread:set() defines a global in its Lua state).
local next_index = 0
function setup(thread)
  thread:set("bench_index", next_index)
  next_index = next_index + 1
end

-- Thread state.
local budget, interval, calls, start = nil, 0, 0, nil

local function configure()
  local i = tonumber(bench_index) or 0
  if TOTAL > 0 then
    budget = math.floor(TOTAL / THREADS) + ((i < TOTAL % THREADS) and 1 or 0)
  else
    budget = -1
  end
  if RATE > 0 then
    interval = 1000 * THREADS / RATE
  end
end

function delay()
  if budget == nil then
    configure()
  end
  calls = calls + 1
  if budget >= 0 and calls > budget then
    -- This connection has its last answer and stays idle.
    if calls - budget >= CONNS then
      wrk.thread:stop()
    end
    return 3600 * 1000
  end
  if interval <= 0 then
    return 0
  end
  local now = now_ms()
  if start == nil then
    start = now
  end
  local due = start + (calls - 1) * interval
  if due <= now then
    return 0
  end
  return math.floor(due - now + 0.5)
end
