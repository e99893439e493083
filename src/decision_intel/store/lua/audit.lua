-- The completeness audit (SPEC 5, "Nothing silent at the boundary"): once per interval
-- across the group (the lock), every entry added after the group's start is one of
-- counted, pending, unread, or lost with a cause. Each daemon's call first records the
-- newest ID it has read (`hw`, the read high-water mark) and its name as p35's.
--
-- The walk: from the settled prefix S up to the group's last delivered ID L, each
-- entry still in the stream is settled (a range a flush counted), pending, or lost: a
-- lost entry at or below `hw` was read by p35 and acknowledged by another client
-- (`acked_elsewhere`); above it, nobody of p35 read it: the group was moved past it
-- (`skipped`), or a foreign consumer took it (`acked_elsewhere`). The walk folds ranges
-- into the prefix as the gaps between them close. Lost entries are settled too: a
-- replay of one is never counted.
--
-- The identity: the entries up to L number N(L) - A0 (A0: the baseline when the ledger
-- began), and are counted (processed_total), pending, or lost. N(L) is exact from
-- Redis's entries-added and the entries still after L. Once the walk has seen every entry
-- in the stream up to L, the lost not found by it left the stream uncounted: `trimmed`.
-- Where N(L) cannot be had, or the walk stopped at its bound, nothing is concluded this
-- turn (a loss is reported late, never invented).
--
-- KEYS[1] status  KEYS[2] ledger  KEYS[3] settled ranges  KEYS[4] losses stream
-- KEYS[5] audit lock  KEYS[6] p35 consumer names (set)
-- ARGV: stream, group, consumer, read_hw ('' none), lock_token, lock_ms, max_steps,
--       losses_maxlen, max_unread
-- Returns {0} (another daemon's turn, or no group) or
-- {1, headroom_ms ('' empty stream), exact (1: the identity held this turn),
--  trimmed_ever (1: entries were ever removed from the stream), last_loss_ms, acked_ms
--  (0: never; `p35 check --ack-losses` sets it), n_foreign, n_named, {name, pending} of
--  the first ten named..., n_events, {cause, count, first_id, last_id}...}
-- The ledger keeps the foreign consumers named this turn as JSON (`foreign`) for
-- `p35 check`.

local status, ledger, settled, losses, lock, names = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local stream, group, consumer, read_hw = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_steps, losses_maxlen, max_unread = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])

redis.call('SADD', names, consumer)
if read_hw ~= '' then
  local hw = redis.call('HGET', ledger, 'hw')
  if not hw or newer(read_hw, hw) then redis.call('HSET', ledger, 'hw', read_hw) end
end
if not redis.call('SET', lock, ARGV[5], 'NX', 'PX', ARGV[6]) then return {0} end

local ok, info = pcall(redis.call, 'XINFO', 'STREAM', stream)
if not ok then return {0} end
local length, added, last_gen, first = 0, 0, '0-0', nil
for i = 1, #info, 2 do
  local k, v = info[i], info[i + 1]
  if k == 'length' then length = v
  elseif k == 'entries-added' then added = v
  elseif k == 'last-generated-id' then last_gen = v
  elseif k == 'first-entry' and type(v) == 'table' then first = v[1] end
end
local row = group_row(stream, group)
if not row then return {0} end
local L, pending = row['last-delivered-id'], tonumber(row['pending'])

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local headroom = ''
if first then headroom = now_ms - tonumber(string.match(first, '^(%d+)')) end

-- Consumers that are not p35's: reported, never removed. Past MAX_LISTED consumers (ghost
-- names by the thousand) XINFO CONSUMERS would hold Redis for tenths of a second at
-- every turn: they are counted from the group's consumer count instead, unnamed.
local MAX_LISTED = 1000
local foreign, n_foreign = {}, 0
if tonumber(row['consumers']) > MAX_LISTED then
  n_foreign = math.max(0, tonumber(row['consumers']) - redis.call('SCARD', names))
else
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
    local fields = {}
    for i = 1, #c, 2 do fields[c[i]] = c[i + 1] end
    if redis.call('SISMEMBER', names, fields['name']) == 0 then
      n_foreign = n_foreign + 1
      if n_foreign <= 10 then
        foreign[#foreign + 1] = fields['name']
        foreign[#foreign + 1] = fields['pending']
      end
    end
  end
end
redis.call('HSET', ledger, 'foreign', cjson.encode({n = n_foreign, names = foreign}))

-- The reply, and the status fields every turn rewrites.
local function reply(exact, order, events)
  local marks = redis.call('HMGET', ledger, 'last_loss_ms', 'acked_ms')
  local out = {1, headroom, exact, (added - length > 0) and 1 or 0,
    tonumber(marks[1] or '0'), tonumber(marks[2] or '0'), n_foreign, #foreign / 2}
  for _, v in ipairs(foreign) do out[#out + 1] = v end
  out[#out + 1] = #order
  for _, cause in ipairs(order) do
    for _, v in ipairs(events[cause]) do out[#out + 1] = v end
  end
  redis.call('HSET', status, 'lost_exact', exact, 'headroom_s',
    headroom == '' and '' or string.format('%.1f', headroom / 1000), 'foreign_consumers', n_foreign)
  return out
end

-- N(id): how many entries the stream ever held up to id, counting those deleted after
-- it (deleted before anyone read them, they are lost too). nil past `max_unread`.
local function offset(id)
  if id == last_gen then return added end
  if not first or newer(first, id) then return added - length end
  local after = redis.call('XRANGE', stream, '(' .. id, '+', 'COUNT', max_unread + 1)
  if #after > max_unread then return nil end
  return added - #after
end

local function dec(s)  -- a decimal string minus one (s > 0); IDs pass 2^53
  local d = {string.byte(s, 1, -1)}
  local i = #d
  while d[i] == 48 do d[i] = 57; i = i - 1 end
  d[i] = d[i] - 1
  local out = string.char(unpack(d)):gsub('^0+', '')
  return out == '' and '0' or out
end
local function before(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq ~= '0' then return ms .. '-' .. dec(seq) end
  if ms ~= '0' then return dec(ms) .. '-18446744073709551615' end
  return '0-0'
end

local counted = tonumber(redis.call('HGET', status, 'processed_total') or '0')
local state = redis.call('HMGET', ledger, 'S', 'A0', 'Lmax', 'Nmax', 'X', 'hw')
local S, A0, Lmax, Nmax, seen_added, hw = state[1], tonumber(state[2]), state[3], tonumber(state[4]), tonumber(state[5]), state[6]

if not S or not A0 or (seen_added and added < seen_added) then
  -- The ledger begins (or the stream began anew): what is pending now is not settled;
  -- whatever else lies up to L was settled before accounting began.
  local n = offset(L)
  if not n then return reply(0, {}, {}) end
  local summary = redis.call('XPENDING', stream, group)
  S = (tonumber(summary[1]) > 0) and before(summary[2]) or L
  A0 = n - counted - pending
  if seen_added and added < seen_added then redis.call('DEL', settled) end
  redis.call('HSET', ledger, 'S', S, 'A0', A0, 'Lmax', L, 'Nmax', n, 'X', added)
  redis.call('ZREMRANGEBYLEX', settled, '-', '(' .. padid(S) .. '~')
  Lmax, Nmax = L, n
end
redis.call('HSET', ledger, 'X', added)

-- The walk.
local events, order = {}, {}
local function lost(cause, id)
  local e = events[cause]
  if not e then
    e = {cause, 0, id, id}
    events[cause] = e
    order[#order + 1] = cause
  end
  e[2] = e[2] + 1
  e[4] = id
end
local S_before = S
local c, open, complete = S, true, false
for _ = 1, max_steps do
  local nxt = redis.call('XRANGE', stream, '(' .. c, '+', 'COUNT', 1)
  local e = nxt[1] and nxt[1][1]
  local iv = redis.call('ZRANGEBYLEX', settled, '(' .. padid(c) .. '~', '+', 'LIMIT', 0, 1)[1]
  local iv_first, iv_last
  if iv then iv_first, iv_last = parse_range(iv) end
  if iv and (not e or not newer(iv_first, e)) then
    if open then
      S = iv_last
      redis.call('ZREM', settled, iv)
    end
    c = iv_last
  elseif not e or newer(e, L) then
    complete = true
    break
  elseif #redis.call('XPENDING', stream, group, e, e, 1) > 0 then
    open = false
    c = e
  else
    local cause = 'skipped'
    if n_foreign > 0 or (hw and not newer(e, hw)) then cause = 'acked_elsewhere' end
    lost(cause, e)
    if open then S = e else redis.call('ZADD', settled, 0, range_member(e, e)) end
    c = e
  end
end
if S ~= S_before then redis.call('HSET', ledger, 'S', S) end

-- The identity, over the furthest the group has delivered (a group moved back has
-- delivered up to Lmax before; its entries there are settled or pending).
local n_eff
if not newer(Lmax, L) then
  n_eff = offset(L)
  if n_eff then redis.call('HSET', ledger, 'Lmax', L, 'Nmax', n_eff) end
else
  n_eff = Nmax
end
local found = 0
for _, cause in ipairs(order) do found = found + events[cause][2] end
local exact = 0
if complete and n_eff then
  exact = 1
  local reported = tonumber(redis.call('HGET', status, 'lost_total') or '0') + found
  local gone = n_eff - A0 - counted - pending - reported
  if gone > 0 then
    events['trimmed'] = {'trimmed', gone, S_before, first and before(first) or L}
    order[#order + 1] = 'trimmed'
  end
end

for _, cause in ipairs(order) do
  local e = events[cause]
  redis.call('HINCRBY', status, 'lost_total', e[2])
  redis.call('HINCRBY', status, 'lost_' .. cause, e[2])
  redis.call('XADD', losses, 'MAXLEN', '~', losses_maxlen, '*', 'cause', cause, 'count', e[2],
    'first_id', e[3], 'last_id', e[4], 'exact', exact, 'ts_ms', now_ms)
end
if #order > 0 then redis.call('HSET', ledger, 'last_loss_ms', now_ms) end
return reply(exact, order, events)
