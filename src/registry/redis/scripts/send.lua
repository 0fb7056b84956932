-- A cross-node send in one round trip. KEYS[1] is the target's user key, ARGV[1] the
-- prefix of node channels, ARGV[2] the prefix of node liveness keys (the owner's id is
-- only known in here), ARGV[3] the payload. Returns {0} not online, {1, owner} published
-- to the owner's node, {2, owner} the owner's node is alive but not subscribed right now.
local owner = redis.call('GET', KEYS[1])
if not owner then return {0} end
if redis.call('PUBLISH', ARGV[1] .. owner, ARGV[3]) > 0 then return {1, owner} end
if redis.call('EXISTS', ARGV[2] .. owner) == 1 then return {2, owner} end
return {0}
