"""The distributed transport: a queue on Redis Streams (or Valkey), as a
backend of the durable core (``chute._durable``).

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

The bounds (``maxsize``, ``max_deliveries``) are stored in the meta hash
and the scripts read them at every call. Every change is one Lua script
(``redis_lua.py``), atomic on the server: a bounded put checks the length
and appends (Redis's own ``MAXLEN`` would trim the oldest items, silently
losing them); a claim takes the given-back and expired entries first
(oldest first), then new ones with ``XREADGROUP``; an ack checks that the
entry is still this job's — owner and delivery count, the fencing token —
before ``XACK`` and ``XDEL``. A get that finds nothing waits on the server
with ``XREADGROUP BLOCK`` on a connection of its own (``blocking_wait``),
and a cancelled wait is cut short with ``CLIENT UNBLOCK``.

Every item handed out is first an entry pending for this queue's consumer.
A plain get's entries are deleted once it returned them: by the next claim
or count this process sends (in the same script), or by a task that runs
right after; a get cancelled before it returns gives its entries back in
place, made claimable at once (``XCLAIM ... IDLE``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

from .._codecs import get_codec
from .._contract import UNSET, ErrorInfo, Outcome, Unset
from .._durable.backend import (
    Call,
    Capabilities,
    Claimed,
    Counts,
    DeadRecord,
    QueueState,
    Record,
    Settle,
    never_fits,
)
from .._durable.queue import DurableQueue, check_visibility, stored_bounds
from .._durable.waiting import ALL, EVERYONE, Hub, Rings, Wait
from .._exceptions import ChuteError, QueueNotFound, QueueShutDown
from .redis_client import (
    Backoff,
    Meta,
    bounded,
    check_connect_timeout,
    client_options,
    display,
    error_info,
    error_json,
    failure,
    refused,
    scan_names,
    text,
)
from .redis_lua import SCRIPTS

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the redis:// transport needs the Redis client: pip install 'chute[redis]'"
    ) from exc

from .._open import parse_redis_url

__all__ = ["RedisBackend", "RedisQueue"]

T = TypeVar("T")
R = TypeVar("R")
Undo = Callable[[R], Call[Any] | None]

#: 2: dead letters keep why they died (reason, last error), items keep their
#: last error, and every delayed item waits in ``later``. A queue of schema 1
#: is brought up to 2 when opened (nothing to rewrite: its dead letters list
#: with reason "failed" and no error).
SCHEMA_VERSION = 2
GROUP = "chute"
#: How often a full put or a join looks again for changes made elsewhere.
POLL = 0.02
#: The key parts of a queue, in the order the scripts see them as KEYS.
KEY_PARTS = ("items", "meta", "dead", "later", "back", "errors")
#: id, pending count: what the scripts check a plain get's entry against.
Pair = tuple[bytes, int]


class Script(Call[R]):
    """A Redis backend's call: a script, its arguments, and what reads its
    reply (raising chute's errors) — run the same from a task or a thread."""

    __slots__ = ("args", "name", "parse")

    def __init__(self, name: str, args: list[Any], parse: Callable[[Any], R]) -> None:
        self.name = name
        self.args = args
        self.parse = parse


class Claim(Call[Claimed]):
    """``claim``: the claim script, or, with ``wait``, a blocked read first."""

    __slots__ = ("leased", "n", "wait")

    def __init__(self, n: int, leased: bool, wait: float) -> None:
        self.n, self.leased, self.wait = n, leased, wait


class RedisBackend:
    """One named queue on one Redis server, for this process."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        blocking_wait=True,
        arrival_order_across_clients=True,
        immediate_shutdown_removes=False,
        delays=True,
    )
    #: Other clients' changes are not seen: full puts and joins look again.
    poll_interval: float | None = POLL

    def __init__(
        self,
        url: str,
        name: str,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
        create: bool = True,
        visibility_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        place = parse_redis_url(url)
        connect_timeout = check_connect_timeout(connect_timeout)
        self.name = name
        self.where = f"{place['host']}:{place['port']}"
        self.hub = Hub()
        self._url = url
        self._visibility = check_visibility(visibility_timeout)
        self._vt_ms = max(1, round(self._visibility * 1000))
        self._keys = [f"chute:{{{name}}}:{part}" for part in KEY_PARTS]
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._options = client_options(connect_timeout)
        self._sync = bounded(redis.Redis.from_url(url, **self._options))
        self._sync_scripts = {k: self._sync.register_script(v) for k, v in SCRIPTS.items()}
        #: A client per event loop, and its scripts.
        self._aio: dict[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = {}
        self._backoff = Backoff()
        self._closed = False
        self._closing = False
        self._seq = 0
        self._lock = threading.Lock()
        #: Entries plain gets returned, to delete: (id, pending count).
        self._to_finish: list[Pair] = []
        self._finisher: asyncio.Task[None] | None = None
        #: Blocked reads of this queue in this process: (connection's client, its id).
        self._blocked: set[tuple[Any, int]] = set()
        try:
            self._declare(maxsize, max_deliveries, create)
        except BaseException:
            self._sync.close()
            raise

    # -- opening -------------------------------------------------------------------------

    def _declare_args(
        self, maxsize: int | Unset, max_deliveries: int | Unset | None, create: bool
    ) -> list[Any]:
        return [
            "" if isinstance(maxsize, Unset) else maxsize,
            "" if isinstance(max_deliveries, Unset) else (max_deliveries or "none"),
            SCHEMA_VERSION,
            int(create),
        ]

    def _declare(
        self, maxsize: int | Unset, max_deliveries: int | Unset | None, create: bool
    ) -> None:
        """Create or look up the queue (and store what is passed)."""
        reply = self._script_sync("declare", self._declare_args(maxsize, max_deliveries, create))
        status = text(reply[0])
        if status == "alien":
            key = self._keys[1 if text(reply[1]) == "hash" else 0]
            raise ChuteError(
                f"Redis at {self.where}: the key {key!r}"
                f" exists (a {text(reply[1])}) but was not made by chute; "
                "choose another queue name"
            )
        if status == "newer":
            raise ChuteError(
                f"queue {self.name!r} on Redis at {self.where} was made by a newer chute "
                f"(schema {text(reply[1])}); this one reads schema {SCHEMA_VERSION}: upgrade chute"
            )
        if status == "missing":
            try:
                names = scan_names(self._sync)
            except (redis.RedisError, OSError) as exc:
                raise failure(exc, self.where) from exc
            there = f"queues there: {', '.join(names)}" if names else "no queues there"
            raise QueueNotFound(f"no queue {self.name!r} on {display(self._url)}; {there}")

    @classmethod
    def queue_names(cls, url: str, **options: Any) -> list[str]:
        """The names of the queues on the server at ``url``, sorted. Creates
        nothing. Options: those of the queue (only ``connect_timeout``
        matters here). Blocking I/O: call it off the event loop."""
        unknown = set(options) - {
            "codec",
            "visibility_timeout",
            "max_deliveries",
            "connect_timeout",
        }
        if unknown:
            raise TypeError(f"unknown option(s) for a redis:// queue: {', '.join(sorted(unknown))}")
        place = parse_redis_url(url)
        timeout = check_connect_timeout(options.get("connect_timeout", 5.0))
        client = bounded(redis.Redis.from_url(url, **client_options(timeout)))
        try:
            return scan_names(client)
        except (redis.RedisError, OSError) as exc:
            raise failure(exc, f"{place['host']}:{place['port']}") from exc
        finally:
            client.close()

    @property
    def seq(self) -> int:
        return self._seq

    def _gone(self) -> QueueNotFound:
        return QueueNotFound(
            f"queue {self.name!r} is no longer on Redis at {self.where} (its keys were deleted)"
        )

    # -- sending scripts -----------------------------------------------------------------

    def _lost(self, exc: BaseException) -> ChuteError:
        """A call failed on the way to the server or back: the error users
        see, and the backoff that spares the server the next calls."""
        error = failure(exc, self.where)
        self._backoff.failed(error)
        return error

    def _refusal(self, exc: redis.ResponseError) -> ChuteError:
        if "NOGROUP" in str(exc):  # the stream was deleted under the queue
            return self._gone()
        return ChuteError(f"Redis at {self.where} refused a chute command: {exc}")

    def _finishes_for(self, name: str) -> list[Pair]:
        """A claim or a read deletes what earlier plain gets returned, in the
        same script: no round trip of its own (taken when the call is made,
        before the finisher task, scheduled earlier, runs)."""
        if name not in ("claim", "read") or not self._to_finish:
            return []
        return self._take_finishes()

    def _unsent(self, batch: list[Pair], exc: BaseException) -> None:
        if batch and not refused(exc):  # else the queue's keys are gone
            with self._lock:
                self._to_finish[:0] = batch

    def _script_sync(self, name: str, args: list[Any]) -> Any:
        self._backoff.check()
        batch = self._finishes_for(name)
        try:
            reply = self._sync_scripts[name](keys=self._keys, args=[*args, *_flat(batch)])
        except redis.ResponseError as exc:
            error = self._refusal(exc)
            self._unsent(batch, error)
            raise error from exc
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            self._unsent(batch, error)
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
            import redis.asyncio as aioredis

            client = bounded(aioredis.Redis.from_url(self._url, **self._options))
            made = self._aio[loop] = (
                client,
                {k: client.register_script(v) for k, v in SCRIPTS.items()},
            )
        return made

    async def _script(self, name: str, args: list[Any], batch: list[Pair] | None = None) -> Any:
        """Run a script (``batch``: finishes taken for it, see ``_finishes_for``)."""
        if batch is None:
            batch = self._finishes_for(name)
        self._backoff.check()
        client, scripts = self._client()
        try:
            reply = await scripts[name](keys=self._keys, args=[*args, *_flat(batch)])
            if self._closed:  # a call that outlived aclose() left no connection open
                with contextlib.suppress(Exception):
                    await client.connection_pool.disconnect()
        except redis.ResponseError as exc:
            error = self._refusal(exc)
            self._unsent(batch, error)
            raise error from exc
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            self._unsent(batch, error)
            with contextlib.suppress(Exception):  # as in _script_sync
                await client.connection_pool.disconnect(inuse_connections=False)
            raise error from exc
        except BaseException:
            self._unsent(batch, ChuteError())
            raise
        self._backoff.ok()
        return reply

    # -- running calls -------------------------------------------------------------------

    async def _send(self, call: Call[R], batch: list[Pair] | None = None) -> R:
        if type(call) is Claim:
            return cast(R, await self._claim(call, batch))
        script = cast(Script[R], call)
        return script.parse(await self._script(script.name, script.args, batch))

    async def run(self, call: Call[R], *, undo: Undo[R] | None = None) -> R:
        if type(call) is Claim and call.wait > 0:
            # Cuts its wait short and gives back what it got if cancelled.
            return cast(R, await self._claim(call))
        # Shielded: a call that was sent is seen through; if its caller was
        # cancelled meanwhile, what it did is undone before going on.
        name = "claim" if type(call) is Claim else cast(Script[R], call).name
        task = asyncio.ensure_future(self._send(call, self._finishes_for(name)))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            await _finish_quietly(task)
            if undo is not None and not task.cancelled() and task.exception() is None:
                back = undo(task.result())
                if back is not None:
                    await _see_through(self._send(back))
            raise
        if type(call) is Claim and not call.leased:
            self._taken(cast(Claimed, result).records)
        return result

    def run_sync(self, call: Call[R], *, undo: Undo[R] | None = None) -> R:
        if type(call) is Claim:
            claimed = self._claim_sync(call)
            if not call.leased and claimed.records:
                # No task here to delete them after: now (a second round trip).
                self._script_sync("finish", [self._consumer, *_pairs(claimed.records)])
            return cast(R, claimed)
        script = cast(Script[R], call)
        return script.parse(self._script_sync(script.name, script.args))

    # -- plain gets' entries, deleted once returned ----------------------------------------

    def _taken(self, records: list[Record]) -> None:
        if not records:
            return
        with self._lock:
            self._to_finish.extend((r.key, r.token) for r in records)
        if self._closing:  # no finisher any more: now
            self._flush_sync()
        elif self._finisher is None or self._finisher.done():
            self._finisher = asyncio.ensure_future(self._finish())
            _unfinished.add(self)

    def _keep(self, records: list[Record]) -> None:
        """Records a get took but will not return (buried, or given back):
        not to be deleted as taken. Called before the call that settles
        them is sent, so the finisher cannot delete them first."""
        keys = {r.key for r in records}
        with self._lock:
            self._to_finish = [p for p in self._to_finish if p[0] not in keys]

    async def _finish(self) -> None:
        while self._to_finish:
            with self._lock:
                batch, self._to_finish = self._to_finish, []
            try:
                await self._script("finish", [self._consumer, *(x for p in batch for x in p)])
            except ChuteError as exc:
                if refused(exc):
                    return  # the queue's keys are gone: nothing left to delete
                # The server is away: the entries stay pending for this
                # consumer, and are deleted on a later try, at close, or at
                # exit (should this process die first: delivered again after
                # the lease, at least once).
                self._unsent(batch, exc)
                if self._closing:
                    return
                await asyncio.sleep(max(self._backoff.delay, POLL))
            except BaseException:
                self._unsent(batch, ChuteError())  # for close(), or the exit
                raise

    def _flush_sync(self) -> None:
        with self._lock:
            batch, self._to_finish = self._to_finish, []
        if batch:
            try:
                self._script_sync("finish", [self._consumer, *(x for p in batch for x in p)])
            except ChuteError as exc:
                self._unsent(batch, exc)

    # -- claiming, and waiting on the server -----------------------------------------------

    def claim(self, n: int, *, lease: float | None, wait: float = 0.0) -> Claim:
        return Claim(n, lease is not None, wait)

    def _claim_args(self, n: int) -> list[Any]:
        return [self._consumer, n, self._vt_ms]

    def _claimed(self, reply: Any, leased: bool) -> Claimed:
        status = text(reply[0])
        if status == "ok":
            records = [
                Record(reply[i], reply[i + 1], int(reply[i + 2]), int(reply[i + 3]))
                for i in range(1, len(reply), 4)
            ]
            self._seq += 1
            self.hub.ring({Wait.PUT: len(records), Wait.JOIN: ALL})
            return Claimed(records)
        if status == "empty":
            ms = int(reply[1])
            return Claimed([], None if ms < 0 else time.time() + ms / 1000)
        if status == "shutdown":
            raise QueueShutDown()
        raise self._gone()

    async def _claim(self, call: Claim, batch: list[Pair] | None = None) -> Claimed:
        if call.wait > 0:
            got = await self._blocked_read(call.n, call.wait)
            if got:
                return await self._took(got, call.leased)
            # Nothing new: given-back entries, expired leases and due delays
            # are found by the script, undone as any claim if cancelled.
            leased = call.leased

            def undo(claimed: Claimed) -> Script[None] | None:
                return self.give_back(claimed.records, leased=leased) if claimed.records else None

            return await self.run(Claim(call.n, leased, 0.0), undo=undo)
        reply = await self._script("claim", self._claim_args(call.n), batch)
        return self._claimed(reply, call.leased)

    def _claim_sync(self, call: Claim) -> Claimed:
        if call.wait > 0:
            got = self._blocked_read_sync(call.n, call.wait)
            if got:
                status = text(self._script_sync("took", [self._consumer, *(r.key for r in got)]))
                return self._took_status(status, got)
        return self._claimed(self._script_sync("claim", self._claim_args(call.n)), call.leased)

    def _took_status(self, status: str, got: list[Record]) -> Claimed:
        if status == "shutdown":  # the entries went back
            raise QueueShutDown()
        self._seq += 1
        self.hub.ring({Wait.PUT: len(got), Wait.JOIN: ALL})
        return Claimed(got)

    async def _took(self, got: list[Record], leased: bool) -> Claimed:
        """Count what a blocked read handed over (or give it back, after an
        immediate shutdown); cancelled, give it back."""
        task = asyncio.ensure_future(self._script("took", [self._consumer, *(r.key for r in got)]))
        try:
            status = text(await asyncio.shield(task))
        except asyncio.CancelledError:
            await _finish_quietly(task)
            counted = not task.cancelled() and task.exception() is None
            counted = counted and text(task.result()) == "ok"
            await _see_through(self._give_back_entries(got, counted=counted))
            raise
        claimed = self._took_status(status, got)
        if not leased:
            self._taken(got)
        return claimed

    async def _blocked_read(self, n: int, seconds: float) -> list[Record]:
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
            with contextlib.suppress(Exception):  # as in _script
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
                            "XREADGROUP", "GROUP", GROUP, self._consumer, "COUNT", n,
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
                await self._give_back_entries(got, counted=False)

    def _blocked_read_sync(self, n: int, seconds: float) -> list[Record]:
        try:
            raw = self._sync.xreadgroup(
                GROUP, self._consumer, {self._keys[0]: ">"}, count=n,
                block=max(1, int(seconds * 1000)),
            )  # fmt: skip
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            with contextlib.suppress(Exception):  # as in _script_sync
                self._sync.connection_pool.disconnect(inuse_connections=False)
            raise error from exc
        return _read_entries(raw)

    def _unblock_all(self) -> None:
        """Cut short this process's server-side waits: they look again, and
        find what was given back in place (which wakes no ``XREADGROUP``)."""
        for _client, cid in list(self._blocked):
            with contextlib.suppress(Exception):
                self._sync.client_unblock(cid)

    def _wake_readers(self) -> None:
        """After a change no ``XREADGROUP`` sees (an entry given back in
        place, a shutdown): this process's waiting gets look again."""
        if not self._blocked:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._unblock_all()
            return
        task = asyncio.ensure_future(self._aunblock_all())
        task.add_done_callback(_drop_outcome)

    async def _aunblock_all(self) -> None:
        """``_unblock_all`` without blocking the loop (any connection may
        unblock any client: this loop's does, in one round trip)."""
        if not self._blocked:
            return
        client = self._client()[0]
        with contextlib.suppress(Exception):
            async with client.pipeline(transaction=False) as pipe:
                for _client, cid in list(self._blocked):
                    pipe.client_unblock(cid)
                await pipe.execute()

    # -- giving back, burying, settling ------------------------------------------------------

    async def _give_back_entries(self, got: list[Record], *, counted: bool) -> None:
        with contextlib.suppress(ChuteError):
            await self._script("give_back", [self._consumer, int(counted), *_pairs(got)])
        self.hub.ring({Wait.GET: len(got)})
        await self._aunblock_all()

    def give_back(self, records: list[Record], *, leased: bool) -> Script[None]:
        if not leased:
            self._keep(records)
        args = [self._consumer, 1, *_pairs(records)]
        return self._changing("give_back", args, {Wait.GET: len(records)})

    def bury(self, records: list[tuple[Record, ErrorInfo]], *, leased: bool) -> Script[None]:
        if not leased:
            self._keep([r for r, _ in records])
        why: list[Any] = [self._consumer]
        for record, info in records:
            why += [record.key, record.token, error_json(info)]
        return Script("bury", why, self._ringing({Wait.JOIN: ALL}))

    def _changing(self, name: str, args: list[Any], rings: Rings) -> Script[None]:
        """A change that items given back in place follow: this process's
        blocked reads are cut short to find them (``XREADGROUP`` would not)."""

        def parse(reply: Any) -> None:
            self._seq += 1
            self.hub.ring(rings)
            self._wake_readers()

        return Script(name, args, parse)

    def _ringing(self, rings: Rings) -> Callable[[Any], None]:
        def parse(reply: Any) -> None:
            self._seq += 1
            self.hub.ring(rings)

        return parse

    def settle(
        self, record: Record, how: Settle, *, delay: float | None, error: ErrorInfo | None
    ) -> Script[Outcome]:
        ms = round((delay or 0) * 1000)
        args = [self._consumer, record.key, record.token, how.value, ms, self._vt_ms]
        args.append("" if error is None else error_json(error))

        def parse(reply: Any) -> Outcome:
            status = text(reply)
            if status == "stale":
                raise ChuteError(
                    f"queue {self.name!r}: this job's lease ran out and the item was delivered "
                    "again (or its keys were deleted); it is settled by whoever holds it now"
                )
            if status == "done":
                raise ValueError(
                    "task_done() was already called for every item: this job cannot be settled"
                )
            self._seq += 1
            if how is Settle.ACK:
                self.hub.ring({Wait.PUT: 1, Wait.JOIN: ALL})
            else:
                self.hub.ring(EVERYONE if delay else {Wait.GET: 1, Wait.JOIN: ALL})
                self._wake_readers()
            return cast(Outcome, status if status in ("acked", "dead") else "retried")

        return Script("settle", args, parse)

    def extend(self, record: Record, seconds: float) -> Script[None]:
        if seconds > self._visibility:
            raise ValueError(
                f"a lease is extended by at most the visibility timeout ({self._visibility:g} s) "
                "at a time"
            )
        ms = round(seconds * 1000)
        args = [self._consumer, record.key, record.token, "extend", ms, self._vt_ms, ""]

        def parse(reply: Any) -> None:
            if text(reply) == "stale":
                raise ChuteError(
                    f"queue {self.name!r}: this job's lease ran out and the item was delivered "
                    "again; its lease cannot be extended"
                )

        return Script("settle", args, parse)

    # -- storing ---------------------------------------------------------------------------

    def store(self, records: list[bytes]) -> Script[list[bytes] | None]:
        def parse(reply: Any) -> list[bytes] | None:
            status = text(reply[0])
            if status == "ok":
                self._seq += 1
                self.hub.ring({Wait.GET: len(records)})
                return list(reply[1:])
            if status == "full":
                return None
            if status == "never":
                raise never_fits(len(records), int(reply[1]))
            if status == "shutdown":
                raise QueueShutDown()
            raise self._gone()

        return Script("put", records, parse)

    def take_back(self, receipt: list[bytes]) -> Script[None]:
        def parse(reply: Any) -> None:
            if int(reply):
                self._seq += 1
                self.hub.ring({Wait.PUT: len(receipt), Wait.JOIN: ALL})

        return Script("take_back", receipt, parse)

    # -- the queue -------------------------------------------------------------------------

    def counts(self) -> Script[Counts]:
        def parse(reply: Any) -> Counts:
            if text(reply[0]) == "gone":
                raise self._gone()
            m = Meta.of(reply)
            return Counts(
                maxsize=m.maxsize,
                max_deliveries=m.max_deliveries,
                state=QueueState(m.state),
                ready=max(0, m.ready),
                in_flight=m.held + m.delayed,
                delayed=m.delayed,
                total_put=m.total_put,
                total_got=m.total_got,
                peak=m.peak,
                dead=m.dead,
                unfinished=m.unfinished,
            )

        return Script("read", [self._consumer], parse)

    def _control(self, args: list[Any], rings: Rings, *, unblock: bool = False) -> Script[None]:
        def parse(reply: Any) -> None:
            status = text(reply)
            if status == "done":
                raise ValueError("task_done() called too many times")
            if status == "gone":
                raise self._gone()
            self._seq += 1
            self.hub.ring(rings)
            if unblock:
                self._wake_readers()

        return Script("control", args, parse)

    def task_done(self) -> Script[None]:
        return self._control(["task_done"], {Wait.JOIN: ALL})

    def shutdown(self, *, immediate: bool) -> Script[None]:
        return self._control(["shutdown", 2 if immediate else 1], EVERYONE, unblock=True)

    def reopen(self) -> Script[None]:
        return self._control(["reopen"], EVERYONE)

    def configure(
        self, *, maxsize: int | Unset, max_deliveries: int | Unset | None
    ) -> Script[None]:
        def parse(reply: Any) -> None:
            if text(reply[0]) != "ok":
                raise self._gone()
            self._seq += 1
            self.hub.ring({Wait.PUT: ALL})

        return Script("declare", self._declare_args(maxsize, max_deliveries, False), parse)

    def dead_letters(self, *, purge: bool) -> Script[list[DeadRecord]]:
        def parse(reply: Any) -> list[DeadRecord]:
            out: list[DeadRecord] = []
            for i in range(0, len(reply), 5):
                id_, data, deliveries, reason, error = reply[i : i + 5]
                out.append(
                    DeadRecord(
                        data=data,
                        deliveries=int(text(deliveries) or 0),
                        # Buried with an id of the server's clock: when it died.
                        died_at=int(text(id_).split("-")[0]) / 1000,
                        reason=text(reason) or "failed",  # schema 1 kept no reason
                        error=error_info(error),
                    )
                )
            return out

        return Script("dead", ["purge" if purge else "list"], parse)

    def requeue_dead(self) -> Script[int]:
        def parse(reply: Any) -> int:
            n = int(reply)
            if n < 0:
                raise QueueShutDown("cannot requeue into a queue that is shut down")
            self._seq += 1
            self.hub.ring({Wait.GET: n, Wait.JOIN: ALL})
            return n

        return Script("dead", ["requeue"], parse)

    # -- the end ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections (what plain gets took is deleted first)."""
        if self._closed:
            return
        self._closing = True
        self._flush_sync()
        self._end()
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
        if self._to_finish:
            with contextlib.suppress(ChuteError):
                await self._script("finish", [self._consumer, *_flat(self._take_finishes())])
        self._end()
        loop = asyncio.get_running_loop()
        for client_loop, (client, _scripts) in self._aio.items():
            if client_loop is loop:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _take_finishes(self) -> list[Pair]:
        with self._lock:
            batch, self._to_finish = self._to_finish, []
        return batch

    def _end(self) -> None:
        self._closed = True
        self._unblock_all()
        self._sync.close()
        self.hub.ring(EVERYONE)  # this queue's waiters wake, and find it closed


class RedisQueue(DurableQueue[T]):
    """A queue on a Redis stream, shared by every client of the server;
    made by ``chute.open("redis://...")``.

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
        bounds = stored_bounds(maxsize, max_deliveries)
        get_codec(codec)  # wrong arguments connect to nothing
        backend = RedisBackend(
            url,
            name,
            create=create,
            visibility_timeout=visibility_timeout,
            connect_timeout=connect_timeout,
            **bounds,
        )
        super().__init__(backend, codec=codec, visibility_timeout=visibility_timeout)

    @classmethod
    def queue_names(cls, url: str, **options: Any) -> list[str]:
        """The names of the queues on the server at ``url``, sorted. Creates
        nothing. Blocking I/O: call it off the event loop."""
        return RedisBackend.queue_names(url, **options)


#: Backends whose plain gets' entries may still wait to be deleted: done at exit.
_unfinished: weakref.WeakSet[RedisBackend] = weakref.WeakSet()


@atexit.register
def _finish_all() -> None:
    for backend in list(_unfinished):
        with contextlib.suppress(Exception):
            backend._flush_sync()


def _pairs(records: list[Record]) -> list[Any]:
    """id, pending count, ...: what the scripts check an entry against."""
    return [x for r in records for x in (r.key, r.token)]


def _flat(batch: list[Pair]) -> list[Any]:
    return [x for pair in batch for x in pair]


def _read_entries(reply: Any) -> list[Record]:
    """The entries of an ``XREADGROUP`` reply (delivered once more each)."""
    if not reply:
        return []
    out: list[Record] = []
    for id_, kv in reply[0][1]:
        if isinstance(kv, dict):
            data, base = kv.get(b"d"), int(kv.get(b"n", 0))
        else:
            pairs = dict(zip(kv[::2], kv[1::2], strict=True))
            data, base = pairs.get(b"d"), int(pairs.get(b"n", 0))
        if data is None:  # pragma: no cover - not an entry of chute's
            continue
        out.append(Record(id_, data, base + 1, 1))
    return out


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: whoever awaited it has its own copy


async def _finish_quietly(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end even if the caller is cancelled meanwhile."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)


async def _see_through(aw: Any) -> None:
    """Run ``aw`` to its end whatever happens to the caller; its failure is
    dropped (an undo that cannot reach the server leaves the lease to expire)."""
    task = asyncio.ensure_future(aw)
    task.add_done_callback(_drop_outcome)
    await _finish_quietly(task)
