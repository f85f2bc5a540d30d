-- Finish held tasks. ARGV: prefix, now, then per ack: id, worker, status, ran ('1' or '0').
-- Returns 1 or 0 per ack.
local now = ARGV[2]
local out = {}
for i = 3, #ARGV, 4 do
  out[#out + 1] = ack_task(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], now) and 1 or 0
end
return out
