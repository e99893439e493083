-- Emit alert events with de-duplication state kept in Redis, atomically, so the
-- rule holds across restarts and across several daemons.
--
-- A firing condition emits when it has no open state, when its severity rank rose,
-- or when the last event for it is at least dedup_ms old. A resolved key emits a
-- `resolved` event only if it was open, and closes it.
--
-- KEYS[1] state hash (field: alert key -> JSON)  KEYS[2] alerts stream
-- ARGV: now_ms, dedup_ms, maxlen, n_firing,
--       { key, type, window, severity, rank, n_fields, {name, value}... }...,
--       n_resolved, { key }...
-- Returns {key, severity, state} for every event emitted.

local state_key, stream = KEYS[1], KEYS[2]
local now, dedup, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local pos = 5
local function take()
  local v = ARGV[pos]
  pos = pos + 1
  return v
end
local ts = string.format('%.3f', now / 1000)
local emitted = {}

for _ = 1, tonumber(ARGV[4]) do
  local key, kind, window, severity, rank = take(), take(), take(), take(), tonumber(take())
  local extra = {}
  for _ = 1, tonumber(take()) do
    extra[#extra + 1] = take()
    extra[#extra + 1] = take()
  end
  local raw = redis.call('HGET', state_key, key)
  local st = raw and cjson.decode(raw)
  local emit = (not st) or rank > st.rank or now - st.last >= dedup
  local id = st and st.id or (key .. '|' .. ts)
  if emit then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'type', kind, 'window', window, 'severity', severity, 'state', 'firing',
      'timestamp', ts, 'alert_id', id, unpack(extra))
    redis.call('HSET', state_key, key, cjson.encode({rank = rank, severity = severity,
      last = now, id = id, type = kind, window = window}))
    emitted[#emitted + 1] = {key, severity, 'firing'}
  elseif rank ~= st.rank then
    st.rank = rank
    st.severity = severity
    redis.call('HSET', state_key, key, cjson.encode(st))
  end
end

for _ = 1, tonumber(take()) do
  local key = take()
  local raw = redis.call('HGET', state_key, key)
  if raw then
    local st = cjson.decode(raw)
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'type', st.type, 'window', st.window, 'severity', st.severity, 'state', 'resolved',
      'timestamp', ts, 'alert_id', st.id, 'subject', string.match(key, '^[^|]*|[^|]*|(.*)$'))
    redis.call('HDEL', state_key, key)
    emitted[#emitted + 1] = {key, st.severity, 'resolved'}
  end
end
return emitted
