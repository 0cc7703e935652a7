"""A reserved item of a durable queue, and the ``reserve()`` forms.

A job holds its record's key and fencing token: settling or extending it
after its lease ran out (and the item went to another consumer) is refused
by the backend, never applied twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .._contract import (
    ErrorInfo,
    JobBase,
    ReservationBase,
    SyncReservationBase,
    check_delay,
)
from .._exceptions import JobSettledError
from .backend import Record, Settle

if TYPE_CHECKING:
    from .queue import DurableQueue

__all__ = ["DurableJob", "DurableReservation", "DurableSyncReservation"]

T = TypeVar("T")


class DurableJob(JobBase[T]):
    """An item on a lease until settled (or until the lease runs out)."""

    __slots__ = ("_queue", "_record")

    settles_at_once = False  # ack() and nack() are a round trip to the store

    def __init__(self, queue: DurableQueue[T], item: T, record: Record) -> None:
        super().__init__(item, record.deliveries)
        self._queue = queue
        self._record = record

    def _settle_call(self, how: Settle, delay: float | None, error: BaseException | None) -> Any:
        if self._settled:
            raise JobSettledError("this job was already settled")
        q = self._queue
        q._check_open()
        info = None if error is None else ErrorInfo.of(error)
        return q._backend.settle(self._record, how, delay=delay, error=info)

    def ack(self) -> None:
        """The item is done: deleted from the store (counts as ``task_done()``).
        One round trip, waited for: on an event loop, ``await job.aack()``."""
        call = self._settle_call(Settle.ACK, None, None)
        self._outcome = self._queue._backend.run_sync(call)
        self._settled = True

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        """Give the item back (claimable again after ``delay`` seconds), or to
        the dead letters after ``max_deliveries``. ``error``, what it failed
        with, is kept with the item (and shown with its dead letter)."""
        if delay is not None:
            delay = check_delay(delay)
        call = self._settle_call(Settle.NACK, delay, error)
        self._outcome = self._queue._backend.run_sync(call)
        self._settled = True

    async def aack(self) -> None:
        """``ack()`` without blocking the loop. Once sent, it is seen through
        even if the caller is cancelled meanwhile."""
        await self._asettle(Settle.ACK, None, None)

    async def anack(
        self, delay: float | None = None, *, error: BaseException | None = None
    ) -> None:
        """``nack()`` without blocking the loop (seen through, as ``aack``)."""
        if delay is not None:
            delay = check_delay(delay)
        await self._asettle(Settle.NACK, delay, error)

    async def _asettle(self, how: Settle, delay: float | None, error: BaseException | None) -> None:
        call = self._settle_call(how, delay, error)
        backend = self._queue._backend
        # A settle that was sent is seen through, cancelled or not: by the
        # backend in this task, or else in a task of its own, shielded.
        if backend.sees_calls_through:
            self._outcome = await backend.run(call)
        else:
            self._outcome = await asyncio.shield(backend.run(call))
        self._settled = True

    async def _settle_async(
        self, how: str, delay: float | None, error: BaseException | None = None
    ) -> None:
        """What ``Workers`` calls (``how``: "ack" or "nack")."""
        await self._asettle(Settle(how), delay, error)

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
        await q._backend.run(q._backend.extend(self._record, more))


class DurableReservation(ReservationBase[T]):
    """``async with q.reserve() as job`` (or ``job = await q.reserve()``).
    Leaving it settles the job without blocking the loop."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, DurableJob[T]]:
        return self._queue._reserve(self._timeout).__await__()  # type: ignore[no-any-return]

    async def __aenter__(self) -> DurableJob[T]:
        job: DurableJob[T] = await self._queue._reserve(self._timeout)
        self._job = job
        return job

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        job = self._job
        if isinstance(job, DurableJob) and not job.settled:
            if exc_type is None:
                await job.aack()
            else:
                await job.anack(error=exc)


class DurableSyncReservation(SyncReservationBase[T]):
    """``with q.sync.reserve() as job``: at-least-once, in a plain thread."""

    __slots__ = ()

    def __enter__(self) -> DurableJob[T]:
        from .steps import drive_blocking

        q = self._queue
        q._check_open()
        steps = q._reserve_steps(self._timeout, block=self._block, in_thread=True)
        job: DurableJob[T] = drive_blocking(q._backend, steps)
        self._job = job
        return job
