-- Replace a finished task with its fresh run (omniq._requeue) if its status is still one
-- of `from`: the record rewritten, attempts and lost runs 0, no worker, no lease.
-- ARGV: prefix, now, id, to_status, due (microseconds), sortms (13-digit due ms), data,
-- from statuses...
-- Returns the task's fields (see fetch) or false when its status was not in `from`.
local now, id, to, due, sortms, data = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local k = tkey(id)
local h = redis.call('HMGET', k, 's', 'q', 'seq', 'm', 'p', 'x')
if not h[1] then return false end
local allowed = false
for i = 8, #ARGV do
  if ARGV[i] == h[1] then allowed = true end
end
if not allowed then return false end
h[4] = member_in(h[4], id)
h[3] = seq_in(h[3], h[4])
local q = h[2]
unplace(id, q, h[4])
local member = member_of(sortms, h[3], id)
redis.call('HDEL', k, 'lr', unpack(DATA))
local args = {'s', to, 'a', '0', 'w', '', 'l', '', 'due', due, 'm', head_of(member), 'u', now}
data_pairs(args, data, #args)
redis.call('HSET', k, unpack(args))
restatus(id, q, h[1], to, h[3])
if place(id, q, to, h[6], due, member, h[5], '', now) then
  wake({[q] = 1})
end
local out = {}
fetch(out, id)
return out
