-- Helpers every script shares; scripts.py puts this file in front of each script.
--
-- cursor(first, list): reads `list` (ARGV when not given) in order from index `first`.
-- The scripts' arguments are variable-length groups (counts followed by that many
-- items), so each is read with take(); skip(n) passes over n values and at() tells
-- where the next one is.
local function cursor(first, list)
  local src = list or ARGV
  local pos = first
  local c = {}
  function c.take()
    local v = src[pos]
    pos = pos + 1
    return v
  end
  function c.skip(n) pos = pos + n end
  function c.at() return pos end
  return c
end

-- Counting into a minute bucket or a daily rollup (flush.lua, roll.lua). A group of
-- increments is laid out as
--   n_dec, {decision, n}..., n_rea, {reason, n}...,
--   n_sym, {symbol, n_sd, {decision, n}..., n_sr, {reason, n}...}...
-- Bounds: reasons beyond `limits.reasons` distinct ones (`other` included) fold into
-- `other`; symbols beyond `limits.symbols` distinct ones get no symbol fields. The
-- meta hash keeps the distinct counts (`reasons`, `symbols`) and the symbols admitted
-- (`s:<symbol>`).

-- A reason new to `hash` is admitted while fewer than `max` distinct ones are there;
-- past that it is counted as `other`. `seen` carries the distinct count (`n`) and this
-- script's verdicts (`map`), so each is judged once. The increment itself tells whether
-- the field is new (it then equals `n`: counts are never 0), so the common case is one
-- command; a reason over the bound is taken back (HDEL) and counted as `other`.
-- Returns the name counted and whether `hash` already has the increment.
local function add_reason(hash, r, n, seen, max)
  local name = seen.map[r]
  if name ~= nil then return name, false end
  if r == 'other' then
    seen.map[r] = r
    return r, false
  end
  local field = 'reason:' .. r
  -- n arrives as text (ARGV): compared as a number, or it never equals the reply.
  if redis.call('HINCRBY', hash, field, n) ~= tonumber(n) then
    seen.map[r] = r
    return r, true
  end
  if seen.n >= max - 1 then
    redis.call('HDEL', hash, field)
    seen.map[r] = 'other'
    return 'other', false
  end
  seen.n = seen.n + 1
  seen.map[r] = r
  return r, true
end

-- A symbol new to `meta`'s registry is admitted while fewer than `max` are known.
local function symbol_kept(meta, sym, seen, max)
  local keep = seen.map[sym]
  if keep == nil then
    local known = redis.call('HEXISTS', meta, 's:' .. sym) == 1
    keep = known or seen.n < max
    if keep and not known then
      redis.call('HSET', meta, 's:' .. sym, 1)
      seen.n = seen.n + 1
    end
    seen.map[sym] = keep
  end
  return keep
end

-- Adds the group of increments `take` reads to `hash`, bounded by the distinct counts
-- `counters` (HMGET of `meta`'s 'reasons', 'symbols'; false when new). `copy`, when
-- given, also gets the decision and reason fields; symbol reason fields are written
-- only with `symbol_reasons`. `via`, the verdicts of a count of the same group into a
-- bucket, makes this count follow it: each reason is named as the bucket counted it,
-- and a symbol the bucket left out is left out (a daily rollup is the sum of its
-- buckets). Returns how many symbols the bound left out and this count's verdicts.
local function add_counts(take, hash, meta, copy, symbol_reasons, counters, limits, via)
  local reasons = {n = tonumber(counters[1]) or 0, map = {}}
  local symbols = {n = tonumber(counters[2]) or 0, map = {}}
  local reasons_before, symbols_before = reasons.n, symbols.n
  for _ = 1, tonumber(take()) do
    local field, n = 'decision:' .. take(), take()
    redis.call('HINCRBY', hash, field, n)
    if copy then redis.call('HINCRBY', copy, field, n) end
  end
  for _ = 1, tonumber(take()) do
    local r, n = take(), take()
    if via then r = via.reasons[r] end
    local name, done = add_reason(hash, r, n, reasons, limits.reasons)
    if not done then redis.call('HINCRBY', hash, 'reason:' .. name, n) end
    if copy then redis.call('HINCRBY', copy, 'reason:' .. name, n) end
  end
  local dropped = 0
  for _ = 1, tonumber(take()) do
    local sym = take()
    local keep = (not via or via.symbols[sym]) and symbol_kept(meta, sym, symbols, limits.symbols)
    if not keep then dropped = dropped + 1 end
    for _ = 1, tonumber(take()) do
      local d, n = take(), take()
      if keep then redis.call('HINCRBY', hash, 'symbol_decision:' .. sym .. ':' .. d, n) end
    end
    for _ = 1, tonumber(take()) do
      local r, n = take(), take()
      if keep and symbol_reasons then
        redis.call('HINCRBY', hash, 'symbol_reason:' .. sym .. ':' .. (reasons.map[r] or 'other'), n)
      end
    end
  end
  if not counters[1] or reasons.n ~= reasons_before or symbols.n ~= symbols_before then
    redis.call('HSET', meta, 'reasons', reasons.n, 'symbols', symbols.n)
  end
  return dropped, {reasons = reasons.map, symbols = symbols.map}
end

-- Adds the group of increments `take` reads to `hash` as a bucket counted them
-- (`verdicts`, add_counts' second result): each reason under the name the bucket gave
-- it, symbol decisions of the symbols it kept, no symbol reasons. That is a minute's
-- roll copy (flush.lua), what roll.lua adds to the day when the bucket is gone.
local function add_roll_copy(take, hash, verdicts)
  for _ = 1, tonumber(take()) do
    local d = take()
    redis.call('HINCRBY', hash, 'decision:' .. d, take())
  end
  for _ = 1, tonumber(take()) do
    local r = take()
    redis.call('HINCRBY', hash, 'reason:' .. verdicts.reasons[r], take())
  end
  for _ = 1, tonumber(take()) do
    local sym = take()
    local keep = verdicts.symbols[sym]
    for _ = 1, tonumber(take()) do
      local d = take()
      local n = take()
      if keep then redis.call('HINCRBY', hash, 'symbol_decision:' .. sym .. ':' .. d, n) end
    end
    for _ = 1, 2 * tonumber(take()) do take() end
  end
end

-- newer(a, b): whether entry ID `a` comes after `b` (`a` an ID; `b` not one: true).
-- IDs are compared as digit strings: their parts go up to 2^64 - 1, past a Lua number's
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

-- measure(flat, max_fields, max_bytes): an entry's flat field list and its size in bytes
-- as it travels in a reply (RESP), which is what a read's byte budget pays for: each name
-- and value as a bulk string ($<len>\r\n<bytes>\r\n), plus ENTRY_OVERHEAD for the
-- entry's arrays and its ID. Content alone would undercount: 256 empty name/value pairs
-- are 0 bytes of content and 3 KB of reply. Producers are untrusted: an entry over the
-- limits comes back cut down to its first few fields, each cut short, with
-- {n_fields, n_bytes} as a third result; its size then also pays for that row of the
-- oversize list. Fields past the limit are counted, never copied.
-- model/admission.py (`wire_size`) measures the same way; keep the two alike.
local KEEP_PAIRS, KEEP_BYTES, ENTRY_OVERHEAD = 8, 256, 100
local function wire(s)
  local n = #s
  return n + 5 + #tostring(n)
end
local function measure(flat, max_fields, max_bytes)
  local n, size = #flat, ENTRY_OVERHEAD
  for i = 1, math.min(n, 2 * max_fields + 2) do size = size + wire(flat[i]) end
  if n <= 2 * max_fields and size <= max_bytes then return flat, size, nil end
  for i = 2 * max_fields + 3, n do size = size + wire(flat[i]) end
  local cut, cut_size = {}, 2 * ENTRY_OVERHEAD
  for i = 1, math.min(n, 2 * KEEP_PAIRS) do
    cut[i] = string.sub(flat[i], 1, KEEP_BYTES)
    cut_size = cut_size + wire(cut[i])
  end
  return cut, cut_size, {n / 2, size}
end

-- group_row(stream, group): the group's XINFO GROUPS row as a table keyed by field
-- name, or nil when the stream has no such group.
local function group_row(stream, group)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
    if fields['name'] == group then return fields end
  end
  return nil
end

-- group_state(stream, group): the group's state without entry contents (XINFO STREAM's
-- first and last entries stay in Redis: producers may make them any size). Lag is
-- derived: a Redis restarted from a rewritten AOF can restore a stale entries-read
-- (redis/redis#10569, #12898) and its lag stays wrong for good; once the group has
-- delivered the stream's last ID, the lag is 0 whatever Redis reports.
-- Returns {} when the stream or the group is missing, else {lag or '', pending,
-- consumers, last_delivered_id, entries_read or '', last_generated_id, oldest_pending_id or ''}.
local function group_state(stream, group)
  local ok, info = pcall(redis.call, 'XINFO', 'STREAM', stream)
  if not ok then return {} end
  local last_generated = ''
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last_generated = info[i + 1] end
  end
  local row = group_row(stream, group)
  if not row then return {} end
  local lag = row['lag']
  if row['last-delivered-id'] == last_generated then lag = 0 end
  local summary = redis.call('XPENDING', stream, group)
  return {
    lag and tostring(lag) or '', tostring(row['pending']), tostring(row['consumers']),
    row['last-delivered-id'], row['entries-read'] and tostring(row['entries-read']) or '',
    last_generated, summary[2] or '',
  }
end

-- The settled ledger (audit.lua, flush.lua): every entry counted, or reported lost, is
-- settled, and an entry delivered again once settled (the group was moved back with
-- XGROUP SETID) is acknowledged without being counted. Settled is: every ID up to the
-- ledger's prefix `S`, plus the ranges in a sorted set, each `<padded first> first last`
-- (a range of IDs the stream held contiguously when they were read; the audit folds
-- ranges into the prefix as the gaps between them close).
local function padid(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
local function range_member(first, last) return padid(first) .. ' ' .. first .. ' ' .. last end
local function parse_range(member)
  local _, first, last = string.match(member, '^(%S+) (%S+) (%S+)$')
  return first, last
end

-- The settled ranges that overlap [low, high], as {first, last} pairs, highest first.
local function settled_ranges(key, low, high)
  local out, offset = {}, 0
  while true do
    local page = redis.call('ZREVRANGEBYLEX', key, '(' .. padid(high) .. '~', '-',
      'LIMIT', offset, 100)
    for _, member in ipairs(page) do
      local first, last = parse_range(member)
      if newer(low, last) then return out end  -- ranges are disjoint: the rest end lower
      out[#out + 1] = {first, last}
    end
    if #page < 100 then return out end
    offset = offset + 100
  end
end

-- Whether `id` is settled, given the prefix (false when the ledger is not set up) and
-- the ranges settled_ranges() found around it.
local function is_settled(id, prefix, ranges)
  if prefix and not newer(id, prefix) then return true end
  for _, r in ipairs(ranges) do
    if not newer(id, r[2]) and not newer(r[1], id) then return true end
  end
  return false
end
