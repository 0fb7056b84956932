-- Frees the user key KEYS[1] if node ARGV[1] still holds it, and drops the name ARGV[2]
-- from the node's user set KEYS[2]. The name's resume key KEYS[3] goes with the user key,
-- unless ARGV[3] == '1' (the node is shutting down: the name stays held for a resume on
-- another node).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[3] ~= '1' then redis.call('DEL', KEYS[3]) end
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
