-- Graceful shutdown of node ARGV[1]: frees the user keys KEYS[4..] it still holds, deletes
-- its liveness key KEYS[1] and user set KEYS[2] and removes it from the set of nodes
-- KEYS[3], so nothing waits for a lease to run out.
for i = 4, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
