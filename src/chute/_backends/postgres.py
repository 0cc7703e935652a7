"""The PostgreSQL transport: a queue in the database the application already
runs, as a backend of the durable core (``chute._durable``).

Each primitive is one call of a PL/pgSQL function (``postgres_functions.py``:
the exact bound, the waking, the claim and its ``EXPLAIN``; the tables and
their installation: ``postgres_sql.py``), sent over asyncpg from the
calling task's loop, or from the store's own loop for a plain thread
(``postgres_link.py``: the connections, the listener, the errors, and the
group commit of the puts and settles that a loop's callers make at once).
The dead-letter calls are in ``postgres_dead_letters.py``.
A getter with nothing to take waits in this process's hub, rung by the
store's ``LISTEN`` connection when a put commits elsewhere, and looks again
every second only for leases of other processes that ran out.

A put can join the caller's own transaction: ``await q.put(item,
connection=conn)`` stores the item through ``conn`` (an asyncpg connection
in a transaction), so that it exists if and only if that transaction
commits. Getters are woken by the commit's notification.

(Why asyncpg: see ``postgres_link.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar, cast, overload

from .._contract import UNSET, ErrorInfo, Outcome, Unset, check_connect_timeout
from .._durable.backend import (
    DUPLICATE,
    PLAIN,
    Call,
    Capabilities,
    Claimed,
    Counts,
    PutOptions,
    QueueState,
    Record,
    Settle,
    Stored,
)
from .._durable.queue import DurableQueue, checked_opening
from .._durable.steps import answer, shielded
from .._durable.waiting import ALL, EVERYONE, Rings, Wait
from .._exceptions import QueueNotFound
from .postgres_dead_letters import PostgresDeadLetters
from .postgres_link import (
    DRIVER_ERRORS,
    Fn,
    Part,
    Sql,
    Store,
    Through,
    place,
    refusal,
    result_of,
    wait_through,
)
from .postgres_sql import declare, names_in, quote

__all__ = ["PostgresBackend", "PostgresQueue"]

T = TypeVar("T")
R = TypeVar("R")
Undo = Callable[[R], Call[Any] | None]

#: How often a full put or a join looks again for changes made elsewhere
#: (besides the notifications that wake them).
POLL = 0.05
#: How often an idle getter looks again, for leases of other processes that
#: ran out (a put anywhere wakes it at once).
IDLE_LOOK = 1.0


def _duplicate_if_empty(ids: list[int] | None) -> list[int] | Stored | None:
    """``chute_put``'s answer: ids, NULL (no room), or none (a key in the queue)."""
    return DUPLICATE if ids == [] else ids


def _counts(row: Any) -> Counts:
    return Counts(*row)._replace(state=QueueState(row[2]))  # chute_counts: in this order


def _claimed_rings(n: int) -> Callable[[Claimed], Rings]:
    rings: Rings = {Wait.PUT: n, Wait.JOIN: ALL}
    return lambda claimed: rings if claimed.records else {}


class PostgresBackend(PostgresDeadLetters):
    """One named queue in one PostgreSQL database, for this process."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        blocking_wait=False,
        arrival_order_across_clients=True,
        immediate_shutdown_removes=False,
        delays=True,
        delayed_puts=True,
        prioritised_puts=True,
        keyed_puts=True,
        schedules=True,
    )
    poll_interval: float | None = POLL
    idle_poll_interval: float | None = IDLE_LOOK
    # Its run() commits to a call at once too (a group, or a task), but a
    # settle awaited without the core's shield measured no faster (its rows
    # wait on the disk): left shielded.
    sees_calls_through = False

    def __init__(
        self,
        url: str,
        name: str,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
        create: bool = True,
        schema: str = "chute",
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(schema, str) or not schema:
            raise ValueError(f"schema must be a non-empty string, not {schema!r}")
        connect_timeout = check_connect_timeout(connect_timeout)
        self.name = name
        self.where = f"{place(url)['where']}/{place(url)['database']}"
        self._store = store = Store.acquire(url, schema, connect_timeout)
        try:
            self._id: int = store.call_sync(
                lambda c: declare(c, store, name, create, maxsize, max_deliveries)
            )
        except BaseException:
            store.release()
            raise
        self.hub = store.hub(self._id)
        self._s = quote(schema)
        self._args = (self._id, store.sender)

    @classmethod
    def queue_names(cls, url: str, **options: Any) -> list[str]:
        schema = options.get("schema", "chute")
        store = Store.acquire(url, schema, options.get("connect_timeout", 5.0))
        try:
            return store.call_sync(lambda c: names_in(c, schema))
        finally:
            store.release()

    @property
    def seq(self) -> int:
        return self._store.seq(self._id)

    # -- running -------------------------------------------------------------------

    def _rang(self, op: Sql[Any], result: Any) -> None:
        rings = op.rings(result) if callable(op.rings) else op.rings
        if rings:
            self._store.rang(self._id, rings)

    async def run(self, call: Call[R], *, undo: Undo[R] | None = None) -> R:
        op = cast("Sql[R]", call)

        def undoing(task: asyncio.Future[R]) -> Any:
            # Cancelled after it was sent: what it did is undone before going on.
            answered, value = answer(task)
            if not answered:
                return None
            self._rang(op, value)
            back = None if undo is None else undo(cast(R, value))
            return None if back is None else self.run(back)

        try:
            result = await shielded(self._store.start(op.fn), undoing)
        except DRIVER_ERRORS as exc:
            raise self._store.failure(exc) from exc
        self._rang(op, result)
        return result

    def run_sync(self, call: Call[R], *, undo: Undo[R] | None = None) -> R:
        op = cast("Sql[R]", call)
        future = self._store.submit(op.fn)
        try:
            result = result_of(future)
        except KeyboardInterrupt:
            # Interrupted (Ctrl-C): the call is seen through, and undone.
            try:
                value = wait_through(future)
            except Exception:
                raise KeyboardInterrupt from None
            self._rang(op, value)
            back = None if undo is None else undo(value)
            if back is not None:
                with contextlib.suppress(Exception):
                    self._rang(
                        cast("Sql[Any]", back),
                        wait_through(self._store.submit(cast("Sql[Any]", back).fn)),
                    )
            raise
        self._rang(op, result)
        return result

    def close(self) -> None:
        self.hub.ring(EVERYONE)
        self._store.release()

    async def aclose(self) -> None:
        self.hub.ring(EVERYONE)
        await self._store.aclose_here()
        await asyncio.to_thread(self._store.release)

    # -- calls -----------------------------------------------------------------------

    def _fn(
        self,
        name: str,
        *args: Any,
        fetch: str = "fetchval",
        sender: str | None = None,
        then: Callable[[Any], Any] | None = None,
        wakes: bool = False,
    ) -> Fn[Any]:
        """A call of the schema's function ``chute_<name>`` on this queue
        (``sender``: whom its notification says it comes from; ``then``:
        what makes the answer of what the server sent; ``wakes``: it
        notifies getters)."""
        queue, own = self._args
        sender = own if sender is None else sender
        full = (queue, *args, sender) if name in _SENDS else (queue, *args)
        store, queue_name, where = self._store, self.name, self.where
        return Part(
            f"{self._s}.chute_{name}",
            full,
            lambda exc: refusal(exc, queue_name, where, store),
            fetch=fetch,
            then=then,
            groups=name in _GROUPED,
            wakes=(self._s, queue) if wakes else None,
        )

    def store(
        self, records: list[bytes], options: PutOptions = PLAIN
    ) -> Sql[list[int] | Stored | None]:
        rings: Rings = {Wait.GET: len(records)}
        args = (records, *options[:3], *(options.mark or (None, None)))  # as chute_put takes them
        stored = _duplicate_if_empty
        return Sql(
            self._fn("put", *args, then=stored, wakes=True),
            lambda ids: rings if isinstance(ids, list) else {},
            through=self._fn("put", *args, sender="", then=stored),
        )

    def looked_lately(self) -> bool:
        return False  # its getters wait on LISTEN in this process, not in a claim

    def subscribe(self) -> Sql[None] | None:
        store, queue = self._store, self._id
        if queue in store.registered:
            return None
        sql = f"SELECT {self._s}.chute_listen($1, $2, $3)"

        async def listen(conn: Any) -> None:
            pid = await store.listener_pid()
            await conn.execute(sql, queue, store.sender, pid)
            if store.listener_pid_now() == pid:  # else: registered for a listener since lost
                store.registered.add(queue)

        # On chute's own connection even for a put in a caller's transaction,
        # which would hold its lock (and every change's ring) until it ends.
        return Sql(listen, through=lambda _: store.call(listen))

    def take_back(self, receipt: list[int]) -> Sql[None]:
        return Sql(self._fn("take_back", receipt), {Wait.PUT: len(receipt), Wait.JOIN: ALL})

    def claim(self, n: int, *, lease: float | None, wait: float = 0.0) -> Sql[Claimed]:
        fn = self._fn("claim", n, lease, fetch="fetch")
        store, queue = self._store, self._id

        async def claim(conn: Any) -> Claimed:
            seq = store.seq(queue)  # before the look: a change after it bumps it
            rows = await fn(conn)
            if rows and rows[0][0] is None:
                return Claimed([], rows[0][4], seq)
            records = [Record(r[0], r[1], r[2], r[3], (r[5], r[6], r[7])) for r in rows]
            return Claimed(records, None, seq)

        return Sql(claim, _claimed_rings(n))

    def give_back(self, records: list[Record], *, leased: bool) -> Sql[None]:
        fn = self._fn(
            "give_back",
            [r.key for r in records],
            [r.token for r in records],
            [r.data for r in records],
            [r.deliveries for r in records],
            leased,
            [r.extra[0] if r.extra else 0 for r in records],
            [r.extra[1] if r.extra else None for r in records],
            [r.extra[2] if r.extra else None for r in records],
        )
        return Sql(fn, {Wait.GET: len(records)})

    def bury(self, records: list[tuple[Record, ErrorInfo]], *, leased: bool) -> Sql[None]:
        fn = self._fn(
            "bury",
            [r.key for r, _ in records],
            [r.data for r, _ in records],
            [r.deliveries for r, _ in records],
            [info.to_json() for _, info in records],
            leased,
        )
        return Sql(fn, {Wait.JOIN: ALL})

    def settle(
        self, record: Record, how: Settle, *, delay: float | None, error: ErrorInfo | None
    ) -> Sql[Outcome]:
        ack = how is Settle.ACK
        why = None if error is None else error.to_json()
        fn = self._fn("settle", record.key, record.token, ack, delay, why, wakes=not ack)
        if ack:
            return Sql(fn, {Wait.PUT: 1, Wait.JOIN: ALL})
        return Sql(fn, EVERYONE if delay else {Wait.GET: 1, Wait.JOIN: ALL})

    def extend(self, record: Record, seconds: float) -> Sql[None]:
        return Sql(self._fn("extend", record.key, record.token, seconds))

    def task_done(self) -> Sql[None]:
        return Sql(self._fn("task_done"), {Wait.JOIN: ALL})

    # -- the queue -------------------------------------------------------------------

    def counts(self, *, oldest: bool = False) -> Sql[Counts]:
        return Sql(self._fn("counts", oldest, fetch="fetchrow", then=_counts))

    def _change(self, sql: str, *args: Any) -> Fn[None]:
        """An UPDATE of the queue's row, and a ring of everyone, in one statement."""
        statement = (
            f"WITH u AS ({sql} WHERE id = $1 RETURNING id) "
            f"SELECT {self._s}.chute_ring(id, 'e', 0, $2) FROM u"
        )
        queue, sender = self._args
        name, where = self.name, self.where

        async def change(conn: Any) -> None:
            if not await conn.fetch(statement, queue, sender, *args):
                raise QueueNotFound(f"queue {name!r} is no longer in {where}")

        return change

    def configure(self, *, maxsize: int | Unset, max_deliveries: int | Unset | None) -> Sql[None]:
        sql = (
            f"UPDATE {self._s}.chute_queue SET maxsize = coalesce($3, maxsize), "
            "max_deliveries = CASE WHEN $4 THEN $5::int ELSE max_deliveries END"
        )
        keep = isinstance(max_deliveries, Unset)
        limit = None if isinstance(max_deliveries, Unset) else max_deliveries
        size = None if isinstance(maxsize, Unset) else maxsize
        return Sql(self._change(sql, size, not keep, limit), {Wait.PUT: ALL})

    def shutdown(self, *, immediate: bool) -> Sql[None]:
        state = int(QueueState.IMMEDIATE if immediate else QueueState.SHUTDOWN)
        sql = f"UPDATE {self._s}.chute_queue SET state = greatest(state, $3::smallint)"
        return Sql(self._change(sql, state), EVERYONE)

    def reopen(self) -> Sql[None]:
        return Sql(self._change(f"UPDATE {self._s}.chute_queue SET state = 0"), EVERYONE)


#: The schema's functions that take the sender last (their notification says who).
_SENDS = {"put", "take_back", "claim", "give_back", "bury", "settle", "task_done", "requeue_dead"}
#: Those whose calls wait for the disk on every item's way: sent in groups
#: (see ``postgres_link._Pool``).
_GROUPED = {"put", "settle"}


# -- the queue -------------------------------------------------------------------------


class PostgresQueue(DurableQueue[T]):
    """A named queue in a PostgreSQL database; made by
    ``chute.open("postgresql://user:password@host:port/database", name)``.

    The contract of ``chute.Queue``, durable: an item is stored when
    ``put()`` returns. ``put(item, connection=conn)`` stores it inside the
    caller's own transaction instead.
    """

    capabilities: ClassVar[Capabilities] = PostgresBackend.capabilities

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
        schema: str = "chute",
        connect_timeout: float = 5.0,
    ) -> None:
        """Open the queue ``name`` in the database at ``url`` (chute's
        tables in ``schema``, made on first use). Bounds as for every
        stored queue: left out, the stored ones hold."""
        bounds = checked_opening(name, maxsize, max_deliveries, codec, visibility_timeout)
        backend = PostgresBackend(
            url, name, create=create, schema=schema, connect_timeout=connect_timeout, **bounds
        )
        super().__init__(backend, codec=codec, visibility_timeout=visibility_timeout)

    @classmethod
    def queue_names(cls, url: str, **options: Any) -> list[str]:
        """The names of the queues in the database at ``url`` (in
        ``schema``), sorted. Creates nothing. Blocking: off the loop."""
        return PostgresBackend.queue_names(url, **options)

    @overload
    async def put(
        self,
        item: T,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: None = None,
        connection: Any = None,
    ) -> None: ...

    @overload
    async def put(
        self,
        item: T,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: str,
        connection: Any = None,
    ) -> bool: ...

    async def put(
        self,
        item: T,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: str | None = None,
        connection: Any = None,
    ) -> bool | None:
        """Store ``item`` (``delay``, ``priority``, ``key``: as for every stored
        queue); with ``connection`` (an asyncpg connection in a transaction),
        inside that transaction: it exists if it commits."""
        if connection is None:
            return await super().put(item, timeout, delay=delay, priority=priority, key=key)
        options = self._options(delay, priority, key)
        stored = await Through(self, connection).put([item], timeout, options, single=True)
        return stored if key is not None else None

    async def put_batch(
        self,
        items: Iterable[T],
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        connection: Any = None,
    ) -> None:
        """``put_batch``; with ``connection``, inside the caller's transaction."""
        if connection is None:
            return await super().put_batch(items, timeout, delay=delay, priority=priority)
        options = self._options(delay, priority, None)
        await Through(self, connection).put(items, timeout, options, single=False)
