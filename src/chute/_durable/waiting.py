"""Where this process's tasks and threads wait for a stored queue to change.

A :class:`Hub` holds one line per kind of wait (a get, a put, a join). A
backend rings it after each change it makes — as many waiters of each kind
as the change makes room for, oldest first — and rings everyone when it sees
a change made elsewhere. A waiter belongs to its own loop (a future) or its
own thread (an event), never to the queue: one queue serves any number of
loops and threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping

from .._waiters import WaitKind, _get_running_loop

__all__ = ["ALL", "EVERYONE", "Hub", "Wait", "WaitKind", "Waiter", "Wakes", "wake"]

#: "Every waiter of this kind".
ALL = 1 << 30


#: What a waiter waits for: the one enum of every transport.
Wait = WaitKind


#: Whom a change wakes: how many waiters of each kind.
Rings = Mapping[Wait, int]
EVERYONE: Rings = {Wait.GET: ALL, Wait.PUT: ALL, Wait.JOIN: ALL}


#: Tasks' wake-ups gathered for sending, by loop (``Hub.ring(into=)``).
Wakes = dict[asyncio.AbstractEventLoop, list["asyncio.Future[None]"]]


def wake(fut: asyncio.Future[None]) -> None:
    """Wake a task's wait (on its loop)."""
    if not fut.done():
        fut.set_result(None)


def _earlier(a: float | None, b: float | None) -> float | None:
    """The earlier of two moments, either unknown (None)."""
    return b if a is None else a if b is None else min(a, b)


class Waiter:
    """A task waiting on its loop (``future``), or a plain thread (``event``)."""

    __slots__ = (
        "due",
        "event",
        "future",
        "kind",
        "loop",
        "nudged",
        "rings",
        "timed",
        "woken",
    )

    def __init__(self, kind: Wait, loop: asyncio.AbstractEventLoop | None) -> None:
        self.kind = kind
        self.loop = loop
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()
        self.event = threading.Event() if loop is None else None
        self.woken = False  # rung since it last looked (under the hub's lock)
        self.rings = 0  # rings received since it last looked
        #: When (wall clock) its sleep ends for a lease or delay running out,
        #: if it does: seen by its own look, or handed to it (``Hub.remove``).
        self.due: float | None = None
        #: Rung to take over the timer of one that left (see ``Hub.remove``).
        self.timed = False
        self.nudged = False  # woken to sleep on until a ``due`` handed to it, not rung

    async def sleep(self, delay: float | None) -> None:
        """Until rung, or ``delay`` seconds (None: no limit). On its loop."""
        fut = self.future
        assert fut is not None
        assert self.loop is not None
        if delay is None:
            await fut
            return
        handle = self.loop.call_later(max(0.0, delay), wake, fut)
        try:
            await fut
        finally:
            handle.cancel()

    def block(self, delay: float | None) -> None:
        """Until rung, or ``delay`` seconds. In its thread."""
        assert self.event is not None
        self.event.wait(delay)


class Hub:
    """The lines of one queue in this process.

    ``on_waiting(+1 / -1)``, if given, hears of every waiter that gets in or
    out of line (SQLite's thread watches the file only while someone waits).
    """

    __slots__ = ("_lines", "_lock", "_on_waiting")

    def __init__(self, on_waiting: Callable[[int], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._lines: dict[Wait, dict[Waiter, None]] = {kind: {} for kind in Wait}
        self._on_waiting = on_waiting

    def add(self, kind: Wait, *, in_thread: bool) -> Waiter:
        """Get in line (the calling task's loop, or the calling thread)."""
        w = Waiter(kind, None if in_thread else asyncio.get_running_loop())
        with self._lock:
            self._lines[kind][w] = None
        if self._on_waiting is not None:
            self._on_waiting(1)
        return w

    def rearm(self, w: Waiter) -> bool:
        """A rung waiter looks again: it keeps its place in line. True if
        it was rung to take over a timer: it holds it now, and passes it on
        in turn when it leaves (what it finds may be one of several items
        that came due at once: the one after it must look too)."""
        with self._lock:
            timed, w.timed = w.timed, False
            w.woken = w.nudged = False
            # The rings that woke it are spent by this look, whatever it
            # finds (found nothing: another took the item it was rung for);
            # only those that come during or after it are spare on leaving.
            w.rings = 0
            self._new_sleep(w)
        return timed

    def hold(self, w: Waiter) -> bool:
        """After a sleep: True if only a timer was handed to it (``remove``)
        that has not run out yet, so it sleeps on until then (its ``due``)
        rather than look now; False if it was rung, or its sleep ended, or
        the timer ran out: it looks."""
        with self._lock:
            nudged, w.nudged = w.nudged, False
            if w.woken or not nudged or w.due is None or w.due <= time.time():
                return False
            self._new_sleep(w)
            return True

    @staticmethod
    def _new_sleep(w: Waiter) -> None:
        if w.event is not None:
            w.event.clear()
        else:
            assert w.loop is not None
            w.future = w.loop.create_future()

    def remove(self, w: Waiter, *, timer: bool = False) -> None:
        """Leave the line.

        A ring is meant for one item (or one free slot). One that came since
        this waiter last looked — it gave up, or the ring came while it was
        taking another item (or maybe this one: it cannot tell) — goes on to
        the next in line, and so does the timer of a waiter that was the one
        to wake when a lease or delay runs out. A spare ring costs one look;
        a lost one, a waiter asleep for ever.

        A timer alone, whose moment is known and not yet come, is handed to
        the next in line without a ring: it sleeps on until then, and looks
        only if rung meanwhile (ringing it made it look at once, for nothing:
        with leases out, every getter that took an item passed one on, and
        a third of a PostgreSQL consumer's claims found nothing).
        """
        handed: Waiter | None = None
        with self._lock:
            line = self._lines[w.kind]
            if line.pop(w, 0) is not None:
                return  # not in line
            due = w.due
            # Its timer goes on only if no one left in line wakes as soon
            # (with leases out, every getter's look sees one: passing it
            # on anyway made a woken getter look for nothing, per item).
            covered = due is not None and any(o.due is not None and o.due <= due for o in line)
            # A ring it took to hold a timer, and did not act on, goes on as one.
            timed = (timer and not covered) or w.timed
            spare = max(w.rings, 1 if timed else 0)
            if w.rings == 0 and timed and due is not None and due > time.time():
                spare = 0
                handed = next((o for o in line if not o.woken), None)
                if handed is not None:
                    handed.timed = handed.nudged = True
                    handed.due = _earlier(handed.due, due)
        if self._on_waiting is not None:
            self._on_waiting(-1)
        if spare and w.kind is not Wait.JOIN:
            self.ring({w.kind: spare}, timed=timed, due=due)
        elif handed is not None:
            self._wake([handed], None)

    def idle(self, kind: Wait) -> bool:
        """Someone waits in this line, not rung since it last looked: what
        it found then (nothing) still holds, as far as this process was told."""
        line = self._lines[kind]
        if not line:  # (one look: atomic) no one waits, the common case of a get
            return False
        with self._lock:
            return any(not w.woken for w in line)

    def waiting(self, kind: Wait) -> int:
        return len(self._lines[kind])

    def ring(
        self,
        rings: Rings = EVERYONE,
        *,
        into: Wakes | None = None,
        timed: bool = False,
        due: float | None = None,
    ) -> None:
        """Wake the oldest waiters of each kind, as many as ``rings`` says
        (from any thread). With ``into``, a task's wake-up is added to its
        loop's list there instead of being sent to its loop: the caller
        sends it, with whatever else that loop is owed, in one wake-up.
        ``timed``: the ring passes a timer on (see ``rearm``), that runs
        out at ``due`` if known."""
        lines = self._lines
        # Nobody in these lines (a Redis getter waits on the server, not
        # here): nothing to take the lock for, after every call. A waiter
        # getting in line meanwhile looks once more after it did, and finds
        # the change this rings for.
        if not any(lines[kind] for kind in rings):
            return
        todo: list[Waiter] = []
        with self._lock:
            for kind, n in rings.items():
                for w in self._lines[kind]:
                    if n <= 0:
                        break
                    if not w.woken:
                        w.woken = True
                        w.rings += 1
                        if timed:
                            w.timed = True
                            w.due = _earlier(w.due, due)
                        todo.append(w)
                        n -= 1
        self._wake(todo, into)

    @staticmethod
    def _wake(waiters: list[Waiter], into: Wakes | None) -> None:
        running = _get_running_loop()
        for w in waiters:
            if w.event is not None:
                w.event.set()
                continue
            assert w.loop is not None
            assert w.future is not None
            if into is not None:
                into.setdefault(w.loop, []).append(w.future)
                continue
            if w.loop is running:  # no wake-up of the loop from itself (a self-pipe write)
                wake(w.future)
                continue
            with contextlib.suppress(RuntimeError):  # its loop is closed
                w.loop.call_soon_threadsafe(wake, w.future)
