-- Tasks newest first. ARGV: prefix, limit, queue ('' for all), statuses...
local limit, queue = tonumber(ARGV[2]), ARGV[3]
local queues = queue ~= '' and {queue} or redis.call('SMEMBERS', P .. 'queues')
local rows = {}
for _, q in ipairs(queues) do
  for i = 4, #ARGV do
    local got = redis.call('ZREVRANGE', skey(q, ARGV[i]), 0, limit - 1, 'WITHSCORES')
    for j = 1, #got, 2 do rows[#rows + 1] = {tonumber(got[j + 1]), got[j]} end
  end
end
table.sort(rows, function(a, b) return a[1] > b[1] end)
local out = {}
for j = 1, math.min(limit, #rows) do fetch(out, rows[j][2]) end
return out
