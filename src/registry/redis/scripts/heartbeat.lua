-- One heartbeat chunk of node ARGV[1]: keeps its liveness key KEYS[1] alive for ARGV[2] ms,
-- lists it in the set of nodes KEYS[2], refreshes the leases of the user keys KEYS[4..]
-- (the name of KEYS[i] is ARGV[i]), re-asserts those that vanished (Redis restarted, or
-- the lease ran out while unreachable) and reports those another node took meanwhile.
-- The node's user set KEYS[3] follows; ARGV[3] == '1' rebuilds it first.
-- Returns {lost, reasserted}.
local node, lease, set = ARGV[1], ARGV[2], KEYS[3]
redis.call('SET', KEYS[1], '1', 'PX', lease)
redis.call('SADD', KEYS[2], node)
if ARGV[3] == '1' then redis.call('DEL', set) end
local lost, reasserted = {}, {}
for i = 4, #KEYS do
  local key, name = KEYS[i], ARGV[i]
  local owner = redis.call('GET', key)
  if owner == node then
    redis.call('PEXPIRE', key, lease)
    redis.call('SADD', set, name)
  elseif owner then
    lost[#lost + 1] = name
    redis.call('SREM', set, name)
  else
    redis.call('SET', key, node, 'PX', lease)
    redis.call('SADD', set, name)
    reasserted[#reasserted + 1] = name
  end
end
if redis.call('EXISTS', set) == 1 then redis.call('PEXPIRE', set, lease) end
return {lost, reasserted}
