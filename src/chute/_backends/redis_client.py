"""The Redis backend's dealings with redis-py: connections whose whole
set-up is bounded, errors translated into chute's at the boundary, a
backoff after a lost connection, and what the read script answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

from .._contract import ErrorInfo
from .._exceptions import ChuteError
from .._open import parse_redis_url

try:
    import redis
    import redis.asyncio as aioredis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the redis:// transport needs the Redis client: pip install 'chute[redis]'"
    ) from exc

R = TypeVar("R")

#: What marks a queue on a server: its meta hash.
META_PATTERN = "chute:{*}:meta"


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def failure(exc: BaseException, where: str) -> ChuteError:
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return ChuteError(f"Redis at {where} refused the credentials: {exc}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return ChuteError(f"Redis at {where} is unreachable: {exc}")
    return ChuteError(f"Redis at {where} failed: {exc}")


def refused(exc: BaseException) -> bool:
    """Whether a ``ChuteError`` raised by the backend is the server refusing
    a script (say, the queue's keys were deleted), rather than a lost
    connection."""
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

    # -- the reply timeout, kept cheaply --------------------------------------------------
    #
    # With a reply timeout set, redis-py bounds every write by
    # ``asyncio.wait_for`` (a task of its own per command) and every read
    # by ``asyncio.timeout`` (a timer made and cancelled per reply):
    # together a sixth of a single item's time end to end, measured. Here
    # a small write goes unbounded (it fits the transport's buffer, which
    # holds no backlog: each call waits for its reply before the next is
    # sent), and a read is watched by one timer per connection, armed at
    # most once per timeout while replies come: a reply not there within
    # the timeout aborts the connection, and the read fails as it would
    # have.

    _reading_since: float | None = None
    _watchdog: asyncio.TimerHandle | None = None
    _timed_out = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        me: Any = self
        if _size(command) > SMALL_WRITE:
            await super().send_packed_command(command, check_health)
            return
        replies, me.socket_timeout = me.socket_timeout, None
        try:
            await super().send_packed_command(command, check_health)
        finally:
            me.socket_timeout = replies

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        me: Any = self
        replies = me.socket_timeout
        timeout = kwargs.get("timeout", args[1] if len(args) > 1 else None)
        if timeout is not None or not replies:
            return await super().read_response(*args, **kwargs)
        loop = asyncio.get_running_loop()
        self._timed_out = False
        self._reading_since = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_later(replies, self._look, loop, replies)
        me.socket_timeout = None
        try:
            return await super().read_response(*args, **kwargs)
        except redis.ConnectionError as exc:
            if self._timed_out:
                raise redis.TimeoutError("Timeout reading from socket") from exc
            raise
        finally:
            me.socket_timeout = replies
            self._reading_since = None

    def _look(self, loop: asyncio.AbstractEventLoop, replies: float) -> None:
        """The watchdog: a reply awaited for ``replies`` seconds ends the connection."""
        self._watchdog = None
        since = self._reading_since
        if since is None:
            return  # idle: armed again by the next read
        left = since + replies - loop.time()
        if left > 0:
            self._watchdog = loop.call_later(left, self._look, loop, replies)
            return
        self._timed_out = True
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.transport.abort()  # the read waiting on it fails

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        await super().disconnect(*args, **kwargs)


def _size(command: Any) -> int:
    if isinstance(command, bytes | str):
        return len(command)
    return sum(len(part) for part in command)


#: Bytes a write may have and not need a bound: asyncio's transport buffers
#: 64 KiB before a write waits for the other side to read.
SMALL_WRITE = 1 << 15


class _BoundedAsyncSSLConnection(_BoundedAsyncConnection, aioredis.SSLConnection):
    pass


_BOUNDED: dict[type, type] = {
    redis.Connection: _BoundedConnection,
    redis.SSLConnection: _BoundedSSLConnection,
    aioredis.Connection: _BoundedAsyncConnection,
    aioredis.SSLConnection: _BoundedAsyncSSLConnection,
}


def bounded(client: Any) -> Any:
    """``client`` with its connections' set-up bounded (see above)."""
    pool = client.connection_pool
    pool.connection_class = _BOUNDED.get(pool.connection_class, pool.connection_class)
    return client


class PackedScript:
    """A script of the queue's, called from an event loop: its ``EVALSHA``,
    sha and keys packed once, the arguments each call.

    redis-py's path for a script call (the script object, ``execute_command``
    with its retry and observability wrappers, every key encoded again)
    cost about 15 us of Python a call here, and a waiting consumer makes
    four such calls an item: single items end to end went from 3.0k to
    3.8k a second without it. The reply and its errors are redis-py's own
    (``read_response``); a server that lacks the script (restarted, or
    flushed) is sent it by redis-py's script object, once.
    """

    __slots__ = ("fixed", "keys", "prefix", "script")

    def __init__(self, script: Any, keys: list[str]) -> None:
        self.script, self.keys = script, keys
        head = [b"EVALSHA", script.sha.encode(), str(len(keys)).encode()]
        head += [key.encode() for key in keys]
        self.fixed = len(head)
        self.prefix = b"".join(_bulk(part) for part in head)

    def packed(self, args: list[Any]) -> bytes:
        """The call as a command, packed (to send alone, or behind others)."""
        return b"".join([b"*%d\r\n" % (self.fixed + len(args)), self.prefix, *_bulks(args)])

    async def __call__(
        self, client: Any, args: list[Any], held: list[asyncio.CancelledError] | None = None
    ) -> Any:
        """The script's reply. With ``held``, a call that was sent is seen
        through whatever becomes of the caller (see ``read_through``)."""
        command = self.packed(args)
        try:
            if held is not None and len(command) > SMALL_WRITE:
                # A large write may wait for the socket, where a cancelled
                # write would still be flushed: sent by a task of its own.
                return await through(self._send(client, command), held)
            return await self._send(client, command, held)
        except redis.exceptions.NoScriptError:
            if held is None:
                return await self.script(keys=self.keys, args=args)
        return await self.again(client, args, held)

    async def again(self, client: Any, args: list[Any], held: list[asyncio.CancelledError]) -> Any:
        """After NOSCRIPT (the server restarted, or was flushed): the script
        loaded and the call sent behind the load, in one write, by a task of
        its own seen through (it may have to connect: the caller may hold
        the pool's other connections)."""
        command = packed(("SCRIPT", "LOAD", self.script.script)) + self.packed(args)
        return await through(self._send(client, command, load=True), held)

    async def _send(
        self,
        client: Any,
        command: bytes,
        held: list[asyncio.CancelledError] | None = None,
        load: bool = False,
    ) -> Any:
        pool = client.connection_pool
        conn = await checkout(pool)
        try:
            await conn.send_packed_command(command, check_health=False)
            if held is not None:
                return await read_through(conn, held)
            if load:
                try:
                    await conn.read_response()  # the script's sha
                except redis.ResponseError:
                    # Refused (an ACL without SCRIPT LOAD, say): the call's own
                    # answer behind it is read too, leaving nothing unread.
                    with contextlib.suppress(redis.ResponseError):
                        await conn.read_response()
                    raise
            return await conn.read_response()
        finally:
            with holding(held):
                await checkin(pool, conn)  # waits only for one redis-py reconnects


async def through(aw: Awaitable[R], held: list[asyncio.CancelledError]) -> R:
    """``aw`` in a task of its own, awaited to its end: each cancellation of
    the caller meanwhile is held (see ``read_through``)."""
    task = asyncio.ensure_future(aw)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.cancelled():
                raise  # the task itself was cancelled (the loop is closing)
            held.append(exc)  # (a task that just ended answers the next await)


async def read_through(
    conn: Any, held: list[asyncio.CancelledError], on_hold: Callable[[], None] | None = None
) -> Any:
    """The reply to the command just sent on ``conn``, read in the calling
    task to its end: a cancellation meanwhile is put off (appended to
    ``held``, for the caller to raise once it has dealt with the reply).

    This is ``asyncio.shield`` without its task: a task and a shield per
    call were 5 ``call_soon`` and 2 loop passes of every put and settle
    (cProfile of single items end to end, 20 ``call_soon`` and 6.3 loop
    passes an item). A cancelled read leaves the connection as it was
    (redis-py's parsers keep what they have read, and a ``StreamReader``
    read cancelled while waiting takes nothing), so it is read again; a
    failed one disconnects, as redis-py's own does. ``on_hold``: called at
    each cancellation held (to cut a wait short)."""
    while True:
        try:
            return await conn.read_response(disconnect_on_error=False)
        except asyncio.CancelledError as exc:
            held.append(exc)
            if on_hold is not None:
                on_hold()
        except redis.ResponseError:
            raise  # the server's answer: the connection is fine
        except BaseException:
            with holding(held), contextlib.suppress(Exception):  # the read's error is raised
                await conn.disconnect(nowait=True)
            raise


@contextlib.contextmanager
def holding(held: list[asyncio.CancelledError] | None) -> Iterator[None]:
    """A cancellation in the block is held (appended to ``held``, see
    ``read_through``); with ``held`` None it goes on at once."""
    try:
        yield
    except asyncio.CancelledError as exc:
        if held is None:
            raise
        held.append(exc)


async def checkout(pool: Any) -> Any:
    """A connection from an event loop's pool, checked as redis-py checks
    one (connected, nothing unread on it), without the rest of redis-py's
    checkout: its pools take an asyncio lock (since 6.x) and record four
    metrics a call (since 8.x), and announce each return for credentials
    that renew themselves, which chute's pools (made from a URL) never have. cProfile
    of single items end to end put its checkout and return at 15% of the
    client's time, three calls an item. A new connection is made by
    redis-py's own path, with its limits."""
    free = getattr(pool, "_available_connections", None)
    if not free:
        return await pool.get_connection(*_CHECKOUT)
    conn = free.pop()
    pool._in_use_connections.add(conn)
    try:
        await conn.connect()  # at once when connected
        try:
            if await _unread(conn):
                raise redis.ConnectionError("Connection has data")
        except (redis.ConnectionError, OSError):
            # Returned with a reply unread, or closed by the server: anew.
            await conn.disconnect()
            await conn.connect()
            if await _unread(conn):
                raise redis.ConnectionError("Connection not ready") from None
    except BaseException:
        await checkin(pool, conn)
        raise
    return conn


async def _unread(conn: Any) -> bool:
    """Whether a connection holds a reply no one read, or was closed by
    the server: redis-py 8's look, made here on every version. redis-py 5's
    waits for a turn of the loop under ``asyncio.timeout(0)``, and with
    hiredis reads the socket until that timeout cancels it: cProfile of
    single items end to end (redis-py 5.3.1 with hiredis, what the bench
    extra installs) counted 14 stream reads and 6 loop passes an item,
    where a look at what is already buffered suffices (a reply cut short
    disconnects its connection in redis-py, so an unread one can only be
    whole, and buffered). Connections laid out otherwise get redis-py's own
    look."""
    seen = _buffered(conn)
    return bool(await getattr(conn, _UNREAD)()) if seen is None else seen


def _buffered(conn: Any) -> bool | None:
    """Whether anything is buffered on ``conn`` (or its stream ended or
    failed); None if it is not laid out as this look knows."""
    stream, parser = getattr(conn, "_reader", None), getattr(conn, "_parser", None)
    buffered = getattr(stream, "_buffer", None)
    if stream is None or parser is None or not isinstance(buffered, bytearray):
        return None
    if buffered or stream.at_eof() or stream.exception() is not None:
        return True
    hiredis = getattr(parser, "_reader", None)  # a hiredis.Reader, with hiredis
    if hiredis is not None:
        return bool(hiredis.has_data()) if hasattr(hiredis, "has_data") else None
    pending = getattr(parser, "_buffer", None)  # the Python parser's unread bytes
    return bool(pending) if isinstance(pending, bytes | bytearray) else None


#: The check for a reply left unread (or a closed socket): renamed in
#: redis-py 8, which warns on the old name.
_UNREAD = (
    "can_read"
    if hasattr(aioredis.connection.AbstractConnection, "can_read")
    else "can_read_destructive"
)


async def checkin(pool: Any, conn: Any) -> None:
    """A connection from ``checkout`` back to its pool."""
    # should_reconnect (redis-py 7 and newer): the server announced a move.
    reconnects = getattr(conn, "should_reconnect", None)
    if not hasattr(pool, "_available_connections") or (reconnects and reconnects()):
        await pool.release(conn)  # redis-py's way: it reconnects it first
        return
    try:
        pool._in_use_connections.remove(conn)
    except KeyError:
        return  # the pool was reset meanwhile: not its connection any more
    pool._available_connections.append(conn)


def packed(command: list[Any] | tuple[Any, ...]) -> bytes:
    """A command as the server reads it (RESP): what redis-py's
    ``pack_command`` makes, without its general path (a fifth of a waiting
    consumer's Python, measured, for the three commands of a blocked read)."""
    return b"".join([b"*%d\r\n" % len(command), *_bulks(command)])


def _bulks(args: list[Any] | tuple[Any, ...]) -> list[bytes]:
    """Each argument as a bulk string. Text, bytes and ints (nearly every
    argument) take the short way: about 30 arguments an item, and two
    calls each were 6% of a waiting consumer's Python (cProfile)."""
    out = []
    for arg in args:
        kind = type(arg)
        if kind is str:
            value = arg.encode()
        elif kind is bytes:
            value = arg
        elif kind is int:
            value = b"%d" % arg
        else:
            value = _encoded(arg)
        out.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return out


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _encoded(value: Any) -> bytes:
    """An argument as redis-py's encoder sends it."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise redis.DataError(f"cannot send {type(value).__name__} to Redis")


#: redis-py before 5.3 wants a command name for a connection from the pool;
#: later ones warn if given one.
_NAME = inspect.signature(aioredis.ConnectionPool.get_connection).parameters.get("command_name")
_CHECKOUT: tuple[str, ...] = (
    ("EVALSHA",) if _NAME is not None and _NAME.default is inspect.Parameter.empty else ()
)


#: Seconds a reply may take before its connection counts as lost: no reply
#: takes this long (waits block for a quarter second at most), and a server
#: that stops answering fails the call instead of hanging it.
REPLY_TIMEOUT = 30.0


def client_options(connect_timeout: float) -> dict[str, Any]:
    return {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": REPLY_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "protocol": 2,  # the replies parsed here are RESP2's
    }


def display(url: str) -> str:
    """The server as users name it, without its password."""
    where = parse_redis_url(url)
    scheme = urlsplit(url).scheme.lower()
    return f"{scheme}://{where['host']}:{where['port']}/{where['db']}"


def scan_names(client: Any) -> list[str]:
    """The queues on a server, by their meta hashes (``SCAN``, which never
    blocks the server the way ``KEYS`` does); a hash that only looks like
    one, without chute's schema field, is not a queue."""
    prefix, suffix = "chute:{", "}:meta"
    keys = [text(k) for k in client.scan_iter(match=META_PATTERN, count=1000, _type="HASH")]
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hexists(key, "v")
    marked = pipe.execute()
    return sorted({k[len(prefix) : -len(suffix)] for k, ok in zip(keys, marked, strict=True) if ok})


def error_info(stored: Any) -> ErrorInfo | None:
    if not stored:
        return None
    try:
        d = json.loads(text(stored))
    except ValueError:  # not written by chute: shown as the message
        return ErrorInfo("", text(stored), "")
    return ErrorInfo.from_dict(d if isinstance(d, dict) else None)


class Meta(NamedTuple):
    """What the read script answers: the meta hash and the counts."""

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
    scheduled: int  # put with a delay, not due yet
    #: Asked for: ms since the oldest waiting entry joined the stream.
    oldest_ms: int | None = None

    @classmethod
    def of(cls, reply: Any) -> Meta:
        v = [None if x in (None, b"") else int(text(x)) for x in reply]
        n = [0 if x is None else x for x in v]
        oldest = v[13] if len(v) > 13 else None
        if oldest is not None and oldest < 0:  # asked, and none waits
            oldest = None
        return cls(n[0], n[1], n[2], v[3], *n[4:13])._replace(oldest_ms=oldest)


class Backoff:
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
