-- Store results. ARGV: prefix, now (µs), then per result: id, encoded result, expiry
-- (µs, or '' for none), token lifetime (ms). One script call per batch instead of five
-- commands per result. A result already past its expiry is not stored, but indexed, so
-- the next delete_expired still counts it. A short-lived token per result wakes
-- get_result waiters blocked on it.
local now = tonumber(ARGV[2])
local index = P .. 'results:exp'
for i = 3, #ARGV, 4 do
  local id, data, expires, token_ms = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local key, token = P .. 'r:' .. id, P .. 'rw:' .. id
  local stored = true
  if expires == '' then
    redis.call('SET', key, data)
    redis.call('ZREM', index, id)
  else
    local ttl_ms = math.floor((tonumber(expires) - now) / 1000)
    if ttl_ms <= 0 then
      redis.call('DEL', key)
      stored = false
    else
      redis.call('SET', key, data, 'PX', ttl_ms)
      if ttl_ms < token_ms then token_ms = ttl_ms end
    end
    redis.call('ZADD', index, expires, id)
  end
  if stored then
    redis.call('RPUSH', token, 1)
    redis.call('LTRIM', token, 0, 0)
    redis.call('PEXPIRE', token, token_ms)
  end
end
return #ARGV
