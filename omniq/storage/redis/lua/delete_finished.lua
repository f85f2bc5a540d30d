-- Delete up to `batch` finished tasks last updated before a time.
-- ARGV: prefix, before, batch. Returns {deleted, looked at}.
-- The events a task's enqueue stored for its group move to the task's own list first: the
-- event log outlives the task, and keeps it until its retention deletes it.
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local deleted = 0
for _, id in ipairs(ids) do
  local k = tkey(id)
  local h = redis.call('HMGET', k, 'q', 's', 'eb')
  if h[1] then
    if h[3] then
      local items, count = batch_events(h[3])
      if #items > 0 then
        redis.call('RPUSH', P .. 'e:' .. id, unpack(items))
        redis.call('ZADD', P .. 'events', 'LT', oldest_stamp(items), id)
      end
      if count > 1 then
        redis.call('HINCRBY', P .. 'eb:' .. h[3], 'n', -1)
      else
        redis.call('DEL', P .. 'eb:' .. h[3])
        redis.call('ZREM', P .. 'events:b', h[3])
      end
    end
    redis.call('ZREM', skey(h[1], h[2]), id)
    redis.call('DEL', k, P .. 'deps:' .. id)
    redis.call('DEL', P .. 'pg:' .. id)
    deleted = deleted + 1
  end
end
if #ids > 0 then redis.call('ZREM', P .. 'finished', unpack(ids)) end
return {deleted, #ids}
