-- The group's consumers summed up for `p35 dash e`, inside Redis: their list (XINFO
-- CONSUMERS) can be larger than a client may read (60,000 long names are 15 MiB), and
-- the view shows a few of them and a count.
-- ARGV: stream, group, n_top, name_bytes
-- Returns {total, {name (its first name_bytes bytes), name length, pending, idle_ms}...}
-- for the n_top with the most pending, then the least idle (ties: in Redis's order);
-- {} when there is no such group.
local stream, group = ARGV[1], ARGV[2]
local n_top, name_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])

local ok, rows = pcall(redis.call, 'XINFO', 'CONSUMERS', stream, group)
if not ok then return {} end
local top = {}  -- kept sorted, at most n_top
local function before(a, b)
  return a.pending > b.pending or (a.pending == b.pending and a.idle < b.idle)
end
for _, row in ipairs(rows) do
  local c = {}
  for i = 1, #row, 2 do
    local k = row[i]
    if k == 'name' or k == 'pending' or k == 'idle' then c[k] = row[i + 1] end
  end
  if #top < n_top or before(c, top[#top]) then
    local at = #top + 1
    while at > 1 and before(c, top[at - 1]) do at = at - 1 end
    table.insert(top, at, c)
    if #top > n_top then top[#top] = nil end
  end
end
local out = {#rows}
for _, c in ipairs(top) do
  out[#out + 1] = {string.sub(c.name, 1, name_bytes), #c.name, c.pending, c.idle}
end
return out
