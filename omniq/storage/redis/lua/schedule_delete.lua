-- Remove a schedule. ARGV: prefix, id. Returns 1 if it existed.
local id = ARGV[2]
redis.call('ZREM', P .. 'schedules', id)
redis.call('ZREM', P .. 'schedules:due', id)
return redis.call('DEL', P .. 's:' .. id)
