"""One thread per process that calls functions when their time comes.

A memory queue is shared by event loops and plain threads, so a delayed
item cannot wait on any one loop's timer (that loop may end first). One
thread with a heap of due times serves every queue of the process: a
``threading.Timer`` per delayed item would be a thread per item, and a
million delayed puts would be a million threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["call_later"]

log = logging.getLogger("chute")

_Entry = tuple[float, int, Callable[..., None], tuple[Any, ...]]


class Alarms:
    """A heap of (due, order, function, arguments) and the thread that runs it."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` on the alarm thread ``delay`` seconds from now."""
        entry = (time.monotonic() + delay, next(self._order), fn, args)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._start()
            elif self._heap[0] is entry:  # sooner than what the thread sleeps for
                self._cond.notify()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="chute-alarms", daemon=True)
        thread.start()  # if it cannot start, the next call tries again
        self._thread = thread

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cond:
                while True:
                    if not heap:
                        self._cond.wait()
                        continue
                    wait = heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, fn, args = heapq.heappop(heap)
                        break
                    self._cond.wait(min(wait, threading.TIMEOUT_MAX))
            try:
                fn(*args)
            except BaseException:  # one failing alarm must not stop the others
                log.exception("a chute alarm failed")
            # Not kept until the next alarm: they may be all that holds a queue.
            del fn, args

    def _after_fork(self) -> None:
        # The thread did not survive the fork; the entries did (the child's
        # copies of the queues still expect them): serve them in the child.
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        if self._heap:
            self._start()


_alarms = Alarms()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_alarms._after_fork)

call_later = _alarms.call_later
