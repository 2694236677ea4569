-- Close an auction: at or after its effective end, or at once when cancelling.
-- Idempotent: a closed auction returns its stored result.
-- KEYS: state hash, event stream, flush stream.
-- ARGV: 'end' | 'cancel', channel, clock override, auction id, replay window, changes channel.
-- Returns {'closed', result-json}, {'not_ended', effective_end}, {'halted'} or {'unknown'}.
local f = redis.call('HMGET', KEYS[1], 'closed', 'result', 'ends_at', 'ext_end', 'price',
  'leader', 'leader_name', 'reserve_met', 'bid_count', 'seq', 'epoch', 'halted')
if not f[1] then return {'unknown'} end
if f[1] == '1' then return {'closed', f[2]} end
-- A halted auction is restored from PostgreSQL before anything else happens to it.
if f[12] and f[12] ~= '' then return {'halted'} end

local now = now_ms(ARGV[3])
local cancel = ARGV[1] == 'cancel'
local ends = effective_end(tonumber(f[3]), num(f[4]))
if not cancel and now < ends then return {'not_ended', int(ends)} end

local has_leader = f[6] ~= ''
local reserve_met = f[8] == '1'
local sold = has_leader and reserve_met and not cancel
local winner, winner_name, final_price = nil, nil, 'null'
if sold then winner, winner_name = f[6], f[7] end
if has_leader then final_price = f[5] end
local seq = tonumber(f[10]) + 1

local result = '{"kind":"closed","seq":' .. int(seq) .. ',"epoch":' .. int(tonumber(f[11]) or 1)
  .. ',"winner":' .. json_str(winner)
  .. ',"winner_name":' .. json_str(winner_name) .. ',"final_price":' .. final_price
  .. ',"reserve_met":' .. json_bool(reserve_met) .. ',"bid_count":' .. f[9]
  .. ',"closed_at":' .. int(now) .. ',"cancelled":' .. json_bool(cancel) .. '}'
append_event(KEYS[2], KEYS[3], seq, result, ARGV[4], ARGV[5])
redis.call('HSET', KEYS[1], 'closed', '1', 'result', result, 'seq', int(seq))
announce(ARGV[2], ARGV[6], ARGV[4], result)
return {'closed', result}
