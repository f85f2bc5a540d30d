-- Store new tasks; existing ids are left as they are.
-- ARGV: prefix, now, count, ngroups, then per event group: nitems, items... (each a
-- 16-digit time then the record without its task id), then per task: nshared, then (when
-- nshared > 0) the fields it shares with the tasks after it: queue, priority, status,
-- attempts, worker, lease, due ('' for none), updated, ndeps, dep ids..., [limit name]; then its own: id,
-- data, sortms (13 digits: due or creation time, in ms), group (0: no events). nshared = 0:
-- the same shared fields as the task before.
--
-- The events of a call's new tasks are stored once per group of tasks that log the same
-- events (a bulk enqueue's tasks all log one ENQUEUED at one time, in one queue): a hash
-- eb:{n} holds the items and `n` the count of tasks pointing at it (their hash's `eb`
-- field), indexed in events:b by its oldest item. A list and an index entry per task cost
-- a third of Redis's time on a bulk enqueue. n is the call's first enqueue sequence number
-- plus the group's: sequence numbers are reserved per call, so no other call uses it.
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
local base = seq
local groups = {}
local i = 5
for g = 1, tonumber(ARGV[4]) do
  local nitems = tonumber(ARGV[i])
  groups[g] = {first = i + 1, last = i + nitems, tasks = 0}
  i = i + 1 + nitems
end
local woken = {}
local queues = {}
local batches = {}
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
for _ = 1, n do
  local nshared = tonumber(ARGV[i])
  if nshared > 0 then
    q, prio, status = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    worker, lease, due, updated = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
    deps_at, ndeps = i + 10, tonumber(ARGV[i + 9])
    has_deps = ndeps > 0 and '1' or ''
    -- No `u`: at enqueue it is the record's own update (or creation) time.
    -- No `a` or `p` when 0 (readers take a missing one as 0).
    fields = {'s', status, 'q', q, 'm', ''}
    keep('a', ARGV[i + 4] ~= '0' and ARGV[i + 4] or '')
    keep('p', prio ~= '0' and prio or '')
    keep('w', worker)
    keep('l', lease)
    keep('due', due)
    keep('x', has_deps)
    -- A task carrying a limit: its name, after the dependencies (omniq._limits).
    if nshared > 9 + ndeps then keep('ln', ARGV[i + 10 + ndeps]) end
    shared = #fields
    status_key = skey(q, status)
  end
  i = i + 1 + nshared
  local id, data, sortms, g = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local k = tkey(id)
  if redis.call('EXISTS', k) == 0 then
    seq = seq + 1
    local member = member_of(sortms, seq, id)
    fields[6] = head_of(member)  -- the id is the key's, the sequence is in the head
    local last = data_pairs(fields, data, shared)
    if g > 0 then
      local group = groups[g]
      if group.tasks == 0 then group.name = string.format('%d', base + g) end
      group.tasks = group.tasks + 1
      fields[last + 1] = 'eb'
      fields[last + 2] = group.name
      last = last + 2
    end
    redis.call('HSET', k, unpack(fields, 1, last))
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
  end
  i = i + 4
end
for _, group in ipairs(groups) do
  if group.tasks > 0 then
    local h, items = {'n', group.tasks}, {unpack(ARGV, group.first, group.last)}
    for j, item in ipairs(items) do
      h[#h + 1] = j
      h[#h + 1] = item
    end
    redis.call('HSET', P .. 'eb:' .. group.name, unpack(h))
    redis.call('ZADD', P .. 'events:b', oldest_stamp(items), group.name)
  end
end
for key, b in pairs(batches) do
  for s = 1, #b, 1000 do
    redis.call('ZADD', key, unpack(b, s, math.min(s + 999, #b)))
  end
end
for name in pairs(queues) do redis.call('SADD', P .. 'queues', name) end
wake(woken)
return n
