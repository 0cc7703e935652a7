"""A job handed out by a memory queue's ``reserve()``, and the reservations
that hand it out (``async with q.reserve()``, ``with q.sync.reserve()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from .._contract import (
    ErrorInfo,
    JobBase,
    ReservationBase,
    SyncReservationBase,
    check_delay,
)
from .stores import Returned

if TYPE_CHECKING:
    from .state import QueueState
    from .waits import QueueWaits

__all__ = ["MemoryJob", "Reservation", "SyncReservation"]

T = TypeVar("T")


class MemoryJob(JobBase[T]):
    """An item handed out by ``reserve()``; settle it with ack() or nack()."""

    __slots__ = ("_error", "_key", "_priority", "_queue")

    def __init__(
        self,
        queue: QueueState[T],
        item: T,
        deliveries: int,
        error: ErrorInfo | None = None,
        key: str | None = None,
        priority: int = 0,
    ) -> None:
        super().__init__(item, deliveries)
        self._queue = queue
        self._error = error  # the error of the item's last failed delivery
        self._key = key  # held until the job is acknowledged or dead
        self._priority = priority  # kept when it is given back

    def _returned(self, error: ErrorInfo | None) -> Returned:
        """The item as it goes back into the queue, all it carries kept."""
        return Returned(self.item, self.deliveries, error, self._key, self._priority)

    def ack(self) -> None:
        """The item is done: it counts as ``task_done()`` for ``join()``."""
        self._queue._settle(self, ok=True)

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        """Give the item back (after ``delay`` seconds), or dead-letter it.

        It goes to the front of the queue unless it has been delivered
        ``max_deliveries`` times, in which case it joins the dead letters.
        ``error`` (the exception it failed with) is kept with the item and
        shown by ``dead_letters()`` if it dies.
        """
        if delay is not None:
            delay = check_delay(delay)
        self._queue._settle(self, ok=False, delay=delay, error=error)


class Reservation(ReservationBase[T]):
    """``async with queue.reserve() as job`` (or ``job = await queue.reserve()``)."""

    __slots__ = ()
    _queue: QueueWaits[T]

    def __await__(self) -> Any:
        return self._queue._get_wait(self._timeout, reserve=True).__await__()

    async def __aenter__(self) -> MemoryJob[T]:
        job: MemoryJob[T] = await self._queue._get_wait(self._timeout, reserve=True)
        self._job = job
        return job


class SyncReservation(SyncReservationBase[T]):
    """``with queue.sync.reserve() as job`` for plain threads."""

    __slots__ = ()
    _queue: QueueWaits[T]

    def __enter__(self) -> MemoryJob[T]:
        job: MemoryJob[T] = self._queue._get_blocking(
            self._timeout, block=self._block, reserve=True
        )
        self._job = job
        return job
