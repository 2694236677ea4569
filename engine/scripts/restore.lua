-- Rebuild an auction's live state from PostgreSQL's record, atomically: settings, price,
-- leader, ceilings, seq, soft-close end, result, and a new epoch. Bids are taken again
-- from the moment this returns.
-- KEYS: state hash, ceilings hash, event stream, rate-limit hash.
-- ARGV: mode ('missing': only when no state exists; 'replace': only while the state's
--       epoch is still the given one), that epoch, channel, notice json, changes channel,
--       auction id, n (number of
--       state field/value arguments that follow), the n state arguments, then bidder/ceiling
--       pairs.
-- Returns {'restored'}, {'exists'} (missing mode, state found) or {'changed'} (replace mode,
-- another epoch found).
if ARGV[1] == 'missing' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
else
  if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return {'changed'} end
end
-- The stream and the rate buckets belong to the lost history: replay now comes from
-- PostgreSQL, and buckets start full.
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
local n = tonumber(ARGV[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 8, 7 + n))
local i = 8 + n
while i <= #ARGV do
  local last = math.min(#ARGV, i + 999)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, last))
  i = last + 1
end
announce(ARGV[3], ARGV[5], ARGV[6], ARGV[4])
return {'restored'}
