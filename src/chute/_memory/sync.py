"""``queue.sync``: the ``queue.Queue`` API on a memory queue, for plain threads.

Its put and get keep the same inline fast path as the async face (one mutex
section); waiting goes through ``waits.py``'s blocking loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar, overload

from .._contract import SyncFaceBase, check_max_items, check_timeout
from .job import SyncReservation
from .state import NO_WAITER

if TYPE_CHECKING:
    from .queue import Queue

__all__ = ["SyncQueue"]

T = TypeVar("T")

_PLAIN = 0  # as in queue.py: ``priority is not _PLAIN`` on the fast path


class SyncQueue(SyncFaceBase[T]):
    """The ``queue.Queue`` API on a chute queue, for plain threads.

    Blocking calls made from a thread that runs an event loop raise
    ``RuntimeError`` instead of stalling that loop.
    """

    __slots__ = ("__dict__",)  # takes attributes and mocks, as queue.Queue does
    _q: Queue[T]

    @property
    def async_queue(self) -> Queue[T]:
        """The queue this face belongs to."""
        return self._q

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

    def put(  # positional: see Queue.put()
        self,
        item: T,
        block: bool = True,
        timeout: float | None = None,
        delay: float | None = None,
        priority: int = 0,
        key: str | None = None,
    ) -> bool | None:
        """Put ``item``; ``QueueFull`` if not done within ``timeout`` (not
        enqueued). ``delay``, ``priority`` and ``key`` as for the async ``put``."""
        if delay is not None or priority is not _PLAIN or key is not None:
            q = self._q
            options = q._options(delay, priority, key)
            if not block:
                stored = q._put_now(item, options)  # as queue.Queue: exactly put_nowait()
            else:
                stored = q._put_blocking([item], block=True, timeout=timeout, options=options)
            return stored if key is not None else None
        if not block:
            return self._q.put_nowait(item)  # as queue.Queue: exactly put_nowait()
        q = self._q
        mutex = q._mutex
        mutex.acquire()
        try:
            if len(q._items) < q._put_ceiling:
                if timeout is not None:
                    check_timeout(timeout)
                q._items.append(item)
                q._unfinished += 1
                if not q._getters:
                    return None
                wake = q._claim_getter()
                if wake is None:
                    return None
            else:
                wake = NO_WAITER
        finally:
            mutex.release()
        if wake is NO_WAITER:
            q._put_blocking([item], block=block, timeout=timeout)
        else:
            q._wake(wake)
        return None

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
        return self._q.put_nowait(item, delay=delay, priority=priority, key=key)

    def put_batch(
        self,
        items: Iterable[T],
        block: bool = True,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
    ) -> None:
        """Put all ``items`` at once, or none (``QueueFull`` on timeout);
        ``delay`` and ``priority`` as for ``put``."""
        q = self._q
        options = None
        if delay is not None or priority is not _PLAIN:
            options = q._options(delay, priority, None)
        q._put_blocking(list(items), block=block, timeout=timeout, options=options)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """Remove and return an item; ``QueueEmpty`` if none within ``timeout``."""
        if not block:
            return self._q.get_nowait()  # as queue.Queue: exactly get_nowait()
        q = self._q
        mutex = q._mutex
        mutex.acquire()
        try:
            n = len(q._items)
            if n > q._get_floor:
                if timeout is not None:
                    check_timeout(timeout)
                if n > q._peak:
                    q._peak = n
                item: T = q._items.popleft()
                if not q._putters:
                    return item
                w = q._claim_putter()
            else:
                w = NO_WAITER
        finally:
            mutex.release()
        if w is NO_WAITER:
            return q._get_blocking(timeout, block=block)  # type: ignore[no-any-return]
        if w is not None:
            q._wake(w)
        return item

    def get_nowait(self) -> T:
        return self._q.get_nowait()

    def get_batch(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[T]:
        """Wait for at least one item, then take up to ``max_items`` at once."""
        check_max_items(max_items)
        return self._q._get_blocking(  # type: ignore[no-any-return]
            timeout, block=block, batch=max_items
        )

    def reserve(self, block: bool = True, timeout: float | None = None) -> SyncReservation[T]:
        """``with q.sync.reserve() as job``: at-least-once, as the async form."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        return SyncReservation(self._q, block, timeout)

    def join(self) -> None:
        """Block until every item put has been marked done."""
        self._q._join_blocking()

    @property
    def is_shutdown(self) -> bool:
        return self._q.is_shutdown

    def __repr__(self) -> str:
        return f"<sync face of {self._q!r}>"
