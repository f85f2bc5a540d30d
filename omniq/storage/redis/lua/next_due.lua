-- The earliest time something in these queues becomes claimable, or false.
-- ARGV: prefix, queues... Ready tasks count at their due time (always in the past).
local best = nil
local function consider(t)
  if t and (best == nil or tonumber(t) < tonumber(best)) then best = t end
end
for i = 2, #ARGV do
  local q = ARGV[i]
  local first = redis.call('ZRANGE', qkey(q, 'ready'), 0, 0)
  if first[1] then consider(string.sub(first[1], 1, 13) .. '000') end
  for _, part in ipairs({'delayed', 'leases'}) do
    local got = redis.call('ZRANGE', qkey(q, part), 0, 0, 'WITHSCORES')
    if got[2] then consider(got[2]) end
  end
end
return best or false
