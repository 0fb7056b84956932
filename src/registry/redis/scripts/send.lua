-- Cross-node sends, a batch of them in one round trip. KEYS[i] is the user key of the
-- target of the payload ARGV[i + 2]; ARGV[1] is the prefix of node channels, ARGV[2] the
-- prefix of node liveness keys (an owner's id is only known in here). The payloads for one
-- node go in one PUBLISH: alone as they are, several in a batch envelope ("b1\n", then
-- "<byte length>\n<payload>" for each, in order; see outbox.rs). Returns one reply per
-- send, in order: {0} not online, {1, owner} published to the owner's node, {2, owner} the
-- owner's node is alive but not subscribed right now.
local inbox, alive = ARGV[1], ARGV[2]
local owners, groups, order = {}, {}, {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  owners[i] = owner
  if owner then
    local group = groups[owner]
    if not group then
      group = {}
      groups[owner] = group
      order[#order + 1] = owner
    end
    group[#group + 1] = i
  end
end
local listening = {}
for _, owner in ipairs(order) do
  local group = groups[owner]
  local message
  if #group == 1 then
    message = ARGV[group[1] + 2]
  else
    local parts = {'b1\n'}
    for _, i in ipairs(group) do
      local payload = ARGV[i + 2]
      parts[#parts + 1] = #payload .. '\n'
      parts[#parts + 1] = payload
    end
    message = table.concat(parts)
  end
  if redis.call('PUBLISH', inbox .. owner, message) > 0 then
    listening[owner] = 1
  elseif redis.call('EXISTS', alive .. owner) == 1 then
    listening[owner] = 2
  else
    listening[owner] = 0
  end
end
local out = {}
for i = 1, #KEYS do
  local owner = owners[i]
  local state = owner and listening[owner] or 0
  if state == 0 then out[i] = {0} else out[i] = {state, owner} end
end
return out
