-- Helpers every script shares; scripts.py puts this file in front of each script.
--
-- cursor(first): reads ARGV in order from index `first`. The scripts' arguments are
-- variable-length groups (counts followed by that many items), so each is read with
-- take(); skip(n) passes over n values and at() tells where the next one is.
local function cursor(first)
  local pos = first
  local c = {}
  function c.take()
    local v = ARGV[pos]
    pos = pos + 1
    return v
  end
  function c.skip(n) pos = pos + n end
  function c.at() return pos end
  return c
end

-- measure(flat, max_fields, max_bytes): an entry's flat field list and its size in bytes
-- (names and values). Producers are untrusted: an entry over the limits comes back cut
-- down to its first few fields, each cut short, with {n_fields, n_bytes} as a third
-- result. Fields past the limit are counted, never copied.
local KEEP_PAIRS, KEEP_BYTES = 8, 256
local function measure(flat, max_fields, max_bytes)
  local n, size = #flat, 0
  for i = 1, math.min(n, 2 * max_fields + 2) do size = size + #flat[i] end
  if n <= 2 * max_fields and size <= max_bytes then return flat, size, nil end
  for i = 2 * max_fields + 3, n do size = size + #flat[i] end
  local cut = {}
  for i = 1, math.min(n, 2 * KEEP_PAIRS) do cut[i] = string.sub(flat[i], 1, KEEP_BYTES) end
  return cut, 2 * KEEP_PAIRS * KEEP_BYTES, {n / 2, size}
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
  local row
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
    if fields['name'] == group then row = fields end
  end
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
