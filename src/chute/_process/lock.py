"""The cross-process lock, and taking it over from a process that died.

A POSIX named semaphore guards the header and the ring (held for cursor
updates and copies; pickling happens outside it; recovery after a death and
the first reservation's file creation happen under it too). A waiter spins
briefly before sleeping on it. The holder writes its pid into the header; a
waiter that cannot get the semaphore for a while checks that pid, and if the
holder is dead, takes the lock over (serialised by an ``flock`` that the
kernel drops if the taker dies too) and repairs what the dead holder may
have left half-updated.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from threading import get_ident
from typing import TypeVar

from .._exceptions import ChuteError
from .bells import Bells
from .handle import alive
from .layout import H_HOLDER

__all__ = ["Lock"]

T = TypeVar("T")

SPIN = 200  # non-blocking tries of the lock before sleeping on it
LOCK_PATIENCE = 0.2  # seconds between checks that the lock holder is alive
ORPHAN_LOCK = 1.0  # a lock held with no holder pid for this long: its taker died


class Lock(Bells[T]):
    """``with self._locked():``, or ``_lock()`` / ``_unlock()`` on the fast paths.

    Letting go rings the bells found while holding it (``_pending_rings``):
    a ring is a write to another process's pipe, not done under the lock.
    """

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock()
        try:
            yield
        finally:
            self._unlock()

    def _lock(self) -> None:
        if self._closed:
            raise ChuteError("this ProcessQueue was closed in this process")
        sem = self._sem
        if not sem.acquire(False):
            # Held for a few microseconds at a time: spinning briefly beats
            # sleeping in the kernel, whose wake-up costs about ten.
            for _ in range(SPIN):
                if sem.acquire(False):
                    break
            else:
                if not sem.acquire(True, LOCK_PATIENCE):
                    self._lock_slowly()
        self._holding = get_ident()  # before the pid: see _lock_slowly
        self._h[H_HOLDER] = self._pid

    def _unlock(self) -> None:
        # Take the pending rings while still holding the lock: another thread
        # may add to the list as soon as we let go.
        rings = self._pending_rings
        if rings:
            self._pending_rings = []
        if self._retired:
            self._free_retired()
        self._h[H_HOLDER] = 0
        self._holding = 0
        self._sem.release()
        if rings:
            self._ring_bells(rings)

    def _lock_slowly(self) -> None:
        while True:
            holder = self._h[H_HOLDER]
            if holder == self._pid and self._holding == get_ident():
                # This very thread holds it, so it is not in a locked section:
                # an exception (a signal handler's) escaped between taking
                # the lock and the code that lets go of it. Take it back.
                if self._take_over(holder):
                    return
            elif holder and alive(holder):
                self._orphan_since = 0.0
            elif holder == 0 and (
                not self._orphan_since or time.monotonic() - self._orphan_since < ORPHAN_LOCK
            ):
                # Held by nobody we know: a process that died between taking
                # the semaphore and writing its pid, or one about to write it.
                self._orphan_since = self._orphan_since or time.monotonic()
            elif self._take_over(holder):
                self._orphan_since = 0.0
                return
            if self._sem.acquire(True, LOCK_PATIENCE):
                self._orphan_since = 0.0
                return

    def _take_over(self, holder: int) -> bool:
        """The lock's holder is dead: become the holder, then repair."""
        # One taker at a time. A descriptor of its own: an flock belongs to the
        # open file description, which fork children share with us.
        fd = os.open(self._base, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._sem.acquire(False):
                return True  # released after all
            if self._h[H_HOLDER] != holder:
                return False  # someone else took over meanwhile
            self._h[H_HOLDER] = self._pid
            try:
                self._repair()
            except Exception:  # pragma: no cover - we hold the lock whatever happens
                pass
            return True
        finally:
            os.close(fd)  # drops the flock

    def _repair(self) -> None:
        """After taking the lock from a dead holder: make the header agree
        with the ring, clear the dead's bells, give back what the dead held."""
        self._recount()
        self._sweep_dead_bells()
        self._recover_dead_holders()
