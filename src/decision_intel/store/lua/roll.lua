-- The daily roll-up: adds minute buckets to their day's rollup, each once.
--
-- A minute listed in the unrolled hash has counts that are not in its day's rollup
-- yet (its meta hash says `rolled` 0). For each minute given: when its meta hash is
-- gone (the bucket expired) or it is rolled up already, it is only struck off the
-- list; otherwise its decision and reason fields (the meta hash's copy) and its
-- symbol_decision fields go to the daily rollup, bounded as a flush bounds them,
-- `rolled` becomes 1 and it is struck off. From then on flush.lua adds that minute's
-- late entries to the rollup itself. Both are scripts, so each count reaches the
-- rollup once: through this script or through a flush.
--
-- KEYS[1] unrolled hash
-- ARGV: max_reasons, max_symbols, n_decisions, decisions..., n_minutes,
--       {minute, bucket, meta, daily, daily_meta, daily_expire_at_s}...
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
for _ = 1, tonumber(args.take()) do
  local minute, bucket, meta = args.take(), args.take(), args.take()
  local daily, daily_meta, expire_at = args.take(), args.take(), args.take()
  local flat = redis.call('HGETALL', meta)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  if m['rolled'] ~= '0' then  -- gone (expired), or rolled up already
    gone = gone + 1
  else
    -- The bucket's increments in the layout add_counts reads.
    local decs, reas, syms = {}, {}, {}
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
    local group = {#decs / 2}
    for _, v in ipairs(decs) do group[#group + 1] = v end
    group[#group + 1] = #reas / 2
    for _, v in ipairs(reas) do group[#group + 1] = v end
    group[#group + 1] = #syms
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
        group[#group + 1] = sym
        local at = #group + 1
        group[at] = 0
        for j, d in ipairs(decisions) do
          local n = got[(i - 1) * #decisions + j]
          if n then
            group[#group + 1] = d
            group[#group + 1] = n
            group[at] = group[at] + 1
          end
        end
        group[#group + 1] = 0  -- no symbol reasons in a daily rollup
      end
    end
    local t = redis.call('TYPE', daily)['ok']
    if t ~= 'none' and t ~= 'hash' then error('wrong type: ' .. daily, 0) end
    local counters = redis.call('HMGET', daily_meta, 'reasons', 'symbols')
    add_counts(cursor(1, group).take, daily, daily_meta, nil, false, counters, limits, nil)
    if not counters[1] then
      redis.call('EXPIREAT', daily, expire_at)
      redis.call('EXPIREAT', daily_meta, expire_at)
    end
    redis.call('HSET', meta, 'rolled', 1)
    rolled = rolled + 1
  end
  redis.call('HDEL', unrolled, minute)
end
return {rolled, gone}
