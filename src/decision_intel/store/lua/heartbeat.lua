-- One daemon's heartbeat in one step: renew the lease on its name, read the group's
-- state (group_state() in lib.lua), and write the group-wide status hash and its own.
-- `last_ts` is Redis's clock, the one every reader compares it with: a daemon host whose
-- clock runs fast would otherwise date its heartbeat ahead and look alive after it died.
--
-- KEYS[1] status hash  KEYS[2] this consumer's status hash  KEYS[3] lease
-- ARGV: stream, group, token, lease_ms, consumer_ttl_s,
--       n_mine, {field, value}... (both hashes), n_own, {field, value}... (its own only)
-- Returns {0} when another process holds the lease (nothing written), else
-- {1, group_state()...}.

local status, own, lease = KEYS[1], KEYS[2], KEYS[3]
local stream, group, token = ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', lease)
if holder and holder ~= token then return {0} end
redis.call('SET', lease, token, 'PX', ARGV[4])

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local args = cursor(6)
local mine = {'last_ts', string.format('%d.%03d', tonumber(now[1]), math.floor(tonumber(now[2]) / 1000))}
for _ = 1, tonumber(args.take()) do
  mine[#mine + 1] = args.take()
  mine[#mine + 1] = args.take()
end
local own_only = {}
for _ = 1, tonumber(args.take()) do
  own_only[#own_only + 1] = args.take()
  own_only[#own_only + 1] = args.take()
end

local state = group_state(stream, group)
local group_fields = {'pending_estimate', 0, 'lag', 0, 'consumers', 0}
local age = 0
if #state > 0 then
  group_fields = {'pending_estimate', state[2], 'lag', state[1], 'consumers', state[3],
    'last_delivered_id', state[4], 'entries_read', state[5]}
  if state[7] ~= '' then
    local oldest_ms = tonumber(string.match(state[7], '^(%d+)'))
    age = math.max(0, (now_ms - oldest_ms) / 1000)
  end
end
group_fields[#group_fields + 1] = 'oldest_pending_age_s'
group_fields[#group_fields + 1] = string.format('%.1f', age)

redis.call('HSET', status, unpack(group_fields))
redis.call('HSET', status, unpack(mine))
redis.call('HSET', own, unpack(mine))
if #own_only > 0 then redis.call('HSET', own, unpack(own_only)) end
redis.call('EXPIRE', own, ARGV[5])
table.insert(state, 1, 1)
if #state == 1 then
  return {1}
end
table.insert(state, string.format('%.1f', age))
return state
