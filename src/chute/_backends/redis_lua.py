"""The Lua scripts of the Redis backend: every change is one of them,
atomic on the server (see ``redis.py`` for the keys and why).

Kept as module constants rather than ``.lua`` files in the package: they
share one library prefix (``LIB``), need no package data or
``importlib.resources`` to load, and travel with the module wherever it is
imported from (a zip app, a frozen build). Each script's comment says its
ARGV and what it answers.
"""

from __future__ import annotations

__all__ = ["SCRIPTS"]

LIB = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function pel_count(stream)
  return tonumber(redis.call('XPENDING', stream, 'chute')[1])
end
-- Items waiting: stored, minus those pending, plus those given back.
local function ready(K)
  return redis.call('XLEN', K[1]) - pel_count(K[1]) + redis.call('SCARD', K[5])
end
local function fields(kv)
  local d, n = nil, 0
  for i = 1, #kv, 2 do
    if kv[i] == 'd' then d = kv[i + 1] elseif kv[i] == 'n' then n = tonumber(kv[i + 1]) end
  end
  return d, n
end
-- The entry's holder and delivery count, or nil if nobody holds it (an
-- entry given back is pending, but held by no one).
local function pending(K, id)
  local p = redis.call('XPENDING', K[1], 'chute', id, id, 1)
  if #p == 0 or redis.call('SISMEMBER', K[5], id) == 1 then return nil end
  return p[1][2], tonumber(p[1][4])
end
-- Give an entry back in place: still pending, but held by no one (so
-- claimable at once, and counted as waiting). retrycount: its delivery
-- count from now on (nil: unchanged).
local function release(K, consumer, id, retrycount)
  if retrycount then
    redis.call('XCLAIM', K[1], 'chute', consumer, 0, id, 'IDLE', 1000000000000,
               'RETRYCOUNT', retrycount, 'JUSTID')
  else
    redis.call('XCLAIM', K[1], 'chute', consumer, 0, id, 'IDLE', 1000000000000, 'JUSTID')
  end
  redis.call('SADD', K[5], id)
end
-- The put key of an entry (or of a delayed item's tag) is free again.
local function unkey(K, id)
  if redis.call('HLEN', K[8]) > 0 then
    local key = redis.call('HGET', K[8], id)
    if key then
      redis.call('HDEL', K[7], key)
      redis.call('HDEL', K[8], id)
    end
  end
end
-- An entry (or tag) is known by another id from now on: its put key follows.
local function rekey(K, old, new)
  if redis.call('HLEN', K[8]) > 0 then
    local key = redis.call('HGET', K[8], old)
    if key then
      redis.call('HSET', K[7], key, new)
      redis.call('HSET', K[8], new, key)
      redis.call('HDEL', K[8], old)
    end
  end
end
-- Delete a taken entry for good (and the last error and put key kept for it).
local function remove(K, id)
  redis.call('XACK', K[1], 'chute', id)
  redis.call('XDEL', K[1], id)
  redis.call('SREM', K[5], id)
  redis.call('HDEL', K[6], id)
  unkey(K, id)
end
-- Stream ids in order: ms, then sequence (as numbers: "9-0" < "10-0").
local function id_parts(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function id_less(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end
-- Run a command on ids in slices (unpack has a limit on its arguments).
local function each_slice(ids, fn)
  for i = 1, #ids, 1000 do
    fn(unpack(ids, i, math.min(i + 999, #ids)))
  end
end
-- Delete the entries plain gets returned, from ARGV[first] on (id, count,
-- ...), those still this consumer's with that count; how many. The same
-- check as pending() for each, in a few commands for the whole batch (one
-- XPENDING over its range for this consumer, then XACK, XDEL, HDEL of all):
-- a get of 100 items costs the server one call of each, not 600 calls.
local function finish(K, consumer, first)
  local want, lo, hi, n = {}, nil, nil, 0
  for i = first, #ARGV, 2 do
    local id = ARGV[i]
    if not want[id] then n = n + 1 end
    want[id] = tonumber(ARGV[i + 1])
    if not lo or id_less(id, lo) then lo = id end
    if not hi or id_less(hi, id) then hi = id end
  end
  if n == 0 then return 0 end
  -- This consumer's pending entries in the range: the batch's, and perhaps
  -- some held on a lease in between (then the rest are looked up one by one).
  local limit = 2 * n
  local seen = redis.call('XPENDING', K[1], 'chute', lo, hi, limit, consumer)
  local count = {}
  for _, p in ipairs(seen) do count[p[1]] = tonumber(p[4]) end
  local partial = #seen >= limit
  local given_back = redis.call('SCARD', K[5]) > 0
  local ids = {}
  for id, token in pairs(want) do
    local c = count[id]
    if c == nil and partial then
      local owner
      owner, c = pending(K, id)
      if owner ~= consumer then c = nil end
    elseif c ~= nil and given_back and redis.call('SISMEMBER', K[5], id) == 1 then
      c = nil  -- given back in place: held by no one
    end
    if c == token then ids[#ids + 1] = id end
  end
  if #ids == 0 then return 0 end
  -- None of them is in the given-back set (checked above): no SREM.
  each_slice(ids, function(...) redis.call('XACK', K[1], 'chute', ...) end)
  each_slice(ids, function(...) redis.call('XDEL', K[1], ...) end)
  if redis.call('HLEN', K[6]) > 0 then
    each_slice(ids, function(...) redis.call('HDEL', K[6], ...) end)
  end
  if redis.call('HLEN', K[8]) > 0 then
    for _, id in ipairs(ids) do unkey(K, id) end
  end
  return #ids
end
-- A dead letter's id as a member of the dead letters' index (K[10]): its
-- two numbers zero-padded, so that the members' order (all of score 0,
-- ordered as strings) is the stream's, and a rank finds an entry in
-- O(log n) where walking the stream to an offset costs O(offset).
local function pad(digits)
  return string.rep('0', 20 - #digits) .. digits
end
local function dead_member(id)
  local dash = string.find(id, '-', 1, true)
  return pad(string.sub(id, 1, dash - 1)) .. '-' .. pad(string.sub(id, dash + 1))
end
local function member_id(member)
  return string.match(string.sub(member, 1, 20), '^0*(%d+)$') .. '-'
      .. string.match(string.sub(member, 22), '^0*(%d+)$')
end
-- To the dead letters, with why: reason, and the error given (or else the
-- last one the item failed with). The dead entry's id tells when.
local function bury(K, id, data, deliveries, reason, err)
  if not err or err == '' then err = redis.call('HGET', K[6], id) end
  local dead
  if err then
    dead = redis.call('XADD', K[3], '*', 'd', data, 'n', deliveries, 'r', reason, 'e', err)
  else
    dead = redis.call('XADD', K[3], '*', 'd', data, 'n', deliveries, 'r', reason)
  end
  redis.call('ZADD', K[10], 0, dead_member(dead))
  remove(K, id)
  redis.call('HINCRBY', K[2], 'dead', 1)
  if tonumber(redis.call('HGET', K[2], 'unfinished')) > 0 then
    redis.call('HINCRBY', K[2], 'unfinished', -1)
  end
end
"""

# KEYS: the queue's. ARGV: maxsize ("": keep), max_deliveries ("": keep,
# "none": no limit), schema, create (1 | 0).
# -> {'ok', maxsize, max_deliveries ("" for none)} | {'missing'} | {'alien', type}
#    | {'newer', schema}
# With create=0 it is ``configure``: it changes what is passed, on a queue
# that exists, and creates nothing.
DECLARE = (
    LIB
    + r"""
local kind = redis.call('TYPE', KEYS[1])['ok']
local v = redis.call('HGET', KEYS[2], 'v')
if kind ~= 'none' and kind ~= 'stream' then return {'alien', kind} end
if redis.call('EXISTS', KEYS[2]) == 1 and not v then return {'alien', 'hash'} end
if not v and kind == 'stream' then return {'alien', 'stream'} end
if v and tonumber(v) > tonumber(ARGV[3]) then return {'newer', v} end
if not v then
  if ARGV[4] ~= '1' then return {'missing'} end
  redis.call('XGROUP', 'CREATE', KEYS[1], 'chute', '0', 'MKSTREAM')
  redis.call('HSET', KEYS[2], 'v', ARGV[3], 'state', 0, 'total_put', 0, 'total_got', 0,
             'peak', 0, 'dead', 0, 'unfinished', 0, 'maxsize', 0, 'maxdel', '')
elseif tonumber(v) < tonumber(ARGV[3]) then
  -- An older schema: what it stored still reads the same.
  redis.call('HSET', KEYS[2], 'v', ARGV[3])
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'maxsize', ARGV[1]) end
if ARGV[2] == 'none' then
  redis.call('HSET', KEYS[2], 'maxdel', '')
elseif ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'maxdel', ARGV[2])
end
local m = redis.call('HMGET', KEYS[2], 'maxsize', 'maxdel')
return {'ok', m[1] or '0', m[2] or ''}
"""
)

# ARGV: consumer, delay (ms, 0: none), key ("": none), schedule ("": none),
# its slot, how many records, the records, then the entries earlier plain
# gets returned (FINISH's: deleted first, so that their keys are free). A
# delayed record waits in the later set under a tag of its own ("s<n>"),
# counted in the meta's "scheduled". A schedule's slot is stored only if it
# is past the schedule's mark (the marks hash), which it then becomes.
# -> {'ok', id or member, ...} | {'full'} | {'duplicate'} | {'never', maxsize}
#    | {'shutdown'} | {'gone'}
PUT = (
    LIB
    + r"""
local m = redis.call('HMGET', KEYS[2], 'v', 'state', 'maxsize', 'peak', 'scheduled')
if not m[1] then return {'gone'} end
local n = tonumber(ARGV[6])
finish(KEYS, ARGV[1], 7 + n)
if m[2] ~= '0' then return {'shutdown'} end
local delay, key, mark, slot = tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local size = ready(KEYS) + tonumber(m[5] or '0')
local maxsize = tonumber(m[3])
if maxsize > 0 and n > maxsize then return {'never', maxsize} end
if key ~= '' and redis.call('HEXISTS', KEYS[7], key) == 1 then return {'duplicate'} end
if maxsize > 0 and size + n > maxsize then return {'full'} end
if mark ~= '' then
  if tonumber(redis.call('HGET', KEYS[9], mark) or '-1') >= slot then return {'duplicate'} end
  redis.call('HSET', KEYS[9], mark, slot)
end
local out = {'ok'}
if delay > 0 then
  local due = now_ms() + delay
  for i = 7, 6 + n do
    local tag = 's' .. redis.call('HINCRBY', KEYS[2], 'seq', 1)
    local member = tag .. ':0:' .. ARGV[i]
    redis.call('ZADD', KEYS[4], due, member)
    out[#out + 1] = member
    if key ~= '' then
      redis.call('HSET', KEYS[7], key, tag)
      redis.call('HSET', KEYS[8], tag, key)
    end
  end
  redis.call('HINCRBY', KEYS[2], 'scheduled', n)
else
  for i = 7, 6 + n do
    local id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
    out[#out + 1] = id
    if key ~= '' then
      redis.call('HSET', KEYS[7], key, id)
      redis.call('HSET', KEYS[8], id, key)
    end
  end
end
redis.call('HINCRBY', KEYS[2], 'total_put', n)
redis.call('HINCRBY', KEYS[2], 'unfinished', n)
if size + n > tonumber(m[4]) then redis.call('HSET', KEYS[2], 'peak', size + n) end
return out
"""
)

# ARGV: consumer, max items, visibility timeout (ms), then the entries
# earlier plain gets returned, to delete first (id, count, ...: FINISH's),
# so that a consumer taking one item after another makes one round trip each.
# -> {'ok', id, data, deliveries, count, ...} | {'shutdown'} | {'gone'} | {'empty', ms to next}
CLAIM = (
    LIB
    + r"""
local m = redis.call('HMGET', KEYS[2], 'v', 'state', 'maxdel')
if not m[1] then return {'gone'} end
finish(KEYS, ARGV[1], 4)
if m[2] == '2' then return {'shutdown'} end
local consumer, want, vt = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local maxdel = tonumber(m[3])
local now = now_ms()
local out = {'ok'}
local got = 0
-- Delayed items whose time came go back at the end of the stream (their
-- last error follows them to their new id).
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, want)
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[4], member)
  local a = string.find(member, ':', 1, true)
  local b = string.find(member, ':', a + 1, true)
  local old = string.sub(member, 1, a - 1)
  local new = redis.call('XADD', KEYS[1], '*', 'd', string.sub(member, b + 1),
                         'n', string.sub(member, a + 1, b - 1))
  local err = redis.call('HGET', KEYS[6], old)
  if err then
    redis.call('HSET', KEYS[6], new, err)
    redis.call('HDEL', KEYS[6], old)
  end
  rekey(KEYS, old, new)
  if string.sub(old, 1, 1) == 's' then redis.call('HINCRBY', KEYS[2], 'scheduled', -1) end
end
-- Entries given back, or whose lease ran out: oldest first.
local expired = redis.call('XPENDING', KEYS[1], 'chute', 'IDLE', vt, '-', '+', want)
for _, p in ipairs(expired) do
  local id = p[1]
  local given_back = redis.call('SREM', KEYS[5], id) == 1
  local claimed = redis.call('XCLAIM', KEYS[1], 'chute', consumer, vt, id)
  if #claimed > 0 and claimed[1] and claimed[1][2] then
    local data, base = fields(claimed[1][2])
    local before = base + tonumber(p[4])
    if maxdel and before >= maxdel then
      bury(KEYS, id, data, before, given_back and 'failed' or 'lease expired', nil)
    else
      out[#out + 1] = id; out[#out + 1] = data; out[#out + 1] = before + 1
      out[#out + 1] = tonumber(p[4]) + 1
      got = got + 1
    end
  end
end
if got < want then
  local r = redis.call('XREADGROUP', 'GROUP', 'chute', consumer, 'COUNT', want - got,
                      'STREAMS', KEYS[1], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      local data, base = fields(e[2])
      out[#out + 1] = e[1]; out[#out + 1] = data; out[#out + 1] = base + 1
      out[#out + 1] = 1
      got = got + 1
    end
  end
end
if got == 0 then
  if m[2] == '1' then return {'shutdown'} end
  local nxt = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if #nxt > 0 then return {'empty', tonumber(nxt[2]) - now} end
  return {'empty', -1}
end
redis.call('HINCRBY', KEYS[2], 'total_got', got)
return out
"""
)

# Sent right behind a blocking XREADGROUP, on its connection, so that it runs
# as soon as the read is answered, in the same round trip: the new entries
# the read handed to its own consumer ARGV[3] (one per read, so that they are
# told apart from those of this process's other reads) go to this process's
# consumer ARGV[1], counted. They go back in place instead if an immediate
# shutdown came meanwhile, or if older ones wait that a claim takes first
# (given back, a lease run out, a delay come due: a get that waited without
# looking first, because a look a moment ago found none, must not pass them
# by). ARGV: consumer, visibility ms, reader, most entries
# -> {'ok'} | {'shutdown'} | {'look'} | {'none'} (the read got nothing)
TOOK = (
    LIB
    + r"""
local ids = {}
local read = redis.call('XPENDING', KEYS[1], 'chute', '-', '+', tonumber(ARGV[4]), ARGV[3])
for _, p in ipairs(read) do
  ids[#ids + 1] = p[1]
end
if #ids > 0 then
  each_slice(ids, function(...)
    local args = {...}
    args[#args + 1] = 'JUSTID'
    redis.call('XCLAIM', KEYS[1], 'chute', ARGV[1], 0, unpack(args))
  end)
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'chute', ARGV[3])
if #ids == 0 then return {'none'} end
local function back(status)
  for _, id in ipairs(ids) do
    release(KEYS, ARGV[1], id, 0)
  end
  return {status}
end
if redis.call('HGET', KEYS[2], 'state') == '2' then return back('shutdown') end
if redis.call('SCARD', KEYS[5]) > 0
    or #redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms(), 'LIMIT', 0, 1) > 0
    or #redis.call('XPENDING', KEYS[1], 'chute', 'IDLE', tonumber(ARGV[2]), '-', '+', 1) > 0 then
  return back('look')
end
redis.call('HINCRBY', KEYS[2], 'total_got', #ids)
return {'ok'}
"""
)

# A get's entries, deleted once it returned them. ARGV: consumer, id, count, ...
FINISH = (
    LIB
    + r"""
return finish(KEYS, ARGV[1], 2)
"""
)

# A get cancelled after taking entries gives them back in place: claimable
# at once, their delivery count as before. ARGV: consumer, counted (1 if
# total_got counted them), id, count, ...
GIVE_BACK = (
    LIB
    + r"""
local n = 0
for i = 3, #ARGV, 2 do
  local owner, count = pending(KEYS, ARGV[i])
  if owner == ARGV[1] and count == tonumber(ARGV[i + 1]) then
    release(KEYS, ARGV[1], ARGV[i], count - 1)
    n = n + 1
  end
end
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], 'total_got', -n) end
return n
"""
)

# A put cancelled after it stored its items takes them back, if none has
# been handed out yet (all or none: a batch stays whole). ARGV: ids, or the
# members of delayed records (which hold a ':').
TAKE_BACK = (
    LIB
    + r"""
local delayed = string.find(ARGV[1], ':', 1, true) ~= nil
for _, id in ipairs(ARGV) do
  if delayed then
    if not redis.call('ZSCORE', KEYS[4], id) then return 0 end
  else
    if #redis.call('XRANGE', KEYS[1], id, id) == 0 then return 0 end
    if #redis.call('XPENDING', KEYS[1], 'chute', id, id, 1) > 0 then return 0 end
  end
end
for _, id in ipairs(ARGV) do
  if delayed then
    redis.call('ZREM', KEYS[4], id)
    unkey(KEYS, string.sub(id, 1, string.find(id, ':', 1, true) - 1))
  else
    redis.call('XDEL', KEYS[1], id)
    redis.call('SREM', KEYS[5], id)
    unkey(KEYS, id)
  end
end
if delayed then redis.call('HINCRBY', KEYS[2], 'scheduled', -#ARGV) end
redis.call('HINCRBY', KEYS[2], 'total_put', -#ARGV)
redis.call('HINCRBY', KEYS[2], 'unfinished', -#ARGV)
return #ARGV
"""
)

# ARGV: consumer, id, count, how ('ack' | 'nack' | 'extend'), delay or
#       lease (ms), visibility timeout (ms), the error (ErrorInfo JSON, or "")
# -> 'acked' | 'retried' | 'dead' | 'ok' (extended) | 'stale'
#    | 'done' (task_done already called for every item)
SETTLE = (
    LIB
    + r"""
local consumer, id, count, how = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ms, vt, err = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local owner, now_count = pending(KEYS, id)
if owner ~= consumer or now_count ~= count then return 'stale' end
if how == 'extend' then
  redis.call('XCLAIM', KEYS[1], 'chute', consumer, 0, id, 'IDLE', math.max(vt - ms, 0), 'JUSTID')
  return 'ok'
end
local m = redis.call('HMGET', KEYS[2], 'state', 'maxdel', 'unfinished')
local e = redis.call('XRANGE', KEYS[1], id, id)
local data, base = fields(e[1][2])
local deliveries = base + count
if how == 'nack' and (m[1] == '2' or ((m[2] or '') ~= '' and deliveries >= tonumber(m[2]))) then
  how = 'dead'
end
if how == 'nack' then
  -- Kept as the item's last error, for when it dies later.
  if err ~= '' then redis.call('HSET', KEYS[6], id, err) end
  if ms == 0 then
    release(KEYS, consumer, id, nil)
  else
    -- Out of the stream until due: not held by anyone, not claimable (its
    -- last error and its put key stay with its old id until then).
    local last = redis.call('HGET', KEYS[6], id)
    local key = redis.call('HGET', KEYS[8], id)
    remove(KEYS, id)
    if last then redis.call('HSET', KEYS[6], id, last) end
    if key then
      redis.call('HSET', KEYS[7], key, id)
      redis.call('HSET', KEYS[8], id, key)
    end
    redis.call('ZADD', KEYS[4], now_ms() + ms, id .. ':' .. deliveries .. ':' .. data)
  end
  return 'retried'
end
if tonumber(m[3]) <= 0 then return 'done' end
if how == 'dead' then
  bury(KEYS, id, data, deliveries, 'failed', err)
  return 'dead'
end
remove(KEYS, id)
redis.call('HINCRBY', KEYS[2], 'unfinished', -1)
return 'acked'
"""
)

# Entries that cannot be decoded go to the dead letters.
# ARGV: consumer, id, count, error (ErrorInfo JSON), ...
BURY = (
    LIB
    + r"""
for i = 2, #ARGV, 3 do
  local owner, count = pending(KEYS, ARGV[i])
  if owner == ARGV[1] and count == tonumber(ARGV[i + 1]) then
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    local data, base = fields(e[1][2])
    bury(KEYS, ARGV[i], data, base + count, 'undecodable', ARGV[i + 2])
  end
end
return 'ok'
"""
)

# ARGV: consumer, oldest (1 | 0), then the entries plain gets returned, to
# delete first (FINISH's), so that the counts never show them as held.
# -> {v, state, maxsize, maxdel, total_put, total_got, peak, dead, unfinished,
#     ready, held, delayed, scheduled, oldest} | {'gone'}
# oldest (asked for, else -1): ms since the oldest waiting entry joined the
# stream (by its id), -1 if none waits: the first entry the group has not
# handed out yet, or the first given back in place (pending with the huge
# idle time release() sets: XPENDING's IDLE filter finds it in id order).
READ = (
    LIB
    + r"""
local m = redis.call('HMGET', KEYS[2], 'v', 'state', 'maxsize', 'maxdel', 'total_put',
                     'total_got', 'peak', 'dead', 'unfinished')
if not m[1] then return {'gone'} end
if #ARGV > 2 then
  finish(KEYS, ARGV[1], 3)
  m = redis.call('HMGET', KEYS[2], 'v', 'state', 'maxsize', 'maxdel', 'total_put',
                 'total_got', 'peak', 'dead', 'unfinished')
end
m[#m + 1] = ready(KEYS)
m[#m + 1] = pel_count(KEYS[1]) - redis.call('SCARD', KEYS[5])
local scheduled = tonumber(redis.call('HGET', KEYS[2], 'scheduled') or '0')
m[#m + 1] = redis.call('ZCARD', KEYS[4]) - scheduled
m[#m + 1] = scheduled
local since = nil
if ARGV[2] == '1' then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == 'chute' then
      local e = redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
      if #e > 0 then since = id_parts(e[1][1]) end
    end
  end
  if redis.call('SCARD', KEYS[5]) > 0 then
    local p = redis.call('XPENDING', KEYS[1], 'chute', 'IDLE', 900000000000, '-', '+', 1)
    if #p > 0 then
      local ms = id_parts(p[1][1])
      if not since or ms < since then since = ms end
    end
  end
end
m[#m + 1] = since and math.max(0, now_ms() - since) or -1
return m
"""
)

# ARGV: 'task_done' | 'shutdown' (ARGV[2]: 1 or 2) | 'reopen' -> 'ok' | 'done' | 'gone'
CONTROL = r"""
if redis.call('HEXISTS', KEYS[2], 'v') == 0 then return 'gone' end
if ARGV[1] == 'task_done' then
  if tonumber(redis.call('HGET', KEYS[2], 'unfinished')) <= 0 then return 'done' end
  redis.call('HINCRBY', KEYS[2], 'unfinished', -1)
elseif ARGV[1] == 'shutdown' then
  if tonumber(redis.call('HGET', KEYS[2], 'state')) < tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[2], 'state', ARGV[2])
  end
else
  redis.call('HSET', KEYS[2], 'state', 0)
end
return 'ok'
"""

# ARGV: 'page', offset, limit (-1: all), newest first (1 | 0)
#     | 'purge', 'all' | 'ids', id, ... | 'requeue', 'all' | 'ids', id, ...
# -> id, data, deliveries, reason, error, ... (page, purge: oldest first)
#    | count | -1 (requeue: shut down)
# A dead letter of schema 1 has no reason and no error: "" for each. A page
# at an offset starts at the entry of that rank in the index (K[10]), which
# is made again first if it does not match the stream (a queue of an older
# chute, or dead letters written by one): the entries skipped are neither
# read nor sent. Ids no longer there are passed over.
DEAD = (
    LIB
    + r"""
local function same(K)
  local n = redis.call('XLEN', K[3])
  if redis.call('ZCARD', K[10]) ~= n then return false end
  if n == 0 then return true end
  local first = redis.call('XRANGE', K[3], '-', '+', 'COUNT', 1)[1][1]
  local last = redis.call('XREVRANGE', K[3], '+', '-', 'COUNT', 1)[1][1]
  return redis.call('ZRANGE', K[10], 0, 0)[1] == dead_member(first)
     and redis.call('ZRANGE', K[10], -1, -1)[1] == dead_member(last)
end
local function index(K)
  if same(K) then return end
  redis.call('DEL', K[10])
  local start = '-'
  while true do
    local es = redis.call('XRANGE', K[3], start, '+', 'COUNT', 1000)
    if #es == 0 then break end
    local args = {}
    for _, e in ipairs(es) do
      args[#args + 1] = 0
      args[#args + 1] = dead_member(e[1])
    end
    redis.call('ZADD', K[10], unpack(args))
    start = '(' .. es[#es][1]
  end
end
local function listed(entries, out)
  for _, e in ipairs(entries) do
    local kv, f = e[2], {}
    for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
    if f['d'] then
      out[#out + 1] = e[1]; out[#out + 1] = f['d']; out[#out + 1] = f['n'] or '0'
      out[#out + 1] = f['r'] or ''; out[#out + 1] = f['e'] or ''
    end
  end
  return out
end
-- The entries asked for (all, or those of the ids still there), oldest first.
local function chosen(K)
  if ARGV[2] == 'all' then return redis.call('XRANGE', K[3], '-', '+') end
  local ids = {}
  for i = 3, #ARGV do
    if #redis.call('XRANGE', K[3], ARGV[i], ARGV[i]) > 0 then ids[#ids + 1] = ARGV[i] end
  end
  table.sort(ids, id_less)
  local entries = {}
  for _, id in ipairs(ids) do entries[#entries + 1] = redis.call('XRANGE', K[3], id, id)[1] end
  return entries
end
local function drop(K, entries)
  if ARGV[2] == 'all' then
    redis.call('DEL', K[3], K[10])
    redis.call('HSET', K[2], 'dead', 0)
    return
  end
  for _, e in ipairs(entries) do
    redis.call('XDEL', K[3], e[1])
    redis.call('ZREM', K[10], dead_member(e[1]))
  end
  local left = tonumber(redis.call('HGET', K[2], 'dead') or '0') - #entries
  redis.call('HSET', K[2], 'dead', math.max(left, 0))
end
if ARGV[1] == 'page' then
  -- The numbers passed on as the strings they came as: a Lua number of 2^53
  -- or more would be sent as "4.6e+18", which no command takes.
  local offset, limit, newest = ARGV[2], ARGV[3], ARGV[4] == '1'
  if limit == '0' then return {} end
  local from = newest and '+' or '-'
  if offset ~= '0' then
    index(KEYS)
    local m = redis.call(newest and 'ZREVRANGE' or 'ZRANGE', KEYS[10], offset, offset)
    if #m == 0 then return {} end
    from = member_id(m[1])
  end
  local range = newest and 'XREVRANGE' or 'XRANGE'
  local to = newest and '-' or '+'
  if limit == '-1' then return listed(redis.call(range, KEYS[3], from, to), {}) end
  return listed(redis.call(range, KEYS[3], from, to, 'COUNT', limit), {})
end
if ARGV[1] == 'purge' then
  local entries = chosen(KEYS)
  drop(KEYS, entries)
  return listed(entries, {})
end
-- requeue
if redis.call('HGET', KEYS[2], 'state') ~= '0' then return -1 end
local entries = chosen(KEYS)
local out = listed(entries, {})
for i = 2, #out, 5 do redis.call('XADD', KEYS[1], '*', 'd', out[i]) end
drop(KEYS, entries)
redis.call('HINCRBY', KEYS[2], 'unfinished', #out / 5)
return #out / 5
"""
)


SCRIPTS = {
    "declare": DECLARE,
    "put": PUT,
    "claim": CLAIM,
    "took": TOOK,
    "finish": FINISH,
    "give_back": GIVE_BACK,
    "take_back": TAKE_BACK,
    "settle": SETTLE,
    "bury": BURY,
    "read": READ,
    "control": CONTROL,
    "dead": DEAD,
}
