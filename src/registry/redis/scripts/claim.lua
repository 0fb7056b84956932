-- Claims the user key KEYS[1] for node ARGV[1] unless another node holds it, and adds the
-- name ARGV[3] to the node's user set KEYS[2]; both live for ARGV[2] ms. A key held by this
-- very node is stale (the caller checked the name is not in use there: it is left over
-- from a release that could not reach Redis) and is taken over. A name held for a resume
-- (KEYS[3], holding the id of its latest token) is claimed only by that token's id,
-- ARGV[4] (a name the restarted node holds from its table); a plain claim passes "".
-- Returns 1 if claimed, 0 if another node holds it, 2 if it is held for a resume.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
local held = redis.call('GET', KEYS[3])
if held and held ~= ARGV[4] then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
