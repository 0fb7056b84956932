-- Users on the live nodes listed in the set KEYS[1], other than node ARGV[3]; forgets
-- nodes that are gone. Keys of node N as in roster.lua: ARGV[1] .. N and
-- ARGV[1] .. N .. ARGV[2].
local nodes, node_key, users_suffix, me = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local total = 0
for _, id in ipairs(redis.call('SMEMBERS', nodes)) do
  if id ~= me then
    if redis.call('EXISTS', node_key .. id) == 1 then
      total = total + redis.call('SCARD', node_key .. id .. users_suffix)
    else
      redis.call('SREM', nodes, id)
    end
  end
end
return total
