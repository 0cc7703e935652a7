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
import os
import socket
import threading
import time
import uuid
import weakref
from typing import Any

from .._durable.backend import Record
from .._durable.steps import drop_outcome, finish_quietly
from .._durable.waiting import EVERYONE, Hub, Wait
from .._exceptions import ChuteError, QueueNotFound
from .redis_client import Backoff, bounded, client_options, failure, refused, text
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


class Read:
    """A blocked read (``XREADGROUP BLOCK``) in flight on a connection of its own."""

    __slots__ = ("ends", "ids", "known", "n", "reader", "task")

    def __init__(self, n: int, reader: str, ends: float) -> None:
        self.n, self.reader, self.ends = n, reader, ends
        #: The connection's client and id, once known (for CLIENT UNBLOCK).
        self.ids: list[tuple[Any, int]] = []
        self.known = asyncio.Event()
        self.task: asyncio.Future[tuple[list[Record], str]]


class ServerLink:
    """The connections of one queue (a sync client, and one per event loop)
    and what travels over them."""

    def __init__(self, url: str, name: str, where: str, connect_timeout: float) -> None:
        self.name = name
        self.where = where
        self.hub = Hub()
        self._url = url
        self._prefix = f"chute:{{{name}}}:"
        self._keys = [self._prefix + part for part in KEY_PARTS]
        self._keys_packed = (_pack_keys(self._keys), len(self._keys))
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
        self._reads = 0  # blocked reads made: each one's consumer is named by its number
        #: Reads a claim that found nothing left in flight, for its caller's next claim.
        self._aheads: dict[asyncio.Task[Any], Read] = {}
        #: Reads being cut short, and the tasks doing it.
        self._dropping: dict[Read, asyncio.Future[None]] = {}
        self._cutting: set[asyncio.Task[Any]] = set()

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
                {k: client.register_script(v) for k, v in SCRIPTS.items()},
            )
        return made

    async def _evalsha(self, client: Any, script: Any, args: list[Any]) -> Any:
        """``script(keys=self._keys, args=args)``, sent as redis-py would send
        it (loaded first if the server does not know it), but packed here:
        redis-py's packing of the ten keys of every call, again and again,
        was a tenth of a single-item consumer's time."""
        pool = client.connection_pool
        conn = await pool.get_connection()
        try:
            try:
                await conn.send_packed_command(self._packed(script.sha, args), check_health=False)
                return await conn.read_response()
            except redis.exceptions.NoScriptError:
                await conn.send_command("SCRIPT", "LOAD", script.script)
                await conn.read_response()
                await conn.send_packed_command(self._packed(script.sha, args), check_health=False)
                return await conn.read_response()
        except redis.ResponseError:
            raise  # the whole reply was read: the connection is fine
        except BaseException:
            with contextlib.suppress(Exception):  # a reply may be left unread
                await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    def _packed(self, sha: str, args: list[Any], keys: tuple[bytes, int] | None = None) -> bytes:
        """``EVALSHA sha 10 <the queue's keys> args...`` as the protocol has it
        (``keys``: other keys, packed, and how many)."""
        parts = [b""]
        for arg in args:
            if type(arg) is bytes:
                b = arg
            elif type(arg) is str:
                b = arg.encode()
            elif type(arg) is int:
                b = b"%d" % arg
            else:
                b = repr(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        packed, n = self._keys_packed if keys is None else keys
        parts[0] = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n%s" % (
            3 + n + len(args), len(sha), sha.encode(), len(str(n)), n, packed,
        )  # fmt: skip
        return b"".join(parts)

    async def _script(self, name: str, args: list[Any], batch: list[Pair] | None = None) -> Any:
        """Run a script (``batch``: finishes taken for it, see ``_finishes_for``)."""
        if batch is None:
            batch = self._finishes_for(name)
        self._backoff.check()
        client, scripts = self._client()
        try:
            reply = await self._evalsha(client, scripts[name], [*args, *_flat(batch)])
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

    async def _blocked_read(self, n: int, seconds: float) -> tuple[list[Record], str]:
        """Wait on the server (``XREADGROUP BLOCK``) up to ``seconds`` for new
        entries, on a connection of its own; cancelled, the read is cut short
        with ``CLIENT UNBLOCK`` and whatever it got is given back.

        The read uses a consumer of its own, and the script that counts what
        it got (``took_read``) is sent behind it in the same packet: the
        server runs it as soon as the read returns, so a read that gets an
        item costs one round trip, not two. With what it got: ``"ok"``
        (counted, now this process's consumer's), ``"shutdown"`` (an
        immediate shutdown came first: given back), or ``"none"``."""
        client, scripts = self._client()
        pool = client.connection_pool
        me = asyncio.current_task()
        before = 0 if me is None else me.cancelling()
        conn = await self._connection(pool)
        if me is not None and me.cancelling() > before:
            # redis-py checks a pooled connection under asyncio.timeout(0),
            # which on CPython 3.11 can swallow a cancellation meant for the
            # caller: it goes on from here instead of being lost.
            await pool.release(conn)
            raise asyncio.CancelledError
        read = Read(n, self._reader_name(), time.monotonic() + seconds)
        try:
            await conn.send_packed_command(self._read_commands(conn, scripts, read, seconds, None))
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            await pool.release(conn)
            if isinstance(exc, redis.RedisError | OSError):
                raise self._lost(exc) from exc
            raise
        self._sent(client, conn, read)
        if me is not None and me.cancelling() > before:
            # Swallowed by the send's wait_for on CPython 3.11, which can lose
            # a cancellation that comes as the send ends: taken up here.
            await finish_quietly(asyncio.ensure_future(self._cut_short(read)))
            raise asyncio.CancelledError
        return await self._await_read(read)

    def _sent(self, client: Any, conn: Any, read: Read) -> None:
        """``read`` was sent on ``conn`` (connected: its id is known)."""
        read.ids.append((client, conn.chute_id))
        self._blocked.add(read.ids[0])
        read.known.set()
        read.task = asyncio.ensure_future(self._rest_of_read(client, conn, read))

    async def _connection(self, pool: Any) -> Any:
        # Taking the connection connects (or checks a pooled one): the server
        # may have gone since the claim that found nothing.
        self._backoff.check()
        try:
            return await pool.get_connection()
        except (redis.RedisError, OSError) as exc:
            error = self._lost(exc)
            with contextlib.suppress(Exception):  # as in _script
                await pool.disconnect(inuse_connections=False)
            raise error from exc

    def _read_commands(
        self, conn: Any, scripts: dict[str, Any], read: Read, seconds: float, bell: str | None
    ) -> list[bytes]:
        """The read and the count, packed; with a ``bell`` (see
        ``_look_ahead``), the read names it too."""
        streams = (self._keys[0], bell, ">", ">") if bell else (self._keys[0], ">")
        keys = self._keys_with(bell)
        return [
            *conn.pack_command(
                "XREADGROUP", "GROUP", GROUP, read.reader, "COUNT", read.n,
                "BLOCK", max(1, int(seconds * 1000)), "STREAMS", *streams,
            ),
            self._packed(scripts["took_read"].sha, [self._consumer, read.reader, read.n], keys),
        ]  # fmt: skip

    def _keys_with(self, bell: str | None) -> tuple[bytes, int] | None:
        if bell is None:
            return None
        packed, n = self._keys_packed
        return packed + _pack_keys([bell]), n + 1

    async def _rest_of_read(self, client: Any, conn: Any, read: Read) -> tuple[list[Record], str]:
        """Read the replies of ``_read_commands``; the connection goes back
        to the pool once they are in (closed if anything went wrong)."""
        pool = client.connection_pool
        try:
            try:
                raw = await conn.read_response()
            finally:
                self._blocked.discard(read.ids[0])
            got = _read_entries(raw)
            try:
                status = text(await conn.read_response())
            except redis.ResponseError:
                # Not run (a server that lost its scripts: NOSCRIPT): once
                # more, loaded first. What the read got is still its consumer's.
                args = [self._consumer, read.reader, read.n]
                status = text(await self._script("took_read", args))
        except BaseException:
            # Whatever it was, the connection may hold an unread reply.
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
            if self._closed:  # closed meanwhile: nothing may stay connected
                with contextlib.suppress(Exception):
                    await conn.disconnect()
        return got, status

    async def _await_read(self, read: Read) -> tuple[list[Record], str]:
        """The end of a blocked read; cancelled, it is cut short and what it
        got given back, to the end even if the caller is cancelled again."""
        try:
            return await asyncio.shield(read.task)
        except asyncio.CancelledError:
            await finish_quietly(asyncio.ensure_future(self._cut_short(read)))
            raise
        except (redis.RedisError, OSError) as exc:
            raise self._lost(exc) from exc

    # -- a claim that looks, and waits on the server if it found nothing --------------

    async def _look_ahead(
        self, args: list[Any], batch: list[Pair], n: int, seconds: float, ahead: list[Read]
    ) -> Any:
        """The claim script and, behind it in the same packet, a blocked read
        that blocks only if the claim found nothing (in ``ahead``, for the
        caller's next claim, which would make that read: see ``adopt``).

        The read also names a stream of its own (its "bell"), which the claim
        script makes, with the group, only when it found nothing: when it
        found something, the read fails at once (``NOGROUP``) instead of
        blocking or taking more."""
        client, scripts = self._client()
        pool = client.connection_pool
        try:
            conn = await self._connection(pool)
        except ChuteError as exc:
            self._unsent(batch, exc)
            raise
        read = Read(n, self._reader_name(), time.monotonic() + seconds)
        bell = f"{self._prefix}bell:{read.reader}"
        claim = self._packed(scripts["claim"].sha, [*args, *_flat(batch)], self._keys_with(bell))
        commands = [claim, *self._read_commands(conn, scripts, read, seconds, bell)]
        try:
            await conn.send_packed_command(commands)
            try:
                reply = await conn.read_response()
            except redis.ResponseError as exc:
                reply = exc
            if isinstance(reply, BaseException) or text(reply[0]) != "empty":
                for _ in range(2):  # answered at once: no bell, no wait
                    with contextlib.suppress(redis.ResponseError):
                        await conn.read_response()
            else:
                self._sent(client, conn, read)
                ahead.append(read)
                self._backoff.ok()
                return reply
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            await pool.release(conn)
            self._unsent(batch, exc if isinstance(exc, ChuteError) else ChuteError())
            if isinstance(exc, redis.RedisError | OSError):
                raise self._lost(exc) from exc
            raise
        await pool.release(conn)
        if self._closed:  # as in _script
            with contextlib.suppress(Exception):
                await conn.disconnect()
        if isinstance(reply, redis.ResponseError):
            if isinstance(reply, redis.exceptions.NoScriptError):  # the plain way loads it
                return await self._script("claim", args, batch)
            error = self._refusal(reply)
            self._unsent(batch, error)
            raise error from reply
        self._backoff.ok()
        return reply

    def _hold(self, caller: asyncio.Task[Any], read: Read) -> None:
        """Keep ``read`` for ``caller``'s next claim, which takes it at once
        (no step of the loop in between); otherwise it is cut short."""
        self._aheads[caller] = read
        asyncio.get_running_loop().call_soon(self._unheld, caller, read)

    def _unheld(self, caller: asyncio.Task[Any], read: Read) -> None:
        if self._aheads.get(caller) is read:
            del self._aheads[caller]
            self._drop_read(read)

    def _drop_read(self, read: Read) -> None:
        """Cut short a read nobody waits for (what it got goes back)."""
        task = asyncio.ensure_future(self._cut_short(read))
        self._dropping[read] = task
        task.add_done_callback(lambda _: self._dropping.pop(read, None))
        task.add_done_callback(drop_outcome)

    async def _clear_ahead(self, *, adopting: bool) -> None:
        """Before any other call: reads left in flight by claims whose caller
        did not wait after all (its deadline came) are cut short, and what
        they got is back, so that they take nothing meant for this call
        (an item put by this task next, say). ``adopting``: this is the
        caller's claim that waits, which takes its own."""
        me = asyncio.current_task()
        for caller, read in list(self._aheads.items()):
            if not (adopting and caller is me):
                del self._aheads[caller]
                self._drop_read(read)
        if self._dropping:
            await asyncio.wait(list(self._dropping.values()))

    def _clear_ahead_sync(self) -> None:
        """``_clear_ahead`` for a blocking call: those reads are cut short on
        the server now (what they got goes back once their loop runs)."""
        for read in [*self._aheads.values(), *self._dropping]:
            if read.ids and read.ids[0] in self._blocked:
                with contextlib.suppress(Exception):
                    self._sync.client_unblock(read.ids[0][1])

    def _adopt(self, n: int, seconds: float) -> Read | None:
        """The read the caller's last claim left in flight, if it fits a wait
        of ``seconds`` for ``n`` items (cut short at that time if sooner)."""
        me = asyncio.current_task()
        read = self._aheads.pop(me, None) if me is not None else None
        if read is None:
            return None
        if read.n != n:
            self._drop_read(read)
            return None
        left = read.ends - time.monotonic()
        if seconds < left - 0.001:
            timer = asyncio.get_running_loop().call_later(seconds, self._unblock_one, read)
            read.task.add_done_callback(lambda _: timer.cancel())
        return read

    def _unblock_one(self, read: Read) -> None:
        task = asyncio.ensure_future(self._end_wait(read))
        self._cutting.add(task)
        task.add_done_callback(self._cutting.discard)
        task.add_done_callback(drop_outcome)

    async def _end_wait(self, read: Read) -> None:
        """Unblock ``read`` on the server, once its connection's id is known."""
        ids = read.ids
        id_known = asyncio.ensure_future(read.known.wait())
        try:
            while not read.task.done():  # unblocked before it blocked: again
                either: list[asyncio.Future[Any]] = [read.task, id_known]
                await asyncio.wait(either, timeout=1, return_when=asyncio.FIRST_COMPLETED)
                if ids and ids[0] in self._blocked and not read.task.done():
                    with contextlib.suppress(Exception):
                        await ids[0][0].client_unblock(ids[0][1])
                    await asyncio.wait([read.task], timeout=0.01)
        finally:
            id_known.cancel()

    def _reader_name(self) -> str:
        """A consumer name for one blocked read (deleted by ``took_read``)."""
        self._reads += 1
        return f"{self._consumer}~{self._reads}"

    async def _cut_short(self, read: Read) -> None:
        await self._end_wait(read)
        if not read.task.cancelled() and read.task.exception() is None:
            got, status = read.task.result()
            if got and status == "ok":  # counted in total_got, and this consumer's
                await self._give_back_entries(got, counted=True)

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
        self.hub.ring({Wait.GET: len(got)})
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


def _pack_keys(keys: list[str]) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(k.encode()), k.encode()) for k in keys)


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
