"""The SQLite backend's connection to a file, and the thread that owns it.

Every process has one connection per file, owned by one thread, which
takes whatever calls are waiting and runs them in one transaction (group
commit), each in a savepoint of its own so that one call failing leaves
the others whole. An event loop commits its own short calls in a group of
its own, on the loop, when that cannot wait (``Database._run_gathered``);
the file's lock keeps the two apart. After a commit, as many waiters are
rung in each queue's hub as the calls made room for; for commits of other
processes the thread looks at ``PRAGMA data_version`` every few
milliseconds, and only while someone here is waiting, and then rings
everyone. A call whose caller is cancelled is never run, rolled back, or
undone (see ``Database.run``). The file's schema and opening are in
``sqlite_file``; a call and the mailbox that answers a loop in
``sqlite_calls``; checkpoints in ``sqlite_log``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from .._durable.steps import finish_quietly
from .._durable.waiting import ALL, EVERYONE, Hub, Rings, Wait, Wakes, wake
from .._exceptions import ChuteError
from .sqlite_calls import WITHDRAWN, Answer, DbCall, Mailbox, Withdrawn
from .sqlite_file import BUSY_MS, _connect, _translate
from .sqlite_log import LogCopier

R = TypeVar("R")

POLL_INTERVAL = 0.005  # seconds between looks for other processes' commits
MAX_GROUP = 512  # calls committed together at most
#: Calls of one loop committed together on that loop at most (the rest go
#: to the thread): bounds how long one pass of the loop spends in SQLite.
LOOP_GROUP = 32
#: Every this many commits, the thread copies the write-ahead log into the
#: file (a checkpoint, with its fsync: never on a loop; SQLite's own, after
#: a commit, is turned off), alongside the loops' commits (``sqlite_log``).
CHECKPOINT_LOOK = 64
SIGNAL_SLICE = 0.05  # seconds a blocking caller waits before it looks at signals


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
        #: Short calls may commit on their loop: never with an fsync per commit.
        self._on_loop = durability == "crash"
        #: Set in a child made by fork(): every call is refused there (the
        #: flag, not a look at the pid: getpid is a system call, and every
        #: call made one).
        self._forked = False
        #: The connection's busy timeout is 0, as a loop's group left it (set
        #: back by the thread before its own work, which may wait).
        self._impatient = False
        #: Bumped by every commit seen (ours, or another process's): a caller
        #: that found nothing at seq N and still sees N has missed nothing.
        self.seq = 0
        #: While a call runs: the seq its commit will bring, as far as it can
        #: vouch for it. A call that is not the last of its group (one
        #: transaction) cannot: a later one (a shutdown, say) may change what
        #: it found and ring before its caller gets in line, so it answers
        #: the seq before the commit, and its caller looks once more.
        self.seq_after = 0
        #: For each queue, a time before which none of its leases, delays or
        #: delayed puts runs out: a claim before it looks only at the ready
        #: items (one statement instead of five). A lower bound, kept by
        #: this process's calls as they set such times; a queue not here is
        #: unknown (a claim looks at everything, then notes the earliest).
        #: Forgotten whenever another process commits and whenever a call
        #: is rolled back. Only the database thread reads or writes it.
        self.due: dict[str, float] = {}
        self._version = 0  # PRAGMA data_version as last seen
        self._others_committed = False
        self._looked = 0.0  # time.monotonic() of the last look at data_version
        self._users = 0
        self._closed = False
        self._inbox: collections.deque[DbCall] = collections.deque()
        #: Held while the connection is in use: by the thread for a group
        #: (or a look, or a checkpoint), by a loop for a group of its own.
        self._file_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None  # the thread's, while open
        self._log = LogCopier(path, durability)  # the thread's checkpoints
        #: In each thread, its loop and the calls it gathered in its current
        #: pass (see ``run``).
        self._gathered = threading.local()
        self._commits = 0  # since the thread's last checkpoint began
        self._checkpoint_due = False
        #: Each loop's mailbox (see ``_deliver``); a loop that is gone leaves with it.
        self._mailboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox]
        self._mailboxes = weakref.WeakKeyDictionary()
        self._cond = threading.Condition(threading.Lock())
        self._hubs: dict[str, Hub] = {}
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
        wakes: Rings | None = None,
    ) -> concurrent.futures.Future[R]:
        if self._forked:
            raise ChuteError(
                "a SQLite queue cannot be used across fork(): open it again in the child"
            )
        call = DbCall(fn, touches, wakes, write)
        self._enqueue(call)
        return call.future  # type: ignore[no-any-return]

    def _enqueue(self, call: DbCall) -> None:
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
        wakes: Rings | None = None,
        on_cancel: Callable[[R], Any] | None = None,
    ) -> R:
        """Run ``fn`` on the database thread and wait for it (sync callers).

        If the wait is interrupted (Ctrl-C's ``KeyboardInterrupt`` in the
        main thread) before the thread took the call, it never runs; after,
        the interruption waits for the call's end and ``on_cancel(result)``
        undoes it, as for a cancelled async call."""
        if threading.current_thread() is self._thread:  # pragma: no cover - a bug of ours
            raise RuntimeError("a database call from the database thread")
        if self._forked:
            raise ChuteError(
                "a SQLite queue cannot be used across fork(): open it again in the child"
            )
        call = DbCall(fn, touches, wakes, write)
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
        wakes: Rings | None = None,
        on_cancel: Callable[[R], Any] | None = None,
        short: bool = False,
    ) -> R:
        """Run ``fn`` for an async caller: on the database thread, or, if
        ``short`` (a few statements over a few rows), in a group of the
        calls its loop makes in this pass, committed on the loop (see
        ``_run_gathered``).

        If the caller is cancelled before the call was taken, it never
        runs. If after, the cancellation waits until the call is over and
        then awaits ``on_cancel(result)`` (to undo what it did), so that the
        caller's next call cannot overtake the undoing.
        """
        if self._forked:
            raise ChuteError(
                "a SQLite queue cannot be used across fork(): open it again in the child"
            )
        loop = asyncio.get_running_loop()
        call = DbCall(fn, touches, wakes, write, loop)
        if short and self._on_loop:
            here = self._gathered
            if getattr(here, "loop", None) is not loop or not here.calls:
                here.loop, here.calls = loop, []
                loop.call_soon(self._run_gathered, loop)
            here.calls.append(call)
        else:
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
                await finish_quietly(call.finished)
            assert call.outcome is not None
            value, exc = call.outcome
            if exc is None and on_cancel is not None:  # it ran, and stands: undo it
                await finish_quietly(asyncio.ensure_future(on_cancel(value)))
            raise

    def _run_gathered(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the calls ``loop`` gathered, on the loop, if that cannot
        wait: if the file is free here (the thread is idle, with nothing in
        line) and in every other process (SQLite's write lock, taken
        without waiting). Else they go to the thread, as other calls do.

        Why on the loop: a profile of one producer and four consumers with
        every call on the thread showed each group wait 80 us for the
        thread to wake and take the GIL, and run 120 us instead of 50,
        trading the GIL with the loop at each statement; the same calls
        committed on the loop took 125 us an item instead of 250. What a
        loop's group does is bounded: ``LOOP_GROUP`` short calls, no
        waiting for a lock, no fsync (durability "crash") and no checkpoint
        (the thread makes those)."""
        gathered, self._gathered.calls = self._gathered.calls, []
        live = [c for c in gathered if not (c.abandoned or c.future.cancelled())]
        calls, rest = live[:LOOP_GROUP], live[LOOP_GROUP:]
        others = False
        # Not if the thread's copy of the log is two CHECKPOINT_LOOKs behind
        # (not begun, or not over): the loops wait for it. On a slow or busy
        # disk the log grew ahead of its copy, 6.5 MiB for 256 KiB (seen
        # under load), where holding back keeps it within a few commits.
        behind = self._commits >= 2 * CHECKPOINT_LOOK
        if calls and not self._inbox and not behind and self._file_lock.acquire(blocking=False):
            try:
                if self._commit_here(loop, calls):
                    calls = []
                    others = self._take_others_committed()
            finally:
                self._file_lock.release()
        for call in calls + rest:  # the thread takes them, in their order
            self._enqueue_or_fail(call)
        if others:
            self._ring(None)
        if self._checkpoint_due:
            with self._cond:
                self._cond.notify()

    def _commit_here(self, loop: asyncio.AbstractEventLoop, calls: list[DbCall]) -> bool:
        """With the file held: ``calls`` in one transaction on this loop, or
        False (nothing begun) if another process holds the write lock."""
        conn = self._conn
        if conn is None:
            return False
        try:
            if not self._impatient:
                # The lock is taken without waiting: left so until the
                # thread's next work (one statement a group, not two).
                conn.execute("PRAGMA busy_timeout = 0")
                self._impatient = True
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:
                return False  # another process holds it (or the thread says why)
            for call in calls:  # their callers' cancellations look on this thread
                call.taken = True
            self._run_group(conn, calls, began=True, here=loop)
        except BaseException:
            # Ctrl-C landing here (this may be the main thread): no
            # transaction is left open, and no caller unanswered.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self.due.clear()
            interrupted = ChuteError("interrupted before the call was answered")
            for call in calls:
                if call.outcome is None:
                    call.settle(None, interrupted)
            raise
        return True

    def _enqueue_or_fail(self, call: DbCall) -> None:
        try:
            self._enqueue(call)
        except ChuteError as exc:  # closed meanwhile
            call.settle(None, exc)

    # -- waiting -------------------------------------------------------------------------

    def hub(self, queue: str) -> Hub:
        """The line of this process's waiters for ``queue`` (one per name,
        shared by every queue object of that name here)."""
        with self._cond:
            hub = self._hubs.get(queue)
            if hub is None:
                hub = self._hubs[queue] = Hub(self._count_waiters)
            return hub

    def _count_waiters(self, delta: int) -> None:
        with self._cond:
            self._waiting += delta
            if delta > 0 and self._waiting == 1:
                self._cond.notify()  # the thread starts polling for other processes

    def _ring(self, plan: dict[str, dict[Wait, int]] | None, into: Wakes | None = None) -> None:
        """Ring waiters: ``plan`` maps a queue to how many of each kind;
        None rings everyone (another process changed the file). With
        ``into``, tasks' wake-ups are gathered there (see ``Hub.ring``)."""
        if plan is None:
            with self._cond:
                hubs = list(self._hubs.values())
            for hub in hubs:
                hub.ring(EVERYONE, into=into)
            return
        for queue, rings in plan.items():
            found = self._hubs.get(queue)  # (one look: atomic, unlike a walk over them)
            if found is not None:
                found.ring(rings, into=into)

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
        self._conn = conn
        opened.set_result(None)
        self._version = _data_version(conn)
        try:
            while True:
                with self._cond:
                    while not self._inbox and not self._stopping and not self._checkpoint_due:
                        if self._waiting:
                            if not self._cond.wait(POLL_INTERVAL):
                                break  # time to look at the file
                        else:
                            self._cond.wait()
                    calls: list[DbCall] = []
                    while self._inbox and len(calls) < MAX_GROUP:
                        call = self._inbox.popleft()
                        if not call.abandoned:
                            call.taken = True
                            calls.append(call)
                    if not calls and self._stopping and not self._inbox:
                        break
                # Else a loop's group looked for us just now. (Not before a
                # checkpoint: a loop's group that found the file held then
                # would wait for the thread until the checkpoint was over.)
                if calls or self._look_due():
                    try:
                        with self._file_lock:
                            if self._impatient:
                                conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
                                self._impatient = False
                            if calls:
                                self._run_group(conn, calls)
                            else:  # a look for other processes' commits, for our waiters
                                self._look_at_version(conn)
                            others = self._take_others_committed()
                    except Exception as exc:  # never let the thread die with callers waiting
                        self.due.clear()
                        error = _translate(exc, self.path)
                        self._deliver([(c, None, error) for c in calls if c.outcome is None])
                        continue
                    if others:
                        self._ring(None)
                if self._checkpoint_due:
                    self._checkpoint_due = False
                    self._commits = 0
                    # Failed (a disk error, say), the log stays as it was,
                    # every commit in it: the next look tries again.
                    with contextlib.suppress(Exception):
                        self._log.copy_back(conn, self._file_lock)
        finally:
            with self._file_lock:
                self._conn = None
                conn.close()
                self._log.close()
            with self._cond:
                self._closed = True
                leftover = list(self._inbox)
                self._inbox.clear()
            closed = ChuteError("the queue file was closed")
            self._deliver([(call, None, closed) for call in leftover if not call.abandoned])
            self._ring(None)  # whoever still waits looks again, and finds it closed

    def may_come_due(self, queue: str, at: float) -> None:
        """A call of ours set a lease, a delay or a delayed put of ``queue``
        to run out at ``at`` (on the database thread)."""
        known = self.due.get(queue)
        if known is not None and at < known:
            self.due[queue] = at

    def _look_due(self) -> bool:
        """Time for the thread's look for other processes' commits: no
        group (a loop's, which takes the file from the thread) looked
        within the interval."""
        return time.monotonic() - self._looked >= POLL_INTERVAL

    def _take_others_committed(self) -> bool:
        """Did a look see another process's commit since this was last
        asked (with the file held)? Then everyone is to be rung."""
        others, self._others_committed = self._others_committed, False
        return others

    def _look_at_version(self, conn: sqlite3.Connection) -> None:
        """Has another process committed since we last looked? Then count a
        commit seen, forget what we knew of when items come due, and ring
        everyone once the group (if any) is over."""
        self._looked = time.monotonic()
        version = _data_version(conn)
        if version != self._version:
            self._version = version
            self.seq += 1
            self.due.clear()
            self._others_committed = True

    def _deliver(
        self,
        answers: list[Answer],
        wakes: Wakes | None = None,
        here: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Answer the calls, and wake the tasks in ``wakes``: at once on the
        loop ``here`` (the one running this), one wake-up for each other
        loop (see ``Mailbox``)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
        for answer in answers:
            call = answer[0]
            if call.loop is None or call.loop is here:
                call.settle(answer[1], answer[2])
            else:
                by_loop.setdefault(call.loop, []).append(answer)
        if here is not None and wakes:
            for future in wakes.pop(here, ()):
                wake(future)
        if not by_loop and not wakes:
            return  # (the common case of a loop's own group)
        for loop in by_loop.keys() | (wakes or {}).keys():
            with self._cond:  # a loop's group and the thread may both deliver
                box = self._mailboxes.get(loop)
                if box is None:
                    box = self._mailboxes[loop] = Mailbox()
            box.post(loop, by_loop.get(loop, []), (wakes or {}).get(loop, []))

    def _run_plain(self, conn: sqlite3.Connection, calls: list[DbCall]) -> list[Answer]:
        """Every call's answer, or [] if one failed (the transaction is
        still open, with what the calls before it did)."""
        results: list[Answer] = []
        last = calls[-1]
        for c in calls:
            self.seq_after = self.seq + 1 if c is last else self.seq
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

    def _run_group(
        self,
        conn: sqlite3.Connection,
        calls: list[DbCall],
        *,
        began: bool = False,
        here: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Run ``calls`` in one transaction and answer them; ``began``: the
        caller began it, holding the write lock; ``here``: the loop running
        it (its answers are settled at once)."""
        writes = began or any(c.write for c in calls)
        alone = len(calls) == 1  # no savepoint needed: the transaction is the call
        results: list[Answer] = []
        failed = False  # a call failed (or was withdrawn): its answer is an error
        try:
            if not began:
                conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
            # Holding the write lock, we see every commit made before ours:
            # the calls below must not trust what another process changed.
            # (A read-only group looks after its transaction instead.)
            if writes:
                self._look_at_version(conn)
            if not alone:
                # Calls almost never fail: run them all without a savepoint
                # each (two statements fewer per call), and only if one
                # fails, roll back to the start (keeping the write lock) and
                # run them again, each in a savepoint.
                conn.execute("SAVEPOINT calls")
                results = self._run_plain(conn, calls)
                if not results:
                    conn.execute("ROLLBACK TO calls")
                    self.due.clear()  # what the calls noted may be undone
            for c in calls if not results else ():
                self.seq_after = self.seq + 1 if c is calls[-1] else self.seq
                if not alone:
                    conn.execute("SAVEPOINT call")
                try:
                    value = c.fn(conn)
                    if c.loop is not None and c.future.cancelled():
                        # Its caller was cancelled while it ran: undo it here,
                        # before anyone can see it (and before a close).
                        raise Withdrawn
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
                    # What it noted of when items come due may be undone.
                    self.due.clear()
                    results.append((c, None, exc))
                    failed = True
                else:
                    if not alone:
                        conn.execute("RELEASE call")
                    results.append((c, value, None))
            conn.execute("COMMIT")
            self.seq += 1
            if not writes:
                self._look_at_version(conn)
            else:
                self._commits += 1
                if self._commits >= CHECKPOINT_LOOK:
                    self._checkpoint_due = True
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self.due.clear()
            error = _translate(exc, self.path)
            self._deliver([(c, None, error) for c in calls], here=here)
            return
        if failed:
            results = [
                (
                    c,
                    v,
                    None
                    if e is None
                    else _translate(WITHDRAWN if isinstance(e, Withdrawn) else e, self.path),
                )
                for c, v, e in results
            ]
        plan: dict[str, dict[Wait, int]] = {}
        for c, _, err in results:
            if c.touches is not None and err is None:
                rings = plan.setdefault(c.touches, {})
                for kind, n in c.wakes.items():
                    rings[kind] = min(ALL, rings.get(kind, 0) + n)
        wakes: Wakes = {}
        if plan:
            # Rung before the answers go: a thread waiting here wakes as
            # before, a task's wake-up goes with its loop's answers.
            self._ring(plan, into=wakes)
        self._deliver(results, wakes, here)


_all: weakref.WeakSet[Database] = weakref.WeakSet()


def _data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the file (never for
    our own commits)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


@atexit.register
def _close_all() -> None:
    for db in list(_all):
        db.close()


def _forked_all() -> None:
    for db in list(_all):
        db._forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked_all)
