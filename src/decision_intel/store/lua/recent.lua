-- The newest entries of the input stream, newest first, bounded like read.lua: one
-- entry per XREVRANGE, each measured (lib.lua's measure()) before it is kept, and the
-- read stops at `count` entries or once they add up to budget_bytes (`p35 why`'s
-- recent details). Producers are untrusted: an entry may be any size.
--
-- No KEYS (the input stream is only read: see flush.lua)
-- ARGV: stream, count, max_fields, max_bytes, budget_bytes
-- Returns {id, flat}... newest first; an entry over the limits comes back cut down, as
-- {id, flat cut down, n_fields, n_bytes} (as entry.lua returns it).

local stream, count = ARGV[1], tonumber(ARGV[2])
local max_fields, max_bytes, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out, total, before = {}, 0, '+'
while #out < count and total < budget do
  local got = redis.call('XREVRANGE', stream, before, '-', 'COUNT', 1)[1]
  if not got then break end
  local flat, size, cut = measure(got[2], max_fields, max_bytes)
  total = total + size
  out[#out + 1] = cut and {got[1], flat, cut[1], cut[2]} or {got[1], flat}
  before = '(' .. got[1]
end
return out
