-- Remove an auction's live state, only once PostgreSQL holds every one of its events.
-- KEYS: state hash, ceilings hash, rate-limit hash, event stream.
-- ARGV: number of the auction's events PostgreSQL holds (they are seq 1..n).
-- Returns {'removed'} or {'unflushed', count}.
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local flushed = tonumber(ARGV[1])
if seq > flushed then return {'unflushed', int(seq - flushed)} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {'removed'}
