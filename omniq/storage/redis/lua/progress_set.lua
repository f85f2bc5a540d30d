-- Store tasks' progress, each in its own key (``pg:{id}``: the task's hash, which claims
-- and acks rewrite, stays as it was), never for a task that is gone; delete_finished
-- deletes it with its task. ARGV: prefix, then task id and encoded progress pairs.
-- Returns how many were stored.
local stored = 0
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('EXISTS', tkey(id)) == 1 then
    redis.call('SET', P .. 'pg:' .. id, ARGV[i + 1])
    stored = stored + 1
  end
end
return stored
