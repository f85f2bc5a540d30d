-- Prepended to every OmniQ Redis script (see omniq/storage/redis.py for the key layout).
-- ARGV[1] is always the key prefix ("<namespace>:"). Times are integer microseconds since
-- the epoch, passed and stored as decimal strings: Lua numbers are doubles and tostring()
-- would round them, so times are only turned into numbers to compare them.
local P = ARGV[1]
local FINAL = {complete = true, failed = true, cancelled = true, expired = true}

local function tkey(id) return P .. 't:' .. id end
local function dkey(id) return P .. 'd:' .. id end
local function qkey(q, part) return P .. 'q:' .. q .. ':' .. part end
local function skey(q, status) return P .. 'q:' .. q .. ':s:' .. status end

local function zadd(key, score, member) redis.call('ZADD', key, score, member) end

-- A task's ready-set member: due time in milliseconds (13 digits, from the 16-digit
-- microsecond sortdue), enqueue sequence (13 hex digits), id. Members of one priority sort
-- by due time, then enqueue order. Under 64 bytes for ids of up to 38 characters (OmniQ's
-- own are 36), like every other value of the task hash, so Redis keeps the hash as a
-- compact listpack (a fraction of the memory of a hash table); a longer custom id only
-- costs memory.
local ID_AT = 27
local function member_of(sortdue, seq, id)
  return string.sub(sortdue, 1, 13) .. string.format('%013x', tonumber(seq)) .. id
end

-- Put a task where claim finds it: in the ready set when due, the delayed set when not
-- yet, the leases set while running, the finished set when final; a SCHEDULED task with
-- dependencies is held nowhere until a transition releases it. True when it is waiting
-- (a worker should look again). `add` (default: one ZADD now) lets a caller gather the
-- writes of many tasks into one ZADD per set.
local function place(id, q, status, has_deps, due, member, prio, lease, now, add)
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
    add(qkey(q, 'delayed'), due, id)
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

-- A task's encoded form. Tasks stored before it moved to its own key keep it in the hash
-- (field 'd'); their ready-set members are {sortdue:016}{seq:016}{id} (see claim.lua).
local function task_data(id)
  return redis.call('GET', dkey(id)) or redis.call('HGET', tkey(id), 'd') or ''
end

-- The stored fields of a task, in the order omniq.storage.redis decodes them: the encoded
-- task, then the hash fields.
local FIELDS = {'s', 'a', 'w', 'l', 'due', 'u'}
local function fetch(out, id)
  local h = redis.call('HMGET', tkey(id), unpack(FIELDS))
  if h[1] then
    out[#out + 1] = id
    out[#out + 1] = task_data(id)
    for j = 1, 6 do out[#out + 1] = h[j] or '' end
  end
end
