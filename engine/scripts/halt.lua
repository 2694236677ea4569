-- Stop an auction from taking bids until it is restored from PostgreSQL: its live state
-- contradicts the durable record. Only the epoch the evidence came from is halted, so a
-- stale conflict found after a restore halts nothing.
-- KEYS: state hash. ARGV: epoch, reason, changes channel (the operator restores it at once),
-- auction id.
-- Returns 1 when halted, 0 otherwise.
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'halted', ARGV[2])
redis.call('SPUBLISH', ARGV[3], ARGV[4])
return 1
