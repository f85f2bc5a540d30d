-- Delete up to `batch` results whose expiry is at or before a time.
-- ARGV: prefix, now, batch. Returns how many expired results it removed.
local idx = P .. 'results:exp'
local ids = redis.call('ZRANGEBYSCORE', idx, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('DEL', P .. 'r:' .. id) end
if #ids > 0 then redis.call('ZREM', idx, unpack(ids)) end
return #ids
