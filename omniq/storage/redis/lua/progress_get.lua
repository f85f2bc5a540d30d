-- Tasks' stored progress (``pg:{id}``). ARGV: prefix, task ids. Returns id, progress
-- pairs (flat) of the tasks that have one.
local out = {}
for i = 2, #ARGV do
  local data = redis.call('GET', P .. 'pg:' .. ARGV[i])
  if data then
    out[#out + 1] = ARGV[i]
    out[#out + 1] = data
  end
end
return out
