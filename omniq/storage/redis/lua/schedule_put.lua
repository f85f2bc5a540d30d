-- Store a schedule; with an expected version, only if the stored one still has it.
-- ARGV: prefix, id, data, next_run ('' none), paused ('1'/'0'), expected version ('' any).
-- Returns 1 when written.
local id, data, next_run, paused, expected = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local k = P .. 's:' .. id
if expected ~= '' and (redis.call('HGET', k, 'v') or '') ~= expected then return 0 end
redis.call('HSET', k, 'd', data)
redis.call('HINCRBY', k, 'v', 1)
redis.call('ZADD', P .. 'schedules', 0, id)
if paused == '0' and next_run ~= '' then
  redis.call('ZADD', P .. 'schedules:due', next_run, id)
else
  redis.call('ZREM', P .. 'schedules:due', id)
end
return 1
