-- Extend the leases a worker still holds. ARGV: prefix, now, lease_until, worker, ids...
-- Returns the ids still held.
local now, lease, worker = ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i = 5, #ARGV do
  local id = ARGV[i]
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'w', 'q', 'm')
  if h[1] == 'running' and h[2] == worker then
    redis.call('HSET', k, 'l', lease, 'u', now)
    redis.call('ZADD', qkey(h[3], 'leases'), lease, id)
    -- a claim may have moved the expired lease to the ready set already
    redis.call('ZREM', qkey(h[3], 'ready'), member_in(h[4], id))
    out[#out + 1] = id
  end
end
return out
