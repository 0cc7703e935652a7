"""A ProcessQueue's sizes, bounds and statistics: reads of the shared header.

Every process sees the same numbers: they live in the header, and a bound
changed by one (``maxsize``, ``configure``) holds for all at once.
"""

from __future__ import annotations

from typing import TypeVar

from .._contract import UNSET, QueueStatistics, Unset, check_max_deliveries
from .._waiters import PUT
from .layout import (
    H_MAX_DELIVERIES,
    H_MAXSIZE,
    H_STATE,
    H_UNFINISHED,
    OPEN,
    Header,
    check_shared_maxsize,
    stored,
)
from .waits import Waits

__all__ = ["Settings"]

T = TypeVar("T")


class Settings(Waits[T]):
    """Sizes, bounds, statistics: the header as users see it."""

    @property
    def maxsize(self) -> int:
        """The bound on stored items (0: unbounded), the same in every process.

        Assignable, as on ``queue.Queue``: a larger bound wakes the putters
        waiting in every process; a smaller one keeps the items stored. The
        ring's ``capacity`` in bytes bounds the queue too, whatever maxsize.
        """
        return self._h[H_MAXSIZE]

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.configure(maxsize=value)

    @property
    def unfinished_tasks(self) -> int:
        """Items put (by any process) and not yet marked done."""
        return self._h[H_UNFINISHED]

    def configure(
        self,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
    ) -> None:
        """Change the bounds for every process; an argument not passed is kept.

        ``max_deliveries=None`` removes the limit. Both values are checked
        before either changes.
        """
        if not isinstance(maxsize, Unset):
            maxsize = check_shared_maxsize(maxsize)
        if not isinstance(max_deliveries, Unset):
            max_deliveries = check_max_deliveries(max_deliveries)
        with self._locked():
            if not isinstance(max_deliveries, Unset):
                self._h[H_MAX_DELIVERIES] = max_deliveries or 0
            if not isinstance(maxsize, Unset):
                self._h[H_MAXSIZE] = maxsize
                # Every putter looks again: a larger bound lets them in, and a
                # batch larger than a smaller one raises instead of sleeping.
                self._pending_rings.extend(self._to_ring(PUT))

    @property
    def capacity(self) -> int:
        """The ring's size in bytes: the largest pickled item it can hold, less 8."""
        return self._capacity

    def qsize(self) -> int:
        """The number of items stored now, exact across processes."""
        return stored(self._h)

    def empty(self) -> bool:
        return stored(self._h) == 0

    def full(self) -> bool:
        return 0 < self._h[H_MAXSIZE] <= stored(self._h)

    @property
    def is_shutdown(self) -> bool:
        return self._h[H_STATE] != OPEN

    @property
    def closed(self) -> bool:
        """True once ``close()`` (or ``aclose()``) detached this handle."""
        return self._closed

    def statistics(self) -> QueueStatistics:
        with self._locked():
            h = Header.read(self._h)
        return QueueStatistics(
            size=h.size,
            maxsize=h.maxsize,
            getters_waiting=h.get_waiters,
            putters_waiting=h.put_waiters,
            in_flight=h.in_flight,
            total_put=h.total_put,
            total_got=h.total_got,
            peak_size=h.peak,
            dead_lettered=h.dead,
            unfinished_tasks=h.unfinished,
            shutdown=h.state != OPEN,
            delayed=h.delayed,
        )

    async def astatistics(self) -> QueueStatistics:
        """``statistics()`` for code on a loop: shared memory, no round trip."""
        return self.statistics()

    async def aqsize(self) -> int:
        """``qsize()`` for code on a loop: one read of shared memory."""
        return stored(self._h)

    def __repr__(self) -> str:
        if self._closed:
            return f"<chute.ProcessQueue {self._name!r} closed>"
        return (
            f"<chute.ProcessQueue {self._name!r} maxsize={self.maxsize} "
            f"qsize={self.qsize()}{' shut down' if self.is_shutdown else ''}>"
        )
