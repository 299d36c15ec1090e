-- GCRA for one key, with governor's arithmetic (src/limits/mod.rs), in
-- microseconds. One call is one decision: read, decide, write, in one round
-- trip and atomically (Redis runs one script at a time).
--
-- KEYS[1]  the key of one limit and one client; holds the theoretical
--          arrival time (TAT) in µs and expires when its bucket is full again
--          (a missing key and a full bucket are the same state).
-- ARGV[1]  the emission interval in ns (the time to earn back one request).
-- ARGV[2]  the burst.
-- ARGV[3]  optional "now" in µs, for tests only. Otherwise Redis `TIME` is
--          the clock, so that instances whose clocks disagree still agree.
--
-- Returns {allowed (1 or 0), remaining, retry_after_us}.
local t = tonumber(ARGV[1]) / 1000
local tau = t * (tonumber(ARGV[2]) - 1)
local now = tonumber(ARGV[3])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat - tau
if now < earliest then
  return {0, 0, math.ceil(earliest - now)}
end
local next_tat = math.max(tat, now) + t
redis.call('SET', KEYS[1], string.format('%.17g', next_tat),
  'PX', math.ceil((next_tat - now) / 1000))
-- The epsilon absorbs float rounding when the interval is not a whole µs.
local remaining = math.floor(math.min(now + tau + t - next_tat, tau + t) / t + 1e-9)
return {1, remaining, 0}
