-- Remove p35's departed consumers from the group, many in one step and at most
-- `max_removed` a call. Only a name in the set of names p35 daemons consumed under (a
-- consumer of any other client is never removed), owning nothing, idle at least
-- `min_idle_ms`, with no live process on its name (no lease), and not the caller. The
-- consumers are walked here, inside Redis: their list (XINFO CONSUMERS) can be larger
-- than a client may read (60,000 long names are 15 MiB), and checked and removed in the
-- same step, so a consumer that reads in between is never deleted with entries pending.
-- KEYS[1] p35 consumer names (set)
-- ARGV: stream (not a KEY: see flush.lua), group, this consumer, min_idle_ms,
--       max_removed, lease key prefix, n_names (how many removed names to return)
-- Returns {removed, more (1: stopped at max_removed), name...} with the first n_names
-- names removed.
local names = KEYS[1]
local stream, group, me, lease_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[6]
local min_idle, max_removed, n_names = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])

local ok, rows = pcall(redis.call, 'XINFO', 'CONSUMERS', stream, group)
if not ok then return {0, 0} end
local out = {0, 0}
local removed = 0
for _, row in ipairs(rows) do
  local name, pending, idle
  for i = 1, #row, 2 do
    local k = row[i]
    if k == 'name' then name = row[i + 1]
    elseif k == 'pending' then pending = row[i + 1]
    elseif k == 'idle' then idle = row[i + 1] end
  end
  if pending == 0 and idle >= min_idle and name ~= me
      and redis.call('SISMEMBER', names, name) == 1
      and redis.call('EXISTS', lease_prefix .. name) == 0 then
    if removed == max_removed then
      out[2] = 1
      break
    end
    redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
    redis.call('SREM', names, name)
    removed = removed + 1
    if removed <= n_names then out[#out + 1] = name end
  end
end
out[1] = removed
return out
