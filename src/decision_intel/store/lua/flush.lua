-- One flush: count a batch of entries and XACK them, atomically, or do nothing.
--
-- Applies only when (a) this process still holds the lease on its consumer name and
-- (b) every counted ID is still pending *for this consumer*. An ID claimed away by
-- another consumer, or already acknowledged (a retry after a lost reply), fails (b):
-- the script then changes nothing and returns those IDs so the caller can drop
-- them and flush the rest. That is what makes counting exactly-once.
--
-- KEYS[1] status hash  KEYS[2] lease  KEYS[3] invalid stream  KEYS[4] unrolled buckets (hash)
-- KEYS[5] ledger hash  KEYS[6] settled ranges (lib.lua: settled_ranges)
-- ARGV: stream (not a KEY: the ACL lets this user read and acknowledge the input stream,
--       never write it, and a declared key would need write access), group, consumer, token, lease_ms, max_reasons, max_symbols, invalid_maxlen,
--       min_id, max_id (bounding every ID in the batch),
--       newest_id ('' when the batch holds only reclaimed entries), now_ms, reclaimed,
--       future (entries whose ID lay too far ahead of Redis's clock),
--       n_ids, ids..., n_trimmed, trimmed_ids...,
--       n_replayed, replayed_ids... (settled already: acknowledged, never counted),
--       n_runs, {first, last}... (the counted IDs as ranges the stream held contiguously),
--       buckets: one JSON array, [n_buckets, { minute, bucket, meta, roll_copy, expire_at_s,
--                daily, daily_meta, daily_expire_at_s, increments (lib.lua: n_dec,
--                {decision, n}..., n_rea, ...) }...],
--       n_invalid, {id, cause, raw}...
-- Returns {0, counted, trimmed, replayed} applied; {1, id...} IDs not ours, nothing applied;
-- {2} lease lost; {3, why} an argument or a key would make a write fail, nothing applied;
-- {4, id...} IDs settled already (delivered again: the group was moved back), nothing applied.
--
-- Redis does not undo a script's earlier writes when a later command fails, so
-- everything that can fail is checked before the first write.

local status, lease, invalid, unrolled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ledger, settled = KEYS[5], KEYS[6]
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
local n_replayed = tonumber(take())
local replayed_at = args.at()
args.skip(n_replayed)
local n_runs = tonumber(take())
local runs_at = args.at()
args.skip(2 * n_runs)

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
for i = replayed_at, replayed_at + n_replayed - 1 do
  if not owned[ARGV[i]] then missing[#missing + 1] = ARGV[i] end
end
if #missing > 0 then
  table.insert(missing, 1, 1)
  return missing
end

-- (b2) replays: an ID settled already was counted (or reported lost) before; the group
-- delivered it again. `hi`, the highest settled range's end, spares the range lookup
-- while batches are newer than anything settled (always, with one consumer).
local ledger_state = redis.call('HMGET', ledger, 'S', 'hi')
local prefix, settled_hi = ledger_state[1], ledger_state[2]
if n_ids > 0 and (prefix and not newer(min_id, prefix) or settled_hi and not newer(min_id, settled_hi)) then
  local ranges = settled_hi and settled_ranges(settled, min_id, max_id) or {}
  local replays = {}
  for i = ids_at, ids_at + n_ids - 1 do
    if is_settled(ARGV[i], prefix, ranges) then replays[#replays + 1] = ARGV[i] end
  end
  if #replays > 0 then
    table.insert(replays, 1, 4)
    return replays
  end
end

-- (c) everything a write below could fail on: key types and the numbers that are not
-- counts (counts are the daemon's own integers, never producer input). The reads that
-- follow need doing anyway (a bucket's distinct counts, whether it is rolled up, the
-- last ID) and fail on a wrong type themselves.
local function check_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then error('wrong type', 0) end
end
local function check_number(v, low, high)
  local n = tonumber(v)
  if not n or n ~= math.floor(n) or n < low or n > high then error('bad number', 0) end
end
local function skip_pairs(c) c.skip(2 * tonumber(c.take())) end
local MAX_EXPIRE_S = 2 ^ 40  -- EXPIREAT refuses times past this range
-- A new bucket this close to its expiry is not left for the roll-up (roll.lua), which
-- might come after it is gone: its counts go to the daily rollup at once.
local ROLL_MARGIN_S = 600
local plan = {}
local last_id, buckets, n_invalid, invalid_at
local ok, why = pcall(function()
  check_number(now_ms, 0, 2 ^ 50)
  local now_s = tonumber(now_ms) / 1000
  last_id = redis.call('HGET', status, 'last_id')
  buckets = cjson.decode(take())
  local c = cursor(1, buckets)
  for i = 1, tonumber(c.take()) do
    local p = {minute = c.take(), bucket = c.take(), meta = c.take(), copy = c.take(),
               expire_at = c.take(), daily = c.take(), daily_meta = c.take(),
               daily_expire_at = c.take()}
    check_number(p.expire_at, 0, MAX_EXPIRE_S)
    check_number(p.daily_expire_at, 0, MAX_EXPIRE_S)
    check_type(p.bucket, 'hash')
    p.counters = redis.call('HMGET', p.meta, 'reasons', 'symbols', 'rolled')
    p.fresh = not p.counters[1]
    -- `rolled` is 0 while the roll-up has a bucket's counts still to add to its day,
    -- 1 once it has. A bucket rolled up already, or from before there was a roll-up (no
    -- `rolled`: its counts went to its day with each flush), takes later counts to
    -- its day directly, in this script.
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
    plan[i] = p
  end
  n_invalid = tonumber(take())
  invalid_at = args.at()
  if n_invalid > 0 then check_type(invalid, 'stream') end
  if n_runs > 0 then check_type(settled, 'zset') end
end)
if not ok then return {3, tostring(why)} end

if holder ~= token then redis.call('SET', lease, token, 'PX', lease_ms) end

-- XACK list[first .. last], 500 IDs a call (unpack's stack has a limit).
local function ack(list, first, last)
  for i = first, last, 500 do
    redis.call('XACK', stream, group, unpack(list, i, math.min(i + 499, last)))
  end
end
ack(ARGV, ids_at, ids_at + n_ids - 1)
if n_replayed > 0 then
  ack(ARGV, replayed_at, replayed_at + n_replayed - 1)
  redis.call('HINCRBY', status, 'replayed_total', n_replayed)
end
if n_runs > 0 then
  local high = settled_hi
  for i = runs_at, runs_at + 2 * n_runs - 1, 2 do
    redis.call('ZADD', settled, 0, range_member(ARGV[i], ARGV[i + 1]))
    if not high or newer(ARGV[i + 1], high) then high = ARGV[i + 1] end
  end
  if high ~= settled_hi then redis.call('HSET', ledger, 'hi', high) end
end

local trimmed_owned = {}
for i = trimmed_at, trimmed_at + n_trimmed - 1 do
  if owned[ARGV[i]] then trimmed_owned[#trimmed_owned + 1] = ARGV[i] end
end
if #trimmed_owned > 0 then
  ack(trimmed_owned, 1, #trimmed_owned)
  redis.call('HINCRBY', status, 'trimmed_total', #trimmed_owned)
end

-- Minute buckets. The private meta hash also keeps a copy of the bucket's decision and
-- reason fields (what snapshots and readers of many minutes read), a change counter
-- (`v`) and `rolled` (1 once the bucket's counts are in its day's rollup). A new bucket is
-- listed in the unrolled hash: the roll-up (roll.lua) adds it to the daily rollup once
-- it is quiet, in one step with `rolled`, so each count reaches the daily rollup once,
-- from the roll-up or from here.
local limits = {reasons = max_reasons, symbols = max_symbols}
for _, p in ipairs(plan) do
  local dropped, verdicts = add_counts(
    cursor(p.at, buckets).take, p.bucket, p.meta, p.meta, true, p.counters, limits, nil)
  redis.call('HINCRBY', p.meta, 'v', 1)
  if dropped > 0 then redis.call('HINCRBY', p.meta, 'symbols_dropped', dropped) end
  if not p.direct then
    -- The counts the roll-up is to add to the day, kept apart: the bucket may expire
    -- before the roll-up comes (every daemon down past P35_BUCKET_TTL_SEC), its roll
    -- copy lives as long as the day's rollup, and roll.lua deletes it as it adds it.
    add_roll_copy(cursor(p.at, buckets).take, p.copy, verdicts)
    redis.call('EXPIREAT', p.copy, math.max(tonumber(p.expire_at), tonumber(p.daily_expire_at)))
  end
  if p.fresh then
    -- Every write to the meta hash before its EXPIREAT: an expiry already past (an
    -- entry older than P35_BUCKET_TTL_SEC) deletes the key, and a write after it would
    -- make it again with no lifetime.
    redis.call('HSET', p.meta, 'rolled', p.direct and 1 or 0)
    redis.call('EXPIREAT', p.bucket, p.expire_at)
    redis.call('EXPIREAT', p.meta, p.expire_at)
    if not p.direct then redis.call('HSET', unrolled, p.minute, p.expire_at) end
  end
  if p.direct then
    -- Read again: an earlier bucket of this flush may have counted into the same day.
    local day_counters = redis.call('HMGET', p.daily_meta, 'reasons', 'symbols')
    add_counts(cursor(p.at, buckets).take, p.daily, p.daily_meta, nil, false, day_counters,
      limits, verdicts)
    if not day_counters[1] then
      redis.call('EXPIREAT', p.daily, p.daily_expire_at)
      redis.call('EXPIREAT', p.daily_meta, p.daily_expire_at)
    end
  end
end

for i = invalid_at, invalid_at + 3 * n_invalid - 1, 3 do
  redis.call('XADD', invalid, 'MAXLEN', '~', invalid_maxlen, '*',
    'id', ARGV[i], 'cause', ARGV[i + 1], 'raw', ARGV[i + 2], 'consumer', consumer, 'ts_ms', now_ms)
end

-- Group-wide totals, exact because they move with the XACK.
redis.call('HINCRBY', status, 'processed_total', n_ids)
if reclaimed > 0 then redis.call('HINCRBY', status, 'reclaimed_total', reclaimed) end
if n_invalid > 0 then redis.call('HINCRBY', status, 'invalid_total', n_invalid) end
if future > 0 then
  redis.call('HINCRBY', status, 'future_ids_total', future)
  redis.call('HSET', status, 'future_id_last_ms', now_ms)
end

if newest_id ~= '' then
  if not last_id or newer(newest_id, last_id) then
    redis.call('HSET', status, 'last_id', newest_id)
  end
end
return {0, n_ids, #trimmed_owned, n_replayed}
