-- One entry of the input stream by its ID, measured like read.lua's (lib.lua's
-- measure()) before it is returned, so `p35 explain` gets a bounded reply for an entry
-- of any size and sees it as the daemon does. Producers are untrusted.
--
-- No KEYS (the input stream is only read: see flush.lua)
-- ARGV: stream, id, max_fields, max_bytes
-- Returns {} when there is no such entry; else {id, flat}, or for an entry over the
-- limits {id, flat cut down, n_fields, n_bytes}.

local got = redis.call('XRANGE', ARGV[1], ARGV[2], ARGV[2], 'COUNT', 1)[1]
if not got then return {} end
local flat, _, cut = measure(got[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if cut then return {got[1], flat, cut[1], cut[2]} end
return {got[1], flat}
