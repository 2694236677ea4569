-- Shared helpers, prepended to every Gavel script. Numbers are always written with
-- string.format('%d') because Lua's default conversion keeps only 14 significant digits.
local MAX_AMOUNT = 1000000000000000

local function int(n) return string.format('%d', n) end

local function num(v)
  if v == false or v == nil or v == '' then return nil end
  return tonumber(v)
end

-- Redis server time in ms, unless the caller pinned the clock (deterministic tests).
local function now_ms(override)
  if override ~= nil and override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function json_str(s) if s == nil then return 'null' end return cjson.encode(s) end
local function json_bool(b) if b then return 'true' else return 'false' end end

-- inc(p): the step of the tier containing p; tiers are "from:step,from:step" ascending.
local function step_at(tiers, p)
  local step = nil
  for from, s in string.gmatch(tiers, '(%d+):(%d+)') do
    if step == nil or tonumber(from) <= p then step = tonumber(s) else break end
  end
  return step
end

-- The Redis time of a stream entry (field t), nil for entries written without one.
local function entry_time(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 't' then return tonumber(fields[i + 1]) end
  end
  return nil
end

-- Queues an event (or a leader's private raise) for PostgreSQL on the shard's flush stream,
-- in the auction's slot. Queuing on an empty stream wakes idle flushers on the shard channel
-- named like the stream (edge-triggered: a stream that has entries has a busy flusher, or
-- one that polls it within a second).
local function queue_flush(flush, auction, event)
  if redis.call('XLEN', flush) == 0 then redis.call('SPUBLISH', flush, '1') end
  redis.call('XADD', flush, '*', 'a', auction, 'e', event)
end

-- Sends a message live to the auction's watchers (its shard channel) and the auction's id
-- to the operator (its shard's changes channel): sharded pub/sub, so on a cluster only the
-- auction's node carries them.
local function announce(channel, changes, auction, message)
  redis.call('SPUBLISH', channel, message)
  redis.call('SPUBLISH', changes, auction)
end

-- Appends an event to the auction's stream (entry id <seq>-0, field t its Redis time) and
-- queues it on its flush stream. The stream is the replay window, `window` = "count:age"
-- (or just count): about `count` entries, none older than `age` ms (0: no age limit).
-- Older history is served from PostgreSQL (the flush stream, not this one, is what
-- PostgreSQL is fed from, so trimming loses nothing). Age trimming happens on appends,
-- at most 100 entries each: the oldest entry is checked, and only when it is too old is a
-- batch read.
local function append_event(stream, flush, seq, event, auction, window)
  local count, age = string.match(window, '^(%d+):(%d+)$')
  if count == nil then count, age = window, '0' end
  local now = now_ms(nil)
  redis.call('XADD', stream, 'MAXLEN', '~', count, int(seq) .. '-0', 'e', event, 't', int(now))
  queue_flush(flush, auction, event)
  age = tonumber(age)
  if age == nil or age <= 0 then return end
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local t = oldest and entry_time(oldest)
  if t == nil or t >= now - age then return end
  local cut = nil
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', 100)) do
    local at = entry_time(entry)
    if at == nil or at >= now - age then break end
    cut = entry[1]
  end
  if cut then
    local last = tonumber(string.match(cut, '^(%d+)-'))
    redis.call('XTRIM', stream, 'MINID', int(last + 1) .. '-0')
  end
end

local function effective_end(ends_at, ext_end)
  if ext_end and ext_end > ends_at then return ext_end end
  return ends_at
end
