"""Bells: how a process sleeps until another makes progress, and is woken.

A process waits on a *bell*: a named pipe of its own (one per event loop,
one per thread), registered in the bell table under the lock with what it
waits for (a ``WaitKind``). Whoever makes progress possible rings one
waiting bell per item (or per free slot), after releasing the lock; nobody
is rung when nobody waits, and a waiter that was rung but gives up passes
the ring on. Event loops watch their bell with ``add_reader``: no helper
thread, no polling. (A named pipe rather than an ``eventfd``: another
process can open a named pipe by its path, but not another process's
``eventfd``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import weakref
from typing import Any, TypeVar

from .._exceptions import ChuteError
from .._waiters import GET, JOIN, PUT, WaitKind
from .handle import ProcessHandle, alive
from .layout import (
    B_BATCH,
    B_BELL,
    B_EPOCH,
    B_PID,
    B_WAITING,
    BELL_CELLS,
    H_BATCH_PUTTERS,
    H_GET_WAITERS,
    H_JOIN_WAITERS,
    H_PUT_WAITERS,
    H_ROWS,
    MAX_BELLS,
)
from .ring import Ring

__all__ = ["NO_RINGS", "Bell", "Bells", "LoopBell", "file_numbers"]

T = TypeVar("T")

NO_RINGS: list[str] = []  # shared, never mutated: "no bell to ring"
file_numbers = itertools.count(1)  # unique in this process, for every handle on any queue


class Bell:
    """A named pipe this process reads; others write a byte to ring it."""

    __slots__ = ("fd", "number", "path", "row")

    def __init__(self, queue: ProcessHandle[Any]) -> None:
        self.number = next(file_numbers)
        self.path = f"{queue._base}.{os.getpid()}.{self.number}.bell"
        os.mkfifo(self.path, 0o600)
        # O_RDWR: the pipe always has a reader (us) and a writer, so opening
        # it for writing elsewhere never blocks and reads never see EOF.
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self.row = -1

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class ThreadBell:
    """Holds a thread's bell in its thread-local, so that the bell can be
    retired when the thread ends (a finaliser on this object)."""

    __slots__ = ("__weakref__", "bell")

    def __init__(self, bell: Bell) -> None:
        self.bell = bell


def retire(queue_ref: weakref.ref[ProcessHandle[Any]], bell: Bell) -> None:
    queue = queue_ref()
    if queue is not None and not queue._closed:
        queue._retired.append(bell)  # freed at the queue's next unlock


class LoopBell:
    """The bell of one event loop: wakes every task of that loop waiting here."""

    __slots__ = ("bell", "loop_ref", "reading", "waiters")

    def __init__(self, queue: ProcessHandle[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.bell = Bell(queue)
        # Weakly: the loop is the key of the queue's weak table of loop bells,
        # and a strong reference from here would keep it alive for ever.
        self.loop_ref = weakref.ref(loop)
        self.waiters: list[asyncio.Future[None]] = []
        self.reading = False

    def add(self, fut: asyncio.Future[None]) -> None:
        # The reader stays registered between waits (two epoll_ctl calls per
        # wait are measurable); a ring that finds nobody waiting removes it.
        loop = self.loop_ref()
        if not self.reading and loop is not None:
            loop.add_reader(self.bell.fd, self._rung)
            self.reading = True
        self.waiters.append(fut)

    def discard(self, fut: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self.waiters.remove(fut)

    def _rung(self) -> None:
        self.bell.drain()
        loop = self.loop_ref()
        if not self.waiters and loop is not None:
            loop.remove_reader(self.bell.fd)
            self.reading = False
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)


class Bells(Ring[T]):
    """The bell table (lock held unless said otherwise) and this process's bells."""

    def _own_rows(self) -> list[int]:
        return [b.row for b in self._resources.files if isinstance(b, Bell) and b.row >= 0]

    def _register(self, bell: Bell, kind: WaitKind, need: int = 1) -> int:
        """Count one local waiter of ``kind`` on ``bell``; returns the row's epoch.

        A ringer *consumes* the registrations it rings (zeroes the count and
        bumps the epoch), so later changes ring nobody until someone
        registers again: one ring per wait, not one per put.
        """
        t = self._table
        if bell.row < 0 or t[bell.row * BELL_CELLS + B_PID] != self._pid:
            bell.row = self._claim_row(bell)
        base = bell.row * BELL_CELLS
        t[base + B_WAITING + kind] += 1
        self._h[H_GET_WAITERS + kind] += 1
        if kind is PUT and need > 1:
            t[base + B_BATCH] += 1
            self._h[H_BATCH_PUTTERS] += 1
        return t[base + B_EPOCH + kind]

    def _unregister(self, bell: Bell, kind: WaitKind, epoch: int, need: int = 1) -> bool:
        """Take back a registration that no ring consumed (woken otherwise,
        timed out, cancelled). True if a ring did consume it."""
        t = self._table
        base = bell.row * BELL_CELLS
        if t[base + B_PID] != self._pid or t[base + B_EPOCH + kind] != epoch:
            return True
        if t[base + B_WAITING + kind]:
            t[base + B_WAITING + kind] -= 1
            self._h[H_GET_WAITERS + kind] -= 1
        if kind is PUT and need > 1 and t[base + B_BATCH]:
            t[base + B_BATCH] -= 1
            self._h[H_BATCH_PUTTERS] -= 1
        return False

    def _pass_on(self, kind: WaitKind) -> None:
        """Lock held: a waiter that was rung gives up; ring another in its place."""
        self._pending_rings.extend(self._to_ring(kind, 1))

    def _claim_row(self, bell: Bell) -> int:
        t = self._table
        for attempt in range(2):
            for row in range(MAX_BELLS):
                base = row * BELL_CELLS
                if t[base + B_PID] == 0:
                    for cell in range(BELL_CELLS):
                        t[base + cell] = 0
                    t[base + B_BELL] = bell.number
                    t[base + B_PID] = self._pid
                    if row >= self._h[H_ROWS]:
                        self._h[H_ROWS] = row + 1  # rings scan only the rows ever used
                    return row
            if attempt == 0:
                self._sweep_dead_bells()
        raise ChuteError(f"more than {MAX_BELLS} event loops and threads wait on this queue")

    def _to_ring(self, kind: WaitKind, limit: int = MAX_BELLS) -> list[str]:
        """Consume the registrations of ``kind`` on up to ``limit`` bells; the
        bells to ring (lock held).

        One item put rings one bell, not every waiting process: with several
        waiting, waking all of them for one item costs each a wake-up and a
        lost race. A waiter that was rung but gives up passes the ring on.
        """
        total = H_GET_WAITERS + kind
        if self._h[total] <= 0:
            return []
        if kind is PUT and self._h[H_BATCH_PUTTERS] > 0:
            # Room for one may not be room for a batch: ring every putter,
            # or a single putter behind a batch that cannot fit would sleep.
            limit = MAX_BELLS
        t = self._table
        out: list[str] = []
        rows = self._h[H_ROWS]
        start = self._ring_start = (self._ring_start + 1) % rows  # no favourite
        for i in range(rows):
            base = ((start + i) % rows) * BELL_CELLS
            n = t[base + B_WAITING + kind]
            if n > 0:
                t[base + B_WAITING + kind] = 0
                t[base + B_EPOCH + kind] += 1
                self._h[total] -= n
                if kind is PUT and t[base + B_BATCH]:
                    self._h[H_BATCH_PUTTERS] -= t[base + B_BATCH]
                    t[base + B_BATCH] = 0
                pid = t[base + B_PID]
                if pid:
                    out.append(f"{self._base}.{pid}.{t[base + B_BELL]}.bell")
                    if len(out) >= limit:
                        break
        return out

    def _ring_bells(self, paths: list[str]) -> None:
        if not paths:
            return
        with self._local:
            failed = sum(1 for path in paths if not self._ring_one(path))
        if failed and not self._closed:
            # A ring went to a process that died (or is a zombie) while it
            # waited: it must not be the only one rung. Clear the dead rows
            # and ring as many others of either kind (a spare ring is harmless).
            with self._locked():
                self._sweep_dead_bells()
                self._pending_rings.extend(self._to_ring(GET, failed) + self._to_ring(PUT, failed))

    def _ring_one(self, path: str) -> bool:
        """Ring one bell; False if nobody reads it (its process died)."""
        for _attempt in range(2):
            fd = self._ring_fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    return False
                self._ring_fds[path] = fd
            try:
                os.write(fd, b"\0")
                return True
            except BlockingIOError:
                return True  # full of unread rings: it is rung already
            except OSError:
                # A cached pipe whose reader is gone (a new process may have
                # the same path now): reopen once.
                os.close(fd)
                del self._ring_fds[path]
        return False

    def _loop_bell(self, loop: asyncio.AbstractEventLoop) -> LoopBell:
        lb = self._loop_bells.get(loop)
        if lb is None:
            with self._local:
                lb = self._loop_bells.get(loop)
                if lb is None:
                    lb = self._loop_bells[loop] = LoopBell(self, loop)
                    self._resources.files.append(lb.bell)
                    # When the loop is gone, its bell (pipe, row) goes too.
                    weakref.finalize(loop, retire, weakref.ref(self), lb.bell)
        return lb

    def _thread_bell(self) -> Bell:
        holder: ThreadBell | None = getattr(self._thread_bells, "holder", None)
        if holder is None:
            bell = Bell(self)
            holder = self._thread_bells.holder = ThreadBell(bell)
            with self._local:
                self._resources.files.append(bell)
            # The thread-local dies with its thread: retire the bell then.
            weakref.finalize(holder, retire, weakref.ref(self), bell)
        return holder.bell

    def _free_retired(self) -> None:
        """Lock held: give back the rows and pipes of bells whose loop or thread
        has ended (retired by a finaliser, which must not take the lock)."""
        while self._retired:
            bell = self._retired.pop()
            t = self._table
            if bell.row >= 0 and t[bell.row * BELL_CELLS + B_PID] == self._pid:
                base = bell.row * BELL_CELLS
                for kind in WaitKind:
                    self._h[H_GET_WAITERS + kind] -= t[base + B_WAITING + kind]
                self._h[H_BATCH_PUTTERS] -= t[base + B_BATCH]
                for cell in range(BELL_CELLS):
                    t[base + cell] = 0
            bell.close()
            with contextlib.suppress(ValueError):
                self._resources.files.remove(bell)

    def _sweep_dead_bells(self) -> None:
        """Lock held: free the rows of dead processes; recount who waits."""
        t = self._table
        get = put = join = batch = 0
        for row in range(MAX_BELLS):
            base = row * BELL_CELLS
            pid = t[base + B_PID]
            if pid and pid != self._pid and not alive(pid):
                for cell in range(BELL_CELLS):
                    t[base + cell] = 0
            elif pid:
                get += t[base + B_WAITING + GET]
                put += t[base + B_WAITING + PUT]
                join += t[base + B_WAITING + JOIN]
                batch += t[base + B_BATCH]
        h = self._h
        h[H_GET_WAITERS], h[H_PUT_WAITERS], h[H_JOIN_WAITERS] = get, put, join
        h[H_BATCH_PUTTERS] = batch
