-- The group's state for the CLI (group_state() in lib.lua), in one round trip.
-- No KEYS (the input stream is read only: see flush.lua). ARGV: stream, group.
return group_state(ARGV[1], ARGV[2])
