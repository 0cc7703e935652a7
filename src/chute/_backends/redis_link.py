"""The Redis backend's link to the server, for one queue in one process:
the scripts sent from a task or a thread, a plain get's entries deleted once
it returned them, and the waits on the server (``XREADGROUP BLOCK``) with
``CLIENT UNBLOCK`` to cut them short. ``RedisBackend`` (``redis.py``)
builds on it the primitives the durable core calls.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import socket
import threading
import time
import uuid
import weakref
from typing import Any

from .._durable.backend import Record
from .._durable.steps import drop_outcome, see_through
from .._durable.waiting import EVERYONE, Hub, Wait
from .._exceptions import ChuteError, QueueNotFound
from .redis_client import (
    Backoff,
    PackedScript,
    bounded,
    checkin,
    checkout,
    client_options,
    failure,
    holding,
    packed,
    read_through,
    refused,
    text,
)
from .redis_lua import SCRIPTS

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the redis:// transport needs the Redis client: pip install 'chute[redis]'"
    ) from exc

__all__ = [
    "GROUP",
    "POLL",
    "Pair",
    "ServerLink",
    "pairs",
]

GROUP = "chute"
#: A blocked read's connection's id (for CLIENT UNBLOCK), asked in front of it.
_CLIENT_ID = packed(("CLIENT", "ID"))
#: How often a full put or a join looks again for changes made elsewhere
#: (and how soon the finisher tries again while the server is away).
POLL = 0.02
#: The key parts of a queue, in the order the scripts see them as KEYS.
KEY_PARTS = (
    "items",
    "meta",
    "dead",
    "later",
    "back",
    "errors",
    "keys",
    "keyof",
    "marks",
    "deadrank",
)
#: id, pending count: what the scripts check a plain get's entry against.
Pair = tuple[bytes, int]


class ServerLink:
    """The connections of one queue (a sync client, and one per event loop)
    and what travels over them."""

    #: The visibility timeout in ms (a lease's length): the backend's.
    _vt_ms: int

    def __init__(self, url: str, name: str, where: str, connect_timeout: float) -> None:
        self.name = name
        self.where = where
        self.hub = Hub()
        self._url = url
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
        #: When (monotonic) a look last found nothing claimable, nor any item
        #: delayed (see ``looked_lately``).
        self._empty_look_at = -POLL
        #: Each blocked read's own consumer is told apart by this count.
        self._reads = itertools.count()

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
        if name not in ("claim", "read", "put") or not self._to_finish:
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
                {
                    k: PackedScript(client.register_script(v), self._keys)
                    for k, v in SCRIPTS.items()
                },
            )
        return made

    async def _script(
        self,
        name: str,
        args: list[Any],
        batch: list[Pair] | None = None,
        held: list[asyncio.CancelledError] | None = None,
    ) -> Any:
        """Run a script (``batch``: finishes taken for it, see ``_finishes_for``;
        ``held``: seen through once sent, see ``redis_client.read_through``)."""
        if batch is None:
            batch = self._finishes_for(name)
        self._backoff.check()
        client, scripts = self._client()
        try:
            reply = await scripts[name](client, [*args, *_flat(batch)], held)
            if self._closed:  # a call that outlived aclose() left no connection open
                with holding(held), contextlib.suppress(Exception):
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

    # -- waiting on the server --------------------------------------------------------------

    def _reading(self, n: int, seconds: float) -> tuple[list[Any], list[Any]]:
        """A blocked read's ``XREADGROUP`` (as a consumer of its own) and the
        TOOK script's arguments, which hand its entries to this process's
        consumer (``redis_lua.TOOK``)."""
        reader = f"{self._consumer}:{next(self._reads)}"
        read = [
            "XREADGROUP", "GROUP", GROUP, reader, "COUNT", n,
            "BLOCK", max(1, int(seconds * 1000)), "STREAMS", self._keys[0], ">",
        ]  # fmt: skip
        return read, [self._consumer, self._vt_ms, reader, n]

    async def _blocked_read(self, n: int, seconds: float) -> tuple[list[Record], str]:
        """Wait on the server (``XREADGROUP BLOCK``) up to ``seconds`` for new
        entries, on a connection of its own, with TOOK sent right behind:
        the entries read, and TOOK's answer ("ok": this get's; "look": given
        back, older ones wait; "shutdown": given back; "none": nothing read).
        Cancelled, the read is cut short with ``CLIENT UNBLOCK`` and whatever
        it got is given back."""
        client, scripts = self._client()
        pool = client.connection_pool
        me = asyncio.current_task()
        before = 0 if me is None else me.cancelling()
        # Taking the connection connects (or checks a pooled one): the server
        # may have gone since the claim that found nothing.
        self._backoff.check()
        try:
            conn = await checkout(pool)
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            with contextlib.suppress(Exception):  # as in _script
                await pool.disconnect(inuse_connections=False)
            raise error from exc
        if me is not None and me.cancelling() > before:
            # redis-py's own steps here (a new connection's connect, and
            # the look at a pooled one on a redis-py laid out otherwise, see
            # redis_client._unread) run under asyncio.timeout, which on
            # CPython 3.11 can swallow a cancellation meant for the caller:
            # it goes on from here instead of being lost.
            await checkin(pool, conn)
            raise asyncio.CancelledError
        read_command, took_args = self._reading(n, seconds)
        took = scripts["took"]
        # Read in this task, seen through as a script is (read_through): a
        # cancellation meanwhile is held, cuts the wait short (CLIENT
        # UNBLOCK, from another connection), and once the replies are in,
        # what the read got is given back before it goes on. A task and a
        # shield here were 5 call_soon and 2 loop passes of every item a
        # waiting get takes (cProfile of single items end to end).
        held: list[asyncio.CancelledError] = []
        blocked: list[tuple[Any, int]] = []  # this read's (client, id), once known
        cutter: list[asyncio.Task[None]] = []
        reading = [True]

        def cut_short() -> None:
            if blocked and not cutter:
                cutter.append(asyncio.ensure_future(self._unblock_while(blocked[0], reading)))

        try:
            try:
                # Its id, the read and TOOK in one round trip (TOOK runs
                # once the read is answered: one round trip less for every
                # item a waiting get takes; 5-10% less CPU an item, measured).
                await conn.send_packed_command(
                    _CLIENT_ID + packed(read_command) + took.packed(took_args)
                )
                blocked.append((client, int(await read_through(conn, held))))
                self._blocked.add(blocked[0])
                if held:
                    cut_short()
                got = _read_entries(await read_through(conn, held, cut_short))
                try:
                    status = await read_through(conn, held)
                except redis.exceptions.NoScriptError:  # the server lost it: sent again
                    status = await took.again(client, took_args, held)
            finally:
                reading[0] = False
                if cutter:  # the read is over: no more unblocks
                    cutter[0].cancel()
        except BaseException as exc:
            # Whatever it was, the connection may hold an unread reply.
            with contextlib.suppress(Exception):
                await conn.disconnect()
            if isinstance(exc, redis.RedisError | OSError):
                error = self._lost(exc)
                if held:
                    raise held[0] from error
                raise error from exc
            raise
        finally:
            if blocked:
                self._blocked.discard(blocked[0])
            with holding(held):
                await checkin(pool, conn)
                if self._closed:  # closed meanwhile: nothing may stay connected
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
        answer = text(status[0])
        if held:
            if answer == "ok":  # this get's, and counted: given back
                await see_through(self._give_back_entries(got, counted=True))
            elif got:  # TOOK gave them back in place: others may take them
                await see_through(self._given_back(len(got)))
            raise held[0]
        return got, answer

    async def _unblock_while(self, blocked: tuple[Any, int], reading: list[bool]) -> None:
        """Cut a blocked read short (its get was cancelled), again while it
        reads: an unblock that came before the read blocked did nothing."""
        client, cid = blocked
        while reading[0]:
            with contextlib.suppress(Exception):
                await client.client_unblock(cid)
            await asyncio.sleep(0.01)

    def _blocked_read_sync(self, n: int, seconds: float) -> tuple[list[Record], str]:
        read_command, took_args = self._reading(n, seconds)
        took = self._sync_scripts["took"]
        try:
            with self._sync.pipeline(transaction=False) as pipe:
                pipe.execute_command(*read_command)
                pipe.evalsha(took.sha, len(self._keys), *self._keys, *took_args)
                reply, status = pipe.execute(raise_on_error=False)
            if isinstance(reply, Exception):
                raise reply
            if isinstance(status, redis.exceptions.NoScriptError):  # the server lost it
                status = took(keys=self._keys, args=took_args)
            elif isinstance(status, Exception):
                raise status
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            with contextlib.suppress(Exception):  # as in _script_sync
                self._sync.connection_pool.disconnect(inuse_connections=False)
            raise error from exc
        return _read_entries(reply), text(status[0])

    def _unblock_all(self) -> None:
        """Cut short this process's server-side waits: they look again, and
        find what was given back in place (which wakes no ``XREADGROUP``)."""
        for _client, cid in list(self._blocked):
            with contextlib.suppress(Exception):
                self._sync.client_unblock(cid)

    def looked_lately(self) -> bool:
        """A look found nothing a moment ago. A get may then wait on the
        server at once: what it reads is counted by TOOK, which gives it
        back if anything older waits (so a vouch gone stale costs a round
        trip, never the order)."""
        return time.monotonic() - self._empty_look_at < POLL

    def _forget_looks(self) -> None:
        """This process gave items back in place (which no ``XREADGROUP``
        sees): its next gets look first, sparing that round trip."""
        self._empty_look_at = -POLL

    def _wake_readers(self) -> None:
        """After a change no ``XREADGROUP`` sees (an entry given back in
        place, a shutdown): this process's waiting gets look again, and
        its next gets look first."""
        self._forget_looks()
        if not self._blocked:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._unblock_all()
            return
        task = asyncio.ensure_future(self._aunblock_all())
        task.add_done_callback(drop_outcome)

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

    async def _give_back_entries(self, got: list[Record], *, counted: bool) -> None:
        with contextlib.suppress(ChuteError):
            await self._script("give_back", [self._consumer, int(counted), *pairs(got)])
        await self._given_back(len(got))

    async def _given_back(self, n: int) -> None:
        """``n`` entries went back in place: this process's gets look for
        them, waiting ones included (no ``XREADGROUP`` sees them)."""
        self._forget_looks()
        self.hub.ring({Wait.GET: n})
        await self._aunblock_all()

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


#: Backends whose plain gets' entries may still wait to be deleted: done at exit.
_unfinished: weakref.WeakSet[ServerLink] = weakref.WeakSet()


@atexit.register
def _finish_all() -> None:
    for backend in list(_unfinished):
        with contextlib.suppress(Exception):
            backend._flush_sync()


def pairs(records: list[Record]) -> list[Any]:
    """id, pending count, ...: what the scripts check an entry against."""
    return [x for r in records for x in (r.key, r.token)]


def _flat(batch: list[Pair]) -> list[Any]:
    return [x for pair in batch for x in pair]


def _read_entries(reply: Any) -> list[Record]:
    """The entries of an ``XREADGROUP`` reply (delivered once more each)."""
    if not reply:
        return []
    out: list[Record] = []
    add = out.append
    # Records built as tuples: the NamedTuple's own __new__ (a Python
    # function) cost a fifth of the client's time in this loop, run for
    # every item a blocked read hands over.
    new = tuple.__new__
    for id_, kv in reply[0][1]:
        if type(kv) is list and len(kv) == 2 and kv[0] == b"d":
            # As a put stores it (RESP2): the data, never delivered before.
            add(new(Record, (id_, kv[1], 1, 1)))
            continue
        if isinstance(kv, dict):
            data, base = kv.get(b"d"), int(kv.get(b"n", 0))
        else:
            pairs = dict(zip(kv[::2], kv[1::2], strict=True))
            data, base = pairs.get(b"d"), int(pairs.get(b"n", 0))
        if data is None:  # pragma: no cover - not an entry of chute's
            continue
        add(new(Record, (id_, data, base + 1, 1)))
    return out
