-- Remove a departed consumer from the group, only if it is p35's (its name is in the
-- set of names p35 daemons consumed under: a consumer of any other client is never
-- removed), owns nothing, and no live process holds its name. Checked and done in one
-- step, so a consumer that reads in between is never deleted with entries pending.
-- KEYS[1] lease of that consumer  KEYS[2] p35 consumer names (set)
-- ARGV[1] stream (not a KEY: see flush.lua)  ARGV[2] group  ARGV[3] consumer
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local owned = redis.call('XPENDING', ARGV[1], ARGV[2], '-', '+', 1, ARGV[3])
if #owned > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', ARGV[1], ARGV[2], ARGV[3])
redis.call('SREM', KEYS[2], ARGV[3])
return 1
