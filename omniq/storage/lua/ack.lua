-- Finish held tasks. ARGV: prefix, now, then per ack: id, worker, status.
-- Returns 1 or 0 per ack.
local now = ARGV[2]
local out = {}
for i = 3, #ARGV, 3 do
  local id, worker, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'w', 'q', 'seq', 'm', 'x', 'due', 'p')
  if h[1] == 'running' and h[2] == worker then
    redis.call('HSET', k, 's', status, 'l', '', 'u', now)
    redis.call('ZREM', qkey(h[3], 'leases'), id)
    redis.call('ZREM', qkey(h[3], 'ready'), h[5])
    restatus(id, h[3], 'running', status, h[4])
    place(id, h[3], status, h[6], h[7], h[5], h[8], '', now)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
