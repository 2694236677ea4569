-- Read an auction's public state plus the viewer's own ceiling and the server time.
-- KEYS: state hash, ceilings hash. ARGV: viewer bidder id (or ''), clock override.
-- Returns a flat field/value list, or an empty list for an unknown auction.
local state = redis.call('HGETALL', KEYS[1])
if #state == 0 then return {} end
for i = #state - 1, 1, -2 do
  if state[i] == 'ceiling' then state[i + 1] = '' end
end
state[#state + 1] = 'now'
state[#state + 1] = int(now_ms(ARGV[2]))
if ARGV[1] ~= '' then
  local own = redis.call('HGET', KEYS[2], ARGV[1])
  if own then
    state[#state + 1] = 'your_max'
    state[#state + 1] = own
  end
end
return state
