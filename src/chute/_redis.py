"""The distributed transport: a queue on Redis Streams (or Valkey).

Keys of queue ``name`` (one hash tag, so that a cluster keeps them on one
node): ``chute:{name}:items``, the stream, read through the consumer group
``chute``; ``chute:{name}:meta``, a hash of the bounds, the shutdown state
and the counters (its field ``v``, the schema, marks the queue as chute's:
``queue_names`` finds queues by it); ``chute:{name}:dead``, the dead letters
(a stream: the item, its deliveries, why it died and its last error; the
entry's id says when); ``chute:{name}:later``, the items given back with a
delay (a sorted set); ``chute:{name}:back``, the ids of entries given back
in place (still pending, but waiting to be claimed); and
``chute:{name}:errors``, the last error of each item that failed with one
(a hash by entry id, deleted with the entry).

The bounds (``maxsize``, ``max_deliveries``) are stored in the meta hash:
opening without them uses what is stored, passing them (or ``configure``)
replaces them for every client, and the scripts read them at every call.

Every change is one Lua script, atomic on the server: a bounded put checks
the length and appends (Redis's own ``MAXLEN`` would trim the oldest items,
silently losing them); a claim takes the given-back and expired entries
first (oldest first), then new ones with ``XREADGROUP``; an ack checks that
the entry is still this job's — owner and delivery count, the fencing token
— before ``XACK`` and ``XDEL``. A get that finds nothing waits on the server
with ``XREADGROUP BLOCK`` on a connection of its own, and a cancelled wait
is cut short with ``CLIENT UNBLOCK``.

Every item handed out is first an entry pending for this queue's consumer.
A plain ``get`` deletes it right after returning it (in one script for all
the gets of the moment); a get cancelled before it returns gives its
entries back in place, made claimable at once (``XCLAIM ... IDLE``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, NamedTuple, TypeVar
from urllib.parse import urlsplit

from ._codecs import Codec, encode_item, get_codec, undecodable
from ._contract import (
    UNSET,
    BlockingFace,
    DeadLetter,
    ErrorInfo,
    JobBase,
    Outcome,
    QueueStatistics,
    SettlingReservation,
    Unset,
    check_delay,
    check_max_deliveries,
    check_max_items,
    check_maxsize,
    check_timeout,
)
from ._exceptions import (
    ChuteError,
    JobSettledError,
    QueueEmpty,
    QueueFull,
    QueueNotFound,
    QueueShutDown,
)
from ._open import parse_redis_url
from ._waiters import check_not_on_loop

try:
    import redis
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the redis:// transport needs the Redis client: pip install 'chute[redis]'"
    ) from exc

T = TypeVar("T")

#: 2: dead letters keep why they died (reason, last error), items keep their
#: last error, and every delayed item waits in ``later`` (so that
#: ``statistics().delayed`` can count them). A queue of schema 1
#: is brought up to 2 when opened (nothing to rewrite: its dead letters list
#: with reason "failed" and no error).
SCHEMA_VERSION = 2
GROUP = "chute"
#: How long one server-side wait lasts before the waiter looks again: for
#: leases that ran out and for a shutdown made by another client.
BLOCK_SLICE = 0.25
#: How often a full put or a join looks again for changes made elsewhere.
POLL = 0.02
FOREVER_IDLE = 10**12  # ms: an entry given back is "idle" this long: claimable at once
#: The key parts of a queue, in the order the scripts see them as KEYS.
KEY_PARTS = ("items", "meta", "dead", "later", "back", "errors")
#: What marks a queue on a server: its meta hash.
META_PATTERN = "chute:{*}:meta"

#: id, data, deliveries (this one included), and the entry's pending count:
#: the fencing token (``deliveries`` adds those before a delayed retry).
Entry = tuple[bytes, bytes, int, int]

_LIB = r"""
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
-- Delete a taken entry for good (and the last error kept for it).
local function remove(K, id)
  redis.call('XACK', K[1], 'chute', id)
  redis.call('XDEL', K[1], id)
  redis.call('SREM', K[5], id)
  redis.call('HDEL', K[6], id)
end
-- To the dead letters, with why: reason, and the error given (or else the
-- last one the item failed with). The dead entry's id tells when.
local function bury(K, id, data, deliveries, reason, err)
  if not err or err == '' then err = redis.call('HGET', K[6], id) end
  if err then
    redis.call('XADD', K[3], '*', 'd', data, 'n', deliveries, 'r', reason, 'e', err)
  else
    redis.call('XADD', K[3], '*', 'd', data, 'n', deliveries, 'r', reason)
  end
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
_DECLARE = (
    _LIB
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

# ARGV: the records.
# -> {'ok', id, ...} | {'full'} | {'never', maxsize} | {'shutdown'} | {'gone'}
_PUT = (
    _LIB
    + r"""
local m = redis.call('HMGET', KEYS[2], 'v', 'state', 'maxsize', 'peak')
if not m[1] then return {'gone'} end
if m[2] ~= '0' then return {'shutdown'} end
local n = #ARGV
local size = ready(KEYS)
local maxsize = tonumber(m[3])
if maxsize > 0 and n > maxsize then return {'never', maxsize} end
if maxsize > 0 and size + n > maxsize then return {'full'} end
local out = {'ok'}
for i = 1, n do out[i + 1] = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i]) end
redis.call('HINCRBY', KEYS[2], 'total_put', n)
redis.call('HINCRBY', KEYS[2], 'unfinished', n)
if size + n > tonumber(m[4]) then redis.call('HSET', KEYS[2], 'peak', size + n) end
return out
"""
)

# ARGV: consumer, max items, visibility timeout (ms).
# -> {'ok', id, data, deliveries, count, ...} | {'shutdown'} | {'gone'} | {'empty', ms to next}
_CLAIM = (
    _LIB
    + r"""
local m = redis.call('HMGET', KEYS[2], 'v', 'state', 'maxdel')
if not m[1] then return {'gone'} end
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

# After a blocking XREADGROUP handed entries to ARGV[1]: count them, unless
# an immediate shutdown came meanwhile (then give them back).
# ARGV: consumer, id, ... -> {'ok'} | {'shutdown'}
_TOOK = (
    _LIB
    + r"""
local state = redis.call('HGET', KEYS[2], 'state')
if state == '2' then
  for i = 2, #ARGV do
    release(KEYS, ARGV[1], ARGV[i], 0)
  end
  return {'shutdown'}
end
redis.call('HINCRBY', KEYS[2], 'total_got', #ARGV - 1)
return {'ok'}
"""
)

# A get's entries, deleted once it returned them. ARGV: consumer, id, count, ...
_FINISH = (
    _LIB
    + r"""
local done = 0
for i = 2, #ARGV, 2 do
  local owner, count = pending(KEYS, ARGV[i])
  if owner == ARGV[1] and count == tonumber(ARGV[i + 1]) then
    remove(KEYS, ARGV[i])
    done = done + 1
  end
end
return done
"""
)

# A get cancelled after taking entries gives them back in place: claimable
# at once, their delivery count as before. ARGV: consumer, counted (1 if
# total_got counted them), id, count, ...
_GIVE_BACK = (
    _LIB
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
# been handed out yet (all or none: a batch stays whole). ARGV: ids.
_TAKE_BACK = r"""
for _, id in ipairs(ARGV) do
  if #redis.call('XRANGE', KEYS[1], id, id) == 0 then return 0 end
  if #redis.call('XPENDING', KEYS[1], 'chute', id, id, 1) > 0 then return 0 end
end
for _, id in ipairs(ARGV) do
  redis.call('XDEL', KEYS[1], id)
  redis.call('SREM', KEYS[5], id)
end
redis.call('HINCRBY', KEYS[2], 'total_put', -#ARGV)
redis.call('HINCRBY', KEYS[2], 'unfinished', -#ARGV)
return #ARGV
"""

# ARGV: consumer, id, count, how ('ack' | 'nack' | 'extend'), delay or
#       lease (ms), visibility timeout (ms), the error (ErrorInfo JSON, or "")
# -> 'acked' | 'retried' | 'dead' | 'ok' (extended) | 'stale'
#    | 'done' (task_done already called for every item)
_SETTLE = (
    _LIB
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
    -- Out of the stream until due: not held by anyone, not claimable.
    local last = redis.call('HGET', KEYS[6], id)
    remove(KEYS, id)
    if last then redis.call('HSET', KEYS[6], id, last) end
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
_BURY = (
    _LIB
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

# -> {v, state, maxsize, maxdel, total_put, total_got, peak, dead, unfinished,
#     ready, held, delayed} | {'gone'}
_READ = (
    _LIB
    + r"""
local m = redis.call('HMGET', KEYS[2], 'v', 'state', 'maxsize', 'maxdel', 'total_put',
                     'total_got', 'peak', 'dead', 'unfinished')
if not m[1] then return {'gone'} end
m[#m + 1] = ready(KEYS)
m[#m + 1] = pel_count(KEYS[1]) - redis.call('SCARD', KEYS[5])
m[#m + 1] = redis.call('ZCARD', KEYS[4])
return m
"""
)

# ARGV: 'task_done' | 'shutdown' (ARGV[2]: 1 or 2) | 'reopen' -> 'ok' | 'done' | 'gone'
_CONTROL = r"""
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

# ARGV: 'list' | 'purge' | 'requeue'
# -> id, data, deliveries, reason, error, ... (list, purge) | count | -1 (shut down)
# A dead letter of schema 1 has no reason and no error: "" for each.
_DEAD = r"""
local entries = redis.call('XRANGE', KEYS[3], '-', '+')
local out = {}
for _, e in ipairs(entries) do
  local kv, f = e[2], {}
  for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
  if f['d'] then
    out[#out + 1] = e[1]; out[#out + 1] = f['d']; out[#out + 1] = f['n'] or '0'
    out[#out + 1] = f['r'] or ''; out[#out + 1] = f['e'] or ''
  end
end
if ARGV[1] == 'purge' then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'dead', 0)
elseif ARGV[1] == 'requeue' then
  if redis.call('HGET', KEYS[2], 'state') ~= '0' then return -1 end
  for i = 2, #out, 5 do redis.call('XADD', KEYS[1], '*', 'd', out[i]) end
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'dead', 0)
  redis.call('HINCRBY', KEYS[2], 'unfinished', #out / 5)
  return #out / 5
end
return out
"""

_SCRIPTS = {
    "declare": _DECLARE,
    "put": _PUT,
    "claim": _CLAIM,
    "took": _TOOK,
    "finish": _FINISH,
    "give_back": _GIVE_BACK,
    "take_back": _TAKE_BACK,
    "settle": _SETTLE,
    "bury": _BURY,
    "read": _READ,
    "control": _CONTROL,
    "dead": _DEAD,
}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _failure(exc: BaseException, where: str) -> ChuteError:
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return ChuteError(f"Redis at {where} refused the credentials: {exc}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return ChuteError(f"Redis at {where} is unreachable: {exc}")
    return ChuteError(f"Redis at {where} failed: {exc}")


def _refused(exc: BaseException) -> bool:
    """Whether a ``ChuteError`` raised here is the server refusing a script
    (say, the queue's keys were deleted), rather than a lost connection."""
    return isinstance(exc.__cause__, redis.ResponseError)


class _BoundedConnection(redis.Connection):
    """A connection whose whole set-up (TCP, TLS handshake, and the replies
    to the commands redis-py sends on connecting) waits at most
    ``socket_connect_timeout`` per step, where redis-py would wait for the
    (much longer) reply timeout after the TCP connect: a server that
    accepts and never answers, or plain text where TLS was asked for,
    fails within ``connect_timeout``."""

    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        me: Any = self
        if me._sock:
            return
        replies = me.socket_timeout
        me.socket_timeout = me.socket_connect_timeout
        try:
            super().connect_check_health(check_health, retry_socket_connect)
        finally:
            me.socket_timeout = replies
            if me._sock is not None:
                me._sock.settimeout(replies)
                buffer = getattr(me._parser, "_buffer", None)
                if buffer is not None and hasattr(buffer, "socket_timeout"):
                    buffer.socket_timeout = replies


class _BoundedSSLConnection(_BoundedConnection, redis.SSLConnection):
    pass


class _BoundedAsyncConnection(aioredis.Connection):
    """The same bound on the event loop: the whole connect, at most
    ``socket_connect_timeout``."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if self.is_connected:
            return
        try:
            async with asyncio.timeout(self.socket_connect_timeout):
                await super().connect_check_health(check_health, retry_socket_connect)
        except TimeoutError as exc:
            with contextlib.suppress(Exception):
                await self.disconnect()
            if isinstance(exc, redis.RedisError):
                raise
            raise redis.TimeoutError("Timeout connecting to server") from exc


class _BoundedAsyncSSLConnection(_BoundedAsyncConnection, aioredis.SSLConnection):
    pass


_BOUNDED: dict[type, type] = {
    redis.Connection: _BoundedConnection,
    redis.SSLConnection: _BoundedSSLConnection,
    aioredis.Connection: _BoundedAsyncConnection,
    aioredis.SSLConnection: _BoundedAsyncSSLConnection,
}


def _bounded(client: Any) -> Any:
    """``client`` with its connections' set-up bounded (see above)."""
    pool = client.connection_pool
    pool.connection_class = _BOUNDED.get(pool.connection_class, pool.connection_class)
    return client


def _client_options(connect_timeout: float) -> dict[str, Any]:
    return {
        "socket_connect_timeout": connect_timeout,
        # No reply takes this long (waits block for BLOCK_SLICE at most):
        # a connection that stops answering fails instead of hanging.
        "socket_timeout": 30.0,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "protocol": 2,  # the replies parsed here are RESP2's
    }


def _check_connect_timeout(connect_timeout: object) -> float:
    checked = check_timeout(connect_timeout)
    if checked is None or checked <= 0:
        raise ValueError(
            f"connect_timeout must be a positive number of seconds, not {connect_timeout!r}"
        )
    return checked


def _display(url: str) -> str:
    """The server as users name it, without its password."""
    where = parse_redis_url(url)
    scheme = urlsplit(url).scheme.lower()
    return f"{scheme}://{where['host']}:{where['port']}/{where['db']}"


def _scan_names(client: Any) -> list[str]:
    """The queues on a server, by their meta hashes (``SCAN``, which never
    blocks the server the way ``KEYS`` does); a hash that only looks like
    one, without chute's schema field, is not a queue."""
    prefix, suffix = "chute:{", "}:meta"
    keys = [_text(k) for k in client.scan_iter(match=META_PATTERN, count=1000, _type="HASH")]
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hexists(key, "v")
    marked = pipe.execute()
    return sorted({k[len(prefix) : -len(suffix)] for k, ok in zip(keys, marked, strict=True) if ok})


def _error_json(exc: BaseException | None) -> str:
    return "" if exc is None else json.dumps(ErrorInfo.of(exc).to_dict())


def _error_info(text: Any) -> ErrorInfo | None:
    if not text:
        return None
    try:
        d = json.loads(_text(text))
    except ValueError:  # not written by chute: shown as the message
        return ErrorInfo("", _text(text), "")
    return ErrorInfo.from_dict(d if isinstance(d, dict) else None)


class _Meta(NamedTuple):
    """What the read script returns: the meta hash and the counts."""

    version: int
    state: int  # 0 open, 1 shut down, 2 shut down at once
    maxsize: int
    max_deliveries: int | None
    total_put: int
    total_got: int
    peak: int
    dead: int
    unfinished: int
    ready: int  # waiting: claimable now
    held: int  # on a lease (or whose lease ran out, not yet claimed again)
    delayed: int  # given back with a delay, not claimable yet

    @classmethod
    def of(cls, reply: Any) -> _Meta:
        v = [None if x in (None, b"") else int(_text(x)) for x in reply]
        n = [0 if x is None else x for x in v]
        return cls(n[0], n[1], n[2], v[3], n[4], n[5], n[6], n[7], n[8], n[9], n[10], n[11])

    @property
    def size(self) -> int:
        return max(0, self.ready)

    @property
    def in_flight(self) -> int:
        """Handed out and not settled: on a lease, or given back with a delay."""
        return self.held + self.delayed


class _Backoff:
    """After a connection failure, calls fail at once (with the same error)
    for a while that doubles on each failure, up to ``cap`` seconds; a call
    after it tries the server again. Success resets it."""

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base, self.cap = base, cap
        self.delay = 0.0
        self.until = 0.0
        self.error: ChuteError | None = None

    def check(self) -> None:
        if self.error is not None and time.monotonic() < self.until:
            raise ChuteError(f"{self.error} (retrying in {self.until - time.monotonic():.2f} s)")

    def failed(self, error: ChuteError) -> None:
        self.delay = min(self.cap, max(self.base, self.delay * 2))
        self.until = time.monotonic() + self.delay
        self.error = error

    def ok(self) -> None:
        if self.error is not None:
            self.error, self.delay = None, 0.0


class RedisQueue(Generic[T]):
    """A queue on a Redis stream; see the module docstring.

    ``maxsize`` and ``max_deliveries`` belong to the queue: left out
    (``None`` / not passed), the stored ones hold (a new queue: unbounded,
    no limit); passed, they replace them for every client. ``create=False``
    opens only a queue that exists (``QueueNotFound`` otherwise; nothing is
    created). ``connect_timeout`` bounds each connection's whole set-up,
    TLS handshake included."""

    def __init__(
        self,
        url: str,
        name: str,
        maxsize: int | None = None,
        *,
        create: bool = True,
        codec: object = "json",
        visibility_timeout: float = 30.0,
        max_deliveries: int | Unset | None = UNSET,
        connect_timeout: float = 5.0,
    ) -> None:
        self._where = parse_redis_url(url)
        wanted = None if maxsize is None else check_maxsize(maxsize)
        vt = check_timeout(visibility_timeout)
        if vt is None or vt <= 0:
            raise ValueError(
                "visibility_timeout must be a positive number of seconds, "
                f"not {visibility_timeout!r}"
            )
        if not isinstance(max_deliveries, Unset):
            max_deliveries = check_max_deliveries(max_deliveries)
        connect_timeout = _check_connect_timeout(connect_timeout)
        self._codec: Codec = get_codec(codec)
        self._name = name
        self._url = url
        self._vt_ms = max(1, round(vt * 1000))
        self._visibility = vt
        host, port = self._where["host"], self._where["port"]
        self._label = f"{host}:{port}"
        self._keys = [f"chute:{{{name}}}:{part}" for part in KEY_PARTS]
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._options = _client_options(connect_timeout)
        self._sync = _bounded(redis.Redis.from_url(url, **self._options))
        self._sync_scripts = {k: self._sync.register_script(v) for k, v in _SCRIPTS.items()}
        #: A client per event loop, and its scripts.
        self._aio: dict[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = {}
        self._backoff = _Backoff()
        self._closed = False
        self._closing = False
        self._getters = 0
        self._putters = 0
        #: Entries plain gets returned, to delete: (id, deliveries).
        self._to_finish: list[tuple[bytes, int]] = []
        self._finisher: asyncio.Task[None] | None = None
        #: Blocked reads of this queue in this process: (connection, client id).
        self._blocked: set[tuple[Any, int]] = set()
        #: Set on this process's changes, for full puts and joins waiting on
        #: each loop: the event, and the loop it belongs to.
        self._changed: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._lock = threading.Lock()
        #: Blocking puts (threads) wait on this, woken by this process's changes.
        self._changed_sync = threading.Condition(self._lock)
        self._changes = 0  # counts them, so that a wake-up is never missed
        self._face: RedisSyncQueue[T] | None = None
        #: The stored bound as last seen (for the repr; the scripts read the
        #: stored one at every call).
        self._maxsize = 0
        try:
            self._maxsize = self._declare(wanted, max_deliveries, create)
        except BaseException:
            self._sync.close()
            raise

    # -- plumbing ----------------------------------------------------------------------

    def _declare(
        self, maxsize: int | None, max_deliveries: int | Unset | None, create: bool
    ) -> int:
        """Create or look up the queue (and store what is passed); its maxsize."""
        args = [
            "" if maxsize is None else maxsize,
            "" if isinstance(max_deliveries, Unset) else (max_deliveries or "none"),
            SCHEMA_VERSION,
            int(create),
        ]
        reply = self._run_sync("declare", args, opening=True)
        status = _text(reply[0])
        if status == "alien":
            key = self._keys[1 if _text(reply[1]) == "hash" else 0]
            raise ChuteError(
                f"Redis at {self._label}: the key {key!r}"
                f" exists (a {_text(reply[1])}) but was not made by chute; "
                "choose another queue name"
            )
        if status == "newer":
            raise ChuteError(
                f"queue {self._name!r} on Redis at {self._label} was made by a newer chute "
                f"(schema {_text(reply[1])}); this one reads schema {SCHEMA_VERSION}: upgrade chute"
            )
        if status == "missing":
            raise self._not_found()
        return int(_text(reply[1]))

    def _not_found(self) -> QueueNotFound:
        try:
            names = _scan_names(self._sync)
        except (redis.RedisError, OSError) as exc:
            raise _failure(exc, self._label) from exc
        there = f"queues there: {', '.join(names)}" if names else "no queues there"
        return QueueNotFound(f"no queue {self._name!r} on {_display(self._url)}; {there}")

    @classmethod
    def queue_names(cls, url: str, **options: Any) -> list[str]:
        """The names of the queues on the server at ``url``, sorted. Creates
        nothing. Options: those of the constructor (only ``connect_timeout``
        matters here). Blocking I/O: call it off the event loop."""
        unknown = set(options) - {
            "codec",
            "visibility_timeout",
            "max_deliveries",
            "connect_timeout",
        }
        if unknown:
            raise TypeError(f"unknown option(s) for a redis:// queue: {', '.join(sorted(unknown))}")
        where = parse_redis_url(url)
        timeout = _check_connect_timeout(options.get("connect_timeout", 5.0))
        client = _bounded(redis.Redis.from_url(url, **_client_options(timeout)))
        try:
            return _scan_names(client)
        except (redis.RedisError, OSError) as exc:
            raise _failure(exc, f"{where['host']}:{where['port']}") from exc
        finally:
            client.close()

    def _lost(self, exc: BaseException) -> ChuteError:
        """A call failed on the way to the server or back: the error users
        see, and the backoff that spares the server the next calls."""
        error = _failure(exc, self._label)
        self._backoff.failed(error)
        return error

    def _refusal(self, exc: redis.ResponseError) -> ChuteError:
        if "NOGROUP" in str(exc):  # the stream was deleted under the queue
            return self._gone()
        return ChuteError(f"Redis at {self._label} refused a chute command: {exc}")

    def _run_sync(
        self, script: str, args: list[Any], opening: bool = False, closing: bool = False
    ) -> Any:
        if not (opening or closing):
            self._check_open()
        self._backoff.check()
        try:
            reply = self._sync_scripts[script](keys=self._keys, args=args)
        except redis.ResponseError as exc:
            raise self._refusal(exc) from exc
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            # Idle connections may be as dead as this one (a restarted
            # server): the next call connects anew instead of failing too.
            with contextlib.suppress(Exception):
                self._sync.connection_pool.disconnect(inuse_connections=False)
            raise error from exc
        self._backoff.ok()
        return reply

    def _client(self) -> tuple[Any, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        made = self._aio.get(loop)
        if made is None:
            client = _bounded(aioredis.Redis.from_url(self._url, **self._options))
            made = self._aio[loop] = (
                client,
                {k: client.register_script(v) for k, v in _SCRIPTS.items()},
            )
        return made

    async def _run(self, script: str, args: list[Any], closing: bool = False) -> Any:
        if not closing:
            self._check_open()
        self._backoff.check()
        client, scripts = self._client()
        try:
            reply = await scripts[script](keys=self._keys, args=args)
            if self._closed:  # a call that outlived aclose() left no connection open
                with contextlib.suppress(Exception):
                    await client.connection_pool.disconnect()
        except redis.ResponseError as exc:
            raise self._refusal(exc) from exc
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            with contextlib.suppress(Exception):  # as in _run_sync
                await client.connection_pool.disconnect(inuse_connections=False)
            raise error from exc
        self._backoff.ok()
        return reply

    async def _detached(self, script: str, args: list[Any]) -> Any:
        """``_run`` for a caller that may be cancelled: the command itself is
        never cut off mid-flight (its connection goes back to the pool clean);
        the caller leaves at once and the reply is dropped."""
        task = asyncio.ensure_future(self._run(script, args))
        task.add_done_callback(_drop_outcome)
        return await asyncio.shield(task)

    def _event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        with self._lock:
            event = self._changed.get(loop)
            if event is None:
                event = self._changed[loop] = asyncio.Event()
        return event

    def _touch(self) -> None:
        """Something changed here: wake this process's full puts and joins,
        on whichever loop they wait, and in whichever thread (from any thread)."""
        # A blocking putter reads _changes after counting itself in
        # _putters: it either sees this change or is woken here.
        self._changes += 1
        if self._putters:
            with self._lock:
                self._changed_sync.notify_all()
        if not self._changed:
            return
        with self._lock:
            changed, self._changed = self._changed, {}
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, event in changed.items():
            if loop is here:
                event.set()
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(event.set)

    def _gone(self) -> QueueNotFound:
        return QueueNotFound(
            f"queue {self._name!r} is no longer on Redis at {self._label} (its keys were deleted)"
        )

    @property
    def name(self) -> str:
        return self._name

    def _check_open(self) -> None:
        if self._closed:
            raise ChuteError(f"queue {self._name!r} was closed")

    def close(self) -> None:
        """Close the connections (what plain gets took is deleted first)."""
        if self._closed:
            return
        self._closing = True
        self._flush_sync()
        self._closed = True
        self._unblock_all()
        self._sync.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for client_loop, (client, _scripts) in self._aio.items():
            if client_loop is loop:  # closed by the loop, soon
                loop.create_task(client.aclose())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closing = True  # the finisher tries once more, then leaves it to us
        if self._finisher is not None and not self._finisher.done():
            await asyncio.wait([self._finisher])  # its own failure is no concern here
        self._flush_sync()
        self._closed = True
        self._unblock_all()
        self._sync.close()
        loop = asyncio.get_running_loop()
        for client_loop, (client, _scripts) in self._aio.items():
            if client_loop is loop:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def __aenter__(self) -> RedisQueue[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<chute.RedisQueue {self._name!r} at {self._label} maxsize={self._maxsize}>"

    # -- sizes, bounds and statistics ----------------------------------------------------

    def _read(self) -> _Meta:
        self._flush_sync()  # what gets took is gone: counted as such
        reply = self._run_sync("read", [])
        if _text(reply[0]) == "gone":
            raise self._gone()
        meta = _Meta.of(reply)
        self._maxsize = meta.maxsize
        return meta

    @property
    def maxsize(self) -> int:
        """The queue's bound as stored on the server (0: unbounded). Assigning
        it is ``configure(maxsize=...)``: for every client, at once."""
        return self._read().maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.configure(maxsize=value)

    def configure(
        self,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
    ) -> None:
        """Change the queue's stored bounds, for every client: what is passed
        (``max_deliveries=None``: no limit), nothing else. A larger maxsize
        lets this process's waiting puts in at once (other processes' on
        their next look); a smaller one keeps the items already there."""
        wanted = None if isinstance(maxsize, Unset) else check_maxsize(maxsize)
        if not isinstance(max_deliveries, Unset):
            max_deliveries = check_max_deliveries(max_deliveries)
        self._check_open()
        if wanted is None and isinstance(max_deliveries, Unset):
            return
        reply = self._run_sync(
            "declare",
            [
                "" if wanted is None else wanted,
                "" if isinstance(max_deliveries, Unset) else (max_deliveries or "none"),
                SCHEMA_VERSION,
                0,
            ],
        )
        status = _text(reply[0])
        if status != "ok":
            raise self._gone()
        self._maxsize = int(_text(reply[1]))
        self._touch()

    @property
    def unfinished_tasks(self) -> int:
        """Items put (by any client) and not yet marked done."""
        return self._read().unfinished

    @property
    def is_shutdown(self) -> bool:
        """Whether the queue is shut down (by any client)."""
        return bool(self._read().state)

    def qsize(self) -> int:
        """Items waiting (stored, not handed out). Items given back with a
        delay count as in flight until due, and leases that ran out but were
        not yet claimed again as handed out."""
        return self._read().size

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        meta = self._read()
        return bool(meta.maxsize) and meta.size >= meta.maxsize

    def statistics(self) -> QueueStatistics:
        """Counts from the server (getters and putters waiting: in this process)."""
        meta = self._read()
        return QueueStatistics(
            size=meta.size,
            maxsize=meta.maxsize,
            getters_waiting=self._getters,
            putters_waiting=self._putters,
            in_flight=meta.in_flight,
            total_put=meta.total_put,
            total_got=meta.total_got,
            peak_size=meta.peak,
            dead_lettered=meta.dead,
            unfinished_tasks=meta.unfinished,
            shutdown=bool(meta.state),
            delayed=meta.delayed,
        )

    # -- put -----------------------------------------------------------------------------

    def _encode_all(self, items: list[T]) -> list[bytes]:
        return [encode_item(self._codec, item) for item in items]

    def _batch(self, items: Iterable[T]) -> tuple[list[T], list[bytes]]:
        self._check_open()
        batch = list(items)
        return batch, self._encode_all(batch)

    def _put_outcome(self, reply: Any, items: list[T], single: bool) -> bool:
        status = _text(reply[0])
        if status == "ok":
            self._touch()
            return True
        if status == "full":
            return False
        if status == "never":
            raise ValueError(
                f"a batch of {len(items)} items can never fit a queue of maxsize {_text(reply[1])}"
            )
        if status == "shutdown":
            if single:
                raise QueueShutDown(item=items[0])
            raise QueueShutDown(items=items)
        raise self._gone()

    async def put(self, item: T, timeout: float | None = None) -> None:
        """Store ``item``, waiting while full. Stored on the server when this returns."""
        self._check_open()
        await self._put_records(self._encode_all([item]), [item], True, timeout)

    async def put_batch(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Store all ``items`` in one script (one round trip), or none of them."""
        batch, records = self._batch(items)
        if batch:
            await self._put_records(records, batch, False, timeout)

    async def _put_records(
        self, records: list[bytes], items: list[T], single: bool, timeout: float | None
    ) -> None:
        if timeout is not None:
            timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiting = False
        try:
            while True:
                # Shielded: a put whose script was sent is seen through; if
                # its caller was cancelled meanwhile, it is taken back below.
                task = asyncio.ensure_future(self._run("put", records))
                try:
                    reply = await asyncio.shield(task)
                except asyncio.CancelledError:
                    await _finish_quietly(task)
                    if not task.cancelled() and task.exception() is None:
                        reply = task.result()
                        if _text(reply[0]) == "ok":  # stored: take it back if we can
                            take_back = self._run("take_back", list(reply[1:]))
                            await _finish_quietly(asyncio.ensure_future(take_back))
                    raise
                if self._put_outcome(reply, items, single):
                    return
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError("timed out")
                if not waiting:
                    waiting = True
                    self._putters += 1
                wait = POLL if deadline is None else min(POLL, max(0.0, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event().wait(), wait)
        finally:
            if waiting:
                self._putters -= 1

    def put_nowait(self, item: T) -> None:
        """Store ``item`` now or raise ``QueueFull`` (one round trip)."""
        self._check_open()
        records = self._encode_all([item])
        if not self._put_outcome(self._run_sync("put", records), [item], True):
            raise QueueFull()

    # -- get -----------------------------------------------------------------------------

    def _entries(self, reply: Any) -> list[Entry] | str | float:
        """The entries a claim took, or why none: 'shutdown', 'gone', or
        the seconds until a delayed item is due (-1: none is)."""
        status = _text(reply[0])
        if status == "ok":
            return [
                (reply[i], reply[i + 1], int(reply[i + 2]), int(reply[i + 3]))
                for i in range(1, len(reply), 4)
            ]
        if status == "empty":
            return float(int(reply[1])) / 1000
        return status

    async def _claim(self, max_items: int) -> list[Entry] | str | float:
        task = asyncio.ensure_future(self._run("claim", [self._consumer, max_items, self._vt_ms]))
        try:
            return self._entries(await asyncio.shield(task))
        except asyncio.CancelledError:
            await self._give_back_from(task)
            raise

    async def _give_back_from(self, task: asyncio.Future[Any]) -> None:
        """A cancelled claim: once it is over, give back what it took."""
        await _finish_quietly(task)
        if task.cancelled() or task.exception() is not None:
            return
        found = self._entries(task.result())
        if isinstance(found, list) and found:
            await _finish_quietly(asyncio.ensure_future(self._give_back(found)))

    async def _give_back(self, entries: list[Entry], counted: bool = True) -> None:
        with contextlib.suppress(ChuteError):
            await self._run("give_back", [self._consumer, int(counted), *_pairs(entries)])
        self._unblock_all()  # this process's waiting gets look again

    async def _blocked_read(self, max_items: int, seconds: float) -> list[Entry]:
        """Wait on the server (``XREADGROUP BLOCK``) up to ``seconds`` for new
        entries, on a connection of its own; cancelled, the read is cut short
        with ``CLIENT UNBLOCK`` and whatever it got is given back."""
        client = self._client()[0]
        pool = client.connection_pool
        me = asyncio.current_task()
        before = 0 if me is None else me.cancelling()
        # Taking the connection connects (or checks a pooled one): the server
        # may have gone since the claim that found nothing.
        self._backoff.check()
        try:
            conn = await pool.get_connection()
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            with contextlib.suppress(Exception):  # as in _run
                await pool.disconnect(inuse_connections=False)
            raise error from exc
        if me is not None and me.cancelling() > before:
            # redis-py checks a pooled connection under asyncio.timeout(0),
            # which on CPython 3.11 can swallow a cancellation meant for the
            # caller: it goes on from here instead of being lost.
            await pool.release(conn)
            raise asyncio.CancelledError
        known = asyncio.Event()  # the connection's client id, for CLIENT UNBLOCK
        ids: list[tuple[Any, int]] = []

        async def xread() -> Any:
            # Its id and the read in one round trip.
            await conn.send_packed_command(
                conn.pack_commands(
                    [
                        ("CLIENT", "ID"),
                        (
                            "XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", max_items,
                            "BLOCK", max(1, int(seconds * 1000)), "STREAMS", self._keys[0], ">",
                        ),
                    ]
                )
            )  # fmt: skip
            ids.append((client, int(await conn.read_response())))
            self._blocked.add(ids[0])
            known.set()
            return await conn.read_response()

        read = asyncio.ensure_future(xread())
        try:
            try:
                reply = await asyncio.shield(read)
            except asyncio.CancelledError:
                # Cut the wait short and give back what it got, to the end
                # even if the caller is cancelled again meanwhile.
                await _finish_quietly(asyncio.ensure_future(self._cut_short(read, known, ids)))
                raise
        except BaseException as exc:
            # Whatever it was, the connection may hold an unread reply.
            with contextlib.suppress(Exception):
                await conn.disconnect()
            if isinstance(exc, redis.RedisError | OSError):
                raise self._lost(exc) from exc
            raise
        finally:
            if ids:
                self._blocked.discard(ids[0])
            await pool.release(conn)
            if self._closed:  # closed meanwhile: nothing may stay connected
                with contextlib.suppress(Exception):
                    await conn.disconnect()
        return _read_entries(reply)

    async def _cut_short(
        self, read: asyncio.Task[Any], known: asyncio.Event, ids: list[tuple[Any, int]]
    ) -> None:
        id_known = asyncio.ensure_future(known.wait())
        try:
            while not read.done():  # unblocked before it blocked: again
                await asyncio.wait([read, id_known], timeout=1, return_when=asyncio.FIRST_COMPLETED)
                if ids and not read.done():
                    with contextlib.suppress(Exception):
                        await ids[0][0].client_unblock(ids[0][1])
                    await asyncio.wait([read], timeout=0.01)
        finally:
            id_known.cancel()
        if not read.cancelled() and read.exception() is None:
            got = _read_entries(read.result())
            if got:  # not yet counted in total_got
                await self._give_back(got, counted=False)

    def _unblock_all(self) -> None:
        """Cut short this process's server-side waits (they look again)."""
        for _client, cid in list(self._blocked):
            with contextlib.suppress(Exception):
                self._sync.client_unblock(cid)

    async def _take(self, max_items: int, lease: bool, timeout: float | None) -> list[Entry]:
        self._check_open()
        if timeout is not None:
            timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiting = False
        try:
            while True:
                found = await self._claim(max_items)
                if isinstance(found, list):
                    return self._taken(found, lease)
                if found == "shutdown":
                    raise QueueShutDown()
                if found == "gone":
                    raise self._gone()
                now = loop.time()
                if deadline is not None and now >= deadline:
                    raise TimeoutError("timed out")
                if not waiting:
                    waiting = True
                    self._getters += 1
                wait = BLOCK_SLICE if deadline is None else min(BLOCK_SLICE, deadline - now)
                if isinstance(found, float) and found >= 0:
                    wait = min(wait, found)
                got = await self._blocked_read(max_items, wait)
                if got:
                    task = asyncio.ensure_future(
                        self._run("took", [self._consumer, *(e[0] for e in got)])
                    )
                    try:
                        status = _text(await asyncio.shield(task))
                    except asyncio.CancelledError:
                        await _finish_quietly(task)
                        counted = (
                            not task.cancelled()
                            and task.exception() is None
                            and _text(task.result()) == "ok"
                        )
                        give_back = self._give_back(got, counted)
                        await _finish_quietly(asyncio.ensure_future(give_back))
                        raise
                    if status == "shutdown":
                        raise QueueShutDown()
                    return self._taken(got, lease)
        finally:
            if waiting:
                self._getters -= 1

    def _taken(self, entries: list[Entry], lease: bool) -> list[Entry]:
        """What a get returns is deleted from the server right after."""
        if not lease:
            self._to_finish.extend((e[0], e[3]) for e in entries)
            if self._closing:  # no finisher any more: now
                self._flush_sync()
            elif self._finisher is None or self._finisher.done():
                self._finisher = asyncio.ensure_future(self._finish())
                _unfinished.add(self)
        self._touch()
        return entries

    async def _finish(self) -> None:
        while self._to_finish:
            batch, self._to_finish = self._to_finish, []
            try:
                await self._run("finish", _finish_args(self._consumer, batch), closing=True)
            except ChuteError as exc:
                if _refused(exc):
                    return  # the queue's keys are gone: nothing left to delete
                # The server is away: the entries stay pending for this
                # consumer, and are deleted on a later try, at close, or at
                # exit (should this process die first: delivered again after
                # the lease, at least once).
                self._to_finish[:0] = batch
                if self._closing:
                    return
                await asyncio.sleep(max(self._backoff.delay, POLL))
            except BaseException:
                self._to_finish[:0] = batch  # for close(), or the exit
                raise

    def _flush_sync(self) -> None:
        batch, self._to_finish = self._to_finish, []
        if batch:
            try:
                self._run_sync("finish", _finish_args(self._consumer, batch), closing=True)
            except ChuteError as exc:
                if not _refused(exc):  # else the queue's keys are gone
                    self._to_finish[:0] = batch

    def _decode(self, entries: list[Entry], lease: bool) -> list[T]:
        out: list[T] = []
        bad: list[Entry] = []
        why: list[Any] = []  # id, count, the error (JSON), ... for the script
        error: Exception | None = None
        for entry in entries:
            try:
                out.append(self._codec.decode(entry[1]))
            except Exception as exc:
                bad.append(entry)
                why += [entry[0], entry[3], _error_json(exc)]
                error = error or exc
        if not bad:
            return out
        if not lease:  # not to be deleted as taken: buried instead
            ids = {e[0] for e in bad}
            self._to_finish = [p for p in self._to_finish if p[0] not in ids]
        self._run_sync("bury", [self._consumer, *why])
        good = [e for e in entries if e not in bad]
        if good:
            if not lease:
                ids = {e[0] for e in good}
                self._to_finish = [p for p in self._to_finish if p[0] not in ids]
            self._run_sync("give_back", [self._consumer, 1, *_pairs(good)])
        raise undecodable(self._name, self._codec, error) from error

    async def get(self, timeout: float | None = None) -> T:
        """Take the oldest item, waiting while empty."""
        return self._decode(await self._take(1, False, timeout), False)[0]

    async def get_batch(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Up to ``max_items`` items in one round trip, waiting for the first."""
        max_items = check_max_items(max_items)
        return self._decode(await self._take(max_items, False, timeout), False)

    def get_nowait(self) -> T:
        """Take the oldest item now or raise ``QueueEmpty`` (one round trip)."""
        entries = self._take_blocking(1, False, False, None)
        return self._decode(entries, False)[0]

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except QueueShutDown:
                return
            yield item

    # -- blocking (threads, and the nowait calls) ----------------------------------------

    def _take_blocking(
        self, max_items: int, lease: bool, block: bool, timeout: float | None
    ) -> list[Entry]:
        self._check_open()
        if timeout is not None:
            timeout = check_timeout(timeout)
        if block:
            check_not_on_loop("a blocking get")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reply = self._run_sync("claim", [self._consumer, max_items, self._vt_ms])
            found = self._entries(reply)
            if isinstance(found, list):
                got = found
                break
            if found == "shutdown":
                raise QueueShutDown()
            if found == "gone":
                raise self._gone()
            now = time.monotonic()
            if not block or (deadline is not None and now >= deadline):
                raise QueueEmpty()
            wait = BLOCK_SLICE if deadline is None else min(BLOCK_SLICE, deadline - now)
            if isinstance(found, float) and found >= 0:
                wait = min(wait, found)
            with self._lock:
                self._getters += 1
            try:
                raw = self._sync.xreadgroup(
                    GROUP, self._consumer, {self._keys[0]: ">"}, count=max_items,
                    block=max(1, int(wait * 1000)),
                )  # fmt: skip
            except (redis.RedisError, OSError) as exc:
                error = self._lost(exc)
                with contextlib.suppress(Exception):  # as in _run_sync
                    self._sync.connection_pool.disconnect(inuse_connections=False)
                raise error from exc
            finally:
                with self._lock:
                    self._getters -= 1
            got = _read_entries(raw)
            if got:
                status = _text(self._run_sync("took", [self._consumer, *(e[0] for e in got)]))
                if status == "shutdown":
                    raise QueueShutDown()
                break
        if not lease:
            self._run_sync("finish", [self._consumer, *_pairs(got)])
        return got

    def _put_blocking(
        self, records: list[bytes], items: list[T], single: bool, block: bool, timeout: float | None
    ) -> None:
        if timeout is not None:
            timeout = check_timeout(timeout)
        if block:
            check_not_on_loop("a blocking put")
        deadline = None if timeout is None else time.monotonic() + timeout
        counted = False
        try:
            while True:
                seen = self._changes  # a change from now on is not missed
                if self._put_outcome(self._run_sync("put", records), items, single):
                    return
                now = time.monotonic()
                if not block or (deadline is not None and now >= deadline):
                    raise QueueFull()
                wait = POLL if deadline is None else min(POLL, deadline - now)
                with self._lock:
                    if not counted:
                        counted = True
                        self._putters += 1
                    # Woken at once by this process's changes (a get, a larger
                    # maxsize); those of other clients are seen at the next look.
                    if self._changes == seen:
                        self._changed_sync.wait(wait)
        finally:
            if counted:
                with self._lock:
                    self._putters -= 1

    @property
    def sync(self) -> RedisSyncQueue[T]:
        """The ``queue.Queue`` API for plain threads and processes."""
        face = self._face
        if face is None:
            face = self._face = RedisSyncQueue(self)
        return face

    # -- task_done, join, shutdown -------------------------------------------------------

    def _control(self, *args: Any) -> None:
        status = _text(self._run_sync("control", list(args)))
        if status == "done":
            raise ValueError("task_done() called too many times")
        if status == "gone":
            raise self._gone()
        self._touch()

    def task_done(self) -> None:
        """One item taken by ``get`` is done (every client sees the count)."""
        self._control("task_done")

    def _unfinished(self, meta: _Meta) -> int:
        return 0 if meta.state == 2 else meta.unfinished

    async def join(self) -> None:
        """Until every item put (by any client) is marked done."""
        self._check_open()
        while True:
            reply = await self._detached("read", [])
            if _text(reply[0]) == "gone":
                raise self._gone()
            if self._unfinished(_Meta.of(reply)) == 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event().wait(), POLL)

    def _join_blocking(self) -> None:
        check_not_on_loop("a blocking join")
        while self._unfinished(self._read()):
            time.sleep(POLL)

    def shutdown(self, immediate: bool = False) -> list[T]:
        """Shut the queue down for every client: puts raise ``QueueShutDown``;
        gets go on until it is drained (with ``immediate=True`` they raise at
        once). Stored items are never deleted: this returns ``[]``, and
        :meth:`reopen` undoes it."""
        self._control("shutdown", 2 if immediate else 1)
        self._unblock_all()
        return []

    def reopen(self) -> None:
        """Undo :meth:`shutdown`: puts and gets work again, for every client."""
        self._control("reopen")

    # -- reservations and dead letters ---------------------------------------------------

    def reserve(self, timeout: float | None = None) -> RedisReservation[T]:
        """``async with q.reserve() as job``: at-least-once (see the README)."""
        return RedisReservation(self, timeout)

    async def _reserve(self, timeout: float | None) -> RedisJob[T]:
        return self._job(await self._take(1, True, timeout))

    def _job(self, entries: list[Entry]) -> RedisJob[T]:
        (id_, _data, deliveries, count) = entries[0]
        return RedisJob(self, self._decode(entries, True)[0], deliveries, id_, count)

    def _settle_args(
        self, id_: bytes, count: int, how: str, ms: int, error: BaseException | None = None
    ) -> list[Any]:
        return [self._consumer, id_, count, how, ms, self._vt_ms, _error_json(error)]

    def _settled(self, status: Any, how: str) -> Outcome:
        """What a settle script answered: how the job ended."""
        status = _text(status)
        if status == "stale":
            raise ChuteError(
                f"queue {self._name!r}: this job's lease ran out and the item was delivered "
                "again (or its keys were deleted); it is settled by whoever holds it now"
            )
        if status == "done":
            raise ValueError(
                "task_done() was already called for every item: this job cannot be settled"
            )
        self._touch()
        if how == "nack":
            self._unblock_all()  # this process's waiting gets look again
        if status == "acked":
            return "acked"
        if status == "dead":
            return "dead"
        return "retried"

    def dead_letters(self) -> list[DeadLetter[T]]:
        """The dead letters, oldest first (they stay), each with why it died."""
        return self._dead_letters(self._run_sync("dead", ["list"]))

    def purge_dead(self) -> list[DeadLetter[T]]:
        """Remove the dead letters and return them."""
        return self._dead_letters(self._run_sync("dead", ["purge"]))

    def _dead_letters(self, reply: Any) -> list[DeadLetter[T]]:
        out: list[DeadLetter[T]] = []
        for i in range(0, len(reply), 5):
            id_, data, deliveries, reason, error = reply[i : i + 5]
            info = _error_info(error)
            out.append(
                DeadLetter(
                    item=self._decode_or_raw(data),
                    deliveries=int(_text(deliveries) or 0),
                    # Buried with an id of the server's clock: when it died.
                    died_at=int(_text(id_).split("-")[0]) / 1000,
                    reason=_text(reason) or "failed",  # schema 1 kept no reason
                    error_type=None if info is None else info.type,
                    error=None if info is None else info.message,
                    traceback=None if info is None else info.traceback,
                )
            )
        return out

    def _decode_or_raw(self, data: bytes) -> Any:
        """A dead letter that cannot be decoded is handed back as stored
        rather than lost (it is often why it died)."""
        try:
            return self._codec.decode(data)
        except Exception:
            return data

    def requeue_dead(self) -> int:
        """Put every dead letter back at the end of the queue; how many."""
        n = int(self._run_sync("dead", ["requeue"]))
        if n < 0:
            raise QueueShutDown("cannot requeue into a queue that is shut down")
        self._touch()
        self._unblock_all()  # this process's waiting gets look again
        return n


#: Queues whose plain gets' entries may still wait to be deleted: done at exit.
_unfinished: weakref.WeakSet[RedisQueue[Any]] = weakref.WeakSet()


@atexit.register
def _finish_all() -> None:
    for q in list(_unfinished):
        with contextlib.suppress(Exception):
            q._flush_sync()


def _finish_args(consumer: str, batch: list[tuple[bytes, int]]) -> list[Any]:
    return [consumer, *(x for pair in batch for x in pair)]


def _pairs(entries: list[Entry]) -> list[Any]:
    """id, pending count, ...: what the scripts check an entry against."""
    return [x for e in entries for x in (e[0], e[3])]


def _read_entries(reply: Any) -> list[Entry]:
    """The entries of an ``XREADGROUP`` reply (delivered once more each)."""
    if not reply:
        return []
    out: list[Entry] = []
    for id_, kv in reply[0][1]:
        if isinstance(kv, dict):
            data, base = kv.get(b"d"), int(kv.get(b"n", 0))
        else:
            pairs = dict(zip(kv[::2], kv[1::2], strict=True))
            data, base = pairs.get(b"d"), int(pairs.get(b"n", 0))
        if data is None:  # pragma: no cover - not an entry of chute's
            continue
        out.append((id_, data, base + 1, 1))
    return out


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: whoever awaited it has its own copy


async def _uncancellable(aw: Any) -> Any:
    """Await ``aw`` in a task that a cancellation of the caller leaves running."""
    task = asyncio.ensure_future(aw)
    await _finish_quietly(task)
    return task.result()


async def _finish_quietly(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end even if the caller is cancelled meanwhile."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)


class RedisJob(JobBase[T]):
    """A reserved item of a Redis queue: an entry pending for this consumer."""

    __slots__ = ("_count", "_id", "_queue")

    def __init__(
        self, queue: RedisQueue[T], item: T, deliveries: int, id_: bytes, count: int
    ) -> None:
        super().__init__(item, deliveries)
        self._queue = queue
        self._id = id_
        self._count = count  # the fencing token

    def _args(self, how: str, ms: int, error: BaseException | None = None) -> list[Any]:
        return self._queue._settle_args(self._id, self._count, how, ms, error)

    def _settle(self, how: str, delay: float | None, error: BaseException | None = None) -> None:
        if self._settled:
            raise JobSettledError("this job was already settled")
        q = self._queue
        ms = round((delay or 0) * 1000)
        self._outcome = q._settled(q._run_sync("settle", self._args(how, ms, error)), how)
        self._settled = True

    async def _settle_async(
        self, how: str, delay: float | None, error: BaseException | None = None
    ) -> None:
        if self._settled:
            raise JobSettledError("this job was already settled")
        q = self._queue
        ms = round((delay or 0) * 1000)
        # Shielded: a settle that was sent is seen through, cancelled or not.
        status = await asyncio.shield(q._run("settle", self._args(how, ms, error)))
        self._outcome = q._settled(status, how)
        self._settled = True

    def ack(self) -> None:
        """The item is done: deleted from the stream (counts as ``task_done()``)."""
        self._settle("ack", None)

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        """Give the item back (claimable again after ``delay`` seconds), or to
        the dead letters after ``max_deliveries``. ``error``, if given, is
        kept as the item's last error: a dead letter shows it."""
        if delay is not None:
            delay = check_delay(delay)
        self._settle("nack", delay, error)

    async def extend(self, seconds: float | None = None) -> None:
        """Keep the lease ``seconds`` more from now (at most the visibility
        timeout; default: all of it). ``ChuteError`` if it already ran out
        and the item went to another consumer."""
        if self._settled:
            raise JobSettledError("this job was already settled")
        q = self._queue
        more = q._visibility if seconds is None else check_delay(seconds)
        if more > q._visibility:
            raise ValueError(
                f"a lease is extended by at most the visibility timeout ({q._visibility:g} s) "
                "at a time"
            )
        status = _text(await q._detached("settle", self._args("extend", round(more * 1000))))
        if status == "stale":
            raise ChuteError(
                f"queue {q._name!r}: this job's lease ran out and the item was delivered "
                "again; its lease cannot be extended"
            )


class RedisReservation(SettlingReservation[T]):
    """``async with q.reserve() as job`` (or ``job = await q.reserve()``)."""

    __slots__ = ()


class RedisSyncQueue(BlockingFace[T]):
    """The ``queue.Queue`` API on a Redis queue, for plain threads and
    worker processes with no event loop. It takes attributes, as a
    ``queue.Queue`` does (no ``__slots__`` here: it has a ``__dict__``)."""

    @property
    def is_shutdown(self) -> bool:
        return self._q.is_shutdown  # type: ignore[no-any-return]

    def configure(
        self,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
    ) -> None:
        """The queue's ``configure``."""
        self._q.configure(maxsize=maxsize, max_deliveries=max_deliveries)
