-- Where to make the group, or false when it exists (store.ensure_group): in one round
-- trip, as the XGROUP CREATE alone took before a removed group had to be handled.
-- From the stream's start ('0'), unless the status names the newest entry counted
-- (`last_id`) and the stream reaches that far: the group was removed while this Redis
-- kept its counts, and starts after that entry so that nothing is counted twice. A
-- stream that is missing or begins anew (shorter than `last_id`) is read from its start.
-- XINFO STREAM's first and last entries stay in Redis: producers make them any size.
-- KEYS[1] status. ARGV: stream, group (the stream is not a KEY: see flush.lua).
local stream, group = ARGV[1], ARGV[2]
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
if not ok then return '0' end  -- no stream (or not a stream: XGROUP CREATE says so)
for _, g in ipairs(groups) do
  for i = 1, #g, 2 do
    if g[i] == 'name' and g[i + 1] == group then return false end
  end
end
local last_id = redis.call('HGET', KEYS[1], 'last_id')
if not last_id or not string.match(last_id, '^%d+%-%d+$') then return '0' end
local info = redis.call('XINFO', 'STREAM', stream)
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' and not newer(last_id, info[i + 1]) then
    return last_id
  end
end
return '0'
