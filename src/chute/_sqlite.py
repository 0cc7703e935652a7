"""The durable embedded transport: a queue in a SQLite file.

Layout: one table of queues (bounds, shutdown state, counters), one of
items, one of dead letters; several named queues share a file. An item is
*claimable* when it is not leased, or when its lease (or its ``nack``
delay) has run out: ``visible_at <= now``. A plain get deletes the item in
the transaction that finds it; a reservation leases it (``leased = 1``,
``visible_at`` = now + the visibility timeout) and bumps its *token*, so an
acknowledgement carrying an older token — a consumer whose lease ran out
and whose item went to someone else — is refused instead of deleting the
item twice.

Every process has one connection per file, owned by one thread, which
takes whatever calls are waiting and runs them in one transaction (group
commit), each in a savepoint of its own so that one call failing leaves
the others whole. The event loop never touches SQLite. A get that finds
nothing waits in line (a task on a future, a thread on an event) and this
process's commits ring as many waiters as they make room for; for commits
of other processes the thread looks at ``PRAGMA data_version`` every few
milliseconds, and only while someone here is waiting. A call whose caller
is cancelled is never run, rolled back, or undone (see ``Database.run``).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import json
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

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
from ._waiters import check_not_on_loop

T = TypeVar("T")
R = TypeVar("R")

SCHEMA_VERSION = 2
APPLICATION_ID = 0x63687574  # "chut": marks a file as chute's
POLL_INTERVAL = 0.005  # seconds between looks for other processes' commits
MAX_GROUP = 512  # calls committed together at most
SIGNAL_SLICE = 0.05  # seconds a blocking caller waits before it looks at signals
_OPEN, _SHUTDOWN, _IMMEDIATE = 0, 1, 2
DURABILITY = {"crash": "NORMAL", "power": "FULL"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chute_queue (
    name TEXT PRIMARY KEY,
    maxsize INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    max_deliveries INTEGER,
    stored INTEGER NOT NULL DEFAULT 0,
    unfinished INTEGER NOT NULL DEFAULT 0,
    total_put INTEGER NOT NULL DEFAULT 0,
    total_got INTEGER NOT NULL DEFAULT 0,
    peak INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chute_item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    data BLOB NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    token INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS chute_item_ready ON chute_item (queue, id) WHERE leased = 0;
CREATE INDEX IF NOT EXISTS chute_item_leased ON chute_item (queue, visible_at) WHERE leased = 1;
CREATE INDEX IF NOT EXISTS chute_item_delayed ON chute_item (queue, visible_at) WHERE leased = 2;
CREATE TABLE IF NOT EXISTS chute_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    data BLOB NOT NULL,
    deliveries INTEGER NOT NULL,
    died_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT 'failed',
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS chute_dead_queue ON chute_dead (queue);
"""

#: How a file of each older schema is brought up to date, in place (one
#: transaction, so a file is either migrated or left as it was). Schema 1
#: kept no errors and no reasons: its dead letters list with
#: reason "failed" and no error; its items given back with a delay look like
#: leases until they come due.
_MIGRATIONS = {
    1: """
ALTER TABLE chute_item ADD COLUMN last_error TEXT;
ALTER TABLE chute_dead ADD COLUMN reason TEXT NOT NULL DEFAULT 'failed';
ALTER TABLE chute_dead ADD COLUMN last_error TEXT;
CREATE INDEX IF NOT EXISTS chute_item_delayed ON chute_item (queue, visible_at) WHERE leased = 2;
""",
}

#: ``chute_item.leased``: claimable in id order; out on a lease until
#: ``visible_at``; given back with a delay, claimable again at ``visible_at``.
#: Until then a delayed item counts as in flight, as on every transport
#: (``statistics().delayed`` says how many are), and when it comes due, no
#: lease "ran out": it is not dead-lettered as one.
_READY, _LEASED, _DELAYED = 0, 1, 2

Row = tuple[int, bytes, int, int]  # id, data, deliveries, token
#: What a claim found, when the next item on a lease or delay comes free
#: (wall clock), and the database's seq once the claim has committed.
Claimed = tuple[list[Row], float | None, int]


GET, PUT, JOIN = "get", "put", "join"  # what a waiter waits for
ALL = 1 << 30
#: Whom a change wakes: waiters of each kind, how many of them.
Wakes = dict[str, int]
WAKE_ALL: Wakes = {GET: ALL, PUT: ALL, JOIN: ALL}


class _Call:
    """One call for the database thread. Its answer goes to a concurrent
    future (sync callers) or, in one batch per loop, to an asyncio future."""

    __slots__ = (
        "abandoned",
        "finished",
        "fn",
        "future",
        "loop",
        "outcome",
        "taken",
        "touches",
        "wakes",
        "write",
    )

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        touches: str | None,
        wakes: Wakes | None,
        write: bool,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fn = fn
        self.touches = touches  # the queue whose waiters to wake after commit
        self.wakes = wakes or WAKE_ALL
        self.write = write
        self.loop = loop
        self.future: Any = concurrent.futures.Future() if loop is None else loop.create_future()
        self.taken = False  # the thread has it (under the database's lock)
        self.abandoned = False  # its caller left before the thread took it
        self.outcome: tuple[Any, BaseException | None] | None = None
        self.finished: asyncio.Future[None] | None = None  # for a caller that left

    def settle(self, value: Any, exc: BaseException | None) -> None:
        """On the database thread (sync callers) or the caller's loop."""
        self.outcome = (value, exc)
        if self.loop is None:
            if not self.future.done():  # a waiter may have cancelled it
                if exc is None:
                    self.future.set_result(value)
                else:
                    self.future.set_exception(exc)
            return
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)
        if not self.future.done():
            if exc is None:
                self.future.set_result(value)
            else:
                self.future.set_exception(exc)


class _Withdrawn(Exception):
    """A call rolled back because its caller had been cancelled."""


_WITHDRAWN = _Withdrawn()


def _settle_all(answers: list[tuple[_Call, Any, BaseException | None]]) -> None:
    for call, value, exc in answers:
        call.settle(value, exc)


class _Waiter:
    """A task waiting on its loop (``future``), or a plain thread (``event``)."""

    __slots__ = ("event", "future", "loop", "rings", "woken")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future() if loop else None  # type: ignore[assignment]
        self.event = threading.Event() if loop is None else None
        self.woken = False  # rung since it last looked (under the database's lock)
        self.rings = 0  # rings received while in line


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Database:
    """One file's connection in this process, and the thread that owns it."""

    _open: ClassVar[dict[tuple[int, str], Database]] = {}
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def acquire(cls, path: str, durability: str, create: bool = True) -> Database:
        """This process's connection to ``path``; with ``create=False``, only
        to a file that exists (``QueueNotFound`` otherwise, and no file made)."""
        key = (os.getpid(), os.path.realpath(path))
        with cls._open_lock:
            db = cls._open.get(key)
            if db is None or db._closed:
                db = cls._open[key] = Database(path, durability, create)
            elif db.durability != durability:
                raise ValueError(
                    f"{path} is open in this process with durability={db.durability!r}; "
                    "every queue of one file shares one setting"
                )
            db._users += 1
            return db

    def __init__(self, path: str, durability: str, create: bool = True) -> None:
        self.path = path
        self.durability = durability
        self._pid = os.getpid()
        #: Bumped by every commit seen (ours, or another process's): a caller
        #: that found nothing at seq N and still sees N has missed nothing.
        self.seq = 0
        self._users = 0
        self._closed = False
        self._inbox: collections.deque[_Call] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiters: dict[tuple[str, str], dict[_Waiter, None]] = collections.defaultdict(dict)
        self._waiting = 0  # waiters of every queue: poll for others' commits while > 0
        self._stopping = False
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(opened, create), name=f"chute-sqlite {path}", daemon=True
        )
        self._thread.start()
        opened.result()  # raises what opening raised
        _all.add(self)

    # -- calls ---------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], R],
        touches: str | None = None,
        write: bool = True,
        wakes: Wakes | None = None,
    ) -> concurrent.futures.Future[R]:
        if os.getpid() != self._pid:
            raise ChuteError(
                "a SQLite queue cannot be used across fork(): open it again in the child"
            )
        call = _Call(fn, touches, wakes, write)
        self._enqueue(call)
        return call.future  # type: ignore[no-any-return]

    def _enqueue(self, call: _Call) -> None:
        with self._cond:
            if self._closed:
                raise ChuteError(f"the queue file {self.path} was closed in this process")
            self._inbox.append(call)
            self._cond.notify()

    def run_detached(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn`` in a transaction of a connection of its own, in the
        caller's thread: for undoing what a cancelled call did when this
        file was closed meanwhile (rare; it blocks the caller)."""
        conn = _connect(self.path, self.durability)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                value = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return value
        finally:
            conn.close()

    def call(
        self,
        fn: Callable[[sqlite3.Connection], R],
        touches: str | None = None,
        write: bool = True,
        wakes: Wakes | None = None,
        on_cancel: Callable[[R], Any] | None = None,
    ) -> R:
        """Run ``fn`` on the database thread and wait for it (sync callers).

        If the wait is interrupted (Ctrl-C's ``KeyboardInterrupt`` in the
        main thread) before the thread took the call, it never runs; after,
        the interruption waits for the call's end and ``on_cancel(result)``
        undoes it, as for a cancelled async call."""
        if threading.current_thread() is self._thread:  # pragma: no cover - a bug of ours
            raise RuntimeError("a database call from the database thread")
        if os.getpid() != self._pid:
            raise ChuteError(
                "a SQLite queue cannot be used across fork(): open it again in the child"
            )
        call = _Call(fn, touches, wakes, write)
        self._enqueue(call)
        try:
            # In slices: a signal is handled by the main thread only, and one
            # arriving while it waited in C would stay pending (and keep the
            # other threads busy checking for it) until the call was over.
            while not call.future.done():
                with contextlib.suppress(TimeoutError):
                    call.future.result(SIGNAL_SLICE)
            return call.future.result()  # type: ignore[no-any-return]
        except BaseException as interrupted:
            if isinstance(interrupted, Exception) and call.future.done():
                raise  # the call's own error
            with self._cond:
                if not call.taken:
                    call.abandoned = True
                    raise
            try:
                value = call.future.result()
            except Exception:
                raise interrupted from None
            if on_cancel is not None:
                on_cancel(value)
            raise

    async def run(
        self,
        fn: Callable[[sqlite3.Connection], R],
        touches: str | None = None,
        write: bool = True,
        wakes: Wakes | None = None,
        on_cancel: Callable[[R], Any] | None = None,
    ) -> R:
        """Run ``fn`` on the database thread for an async caller.

        If the caller is cancelled before the thread took the call, it never
        runs. If after, the cancellation waits until the call is over and
        then awaits ``on_cancel(result)`` (to undo what it did), so that the
        caller's next call cannot overtake the undoing.
        """
        if os.getpid() != self._pid:
            raise ChuteError(
                "a SQLite queue cannot be used across fork(): open it again in the child"
            )
        call = _Call(fn, touches, wakes, write, asyncio.get_running_loop())
        self._enqueue(call)
        try:
            return await call.future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            with self._cond:
                if not call.taken:
                    call.abandoned = True
                    raise
            if call.outcome is None:
                call.finished = call.loop.create_future()  # type: ignore[union-attr]
                await _uninterrupted(call.finished)
            assert call.outcome is not None
            value, exc = call.outcome
            if exc is None and on_cancel is not None:  # it ran, and stands: undo it
                await _uninterrupted(on_cancel(value))
            raise

    # -- waiting -------------------------------------------------------------------------

    def add_waiter(self, queue: str, kind: str, sync: bool = False) -> _Waiter:
        """Wait in line for ``kind`` of change to ``queue``: the oldest
        waiters are rung first, as many as the change makes room for."""
        w = _Waiter(None if sync else asyncio.get_running_loop())
        with self._cond:
            self._waiters[(queue, kind)][w] = None
            self._waiting += 1
            if self._waiting == 1:
                self._cond.notify()  # the thread starts polling for other processes
        return w

    def rearm(self, w: _Waiter) -> None:
        """A rung waiter looks again: it keeps its place in line."""
        with self._cond:
            w.woken = False
            if w.event is not None:
                w.event.clear()
            else:
                w.future = w.loop.create_future()  # type: ignore[union-attr]

    def remove_waiter(
        self, queue: str, kind: str, w: _Waiter, used: int = 0, timer: bool = False
    ) -> None:
        """Leave the line, having used ``used`` of the rings it got.

        A ring is meant for one item (or one free slot); one this waiter did
        not use — it gave up, or a ring came while it was already taking
        another item — goes on to the next in line, and so does the timer of
        a waiter that was the one to wake when a lease or delay runs out.
        A spare ring costs one look; a lost one, a waiter asleep for ever.
        """
        with self._cond:
            line = self._waiters.get((queue, kind))
            if line is None or w not in line:
                return
            del line[w]
            self._waiting -= 1
            spare = max(w.rings - used, 1 if timer else 0)
        if spare and kind != JOIN:
            self._wake({queue: {kind: spare}})

    def waiting(self, queue: str, kind: str) -> int:
        with self._cond:
            return len(self._waiters.get((queue, kind), ()))

    def _wake(self, plan: dict[str, Wakes] | None) -> None:
        """Ring waiters: ``plan`` maps a queue to how many of each kind;
        None rings everyone (another process changed the file)."""
        todo: list[tuple[Any, Any, threading.Event | None]] = []
        with self._cond:
            for (queue, kind), line in self._waiters.items():
                n = ALL if plan is None else plan.get(queue, {}).get(kind, 0)
                for w in line:
                    if n <= 0:
                        break
                    if not w.woken:
                        w.woken = True
                        w.rings += 1
                        todo.append((w.loop, w.future, w.event))
                        n -= 1
        for loop, fut, event in todo:
            if event is not None:
                event.set()
                continue
            with contextlib.suppress(RuntimeError):  # its loop is closed
                loop.call_soon_threadsafe(_wake, fut)

    # -- lifecycle -----------------------------------------------------------------------

    def release(self) -> None:
        with Database._open_lock:
            self._users -= 1
            if self._users > 0:
                return
            key = (os.getpid(), os.path.realpath(self.path))
            if Database._open.get(key) is self:
                del Database._open[key]
        self.close()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the thread ----------------------------------------------------------------------

    def _serve(self, opened: concurrent.futures.Future[None], create: bool) -> None:
        try:
            conn = _connect(self.path, self.durability, create)
        except BaseException as exc:
            self._closed = True
            opened.set_exception(exc)
            return
        opened.set_result(None)
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        try:
            while True:
                with self._cond:
                    while not self._inbox and not self._stopping:
                        if self._waiting:
                            if not self._cond.wait(POLL_INTERVAL):
                                break  # time to look at the file
                        else:
                            self._cond.wait()
                    calls: list[_Call] = []
                    while self._inbox and len(calls) < MAX_GROUP:
                        call = self._inbox.popleft()
                        if not call.abandoned:
                            call.taken = True
                            calls.append(call)
                    if not calls and self._stopping and not self._inbox:
                        break
                try:
                    if calls:
                        self._run_group(conn, calls)
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                except Exception as exc:  # never let the thread die with callers waiting
                    error = _translate(exc, self.path)
                    self._deliver([(c, None, error) for c in calls if c.outcome is None])
                    continue
                if now != version:  # another process committed
                    version = now
                    self.seq += 1
                    self._wake(None)
        finally:
            conn.close()
            with self._cond:
                self._closed = True
                leftover = list(self._inbox)
                self._inbox.clear()
            closed = ChuteError("the queue file was closed")
            self._deliver([(call, None, closed) for call in leftover if not call.abandoned])
            self._wake(None)  # whoever still waits looks again, and finds it closed

    def _deliver(self, answers: list[tuple[_Call, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Call, Any, BaseException | None]]]
        by_loop = {}
        for answer in answers:
            call = answer[0]
            if call.loop is None:
                call.settle(answer[1], answer[2])
            else:
                by_loop.setdefault(call.loop, []).append(answer)
        for loop, batch in by_loop.items():  # one wake-up per loop
            with contextlib.suppress(RuntimeError):  # its loop is closed
                loop.call_soon_threadsafe(_settle_all, batch)

    @staticmethod
    def _run_plain(
        conn: sqlite3.Connection, calls: list[_Call]
    ) -> list[tuple[_Call, Any, BaseException | None]]:
        """Every call's answer, or [] if one failed (the transaction is
        still open, with what the calls before it did)."""
        results: list[tuple[_Call, Any, BaseException | None]] = []
        for c in calls:
            try:
                value = c.fn(conn)
            except Exception:
                if not conn.in_transaction:
                    raise  # SQLite rolled it all back: the group fails, below
                return []
            if c.loop is not None and c.future.cancelled():
                return []  # to be withdrawn: that takes a savepoint
            results.append((c, value, None))
        return results

    def _run_group(self, conn: sqlite3.Connection, calls: list[_Call]) -> None:
        begin = "BEGIN IMMEDIATE" if any(c.write for c in calls) else "BEGIN"
        alone = len(calls) == 1  # no savepoint needed: the transaction is the call
        results: list[tuple[_Call, Any, BaseException | None]] = []
        try:
            conn.execute(begin)
            if not alone:
                # Calls almost never fail: run them all without savepoints
                # (two statements fewer per call), and only if one fails,
                # roll back and run them again, each in a savepoint.
                results = self._run_plain(conn, calls)
                if not results:
                    conn.execute("ROLLBACK")
                    conn.execute(begin)
            for c in calls if not results else ():
                if not alone:
                    conn.execute("SAVEPOINT call")
                try:
                    value = c.fn(conn)
                    if c.loop is not None and c.future.cancelled():
                        # Its caller was cancelled while it ran: undo it here,
                        # before anyone can see it (and before a close).
                        raise _Withdrawn
                except BaseException as exc:
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back (a full
                        # disk, an I/O error): every call of the group fails
                        # with this error, below.
                        raise
                    if alone:
                        conn.execute("ROLLBACK")
                        conn.execute("BEGIN")
                    else:
                        conn.execute("ROLLBACK TO call")
                        conn.execute("RELEASE call")
                    results.append((c, None, exc))
                else:
                    if not alone:
                        conn.execute("RELEASE call")
                    results.append((c, value, None))
            conn.execute("COMMIT")
            self.seq += 1
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = _translate(exc, self.path)
            self._deliver([(c, None, error) for c in calls])
            return
        plan: dict[str, Wakes] = {}
        results = [(c, v, _WITHDRAWN if isinstance(e, _Withdrawn) else e) for c, v, e in results]
        for c, _, err in results:
            if c.touches is not None and err is None:
                wakes = plan.setdefault(c.touches, {})
                for kind, n in c.wakes.items():
                    wakes[kind] = min(ALL, wakes.get(kind, 0) + n)
        self._deliver(
            [
                (c, value, None if err is None else _translate(err, self.path))
                for c, value, err in results
            ]
        )
        if plan:
            self._wake(plan)


_all: weakref.WeakSet[Database] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for db in list(_all):
        db.close()


def _translate(exc: BaseException, path: str) -> BaseException:
    if isinstance(exc, _Withdrawn):
        return exc
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "disk is full" in text or "database or disk is full" in text:
            return ChuteError(f"the disk holding {path} is full: nothing was stored")
        if "readonly" in text or "read-only" in text:
            return ChuteError(f"{path} is read-only here: nothing was stored")
        return ChuteError(f"SQLite error on {path}: {text}")
    return exc


def _connect(path: str, durability: str, create: bool = True) -> sqlite3.Connection:
    folder = os.path.dirname(os.path.abspath(path))
    if not create and not os.path.exists(path):
        raise QueueNotFound(f"no file {path}")
    if not os.path.isdir(folder):
        raise ChuteError(f"cannot open {path}: the folder {folder} does not exist")
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise ChuteError(f"cannot open {path}: it is not a file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ChuteError(f"cannot open {path}: it is not readable and writable by this user")
    elif not os.access(folder, os.W_OK):
        raise ChuteError(f"cannot create {path}: the folder {folder} is read-only for this user")
    try:
        # Without create, mode=rw: a file removed since the look above is
        # not made again.
        conn = sqlite3.connect(
            path if create else _uri(path, "rw"),
            timeout=60.0,
            isolation_level=None,
            check_same_thread=False,
            uri=not create,
        )
    except sqlite3.Error as exc:
        if not create and not os.path.exists(path):
            raise QueueNotFound(f"no file {path}") from None
        raise ChuteError(f"cannot open {path}: {exc}") from exc
    try:
        _prepare(conn, path, durability)
    except BaseException:
        conn.close()
        raise
    return conn


def _uri(path: str, mode: str) -> str:
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"


def _check_file(conn: sqlite3.Connection, path: str) -> int:
    """The schema version of a chute file (0: a new, empty file); refuses
    what is not one, or what a newer chute wrote."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ChuteError(f"{path} is not a SQLite database ({exc})") from exc
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise ChuteError(f"{path} is a SQLite database, but not a chute queue file")
    if version > SCHEMA_VERSION:
        raise ChuteError(
            f"{path} was written by a newer chute (schema {version}); "
            f"this one reads schema {SCHEMA_VERSION} and older: upgrade chute"
        )
    return int(version)


def _stored_names(path: str) -> list[str]:
    """The queues in the file at ``path``, sorted, read on a read-only
    connection of its own: looking creates nothing."""
    if not os.path.isfile(path):
        raise QueueNotFound(f"no file {path}")
    try:
        conn = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=60.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise ChuteError(f"cannot open {path}: {exc}") from exc
    try:
        if not _check_file(conn, path):
            return []
        rows = conn.execute("SELECT name FROM chute_queue ORDER BY name").fetchall()
        return [name for (name,) in rows]
    except sqlite3.Error as exc:
        raise _translate(exc, path) from exc
    finally:
        conn.close()


def _prepare(conn: sqlite3.Connection, path: str, durability: str) -> None:
    version = _check_file(conn, path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Looked at again under the write lock: another process may
                # have brought the file up to date meanwhile.
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found < SCHEMA_VERSION:
                    scripts = (
                        [_SCHEMA]
                        if found == 0
                        else [_MIGRATIONS[v] for v in range(found, SCHEMA_VERSION)]
                    )
                    for script in scripts:
                        for statement in script.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise _translate(exc, path) from exc


# -- the queue -----------------------------------------------------------------------------


class SqliteQueue(Generic[T]):
    """A named queue in a SQLite file; made by ``chute.open("sqlite:///...")``.

    The same contract as ``chute.Queue``, durable: an item is stored when
    ``put()`` returns, and survives the process (and, with
    ``durability="power"``, the machine) going down.
    """

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
        if not isinstance(name, str) or not name:
            raise ValueError("a queue name must be a non-empty string")
        bounds = _bounds(UNSET if maxsize is None else maxsize, max_deliveries)
        vt = check_timeout(visibility_timeout)
        if vt is None or vt <= 0:
            raise ValueError(
                "visibility_timeout must be a finite number of seconds > 0, "
                f"not {visibility_timeout!r}"
            )
        if durability not in DURABILITY:
            raise ValueError(f"durability must be 'crash' or 'power', not {durability!r}")
        self._codec: Codec = get_codec(codec)
        self._name = name
        self._path = path
        self._visibility = vt
        self._closed = False
        self._putters = 0
        self._getters = 0
        self._sync: SqliteSyncQueue[T] | None = None
        if not create:
            # Looked at first on a read-only connection: a file without
            # chute's tables must not get them from a look.
            names = _stored_names(path)
            if name not in names:
                raise QueueNotFound(_no_queue(name, path, names))
        self._db = Database.acquire(path, durability, create)
        try:
            self._db.call(lambda c: self._declare(c, bounds, create), touches=name)
        except BaseException:
            self._db.release()
            raise

    def _declare(self, c: sqlite3.Connection, bounds: dict[str, int | None], create: bool) -> None:
        if create:
            c.execute(
                "INSERT INTO chute_queue (name) VALUES (?) ON CONFLICT DO NOTHING", (self._name,)
            )
        _set_bounds(c, self._name, self._path, bounds)

    @classmethod
    def queue_names(cls, path: str, **options: Any) -> list[str]:
        """The names of the queues in the file at ``path``, sorted. Creates
        nothing: ``QueueNotFound`` if there is no such file. (``options``,
        those of the constructor, change nothing here.)"""
        return _stored_names(path)

    def configure(
        self,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
    ) -> None:
        """Change the queue's stored bounds, for every process using it
        (``max_deliveries=None``: no limit). A larger ``maxsize`` wakes
        putters waiting here at once, and elsewhere on their next look; a
        smaller one keeps the items (puts wait until it drains)."""
        self._check_open()
        bounds = _bounds(maxsize, max_deliveries)
        if bounds:
            self._db.call(
                lambda c: _set_bounds(c, self._name, self._path, bounds),
                touches=self._name,
                wakes={PUT: ALL},
            )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    def close(self) -> None:
        """Let go of the file (the items stay in it). Idempotent."""
        if not self._closed:
            self._closed = True
            # This queue's waiters in this process wake, and find it closed.
            self._db._wake({self._name: WAKE_ALL})
            self._db.release()

    async def aclose(self) -> None:
        """Close without blocking the loop: the last queue of a file waits
        for the file's thread to finish its transaction, off the loop."""
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> SqliteQueue[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<chute.SqliteQueue {self._name!r} in {self._path!r}>"

    def _check_open(self) -> None:
        if self._closed:
            raise ChuteError(f"queue {self._name!r} was closed in this process")

    # -- sizes -------------------------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The bound stored with the queue (0: unbounded), as every process
        sees it now. Assigning it is ``configure(maxsize=...)``."""
        return self._read().maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.configure(maxsize=value)

    @property
    def unfinished_tasks(self) -> int:
        """Items put (by any process) and not yet marked done: what ``join()`` waits on."""
        return self._read().unfinished

    def _read(self) -> _Stored:
        self._check_open()
        return self._db.call(lambda c: _queue_row(c, self._name), write=False)

    def qsize(self) -> int:
        """Items stored and claimable now (not those out on a lease or a
        delay), from the file."""
        self._check_open()
        return self._db.call(lambda c: _ready(c, self._name, time.time()), write=False)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        self._check_open()
        name = self._name

        def full(c: sqlite3.Connection) -> bool:
            maxsize = _queue_row(c, name).maxsize
            return 0 < maxsize <= _ready(c, name, time.time())

        return self._db.call(full, write=False)

    @property
    def is_shutdown(self) -> bool:
        return bool(self._read().state)

    def statistics(self) -> QueueStatistics:
        """Counts from the file (getters and putters waiting: in this process)."""
        self._check_open()
        name = self._name

        def read(c: sqlite3.Connection) -> QueueStatistics:
            now = time.time()
            row = _queue_row(c, name)
            flying = _in_flight(c, name, now)
            delayed = c.execute(
                "SELECT count(*) FROM chute_item WHERE queue = ? AND leased = 2 AND visible_at > ?",
                (name, now),
            ).fetchone()[0]
            return QueueStatistics(
                size=row.stored - flying,
                maxsize=row.maxsize,
                getters_waiting=self._getters,
                putters_waiting=self._putters,
                in_flight=flying,
                total_put=row.total_put,
                total_got=row.total_got,
                peak_size=row.peak,
                dead_lettered=row.dead,
                unfinished_tasks=row.unfinished,
                shutdown=bool(row.state),
                delayed=delayed,
            )

        return self._db.call(read, write=False)

    # -- put -------------------------------------------------------------------------------

    def _encode_all(self, items: list[T]) -> list[bytes]:
        return [encode_item(self._codec, item) for item in items]

    def _insert(
        self, records: list[bytes], items: list[T], single: bool
    ) -> Callable[[sqlite3.Connection], tuple[int, int] | None]:
        """The put's transaction: None if full, else the ids it stored
        (consecutive: one statement, AUTOINCREMENT)."""
        name = self._name

        def insert(c: sqlite3.Connection) -> tuple[int, int] | None:
            row = c.execute(_ROOM, (name, time.time())).fetchone()
            if row is None:
                raise ChuteError(f"no queue named {name!r} in this file")
            state, maxsize, ready = row  # the bound in the file: every process keeps it
            if state:
                if single:
                    raise QueueShutDown(item=items[0])
                raise QueueShutDown(items=items)
            n = len(records)
            if n > maxsize > 0:
                raise ValueError(f"a batch of {n} items can never fit a queue of maxsize {maxsize}")
            if maxsize and ready + n > maxsize:
                return None
            if n == 1:
                last = int(
                    c.execute(
                        "INSERT INTO chute_item (queue, data) VALUES (?, ?)", (name, records[0])
                    ).lastrowid
                    or 0
                )
            else:
                c.executemany(
                    "INSERT INTO chute_item (queue, data) VALUES (?, ?)",
                    [(name, r) for r in records],
                )
                last = int(c.execute("SELECT last_insert_rowid()").fetchone()[0])
            c.execute(
                "UPDATE chute_queue SET stored = stored + ?1, unfinished = unfinished + ?1, "
                "total_put = total_put + ?1, peak = max(peak, ?2) WHERE name = ?3",
                (n, ready + n, name),
            )
            return last - n + 1, last

        return insert

    async def _take_back(self, ids: tuple[int, int] | None) -> None:
        """A put cancelled after its transaction ran: remove its items if
        none has been taken yet (all or none: a batch stays whole); if one
        has, the put stands, completed."""
        done = self._undo(self._take_back_fn(ids), ids)
        if done is not None:
            await asyncio.wrap_future(done)

    def _take_back_now(self, ids: tuple[int, int] | None) -> None:
        """``_take_back`` for a blocking caller that was interrupted."""
        done = self._undo(self._take_back_fn(ids), ids)
        if done is not None:
            done.result()

    def _undo(
        self, fn: Callable[[sqlite3.Connection], None] | None, ids: tuple[int, int] | None
    ) -> concurrent.futures.Future[None] | None:
        if fn is None or ids is None:
            return None
        wakes = {PUT: ids[1] - ids[0] + 1, JOIN: ALL}
        try:
            return self._db.submit(fn, touches=self._name, wakes=wakes)
        except ChuteError:  # closed meanwhile: on a connection of our own
            self._db.run_detached(fn)
            return None

    def _take_back_fn(
        self, ids: tuple[int, int] | None
    ) -> Callable[[sqlite3.Connection], None] | None:
        if ids is None:
            return None
        lo, hi = ids
        name = self._name

        def take_back(c: sqlite3.Connection) -> None:
            n = hi - lo + 1
            there = c.execute(
                "SELECT count(*) FROM chute_item WHERE id BETWEEN ? AND ? AND leased = 0",
                (lo, hi),
            ).fetchone()[0]
            if there == n:
                c.execute("DELETE FROM chute_item WHERE id BETWEEN ? AND ?", (lo, hi))
                c.execute(
                    "UPDATE chute_queue SET stored = stored - ?1, unfinished = unfinished - ?1, "
                    "total_put = total_put - ?1 WHERE name = ?2",
                    (n, name),
                )

        return take_back

    async def put(self, item: T, timeout: float | None = None) -> None:
        """Store ``item``, waiting while full. Stored in the file when this returns."""
        self._check_open()
        records = self._encode_all([item])
        await self._put_records(records, [item], True, timeout)

    async def put_batch(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Store all ``items`` in one transaction, or none of them."""
        batch, records = self._batch(items)
        if batch:
            await self._put_records(records, batch, False, timeout)

    def _batch(self, items: Iterable[T]) -> tuple[list[T], list[bytes]]:
        """A batch and its records, checked: encodable, and able to fit."""
        self._check_open()
        batch = list(items)
        return batch, self._encode_all(batch)

    async def _put_records(
        self, records: list[bytes], items: list[T], single: bool, timeout: float | None
    ) -> None:
        if timeout is not None:
            timeout = check_timeout(timeout)
        insert = self._insert(records, items, single)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: _Waiter | None = None
        stored = False
        try:
            while True:
                self._check_open()
                # A put cancelled while its transaction runs is withdrawn
                # (see Database.run): the queue is left unchanged.
                ids = await self._db.run(
                    insert,
                    touches=self._name,
                    wakes={GET: len(records)},
                    on_cancel=self._take_back,
                )
                if ids is not None:
                    stored = True
                    return
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError("timed out")
                if waiter is None:
                    self._putters += 1
                    waiter = self._db.add_waiter(self._name, PUT)
                    continue  # look once more now that a commit would wake us
                await self._sleep(waiter, deadline, None)
                self._db.rearm(waiter)
        finally:
            if waiter is not None:
                self._putters -= 1
                self._db.remove_waiter(self._name, PUT, waiter, used=int(stored))

    def put_nowait(self, item: T) -> None:
        """Store ``item`` now or raise ``QueueFull`` (waits for one transaction)."""
        self._check_open()
        records = self._encode_all([item])
        insert = self._insert(records, [item], True)
        ids = self._db.call(
            insert, touches=self._name, wakes={GET: 1}, on_cancel=self._take_back_now
        )
        if ids is None:
            raise QueueFull()

    async def _sleep(self, waiter: _Waiter, deadline: float | None, wake_at: float | None) -> None:
        """Until woken, the deadline, or ``wake_at`` (wall clock) when an item
        on a lease or a delay becomes claimable."""
        loop = asyncio.get_running_loop()
        until = deadline
        if wake_at is not None:
            at = loop.time() + max(0.0, wake_at - time.time())
            until = at if until is None else min(until, at)
        if until is None:
            await waiter.future
            return
        handle = loop.call_at(until, _wake, waiter.future)
        try:
            await waiter.future
        finally:
            handle.cancel()

    # -- get -----------------------------------------------------------------------------------

    def _claim(self, max_items: int, lease: bool) -> Callable[..., Claimed]:
        name, vt, db = self._name, self._visibility, self._db

        def claim(c: sqlite3.Connection) -> Claimed:
            queue = _queue_row(c, name)
            state, max_deliveries = queue.state, queue.max_deliveries
            if state == _IMMEDIATE:
                raise QueueShutDown()
            now = time.time()
            rows: list[Row] = []
            after = 0
            while len(rows) < max_items:
                want = max_items - len(rows)
                found = c.execute(_CLAIMABLE, (name, after, want, now)).fetchall()
                if not found:
                    break
                after = found[-1][0]
                for id_, data, deliveries, token, leased in found:
                    if (
                        leased == _LEASED
                        and max_deliveries is not None
                        and deliveries >= max_deliveries
                    ):
                        # Its holder's lease ran out on the last delivery allowed.
                        _to_dead(c, name, id_, now, "lease expired")
                        continue
                    rows.append((id_, data, deliveries, token))
                if len(found) < want:
                    break
            if not rows:
                if state == _SHUTDOWN:
                    raise QueueShutDown()
                due = [at for (at,) in c.execute(_NEXT_DUE, (name,)) if at is not None]
                return [], min(due, default=None), db.seq + 1  # our group's commit makes it so
            ids = [r[0] for r in rows]
            chunks = [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
            if lease:
                for chunk in chunks:  # one statement per chunk of a batch
                    c.execute(
                        "UPDATE chute_item SET leased = 1, visible_at = ?, token = token + 1, "
                        f"deliveries = deliveries + 1 WHERE id IN ({_marks(chunk)})",
                        (now + vt, *chunk),
                    )
                rows = [(i, d, n + 1, t + 1) for i, d, n, t in rows]
                c.execute(
                    "UPDATE chute_queue SET total_got = total_got + ? WHERE name = ?",
                    (len(rows), name),
                )
            else:
                for chunk in chunks:
                    c.execute(f"DELETE FROM chute_item WHERE id IN ({_marks(chunk)})", chunk)
                c.execute(
                    "UPDATE chute_queue SET stored = stored - ?1, total_got = total_got + ?1 "
                    "WHERE name = ?2",
                    (len(rows), name),
                )
            return rows, None, db.seq + 1

        return claim

    def _unclaim(self, rows: list[Row], leased: bool) -> concurrent.futures.Future[None]:
        """Put back what a cancelled get had taken: same ids, same places."""
        name = self._name

        def undo(c: sqlite3.Connection) -> None:
            if leased:
                c.executemany(
                    "UPDATE chute_item SET leased = 0, visible_at = 0, deliveries = deliveries - 1 "
                    "WHERE id = ? AND token = ?",
                    [(r[0], r[3]) for r in rows],
                )
                n = -len(rows)
            else:
                c.executemany(
                    "INSERT INTO chute_item (id, queue, data, deliveries, token) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(i, name, d, n, t) for i, d, n, t in rows],
                )
                c.execute(
                    "UPDATE chute_queue SET stored = stored + ? WHERE name = ?", (len(rows), name)
                )
                n = -len(rows)
            c.execute("UPDATE chute_queue SET total_got = total_got + ? WHERE name = ?", (n, name))

        try:
            return self._db.submit(undo, touches=name, wakes={GET: len(rows)})
        except ChuteError:  # closed meanwhile: undo it on a connection of our own
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(self._db.run_detached(undo))
            return done

    async def _take(self, max_items: int, lease: bool, timeout: float | None) -> list[Row]:
        self._check_open()
        if timeout is not None:
            timeout = check_timeout(timeout)
        claim = self._claim(max_items, lease)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: _Waiter | None = None
        rows: list[Row] = []
        timer = False  # we are (also) the one to wake when a lease or delay runs out
        try:
            while True:
                self._check_open()
                rows, wake_at, seq = await self._claimed(claim, lease, max_items)
                if rows:
                    return rows
                timer = timer or wake_at is not None
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError("timed out")
                if waiter is None:
                    self._getters += 1
                    waiter = self._db.add_waiter(self._name, GET)
                    if self._db.seq != seq:
                        continue  # something committed since: look again
                await self._sleep(waiter, deadline, wake_at)
                self._db.rearm(waiter)
        finally:
            if waiter is not None:
                self._getters -= 1
                self._db.remove_waiter(self._name, GET, waiter, used=1 if rows else 0, timer=timer)

    async def _claimed(self, claim: Callable[..., Claimed], lease: bool, max_items: int) -> Claimed:
        async def give_back(result: Claimed) -> None:
            # A get cancelled after its transaction ran: the items go back
            # in place before the cancellation goes on.
            if result[0]:
                await asyncio.wrap_future(self._unclaim(result[0], lease))

        return await self._db.run(
            claim, touches=self._name, wakes={PUT: max_items, JOIN: ALL}, on_cancel=give_back
        )

    def _decode(self, rows: list[Row], leased: bool) -> list[T]:
        """Decode what a get took. An item that cannot be decoded goes to the
        dead letters, the others taken with it go back, and this raises."""
        out: list[T] = []
        bad: list[tuple[Row, str]] = []  # and why: its decode error (ErrorInfo JSON)
        error: Exception | None = None
        for row in rows:
            try:
                out.append(self._codec.decode(row[1]))
            except Exception as exc:
                bad.append((row, _error_json(exc) or ""))
                error = error or exc
        if not bad:
            return out
        dead = {row[0] for row, _ in bad}
        good = [r for r in rows if r[0] not in dead]
        name = self._name

        def bury(c: sqlite3.Connection) -> None:
            now = time.time()
            for (id_, data, deliveries, _token), why in bad:
                if leased:  # still stored, on our lease
                    _to_dead(c, name, id_, now, "undecodable", why)
                    continue
                c.execute(  # already taken out of the queue by the get
                    "INSERT INTO chute_dead (queue, data, deliveries, died_at, reason, last_error) "
                    "VALUES (?, ?, ?, ?, 'undecodable', ?)",
                    (name, data, deliveries, now, why),
                )
                c.execute(
                    "UPDATE chute_queue SET dead = dead + 1, "
                    "unfinished = max(unfinished - 1, 0) WHERE name = ?",
                    (name,),
                )

        self._db.call(bury, touches=name, wakes={JOIN: ALL})
        if good:
            self._unclaim(good, leased)
        raise undecodable(name, self._codec, error) from error

    async def get(self, timeout: float | None = None) -> T:
        """Take the oldest item for good, waiting while empty."""
        return self._decode(await self._take(1, False, timeout), False)[0]

    async def get_batch(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Take up to ``max_items`` in one transaction, waiting only while empty."""
        max_items = check_max_items(max_items)
        return self._decode(await self._take(max_items, False, timeout), False)

    def get_nowait(self) -> T:
        self._check_open()
        rows, _, _ = self._db.call(
            self._claim(1, False),
            touches=self._name,
            wakes={PUT: 1},
            on_cancel=lambda result: result[0] and self._unclaim(result[0], False).result(),
        )
        if not rows:
            raise QueueEmpty()
        return self._decode(rows, False)[0]

    # -- the blocking face (SqliteSyncQueue) --------------------------------------------

    @property
    def sync(self) -> SqliteSyncQueue[T]:
        """The ``queue.Queue`` face, for plain threads and worker processes
        (one per queue: what is set on it stays)."""
        face = self._sync
        if face is None:
            face = self._sync = SqliteSyncQueue(self)
        return face

    def _wait_in_thread(
        self, kind: str, attempt: Callable[[], Any], block: bool, timeout: float | None, what: str
    ) -> Any:
        """Run ``attempt`` (a blocking database call) until it answers: a
        result, or None to wait for a ring, the deadline or ``next_at``."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter: _Waiter | None = None
        got: Any = None
        timer = False
        try:
            while True:
                self._check_open()
                got, next_at, seq = attempt()
                if got is not None or not block:
                    return got
                if deadline is not None and time.monotonic() >= deadline:
                    raise _TimedOut
                timer = timer or next_at is not None
                if waiter is None:
                    check_not_on_loop(what)
                    waiter = self._db.add_waiter(self._name, kind, sync=True)
                    self._count_waiter(kind, 1)
                    if seq is None or self._db.seq != seq:
                        continue  # something committed since: look again
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if next_at is not None:
                    due = max(0.0, next_at - time.time())
                    wait = due if wait is None else min(wait, due)
                assert waiter.event is not None
                waiter.event.wait(wait)
                self._db.rearm(waiter)
        finally:
            if waiter is not None:
                self._count_waiter(kind, -1)
                self._db.remove_waiter(
                    self._name, kind, waiter, used=0 if got is None else 1, timer=timer
                )

    def _count_waiter(self, kind: str, n: int) -> None:
        if kind == GET:
            self._getters += n
        elif kind == PUT:
            self._putters += n

    def _take_blocking(
        self, max_items: int, lease: bool, block: bool, timeout: float | None
    ) -> list[Row]:
        claim = self._claim(max_items, lease)

        def attempt() -> tuple[list[Row] | None, float | None, int | None]:
            rows, next_at, seq = self._db.call(
                claim,
                touches=self._name,
                wakes={PUT: max_items, JOIN: ALL},
                on_cancel=lambda result: result[0] and self._unclaim(result[0], lease).result(),
            )
            return (rows or None), next_at, seq

        try:
            rows = self._wait_in_thread(GET, attempt, block, timeout, "a blocking get")
        except _TimedOut:
            raise QueueEmpty() from None
        if rows is None:
            raise QueueEmpty()
        return rows  # type: ignore[no-any-return]

    def _put_blocking(
        self, records: list[bytes], items: list[T], single: bool, block: bool, t: float | None
    ) -> None:
        insert = self._insert(records, items, single)

        def attempt() -> tuple[tuple[int, int] | None, None, None]:
            ids = self._db.call(
                insert,
                touches=self._name,
                wakes={GET: len(records)},
                on_cancel=self._take_back_now,
            )
            return ids, None, None

        try:
            ids = self._wait_in_thread(PUT, attempt, block, t, "a blocking put")
        except _TimedOut:
            raise QueueFull() from None
        if ids is None:
            raise QueueFull()

    def _join_blocking(self) -> None:
        name = self._name

        def attempt() -> tuple[bool | None, None, None]:
            done = self._db.call(lambda c: _left_to_join(c, name), write=False) == 0
            return (True if done else None), None, None

        self._wait_in_thread(JOIN, attempt, True, None, "join()")

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except QueueShutDown:
                return
            yield item

    # -- task_done / join / shutdown --------------------------------------------------------

    def task_done(self) -> None:
        self._check_open()
        self._db.call(self._finish, touches=self._name, wakes={JOIN: ALL})

    def _finish(self, c: sqlite3.Connection) -> None:
        cur = c.execute(
            "UPDATE chute_queue SET unfinished = unfinished - 1 WHERE name = ? AND unfinished > 0",
            (self._name,),
        )
        if cur.rowcount == 0:
            raise ValueError("task_done() called too many times")

    async def join(self) -> None:
        """Until every item put (by any process) is marked done."""
        self._check_open()
        name = self._name
        waiter: _Waiter | None = None
        try:
            while True:
                self._check_open()
                if await self._db.run(lambda c: _left_to_join(c, name), write=False) == 0:
                    return
                if waiter is None:
                    waiter = self._db.add_waiter(name, JOIN)
                    continue
                await waiter.future
                self._db.rearm(waiter)
        finally:
            if waiter is not None:
                self._db.remove_waiter(name, JOIN, waiter)

    def shutdown(self, immediate: bool = False) -> list[T]:
        """Shut the queue down for every process using the file.

        Puts raise ``QueueShutDown``; gets go on until the queue is drained
        (with ``immediate=True``, they raise at once). A durable queue never
        deletes stored items on shutdown: they stay in the file, and this
        returns ``[]``. :meth:`reopen` undoes a shutdown.
        """
        self._check_open()
        state = _IMMEDIATE if immediate else _SHUTDOWN
        self._db.call(
            lambda c: c.execute(
                "UPDATE chute_queue SET state = max(state, ?) WHERE name = ?", (state, self._name)
            ),
            touches=self._name,
        )
        return []

    def reopen(self) -> None:
        """Undo :meth:`shutdown` (recorded in the file): puts and gets work again."""
        self._check_open()
        self._db.call(
            lambda c: c.execute("UPDATE chute_queue SET state = 0 WHERE name = ?", (self._name,)),
            touches=self._name,
        )

    # -- reservations --------------------------------------------------------------------

    def reserve(self, timeout: float | None = None) -> SqliteReservation[T]:
        """``async with q.reserve() as job``: at-least-once delivery with a lease."""
        return SqliteReservation(self, timeout)

    async def _reserve(self, timeout: float | None) -> SqliteJob[T]:
        return self._job(await self._take(1, True, timeout))

    def _job(self, rows: list[Row]) -> SqliteJob[T]:
        (id_, _data, deliveries, token) = rows[0]
        return SqliteJob(self, self._decode(rows, True)[0], deliveries, id_, token)

    def _settle_fn(
        self, id_: int, token: int, how: str, delay: float | None, error: str | None = None
    ) -> Callable[[sqlite3.Connection], Outcome]:
        """``how``: "ack" or "nack"; ``error``: what the delivery failed with
        (JSON of an ``ErrorInfo``), kept as the item's last error. The
        transaction answers how the job ended."""
        name = self._name
        lost = (
            f"queue {name!r}: this job's lease ran out and the item was delivered "
            "again; it is settled by whoever holds it now"
        )

        def settle(c: sqlite3.Connection) -> Outcome:
            if how == "ack":  # the common case, in two statements
                if not c.execute(
                    "DELETE FROM chute_item WHERE id = ? AND token = ? AND leased = 1",
                    (id_, token),
                ).rowcount:
                    raise ChuteError(lost)
                _count_settled(c, name)  # on failure the savepoint restores the row
                return "acked"
            row = c.execute(
                "SELECT deliveries FROM chute_item WHERE id = ? AND token = ? AND leased = 1",
                (id_, token),
            ).fetchone()
            if row is None:
                raise ChuteError(lost)
            queue = _queue_row(c, name)
            limit = queue.max_deliveries
            if queue.state == _IMMEDIATE or (limit is not None and row[0] >= limit):
                _count_settled(c, name)
                _to_dead(c, name, id_, time.time(), "failed", error, counted=True)
                return "dead"
            if delay:
                c.execute(
                    "UPDATE chute_item SET leased = 2, visible_at = ?, "
                    "last_error = coalesce(?, last_error) WHERE id = ?",
                    (time.time() + delay, error, id_),
                )
            else:
                c.execute(
                    "UPDATE chute_item SET leased = 0, visible_at = 0, "
                    "last_error = coalesce(?, last_error) WHERE id = ?",
                    (error, id_),
                )
            return "retried"

        return settle

    def dead_letters(self) -> list[DeadLetter[T]]:
        """The dead letters, oldest first, each with why it died (they stay)."""
        self._check_open()
        rows = self._db.call(
            lambda c: c.execute(_DEAD_LETTERS + " ORDER BY id", (self._name,)).fetchall(),
            write=False,
        )
        return [self._dead_letter(*row) for row in rows]

    def _dead_letter(
        self, data: bytes, deliveries: int, died_at: float, reason: str, error: str | None
    ) -> DeadLetter[T]:
        info = ErrorInfo.from_dict(json.loads(error)) if error else None
        return DeadLetter(
            # One that cannot be decoded is handed back as stored rather
            # than hidden (it is often why it died).
            item=_decode_or_raw(self._codec, data),
            deliveries=deliveries,
            died_at=died_at,
            reason=reason,
            error_type=None if info is None else info.type,
            error=None if info is None else info.message,
            traceback=None if info is None else info.traceback,
        )

    def purge_dead(self) -> list[DeadLetter[T]]:
        """Remove the dead letters and return them, oldest first."""
        self._check_open()
        name = self._name

        def purge(c: sqlite3.Connection) -> list[tuple[Any, ...]]:
            rows = c.execute(
                "DELETE FROM chute_dead WHERE queue = ? "
                "RETURNING id, data, deliveries, died_at, reason, last_error",
                (name,),
            ).fetchall()
            c.execute("UPDATE chute_queue SET dead = dead - ? WHERE name = ?", (len(rows), name))
            return [row[1:] for row in sorted(rows)]

        return [self._dead_letter(*row) for row in self._db.call(purge, touches=name)]

    def requeue_dead(self) -> int:
        """Put every dead letter back at the end of the queue; how many."""
        self._check_open()
        name = self._name

        def requeue(c: sqlite3.Connection) -> int:
            if _queue_row(c, name).state:
                raise QueueShutDown("cannot requeue into a queue that is shut down")
            rows = c.execute(
                "DELETE FROM chute_dead WHERE queue = ? RETURNING id, data", (name,)
            ).fetchall()
            rows.sort()
            c.executemany(
                "INSERT INTO chute_item (queue, data) VALUES (?, ?)", [(name, d) for _, d in rows]
            )
            n = len(rows)
            c.execute(
                "UPDATE chute_queue SET stored = stored + ?1, unfinished = unfinished + ?1, "
                "dead = dead - ?1 WHERE name = ?2",
                (n, name),
            )
            return n

        return self._db.call(requeue, touches=name)


#: The oldest claimable items: not leased (in id order on their own index,
#: however many are out on leases), leases that ran out and delays that did
#: (each on its own index), merged by id, in one statement.
_CLAIMABLE = (
    "SELECT * FROM (SELECT id, data, deliveries, token, 0 FROM chute_item "
    "WHERE queue = ?1 AND leased = 0 AND id > ?2 ORDER BY id LIMIT ?3) "
    "UNION ALL "
    "SELECT * FROM (SELECT id, data, deliveries, token, 1 FROM chute_item "
    "WHERE queue = ?1 AND leased = 1 AND visible_at <= ?4 AND id > ?2 ORDER BY id LIMIT ?3) "
    "UNION ALL "
    "SELECT * FROM (SELECT id, data, deliveries, token, 2 FROM chute_item "
    "WHERE queue = ?1 AND leased = 2 AND visible_at <= ?4 AND id > ?2 ORDER BY id LIMIT ?3) "
    "ORDER BY 1 LIMIT ?3"
)
#: Items out of the queue for now, ?1 the queue and ?2 the time: on a lease,
#: or given back with a delay (each counted on its own index).
_OUT = (
    "(SELECT count(*) FROM chute_item WHERE queue = ?1 AND leased = 1 AND visible_at > ?2) + "
    "(SELECT count(*) FROM chute_item WHERE queue = ?1 AND leased = 2 AND visible_at > ?2)"
)
#: A queue's state, bound, and items stored and not out: what a put looks at.
_ROOM = f"SELECT state, maxsize, stored - ({_OUT}) FROM chute_queue WHERE name = ?1"
#: When the next lease or delay runs out (each on its own index).
_NEXT_DUE = (
    "SELECT min(visible_at) FROM chute_item WHERE queue = ?1 AND leased = 1 "
    "UNION ALL SELECT min(visible_at) FROM chute_item WHERE queue = ?1 AND leased = 2"
)
_CHUNK = 500  # ids per statement: far below any SQLite's limit on variables


def _marks(chunk: list[int]) -> str:
    return ",".join("?" * len(chunk))


class _Stored(NamedTuple):
    """A queue's row of ``chute_queue``: its bounds, state and counters."""

    maxsize: int
    state: int
    max_deliveries: int | None
    stored: int
    unfinished: int
    total_put: int
    total_got: int
    peak: int
    dead: int


def _queue_row(c: sqlite3.Connection, name: str) -> _Stored:
    row = c.execute(
        "SELECT maxsize, state, max_deliveries, stored, unfinished, total_put, total_got, "
        "peak, dead FROM chute_queue WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        raise ChuteError(f"no queue named {name!r} in this file")
    return _Stored(*row)


def _bounds(maxsize: int | Unset, max_deliveries: object) -> dict[str, int | None]:
    """The bounds passed explicitly, checked: the columns to set."""
    bounds: dict[str, int | None] = {}
    if maxsize is not UNSET:
        bounds["maxsize"] = check_maxsize(maxsize)
    if max_deliveries is not UNSET:
        bounds["max_deliveries"] = check_max_deliveries(max_deliveries)
    return bounds


def _set_bounds(c: sqlite3.Connection, name: str, path: str, bounds: dict[str, int | None]) -> None:
    """Store ``bounds`` (columns named by ``_bounds``, never by a caller)
    for the queue; ``QueueNotFound`` if it does not exist."""
    if bounds:
        columns = ", ".join(f"{column} = ?" for column in bounds)
        found = c.execute(
            f"UPDATE chute_queue SET {columns} WHERE name = ?", (*bounds.values(), name)
        ).rowcount
    else:
        found = c.execute("SELECT 1 FROM chute_queue WHERE name = ?", (name,)).fetchone()
    if not found:
        names = [n for (n,) in c.execute("SELECT name FROM chute_queue ORDER BY name")]
        raise QueueNotFound(_no_queue(name, path, names))


def _no_queue(name: str, path: str, names: list[str]) -> str:
    there = f"queues here: {', '.join(names)}" if names else "no queues here"
    return f"no queue {name!r} in {path}; {there}"


def _left_to_join(c: sqlite3.Connection, name: str) -> int:
    row = _queue_row(c, name)
    # After an immediate shutdown nothing more will be taken: as with the
    # stdlib's, join() returns.
    return 0 if row.state == _IMMEDIATE else row.unfinished


def _count_settled(c: sqlite3.Connection, name: str) -> None:
    """An item leaves for good: one fewer stored, one fewer unfinished."""
    if not c.execute(
        "UPDATE chute_queue SET unfinished = unfinished - 1, stored = stored - 1 "
        "WHERE name = ? AND unfinished > 0",
        (name,),
    ).rowcount:
        raise ValueError(
            "task_done() was already called for every item: this job cannot be settled"
        )


def _decode_or_raw(codec: Codec, data: bytes) -> Any:
    try:
        return codec.decode(data)
    except Exception:
        return data


_DEAD_LETTERS = (
    "SELECT data, deliveries, died_at, reason, last_error FROM chute_dead WHERE queue = ?"
)


def _in_flight(c: sqlite3.Connection, name: str, now: float) -> int:
    return int(c.execute(f"SELECT {_OUT}", (name, now)).fetchone()[0])


def _ready(c: sqlite3.Connection, name: str, now: float) -> int:
    return _queue_row(c, name).stored - _in_flight(c, name, now)


def _to_dead(
    c: sqlite3.Connection,
    name: str,
    id_: int,
    now: float,
    reason: str,
    error: str | None = None,
    counted: bool = False,
) -> None:
    """Move a stored item to the dead letters, with why: ``error`` (JSON of
    an ``ErrorInfo``) if given, else the last one it failed with."""
    c.execute(
        "INSERT INTO chute_dead (queue, data, deliveries, died_at, reason, last_error) "
        "SELECT queue, data, deliveries, ?, ?, coalesce(?, last_error) FROM chute_item "
        "WHERE id = ?",
        (now, reason, error, id_),
    )
    c.execute("DELETE FROM chute_item WHERE id = ?", (id_,))
    if counted:  # stored and unfinished already taken down by the caller
        c.execute("UPDATE chute_queue SET dead = dead + 1 WHERE name = ?", (name,))
    else:
        c.execute(
            "UPDATE chute_queue SET dead = dead + 1, stored = stored - 1, "
            "unfinished = max(unfinished - 1, 0) WHERE name = ?",
            (name,),
        )


async def _uninterrupted(aw: Any) -> None:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile
    (the caller is already on its way out with a cancellation)."""
    task = asyncio.ensure_future(aw)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)


def _settle_wakes(how: str, delay: float | None) -> Wakes:
    if how == "ack":
        return {PUT: 1, JOIN: ALL}
    if how == "nack" and not delay:
        return {GET: 1, JOIN: ALL}  # JOIN: a nack may turn into a dead letter
    return WAKE_ALL  # a delay: sleeping getters look again at when to wake


def _error_json(error: BaseException | None) -> str | None:
    return None if error is None else json.dumps(ErrorInfo.of(error).to_dict())


class SqliteJob(JobBase[T]):
    """A reserved item of a SQLite queue, leased until settled or timed out."""

    __slots__ = ("_id", "_queue", "_token")

    def __init__(self, queue: SqliteQueue[T], item: T, deliveries: int, id_: int, token: int):
        super().__init__(item, deliveries)
        self._queue = queue
        self._id = id_
        self._token = token

    def _settle(self, how: str, delay: float | None, error: BaseException | None = None) -> None:
        if self._settled:
            raise JobSettledError("this job was already settled")
        q = self._queue
        q._check_open()
        fn = q._settle_fn(self._id, self._token, how, delay, _error_json(error))
        self._outcome = q._db.call(fn, touches=q._name, wakes=_settle_wakes(how, delay))
        self._settled = True

    async def _settle_async(
        self, how: str, delay: float | None, error: BaseException | None = None
    ) -> None:
        if self._settled:
            raise JobSettledError("this job was already settled")
        q = self._queue
        q._check_open()
        fn = q._settle_fn(self._id, self._token, how, delay, _error_json(error))
        # Shielded: a settle that was sent is seen through, cancelled or not.
        self._outcome = await asyncio.shield(
            q._db.run(fn, touches=q._name, wakes=_settle_wakes(how, delay))
        )
        self._settled = True

    def ack(self) -> None:
        """The item is done: deleted from the file (counts as ``task_done()``)."""
        self._settle("ack", None)

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        """Give the item back (claimable again after ``delay`` seconds), or to
        the dead letters after ``max_deliveries``. ``error``, what it failed
        with, is kept with the item (and shown with its dead letter)."""
        if delay is not None:
            delay = check_delay(delay)
        self._settle("nack", delay, error)

    async def extend(self, seconds: float | None = None) -> None:
        """Keep the lease ``seconds`` more from now (default: the queue's
        visibility timeout), for a handler that needs longer. Refused with
        ``ChuteError`` if the lease already ran out and the item went to
        another consumer."""
        if self._settled:
            raise JobSettledError("this job was already settled")
        q = self._queue
        q._check_open()
        more = q._visibility if seconds is None else check_delay(seconds)
        id_, token, name = self._id, self._token, q._name

        def extend(c: sqlite3.Connection) -> None:
            if not c.execute(
                "UPDATE chute_item SET visible_at = ? WHERE id = ? AND token = ? AND leased = 1",
                (time.time() + more, id_, token),
            ).rowcount:
                raise ChuteError(
                    f"queue {name!r}: this job's lease ran out and the item was delivered "
                    "again; its lease cannot be extended"
                )

        await q._db.run(extend)


class _TimedOut(Exception):
    pass


class SqliteSyncQueue(BlockingFace[T]):
    """The ``queue.Queue`` API on a SQLite queue, for plain threads and
    worker processes with no event loop. (No ``__slots__``: it takes
    attributes, and ``mock.patch.object``, as ``queue.Queue`` does.)"""


class SqliteReservation(SettlingReservation[T]):
    """``async with q.reserve() as job`` (or ``job = await q.reserve()``).
    Leaving it settles the job asynchronously (group-committed)."""

    __slots__ = ()
