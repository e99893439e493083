-- The daily roll-up: adds minute buckets to their day's rollup, each once.
--
-- A minute listed in the unrolled hash has counts that are not in its day's rollup
-- yet. They are in its bucket while the meta hash says `rolled` 0: the meta hash's
-- decision and reason fields and the bucket's symbol_decision fields. A bucket may
-- expire before the roll-up comes (every daemon down past P35_BUCKET_TTL_SEC), so the
-- flushes also keep them in the minute's roll copy, which lives as long as the day's
-- rollup: with the bucket gone, the copy is added instead. Either goes to the daily
-- rollup, bounded as a flush bounds it; `rolled` becomes 1, the copy is deleted and
-- the minute struck off. A minute with neither (rolled up already) is only struck off.
-- From then on flush.lua adds that minute's late entries to the rollup itself. Both
-- are scripts, so each count reaches the rollup once: through this script or a flush.
--
-- KEYS[1] unrolled hash
-- ARGV: max_reasons, max_symbols, n_decisions, decisions..., n_minutes,
--       {minute, bucket, meta, roll_copy, daily, daily_meta, daily_expire_at_s}...
-- Returns {rolled, struck off without rolling}.
--
-- Every read, and the type checks, come before a minute's first write: a failure
-- leaves that minute as it was, listed, and the minutes before it rolled.

local unrolled = KEYS[1]
local limits = {reasons = tonumber(ARGV[1]), symbols = tonumber(ARGV[2])}
local args = cursor(3)
local decisions = {}
for i = 1, tonumber(args.take()) do decisions[i] = args.take() end

local rolled, gone = 0, 0
-- The increments of a minute as add_counts reads them, from its bucket (the meta hash
-- `m`'s decision and reason copy, the bucket's symbol decisions) or its roll copy.
local function from_bucket(m, bucket)
  local decs, reas, syms, by_sym = {}, {}, {}, {}
  for field, value in pairs(m) do
    local kind, name = string.match(field, '^(%a+):(.*)$')
    if kind == 'decision' then
      decs[#decs + 1] = name
      decs[#decs + 1] = value
    elseif kind == 'reason' then
      reas[#reas + 1] = name
      reas[#reas + 1] = value
    elseif kind == 's' then
      syms[#syms + 1] = name
    end
  end
  if #syms > 0 then
    local wanted = {}
    for _, sym in ipairs(syms) do
      for _, d in ipairs(decisions) do wanted[#wanted + 1] = 'symbol_decision:' .. sym .. ':' .. d end
    end
    local got = {}
    for i = 1, #wanted, 1000 do  -- unpack's limit
      local part = redis.call('HMGET', bucket, unpack(wanted, i, math.min(i + 999, #wanted)))
      for j = 1, #part do got[i + j - 1] = part[j] end
    end
    for i, sym in ipairs(syms) do
      local pairs_of = {}
      for j, d in ipairs(decisions) do
        local n = got[(i - 1) * #decisions + j]
        if n then
          pairs_of[#pairs_of + 1] = d
          pairs_of[#pairs_of + 1] = n
        end
      end
      by_sym[i] = pairs_of
    end
  end
  return decs, reas, syms, by_sym
end

local function from_copy(flat)
  local decs, reas, syms, by_sym, at = {}, {}, {}, {}, {}
  for i = 1, #flat, 2 do
    local kind, name = string.match(flat[i], '^([%a_]+):(.*)$')
    if kind == 'decision' then
      decs[#decs + 1] = name
      decs[#decs + 1] = flat[i + 1]
    elseif kind == 'reason' then
      reas[#reas + 1] = name
      reas[#reas + 1] = flat[i + 1]
    elseif kind == 'symbol_decision' then
      local sym, d = string.match(name, '^([^:]*):(.*)$')
      if not at[sym] then
        syms[#syms + 1] = sym
        at[sym] = #syms
        by_sym[#syms] = {}
      end
      local pairs_of = by_sym[at[sym]]
      pairs_of[#pairs_of + 1] = d
      pairs_of[#pairs_of + 1] = flat[i + 1]
    end
  end
  return decs, reas, syms, by_sym
end

local rolled, gone = 0, 0
for _ = 1, tonumber(args.take()) do
  local minute, bucket, meta, copy = args.take(), args.take(), args.take(), args.take()
  local daily, daily_meta, expire_at = args.take(), args.take(), args.take()
  local flat = redis.call('HGETALL', meta)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  local decs, reas, syms, by_sym
  if m['rolled'] == '0' then
    decs, reas, syms, by_sym = from_bucket(m, bucket)
  else
    local copied = redis.call('HGETALL', copy)
    if #copied > 0 then decs, reas, syms, by_sym = from_copy(copied) end
  end
  if not decs then  -- rolled up already (or from before the roll copies, and expired)
    gone = gone + 1
  else
    local group = {#decs / 2}
    for _, v in ipairs(decs) do group[#group + 1] = v end
    group[#group + 1] = #reas / 2
    for _, v in ipairs(reas) do group[#group + 1] = v end
    group[#group + 1] = #syms
    for i, sym in ipairs(syms) do
      group[#group + 1] = sym
      group[#group + 1] = #by_sym[i] / 2
      for _, v in ipairs(by_sym[i]) do group[#group + 1] = v end
      group[#group + 1] = 0  -- no symbol reasons in a daily rollup
    end
    local t = redis.call('TYPE', daily)['ok']
    if t ~= 'none' and t ~= 'hash' then error('wrong type: ' .. daily, 0) end
    local counters = redis.call('HMGET', daily_meta, 'reasons', 'symbols')
    add_counts(cursor(1, group).take, daily, daily_meta, nil, false, counters, limits, nil)
    if not counters[1] then
      redis.call('EXPIREAT', daily, expire_at)
      redis.call('EXPIREAT', daily_meta, expire_at)
    end
    if m['rolled'] == '0' then redis.call('HSET', meta, 'rolled', 1) end
    rolled = rolled + 1
  end
  redis.call('DEL', copy)
  redis.call('HDEL', unrolled, minute)
end
return {rolled, gone}
