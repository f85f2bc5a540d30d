-- Compare-and-set a task's status; clears its lease.
-- ARGV: prefix, now, id, to_status, due ('' keeps it), sortms (13-digit due ms), from
-- statuses...
-- Returns the task's fields (see fetch) or false when its status was not in `from`.
local now, id, to, new_due, new_sortms = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local k = tkey(id)
local h = redis.call('HMGET', k, 's', 'q', 'seq', 'm', 'p', 'x', 'due', 'w')
if not h[1] then return false end
local allowed = false
for i = 7, #ARGV do
  if ARGV[i] == h[1] then allowed = true end
end
if not allowed then return false end
h[4] = member_in(h[4], id)
h[3] = seq_in(h[3], h[4])
local q, member, due = h[2], h[4], h[7] or ''  -- a missing field is ''
unplace(id, q, member)
if new_due ~= '' then
  due = new_due
  member = member_of(new_sortms, h[3], id)
end
redis.call('HSET', k, 's', to, 'l', '', 'due', due, 'm', head_of(member), 'u', now)
restatus(id, q, h[1], to, h[3])
if h[1] == 'running' and h[8] and h[8] ~= '' then
  -- Taken from its worker: tell it at once (see AsyncRedisQueue.watch_cancels).
  local told = P .. 'wc:' .. h[8]
  redis.call('RPUSH', told, id)
  redis.call('PEXPIRE', told, CANCEL_NOTICE_MS)
end
if place(id, q, to, h[6], due, member, h[5], '', now) then
  wake({[q] = 1})
end
local out = {}
fetch(out, id)
return out
