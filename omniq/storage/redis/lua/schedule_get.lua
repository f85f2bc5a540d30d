-- Schedules: ARGV: prefix, mode ('due', 'all'), now, limit. Returns data blobs in order.
local ids
if ARGV[2] == 'due' then
  ids = redis.call('ZRANGEBYSCORE', P .. 'schedules:due', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
else
  ids = redis.call('ZRANGE', P .. 'schedules', 0, -1)
end
local out = {}
for _, id in ipairs(ids) do
  local data = redis.call('HGET', P .. 's:' .. id, 'd')
  if data then out[#out + 1] = data end
end
return out
