-- Lease up to `limit` claimable tasks: promote due delayed tasks and expired leases to
-- the ready sets, then take the best `limit` across the queues.
-- ARGV: prefix, now, lease_until, worker, limit, nqueues, queues..., [strict]
-- With strict = '1' the queues are taken in the order given (queue_order="strict"): each
-- queue's best in turn, until `limit` are found; queues after that are not looked at.
-- Returns per task: id, data, attempts, due, lost runs.
-- With now = '' the server's clock gives now and lease_until is now + ARGV[3] (a lease
-- length in microseconds); the reply then starts with now and lease_until. A worker uses
-- this to claim in the same pipeline as its blocking wait, when the client cannot know
-- the time the wait will end.
local now, lease, worker = ARGV[2], ARGV[3], ARGV[4]
local limit, nq = tonumber(ARGV[5]), tonumber(ARGV[6])
local strict = ARGV[7 + nq] == '1'
local PROMOTE = 1000
local cands = {}
local out = {}
if now == '' then
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now = string.format('%.0f', us)
  lease = string.format('%.0f', us + tonumber(ARGV[3]))
  out[1], out[2] = now, lease
end
-- Move the queue's due delayed tasks and expired leases into its ready set.
local function promote(q)
  local ready = qkey(q, 'ready')
  for _, part in ipairs({'delayed', 'leases'}) do
    local src = qkey(q, part)
    local ids = redis.call('ZRANGEBYSCORE', src, '-inf', now, 'LIMIT', 0, PROMOTE)
    if #ids > 0 then
      for _, id in ipairs(ids) do
        local h = redis.call('HMGET', tkey(id), 'm', 'p')
        if h[1] then redis.call('ZADD', ready, -(tonumber(h[2]) or 0), member_in(h[1], id)) end
      end
      redis.call('ZREM', src, unpack(ids))
    end
  end
end
-- Lease the task of a ready-set member of queue q, appending it to out; its id, or nil
-- for a stale member (its task is gone or has moved on).
local function take(member, q)
  local id = string.sub(member, ID_AT)
  local h = redis.call('HMGET', tkey(id), 's', 'seq', 'due', 'm', 'lr', unpack(DATA))
  h[4] = member_in(h[4], id)
  if h[4] ~= member then  -- stored before members shrank: {sortdue:016}{seq:016}{id}
    id = string.sub(member, 33)
    h = redis.call('HMGET', tkey(id), 's', 'seq', 'due', 'm', 'lr', unpack(DATA))
    h[4] = member_in(h[4], id)
  end
  h[2] = seq_in(h[2], h[4])
  local k = tkey(id)
  redis.call('ZREM', qkey(q, 'ready'), member)
  if h[4] ~= member then return nil end
  local attempts = redis.call('HINCRBY', k, 'a', 1)
  local lost = h[5] or 0
  if h[1] == 'running' then  -- its lease ran out: the run before was lost
    lost = redis.call('HINCRBY', k, 'lr', 1)
  end
  redis.call('HSET', k, 's', 'running', 'w', worker, 'l', lease, 'u', now)
  restatus(id, q, h[1], 'running', h[2])
  redis.call('ZADD', qkey(q, 'leases'), lease, id)
  out[#out + 1] = id
  out[#out + 1] = joined(h, 6)
  out[#out + 1] = attempts
  out[#out + 1] = h[3] or ''
  out[#out + 1] = lost
  return id
end
-- Everything claimable is being taken: wake-up tokens left for these queues are stale.
local function drop_wake_tokens()
  for i = 1, nq do
    local wake_key = qkey(ARGV[6 + i], 'wake')
    if redis.call('LLEN', wake_key) > 0 then redis.call('DEL', wake_key) end
  end
end
-- The claim under limits (omniq._limits; stored in the `limits` hash: key -> 'rate|per|cap'
-- with `q:{queue}` and `t:{task name}` keys). Walks each queue's ready set in claim order
-- (a page at a time, at most SCAN members per queue), skipping queues and task names a
-- limit holds back, and takes a task only when no limit of its queue or its name (the
-- hash's `ln` field) is full: at most `rate` starts in any `per` window (a sliding log,
-- `ls:{key}`, of start times), at most `cap` running with a live lease (a queue's leases
-- set; a name's `lr:{name}` set of ids, counted from their hashes). When limits held tasks
-- back, the reply ends with one more item: 'H' and the time (microseconds) the first rate
-- window frees, or 'H' alone when only caps held them.
local SCAN = 2000
local function claim_limited(limits)
  local specs = {}
  for j = 1, #limits, 2 do
    local rate, per, cap = string.match(limits[j + 1], '^(%d*)|([^|]*)|(%d*)$')
    specs[limits[j]] = {
      rate = tonumber(rate), per = math.floor(tonumber(per) * 1000000 + 0.5), cap = tonumber(cap),
    }
  end
  local t = tonumber(now)
  local windows, blocked, open = {}, {}, {}
  local held, free_at = false, nil
  local function window(key)
    local w = windows[key]
    if w then return w end
    local spec = specs[key]
    w = {spec = spec, count = 0, taken = 0, running = 0}
    if spec.rate then
      w.log = P .. 'ls:' .. key
      redis.call('ZREMRANGEBYSCORE', w.log, '-inf', string.format('%.0f', t - spec.per))
      w.count = redis.call('ZCARD', w.log)
    end
    if spec.cap then
      local kind, name = string.sub(key, 1, 1), string.sub(key, 3)
      if kind == 'q' then
        w.running = redis.call('ZCOUNT', qkey(name, 'leases'), '(' .. now, '+inf')
      else
        w.set = P .. 'lr:' .. name
        for _, id in ipairs(redis.call('SMEMBERS', w.set)) do
          local h = redis.call('HMGET', tkey(id), 's', 'l')
          if h[1] ~= 'running' then
            redis.call('SREM', w.set, id)
          elseif tonumber(h[2]) > t then
            w.running = w.running + 1
          end
        end
      end
    end
    windows[key] = w
    return w
  end
  -- Whether one more start breaks w's limit, and when its rate window frees (nil: a cap).
  local function full(w)
    local spec, n = w.spec, w.count + w.taken
    if spec.rate and n >= spec.rate then
      -- The (n - rate)th oldest start (0-based; this claim's own are the newest) must
      -- leave the window first.
      local at = t
      if n - spec.rate < w.count then
        at = tonumber(redis.call('ZRANGE', w.log, n - spec.rate, n - spec.rate, 'WITHSCORES')[2])
      end
      return true, at + spec.per
    end
    if spec.cap and w.running >= spec.cap then return true, nil end
    return false, nil
  end
  for i = 1, nq do
    promote(ARGV[6 + i])
    open[ARGV[6 + i]] = true
  end
  local picked = {}
  local page = math.max(limit * 4, 64)
  local offset = 0
  while #picked < limit and offset < SCAN do
    local found, more = {}, false
    for i = 1, nq do
      local q = ARGV[6 + i]
      if open[q] then
        local top = redis.call('ZRANGE', qkey(q, 'ready'), offset, offset + page - 1, 'WITHSCORES')
        if #top == 2 * page then more = true end
        for j = 1, #top, 2 do
          found[#found + 1] = {strict and i or 0, tonumber(top[j + 1]), top[j], q}
        end
      end
    end
    table.sort(found, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      if a[2] ~= b[2] then return a[2] < b[2] end
      return a[3] < b[3]
    end)
    for _, c in ipairs(found) do
      if #picked >= limit then break end
      local member, q = c[3], c[4]
      if open[q] then
        local id = string.sub(member, ID_AT)
        local h = redis.call('HMGET', tkey(id), 'm', 'ln')
        local name = member_in(h[1], id) == member and h[2] or nil
        if not (name and blocked['t:' .. name]) then
          local keys = {}
          if specs['q:' .. q] then keys[#keys + 1] = 'q:' .. q end
          if name and specs['t:' .. name] then keys[#keys + 1] = 't:' .. name end
          local ok = true
          for _, key in ipairs(keys) do
            local is_full, at = full(window(key))
            if is_full then
              ok, held, blocked[key] = false, true, true
              if at and (free_at == nil or at < free_at) then free_at = at end
            end
          end
          if ok then
            for _, key in ipairs(keys) do
              local w = windows[key]
              w.taken, w.running = w.taken + 1, w.running + 1
            end
            picked[#picked + 1] = {member, q, keys}
          elseif blocked['q:' .. q] then
            open[q] = false
          end
        end
      end
    end
    if not more then break end
    offset = offset + page
  end
  if #picked < limit then drop_wake_tokens() end
  for _, p in ipairs(picked) do
    local id = take(p[1], p[2])
    if id then
      for _, key in ipairs(p[3]) do
        local w = windows[key]
        if w.log then
          redis.call('ZADD', w.log, now, now .. ':' .. id)
          redis.call('PEXPIRE', w.log, math.floor(w.spec.per / 1000) + 1000)
        end
        if w.set then redis.call('SADD', w.set, id) end
      end
    end
  end
  if held then out[#out + 1] = 'H' .. (free_at and string.format('%.0f', free_at) or '') end
  return out
end
-- Limits stored (omniq._limits): the claim under them.
local limits = redis.call('HGETALL', P .. 'limits')
if #limits > 0 then
  return claim_limited(limits)
end
for i = 1, nq do
  local q = ARGV[6 + i]
  promote(q)
  local ready = qkey(q, 'ready')
  local top = redis.call('ZRANGE', ready, 0, limit - 1, 'WITHSCORES')
  for j = 1, #top, 2 do
    cands[#cands + 1] = {tonumber(top[j + 1]), top[j], q}
  end
  -- Strict: a ready set is already in claim order, and the batch is full (the queues
  -- left are promoted by the claim that reaches them).
  if strict and #cands >= limit then break end
end
if nq > 1 and not strict then
  table.sort(cands, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
if #cands < limit then drop_wake_tokens() end
for j = 1, math.min(limit, #cands) do
  take(cands[j][2], cands[j][3])
end
return out
