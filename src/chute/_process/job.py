"""A job reserved from a ProcessQueue, and the reservations that take one.

The job holds its item's pickle and where it is kept (this process's
arena) until it is settled; ``nack(delay)`` keeps it held until then, so
that if this process dies meanwhile, another gives it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from .._contract import (
    ErrorInfo,
    JobBase,
    ReservationBase,
    SyncReservationBase,
    check_delay,
    check_timeout,
)
from .._exceptions import ChuteError, JobSettledError, QueueEmpty
from .._waiters import GET
from .arena import DELAYED
from .envelope import unwrap
from .held import NoRoom
from .layout import CARRIES, DELIVERIES, H_DELAYED
from .waits import DeadlinePassed

if TYPE_CHECKING:
    from .queue import ProcessQueue

__all__ = ["ProcessJob", "ProcessReservation", "ProcessSyncReservation", "blocking_deadline"]

T = TypeVar("T")


class ProcessJob(JobBase[T]):
    """An item reserved from a ProcessQueue; settle it with ack() or nack()."""

    __slots__ = ("_data", "_error", "_offset", "_queue")

    def __init__(
        self,
        queue: ProcessQueue[T],
        offset: int,
        data: bytes,
        deliveries: int,
        error: ErrorInfo | None = None,
    ) -> None:
        super().__init__(pickle.loads(data), deliveries)
        self._queue = queue
        self._offset = offset
        self._data = data
        self._error = error  # the error of the item's last failed delivery

    def ack(self) -> None:
        """Done: the item leaves for good and counts as done for ``join()``."""
        self._settle(ok=True)

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        """Give the item back to the front of the queue (after ``delay`` seconds),
        or to the dead letters after ``max_deliveries`` tries. ``error`` (the
        exception it failed with) travels with the item and is shown by
        ``dead_letters()`` if it dies."""
        if delay is not None:
            delay = check_delay(delay)
        if self._settled:
            raise JobSettledError("this job was already acknowledged or given back")
        if error is not None:
            self._error = ErrorInfo.of(error)
        q = self._queue
        if delay and not q._goes_dead(self._deliveries):
            # Still held (in this process's file) until then: if the process
            # dies meanwhile, another gives it back.
            with q._locked():
                arena = q._arena
                if arena is None or not arena.is_held(self._offset):
                    raise JobSettledError("this job was already acknowledged or given back")
                arena.set_state(self._offset, DELAYED)
                q._h[H_DELAYED] += 1
            self._settled = True
            self._outcome = "retried"
            timer = threading.Timer(delay, self._settle_later)
            timer.daemon = True
            timer.start()
            return
        self._settle(ok=False)

    def _settle_later(self) -> None:
        self._settled = False
        with contextlib.suppress(ChuteError):  # the queue was closed: it gave it back
            self._settle(ok=False)

    def _settle(self, *, ok: bool) -> None:
        q = self._queue
        if self._settled:
            raise JobSettledError("this job was already acknowledged or given back")
        with q._locked():
            try:
                wake, outcome = q._settle_held(
                    self._offset, self._data, self._deliveries, ok=ok, error=self._error
                )
            except NoRoom:
                wake = None
        if wake is None:
            # The ring is full of bytes right now; it stays held and is given
            # back as soon as there is room.
            self._settled = True
            self._outcome = "retried"
            timer = threading.Timer(0.05, self._settle_later)
            timer.daemon = True
            timer.start()
            return
        self._settled = True
        self._outcome = outcome
        q._ring_bells(wake)


def make_job(q: ProcessQueue[T], offset: int, data: bytes, deliveries: int) -> ProcessJob[T]:
    try:
        if deliveries & CARRIES:
            raw, error = unwrap(data)
            return ProcessJob(q, offset, raw, deliveries & DELIVERIES, error)
        return ProcessJob(q, offset, data, deliveries)
    except Exception as exc:
        # As for get(): an item this process cannot unpickle goes to the dead
        # letters (given back, every consumer would meet it again for ever).
        with q._locked():
            wake, _outcome = q._settle_held(offset, data, deliveries, ok=False, undecodable=True)
        q._ring_bells(wake)
        raise ChuteError(
            f"an item could not be unpickled in this process ({exc!r}); "
            "it was moved to the dead letters"
        ) from exc


class ProcessSyncReservation(SyncReservationBase[T]):
    """``with q.sync.reserve() as job`` for plain worker code."""

    __slots__ = ()
    _queue: ProcessQueue[T]

    def __enter__(self) -> ProcessJob[T]:
        q = self._queue
        try:
            (offset, data, deliveries), wake = q._wait_blocking(
                GET,
                q._try_reserve,
                blocking_deadline(self._timeout, block=self._block),
                "a blocking reserve",
            )
        except DeadlinePassed:
            raise QueueEmpty("queue is empty") from None
        q._ring_bells(wake)
        job = make_job(q, offset, data, deliveries)
        self._job = job
        return job


class ProcessReservation(ReservationBase[T]):
    """``async with q.reserve() as job`` (or ``job = await q.reserve()``)."""

    __slots__ = ()
    _queue: ProcessQueue[T]

    async def _take(self) -> ProcessJob[T]:
        q = self._queue
        loop = asyncio.get_running_loop()
        deadline = None if self._timeout is None else loop.time() + self._timeout
        try:
            (offset, data, deliveries), wake = await q._wait(GET, q._try_reserve, deadline)
        except TimeoutError:
            raise TimeoutError(f"reserve timed out after {self._timeout} seconds") from None
        q._ring_bells(wake)
        return make_job(q, offset, data, deliveries)

    def __await__(self) -> Any:
        return self._take().__await__()

    async def __aenter__(self) -> ProcessJob[T]:
        job = await self._take()
        self._job = job
        return job


def blocking_deadline(timeout: float | None, *, block: bool) -> float | None:
    """When a blocking call gives up (``time.monotonic()``), None: never."""
    if timeout is not None:
        timeout = check_timeout(timeout)
    if not block:
        timeout = 0
    return None if timeout is None else time.monotonic() + timeout
