-- K2 dedup shared by several writers: message ids claimed for a batch, run inside Redis
-- so that two writers holding the same id cannot both claim it.
--
-- KEYS     one key per message id
-- ARGV[1]  'claim', 'keep' or 'release'
-- ARGV[2]  this batch's token (writer source | batch name)
-- ARGV[3]  milliseconds: the claim's lease ('claim') or the dedup window ('keep');
--          unused by 'release'
-- ARGV[3+i] ('claim') a token this claim may replace on KEYS[i] ('' for none): a batch
--          of the same writer that never committed
-- returns  'claim': per key '' when the id is now this token's, else the token holding it;
--          'keep': how many of the keys this token held (their expiry is now the window)
--          'release': how many of the keys this token held (now deleted)
local mode, token, ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
if mode == 'release' then
  local released = 0
  for _, k in ipairs(KEYS) do
    if redis.call('GET', k) == token then
      redis.call('DEL', k)
      released = released + 1
    end
  end
  return released
end
if mode == 'keep' then
  local kept = 0
  for _, k in ipairs(KEYS) do
    if redis.call('GET', k) == token then
      redis.call('PEXPIRE', k, ms)
      kept = kept + 1
    end
  end
  return kept
end
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v or v == token or (ARGV[3 + i] ~= '' and v == ARGV[3 + i]) then
    redis.call('SET', k, token, 'PX', ms)
    out[i] = ''
  else
    out[i] = v
  end
end
return out
