"""The durable embedded transport: a queue in a SQLite file, as a backend.

Layout: one table of queues (bounds, shutdown state, counters), one of
items, one of dead letters; several named queues share a file. An item is
*claimable* when it is not leased, or when its lease (or its ``nack``
delay) has run out: ``visible_at <= now``. A plain get deletes the item in
the transaction that finds it; a reservation leases it (``leased = 1``,
``visible_at`` = now + the lease) and bumps its *token*, so an
acknowledgement carrying an older token — a consumer whose lease ran out
and whose item went to someone else — is refused instead of deleting the
item twice.

Each primitive is one function of a connection, run by the file's thread
in a group commit (``sqlite_db.Database``; the file's schema and opening
in ``sqlite_file``), whose statements are in
``sqlite_sql.py``; the queue users see is the durable core's
(``chute._durable``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar, cast

from .._contract import UNSET, ErrorInfo, Outcome, Unset
from .._durable.backend import (
    DUPLICATE,
    PLAIN,
    Call,
    Capabilities,
    Claimed,
    Counts,
    DeadRecord,
    PutOptions,
    QueueState,
    Record,
    Settle,
    Stored,
    never_fits,
    row_ids,
)
from .._durable.queue import DurableQueue, checked_opening
from .._durable.waiting import ALL, EVERYONE, Rings, Wait
from .._exceptions import ChuteError, LeaseLost, QueueNotFound, QueueShutDown
from .sqlite_db import Database
from .sqlite_file import DURABILITY, _stored_names
from .sqlite_sql import (
    CHUNK,
    COUNT_LEASED,
    COUNT_PUT,
    COUNT_TAKEN,
    DEAD_COLUMNS,
    DEAD_LETTERS,
    DUE_SCHEDULED,
    INSERT,
    INSERT_WITH,
    LATE_ROWS,
    LEASE_ONE,
    LEASE_READY,
    NEXT_DUE,
    OLDEST,
    OUT_COUNTS,
    READY_ROWS,
    ROOM,
    TAKE_ONE,
    TAKE_READY,
    bound_columns,
    count_settled,
    in_order,
    marks,
    no_queue,
    queue_row,
    set_bounds,
    take_dead,
    to_dead,
)

__all__ = ["SqliteBackend", "SqliteQueue"]

T = TypeVar("T")
R = TypeVar("R")
#: What undoes a call whose caller was cancelled after it took effect.
Undo = Callable[[R], Call[Any] | None]

#: ``chute_item.leased``: claimable in id order; out on a lease until
#: ``visible_at``; given back with a delay, claimable again at ``visible_at``.
#: Until then a delayed item counts as in flight, as on every transport, and
#: when it comes due, no lease "ran out": it is not dead-lettered as one.
_READY, _LEASED, _DELAYED = 0, 1, 2
#: Put with a delay (``visible_at``): in the queue, counted toward its bound,
#: claimable from then on.
_SCHEDULED = 3
#: Before the first item in the queue's order (priority, id).
_FIRST = (-(2**31) - 1, 0)
_NO_RINGS: Rings = {}
#: Whom a single put, claim and ack ring (made once: three calls an item).
_PUT_RINGS: Rings = {Wait.GET: 1}
_CLAIM_RINGS: Rings = {Wait.PUT: 1, Wait.JOIN: ALL}
_ACK_RINGS: Rings = _CLAIM_RINGS
#: No lease, delay or delayed put to run out.
_NEVER = float("inf")
#: The largest item a put may commit on its loop (a short call).
SHORT_BYTES = 64 << 10


def next_due(c: sqlite3.Connection, name: str) -> float:
    """When the queue's first lease, delay or delayed put runs out."""
    due = [at for (at,) in c.execute(NEXT_DUE, (name,)) if at is not None]
    return min(due, default=_NEVER)


def _take_ready(
    c: sqlite3.Connection, name: str, n: int, lease: float | None, now: float
) -> list[Record]:
    """The first ``n`` ready items, in order, leased (or, with no lease,
    deleted): one statement."""
    if lease is None:
        found = c.execute(TAKE_ONE if n == 1 else TAKE_READY, (name, n)).fetchall()
    else:
        leasing = LEASE_ONE if n == 1 else LEASE_READY
        found = c.execute(leasing, (name, n, now + lease)).fetchall()
    if len(found) > 1:
        found.sort(key=in_order)  # RETURNING's order is SQLite's
    new = tuple.__new__  # Record's own __new__ is a slow Python function
    return [new(Record, (i, d, k, t, (p, key, at))) for i, d, k, t, _, p, key, at in found]


def _take_any(
    c: sqlite3.Connection,
    name: str,
    n: int,
    lease: float | None,
    now: float,
    limit: int | None,
) -> list[Record]:
    """The first ``n`` claimable items, in order: ready ones, delayed puts
    come due, and items whose lease or delay ran out (those past the
    deliveries allowed go to the dead letters); leased, or deleted."""
    c.execute(DUE_SCHEDULED, (name, now))
    rows: list[Record] = []
    after = _FIRST
    while len(rows) < n:
        want = n - len(rows)
        found = c.execute(READY_ROWS, (name, after[0], want, now, after[1])).fetchall()
        for late in LATE_ROWS:  # leases, then delays, that ran out
            found += c.execute(late, (name, after[0], want, now, after[1])).fetchall()
        found.sort(key=in_order)
        del found[want:]
        if not found:
            break
        after = in_order(found[-1])
        for id_, data, deliveries, token, leased, priority, key, ready_at in found:
            if leased == _LEASED and limit is not None and deliveries >= limit:
                # Its holder's lease ran out on the last delivery allowed.
                to_dead(c, name, id_, now, "lease expired")
                continue
            rows.append(Record(id_, data, deliveries, token, (priority, key, ready_at)))
        if len(found) < want:
            break
    ids = [r.key for r in rows]
    for chunk in [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]:
        if lease is None:
            c.execute(f"DELETE FROM chute_item WHERE id IN ({marks(chunk)})", chunk)
        else:  # one statement per chunk of a batch
            c.execute(
                "UPDATE chute_item SET leased = 1, visible_at = ?, token = token + 1, "
                f"deliveries = deliveries + 1 WHERE id IN ({marks(chunk)})",
                (now + lease, *chunk),
            )
    if lease is None:
        return rows
    return [Record(i, d, k + 1, t + 1, x) for i, d, k, t, x in rows]


def _insert(c: sqlite3.Connection, statement: str, rows: list[tuple[Any, ...]]) -> tuple[int, int]:
    """Insert ``rows``; the first and last ids (consecutive: one statement,
    AUTOINCREMENT)."""
    if len(rows) == 1:
        last = c.execute(statement, rows[0]).lastrowid or 0
    else:
        c.executemany(statement, rows)
        last = c.execute("SELECT last_insert_rowid()").fetchone()[0]
    return last - len(rows) + 1, last


def _lost(name: str) -> str:
    return (
        f"queue {name!r}: this job's lease ran out and the item was delivered "
        "again; it is settled by whoever holds it now"
    )


class Op(Call[R]):
    """A SQLite backend's Call: a function of the connection, whom its
    commit rings, and whether it is *short* (a few statements over a few
    rows: a loop may commit it itself, see ``Database.run``)."""

    __slots__ = ("fn", "rings", "short", "write")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], R],
        rings: Rings = _NO_RINGS,
        *,
        write: bool = True,
        short: bool = False,
    ) -> None:
        self.fn = fn
        self.rings = rings
        self.write = write
        self.short = short


class SqliteBackend:
    """One named queue in one SQLite file, for this process."""

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
    #: The file's thread watches other processes' commits and rings the hub.
    poll_interval: float | None = None
    idle_poll_interval: float | None = None
    sees_calls_through = False  # a call is taken by a later pass, or the thread

    def __init__(
        self,
        path: str,
        name: str,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
        create: bool = True,
        durability: str = "crash",
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be 'crash' or 'power', not {durability!r}")
        self.name = name
        self.where = path
        if not create:
            # Looked at first on a read-only connection: a file without
            # chute's tables must not get them from a look.
            names = _stored_names(path)
            if name not in names:
                raise QueueNotFound(no_queue(name, path, names))
        self._db = Database.acquire(path, durability, create)
        self.hub = self._db.hub(name)
        bounds = bound_columns(maxsize, max_deliveries)
        try:
            self._db.call(lambda c: self._declare(c, bounds, create), touches=name)
        except BaseException:
            self._db.release()
            raise

    def _declare(self, c: sqlite3.Connection, bounds: dict[str, int | None], create: bool) -> None:
        if create:
            c.execute(
                "INSERT INTO chute_queue (name) VALUES (?) ON CONFLICT DO NOTHING", (self.name,)
            )
        set_bounds(c, self.name, self.where, bounds)

    @classmethod
    def queue_names(cls, path: str, **options: Any) -> list[str]:
        return _stored_names(path)

    @property
    def seq(self) -> int:
        return self._db.seq

    # -- running -----------------------------------------------------------------

    def run(self, call: Call[R], *, undo: Undo[R] | None = None) -> Coroutine[Any, Any, R]:
        # The database's coroutine itself, not one awaiting it: a frame
        # less for every call (three an item).
        op = cast("Op[R]", call)
        on_cancel = None if undo is None else (lambda value: self._undo_async(undo(value)))
        return self._db.run(
            op.fn,
            touches=self.name,
            write=op.write,
            wakes=op.rings,
            on_cancel=on_cancel,
            short=op.short,
        )

    def run_sync(self, call: Call[R], *, undo: Undo[R] | None = None) -> R:
        op = cast("Op[R]", call)
        on_cancel = None if undo is None else (lambda value: self._undo_now(undo(value)))
        answer: R = self._db.call(
            op.fn, touches=self.name, write=op.write, wakes=op.rings, on_cancel=on_cancel
        )
        return answer

    def _submit(self, call: Call[Any] | None) -> concurrent.futures.Future[Any] | None:
        if call is None:
            return None
        op = cast("Op[Any]", call)
        try:
            return self._db.submit(op.fn, touches=self.name, wakes=op.rings)
        except ChuteError:  # closed meanwhile: undone on a connection of its own
            self._db.run_detached(op.fn)
            return None

    async def _undo_async(self, call: Call[Any] | None) -> None:
        done = self._submit(call)
        if done is not None:
            await asyncio.wrap_future(done)

    def _undo_now(self, call: Call[Any] | None) -> None:
        done = self._submit(call)
        if done is not None:
            done.result()

    def close(self) -> None:
        # This queue's waiters in this process wake, and find it closed.
        self.hub.ring(EVERYONE)
        self._db.release()

    async def aclose(self) -> None:
        # The last queue of a file waits for the file's thread to finish
        # its transaction: off the loop.
        await asyncio.to_thread(self.close)

    # -- records -----------------------------------------------------------------

    def store(
        self, records: list[bytes], options: PutOptions = PLAIN
    ) -> Op[tuple[int, int] | Stored | None]:
        name, db = self.name, self._db
        delay, priority, key, mark = options

        def insert(c: sqlite3.Connection) -> tuple[int, int] | Stored | None:
            now = time.time()
            n = len(records)
            if options is PLAIN and c.execute(COUNT_PUT, (name, now, n)).rowcount:
                # Open, and room (the common case: one statement fewer).
                return _insert(c, INSERT, [(name, r, now) for r in records])
            row = c.execute(ROOM, (name, now)).fetchone()
            if row is None:
                raise ChuteError(f"no queue named {name!r} in this file")
            state, maxsize, ready = row  # the bound in the file: every process keeps it
            if state:
                raise QueueShutDown()
            if n > maxsize > 0:
                raise never_fits(n, maxsize)
            if (
                key is not None
                and c.execute(
                    "SELECT 1 FROM chute_item WHERE queue = ? AND key = ?", (name, key)
                ).fetchone()
            ):
                return DUPLICATE
            if maxsize and ready + n > maxsize:
                return None
            if mark is not None:  # a schedule's slot: once, whoever comes first
                done = c.execute(
                    "SELECT slot FROM chute_mark WHERE queue = ? AND name = ?", (name, mark[0])
                ).fetchone()
                if done is not None and done[0] >= mark[1]:
                    return DUPLICATE
                c.execute(
                    "INSERT INTO chute_mark (queue, name, slot) VALUES (?, ?, ?) "
                    "ON CONFLICT (queue, name) DO UPDATE SET slot = excluded.slot",
                    (name, *mark),
                )
            # Counted as a plain put is: the looks above are its guard's, so
            # it changes the row (and a plain put, refused by that guard,
            # never gets here).
            c.execute(COUNT_PUT, (name, now, n))
            leased, due = (_SCHEDULED, now + delay) if delay else (_READY, 0)
            if delay:
                db.may_come_due(name, due)
            ready_at = due or now
            return _insert(
                c, INSERT_WITH, [(name, r, leased, due, priority, key, ready_at) for r in records]
            )

        # Rung for a delayed put too: the getter looks, and sleeps until it is due.
        if len(records) == 1:
            return Op(insert, _PUT_RINGS, short=len(records[0]) <= SHORT_BYTES)
        return Op(insert, {Wait.GET: len(records)})

    def subscribe(self) -> None:
        return None  # nothing to make: this process's watcher rings for every change made elsewhere

    def looked_lately(self) -> bool:
        return False  # its getters wait in this process, not on the store

    def take_back(self, receipt: tuple[int, int]) -> Op[None]:
        lo, hi = receipt
        n, name = hi - lo + 1, self.name

        def take_back(c: sqlite3.Connection) -> None:
            there = c.execute(
                "SELECT count(*) FROM chute_item WHERE id BETWEEN ? AND ? AND leased IN (0, 3)",
                (lo, hi),
            ).fetchone()[0]
            if there == n:  # none taken yet: all go (a batch stays whole)
                c.execute("DELETE FROM chute_item WHERE id BETWEEN ? AND ?", (lo, hi))
                c.execute(
                    "UPDATE chute_queue SET stored = stored - ?1, unfinished = unfinished - ?1, "
                    "total_put = total_put - ?1 WHERE name = ?2",
                    (n, name),
                )

        return Op(take_back, {Wait.PUT: n, Wait.JOIN: ALL})

    def claim(self, n: int, *, lease: float | None, wait: float = 0.0) -> Op[Claimed]:
        name, db = self.name, self._db

        def claim(c: sqlite3.Connection) -> Claimed:
            now = time.time()
            known = db.due.get(name)
            if known is not None and now < known:
                # Nothing out on a lease or a delay has run out, nor has any
                # delayed put come due: the ready items are all there is (the
                # common case: this statement and the count's, which reads
                # the queue's state; an immediate shutdown found there undoes
                # the take, as the failed call's savepoint is rolled back).
                rows = _take_ready(c, name, n, lease, now)
            else:
                queue = queue_row(c, name)
                if queue.state == QueueState.IMMEDIATE:
                    raise QueueShutDown()
                rows = _take_any(c, name, n, lease, now, queue.max_deliveries)
                known = db.due[name] = next_due(c, name)
            if not rows:
                if queue_row(c, name).state:  # shut down: nothing more will come
                    raise QueueShutDown()
                # Sleep until the first one runs out, at the latest.
                return Claimed([], None if known == _NEVER else known, db.seq_after)
            if not c.execute(
                COUNT_TAKEN if lease is None else COUNT_LEASED, (len(rows), name)
            ).rowcount:
                queue_row(c, name)  # raises if there is no such queue: else it was shut down
                raise QueueShutDown()  # at once: what this call changed is rolled back
            if lease is not None:
                db.may_come_due(name, now + lease)
            # As of our commit, if this is the last call of its group.
            return Claimed(rows, None, db.seq_after)

        return Op(claim, _CLAIM_RINGS if n == 1 else {Wait.PUT: n, Wait.JOIN: ALL}, short=n == 1)

    def give_back(self, records: list[Record], *, leased: bool) -> Op[None]:
        """Same ids, same places."""
        name, n = self.name, len(records)

        def give_back(c: sqlite3.Connection) -> None:
            if leased:
                c.executemany(
                    "UPDATE chute_item SET leased = 0, visible_at = 0, deliveries = deliveries - 1 "
                    "WHERE id = ? AND token = ?",
                    [(r.key, r.token) for r in records],
                )
            else:
                # A plain get freed their keys: a put may have taken one since.
                # Then the item comes back without it (nothing lost).
                c.executemany(
                    "INSERT INTO chute_item (id, queue, data, deliveries, token, priority, key, "
                    "ready_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN EXISTS (SELECT 1 FROM "
                    "chute_item WHERE queue = ?2 AND key = ?7) THEN NULL ELSE ?7 END, ?8)",
                    [(r.key, name, r.data, r.deliveries, r.token, *r.extra) for r in records],
                )
                c.execute("UPDATE chute_queue SET stored = stored + ? WHERE name = ?", (n, name))
            c.execute("UPDATE chute_queue SET total_got = total_got - ? WHERE name = ?", (n, name))

        return Op(give_back, {Wait.GET: n})

    def bury(self, records: list[tuple[Record, ErrorInfo]], *, leased: bool) -> Op[None]:
        name = self.name

        def bury(c: sqlite3.Connection) -> None:
            now = time.time()
            for record, info in records:
                why = info.to_json()
                if leased:  # still stored, on our lease
                    to_dead(c, name, record.key, now, "undecodable", why)
                    continue
                c.execute(  # already taken out of the queue by the get
                    "INSERT INTO chute_dead (queue, data, deliveries, died_at, reason, last_error) "
                    "VALUES (?, ?, ?, ?, 'undecodable', ?)",
                    (name, record.data, record.deliveries, now, why),
                )
                c.execute(
                    "UPDATE chute_queue SET dead = dead + 1, "
                    "unfinished = max(unfinished - 1, 0) WHERE name = ?",
                    (name,),
                )

        return Op(bury, {Wait.JOIN: ALL})

    def settle(
        self, record: Record, how: Settle, *, delay: float | None, error: ErrorInfo | None
    ) -> Op[Outcome]:
        name, id_, token, db = self.name, record.key, record.token, self._db

        def ack(c: sqlite3.Connection) -> Outcome:  # the common case, in two statements
            if not c.execute(
                "DELETE FROM chute_item WHERE id = ? AND token = ? AND leased = 1", (id_, token)
            ).rowcount:
                raise LeaseLost(_lost(name))
            count_settled(c, name)  # on failure the savepoint restores the row
            return "acked"

        if how is Settle.ACK:
            return Op(ack, _ACK_RINGS, short=True)
        why = None if error is None else error.to_json()

        def nack(c: sqlite3.Connection) -> Outcome:
            row = c.execute(
                "SELECT deliveries FROM chute_item WHERE id = ? AND token = ? AND leased = 1",
                (id_, token),
            ).fetchone()
            if row is None:
                raise LeaseLost(_lost(name))
            queue = queue_row(c, name)
            limit = queue.max_deliveries
            if queue.state == QueueState.IMMEDIATE or (limit is not None and row[0] >= limit):
                count_settled(c, name)
                to_dead(c, name, id_, time.time(), "failed", why, counted=True)
                return "dead"
            if delay:
                due = time.time() + delay
                db.may_come_due(name, due)
                c.execute(
                    "UPDATE chute_item SET leased = ?, visible_at = ?, "
                    "last_error = coalesce(?, last_error) WHERE id = ?",
                    (_DELAYED, due, why, id_),
                )
            else:
                c.execute(
                    "UPDATE chute_item SET leased = ?, visible_at = 0, "
                    "last_error = coalesce(?, last_error) WHERE id = ?",
                    (_READY, why, id_),
                )
            return "retried"

        # A nack may turn into a dead letter (JOIN); after a delay, sleeping
        # getters look again at when to wake.
        return Op(nack, EVERYONE if delay else {Wait.GET: 1, Wait.JOIN: ALL}, short=True)

    def extend(self, record: Record, seconds: float) -> Op[None]:
        name, id_, token, db = self.name, record.key, record.token, self._db

        def extend(c: sqlite3.Connection) -> None:
            due = time.time() + seconds  # sooner than before, maybe
            db.may_come_due(name, due)
            if not c.execute(
                "UPDATE chute_item SET visible_at = ? WHERE id = ? AND token = ? AND leased = 1",
                (due, id_, token),
            ).rowcount:
                raise LeaseLost(
                    f"queue {name!r}: this job's lease ran out and the item was delivered "
                    "again; its lease cannot be extended"
                )

        return Op(extend, short=True)

    def task_done(self) -> Op[None]:
        name = self.name

        def task_done(c: sqlite3.Connection) -> None:
            if not c.execute(
                "UPDATE chute_queue SET unfinished = unfinished - 1 "
                "WHERE name = ? AND unfinished > 0",
                (name,),
            ).rowcount:
                raise ValueError("task_done() called too many times")

        return Op(task_done, {Wait.JOIN: ALL})

    # -- the queue ---------------------------------------------------------------

    def counts(self, *, oldest: bool = False) -> Op[Counts]:
        name = self.name

        def counts(c: sqlite3.Connection) -> Counts:
            now = time.time()
            row = queue_row(c, name)
            leased, delayed, scheduled = c.execute(OUT_COUNTS, (name, now)).fetchone()
            out = leased + delayed
            age = None
            if oldest:
                (since,) = c.execute(OLDEST, (name, now)).fetchone()
                age = None if since is None else max(0.0, now - since)
            return Counts(
                maxsize=row.maxsize,
                max_deliveries=row.max_deliveries,
                state=QueueState(row.state),
                ready=row.stored - out,
                in_flight=out,
                delayed=delayed,
                total_put=row.total_put,
                total_got=row.total_got,
                peak=row.peak,
                dead=row.dead,
                unfinished=row.unfinished,
                scheduled=scheduled,
                oldest_ready_age=age,
            )

        return Op(counts, write=False)

    def configure(self, *, maxsize: int | Unset, max_deliveries: int | Unset | None) -> Op[None]:
        name, path, bounds = self.name, self.where, bound_columns(maxsize, max_deliveries)
        return Op(lambda c: set_bounds(c, name, path, bounds), {Wait.PUT: ALL})

    def shutdown(self, *, immediate: bool) -> Op[Any]:
        state, name = (QueueState.IMMEDIATE if immediate else QueueState.SHUTDOWN), self.name
        return Op(
            lambda c: c.execute(
                "UPDATE chute_queue SET state = max(state, ?) WHERE name = ?", (int(state), name)
            ),
            EVERYONE,
        )

    def reopen(self) -> Op[Any]:
        name = self.name
        return Op(
            lambda c: c.execute("UPDATE chute_queue SET state = 0 WHERE name = ?", (name,)),
            EVERYONE,
        )

    def dead_letters(
        self, *, limit: int | None = None, offset: int = 0, newest_first: bool = False
    ) -> Op[list[DeadRecord]]:
        # In id order on the (queue) index (which holds the row id): the
        # rows skipped by the offset are stepped over in the index alone.
        sql = DEAD_LETTERS + (" ORDER BY id DESC" if newest_first else " ORDER BY id")
        args = (self.name, -1 if limit is None else limit, offset)

        def listing(c: sqlite3.Connection) -> list[DeadRecord]:
            return [DeadRecord.from_row(*row) for row in c.execute(sql + " LIMIT ? OFFSET ?", args)]

        return Op(listing, write=False)

    def purge_dead(self, ids: list[str] | None = None) -> Op[list[DeadRecord]]:
        name, chosen = self.name, None if ids is None else row_ids(ids)

        def purging(c: sqlite3.Connection) -> list[DeadRecord]:
            rows = take_dead(c, name, chosen, DEAD_COLUMNS)
            c.execute("UPDATE chute_queue SET dead = dead - ? WHERE name = ?", (len(rows), name))
            return [DeadRecord.from_row(*row) for row in rows]

        return Op(purging)

    def requeue_dead(self, ids: list[str] | None = None) -> Op[int]:
        name, chosen = self.name, None if ids is None else row_ids(ids)

        def requeue(c: sqlite3.Connection) -> int:
            if queue_row(c, name).state:
                raise QueueShutDown("cannot requeue into a queue that is shut down")
            rows = take_dead(c, name, chosen, "id, data")
            now = time.time()
            c.executemany(INSERT, [(name, d, now) for _, d in rows])
            n = len(rows)
            c.execute(
                "UPDATE chute_queue SET stored = stored + ?1, unfinished = unfinished + ?1, "
                "dead = dead - ?1 WHERE name = ?2",
                (n, name),
            )
            return n

        return Op(requeue, EVERYONE)


class SqliteQueue(DurableQueue[T]):
    """A named queue in a SQLite file; made by ``chute.open("sqlite:///...")``.

    The contract of ``chute.Queue``, durable: an item is stored when
    ``put()`` returns, and survives the process (and, with
    ``durability="power"``, the machine) going down.
    """

    #: What this transport can do (its backend's declaration).
    capabilities: ClassVar[Capabilities] = SqliteBackend.capabilities

    def __init__(
        self,
        path: str,
        name: str,
        maxsize: int | None = None,
        *,
        create: bool = True,
        codec: object = "json",
        visibility_timeout: float = 30.0,
        max_deliveries: int | Unset | None = UNSET,
        durability: str = "crash",
    ) -> None:
        """Open the queue ``name`` in the file at ``path``.

        ``maxsize`` and ``max_deliveries`` are stored with the queue: left
        out (``None`` / not passed), the stored ones hold (a new queue:
        unbounded, no limit); passed, they replace them for every process.
        ``create=False`` opens only a queue that exists, else raises
        ``QueueNotFound`` having created nothing (no file, no queue).
        """
        bounds = checked_opening(name, maxsize, max_deliveries, codec, visibility_timeout)
        backend = SqliteBackend(path, name, create=create, durability=durability, **bounds)
        super().__init__(backend, codec=codec, visibility_timeout=visibility_timeout)

    @classmethod
    def queue_names(cls, path: str, **options: Any) -> list[str]:
        """The names of the queues in the file at ``path``, sorted. Creates
        nothing: ``QueueNotFound`` if there is no such file. (``options``,
        those of the constructor, change nothing here.)"""
        return _stored_names(path)

    @property
    def _db(self) -> Database:
        return self._backend._db  # type: ignore[attr-defined, no-any-return]
