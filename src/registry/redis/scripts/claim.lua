-- Claims the user key KEYS[1] for node ARGV[1] unless another node holds it, and adds the
-- name ARGV[3] to the node's user set KEYS[2]; both live for ARGV[2] ms. A key held by this
-- very node is stale (the caller checked the name is not in use there: it is left over
-- from a release that could not reach Redis) and is taken over. Returns 1 if claimed.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
