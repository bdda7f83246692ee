-- K2 sequence tracking of one (exchange, symbol) stream, run inside Redis so that several
-- writers sharing a stream classify its messages atomically. The same state machine as
-- sequence.rs (a differential test holds them equal).
--
-- KEYS[1]  the stream's hash
-- ARGV     window, reset_after_us, restart_max, max_open_gaps, then (seq, at_us) pairs
-- returns  per message: code (0 in_order, 1 gap, 2 late_fill, 3 duplicate,
--          4 session_reset, 5 too_old), gap first, gap last
local key = KEYS[1]
local window = tonumber(ARGV[1])
local reset_after = tonumber(ARGV[2])
local restart_max = tonumber(ARGV[3])
local max_gaps = tonumber(ARGV[4])

local h = redis.call('HGETALL', key)
local s = {}
for i = 1, #h, 2 do s[h[i]] = h[i + 1] end
local function num(f) return tonumber(s[f] or '0') end
local first, nxt, started, last_us = num('first'), num('next'), num('started'), num('last_us')
local st = {}
for _, f in ipairs({'total', 'in_order', 'gaps', 'gap_messages', 'late_fills', 'duplicates',
                    'resets', 'too_old', 'lost'}) do st[f] = num(f) end
-- Open gaps, sorted by first: {{first, last}, ...}
local gaps = {}
if s['ledger'] and s['ledger'] ~= '' then
  for f, l in string.gmatch(s['ledger'], '(%d+):(%d+)') do
    gaps[#gaps + 1] = {tonumber(f), tonumber(l)}
  end
end

local function open_gap(f, l)
  local pos = #gaps + 1
  for i = 1, #gaps do
    if gaps[i][1] > f then pos = i break end
  end
  table.insert(gaps, pos, {f, l})
  while #gaps > max_gaps do
    local g = table.remove(gaps, 1)
    st.lost = st.lost + g[2] - g[1] + 1
  end
end

local function fill(seq)
  for i = #gaps, 1, -1 do
    local f, l = gaps[i][1], gaps[i][2]
    if f <= seq then
      if l < seq then return false end
      table.remove(gaps, i)
      if seq < l then table.insert(gaps, i, {seq + 1, l}) end
      if f < seq then table.insert(gaps, i, {f, seq - 1}) end
      return true
    end
  end
  return false
end

local function restart(seq)
  started = 1
  first = seq
  nxt = seq + 1
end

local function reset(seq, at)
  for _, g in ipairs(gaps) do st.lost = st.lost + g[2] - g[1] + 1 end
  gaps = {}
  restart(seq)
  last_us = at
  st.resets = st.resets + 1
  return 4
end

local out = {}
for i = 5, #ARGV, 2 do
  local seq, at = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local code, gf, gl = 0, 0, 0
  st.total = st.total + 1
  local paused = started == 1 and (at - last_us) >= reset_after
  if at > last_us then last_us = at end
  if started == 0 then
    restart(seq)
    st.in_order = st.in_order + 1
  elseif seq == nxt then
    nxt = nxt + 1
    st.in_order = st.in_order + 1
  elseif seq > nxt then
    gf, gl = nxt, seq - 1
    open_gap(gf, gl)
    nxt = seq + 1
    st.gaps = st.gaps + 1
    st.gap_messages = st.gap_messages + (gl - gf + 1)
    code = 1
  elseif paused then
    code = reset(seq, at)
  elseif fill(seq) then
    st.late_fills = st.late_fills + 1
    code = 2
  elseif nxt - 1 - seq > window then
    if seq <= restart_max then
      code = reset(seq, at)
    else
      st.too_old = st.too_old + 1
      code = 5
    end
  elseif seq < first then
    if seq + 1 < first then open_gap(seq + 1, first - 1) end
    first = seq
    st.late_fills = st.late_fills + 1
    code = 2
  else
    st.duplicates = st.duplicates + 1
    code = 3
  end
  out[#out + 1] = code
  out[#out + 1] = gf
  out[#out + 1] = gl
end

local ledger = {}
for _, g in ipairs(gaps) do ledger[#ledger + 1] = string.format('%d:%d', g[1], g[2]) end
-- Numbers go to Redis as text written with %d: Lua's default formatting would round
-- microsecond times and large sequences.
local fields = {'first', first, 'next', nxt, 'started', started, 'last_us', last_us}
for _, f in ipairs({'total', 'in_order', 'gaps', 'gap_messages', 'late_fills', 'duplicates',
                    'resets', 'too_old', 'lost'}) do
  fields[#fields + 1] = f
  fields[#fields + 1] = st[f]
end
for i = 2, #fields, 2 do fields[i] = string.format('%d', fields[i]) end
fields[#fields + 1] = 'ledger'
fields[#fields + 1] = table.concat(ledger, ',')
redis.call('HSET', key, unpack(fields))
return out
