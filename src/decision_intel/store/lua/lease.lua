-- Take or renew the lease on a consumer name.
-- KEYS[1] lease  ARGV[1] token  ARGV[2] lease_ms
-- Returns 1 when this token holds the lease now, 0 when another process holds it.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
