"""The memory queues users make: ``chute.Queue``, ``LifoQueue``, ``PriorityQueue``.

The public face, with the measured fast paths inline: an uncontended put or
get is one mutex section here, without a call into the layers below. What
happens when it must wait is in ``waits.py``; how items and promises move
under the mutex, in ``state.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import ClassVar, TypeVar, overload

from .._contract import (
    UNSET,
    DeadLetter,
    QueueStatistics,
    Unset,
    check_max_deliveries,
    check_max_items,
    check_maxsize,
    check_put_options,
    check_timeout,
)
from .._durable.backend import Capabilities
from .._exceptions import QueueEmpty, QueueFull, QueueShutDown
from .._waiters import GET, JOIN, PUT, AsyncWaiter, Waiter
from .job import Reservation
from .state import IMMEDIATE, NO_WAITER, OPEN, SHUTDOWN, PutOptions
from .stores import Heap, Returned, Stack
from .sync import SyncQueue
from .waits import QueueWaits

__all__ = ["LifoQueue", "PriorityQueue", "Queue"]

T = TypeVar("T")

# ``priority is not _PLAIN``: one identity check on the put fast path (0
# is one object in CPython; another zero takes the checked path, harmlessly).
_PLAIN = 0


class Queue(QueueWaits[T]):
    """A FIFO queue for tasks and threads, on any number of event loops.

    ``maxsize`` bounds the number of stored items (0 means unbounded).
    ``max_deliveries`` bounds how often a reserved item is handed out before
    a failed attempt moves it to the dead letters (None: never).

    The async methods are the ``asyncio.Queue`` API plus ``timeout=``,
    batches, ``reserve()`` and ``shutdown()`` (3.13 semantics on every
    Python); ``queue.sync`` is the ``queue.Queue`` API for plain threads.
    """

    __slots__ = ()

    #: What this transport offers (the contract suite reads it): one mutex
    #: orders every caller, waits are wake-ups rather than polls, and an
    #: immediate shutdown hands the stored items back.
    capabilities: ClassVar[Capabilities] = Capabilities(
        blocking_wait=True,
        arrival_order_across_clients=True,
        immediate_shutdown_removes=True,
        priorities=False,
        delays=True,
        delayed_puts=True,
        prioritised_puts=True,
        keyed_puts=True,
    )

    # -- introspection --------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The bound on stored items; 0 means unbounded.

        Assignable, as on ``queue.Queue``: a larger bound wakes waiting
        putters at once; a smaller one keeps the items stored (puts wait until
        the queue drains below it).
        """
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.configure(maxsize=value)

    @property
    def unfinished_tasks(self) -> int:
        """Items put and not yet marked done (what ``join()`` waits on)."""
        return self._unfinished

    def configure(
        self,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
    ) -> None:
        """Change the live queue's bounds; an argument not passed is kept.

        ``max_deliveries=None`` removes the limit. Both values are checked
        before either changes.
        """
        if maxsize is not UNSET:
            maxsize = check_maxsize(maxsize)
        if max_deliveries is not UNSET:
            max_deliveries = check_max_deliveries(max_deliveries)
        wake: list[Waiter] = []
        with self._guard:
            if not isinstance(max_deliveries, Unset):
                self._max_deliveries = max_deliveries
            if not isinstance(maxsize, Unset):
                self._maxsize = maxsize
                # A batch that can never fit the new bound is woken to raise
                # ValueError, not left asleep (holding up everyone behind it).
                if maxsize:
                    for w in [w for w in self._putters if w.need > maxsize]:
                        self._putters.remove(w)
                        w.notified = True
                        w.need = 0  # promised nothing: its retry raises
                        wake.append(w)
                if self._putters:
                    wake += self._claim_putters()
        self._wake_list(wake)

    def qsize(self) -> int:
        """The number of items stored now (exact), delayed ones included."""
        return len(self._items) + self._n_scheduled

    def empty(self) -> bool:
        return not self._items and not self._n_scheduled

    def full(self) -> bool:
        return 0 < self._maxsize <= len(self._items) + self._n_scheduled

    @property
    def is_shutdown(self) -> bool:
        return self._state != OPEN

    @property
    def closed(self) -> bool:
        """Always False: a memory queue holds nothing outside this process,
        so it has no ``close()`` (``shutdown()`` is what ends its use)."""
        return False

    async def aqsize(self) -> int:
        """``qsize()`` for code on a loop; answers at once (no round trip here)."""
        return self.qsize()

    async def astatistics(self) -> QueueStatistics:
        """``statistics()`` for code on a loop; answers at once."""
        return self.statistics()

    @property
    def sync(self) -> SyncQueue[T]:
        """The blocking ``queue.Queue`` face of this queue, for plain threads."""
        face = self._sync
        if face is None:
            face = self._sync = SyncQueue(self)
        return face

    def statistics(self) -> QueueStatistics:
        with self._guard:
            size = len(self._items) + self._n_scheduled
            total_put = self._unfinished + self._done
            return QueueStatistics(
                size=size,
                maxsize=self._maxsize,
                getters_waiting=len(self._getters),
                putters_waiting=len(self._putters),
                in_flight=self._in_flight,
                total_put=total_put,
                total_got=total_put + self._n_returns - self._n_removed - size,
                peak_size=max(self._peak, size),
                dead_lettered=len(self._dead),
                unfinished_tasks=self._unfinished,
                shutdown=self._state != OPEN,
                delayed=len(self._delayed),
                scheduled=self._n_scheduled,
            )

    def __repr__(self) -> str:
        state = ("open", "shut down", "shut down (immediate)")[self._state]
        return f"<chute.{type(self).__name__} maxsize={self._maxsize} qsize={self.qsize()} {state}>"

    # -- the async face: fast paths inline, waiting in _get_wait/_put_wait -----

    @overload
    async def put(
        self,
        item: T,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: None = None,
    ) -> None: ...

    @overload
    async def put(
        self,
        item: T,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: str,
    ) -> bool: ...

    # The implementations take the options positionally too: CPython fills
    # keyword-only defaults by dict lookups on every call, measurably slower
    # on this path. Typed (the overloads above) they are keyword-only.
    async def put(
        self,
        item: T,
        timeout: float | None = None,
        delay: float | None = None,
        priority: int = 0,
        key: str | None = None,
    ) -> bool | None:
        """Put ``item``, waiting while the queue is full.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``QueueShutDown``
        (carrying the item) once shut down; in both cases, and when cancelled,
        the item was not enqueued.

        ``delay``: no get takes it for that many seconds (it counts toward
        ``maxsize`` meanwhile). ``priority`` (``chute.Queue`` only): lower
        numbers are taken first, equal ones in the order they were put.
        ``key``: while an item put with that key is in the queue (waiting,
        delayed or reserved), another put with it stores nothing and returns
        False (with a key, True when stored): a put that is safe to retry.
        """
        if delay is not None or priority is not _PLAIN or key is not None:
            options = self._options(delay, priority, key)
            if timeout is not None:
                timeout = check_timeout(timeout)
            stored = await self._put_wait([item], timeout, options)
            return stored if key is not None else None
        if timeout is not None:
            timeout = check_timeout(timeout)
        # acquire/release rather than ``with``: half the cost on the hot path.
        # _put_ceiling folds "open, room, nobody queued before us" into one
        # number, kept current by _refresh() whenever any of those changes.
        mutex = self._mutex
        mutex.acquire()
        try:
            n = len(self._items)
            if n < self._put_ceiling:
                self._items.append(item)
                self._unfinished += 1
                if not self._getters:
                    return None
                w = self._claim_getter()
            else:
                w = NO_WAITER
        finally:
            mutex.release()
        if w is NO_WAITER:
            await self._put_wait([item], timeout)
        elif w is not None and not w.wake():
            self._void(w)
        return None

    def _options(self, delay: object, priority: object, key: object) -> PutOptions:
        """Check a put's options (nothing stored if one is wrong)."""
        options = check_put_options(delay, priority, key)
        if options[1] and not self.capabilities.prioritised_puts:
            raise ValueError(
                f"a {type(self).__name__} does not take priority=: {self._order_is}; "
                "use chute.Queue for put(priority=)"
            )
        return options

    def _put_now(self, item: T, options: PutOptions) -> bool:
        """``put_nowait`` with options: the room it sees is the plain one's
        (as ``queue.Queue``'s, blocked putters not counted); False if the
        key is in the queue."""
        with self._guard:
            if self._state:
                raise QueueShutDown(item=item)
            if options[2] in self._keys:
                return False
            maxsize = self._maxsize
            if maxsize and len(self._items) + self._n_scheduled >= maxsize:
                raise QueueFull(f"queue is full (maxsize={maxsize})")
            wake = self._store_with([item], *options)
        self._wake_list(wake)
        return True

    #: How the queue orders its items (named when it refuses ``priority=``).
    _order_is: ClassVar[str] = "it hands out items in the order they were put"

    @overload
    def put_nowait(
        self, item: T, *, delay: float | None = None, priority: int = 0, key: None = None
    ) -> None: ...

    @overload
    def put_nowait(
        self, item: T, *, delay: float | None = None, priority: int = 0, key: str
    ) -> bool: ...

    def put_nowait(  # positional: see put()
        self, item: T, delay: float | None = None, priority: int = 0, key: str | None = None
    ) -> bool | None:
        """Put ``item`` at once; ``QueueFull`` if there is no room (not enqueued).
        ``delay``, ``priority`` and ``key`` as for ``put``."""
        if delay is not None or priority is not _PLAIN or key is not None:
            stored = self._put_now(item, self._options(delay, priority, key))
            return stored if key is not None else None
        mutex = self._mutex
        mutex.acquire()
        try:
            if self._state:
                raise QueueShutDown(item=item)
            maxsize = self._maxsize
            if maxsize and len(self._items) + self._n_scheduled >= maxsize:
                raise QueueFull(f"queue is full (maxsize={maxsize})")
            wake = self._push_locked(item)  # refreshes thresholds if it claims a getter
        finally:
            mutex.release()
        if wake is not None:
            self._wake(wake)
        return None

    async def put_batch(
        self,
        items: Iterable[T],
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
    ) -> None:
        """Put all ``items`` at once, or none of them.

        Waits until there is room for the whole batch (a batch larger than
        ``maxsize`` is a ``ValueError``); one lock and one wake-up round for
        the lot. Cancelled or timed out, nothing was enqueued. ``delay`` and
        ``priority`` (each item's) as for ``put``.
        """
        options = None
        if delay is not None or priority is not _PLAIN:
            options = self._options(delay, priority, None)
        if timeout is not None:
            timeout = check_timeout(timeout)
        batch = list(items)
        if self._maxsize and len(batch) > self._maxsize:
            raise ValueError(
                f"a batch of {len(batch)} items can never fit a queue of maxsize {self._maxsize}"
            )
        await self._put_wait(batch, timeout, options)

    async def get(self, timeout: float | None = None) -> T:
        """Remove and return the next item, waiting while the queue is empty.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``QueueShutDown``
        once shut down and drained. Cancelled or timed out, no item was taken.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        # _get_floor: the items promised to notified getters, or "infinite"
        # when shut down or when given-back items need the slow path.
        mutex = self._mutex
        mutex.acquire()
        try:
            n = len(self._items)
            if n > self._get_floor:
                if n > self._peak:
                    self._peak = n
                item: T = self._items.popleft()
                if not self._putters:
                    return item
                w = self._claim_putter()
            else:
                w = NO_WAITER
        finally:
            mutex.release()
        if w is NO_WAITER:
            return await self._get_wait(timeout)  # type: ignore[no-any-return]
        if w is not None and not w.wake():
            self._void(w)
        return item

    def get_nowait(self) -> T:
        """Remove and return an item at once; ``QueueEmpty`` if there is none."""
        mutex = self._mutex
        mutex.acquire()
        try:
            n = len(self._items)
            if n and not self._nreturned and not self._state and not self._n_scheduled:
                if n > self._peak:
                    self._peak = n
                item: T = self._items.popleft()
                if not self._putters:
                    return item
                w = self._claim_putter()
            else:
                w = NO_WAITER
        finally:
            mutex.release()
        if w is not NO_WAITER:
            if w is not None:
                self._wake(w)
            return item
        with self._guard:  # given-back items or shut down: the general path
            if self._items and self._state != IMMEDIATE:
                value, wake = self._take(reserve=False, batch=None)
            elif self._state:
                raise QueueShutDown()
            else:
                raise QueueEmpty("queue is empty")
        self._wake_list(wake)
        return value  # type: ignore[no-any-return]

    async def get_batch(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Wait for at least one item, then take up to ``max_items`` at once.

        Raises ``TimeoutError`` if none arrives within ``timeout`` and
        ``QueueShutDown`` once shut down and drained.
        """
        check_max_items(max_items)
        if timeout is not None:
            timeout = check_timeout(timeout)
        return await self._get_wait(timeout, batch=max_items)  # type: ignore[no-any-return]

    def reserve(self, timeout: float | None = None) -> Reservation[T]:
        """Take the next item at least once: ``async with q.reserve() as job``.

        A clean exit acknowledges ``job.item`` (it counts as done for
        ``join()``); an exception gives it back to the front of the queue,
        or to the dead letters after ``max_deliveries`` attempts.
        ``job = await q.reserve()`` works too; then settle it yourself.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        return Reservation(self, timeout)

    def task_done(self) -> None:
        """Mark one gotten item as processed (``ValueError`` if none is pending)."""
        with self._guard:
            wake = self._finish(1)
        if wake:
            self._wake_list(wake)

    async def join(self) -> None:
        """Wait until every item put has been marked done (or dead-lettered)."""
        with self._guard:
            if not self._unfinished:
                return
            loop = asyncio.get_running_loop()
            waiter = AsyncWaiter(loop, 0, JOIN)
            self._joiners.append(waiter)
        try:
            await waiter.fut
        finally:
            with self._guard:
                if waiter in self._joiners:
                    self._joiners.remove(waiter)

    def shutdown(self, immediate: bool = False) -> list[T]:
        """Shut the queue down: puts raise ``QueueShutDown`` from now on.

        Gets go on until the queue is drained, then raise ``QueueShutDown``.
        With ``immediate=True`` gets raise at once, and the stored items are
        removed, counted as done for ``join()``, and *returned* to the caller
        so that none is dropped silently. Every blocked caller is woken.
        Calling it again is harmless (an immediate call returns what is left).
        """
        with self._guard:
            removed: list[T] = []
            if immediate:
                self._state = IMMEDIATE
                items = self._items
                self._peak = max(self._peak, len(items) + self._n_scheduled)
                out = []
                while items:
                    out.append(items.popleft())
                self._nreturned = 0
                for batch in self._scheduled.values():
                    out += batch
                self._scheduled.clear()
                self._put_promised -= self._n_scheduled
                self._n_scheduled = 0
                self._n_removed += len(out)  # what counted in the size
                out += self._delayed.values()
                self._in_flight -= len(self._delayed)
                self._delayed.clear()
                for x in out:
                    if type(x) is Returned:
                        if x.key is not None:
                            self._keys.discard(x.key)  # reserved items keep theirs
                        x = x.item
                    removed.append(x)
                n = min(len(removed), self._unfinished)
                self._unfinished -= n
                self._done += n
            elif not self._state:
                self._state = SHUTDOWN
            wake = self._release_all(self._getters, GET)
            wake += self._release_all(self._putters, PUT)
            if not self._unfinished:
                wake += self._joiners
                self._joiners = []
        self._wake_list(wake)
        return removed

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except QueueShutDown:
            raise StopAsyncIteration from None

    # -- dead letters ----------------------------------------------------------

    def dead_letters(self) -> list[DeadLetter[T]]:
        """The items given up on (``max_deliveries`` failed reservations, or
        given back after ``shutdown(immediate=True)``), with why: the last
        error, deliveries and when; oldest first."""
        with self._guard:
            return list(self._dead)

    def requeue_dead(self) -> int:
        """Put every dead letter back into the queue; returns how many."""
        with self._guard:
            if self._state:
                raise QueueShutDown("cannot requeue into a shut down queue")
            dead = self._dead
            # All or none: a refused item keeps them all here.
            self._push_all([d.item for d in dead])
            self._dead = []
            wake = self._stored(len(dead))
        self._wake_list(wake)
        return len(dead)

    def purge_dead(self) -> list[DeadLetter[T]]:
        """Remove the dead letters and return them (records, as ``dead_letters()``)."""
        with self._guard:
            dead, self._dead = self._dead, []
        return dead


class LifoQueue(Queue[T]):
    """A last-in, first-out queue; a failed reservation's item goes back on top."""

    __slots__ = ()

    capabilities: ClassVar[Capabilities] = Capabilities(
        blocking_wait=True,
        arrival_order_across_clients=True,
        immediate_shutdown_removes=True,
        priorities=False,
        delays=True,
        delayed_puts=True,
        keyed_puts=True,
    )
    _order_is = "it hands out the newest item first"

    def _init_store(self) -> None:
        self._items = Stack()


class PriorityQueue(Queue[T]):
    """Lowest item first (``heapq`` order); typical items are ``(priority, data)``.

    An item given back by a failed reservation takes its place by priority.
    """

    __slots__ = ()

    capabilities: ClassVar[Capabilities] = Capabilities(
        blocking_wait=True,
        arrival_order_across_clients=True,
        immediate_shutdown_removes=True,
        priorities=True,
        delays=True,
        delayed_puts=True,
        keyed_puts=True,
    )
    _order_is = "it orders by the items themselves (put (priority, data) tuples)"

    def _init_store(self) -> None:
        self._items = Heap()
