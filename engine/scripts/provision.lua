-- Provision or update one auction's settings; never touches its bids.
-- KEYS: state hash.
-- ARGV: title, currency, start_price, reserve, tiers, starts_at, ends_at, window,
--       extension, rate, burst ('' for an absent optional value), epoch (for a new state).
-- Returns {'created'|'updated'|'unchanged'|'closed'|'pricing_frozen'}.
local config = {'title', 'currency', 'start_price', 'reserve', 'tiers', 'starts_at',
                'ends_at', 'window', 'extension', 'rate', 'burst'}
local pricing = {start_price = true, reserve = true, tiers = true}

if redis.call('EXISTS', KEYS[1]) == 0 then
  local fields = {}
  for i, name in ipairs(config) do
    fields[#fields + 1] = name
    fields[#fields + 1] = ARGV[i]
  end
  local reserve_met = '0'
  if ARGV[4] == '' then reserve_met = '1' end
  redis.call('HSET', KEYS[1], 'price', '0', 'leader', '', 'leader_name', '', 'ceiling', '0',
    'leader_since', '', 'bid_count', '0', 'seq', '0', 'ext_end', '', 'reserve_met', reserve_met,
    'closed', '0', 'epoch', ARGV[12], 'halted', '', unpack(fields))
  return {'created'}
end

local current = redis.call('HMGET', KEYS[1], 'closed', 'bid_count', unpack(config))
if current[1] == '1' then return {'closed'} end
local has_bids = tonumber(current[2]) > 0
local changed = {}
for i, name in ipairs(config) do
  if current[i + 2] ~= ARGV[i] then
    if has_bids and pricing[name] then return {'pricing_frozen'} end
    changed[#changed + 1] = name
    changed[#changed + 1] = ARGV[i]
  end
end
if #changed == 0 then return {'unchanged'} end
if not has_bids then
  changed[#changed + 1] = 'reserve_met'
  if ARGV[4] == '' then changed[#changed + 1] = '1' else changed[#changed + 1] = '0' end
end
redis.call('HSET', KEYS[1], unpack(changed))
return {'updated'}
