-- A resume on node ARGV[1] of the name ARGV[5], held for a resume (KEYS[2] holds the id of
-- its latest token) by any node or by none (its node died): with the latest id, ARGV[3],
-- the user key KEYS[1] becomes this node's (lease ARGV[2] ms), the resume key holds the
-- new token's id ARGV[4] (for ARGV[6] ms) and the name joins this node's user set KEYS[3].
-- Returns {1, previous owner or ""} taken over, {0} nothing held, {-1} not the latest id.
local held = redis.call('GET', KEYS[2])
if not held then return {0} end
if held ~= ARGV[3] then return {-1} end
local owner = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[6])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {1, owner}
