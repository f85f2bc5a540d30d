-- Delete events older than a time, for up to `batch` tasks and `batch` enqueue groups.
-- ARGV: prefix, before (16-digit microseconds), batch. Returns {deleted, most looked at}.
-- Each item starts with its event's 16-digit timestamp. An item of an enqueue group (see
-- enqueue.lua) is the event of every task still pointing at the group.
local before = ARGV[2]
local limit = tonumber(ARGV[3])

-- The items of `items` from `before` on, and the oldest of their times.
local function kept(items)
  local keep = {}
  for _, item in ipairs(items) do
    if string.sub(item, 1, 16) >= before then keep[#keep + 1] = item end
  end
  return keep, oldest_stamp(keep)
end

local deleted = 0
local idx = P .. 'events'
local ids = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. before, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local k = P .. 'e:' .. id
  local items = redis.call('LRANGE', k, 0, -1)
  local keep, oldest = kept(items)
  deleted = deleted + #items - #keep
  redis.call('DEL', k)
  if #keep > 0 then
    for j = 1, #keep, 1000 do
      redis.call('RPUSH', k, unpack(keep, j, math.min(j + 999, #keep)))
    end
    redis.call('ZADD', idx, oldest, id)
  else
    redis.call('ZREM', idx, id)
  end
end

local gidx = P .. 'events:b'
local names = redis.call('ZRANGEBYSCORE', gidx, '-inf', '(' .. before, 'LIMIT', 0, limit)
for _, name in ipairs(names) do
  local k = P .. 'eb:' .. name
  local items, count = batch_events(name)
  local keep, oldest = kept(items)
  deleted = deleted + (#items - #keep) * count
  if #keep > 0 then
    local h = {'n', count}
    for j, item in ipairs(keep) do
      h[#h + 1] = j
      h[#h + 1] = item
    end
    redis.call('DEL', k)
    redis.call('HSET', k, unpack(h))
    redis.call('ZADD', gidx, oldest, name)
  else
    -- Tasks still pointing at it find nothing: their events were deleted.
    redis.call('DEL', k)
    redis.call('ZREM', gidx, name)
  end
end
return {deleted, math.max(#ids, #names)}
