-- Prepended to every OmniQ Redis script (see omniq/storage/redis/__init__.py for the key layout).
-- ARGV[1] is always the key prefix ("<namespace>:"). Times are integer microseconds since
-- the epoch, passed and stored as decimal strings: Lua numbers are doubles and tostring()
-- would round them, so times are only turned into numbers to compare them.
local P = ARGV[1]
local FINAL = {complete = true, failed = true, cancelled = true, expired = true}
-- How long a cancel notice waits in a worker's list (`wc:{worker}`) for the worker to
-- read it: a live worker does so at once; a dead one's list must not stay forever.
local CANCEL_NOTICE_MS = 600000

local function tkey(id) return P .. 't:' .. id end

-- A queue's keys, built once per script call: a script working through many tasks would
-- otherwise build (and garbage-collect) the same key strings once per task, and creating a
-- string is the dearest thing a short script does.
local KEY_CACHE = {[':'] = {}, [':s:'] = {}}
local function queue_key(sep, q, name)
  local by_queue = KEY_CACHE[sep]
  local keys = by_queue[q]
  if keys == nil then
    keys = {}
    by_queue[q] = keys
  end
  local k = keys[name]
  if k == nil then
    k = P .. 'q:' .. q .. sep .. name
    keys[name] = k
  end
  return k
end
local function qkey(q, part) return queue_key(':', q, part) end
local function skey(q, status) return queue_key(':s:', q, status) end

local function zadd(key, score, member) redis.call('ZADD', key, score, member) end

-- A task's ready-set member: due time in milliseconds (`sortms`, 13 digits, as the client
-- sends it), enqueue sequence (13 hex digits), id. Members of one priority sort
-- by due time, then enqueue order. Under 64 bytes for ids of up to 38 characters (OmniQ's
-- own are 36), like every other value of the task hash, so Redis keeps the hash as a
-- compact listpack (a fraction of the memory of a hash table); a longer custom id only
-- costs memory.
local ID_AT = 27
local function member_of(sortms, seq, id)
  return string.format('%s%013x%s', sortms, tonumber(seq), id)
end

-- The hash keeps its member's head only (`m`: due ms and sequence, 26 characters; the key
-- holds the id) and no `seq` field (the head holds it, in hex): 36 + 16 bytes less per
-- task, which takes a queued task's hash a size class or two down. A task stored before
-- (OmniQ 0.1.0) keeps the whole member in `m` and its `seq`; these read either.
local HEAD = ID_AT - 1
local function head_of(member) return string.sub(member, 1, HEAD) end
local function member_in(m, id)
  if m and #m == HEAD then return m .. id end
  return m
end
local function seq_in(seq, m)
  if seq or not m then return seq end
  return string.format('%016d', tonumber(string.sub(m, 14, HEAD), 16))
end

-- Put a task where claim finds it (`due` and `has_deps` may be false: a hash field left
-- out because it was empty): in the ready set when due, the delayed set when not yet, the leases set while running, the finished set when final; a SCHEDULED task with
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
  elseif not due or due == '' or tonumber(due) <= tonumber(now) then
    add(qkey(q, 'ready'), -(tonumber(prio) or 0), member)  -- no `p`: 0
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

-- Wake workers blocked on these queues: a token per waiting task, at most 16 in a list.
-- A list that holds tokens has nobody blocked on it, and a full one is left alone: with no
-- worker waiting (a producer filling the queue), one LLEN replaces an LPUSH and an LTRIM.
local function wake(counts)
  for q, n in pairs(counts) do
    local k = qkey(q, 'wake')
    local room = 16 - redis.call('LLEN', k)
    if room > 0 then
      local tokens = {}
      for j = 1, math.min(n, room) do tokens[j] = '1' end
      redis.call('LPUSH', k, unpack(tokens))
    end
  end
end

-- A task's encoded form lives in its hash in pieces of at most 64 bytes (fields d1..d8),
-- so that the hash stays a listpack; a larger one, and any task stored before pieces, is
-- the one field 'd' (its hash is then a hash table: more memory, same behaviour).
local PIECE, PIECES = 64, 8
local DATA = {'d', 'd1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8'}

-- Write the field/value pairs that store `data` into `args` (for HSET) after index `at`;
-- return the index of the last one.
local function data_pairs(args, data, at)
  if #data > PIECE * PIECES then
    args[at + 1] = 'd'
    args[at + 2] = data
    return at + 2
  end
  for j = 1, math.ceil(#data / PIECE) do
    args[at + 1] = DATA[j + 1]
    args[at + 2] = string.sub(data, (j - 1) * PIECE + 1, j * PIECE)
    at = at + 2
  end
  return at
end

-- The encoded task from an HMGET reply whose fields from `at` on are DATA.
local function joined(h, at)
  if h[at] then return h[at] end
  local parts = {}
  for j = at + 1, at + PIECES do
    if not h[j] then break end
    parts[#parts + 1] = h[j]
  end
  return table.concat(parts)
end

-- The stored fields of a task, in the order omniq.storage.redis decodes them: the encoded
-- task, then the hash fields ('lr', lost runs, is left out while it is 0).
local FIELDS = {'s', 'a', 'w', 'l', 'due', 'u', 'lr', unpack(DATA)}
local FETCH_DEFAULTS = {'', '0', '', '', '', '', ''}  -- no `a`: 0 attempts
local function fetch(out, id)
  local h = redis.call('HMGET', tkey(id), unpack(FIELDS))
  if h[1] then
    out[#out + 1] = id
    out[#out + 1] = joined(h, 8)
    for j = 1, 7 do out[#out + 1] = h[j] or FETCH_DEFAULTS[j] end
  end
end

-- The events an enqueue stored once for a group of tasks (see enqueue.lua): the items in
-- order, and how many tasks still point at them.
local function batch_events(name)
  local h = redis.call('HGETALL', P .. 'eb:' .. name)
  local items, count = {}, 0
  for j = 1, #h, 2 do
    if h[j] == 'n' then count = tonumber(h[j + 1]) else items[tonumber(h[j])] = h[j + 1] end
  end
  return items, count
end

-- The oldest time among event items (each starts with its 16-digit time).
local function oldest_stamp(items)
  local oldest = nil
  for _, item in ipairs(items) do
    local stamp = string.sub(item, 1, 16)
    if oldest == nil or stamp < oldest then oldest = stamp end
  end
  return oldest
end

-- Store a result (see put_results.lua): `now` a number, `expires` '' or microseconds.
local RESULTS_EXP = P .. 'results:exp'
local function store_result(id, data, expires, token_ms, now)
  local key, token = P .. 'r:' .. id, P .. 'rw:' .. id
  local stored = true
  if expires == '' then
    redis.call('SET', key, data)
    redis.call('ZREM', RESULTS_EXP, id)
  else
    local ttl_ms = math.floor((tonumber(expires) - now) / 1000)
    if ttl_ms <= 0 then
      redis.call('DEL', key)
      stored = false
    else
      redis.call('SET', key, data, 'PX', ttl_ms)
      if ttl_ms < token_ms then token_ms = ttl_ms end
    end
    redis.call('ZADD', RESULTS_EXP, expires, id)
  end
  if stored then
    redis.call('RPUSH', token, 1)
    redis.call('LTRIM', token, 0, 0)
    redis.call('PEXPIRE', token, token_ms)
  end
end

-- Append a task's event items (each a 16-digit time, then the record) to its list, and
-- index the task by its oldest event.
local function append_events(id, items)
  if #items == 0 then return end
  redis.call('RPUSH', P .. 'e:' .. id, unpack(items))
  redis.call('ZADD', P .. 'events', 'LT', oldest_stamp(items), id)
end

-- Finish a held task: the ack of ack.lua. `ran` '0' takes back the attempt of a claim
-- that did not run it. True if the worker held it.
local function ack_task(id, worker, status, ran, now)
  local k = tkey(id)
  local h = redis.call('HMGET', k, 's', 'w', 'q', 'seq', 'm', 'x', 'due', 'p')
  if h[1] ~= 'running' or h[2] ~= worker then return false end
  h[5] = member_in(h[5], id)
  h[4] = seq_in(h[4], h[5])
  redis.call('HSET', k, 's', status, 'l', '', 'u', now)
  if ran == '0' then redis.call('HINCRBY', k, 'a', -1) end
  redis.call('ZREM', qkey(h[3], 'leases'), id)
  redis.call('ZREM', qkey(h[3], 'ready'), h[5])
  restatus(id, h[3], 'running', status, h[4])
  place(id, h[3], status, h[6], h[7], h[5], h[8], '', now)
  return true
end
