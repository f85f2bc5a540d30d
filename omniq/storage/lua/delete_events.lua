-- Delete events older than a time, for up to `batch` tasks.
-- ARGV: prefix, before (16-digit microseconds), batch. Returns {deleted, tasks looked at}.
-- Each list entry starts with its event's 16-digit timestamp.
local before = ARGV[2]
local idx = P .. 'events'
local ids = redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. before, 'LIMIT', 0, tonumber(ARGV[3]))
local deleted = 0
for _, id in ipairs(ids) do
  local k = P .. 'e:' .. id
  local items = redis.call('LRANGE', k, 0, -1)
  local keep, oldest = {}, nil
  for _, item in ipairs(items) do
    local ts = string.sub(item, 1, 16)
    if ts < before then
      deleted = deleted + 1
    else
      keep[#keep + 1] = item
      if oldest == nil or ts < oldest then oldest = ts end
    end
  end
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
return {deleted, #ids}
