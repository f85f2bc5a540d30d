-- Hand back held tasks without spending an attempt. ARGV: prefix, now, worker, ids...
-- Returns how many were released.
local now, worker = ARGV[2], ARGV[3]
local count = 0
local woken = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'w', 'q', 'seq', 'm', 'p', 'a', 'due')
  if h[1] == 'running' and h[2] == worker then
    local q = h[3]
    h[5] = member_in(h[5], id)
    h[4] = seq_in(h[4], h[5])
    local attempts = math.max((tonumber(h[7]) or 0) - 1, 0)
    local status = attempts > 0 and 'retrying' or 'pending'
    redis.call('ZREM', qkey(q, 'leases'), id)
    redis.call('ZREM', qkey(q, 'ready'), h[5])
    redis.call('HSET', k, 's', status, 'a', attempts, 'w', '', 'l', '', 'u', now)
    restatus(id, q, 'running', status, h[4])
    place(id, q, status, '', h[8], h[5], h[6], '', now)
    woken[q] = (woken[q] or 0) + 1
    count = count + 1
  end
end
wake(woken)
return count
