-- Store new tasks; existing ids are left as they are.
-- ARGV: prefix, now, count, then per task: nshared, then (when nshared > 0) the fields it
-- shares with the tasks after it: queue, priority, status, attempts, worker, lease, due
-- ('' for none), updated, ndeps, dep ids...; then its own: id, data, sortms (13 digits: due
-- or creation time, in ms), nevents, events... (each a 16-digit time then the record,
-- appended to the task's event list as omniq.storage.redis's event log does, only for a new
-- task). nshared = 0: the same shared fields as the task before.
--
-- What makes a long call cheap (the server does most of the work of a bulk enqueue):
-- - shared fields are sent once per run of tasks, not per task: every argument is a string
--   Redis and Lua each allocate, hash and later free;
-- - the sorted-set writes of all the tasks are gathered and sent as one ZADD per set: one
--   command per task per set costs more than the work it does;
-- - empty fields (no worker, lease, due time or dependencies) are left out of the task
--   hash: HSET searches the listpack once per field, and readers take a missing one as '';
-- - a task builds only the strings it must (key, sequence, member, record pieces) and
--   reuses one argument table for its HSET.
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
local q, prio, status, worker, lease, due, updated, has_deps, deps_at, ndeps
local fields, shared, status_key
local function keep(name, value)
  if value ~= '' then
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
end
local i = 4
for _ = 1, n do
  local nshared = tonumber(ARGV[i])
  if nshared > 0 then
    q, prio, status = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    worker, lease, due, updated = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
    deps_at, ndeps = i + 10, tonumber(ARGV[i + 9])
    has_deps = ndeps > 0 and '1' or ''
    fields = {'s', status, 'a', ARGV[i + 4], 'u', updated, 'q', q, 'p', prio, 'seq', '', 'm', ''}
    keep('w', worker)
    keep('l', lease)
    keep('due', due)
    keep('x', has_deps)
    shared = #fields
    status_key = skey(q, status)
  end
  i = i + 1 + nshared
  local id, data, sortms, nev = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local k = tkey(id)
  if redis.call('EXISTS', k) == 0 then
    seq = seq + 1
    local member = member_of(sortms, seq, id)
    fields[12] = string.format('%016d', seq)
    fields[14] = member
    redis.call('HSET', k, unpack(fields, 1, data_pairs(fields, data, shared)))
    add(status_key, seq, id)
    queues[q] = true
    for j = deps_at, deps_at + ndeps - 1 do
      redis.call('SADD', P .. 'deps:' .. ARGV[j], id)
    end
    if place(id, q, status, has_deps, due, member, prio, lease, now, add) then
      woken[q] = (woken[q] or 0) + 1
    elseif FINAL[status] then
      add(P .. 'finished', updated, id)
    end
    if nev > 0 then
      local e = i + 4
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
  i = i + 4 + nev
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
for name in pairs(queues) do redis.call('SADD', P .. 'queues', name) end
wake(woken)
return n
