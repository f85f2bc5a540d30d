-- Move a held task to RETRYING, due at a new time.
-- ARGV: prefix, now, id, worker, due, sortms (13-digit due ms). Returns 1 if it was held.
local now, id, worker, due, sortms = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local k = tkey(id)
local h = redis.call('HMGET', k, 's', 'w', 'q', 'seq', 'm', 'p')
if h[1] ~= 'running' or h[2] ~= worker then return 0 end
h[5] = member_in(h[5], id)
h[4] = seq_in(h[4], h[5])
local q = h[3]
local member = member_of(sortms, h[4], id)
redis.call('ZREM', qkey(q, 'leases'), id)
redis.call('ZREM', qkey(q, 'ready'), h[5])
redis.call('HSET', k, 's', 'retrying', 'l', '', 'due', due, 'm', head_of(member), 'u', now)
restatus(id, q, 'running', 'retrying', h[4])
place(id, q, 'retrying', '', due, member, h[6], '', now)
wake({[q] = 1})
return 1
