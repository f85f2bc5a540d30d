-- Counts per queue and status. ARGV: prefix, statuses... Returns queue, status, count...
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  for i = 2, #ARGV do
    local n = redis.call('ZCARD', skey(q, ARGV[i]))
    if n > 0 then
      out[#out + 1] = q
      out[#out + 1] = ARGV[i]
      out[#out + 1] = n
    end
  end
end
return out
