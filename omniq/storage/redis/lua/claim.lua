-- Lease up to `limit` claimable tasks: promote due delayed tasks and expired leases to
-- the ready sets, then take the best `limit` across the queues.
-- ARGV: prefix, now, lease_until, worker, limit, nqueues, queues..., [strict]
-- With strict = '1' the queues are taken in the order given (queue_order="strict"): each
-- queue's best in turn, until `limit` are found; queues after that are not looked at.
-- Returns per task: id, data, attempts, due, lost runs.
-- With now = '' the server's clock gives now and lease_until is now + ARGV[3] (a lease
-- length in microseconds); the reply then starts with now and lease_until. A worker uses
-- this to claim in the same pipeline as its blocking wait, when the client cannot know
-- the time the wait will end.
local now, lease, worker = ARGV[2], ARGV[3], ARGV[4]
local limit, nq = tonumber(ARGV[5]), tonumber(ARGV[6])
local strict = ARGV[7 + nq] == '1'
local PROMOTE = 1000
local cands = {}
local out = {}
if now == '' then
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now = string.format('%.0f', us)
  lease = string.format('%.0f', us + tonumber(ARGV[3]))
  out[1], out[2] = now, lease
end
for i = 1, nq do
  local q = ARGV[6 + i]
  local ready = qkey(q, 'ready')
  for _, part in ipairs({'delayed', 'leases'}) do
    local src = qkey(q, part)
    local ids = redis.call('ZRANGEBYSCORE', src, '-inf', now, 'LIMIT', 0, PROMOTE)
    if #ids > 0 then
      for _, id in ipairs(ids) do
        local h = redis.call('HMGET', tkey(id), 'm', 'p')
        if h[1] then redis.call('ZADD', ready, -tonumber(h[2]), h[1]) end
      end
      redis.call('ZREM', src, unpack(ids))
    end
  end
  local top = redis.call('ZRANGE', ready, 0, limit - 1, 'WITHSCORES')
  for j = 1, #top, 2 do
    cands[#cands + 1] = {tonumber(top[j + 1]), top[j], q}
  end
  -- Strict: a ready set is already in claim order, and the batch is full (the queues
  -- left are promoted by the claim that reaches them).
  if strict and #cands >= limit then break end
end
if nq > 1 and not strict then
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
if #cands < limit then
  -- Everything claimable is being taken: wake-up tokens left for these queues are stale.
  for i = 1, nq do
    local wake_key = qkey(ARGV[6 + i], 'wake')
    if redis.call('LLEN', wake_key) > 0 then redis.call('DEL', wake_key) end
  end
end
for j = 1, math.min(limit, #cands) do
  local member, q = cands[j][2], cands[j][3]
  local id = string.sub(member, ID_AT)
  local h = redis.call('HMGET', tkey(id), 's', 'seq', 'due', 'm', 'lr', unpack(DATA))
  if h[4] ~= member then  -- stored before members shrank: {sortdue:016}{seq:016}{id}
    id = string.sub(member, 33)
    h = redis.call('HMGET', tkey(id), 's', 'seq', 'due', 'm', 'lr', unpack(DATA))
  end
  local k = tkey(id)
  redis.call('ZREM', qkey(q, 'ready'), member)
  if h[4] == member then  -- else a stale member: its task is gone or has moved on
    local attempts = redis.call('HINCRBY', k, 'a', 1)
    local lost = h[5] or 0
    if h[1] == 'running' then  -- its lease ran out: the run before was lost
      lost = redis.call('HINCRBY', k, 'lr', 1)
    end
    redis.call('HSET', k, 's', 'running', 'w', worker, 'l', lease, 'u', now)
    restatus(id, q, h[1], 'running', h[2])
    redis.call('ZADD', qkey(q, 'leases'), lease, id)
    out[#out + 1] = id
    out[#out + 1] = joined(h, 6)
    out[#out + 1] = attempts
    out[#out + 1] = h[3] or ''
    out[#out + 1] = lost
  end
end
return out
