-- A task's events: {the items its enqueue stored for its group, the items of its own list}.
-- ARGV: prefix, id. Group items leave the task id out; the reader puts it back.
local id = ARGV[2]
local own = redis.call('LRANGE', P .. 'e:' .. id, 0, -1)
local name = redis.call('HGET', tkey(id), 'eb')
local grouped = {}
if name then grouped = batch_events(name) end
return {grouped, own}
