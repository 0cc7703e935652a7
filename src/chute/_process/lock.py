"""The cross-process locks, and taking one over from a process that died.

Two POSIX named semaphores. The *tail lock* guards the ring's tail side:
the free space past the tail, the tail, ``added`` and the put counters. The
*head lock* guards the rest. A single put (``_put_one``) takes only the tail
lock and a single get (``_get_one``) only the head lock, so that a producer
and a consumer on two CPUs do not wait for each other: with one lock, each
get waited for a put and each put for a get (a profile of one producer and
one consumer found the lock taken 99% of the times either side came for
it). Everything else takes both, head first (``_lock``). A put reads the
head side without its lock, and a get the tail side: a put sees at most
too little room, a get too few items, never a record half written, because
a record's bytes are stored before the tail and ``added`` that publish it
and x86 keeps stores, and loads, in order (``SPLIT_LOCKS``; on other CPUs a
put takes both locks).

A waiter spins briefly before sleeping on a lock. The holder writes its pid
into the header; a waiter that cannot get a lock for a while checks that
pid, and if the holder is dead, takes the lock over (the head lock
serialised by an ``flock`` that the kernel drops if the taker dies too; the
tail lock only ever by the head lock's holder) and, once it holds both,
repairs what the dead holder may have left half-updated.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import sys
import time
from collections.abc import Iterator
from threading import get_ident
from typing import Any, TypeVar

from .._exceptions import ChuteError
from .bells import Bells
from .handle import alive
from .layout import H_HOLDER, H_REPAIR_DUE, H_TAIL_HOLDER

__all__ = ["Lock"]

T = TypeVar("T")

SPIN = 200  # non-blocking tries of the lock before sleeping on it
LOCK_PATIENCE = 0.2  # seconds between checks that the lock holder is alive
ORPHAN_LOCK = 1.0  # a lock held with no holder pid for this long: its taker died
# Where a put may take the tail lock alone: CPUs that keep stores in order
# (and loads), so that a get that sees ``added`` grow sees the record too.
# 64-bit only: a 32-bit build stores a cell in two halves.
SPLIT_LOCKS = platform.machine().lower() in {"x86_64", "amd64"} and sys.maxsize > 2**32


def acquire_soon(sem: Any) -> bool:
    """Take ``sem``, spinning briefly, then sleeping on it for a while: False
    if it is still held then (its holder may be dead: see _lock_slowly).

    Held for a few microseconds at a time: spinning briefly beats sleeping
    in the kernel, whose wake-up costs about ten.
    """
    for _ in range(SPIN):
        if sem.acquire(False):
            return True
    return bool(sem.acquire(True, LOCK_PATIENCE))


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
        """Both locks, the head's first: what every path but _put_one and
        _get_one takes."""
        if self._closed:
            raise ChuteError("this ProcessQueue was closed in this process")
        self._lock_head()
        try:
            self._lock_tail()
        except BaseException:
            self._h[H_HOLDER] = 0
            self._holding = 0
            self._sem.release()
            raise
        if self._h[H_REPAIR_DUE]:
            try:
                self._repair()
            except BaseException:
                self._unlock()
                raise

    def _lock_head(self) -> None:
        sem = self._sem
        if not (sem.acquire(False) or acquire_soon(sem)):
            self._lock_slowly()
        self._holding = get_ident()  # before the pid: see _lock_slowly
        self._h[H_HOLDER] = self._pid

    def _lock_tail(self) -> None:
        """The head lock held: take the tail lock too."""
        sem = self._tail_sem
        if not (sem.acquire(False) or acquire_soon(sem)):
            self._lock_tail_slowly()
        self._tail_holding = get_ident()
        self._h[H_TAIL_HOLDER] = self._pid

    def _unlock(self) -> None:
        # Take the pending rings while still holding the lock: another thread
        # may add to the list as soon as we let go.
        rings = self._pending_rings
        if rings:
            self._pending_rings = []
        if self._retired:
            self._free_retired()
        h = self._h
        h[H_TAIL_HOLDER] = 0
        self._tail_holding = 0
        self._tail_sem.release()
        h[H_HOLDER] = 0
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
            # In the header, not in this process: if we are stopped before
            # holding the tail lock too, the next taker repairs (and the
            # single puts and gets leave it to them meanwhile).
            self._h[H_REPAIR_DUE] = 1
            return True
        finally:
            os.close(fd)  # drops the flock

    def _lock_tail_slowly(self) -> None:
        """The head lock held, the tail lock not coming: is its holder dead?

        Only the head lock's holder waits this long for the tail lock (a put
        that cannot have it soon takes both, head first), so there is one
        taker at a time without an flock.
        """
        h, sem = self._h, self._tail_sem
        orphan_since = 0.0
        while True:
            holder = h[H_TAIL_HOLDER]
            if holder == self._pid and self._tail_holding == get_ident():
                break  # this very thread holds it: see _lock_slowly
            # A holder writes 0 before it lets go: the same pid again after
            # alive() said dead means it died holding the lock.
            if holder and not alive(holder) and h[H_TAIL_HOLDER] == holder:
                break
            if holder == 0:
                # Taken by a process that died before writing its pid, or one
                # about to write it.
                orphan_since = orphan_since or time.monotonic()
                if time.monotonic() - orphan_since >= ORPHAN_LOCK:
                    if sem.acquire(False):
                        return  # let go meanwhile after all
                    break
            else:
                orphan_since = 0.0
            if sem.acquire(True, LOCK_PATIENCE):
                return
        h[H_TAIL_HOLDER] = self._pid
        h[H_REPAIR_DUE] = 1

    def _repair(self) -> None:
        """After taking a lock from a dead holder, both held: make the header
        agree with the ring, clear the dead's bells, give back what the dead
        held."""
        try:
            self._recount()
            self._h[H_REPAIR_DUE] = 0
            self._sweep_dead_bells()
            self._recover_dead_holders()
        except Exception:  # pragma: no cover - we hold the locks whatever happens
            pass
