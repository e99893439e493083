-- Remove a departed consumer from the group, only if it owns nothing and no live
-- process holds its name. Checked and done in one step, so a consumer that reads
-- in between is never deleted with entries pending.
-- KEYS[1] stream  KEYS[2] lease of that consumer  ARGV[1] group  ARGV[2] consumer
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #owned > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
