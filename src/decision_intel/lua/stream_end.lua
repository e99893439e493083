-- The stream's last generated ID, or false when there is no stream (store.ensure_group).
-- XINFO STREAM's first and last entries stay in Redis: producers make them any size.
-- No KEYS (the input stream is read only: see flush.lua). ARGV: stream.
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', ARGV[1])
if not ok then return false end
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return false
