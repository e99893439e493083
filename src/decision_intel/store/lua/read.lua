-- A bounded read: entries one at a time, each measured before it is returned.
--
-- Producers are untrusted, so an entry may hold any number of fields of any size.
-- Used when a plain XREADGROUP reply would pass the byte budget (and on recovery):
-- an entry over max_fields or max_bytes comes back cut down (lib.lua's measure()) and
-- is listed as oversize; the read stops once the entries
-- returned add up to budget_bytes, measured as the reply carries them (framing
-- included: an entry of empty fields is small in content, not on the wire), so the
-- reply stays within budget_bytes plus one entry. Reading one entry per call keeps
-- this script's own memory to about one entry, whatever the entries hold.
--
-- No KEYS (the input stream is read, never written: see flush.lua)
-- ARGV: stream, group, consumer, after ('>' for new entries, else an ID: this consumer's
--       pending entries after it), count, max_fields, max_bytes, budget_bytes
-- Returns {entries, oversize}: entries as XREADGROUP gives them ({id, flat or nil}...),
-- oversize as {id, n_fields, n_bytes}... for the entries that were cut down.

local stream, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local after, count = ARGV[4], tonumber(ARGV[5])
local max_fields, max_bytes, budget = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local entries, oversize, total = {}, {}, 0
while #entries < count and total < budget do
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1,
    'STREAMS', stream, after)
  local got = reply and reply[1][2][1]
  if not got then break end
  local id, flat = got[1], got[2]
  if after ~= '>' then after = id end
  if flat then
    local size, cut
    flat, size, cut = measure(flat, max_fields, max_bytes)
    if cut then oversize[#oversize + 1] = {id, cut[1], cut[2]} end
    total = total + size
  else
    total = total + ENTRY_OVERHEAD  -- a deleted entry: its ID and an empty slot
  end
  entries[#entries + 1] = {id, flat}
end
return {entries, oversize}
