-- Store new tasks; existing ids are left as they are.
-- ARGV: prefix, now, count, then per task: id, data, queue, priority, status, attempts,
-- worker, lease, due ('' for none), sortdue (16 digits: due or creation time), updated,
-- ndeps, dep ids..., nevents, events... (each a 16-digit time then the record, appended to
-- the task's event list as omniq.storage.redis's event log does, only for a new task).
-- The sorted-set writes of all the tasks are gathered and sent as one ZADD per set: one
-- command per task per set costs more than the work it does.
local now = ARGV[2]
local n = tonumber(ARGV[3])
local seq = redis.call('INCRBY', P .. 'seq', n) - n
local woken = {}
local queues = {}
local batches = {}
local indexed = {}
local function add(key, score, member)
  local b = batches[key]
  if b == nil then
    b = {}
    batches[key] = b
  end
  b[#b + 1] = score
  b[#b + 1] = member
end
local i = 4
for _ = 1, n do
  local id, data, q, prio, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local attempts, worker, lease, due, sortdue = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  local updated, ndeps = ARGV[i + 10], tonumber(ARGV[i + 11])
  local k = tkey(id)
  if redis.call('EXISTS', k) == 0 then
    seq = seq + 1
    local sq = string.format('%016d', seq)
    local member = member_of(sortdue, seq, id)
    local has_deps = ndeps > 0 and '1' or ''
    local fields = {'s', status, 'a', attempts, 'w', worker, 'l', lease, 'due', due,
      'u', updated, 'q', q, 'p', prio, 'seq', sq, 'm', member, 'x', has_deps}
    data_pairs(fields, data)
    redis.call('HSET', k, unpack(fields))
    add(skey(q, status), sq, id)
    queues[q] = true
    for j = 1, ndeps do
      redis.call('SADD', P .. 'deps:' .. ARGV[i + 11 + j], id)
    end
    if place(id, q, status, has_deps, due, member, prio, lease, now, add) then
      woken[q] = (woken[q] or 0) + 1
    elseif FINAL[status] then
      add(P .. 'finished', updated, id)
    end
    local e = i + 13 + ndeps
    local nev = tonumber(ARGV[e - 1])
    if nev > 0 then
      redis.call('RPUSH', P .. 'e:' .. id, unpack(ARGV, e, e + nev - 1))
      local oldest = string.sub(ARGV[e], 1, 16)
      for j = e + 1, e + nev - 1 do
        local stamp = string.sub(ARGV[j], 1, 16)
        if stamp < oldest then oldest = stamp end
      end
      indexed[#indexed + 1] = oldest
      indexed[#indexed + 1] = id
    end
  end
  i = i + 13 + ndeps + tonumber(ARGV[i + 12 + ndeps])
end
-- LT: a task's events may predate this call (an id reused after its record was deleted).
for s = 1, #indexed, 1000 do
  redis.call('ZADD', P .. 'events', 'LT', unpack(indexed, s, math.min(s + 999, #indexed)))
end
for key, b in pairs(batches) do
  for s = 1, #b, 1000 do
    redis.call('ZADD', key, unpack(b, s, math.min(s + 999, #b)))
  end
end
for q in pairs(queues) do redis.call('SADD', P .. 'queues', q) end
wake(woken)
return n
