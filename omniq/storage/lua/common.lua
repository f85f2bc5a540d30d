-- Prepended to every OmniQ Redis script (see omniq/storage/redis.py for the key layout).
-- ARGV[1] is always the key prefix ("<namespace>:"). Times are integer microseconds since
-- the epoch, passed and stored as decimal strings: Lua numbers are doubles and tostring()
-- would round them, so times are only turned into numbers to compare them.
local P = ARGV[1]
local FINAL = {complete = true, failed = true, cancelled = true, expired = true}

local function tkey(id) return P .. 't:' .. id end
local function qkey(q, part) return P .. 'q:' .. q .. ':' .. part end
local function skey(q, status) return P .. 'q:' .. q .. ':s:' .. status end

local function zadd(key, score, member) redis.call('ZADD', key, score, member) end

-- Put a task where claim finds it: in the ready set when due, the delayed set when not
-- yet, the leases set while running, the finished set when final; a SCHEDULED task with
-- dependencies is held nowhere until a transition releases it. True when it is waiting
-- (a worker should look again). `add` (default: one ZADD now) lets a caller gather the
-- writes of many tasks into one ZADD per set.
local function place(id, q, status, has_deps, due, sortdue, member, prio, lease, now, add)
  add = add or zadd
  if status == 'running' then
    add(qkey(q, 'leases'), lease ~= '' and lease or now, id)
    return false
  elseif FINAL[status] then
    add(P .. 'finished', now, id)
    return false
  elseif status == 'scheduled' and has_deps == '1' then
    return false
  elseif due == '' or tonumber(due) <= tonumber(now) then
    add(qkey(q, 'ready'), -tonumber(prio), member)
  else
    add(qkey(q, 'delayed'), sortdue, id)
  end
  return true
end

-- Take a task out of every placement set.
local function unplace(id, q, member)
  redis.call('ZREM', qkey(q, 'ready'), member)
  redis.call('ZREM', qkey(q, 'delayed'), id)
  redis.call('ZREM', qkey(q, 'leases'), id)
  redis.call('ZREM', P .. 'finished', id)
end

-- Move a task between the per-queue status sets (scored by enqueue sequence).
local function restatus(id, q, old, new, seq)
  if old ~= new then
    redis.call('ZREM', skey(q, old), id)
    redis.call('ZADD', skey(q, new), seq, id)
  end
end

-- Wake workers blocked on these queues: a few tokens per queue, the list capped.
local function wake(counts)
  for q, n in pairs(counts) do
    local k = qkey(q, 'wake')
    local tokens = {}
    for j = 1, math.min(n, 16) do tokens[j] = '1' end
    redis.call('LPUSH', k, unpack(tokens))
    redis.call('LTRIM', k, 0, 15)
  end
end

-- The stored fields of a task, in the order omniq.storage.redis decodes them.
local FIELDS = {'d', 's', 'a', 'w', 'l', 'due', 'u'}
local function fetch(out, id)
  local h = redis.call('HMGET', tkey(id), unpack(FIELDS))
  if h[1] then
    out[#out + 1] = id
    for j = 1, 7 do out[#out + 1] = h[j] or '' end
  end
end
