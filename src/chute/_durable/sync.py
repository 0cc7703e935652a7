"""``q.sync``: the ``queue.Queue`` face of a durable queue, for plain threads
and worker processes with no event loop. It runs the queue's own steps
with the blocking driver: nothing here is written twice."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar, overload

from .._contract import UNSET, SyncFaceBase, Unset, check_max_items
from .job import DurableSyncReservation
from .steps import drive_blocking

if TYPE_CHECKING:
    from .queue import DurableQueue

__all__ = ["DurableSyncQueue"]

T = TypeVar("T")


class DurableSyncQueue(SyncFaceBase[T]):
    """The ``queue.Queue`` API on a durable queue. Blocking calls made from a
    thread that runs an event loop raise ``RuntimeError`` instead of
    stalling it. (No ``__slots__``: it takes attributes, and
    ``mock.patch.object``, as ``queue.Queue`` does.)"""

    _q: DurableQueue[T]

    @property
    def is_shutdown(self) -> bool:
        return self._q.is_shutdown

    def configure(
        self, *, maxsize: int | Unset = UNSET, max_deliveries: int | Unset | None = UNSET
    ) -> None:
        """The queue's ``configure``."""
        self._q.configure(maxsize=maxsize, max_deliveries=max_deliveries)

    @overload
    def put(
        self,
        item: T,
        block: bool = True,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: None = None,
    ) -> None: ...

    @overload
    def put(
        self,
        item: T,
        block: bool = True,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: str,
    ) -> bool: ...

    def put(
        self,
        item: T,
        block: bool = True,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: str | None = None,
    ) -> bool | None:
        """Store ``item``, waiting while full (``QueueFull`` when ``timeout``
        passes); ``delay``, ``priority`` and ``key`` as for the async ``put``."""
        q = self._q
        options = q._options(delay, priority, key)
        steps = q._storing((item,), timeout, options, single=True, block=block, in_thread=True)
        stored = drive_blocking(q._backend, steps)
        return stored if key is not None else None

    @overload
    def put_nowait(
        self, item: T, *, delay: float | None = None, priority: int = 0, key: None = None
    ) -> None: ...

    @overload
    def put_nowait(
        self, item: T, *, delay: float | None = None, priority: int = 0, key: str
    ) -> bool: ...

    def put_nowait(
        self, item: T, *, delay: float | None = None, priority: int = 0, key: str | None = None
    ) -> bool | None:
        return self.put(item, block=False, delay=delay, priority=priority, key=key)

    def put_batch(
        self,
        items: Iterable[T],
        block: bool = True,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
    ) -> None:
        """Store all ``items`` at once, or none of them."""
        q = self._q
        options = q._options(delay, priority, None)
        steps = q._storing(items, timeout, options, single=False, block=block, in_thread=True)
        drive_blocking(q._backend, steps)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Take the oldest item, waiting while empty (``QueueEmpty`` when ``timeout`` passes)."""
        q = self._q
        q._check_open()
        return drive_blocking(q._backend, q._get_steps(1, timeout, block=block, in_thread=True))[0]

    def get_nowait(self) -> T:
        return self.get(block=False)

    def get_batch(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[T]:
        q = self._q
        max_items = check_max_items(max_items)
        q._check_open()
        steps = q._get_steps(max_items, timeout, block=block, in_thread=True)
        return drive_blocking(q._backend, steps)

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> DurableSyncReservation[T]:
        """``with q.sync.reserve() as job``: at-least-once, as the async form."""
        return DurableSyncReservation(self._q, block, timeout)

    def join(self) -> None:
        q = self._q
        q._check_open()
        drive_blocking(q._backend, q._join_steps(in_thread=True))
