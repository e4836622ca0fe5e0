-- The Redis quota store's decisions (see base.py for the contract, redis_store.py for the
-- caller). One script so one EVALSHA decides a whole reservation atomically, on Redis
-- server time. Every key it touches is in KEYS, and all KEYS of one call share a hash slot.
--
-- ARGV[1] is the mode:
--   reserve  KEYS = res, k1, k1:log, k2, k2:log, ...
--            ARGV = mode, token, settle_within_ms, then per charge: kind, window, seconds, limit, amount
--            -> {admitted, exceeded (0-based, -1), then per charge: limit, used, remaining, reset_ms}
--   settle   KEYS = res, k1, k1:log, ...   ARGV = mode, token, actual_tokens   -> 1 | 0
--   usage    KEYS = k1, k1:log, ...        ARGV = mode, then per charge: kind, window, seconds, limit
--            -> per charge: limit, used, remaining, reset_ms (writes nothing)
--   reset    KEYS = k1, k1:log, ...        ARGV = mode   -> how many counters existed
--
-- Layouts under a charge key K:
--   fixed / calendar_month: HASH K {s = window start ms, u = used}; expires at window end + margin
--   rolling: HASH K {u = total} + ZSET K:log (member token:i:amount, score = ms); expire after the window
--   in_flight: ZSET K (member token:i, score = lease expiry ms); expires with its last lease
--   reservation: STRING res = cjson {k = keys, c = {{kind, window, seconds, start, amount}, ...}}

local DAY_MS = 86400000
local MARGIN_MS = 1000

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Howard Hinnant's days-from-civil and its inverse (proleptic Gregorian, UTC).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- The current fixed window or calendar month: start and end in ms.
local function bounds(window, seconds, now)
  if window == 'calendar_month' then
    local y, m = civil_from_days(math.floor(now / DAY_MS))
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * DAY_MS, days_from_civil(ny, nm, 1) * DAY_MS
  end
  local len = seconds * 1000
  local start = now - now % len
  return start, start + len
end

local function num(n)
  return string.format('%d', n)
end

-- Keep a key at least `ms` longer (never shortens a longer TTL).
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, num(ms)) end
end

local function lease_ms(c, settle_within_ms)
  if c.seconds > 0 then return c.seconds * 1000 end
  return settle_within_ms
end

-- Sum of the rolling log's entries aged out by `now`; removed (and taken off the total)
-- only when `write` is set.
local function aged_out(c, now, write)
  local cutoff = num(now - c.seconds * 1000)
  local gone = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', c.log, '-inf', cutoff)) do
    gone = gone + tonumber(string.match(member, ':(%d+)$'))
  end
  if write and gone > 0 then
    redis.call('ZREMRANGEBYSCORE', c.log, '-inf', cutoff)
    redis.call('HINCRBY', c.key, 'u', num(-gone))
  end
  return gone
end

-- The limit's use and reset_ms now, before this reservation. `write` prunes what expired.
local function read(c, now, write)
  if c.kind == 'in_flight' then
    if write then redis.call('ZREMRANGEBYSCORE', c.key, '-inf', num(now)) end
    local used = redis.call('ZCOUNT', c.key, '(' .. num(now), '+inf')
    local first = redis.call('ZRANGEBYSCORE', c.key, '(' .. num(now), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if first[2] then return used, tonumber(first[2]) - now end
    return used, 0
  end
  if c.window == 'rolling' then
    local gone = aged_out(c, now, write)
    local used = tonumber(redis.call('HGET', c.key, 'u') or '0')
    if not write then used = used - gone end
    local first = redis.call('ZRANGEBYSCORE', c.log, '(' .. num(now - c.seconds * 1000), '+inf',
      'WITHSCORES', 'LIMIT', 0, 1)
    if first[2] then return math.max(used, 0), tonumber(first[2]) + c.seconds * 1000 - now end
    return math.max(used, 0), 0
  end
  local start, finish = bounds(c.window, c.seconds, now)
  local held = redis.call('HMGET', c.key, 's', 'u')
  if tonumber(held[1]) == start then return tonumber(held[2]), finish - now end
  return 0, finish - now
end

-- Charges from ARGV, `width` values each from index `from`, with their two KEYS.
local function charges(from, width, key_base)
  local list = {}
  local i = 0
  while from + i * width <= #ARGV do
    local a = from + i * width
    list[i + 1] = {
      key = KEYS[key_base + 2 * i], log = KEYS[key_base + 2 * i + 1],
      kind = ARGV[a], window = ARGV[a + 1], seconds = tonumber(ARGV[a + 2]),
      limit = tonumber(ARGV[a + 3]), amount = width == 5 and tonumber(ARGV[a + 4]) or 0,
    }
    i = i + 1
  end
  return list
end

local function state(out, limit, used, reset)
  out[#out + 1] = limit
  out[#out + 1] = used
  out[#out + 1] = math.max(limit - used, 0)
  out[#out + 1] = math.max(reset, 0)
end

local function reserve()
  local token, settle_within_ms = ARGV[2], tonumber(ARGV[3])
  local now = now_ms()
  local list = charges(4, 5, 2)
  local seen, added = {}, {}
  local exceeded = -1
  for i, c in ipairs(list) do
    if c.kind ~= 'tokens' then c.amount = 1 end
    if not seen[c.key] then
      local used, reset = read(c, now, true)
      seen[c.key] = {used = used, reset = reset}
    end
    c.before = seen[c.key]
    local pending = added[c.key] or 0
    if exceeded < 0 and c.before.used + pending + c.amount > c.limit then exceeded = i - 1 end
    added[c.key] = pending + c.amount
  end
  local out = {exceeded < 0 and 1 or 0, exceeded}
  if exceeded >= 0 then
    for _, c in ipairs(list) do state(out, c.limit, c.before.used, c.before.reset) end
    return out
  end
  local record, keys = {}, {}
  local keep_ms = 1
  for i, c in ipairs(list) do
    local member = token .. ':' .. i
    local start, reset, until_ms = 0, 0, 0
    if c.kind == 'in_flight' then
      local ms = lease_ms(c, settle_within_ms)
      redis.call('ZADD', c.key, num(now + ms), member)
      extend(c.key, ms)
      reset = c.before.reset > 0 and math.min(c.before.reset, ms) or ms
      until_ms = ms
    elseif c.window == 'rolling' then
      local ms = c.seconds * 1000
      start = now
      redis.call('ZADD', c.log, num(now), member .. ':' .. num(c.amount))
      redis.call('HINCRBY', c.key, 'u', num(c.amount))
      extend(c.log, ms)
      extend(c.key, ms)
      reset = c.before.reset > 0 and c.before.reset or ms
      until_ms = ms
    else
      local finish
      start, finish = bounds(c.window, c.seconds, now)
      if tonumber(redis.call('HGET', c.key, 's')) == start then
        redis.call('HINCRBY', c.key, 'u', num(c.amount))
      else
        redis.call('HSET', c.key, 's', num(start), 'u', num(c.amount))
      end
      redis.call('PEXPIRE', c.key, num(finish - now + MARGIN_MS))
      reset = finish - now
      until_ms = finish - now
    end
    keep_ms = math.max(keep_ms, until_ms)
    keys[i] = c.key
    record[i] = {c.kind, c.window, c.seconds, start, c.amount}
    state(out, c.limit, c.before.used + added[c.key], reset)
  end
  redis.call('SET', KEYS[1], cjson.encode({k = keys, c = record}),
    'PX', num(math.max(math.min(keep_ms, settle_within_ms), 1)))
  return out
end

local function settle()
  local raw = redis.call('GET', KEYS[1])
  if not raw then return 0 end
  redis.call('DEL', KEYS[1])
  local token, actual = ARGV[2], tonumber(ARGV[3])
  local now = now_ms()
  local rec = cjson.decode(raw)
  for i, held in ipairs(rec.c) do
    local key, log = KEYS[2 * i], KEYS[2 * i + 1]
    if key ~= rec.k[i] then return redis.error_reply('settle: keys do not match the reservation') end
    local kind, window, seconds, start, amount = held[1], held[2], held[3], held[4], held[5]
    local member = token .. ':' .. i
    if kind == 'in_flight' then
      redis.call('ZREM', key, member)
    elseif kind == 'tokens' and actual ~= amount then
      if window == 'rolling' then
        local entry = member .. ':' .. num(amount)
        local score = tonumber(redis.call('ZSCORE', log, entry))
        if score and score > now - seconds * 1000 then
          -- add before removing, so the log never empties (and never loses its TTL)
          if actual > 0 then redis.call('ZADD', log, num(score), member .. ':' .. num(actual)) end
          redis.call('ZREM', log, entry)
          if redis.call('HINCRBY', key, 'u', num(actual - amount)) < 0 then
            redis.call('HSET', key, 'u', 0)
          end
          extend(key, score + seconds * 1000 - now)
        end
      elseif bounds(window, seconds, now) == start
          and tonumber(redis.call('HGET', key, 's')) == start then
        if redis.call('HINCRBY', key, 'u', num(actual - amount)) < 0 then
          redis.call('HSET', key, 'u', 0)
        end
      end
    end
  end
  return 1
end

local function usage()
  local now = now_ms()
  local out = {}
  for _, c in ipairs(charges(2, 4, 1)) do
    local used, reset = read(c, now, false)
    state(out, c.limit, used, reset)
  end
  return out
end

local function reset()
  local cleared = 0
  for i = 1, #KEYS, 2 do
    if redis.call('DEL', KEYS[i], KEYS[i + 1]) > 0 then cleared = cleared + 1 end
  end
  return cleared
end

local modes = {reserve = reserve, settle = settle, usage = usage, reset = reset}
local mode = modes[ARGV[1]]
if not mode then return redis.error_reply('quota.lua: unknown mode ' .. tostring(ARGV[1])) end
return mode()
