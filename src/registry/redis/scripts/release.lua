-- Frees the user key KEYS[1] if node ARGV[1] still holds it, and drops the name ARGV[2]
-- from the node's user set KEYS[2].
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
