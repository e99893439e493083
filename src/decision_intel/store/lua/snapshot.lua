-- Replace every window snapshot, and every per-symbol snapshot, in one atomic step.
--
-- A reader sees the old snapshot or the new one, never a missing or half-written
-- key. Symbols listed in a window's registry set last time but absent now lose
-- their keys. One script instead of a MULTI of thousands of commands: with 500
-- symbols the client-side cost of queuing each command dominated.
--
-- KEYS[1] status hash
-- ARGV: ttl_s, snapshot_ts, n_windows, then per window:
--   counts_key, top_key, registry, sym_counts_pre, sym_counts_suf, sym_top_pre, sym_top_suf,
--   COUNTS, n_symbols, { symbol, COUNTS }...
-- where COUNTS is: n_decisions, {decision, n}..., n_top, {reason, n}...

local ttl = tonumber(ARGV[1])
local take = cursor(4).take

local function call_chunked(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Reads one COUNTS group and writes it to the two keys (deleted, then rewritten if any).
local function replace(counts_key, top_key)
  redis.call('DEL', counts_key, top_key)
  local fields = {}
  for _ = 1, tonumber(take()) do
    local d, n = take(), take()
    fields[#fields + 1] = d
    fields[#fields + 1] = n
  end
  local scored = {}
  for _ = 1, tonumber(take()) do
    local r, n = take(), take()
    scored[#scored + 1] = n
    scored[#scored + 1] = r
  end
  if #fields > 0 then
    call_chunked('HSET', counts_key, fields)
    redis.call('EXPIRE', counts_key, ttl)
  end
  if #scored > 0 then
    call_chunked('ZADD', top_key, scored)
    redis.call('EXPIRE', top_key, ttl)
  end
end

for _ = 1, tonumber(ARGV[3]) do
  local counts_key, top_key, registry = take(), take(), take()
  local cpre, csuf, tpre, tsuf = take(), take(), take(), take()
  replace(counts_key, top_key)
  local now = {}
  local listed = {}
  for _ = 1, tonumber(take()) do
    local symbol = take()
    now[symbol] = true
    listed[#listed + 1] = symbol
    replace(cpre .. symbol .. csuf, tpre .. symbol .. tsuf)
  end
  for _, old in ipairs(redis.call('SMEMBERS', registry)) do
    if not now[old] then
      redis.call('DEL', cpre .. old .. csuf, tpre .. old .. tsuf)
    end
  end
  redis.call('DEL', registry)
  if #listed > 0 then
    call_chunked('SADD', registry, listed)
    redis.call('EXPIRE', registry, ttl)
  end
end

redis.call('HSET', KEYS[1], 'snapshot_ts', ARGV[2])
return 1
