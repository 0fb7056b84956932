-- Up to ARGV[3] names from the user sets of the live nodes listed in the set KEYS[1];
-- forgets nodes that are gone. Node N's liveness key is ARGV[1] .. N, its user set
-- ARGV[1] .. N .. ARGV[2] (node ids are only known in here).
local nodes, node_key, users_suffix = KEYS[1], ARGV[1], ARGV[2]
local want = tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', nodes)) do
  if redis.call('EXISTS', node_key .. id) == 0 then
    redis.call('SREM', nodes, id)
  elseif #out < want then
    for _, n in ipairs(redis.call('SRANDMEMBER', node_key .. id .. users_suffix, want - #out)) do
      out[#out + 1] = n
    end
  end
end
return out
