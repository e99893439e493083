-- One flush: count a batch of entries and XACK them, atomically, or do nothing.
--
-- Applies only when (a) this process still holds the lease on its consumer name and
-- (b) every counted ID is still pending *for this consumer*. An ID claimed away by
-- another consumer, or already acknowledged (a retry after a lost reply), fails (b):
-- the script then changes nothing and returns those IDs so the caller can drop
-- them and flush the rest. That is what makes counting exactly-once.
--
-- KEYS[1] status hash  KEYS[2] lease  KEYS[3] invalid stream
-- ARGV: stream (not a KEY: the ACL lets this user read and acknowledge the input stream,
--       never write it, and a declared key would need write access), group, consumer, token, lease_ms, max_reasons, max_symbols, invalid_maxlen,
--       min_id, max_id (bounding every ID in the batch),
--       newest_id ('' when the batch holds only reclaimed entries), now_ms, reclaimed,
--       future (entries whose ID lay too far ahead of Redis's clock),
--       n_ids, ids..., n_trimmed, trimmed_ids...,
--       n_buckets, { bucket, meta, expire_at_s,
--                    n_dec, {decision, n}..., n_rea, {reason, n}...,
--                    n_sym, {symbol, n_sd, {decision, n}..., n_sr, {reason, n}...}... }...,
--       n_days, { daily, daily_meta, expire_at_s,
--                 n_dec, {decision, n}..., n_rea, {reason, n}...,
--                 n_sym, {symbol, n_sd, {decision, n}...}... }...,
--       n_invalid, {id, cause, raw}...
-- Returns {0, counted, trimmed} applied; {1, id...} IDs not ours, nothing applied; {2} lease lost;
-- {3, why} an argument or a key would make a write fail, nothing applied.
--
-- Redis does not undo a script's earlier writes when a later command fails, so
-- everything that can fail is checked before the first write.

local status, lease, invalid = KEYS[1], KEYS[2], KEYS[3]
local stream, group, consumer, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lease_ms = tonumber(ARGV[5])
local max_reasons, max_symbols = tonumber(ARGV[6]), tonumber(ARGV[7])
local invalid_maxlen = ARGV[8]
local min_id, max_id = ARGV[9], ARGV[10]
local newest_id, now_ms = ARGV[11], ARGV[12]
local reclaimed = tonumber(ARGV[13])
local future = tonumber(ARGV[14])
local args = cursor(15)
local take = args.take

-- (a) the lease: ours, or free (it expired while we were stopped) and so ours again
-- (taken back below, with the other writes).
local holder = redis.call('GET', lease)
-- A missing lease is ours to take: it lapsed while this process was stopped or cut off
-- (SIGSTOP, a partition) and nobody else took the name in between.
if holder and holder ~= token then return {2} end

local n_ids = tonumber(take())
local ids_at = args.at()
args.skip(n_ids)
local n_trimmed = tonumber(take())
local trimmed_at = args.at()
args.skip(n_trimmed)

-- (b) ownership: this consumer's pending IDs within [min_id, max_id], paged.
local owned = {}
local page_size = 1000
local start = min_id
while true do
  local page = redis.call('XPENDING', stream, group, start, max_id, page_size, consumer)
  for i = 1, #page do owned[page[i][1]] = true end
  if #page < page_size then break end
  start = '(' .. page[#page][1]  -- exclusive start: the next page begins after this ID
end

local missing = {}
for i = ids_at, ids_at + n_ids - 1 do
  if not owned[ARGV[i]] then missing[#missing + 1] = ARGV[i] end
end
if #missing > 0 then
  table.insert(missing, 1, 1)
  return missing
end

-- (c) everything a write below could fail on: key types and numbers.
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('wrong type', 0) end
end
local function check_number(v, low, high)
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < low or n > high then error('bad number', 0) end
end
local MAX_EXPIRE_S = 2 ^ 40  -- EXPIREAT refuses times past this range
local ok, why = pcall(function()
  check_type(status, 'hash')
  check_type(invalid, 'stream')
  check_number(now_ms, 0, 2 ^ 50)
  local nxt = cursor(args.at()).take  -- a second cursor: the writes below read again
  local function counts(with_symbol_reasons)
    for _ = 1, 2 do
      for _ = 1, tonumber(nxt()) do nxt(); check_number(nxt(), 1, 2 ^ 50) end
    end
    for _ = 1, tonumber(nxt()) do
      nxt()
      for _ = 1, (with_symbol_reasons and 2 or 1) do
        for _ = 1, tonumber(nxt()) do nxt(); check_number(nxt(), 1, 2 ^ 50) end
      end
    end
  end
  for _, with_symbol_reasons in ipairs({true, false}) do
    for _ = 1, tonumber(nxt()) do
      check_type(nxt(), 'hash')
      check_type(nxt(), 'hash')
      check_number(nxt(), 0, MAX_EXPIRE_S)
      counts(with_symbol_reasons)
    end
  end
end)
if not ok then return {3, tostring(why)} end

if holder ~= token then redis.call('SET', lease, token, 'PX', lease_ms) end

local function ack(list)
  for i = 1, #list, 500 do
    redis.call('XACK', stream, group, unpack(list, i, math.min(i + 499, #list)))
  end
end
local counted = {}
for i = ids_at, ids_at + n_ids - 1 do counted[#counted + 1] = ARGV[i] end
ack(counted)

local trimmed_owned = {}
for i = trimmed_at, trimmed_at + n_trimmed - 1 do
  if owned[ARGV[i]] then trimmed_owned[#trimmed_owned + 1] = ARGV[i] end
end
if #trimmed_owned > 0 then
  ack(trimmed_owned)
  redis.call('HINCRBY', status, 'trimmed_total', #trimmed_owned)
end

-- Buckets. Reasons beyond max_reasons distinct ones fold into `other`; symbols
-- beyond max_symbols distinct ones get no symbol fields. The private meta hash
-- holds the distinct counts, the symbols seen, a change counter, and a copy of the
-- bucket's decision and reason fields (what snapshots read with the symbol
-- breakdown off).
-- A reason new to `hash` is admitted while fewer than max_reasons distinct ones are
-- there (`other` included); past that it is counted as `other`. `seen` carries the
-- distinct count (`n`) and this flush's verdicts (`map`), so each is judged once.
-- The increment itself tells whether the field is new (it then equals `n`: counts
-- are never 0), so the common case is one command; a reason over the bound is taken
-- back (HDEL) and counted as `other`. Returns the name counted and whether `hash`
-- already has the increment.
local function add_reason(hash, r, n, seen)
  local name = seen.map[r]
  if name ~= nil then return name, false end
  if r == 'other' then
    seen.map[r] = r
    return r, false
  end
  local field = 'reason:' .. r
  if redis.call('HINCRBY', hash, field, n) ~= n then
    seen.map[r] = r
    return r, true
  end
  if seen.n >= max_reasons - 1 then
    redis.call('HDEL', hash, field)
    seen.map[r] = 'other'
    return 'other', false
  end
  seen.n = seen.n + 1
  seen.map[r] = r
  return r, true
end

-- A symbol new to `meta`'s registry is admitted while fewer than max_symbols are known.
local function symbol_kept(meta, sym, seen)
  local keep = seen.map[sym]
  if keep == nil then
    local known = redis.call('HEXISTS', meta, 's:' .. sym) == 1
    keep = known or seen.n < max_symbols
    if keep and not known then
      redis.call('HSET', meta, 's:' .. sym, 1)
      seen.n = seen.n + 1
    end
    seen.map[sym] = keep
  end
  return keep
end

-- The distinct counts kept in `meta`, and whether it is new (its keys get their
-- expiry then: it is fixed by the minute or the day, so once is enough).
local function counters(meta)
  local m = redis.call('HMGET', meta, 'reasons', 'symbols')
  return {n = tonumber(m[1]) or 0, map = {}}, {n = tonumber(m[2]) or 0, map = {}}, not m[1]
end

-- Adds the next group of increments (decisions, reasons, symbols; see ARGV) to
-- `hash`, bounded by the distinct counts kept in `meta`. `copy`, when given, also
-- gets the decision and reason fields. Returns how many symbols the bound left out,
-- and whether the keys are new.
local function add_counts(hash, meta, copy, with_symbol_reasons)
  local reasons, symbols, fresh = counters(meta)
  local function incr(field, n)
    redis.call('HINCRBY', hash, field, n)
    if copy then redis.call('HINCRBY', copy, field, n) end
  end
  for _ = 1, tonumber(take()) do
    local d, n = take(), take()
    incr('decision:' .. d, n)
  end
  for _ = 1, tonumber(take()) do
    local r, n = take(), take()
    local name, done = add_reason(hash, r, n, reasons)
    if not done then redis.call('HINCRBY', hash, 'reason:' .. name, n) end
    if copy then redis.call('HINCRBY', copy, 'reason:' .. name, n) end
  end
  local dropped = 0
  for _ = 1, tonumber(take()) do
    local sym = take()
    local keep = symbol_kept(meta, sym, symbols)
    if not keep then dropped = dropped + 1 end
    for _ = 1, tonumber(take()) do
      local d, n = take(), take()
      if keep then redis.call('HINCRBY', hash, 'symbol_decision:' .. sym .. ':' .. d, n) end
    end
    if with_symbol_reasons then
      for _ = 1, tonumber(take()) do
        local r, n = take(), take()
        if keep then
          local field = 'symbol_reason:' .. sym .. ':' .. (reasons.map[r] or 'other')
          redis.call('HINCRBY', hash, field, n)
        end
      end
    end
  end
  redis.call('HSET', meta, 'reasons', reasons.n, 'symbols', symbols.n)
  return dropped, fresh
end

-- Minute buckets; the meta hash also keeps the decision/reason copy and a change counter.
for _ = 1, tonumber(take()) do
  local bucket, meta, expire_at = take(), take(), take()
  local dropped, fresh = add_counts(bucket, meta, meta, true)
  redis.call('HINCRBY', meta, 'v', 1)
  if dropped > 0 then redis.call('HINCRBY', meta, 'symbols_dropped', dropped) end
  if fresh then
    redis.call('EXPIREAT', bucket, expire_at)
    redis.call('EXPIREAT', meta, expire_at)
  end
end

-- Daily rollups: decision and reason totals and per-symbol decision totals per UTC
-- day, bounded like buckets (their own distinct counts in the day's meta hash).
-- Counted here, with the XACK, so they are exact like the buckets.
for _ = 1, tonumber(take()) do
  local daily, meta, expire_at = take(), take(), take()
  local _, fresh = add_counts(daily, meta, nil, false)
  if fresh then
    redis.call('EXPIREAT', daily, expire_at)
    redis.call('EXPIREAT', meta, expire_at)
  end
end

local n_invalid = tonumber(take())
for _ = 1, n_invalid do
  local id, cause, raw = take(), take(), take()
  redis.call('XADD', invalid, 'MAXLEN', '~', invalid_maxlen, '*',
    'id', id, 'cause', cause, 'raw', raw, 'consumer', consumer, 'ts_ms', now_ms)
end

-- Group-wide totals, exact because they move with the XACK.
redis.call('HINCRBY', status, 'processed_total', n_ids)
if reclaimed > 0 then redis.call('HINCRBY', status, 'reclaimed_total', reclaimed) end
if n_invalid > 0 then redis.call('HINCRBY', status, 'invalid_total', n_invalid) end
if future > 0 then
  redis.call('HINCRBY', status, 'future_ids_total', future)
  redis.call('HSET', status, 'future_id_last_ms', now_ms)
end

-- IDs compared as digit strings: their parts go up to 2^64 - 1, past a Lua number's
-- exact range. Redis writes them without leading zeros, so longer means larger.
local function greater(x, y)
  if #x ~= #y then return #x > #y end
  return x > y
end
local function newer(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not bm then return true end
  if am ~= bm then return greater(am, bm) end
  return greater(as, bs)
end
if newest_id ~= '' then
  local last = redis.call('HGET', status, 'last_id')
  if not last or newer(newest_id, last) then
    redis.call('HSET', status, 'last_id', newest_id)
  end
end
return {0, n_ids, #trimmed_owned}
