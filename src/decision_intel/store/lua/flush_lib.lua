-- The flush's steps (flush.lua runs them in order; tests/test_flush_lua.py runs each
-- through EVAL). A flush counts a batch of entries and XACKs them, atomically, or does
-- nothing. It applies only when (a) this process still holds the lease on its consumer
-- name and (b) every counted ID is still pending *for this consumer*. An ID claimed
-- away by another consumer, or already acknowledged (a retry after a lost reply), fails
-- (b): nothing changes and those IDs go back to the caller, who drops them and flushes
-- the rest. That is what makes counting exactly-once.
--
-- Redis does not undo a script's earlier writes when a later command fails, so every
-- step before flush_apply only reads, and flush_plan checks everything a write could
-- fail on.

-- The arguments by name. KEYS: status hash, lease, invalid stream, unrolled buckets
-- (hash), ledger hash, settled ranges (lib.lua). ARGV: the fields FLUSH_HEADER names, in
-- its order (store/flush.py writes both), then variable-length groups, each a count and
-- its items: ids, trimmed ids, replayed ids (settled already: acknowledged, never
-- counted), runs ({first, last}: counted IDs the stream held contiguously), the
-- buckets as one JSON array, invalid records ({id, cause, raw}). `<group>_at` is where
-- a group's items begin in ARGV, `n_<group>` how many there are.
local function flush_read(keys, argv)
  local a = {status = keys[1], lease = keys[2], invalid = keys[3], unrolled = keys[4],
             ledger = keys[5], settled = keys[6], argv = argv}
  for i, name in ipairs(FLUSH_HEADER) do a[name] = argv[i] end
  for _, name in ipairs({'lease_ms', 'max_reasons', 'max_symbols', 'reclaimed', 'future'}) do
    a[name] = tonumber(a[name])
  end
  local c = cursor(#FLUSH_HEADER + 1, argv)
  local function group(name, width)
    local n = tonumber(c.take())
    a['n_' .. name], a[name .. '_at'] = n, c.at()
    c.skip(width * n)
  end
  group('ids', 1)
  group('trimmed', 1)
  group('replayed', 1)
  group('runs', 2)
  a.buckets_json = c.take()
  group('invalid', 3)
  return a
end

-- (a) The lease: ours, or missing (it lapsed while this process was stopped or cut off,
-- and nobody took the name in between: ours to take again, with the writes).
local function flush_lease(a)
  a.holder = redis.call('GET', a.lease)
  return not a.holder or a.holder == a.token
end

-- (b) Ownership: this consumer's pending IDs within [min_id, max_id], paged. Returns the
-- IDs of the batch (counted or replayed) that are not among them.
local function flush_owned(a)
  local owned, start, page_size = {}, a.min_id, 1000
  while true do
    local page = redis.call('XPENDING', a.stream, a.group, start, a.max_id, page_size,
      a.consumer)
    for i = 1, #page do owned[page[i][1]] = true end
    if #page < page_size then break end
    start = '(' .. page[#page][1]  -- exclusive start: the next page begins after this ID
  end
  a.owned = owned
  local missing, argv = {}, a.argv
  for i = a.ids_at, a.ids_at + a.n_ids - 1 do
    if not owned[argv[i]] then missing[#missing + 1] = argv[i] end
  end
  for i = a.replayed_at, a.replayed_at + a.n_replayed - 1 do
    if not owned[argv[i]] then missing[#missing + 1] = argv[i] end
  end
  return missing
end

-- (b2) Replays: an ID settled already was counted (or reported lost) before; the group
-- delivered it again. `hi`, the highest settled range's end, spares the range lookup
-- while batches are newer than anything settled (always, with one consumer). Returns
-- the batch's IDs that are settled.
local function flush_replays(a)
  local ledger_state = redis.call('HMGET', a.ledger, 'S', 'hi')
  local prefix = ledger_state[1]
  a.settled_hi = ledger_state[2]
  local replays = {}
  if a.n_ids > 0 and (prefix and not newer(a.min_id, prefix)
      or a.settled_hi and not newer(a.min_id, a.settled_hi)) then
    local ranges = a.settled_hi and settled_ranges(a.settled, a.min_id, a.max_id) or {}
    for i = a.ids_at, a.ids_at + a.n_ids - 1 do
      if is_settled(a.argv[i], prefix, ranges) then replays[#replays + 1] = a.argv[i] end
    end
  end
  return replays
end

-- (c) The plan: every bucket's keys and what its counting needs, after checking all a
-- write below could fail on: key types and the numbers that are not counts (counts are
-- the daemon's own integers, never producer input). The reads here need doing anyway
-- (a bucket's distinct counts, whether it is rolled up, the last ID) and fail on a wrong
-- type themselves. Returns the plan, or nil and why.
local MAX_EXPIRE_S = 2 ^ 40  -- EXPIREAT refuses times past this range
-- A new bucket this close to its expiry is not left for the roll-up (roll.lua), which
-- might come after it is gone: its counts go to the daily rollup at once.
local ROLL_MARGIN_S = 600
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('wrong type', 0) end
end
local function check_number(v, low, high)
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < low or n > high then error('bad number', 0) end
end
local function skip_pairs(c) c.skip(2 * tonumber(c.take())) end

local function plan_bucket(c, now_s, unrolled)
  local p = {minute = c.take(), bucket = c.take(), meta = c.take(), copy = c.take(),
             expire_at = c.take(), daily = c.take(), daily_meta = c.take(),
             daily_expire_at = c.take()}
  check_number(p.expire_at, 0, MAX_EXPIRE_S)
  check_number(p.daily_expire_at, 0, MAX_EXPIRE_S)
  check_type(p.bucket, 'hash')
  p.counters = redis.call('HMGET', p.meta, 'reasons', 'symbols', 'rolled')
  p.fresh = not p.counters[1]
  -- `rolled` is 0 while the roll-up has a bucket's counts still to add to its day, 1
  -- once it has. A bucket rolled up already, or from before there was a roll-up (no
  -- `rolled`: its counts went to its day with each flush), takes later counts to its day
  -- directly, in this script.
  if p.fresh then
    p.direct = tonumber(p.expire_at) <= now_s + ROLL_MARGIN_S
  else
    p.direct = p.counters[3] ~= '0'
  end
  if p.fresh and not p.direct then check_type(unrolled, 'hash') end
  if not p.direct then check_type(p.copy, 'hash') end
  if p.direct then
    check_type(p.daily, 'hash')
    check_type(p.daily_meta, 'hash')
  end
  p.at = c.at()
  skip_pairs(c)
  skip_pairs(c)
  for _ = 1, tonumber(c.take()) do
    c.skip(1)
    skip_pairs(c)
    skip_pairs(c)
  end
  return p
end

local function flush_plan(a)
  local plan = {}
  local ok, why = pcall(function()
    check_number(a.now_ms, 0, 2 ^ 50)
    plan.last_id = redis.call('HGET', a.status, 'last_id')
    plan.buckets = cjson.decode(a.buckets_json)
    local c = cursor(1, plan.buckets)
    for i = 1, tonumber(c.take()) do
      plan[i] = plan_bucket(c, tonumber(a.now_ms) / 1000, a.unrolled)
    end
    if a.n_invalid > 0 then check_type(a.invalid, 'stream') end
    if a.n_runs > 0 then check_type(a.settled, 'zset') end
  end)
  if not ok then return nil, tostring(why) end
  return plan
end

-- (d) The writes, after the checks: the lease taken back if it lapsed, the XACKs, the
-- settled ranges, the counts, the invalid records and the group-wide totals. Returns
-- {0, counted, trimmed, replayed}.
-- XACK list[first .. last], 500 IDs a call (unpack's stack has a limit).
local function ack(a, list, first, last)
  for i = first, last, 500 do
    redis.call('XACK', a.stream, a.group, unpack(list, i, math.min(i + 499, last)))
  end
end

local function settle_runs(a)
  local high = a.settled_hi
  for i = a.runs_at, a.runs_at + 2 * a.n_runs - 1, 2 do
    redis.call('ZADD', a.settled, 0, range_member(a.argv[i], a.argv[i + 1]))
    if not high or newer(a.argv[i + 1], high) then high = a.argv[i + 1] end
  end
  if high ~= a.settled_hi then redis.call('HSET', a.ledger, 'hi', high) end
end

-- Minute buckets. The private meta hash also keeps a copy of the bucket's decision and
-- reason fields (what snapshots and readers of many minutes read), a change counter
-- (`v`) and `rolled` (1 once the bucket's counts are in its day's rollup). A new bucket
-- is listed in the unrolled hash: the roll-up (roll.lua) adds it to the daily rollup
-- once it is quiet, in one step with `rolled`, so each count reaches the daily rollup
-- once, from the roll-up or from here.
local function count_bucket(a, plan, p)
  local limits = {reasons = a.max_reasons, symbols = a.max_symbols}
  local dropped, verdicts = add_counts(
    cursor(p.at, plan.buckets).take, p.bucket, p.meta, p.meta, true, p.counters, limits, nil)
  redis.call('HINCRBY', p.meta, 'v', 1)
  if dropped > 0 then redis.call('HINCRBY', p.meta, 'symbols_dropped', dropped) end
  if not p.direct then
    -- The counts the roll-up is to add to the day, kept apart: the bucket may expire
    -- before the roll-up comes (every daemon down past P35_BUCKET_TTL_SEC), its roll copy
    -- lives as long as the day's rollup, and roll.lua deletes it as it adds it.
    add_roll_copy(cursor(p.at, plan.buckets).take, p.copy, verdicts)
    redis.call('EXPIREAT', p.copy, math.max(tonumber(p.expire_at), tonumber(p.daily_expire_at)))
  end
  if p.fresh then
    -- Every write to the meta hash before its EXPIREAT: an expiry already past (an entry
    -- older than P35_BUCKET_TTL_SEC) deletes the key, and a write after it would make it
    -- again with no lifetime.
    redis.call('HSET', p.meta, 'rolled', p.direct and 1 or 0)
    redis.call('EXPIREAT', p.bucket, p.expire_at)
    redis.call('EXPIREAT', p.meta, p.expire_at)
    if not p.direct then redis.call('HSET', a.unrolled, p.minute, p.expire_at) end
  end
  if p.direct then
    -- Read again: an earlier bucket of this flush may have counted into the same day.
    local day_counters = redis.call('HMGET', p.daily_meta, 'reasons', 'symbols')
    add_counts(cursor(p.at, plan.buckets).take, p.daily, p.daily_meta, nil, false,
      day_counters, limits, verdicts)
    if not day_counters[1] then
      redis.call('EXPIREAT', p.daily, p.daily_expire_at)
      redis.call('EXPIREAT', p.daily_meta, p.daily_expire_at)
    end
  end
end

local function flush_apply(a, plan)
  local status, argv = a.status, a.argv
  if a.holder ~= a.token then redis.call('SET', a.lease, a.token, 'PX', a.lease_ms) end
  ack(a, argv, a.ids_at, a.ids_at + a.n_ids - 1)
  if a.n_replayed > 0 then
    ack(a, argv, a.replayed_at, a.replayed_at + a.n_replayed - 1)
    redis.call('HINCRBY', status, 'replayed_total', a.n_replayed)
  end
  if a.n_runs > 0 then settle_runs(a) end

  local trimmed_owned = {}
  for i = a.trimmed_at, a.trimmed_at + a.n_trimmed - 1 do
    if a.owned[argv[i]] then trimmed_owned[#trimmed_owned + 1] = argv[i] end
  end
  if #trimmed_owned > 0 then
    ack(a, trimmed_owned, 1, #trimmed_owned)
    redis.call('HINCRBY', status, 'trimmed_total', #trimmed_owned)
  end

  for _, p in ipairs(plan) do count_bucket(a, plan, p) end

  for i = a.invalid_at, a.invalid_at + 3 * a.n_invalid - 1, 3 do
    redis.call('XADD', a.invalid, 'MAXLEN', '~', a.invalid_maxlen, '*', 'id', argv[i],
      'cause', argv[i + 1], 'raw', argv[i + 2], 'consumer', a.consumer, 'ts_ms', a.now_ms)
  end

  -- Group-wide totals, exact because they move with the XACK.
  redis.call('HINCRBY', status, 'processed_total', a.n_ids)
  if a.reclaimed > 0 then redis.call('HINCRBY', status, 'reclaimed_total', a.reclaimed) end
  if a.n_invalid > 0 then redis.call('HINCRBY', status, 'invalid_total', a.n_invalid) end
  if a.future > 0 then
    redis.call('HINCRBY', status, 'future_ids_total', a.future)
    redis.call('HSET', status, 'future_id_last_ms', a.now_ms)
  end
  if a.newest_id ~= '' and (not plan.last_id or newer(a.newest_id, plan.last_id)) then
    redis.call('HSET', status, 'last_id', a.newest_id)
  end
  return {0, a.n_ids, #trimmed_owned, a.n_replayed}
end
