"""The PostgreSQL backend's link to the server: one :class:`Store` per
database and schema per process, shared by every queue opened there.

A store holds:

- a connection pool per event loop (asyncpg connections belong to the loop
  that made them): a task's call runs on its own loop, without crossing to
  another thread;
- a private event loop in a thread of its own, for the blocking face
  (``run_sync``: a plain thread's call runs there and the thread waits) and
  for the listener;
- the listener: one connection that ``LISTEN``\\s on the schema's channel
  and rings the hub of the queue each notification names, so that a getter
  waiting here wakes when a put commits anywhere. After losing the server it
  connects again and rings everyone (what it missed meanwhile is looked at).

Errors leave here as chute's: a driver exception never reaches users.

Here too: :class:`Sql`, what a backend call is (a function of a
connection, and whom it rings), shared by the backend (``postgres.py``),
its dead-letter calls (``postgres_dead_letters.py``) and :class:`Through`,
which runs calls on a caller's connection.

Why asyncpg, for both faces: measured on one server, its single statements
tie with psycopg 3's (about 14,000 puts/s each), but end to end (one
producer, four consumers) it moved 5,500-7,100 items/s against psycopg's
async connections' 3,600-4,200, and its ``LISTEN`` woke a getter in 48 us
against 75. The blocking face runs its calls on the store's private loop
(120-135 us a call, against 70 for psycopg's own blocking connections):
a slower sync face, for one driver and one set of errors to keep.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from .._durable.backend import Call, Unreachable
from .._durable.steps import drive
from .._durable.waiting import ALL, EVERYONE, Hub, Rings, Wait
from .._exceptions import ChuteError, LeaseLost, QueueNotFound, QueueShutDown

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the postgresql:// transport needs asyncpg: pip install 'chute[postgres]'"
    ) from exc

__all__ = [
    "DRIVER_ERRORS",
    "Fn",
    "Part",
    "Sql",
    "Store",
    "failure",
    "is_lost",
    "place",
    "result_of",
    "wait_through",
]

R = TypeVar("R")
Fn = Callable[[Any], Awaitable[R]]

#: Connections a loop's pool opens at most: calls beyond wait for one.
POOL_SIZE = 10
#: How soon the listener tries again after losing the server (doubling, capped).
RECONNECT = (0.05, 2.0)
#: Durable calls (puts, settles) of one loop sent together at most.
MAX_GROUP = 32
#: Turns of the loop a group waits before it is sent, so that the callers
#: its predecessor just answered (a producer's next put) can join it: one
#: turn for the answer to reach the caller (the shield's callback), one for
#: the caller to run and call again (counted: the next put is there after
#: two turns in 99% of groups, on asyncio's loop and on uvloop; each turn
#: more is a turn longer for every put).
GATHER = 2


def place(url: str) -> dict[str, str]:
    """What a URL names, for messages (never its password)."""
    parts = urlsplit(url)
    return {
        "user": unquote(parts.username or "") or "(default user)",
        "where": f"{parts.hostname or 'localhost'}:{parts.port or 5432}",
        "database": unquote(parts.path.lstrip("/")) or "(default database)",
    }


def failure(exc: BaseException, url: str, schema: str = "chute") -> ChuteError:
    """The error users see for a driver's exception, naming the problem."""
    p = place(url)
    at = f"PostgreSQL at {p['where']}"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # a wrong password too
        return ChuteError(f"{at} refused user {p['user']!r}: {exc}")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return ChuteError(f"{at} has no database {p['database']!r}: {exc}")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return ChuteError(
            f"{at}: user {p['user']!r} may not create or use chute's schema {schema!r} in "
            f"database {p['database']!r} ({exc}); create it for them "
            f"(CREATE SCHEMA {schema} AUTHORIZATION ...) or grant CREATE on the database"
        )
    if isinstance(exc, asyncpg.PostgresError) and not is_lost(exc):
        return ChuteError(f"{at} refused a chute call: {exc}")
    why = str(exc) or type(exc).__name__
    if not isinstance(exc, asyncpg.ConnectionDoesNotExistError) or isinstance(
        exc.__cause__, asyncpg.OperatorInterventionError
    ):
        # Nothing was done: no connection, a connection found closed before
        # the call was sent, or a call the server aborted as it went down
        # (or whose connection it had ended before the call came).
        # (Lost in the middle of a call, it may have committed: not so.)
        return Unreachable(f"{at} cannot be reached ({why})")
    return ChuteError(f"{at}: the connection failed ({why})")


#: The driver's exceptions that ``failure`` makes chute's errors of.
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def is_lost(exc: BaseException) -> bool:
    """The connection is gone (or never came): not an answer to the call."""
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError  # a connection cut before the loop saw it close
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError,
    )


class Part:
    """A call of one of chute's functions, ``target(*args)``: run alone
    (``await part(conn)``: one statement, one transaction), or, if it
    ``groups``, in one statement with the durable calls of other callers
    of its loop (``_Pool.grouped``). ``refuse`` makes chute's error of the
    server's refusal; ``then``, the answer of what the server sent.

    ``wakes``: the queue whose getters it notifies (a put, a nack), or
    None. A group holds one such call per queue at most: PostgreSQL
    delivers a transaction's identical notifications once, so two puts of
    one item in one group would wake one getter elsewhere, not two."""

    __slots__ = ("args", "fetch", "groups", "refuse", "sql", "target", "then", "wakes")

    def __init__(
        self,
        target: str,
        args: tuple[Any, ...],
        refuse: Callable[[Any], BaseException],
        *,
        fetch: str = "fetchval",
        then: Callable[[Any], Any] | None = None,
        groups: bool = False,
        wakes: Any = None,
    ) -> None:
        self.target, self.args, self.refuse = target, args, refuse
        self.fetch, self.then, self.groups, self.wakes = fetch, then, groups, wakes
        self.sql = _call_sql(target, len(args))

    async def __call__(self, conn: Any) -> Any:
        try:
            answer = await getattr(conn, self.fetch)(self.sql, *self.args)
        except asyncpg.PostgresError as exc:
            if is_lost(exc):  # the pool drops the connection, then says why
                raise
            raise self.refuse(exc) from exc
        return answer if self.then is None else self.then(answer)


@functools.lru_cache(maxsize=256)
def _call_sql(target: str, n: int) -> str:
    """The statement calling ``target`` with ``n`` arguments (made once:
    every put and settle makes a Part)."""
    marks = ", ".join(f"${i}" for i in range(1, n + 1))
    return f"SELECT * FROM {target}({marks})"


def _grouped_sql(parts: list[Part]) -> str:
    """One statement calling every part's function, in order (one column each)."""
    calls, n = [], 0
    for part in parts:
        marks = ", ".join(f"${n + i}" for i in range(1, len(part.args) + 1))
        n += len(part.args)
        calls.append(f"{part.target}({marks})")
    return "SELECT " + ", ".join(calls)


class _Pool:
    """The connections of one event loop: idle ones are reused, at most
    ``size`` at once.

    **Group commit.** The durable calls of the loop's callers (puts and
    settles: each waits for its commit to reach the disk) go one group at a
    time, each group one statement, so one transaction, one round trip and
    one WAL flush for all its calls. Why: with one flush per call, a
    producer's put and a consumer's ack of the item before it take turns at
    the disk, and every put waited for an ack's flush and then its own
    (measured: 1.8-2.0 WAL fsyncs per item, one producer and four
    consumers); together they share one. Nothing is weakened: a put's
    caller is answered after the commit that stored it, and a statement
    that fails did nothing (it is one transaction), so its calls are then
    made one by one, each with its own answer or refusal. Claims are not
    grouped: they do not wait for the disk, and run side by side."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], size: int) -> None:
        self._connect = connect
        self._idle: list[Any] = []
        self._room = asyncio.Semaphore(size)
        self.closed = False
        #: Durable calls waiting for the next group, with their callers' futures.
        self._waiting: list[tuple[Part, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    def grouped(self, part: Part) -> asyncio.Future[Any]:
        """The future of ``part``'s answer (a driver's exception as it came),
        sent in the loop's next group whatever becomes of its caller: a
        caller that must see its call through awaits it shielded, with no
        task of its own (two loop passes fewer on a put's way there and back)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((part, future))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send())
        return future

    async def _send(self) -> None:
        """Send groups while calls wait (one group in flight at a time)."""
        try:
            while self._waiting:
                for _ in range(GATHER):
                    await asyncio.sleep(0)
                group = self._next_group()
                # Settles first: a bounded put in the same group sees the room they made.
                group.sort(key=lambda pf: pf[0].target.endswith(".chute_put"))
                if len(group) == 1:
                    await self._alone(*group[0])
                elif group:
                    await self._together(group)
        except BaseException:
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sender = None

    def _next_group(self) -> list[tuple[Part, asyncio.Future[Any]]]:
        """The waiting calls that go next, in the order they came (one call
        that wakes getters per queue: see ``Part``); the others wait on."""
        group: list[tuple[Part, asyncio.Future[Any]]] = []
        left: list[tuple[Part, asyncio.Future[Any]]] = []
        woken: set[Any] = set()
        for part, future in self._waiting:
            if future.done():
                continue  # its caller is gone, and it was never sent
            if len(group) >= MAX_GROUP or (part.wakes is not None and part.wakes in woken):
                left.append((part, future))
                continue
            if part.wakes is not None:
                woken.add(part.wakes)
            group.append((part, future))
        self._waiting = left
        return group

    async def _alone(self, part: Part, future: asyncio.Future[Any]) -> None:
        try:
            value = await self.call(part)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(value)

    async def _together(self, group: list[tuple[Part, asyncio.Future[Any]]]) -> None:
        parts = [part for part, _ in group]
        sql = _grouped_sql(parts)
        args = [arg for part in parts for arg in part.args]
        try:
            row = await self.call(lambda conn: conn.fetchrow(sql, *args))
        except asyncpg.PostgresError as exc:
            if is_lost(exc):
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                return
            # One of them was refused, and the statement did nothing: each
            # alone now, for its own answer.
            for part, future in group:
                await self._alone(part, future)
            return
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (part, future), value in zip(group, row, strict=True):
            if not future.done():
                future.set_result(value if part.then is None else part.then(value))

    async def call(self, fn: Fn[R]) -> R:
        async with self._room:
            conn = None
            while self._idle and conn is None:
                conn = self._idle.pop()
                if conn.is_closed():
                    conn = None
            if conn is None:
                conn = await self._connect()
            try:
                result = await fn(conn)
            except BaseException as exc:
                if is_lost(exc) or not isinstance(exc, Exception):
                    # Its state is unknown (or the server went away): drop it,
                    # and the idle ones, which are likely as dead.
                    conn.terminate()
                    self.drop_idle()
                    raise
                await self._give_back(conn)  # an answer (a refusal): still good
                raise
            await self._give_back(conn)
            return result

    async def _give_back(self, conn: Any) -> None:
        if self.closed:  # closed while this call ran: it leaves no connection open
            await _close(conn)
        else:
            self._idle.append(conn)

    def drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close(conn)


async def _close(conn: Any) -> None:
    try:
        await asyncio.wait_for(conn.close(), 1.0)
    except BaseException:
        conn.terminate()


class Store:
    """One database and schema, as this process sees it (shared by its queues)."""

    _open: ClassVar[dict[tuple[str, str], Store]] = {}
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def acquire(cls, url: str, schema: str, connect_timeout: float) -> Store:
        with cls._open_lock:
            store = cls._open.get((url, schema))
            if store is None:
                store = cls._open[(url, schema)] = cls(url, schema, connect_timeout)
            store._users += 1
        return store

    def __init__(self, url: str, schema: str, connect_timeout: float) -> None:
        self.url = url
        self.schema = schema
        self.where = place(url)["where"]
        self.channel = "chute." + schema
        #: Marks this process's notifications: its own changes rang its hubs already.
        self.sender = uuid.uuid4().hex
        self._timeout = connect_timeout
        self._users = 0
        self._hubs: dict[int, Hub] = {}
        self._seqs: dict[int, int] = {}
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._pools_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chute-postgres", daemon=True
        )
        self._thread.start()
        self._listener: asyncio.Task[None] | None = None
        #: Set, to its connection's server pid, while the listener listens.
        self._listening: concurrent.futures.Future[int] = concurrent.futures.Future()
        #: The queues for which this store registered waiters with the server
        #: (emptied when the listener connects again: after a restart).
        self.registered: set[int] = set()
        self._loop.call_soon_threadsafe(self._start_listening)

    def _start_listening(self) -> None:
        self._listener = self._loop.create_task(self._listen())

    # -- connections ---------------------------------------------------------------------

    async def connect(self) -> Any:
        try:
            return await asyncpg.connect(
                self.url,
                timeout=self._timeout,
                server_settings={"application_name": "chute"},
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if isinstance(exc, Exception):
                raise failure(exc, self.url, self.schema) from exc
            raise

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            with self._pools_lock:
                pool = self._pools[loop] = _Pool(self.connect, POOL_SIZE)
        return pool

    async def call(self, fn: Fn[R]) -> R:
        """``fn(connection)`` on a connection of the calling loop; a driver
        exception comes out as chute's."""
        try:
            return await self.start(fn)
        except DRIVER_ERRORS as exc:
            raise self.failure(exc) from exc

    def start(self, fn: Fn[R]) -> Awaitable[R]:
        """``call`` without the translation of a driver's exception (the
        caller makes it, with ``failure``): a call that joins the loop's
        next group is the group's future itself, sent whatever becomes of
        the caller."""
        pool = self._pool()
        if type(fn) is Part and fn.groups:
            return pool.grouped(fn)
        return pool.call(fn)

    def failure(self, exc: BaseException) -> ChuteError:
        """chute's error for a driver's exception (one of ``DRIVER_ERRORS``)."""
        return failure(exc, self.url, self.schema)

    def submit(self, fn: Fn[R]) -> concurrent.futures.Future[R]:
        """``call`` for a plain thread: on the store's own loop."""
        return asyncio.run_coroutine_threadsafe(self.call(fn), self._loop)

    def call_sync(self, fn: Fn[R]) -> R:
        """``call`` from a plain thread, which waits. Interrupted (Ctrl-C),
        the call still runs to its end first."""
        future = self.submit(fn)
        try:
            return result_of(future)
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                wait_through(future)
            raise

    # -- waking ----------------------------------------------------------------------------

    def hub(self, queue: int) -> Hub:
        with self._pools_lock:
            hub = self._hubs.get(queue)
            if hub is None:
                hub = self._hubs[queue] = Hub()
                self._seqs[queue] = 0
            return hub

    def seq(self, queue: int) -> int:
        return self._seqs.get(queue, 0)

    def rang(self, queue: int, rings: Rings) -> None:
        """A change to ``queue`` committed here (or seen from elsewhere).
        Only one that getters wait for (items to take, a shutdown) counts
        as a change for ``seq``: acks going on all the time would make
        every getter look twice before it sleeps."""
        if Wait.GET in rings:
            self._seqs[queue] = self._seqs.get(queue, 0) + 1
        if rings:
            hub = self._hubs.get(queue)
            if hub is not None:
                hub.ring(rings)

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        try:
            queue_s, kind, n_s, sender = str(payload).split(" ", 3)
            queue, n = int(queue_s), int(n_s)
        except ValueError:  # not chute's: ignored
            return
        if sender == self.sender or queue not in self._hubs:
            return
        rings: Rings = {
            "g": {Wait.GET: n},
            "p": {Wait.PUT: n},
            "j": {Wait.JOIN: ALL},
        }.get(kind, EVERYONE)
        self.rang(queue, rings)

    async def _listen(self) -> None:
        """Listen for as long as the store is open, connecting again after
        losing the server (and then ringing everyone)."""
        delay, cap = RECONNECT
        first = True
        while True:
            try:
                conn = await asyncpg.connect(
                    self.url,
                    timeout=self._timeout,
                    server_settings={"application_name": "chute listener"},
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
                continue
            delay = RECONNECT[0]
            lost: asyncio.Future[None] = self._loop.create_future()
            conn.add_termination_listener(functools.partial(_set, lost))
            try:
                await conn.add_listener(self.channel, self._notified)
                if not first:
                    # Registrations made on a server that restarted may be
                    # gone, and notifications were missed: every waiter
                    # registers and looks again.
                    self.registered.clear()
                    for queue in list(self._hubs):
                        self.rang(queue, EVERYONE)
                first = False
                self._listening.set_result(conn.get_server_pid())
                await lost
                self._listening = concurrent.futures.Future()
            except asyncio.CancelledError:
                await _close(conn)
                raise
            except Exception:
                conn.terminate()
                await asyncio.sleep(delay)

    def listener_pid_now(self) -> int | None:
        listening = self._listening
        return listening.result() if listening.done() else None

    async def listener_pid(self) -> int:
        """The server pid of the listener's connection, once it listens
        (it may be connecting, or connecting again)."""
        listening = self._listening
        if listening.done():
            return listening.result()
        try:
            # Shielded: a timeout here must not cancel the store's future.
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(listening)), self._timeout
            )
        except TimeoutError:
            raise Unreachable(
                f"PostgreSQL at {self.where}: chute's LISTEN connection could not connect"
            ) from None

    # -- the end -----------------------------------------------------------------------------

    def release(self) -> None:
        """One user fewer; the last one closes the store (from any thread)."""
        with Store._open_lock:
            self._users -= 1
            if self._users > 0:
                return
            Store._open.pop((self.url, self.schema), None)
        for hub in self._hubs.values():
            hub.ring(EVERYONE)
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, pool in list(self._pools.items()):
            if loop is self._loop:
                continue
            if loop is here:
                _closing.add(asyncio.ensure_future(pool.aclose()))
            elif loop.is_running():
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(pool.aclose(), loop)
            else:
                pool.drop_idle()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._wind_down(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    async def _wind_down(self) -> None:
        """On the store's own loop: stop listening, end the calls of threads
        still waiting on it (they raise ``ChuteError``), close its connections."""
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        mine = self._pools.get(self._loop)
        if mine is not None:
            await mine.aclose()

    async def aclose_here(self) -> None:
        """Close the calling loop's connections (before ``release``)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()


def refusal(exc: Any, queue: str, where: str, store: Store) -> BaseException:
    """What chute raises for the server's refusal ``exc`` of a call on the
    queue ``queue`` (chute's functions raise SQLSTATEs CH001-CH005)."""
    code = getattr(exc, "sqlstate", None)
    if code == "CH001":
        message = str(exc)
        return QueueShutDown(message) if "requeue" in message else QueueShutDown()
    if code in ("CH002", "CH005"):
        return ValueError(str(exc))
    if code == "CH003":
        return QueueNotFound(f"queue {queue!r} is no longer in {where}")
    if code == "CH004":  # the server says what the holder can no longer do
        return LeaseLost(
            f"queue {queue!r}: this job's lease ran out and the item was delivered "
            f"again; {getattr(exc, 'message', exc)}"
        )
    return failure(exc, store.url, store.schema)


class Sql(Call[R]):
    """A PostgreSQL backend's call: a coroutine function of a connection,
    and whom it rings once it committed (a function of its answer);
    ``through``: the same made on a caller's connection, where only the
    commit's notification rings (this process's own included)."""

    __slots__ = ("fn", "rings", "through")

    def __init__(
        self,
        fn: Fn[R],
        rings: Callable[[R], Rings] | Rings | None = None,
        through: Fn[R] | None = None,
    ) -> None:
        self.fn = fn
        self.rings = rings
        self.through = through


class Through:
    """``queue``'s backend, its calls run on the caller's asyncpg
    ``connection``, in the transaction it has open (a put that exists if it
    commits): nothing rings here (the commit's notification does). A call
    with a ``through`` form runs that one."""

    def __init__(self, queue: Any, connection: Any) -> None:
        if not isinstance(connection, asyncpg.Connection):
            raise TypeError(
                f"connection must be an asyncpg connection, not {type(connection).__name__}"
            )
        if not connection.is_in_transaction():
            raise ValueError(
                "connection is not in a transaction: open one (async with conn.transaction()) "
                "so that the item is stored only if it commits"
            )
        self._queue = queue
        self._url = queue._backend._store.url
        self._conn = connection

    async def put(self, items: Any, timeout: Any, options: Any, *, single: bool) -> bool:
        """The queue's put of ``items``, in the caller's transaction."""
        steps = self._queue._storing(
            items, timeout, options, single=single, block=True, in_thread=False
        )
        return await drive(self, steps)  # type: ignore[arg-type]

    async def run(self, call: Sql[R], *, undo: Any = None) -> R:
        fn = call.through or call.fn
        try:
            # In a savepoint: a refusal (shut down, too big) leaves the
            # caller's transaction as it was, usable, instead of aborted.
            async with self._conn.transaction():
                return await fn(self._conn)
        except Exception as exc:
            if is_lost(exc) or isinstance(exc, asyncpg.PostgresError):
                raise failure(exc, self._url) from exc
            raise


#: Pools closing on a loop that did not wait for them (a ``close()`` from a task).
_closing: set[asyncio.Future[None]] = set()


def _set(future: asyncio.Future[None], *_: Any) -> None:
    if not future.done():
        future.set_result(None)


def result_of(future: concurrent.futures.Future[R]) -> R:
    """A thread's call's answer; ``ChuteError`` if the store closed under it."""
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise ChuteError("the queue was closed while this call was made") from None


def wait_through(future: concurrent.futures.Future[R]) -> R:
    """Wait for ``future`` whatever interrupts the waiting thread."""
    while True:
        try:
            return result_of(future)
        except KeyboardInterrupt:
            continue
