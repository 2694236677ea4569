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

-- Appends an event to the auction's stream (entry id <seq>-0, trimmed to about `window`
-- entries: older history is served from PostgreSQL) and queues it on its flush stream.
local function append_event(stream, flush, seq, event, auction, window)
  redis.call('XADD', stream, 'MAXLEN', '~', window, int(seq) .. '-0', 'e', event)
  redis.call('XADD', flush, '*', 'a', auction, 'e', event)
end

local function effective_end(ends_at, ext_end)
  if ext_end and ext_end > ends_at then return ext_end end
  return ends_at
end
