-- Emit alert events with de-duplication state kept in Redis, atomically, so the
-- rule holds across restarts and across several daemons.
--
-- A firing condition emits when it has no open state, when its severity rank rose,
-- or when the last event for it is at least dedup_ms old. A resolved key emits a
-- `resolved` event only if it was open, and closes it.
--
-- At most max_events events are sent per call, firing ones first in the order given
-- (the caller sorts by severity), then resolved ones; the rest are neither sent nor
-- recorded (so they come up again next time) and one `suppressed` event counts them.
--
-- KEYS[1] state hash (field: alert key -> JSON)  KEYS[2] alerts stream
-- ARGV: now_ms, dedup_ms, maxlen, max_events, n_firing,
--       { key, type, window, severity, rank, own_dedup_ms (0: dedup_ms), n_fields,
--         {name, value}... }...,
--       n_resolved, { key }...
-- Returns {key, severity, state} for every event emitted.

local state_key, stream = KEYS[1], KEYS[2]
local now, dedup, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local max_events = tonumber(ARGV[4])
local take = cursor(6).take
local ts = string.format('%.3f', now / 1000)
local emitted = {}
local suppressed, by_type, worst = 0, {}, {0, ''}
local function over(kind, rank, severity)
  if #emitted < max_events then return false end
  suppressed = suppressed + 1
  by_type[kind] = (by_type[kind] or 0) + 1
  if rank > worst[1] then worst = {rank, severity} end
  return true
end

for _ = 1, tonumber(ARGV[5]) do
  local key, kind, window, severity, rank = take(), take(), take(), take(), tonumber(take())
  local own_dedup = tonumber(take())
  local this_dedup = own_dedup > 0 and own_dedup or dedup
  local extra = {}
  for _ = 1, tonumber(take()) do
    extra[#extra + 1] = take()
    extra[#extra + 1] = take()
  end
  local raw = redis.call('HGET', state_key, key)
  local st = raw and cjson.decode(raw)
  local emit = (not st) or rank > st.rank or now - st.last >= this_dedup
  local id = st and st.id or (key .. '|' .. ts)
  if emit and over(kind, rank, severity) then
    emit = false
  elseif emit then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'type', kind, 'window', window, 'severity', severity, 'state', 'firing',
      'timestamp', ts, 'alert_id', id, unpack(extra))
    redis.call('HSET', state_key, key, cjson.encode({rank = rank, severity = severity,
      last = now, id = id, type = kind, window = window}))
    emitted[#emitted + 1] = {key, severity, 'firing'}
  elseif st and rank ~= st.rank then
    st.rank = rank
    st.severity = severity
    redis.call('HSET', state_key, key, cjson.encode(st))
  end
end

for _ = 1, tonumber(take()) do
  local key = take()
  local raw = redis.call('HGET', state_key, key)
  local st = raw and cjson.decode(raw)
  if st and not over(st.type, 0, st.severity) then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'type', st.type, 'window', st.window, 'severity', st.severity, 'state', 'resolved',
      'timestamp', ts, 'alert_id', st.id, 'subject', string.match(key, '^[^|]*|[^|]*|(.*)$'))
    redis.call('HDEL', state_key, key)
    emitted[#emitted + 1] = {key, st.severity, 'resolved'}
  end
end
if suppressed > 0 then
  local types = {}
  for kind, n in pairs(by_type) do types[#types + 1] = kind .. '=' .. n end
  table.sort(types)
  local severity = worst[2] ~= '' and worst[2] or 'MEDIUM'
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'type', 'suppressed', 'window', '-', 'severity', severity, 'state', 'firing',
    'timestamp', ts, 'alert_id', 'suppressed|-|over_limit|' .. ts, 'subject', 'over_limit',
    'suppressed', suppressed, 'by_type', table.concat(types, ','))
  emitted[#emitted + 1] = {'suppressed|-|over_limit', severity, 'firing'}
end
return emitted
