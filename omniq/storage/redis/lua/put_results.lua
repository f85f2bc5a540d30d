-- Store results. ARGV: prefix, now (µs), then per result: id, encoded result, expiry
-- (µs, or '' for none), token lifetime (ms). One script call per batch instead of five
-- commands per result. A result already past its expiry is not stored, but indexed, so
-- the next delete_expired still counts it. A short-lived token per result wakes
-- get_result waiters blocked on it.
local now = tonumber(ARGV[2])
for i = 3, #ARGV, 4 do
  store_result(ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), now)
end
return #ARGV
