-- Helpers every script shares; scripts.py puts this file in front of each script.
--
-- cursor(first): reads ARGV in order from index `first`. The scripts' arguments are
-- variable-length groups (counts followed by that many items), so each is read with
-- take(); skip(n) passes over n values and at() tells where the next one is.
local function cursor(first)
  local pos = first
  local c = {}
  function c.take()
    local v = ARGV[pos]
    pos = pos + 1
    return v
  end
  function c.skip(n) pos = pos + n end
  function c.at() return pos end
  return c
end
