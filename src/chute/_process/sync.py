"""``q.sync``: ``queue.Queue``'s API on a ProcessQueue, for plain (worker) code.

Its put and get try the queue's one-lock fast paths first, as the async
face does; waiting goes through the blocking loop of ``waits.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from .._contract import SyncFaceBase, check_max_items, check_timeout
from .._exceptions import QueueEmpty, QueueFull, QueueShutDown
from .._waiters import GET, JOIN, PUT
from .job import ProcessSyncReservation, blocking_deadline
from .layout import H_UNFINISHED
from .waits import SYNC_SPIN, DeadlinePassed

if TYPE_CHECKING:
    from .queue import ProcessQueue

__all__ = ["ProcessSyncQueue"]

T = TypeVar("T")


class ProcessSyncQueue(SyncFaceBase[T]):
    """``queue.Queue``'s API on a ProcessQueue, for plain (worker) code."""

    __slots__ = ("__dict__",)  # takes attributes and mocks, as queue.Queue does
    _q: ProcessQueue[T]

    @property
    def is_shutdown(self) -> bool:
        return self._q.is_shutdown

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        if block and timeout is not None:
            check_timeout(timeout)  # refused at the call, even when no wait is needed
        q = self._q
        done = q._put_one(item)
        if not isinstance(done, list) and block and timeout != 0 and q._worth_again(PUT, SYNC_SPIN):
            done = q._put_one(item)
        if not isinstance(done, list):  # not stored: the general path stores it
            self._put([done or q._record(item)], item, block=block, timeout=timeout)
        elif done:
            q._ring_bells(done)

    def put_nowait(self, item: T) -> None:
        self._q.put_nowait(item)

    def put_batch(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        batch = list(items)
        records = [self._q._encode(x) for x in batch]
        self._q._check_batch(records)
        self._put(records, batch, block=block, timeout=timeout)

    def _put(
        self, records: list[bytes], original: Any, *, block: bool, timeout: float | None
    ) -> None:
        q = self._q
        deadline = blocking_deadline(timeout, block=block)
        try:
            wake = q._wait_blocking(
                PUT, lambda: q._try_put(records), deadline, "a blocking put", len(records)
            )
        except DeadlinePassed:
            raise QueueFull(f"queue is full (maxsize={q.maxsize})") from None
        except QueueShutDown:
            if isinstance(original, list):
                raise QueueShutDown(items=original) from None
            raise QueueShutDown(item=original) from None
        q._ring_bells(wake)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if block and timeout is not None:
            check_timeout(timeout)
        q = self._q
        got = q._get_one()
        if got is None and block and timeout != 0 and q._worth_again(GET, SYNC_SPIN):
            got = q._get_one()
        if got is None:
            return self._get(1, block=block, timeout=timeout)[0]  # type: ignore[no-any-return]
        item, data, wake = got
        if wake:
            q._ring_bells(wake)
        if data is None:
            return item  # type: ignore[no-any-return]
        return q._decode([data])[0]  # type: ignore[no-any-return]

    def get_nowait(self) -> T:
        return self._q.get_nowait()

    def get_batch(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[T]:
        check_max_items(max_items)
        return self._get(max_items, block=block, timeout=timeout)

    def _get(self, max_items: int, *, block: bool, timeout: float | None) -> list[Any]:
        q = self._q
        deadline = blocking_deadline(timeout, block=block)
        try:
            records, wake = q._wait_blocking(
                GET, lambda: q._try_get(max_items), deadline, "a blocking get"
            )
        except DeadlinePassed:
            raise QueueEmpty("queue is empty") from None
        q._ring_bells(wake)
        return q._decode(records)

    def task_done(self) -> None:
        self._q.task_done()

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> ProcessSyncReservation[T]:
        """``with q.sync.reserve() as job``: at-least-once, as the async form."""
        return ProcessSyncReservation(self._q, block, timeout)

    def join(self) -> None:
        q = self._q
        q._wait_blocking(
            JOIN, lambda: True if q._h[H_UNFINISHED] == 0 else None, None, "a blocking join"
        )
