-- Finish held tasks with their results and events, atomically: a task whose worker no
-- longer holds it (cancelled, or taken over after its lease ran out) keeps the outcome
-- that won, and none of this call's result or events.
-- ARGV: prefix, now, token lifetime (ms), log events ('1' or '0'), then per task: id,
-- worker, status, ran ('1'/'0'), encoded result, result expiry (µs or ''), event count,
-- event items...
-- Returns 1 or 0 per task.
local now, token_ms, log = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local now_n = tonumber(now)
local out = {}
local i = 5
while i <= #ARGV do
  local id = ARGV[i]
  local count = tonumber(ARGV[i + 6])
  if ack_task(id, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], now) then
    store_result(id, ARGV[i + 4], ARGV[i + 5], token_ms, now_n)
    if log and count > 0 then
      append_events(id, {unpack(ARGV, i + 7, i + 6 + count)})
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  i = i + 7 + count
end
return out
