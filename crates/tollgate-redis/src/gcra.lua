-- Tollgate's rate-limit check: GCRA over several buckets at once, all or none, in one round trip.
--
-- KEYS[i]       bucket i's key; its value is the bucket's TAT ("theoretical arrival time"), in microseconds of
--               Redis's own clock (TIME), so the nodes' clocks never matter.
-- ARGV[1]       "check" (take every cost, or none) or "adjust" (move one bucket by its cost without a check).
-- ARGV[2]       the burst tolerance in microseconds (one second: what a full bucket holds, as time); a bucket
--               of a slow limit holds at least one unit plus up to that second of slack (interval + min(interval,
--               tolerance)), as the in-process limiter: one unit exactly would lose the gap between the bucket's
--               emptying and the next arrival on every unit.
-- ARGV[2+2i-1]  bucket i's emission interval in microseconds (60 s / its per-minute limit; a decimal).
-- ARGV[2+2i]    bucket i's cost in units (adjust: a signed delta).
--
-- A bucket admits a cost when its new TAT stays within the tolerance of now, or when it is not in debt at all
-- (TAT <= now) whatever the cost: a request larger than the bucket's burst still passes once, and the debt it
-- leaves keeps the long-run rate (a token bucket's single large request).
--
-- Returns {admitted (1|0), refusing bucket (0-based, -1 when admitted), retry_after_ms, then per bucket
-- remaining and reset_ms}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local mode = ARGV[1]
local tolerance = tonumber(ARGV[2])
local function tau_of(interval)
  local slack = interval
  if slack > tolerance then slack = tolerance end
  local tau = interval + slack
  if tau < tolerance then return tolerance end
  return tau
end
-- A TTL past any real use: a bucket pushed this far into debt (an absurd cost) still expires some day.
local max_ttl_ms = 1e12

-- TATs as stored (formatted as integers: tostring would keep only 14 digits of a 16-digit microsecond clock).
local function store(key, tat)
  local ttl = math.ceil((tat - now) / 1000)
  if ttl <= 0 then
    redis.call('DEL', key)
  else
    if ttl > max_ttl_ms then ttl = max_ttl_ms end
    redis.call('SET', key, string.format('%.0f', math.ceil(tat)), 'PX', string.format('%.0f', ttl))
  end
end

local function current(key, seen)
  local tat = seen[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key) or '0') or 0
  end
  if tat < now then tat = now end
  return tat
end

if mode == 'adjust' then
  local interval = tonumber(ARGV[3])
  local delta = tonumber(ARGV[4])
  local tat = current(KEYS[1], {}) + delta * interval
  -- Giving back never makes a bucket fuller than full.
  if tat < now then tat = now end
  store(KEYS[1], tat)
  return {1, -1, 0}
end

local n = #KEYS
-- A key named twice in one check sees its own earlier cost.
local seen = {}
local tats = {}
local news = {}
local refused = -1
local wait = 0
for i = 1, n do
  local interval = tonumber(ARGV[1 + 2 * i])
  local cost = tonumber(ARGV[2 + 2 * i])
  local tau = tau_of(interval)
  local tat = current(KEYS[i], seen)
  tats[i] = tat
  local used = cost * interval
  local new = tat + used
  if new - now <= tau or tat <= now then
    news[i] = new
    seen[KEYS[i]] = new
  else
    if refused < 0 then refused = i - 1 end
    news[i] = tat
    seen[KEYS[i]] = tat
  end
  -- Until this bucket would admit the cost: its debt above what the tolerance leaves room for.
  local room = tau - used
  if room < 0 then room = 0 end
  local w = tat - now - room
  if w > wait then wait = w end
end

if refused < 0 then
  for i = 1, n do
    store(KEYS[i], news[i])
  end
end

local out = {refused < 0 and 1 or 0, refused, 0}
if refused >= 0 then
  local ms = math.ceil(wait / 1000)
  if ms < 1 then ms = 1 end
  -- Replies are 64-bit integers: an absurd debt is capped, not wrapped.
  if ms > max_ttl_ms then ms = max_ttl_ms end
  out[3] = ms
end
-- States: after the costs when admitted, as they are when refused (nothing was taken).
for i = 1, n do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tau = tau_of(interval)
  local level = (refused < 0 and news[i] or tats[i]) - now
  local left = math.floor((tau - level) / interval)
  if left < 0 then left = 0 end
  local reset = math.ceil(level / 1000)
  if reset > max_ttl_ms then reset = max_ttl_ms end
  out[#out + 1] = left
  out[#out + 1] = reset
end
return out
