-- Place one bid: validation, open-by-time check, per-bidder token bucket, proxy
-- resolution (README § Bidding rules), seq increment, stream append and live SPUBLISH, atomically.
-- A leader's raise of its own ceiling that changes no public fact is private: no seq, no
-- stream entry, no SPUBLISH, only a 'ceiling_raised' entry on the flush stream.
-- KEYS: state hash, ceilings hash, rate-limit hash, event stream, flush stream.
-- ARGV: bidder id, display name, amount, max ('' when absent), channel, clock override,
--       auction id, replay window (entries kept in the event stream), changes channel.
-- Returns {'accepted', event-json} or {'rejected', code, min_next, retry_after_ms}.
local bidder, name = ARGV[1], ARGV[2]

local function reject(code, min_next, retry)
  local m, r = '', ''
  if min_next then m = int(min_next) end
  if retry then r = int(retry) end
  return {'rejected', code, m, r}
end

local function parse_amount(s)
  if s == '' then return nil, true end
  if #s > 16 or not string.match(s, '^[1-9]%d*$') then return nil, false end
  local n = tonumber(s)
  if n > MAX_AMOUNT then return nil, false end
  return n, true
end

local amount, amount_ok = parse_amount(ARGV[3])
local max, max_ok = parse_amount(ARGV[4])
if not amount_ok or not max_ok or (amount == nil and max == nil)
    or (amount and max and max < amount) then
  return reject('INVALID_AMOUNT')
end

local f = redis.call('HMGET', KEYS[1], 'start_price', 'reserve', 'tiers', 'starts_at',
  'ends_at', 'window', 'extension', 'rate', 'burst', 'price', 'leader', 'leader_name',
  'ceiling', 'bid_count', 'seq', 'ext_end', 'closed', 'epoch', 'halted')
if not f[1] then return reject('UNKNOWN_AUCTION') end
-- A conflict with PostgreSQL's record stopped the auction until it is restored from there.
if f[19] and f[19] ~= '' then return reject('UNAVAILABLE', nil, 1000) end
local epoch = tonumber(f[18]) or 1
local start_price, reserve, tiers = tonumber(f[1]), num(f[2]), f[3]
local starts_at, ends_at = num(f[4]), tonumber(f[5])
local window, extension, rate, burst = num(f[6]), num(f[7]), num(f[8]), num(f[9])
local price, leader, leader_name, ceiling = tonumber(f[10]), f[11], f[12], tonumber(f[13])
local bid_count, seq, ext_end = tonumber(f[14]), tonumber(f[15]), num(f[16])

-- Rule 1: open by server time.
local now = now_ms(ARGV[6])
local before = effective_end(ends_at, ext_end)
if f[17] == '1' or now >= before then return reject('AUCTION_CLOSED') end
if starts_at and now < starts_at then return reject('AUCTION_NOT_OPEN') end

-- Token bucket in thousandths of a token: "tokens:at".
if rate then
  local cap = burst * 1000
  local tokens, at = cap, now
  local stored = redis.call('HGET', KEYS[3], bidder)
  if stored then
    local t, a = string.match(stored, '^(%d+):(%d+)$')
    tokens, at = tonumber(t), tonumber(a)
  end
  local elapsed = now - at
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(cap, tokens + elapsed * rate)
  if tokens < 1000 then
    return reject('RATE_LIMITED', nil, math.floor((1000 - tokens + rate - 1) / rate))
  end
  redis.call('HSET', KEYS[3], bidder, int(tokens - 1000) .. ':' .. int(math.max(now, at)))
end

-- Rules 2-4: proxy resolution.
local has_leader = leader ~= ''
local min = start_price
if has_leader then min = price + step_at(tiers, price) end
local outcome, displaced = 'leading', nil
local fields = {}
local a, m
local reserve_met = reserve == nil or price >= reserve

-- One bid event as JSON: the public facts after the bid plus the private `max`/`ceiling`.
local function bid_event(kind, after, extended)
  return '{"kind":"' .. kind .. '","seq":' .. int(seq) .. ',"epoch":' .. int(epoch)
    .. ',"at":' .. int(now) .. ',"bidder":' .. cjson.encode(bidder) .. ',"name":' .. cjson.encode(name)
    .. ',"amount":' .. int(a) .. ',"max":' .. int(m) .. ',"outcome":"' .. outcome .. '"'
    .. ',"price":' .. int(price) .. ',"min_next":' .. int(price + step_at(tiers, price))
    .. ',"leader":' .. cjson.encode(leader) .. ',"leader_name":' .. cjson.encode(leader_name)
    .. ',"bid_count":' .. int(bid_count) .. ',"ends_at":' .. int(after)
    .. ',"extended":' .. json_bool(extended) .. ',"displaced":' .. json_str(displaced)
    .. ',"reserve_met":' .. json_bool(reserve_met) .. ',"ceiling":' .. int(ceiling) .. '}'
end

if has_leader and leader == bidder then
  -- The leader's bid can only raise its own ceiling, and must (else it changes nothing).
  m = max or amount
  if m <= ceiling then return reject('ALREADY_LEADING') end
  ceiling = m
  if reserve and m >= reserve and reserve > price then
    a = reserve
  else
    -- Nothing public changes: no seq, no count, no extension, nothing published; the raise
    -- is recorded privately through the flush stream only.
    a, outcome = price, 'ceiling_raised'
    local event = bid_event('ceiling_raised', before, false)
    redis.call('HSET', KEYS[1], 'ceiling', int(ceiling))
    redis.call('HSET', KEYS[2], bidder, int(ceiling))
    queue_flush(KEYS[5], ARGV[7], event)
    return {'accepted', event}
  end
else
  a = amount or min
  m = max or a
  if a < min or m < a then return reject('BID_TOO_LOW', min) end
  if not has_leader then
    price = a
    leader, leader_name, ceiling = bidder, name, m
    fields = {'leader_since', int(now)}
  elseif m > ceiling then
    price = math.max(a, math.min(m, ceiling + step_at(tiers, ceiling)))
    displaced = leader
    leader, leader_name, ceiling = bidder, name, m
    fields = {'leader_since', int(now)}
  else
    price = math.max(price, math.min(ceiling, m + step_at(tiers, m)))
    outcome = 'outbid'
  end
end

-- Rule 6: reserve.
if reserve and ceiling >= reserve and reserve > price then price = reserve end
reserve_met = reserve == nil or price >= reserve

-- Rules 5 and 7: sequence and soft close.
seq = seq + 1
bid_count = bid_count + 1
if window and now >= before - window then ext_end = math.max(before, now + extension) end
local after = effective_end(ends_at, ext_end)
local ext_field = ''
if ext_end then ext_field = int(ext_end) end
local met_field = '0'
if reserve_met then met_field = '1' end

local event = bid_event('bid', after, after > before)
append_event(KEYS[4], KEYS[5], seq, event, ARGV[7], ARGV[8])
redis.call('HSET', KEYS[1], 'price', int(price), 'leader', leader, 'leader_name', leader_name,
  'ceiling', int(ceiling), 'bid_count', int(bid_count), 'seq', int(seq), 'ext_end', ext_field,
  'reserve_met', met_field, unpack(fields))
local own = m
if leader == bidder then own = ceiling end
redis.call('HSET', KEYS[2], bidder, int(own))

announce(ARGV[5], ARGV[9], ARGV[7], event)
return {'accepted', event}
