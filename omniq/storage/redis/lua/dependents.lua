-- The tasks that depend on each of several tasks, in enqueue order.
-- ARGV: prefix, ids... Returns per id: id, count, then count fetch() groups.
local out = {}
for i = 2, #ARGV do
  local rows = {}
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'deps:' .. ARGV[i])) do
    local h = redis.call('HMGET', tkey(id), 'seq', 'm')
    local seq = seq_in(h[1], h[2])
    if seq then rows[#rows + 1] = {seq, id} end
  end
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  out[#out + 1] = ARGV[i]
  out[#out + 1] = #rows
  for _, row in ipairs(rows) do fetch(out, row[2]) end
end
return out
