-- One flush: count a batch of entries and XACK them, atomically, or do nothing. The
-- steps are in flush_lib.lua; store/flush.py lays out the arguments and reads the reply.
-- Returns {0, counted, trimmed, replayed} applied; {1, id...} IDs not ours, nothing
-- applied; {2} lease lost; {3, why} an argument or a key would make a write fail,
-- nothing applied; {4, id...} IDs settled already (delivered again: the group was moved
-- back), nothing applied.

local a = flush_read(KEYS, ARGV)
if not flush_lease(a) then return {2} end
local missing = flush_owned(a)
if #missing > 0 then
  table.insert(missing, 1, 1)
  return missing
end
local replays = flush_replays(a)
if #replays > 0 then
  table.insert(replays, 1, 4)
  return replays
end
local plan, why = flush_plan(a)
if not plan then return {3, why} end
return flush_apply(a, plan)
