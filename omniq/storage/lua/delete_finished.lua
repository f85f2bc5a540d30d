-- Delete up to `batch` finished tasks last updated before a time.
-- ARGV: prefix, before, batch. Returns {deleted, looked at}.
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local deleted = 0
for _, id in ipairs(ids) do
  local k = tkey(id)
  local h = redis.call('HMGET', k, 'q', 's')
  if h[1] then
    redis.call('ZREM', skey(h[1], h[2]), id)
    redis.call('DEL', k, P .. 'deps:' .. id)
    deleted = deleted + 1
  end
end
if #ids > 0 then redis.call('ZREM', P .. 'finished', unpack(ids)) end
return {deleted, #ids}
