"""The in-process queue: safe from any thread and any event loop.

One mutex guards everything. A caller that must wait enqueues a waiter of
its own kind (a future on its own loop, or a lock for a plain thread) in one
FIFO shared by async and sync callers; whoever makes progress possible
*notifies* the first waiter and wakes it after releasing the mutex. Items
never leave the queue except in the caller that returns them, under the
mutex, so a get or put that is cancelled or times out has either completed or
left the queue unchanged.

Notified-but-not-yet-running waiters are counted (``_get_promised``,
``_put_promised``) so that a blocking call arriving later queues behind them
instead of taking what was promised; the ``*_nowait`` forms never wait and
take what is there.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar

from ._contract import (
    UNSET,
    DeadLetter,
    ErrorInfo,
    JobBase,
    QueueStatistics,
    ReservationBase,
    SyncFaceBase,
    SyncReservationBase,
    Unset,
    check_delay,
    check_max_deliveries,
    check_max_items,
    check_maxsize,
    check_timeout,
)
from ._exceptions import JobSettledError, QueueEmpty, QueueFull, QueueShutDown
from ._waiters import AsyncWaiter, Expired, SyncWaiter, Waiter, check_not_on_loop, expire

__all__ = ["LifoQueue", "MemoryJob", "PriorityQueue", "Queue"]

T = TypeVar("T")

_OPEN, _SHUTDOWN, _IMMEDIATE = 0, 1, 2
_get_running_loop = asyncio._get_running_loop


class _TimedOut(Exception):
    """Internal: the caller's deadline passed while nothing was possible."""


class _NeverFits(ValueError):
    """Internal: a waiting batch is larger than the bound lowered meanwhile;
    ``wake``: the putters behind it that the room it gives up lets in."""

    def __init__(self, message: str, wake: list[Waiter]) -> None:
        super().__init__(message)
        self.wake = wake


class _Returned:
    """An item given back by a failed reservation, with its delivery count
    and the error it last failed with (kept for the dead letters).

    Stored in the queue itself so the queue's order decides where it goes:
    the front of a FIFO, the top of a LIFO, its place by priority in a heap.
    """

    __slots__ = ("deliveries", "error", "item")

    def __init__(self, item: Any, deliveries: int, error: ErrorInfo | None) -> None:
        self.item = item
        self.deliveries = deliveries
        self.error = error

    def __lt__(self, other: object) -> bool:
        return bool(self.item < (other.item if isinstance(other, _Returned) else other))

    def __gt__(self, other: object) -> bool:
        return bool(self.item > (other.item if isinstance(other, _Returned) else other))


class Queue(Generic[T]):
    """A FIFO queue for tasks and threads, on any number of event loops.

    ``maxsize`` bounds the number of stored items (0 means unbounded).
    ``max_deliveries`` bounds how often a reserved item is handed out before
    a failed attempt moves it to the dead letters (None: never).

    The async methods are the ``asyncio.Queue`` API plus ``timeout=``,
    batches, ``reserve()`` and ``shutdown()`` (3.13 semantics on every
    Python); ``queue.sync`` is the ``queue.Queue`` API for plain threads.
    """

    # "__dict__": queues take attributes as the stdlib's do (tests set
    # ``q.Empty = ...``, ``mock.patch.object(q, "get")``). The fields below
    # stay slots, so the hot paths read them as fast as before.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_closed",
        "_dead",
        "_delayed",
        "_done",
        "_get_floor",
        "_get_promised",
        "_getters",
        "_guard",
        "_in_flight",
        "_items",
        "_joiners",
        "_max_deliveries",
        "_maxsize",
        "_mutex",
        "_n_removed",
        "_n_returns",
        "_nreturned",
        "_peak",
        "_put_ceiling",
        "_put_promised",
        "_putters",
        "_sync",
        "_unfinished",
    )

    def __init__(self, maxsize: int = 0, *, max_deliveries: int | None = None) -> None:
        self._maxsize = check_maxsize(maxsize)
        self._max_deliveries = check_max_deliveries(max_deliveries)
        self._mutex = threading.Lock()
        self._guard = _Guard(self)
        self._init_store()
        self._getters: deque[Waiter] = deque()
        self._putters: deque[Waiter] = deque()
        self._joiners: list[Waiter] = []
        self._get_promised = 0
        self._put_promised = 0
        self._unfinished = 0
        self._done = 0
        self._nreturned = 0
        self._n_returns = 0
        self._n_removed = 0
        self._in_flight = 0
        # The peak is recorded when items leave (a size's local maximum is
        # always followed by a removal, or is the size now): a put that
        # grows the queue pays nothing for it, which is measurable.
        self._peak = 0
        self._closed = _OPEN
        self._get_floor = 0
        self._put_ceiling = 0
        self._refresh()
        self._dead: list[DeadLetter[T]] = []
        # Items nacked with a delay, until their timer gives them back.
        self._delayed: dict[MemoryJob[T], tuple[Any, int, ErrorInfo | None]] = {}
        self._sync: SyncQueue[T] | None = None

    # -- storage hooks (overridden by LifoQueue and PriorityQueue) -----------

    def _init_store(self) -> None:
        # Every store answers append (put), popleft (next to get) and
        # appendleft (give back in front). The hot paths call them directly
        # on ``self._items``: a method call on a C type is cheaper than one
        # through a stored bound method, and that is measurable here.
        self._items: Any = deque()

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
        """The number of items stored now (exact)."""
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self._maxsize <= len(self._items)

    @property
    def is_shutdown(self) -> bool:
        return self._closed != _OPEN

    @property
    def sync(self) -> SyncQueue[T]:
        """The blocking ``queue.Queue`` face of this queue, for plain threads."""
        face = self._sync
        if face is None:
            face = self._sync = SyncQueue(self)
        return face

    def statistics(self) -> QueueStatistics:
        with self._guard:
            size = len(self._items)
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
                shutdown=self._closed != _OPEN,
                delayed=len(self._delayed),
            )

    def __repr__(self) -> str:
        state = ("open", "shut down", "shut down (immediate)")[self._closed]
        return (
            f"<chute.{type(self).__name__} maxsize={self._maxsize} "
            f"qsize={len(self._items)} {state}>"
        )

    # -- the async face: fast paths inline, waiting in _get_wait/_put_wait -----

    async def put(self, item: T, timeout: float | None = None) -> None:
        """Put ``item``, waiting while the queue is full.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``QueueShutDown``
        (carrying the item) once shut down; in both cases, and when cancelled,
        the item was not enqueued.
        """
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
                    return
                w = self._claim_getter()
            else:
                w = _NO_WAITER
        finally:
            mutex.release()
        if w is _NO_WAITER:
            await self._put_wait([item], timeout)
        elif w is not None and not w.wake():
            self._void(w)

    def put_nowait(self, item: T) -> None:
        """Put ``item`` at once; ``QueueFull`` if there is no room (not enqueued)."""
        mutex = self._mutex
        mutex.acquire()
        try:
            if self._closed:
                raise QueueShutDown(item=item)
            maxsize = self._maxsize
            if maxsize and len(self._items) >= maxsize:
                raise QueueFull(f"queue is full (maxsize={maxsize})")
            wake = self._push_locked(item)  # refreshes thresholds if it claims a getter
        finally:
            mutex.release()
        if wake is not None:
            self._wake(wake)

    async def put_batch(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Put all ``items`` at once, or none of them.

        Waits until there is room for the whole batch (a batch larger than
        ``maxsize`` is a ``ValueError``); one lock and one wake-up round for
        the lot. Cancelled or timed out, nothing was enqueued.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        batch = list(items)
        if self._maxsize and len(batch) > self._maxsize:
            raise ValueError(
                f"a batch of {len(batch)} items can never fit a queue of maxsize {self._maxsize}"
            )
        await self._put_wait(batch, timeout)

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
                w = _NO_WAITER
        finally:
            mutex.release()
        if w is _NO_WAITER:
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
            if n and not self._nreturned and not self._closed:
                if n > self._peak:
                    self._peak = n
                item: T = self._items.popleft()
                if not self._putters:
                    return item
                w = self._claim_putter()
            else:
                w = _NO_WAITER
        finally:
            mutex.release()
        if w is not _NO_WAITER:
            if w is not None:
                self._wake(w)
            return item
        with self._guard:  # given-back items or shut down: the general path
            if self._items and self._closed != _IMMEDIATE:
                value, wake = self._take(False, None)
            elif self._closed:
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
            waiter = AsyncWaiter(loop, 0, None)
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
                self._closed = _IMMEDIATE
                items = self._items
                self._peak = max(self._peak, len(items))
                while items:
                    x = items.popleft()
                    removed.append(x.item if type(x) is _Returned else x)
                self._nreturned = 0
                self._n_removed += len(removed)
                for item, _deliveries, _error in self._delayed.values():
                    removed.append(item)
                    self._in_flight -= 1
                self._delayed.clear()
                n = min(len(removed), self._unfinished)
                self._unfinished -= n
                self._done += n
            elif not self._closed:
                self._closed = _SHUTDOWN
            wake = self._release_all(self._getters, getters=True)
            wake += self._release_all(self._putters, getters=False)
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
            if self._closed:
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

    # -- internals, all called with the mutex held unless said otherwise ------

    def _refresh(self) -> None:
        """Recompute the fast paths' thresholds after any change of state."""
        closed = self._closed
        self._get_floor = _HUGE if closed or self._nreturned else self._get_promised
        maxsize = self._maxsize
        if closed or (maxsize and self._putters):
            self._put_ceiling = -1
        elif maxsize:
            self._put_ceiling = maxsize - self._put_promised
        else:
            self._put_ceiling = _HUGE

    def _push_locked(self, item: Any) -> Waiter | None:
        self._items.append(item)
        self._unfinished += 1
        if self._getters:
            return self._claim_getter()
        return None

    def _push_all(self, batch: list[Any]) -> None:
        """Store every item of ``batch``, or none: an item the store refuses
        (a priority that cannot be compared) leaves the queue as it was."""
        items = self._items
        snapshot = list(items) if type(items) is _Heap and len(batch) > 1 else None
        pushed = 0
        try:
            for item in batch:
                items.append(item)
                pushed += 1
        except BaseException:
            if snapshot is not None:
                items[:] = snapshot
            else:
                for _ in range(pushed):
                    deque.pop(items)  # FIFO and LIFO stores append on the right
            raise

    def _stored(self, n: int) -> list[Waiter]:
        """``n`` items were just pushed: count them, claim the getters they feed."""
        self._unfinished += n
        wake = []
        while self._getters:
            w = self._claim_getter()
            if w is None:
                break
            wake.append(w)
        return wake

    def _claim_getter(self) -> Waiter | None:
        if len(self._items) > self._get_promised:
            w = self._getters.popleft()
            w.notified = True
            self._get_promised += 1
            # Only the get floor depends on what changed (a full _refresh()
            # is measurable here: this runs once per wake-up).
            if not self._closed and not self._nreturned:
                self._get_floor = self._get_promised
            return w
        return None

    def _claim_putter(self) -> Waiter | None:
        putters = self._putters
        w = putters[0]
        maxsize = self._maxsize
        if len(self._items) + self._put_promised + w.need <= maxsize or not maxsize:
            putters.popleft()
            w.notified = True
            self._put_promised += w.need
            # As in _claim_getter: only the put ceiling can have changed.
            self._put_ceiling = (
                -1
                if self._closed or putters
                else (maxsize - self._put_promised if maxsize else _HUGE)
            )
            return w
        return None

    def _claim_putters(self) -> list[Waiter]:
        wake = []
        while self._putters:
            w = self._claim_putter()
            if w is None:
                break
            wake.append(w)
        return wake

    def _release_all(self, waiters: deque[Waiter], getters: bool) -> list[Waiter]:
        out = list(waiters)
        waiters.clear()
        for w in out:
            w.notified = True
            if getters:
                self._get_promised += 1
            else:
                self._put_promised += w.need
        return out

    def _take(self, reserve: bool, batch: int | None) -> tuple[Any, list[Waiter]]:
        """Pop one item (or up to ``batch``); claim putters for the room made."""
        items = self._items
        if len(items) > self._peak:
            self._peak = len(items)
        pop = items.popleft
        out: list[Any] = []
        deliveries = 0
        error = None
        max_items = 1 if batch is None else batch
        while items and len(out) < max_items:
            try:
                x = pop()
            except Exception:
                if not out:
                    raise  # the store is unchanged: nothing was taken
                break  # deliver what was taken; the next get meets the error

            if type(x) is _Returned:
                self._nreturned -= 1
                deliveries = x.deliveries
                error = x.error
                x = x.item
            out.append(x)
        value: Any
        if reserve:
            self._in_flight += 1
            value = MemoryJob(self, out[0], deliveries + 1, error)
        elif batch is None:
            value = out[0]
        else:
            value = out
        return value, (self._claim_putters() if self._putters else [])

    def _finish(self, n: int) -> list[Waiter]:
        if self._unfinished < n:
            raise ValueError("task_done() called too many times")
        self._unfinished -= n
        self._done += n
        if not self._unfinished and self._joiners:
            wake, self._joiners = self._joiners, []
            return wake
        return []

    def _give_back(self, item: Any, deliveries: int, error: ErrorInfo | None) -> Waiter | None:
        """Return a reserved item to the store (front by the queue's order)."""
        self._items.appendleft(_Returned(item, deliveries, error))
        self._nreturned += 1
        self._n_returns += 1
        if self._getters:
            return self._claim_getter()
        return None

    def _try_get(
        self, prev: Waiter | None, reserve: bool, batch: int | None, expired: bool
    ) -> tuple[Any, list[Waiter]] | None:
        """One attempt of a blocking get; None means: enqueue a waiter and sleep."""
        if prev is not None and prev.notified:
            self._get_promised -= 1
            prev.notified = False
        closed = self._closed
        if closed == _IMMEDIATE:
            raise QueueShutDown()
        # Items promised to notified waiters are theirs; once shut down
        # nobody waits any more, so whoever comes takes what is left.
        items = self._items
        n = len(items)
        if n > self._get_promised or (closed and n):
            if batch is None and not reserve and not self._nreturned:
                # The common case, kept short: one plain item.
                if n > self._peak:
                    self._peak = n
                return items.popleft(), (self._claim_putters() if self._putters else _NO_WAKE)
            if batch is not None and not closed:
                batch = min(batch, n - self._get_promised)  # leave the promised items
            return self._take(reserve, batch)
        if closed:
            raise QueueShutDown()
        if expired:
            raise _TimedOut
        return None

    def _try_put(self, prev: Waiter | None, batch: list[Any], expired: bool) -> list[Waiter] | None:
        """One attempt of a blocking put; None means: enqueue a waiter and sleep."""
        if prev is not None and prev.notified:
            self._put_promised -= prev.need
            prev.notified = False
        if self._closed:
            if len(batch) == 1:
                raise QueueShutDown(item=batch[0])
            raise QueueShutDown(items=batch)
        maxsize = self._maxsize
        # Room promised to notified putters is theirs, and a newcomer queues
        # behind the putters already waiting: one fair order.
        room = maxsize - len(self._items) - self._put_promised
        if not maxsize or (len(batch) <= room and (prev is not None or not self._putters)):
            self._push_all(batch)
            return self._stored(len(batch))
        if len(batch) > maxsize:  # the bound was lowered while it waited
            raise _NeverFits(
                f"a batch of {len(batch)} items can never fit a queue of maxsize {maxsize}",
                self._claim_putters() if self._putters else [],
            )
        if expired:
            raise _TimedOut
        return None

    def _abandon(self, waiter: Waiter, getter: bool) -> list[Waiter]:
        """A waiter gives up (cancelled, timed out, interrupted).

        If it was already notified, pass the notification on so that the
        item (or the room) it was promised is not stranded.
        """
        waiters = self._getters if getter else self._putters
        if not waiter.notified:
            try:
                waiters.remove(waiter)
            except ValueError:  # already voided by _void (its loop was closed)
                pass
            # A putter at the head (a batch, say) may have been all that held
            # back the smaller putters behind it while there is room.
            return self._claim_putters() if not getter and self._putters else []
        waiter.notified = False
        if getter:
            self._get_promised -= 1
            if self._getters:
                w = self._claim_getter()
                return [w] if w is not None else []
            return []
        self._put_promised -= waiter.need
        return self._claim_putters() if self._putters else []

    def _wake(self, w: Waiter) -> None:
        """Wake a notified waiter (mutex not held)."""
        if not w.wake():
            self._void(w)

    def _wake_list(self, waiters: list[Waiter]) -> None:
        for w in waiters:
            if not w.wake():
                self._void(w)

    def _void(self, w: Waiter) -> None:
        """A notified waiter's loop was closed under it: it will never run.

        Take its promise back and pass it on, or the item (or room) it was
        promised would be stranded while others wait.
        """
        if w.getter is None:  # a joiner: nothing was promised
            return
        with self._guard:
            wake = self._abandon(w, w.getter)
        self._wake_list(wake)

    async def _get_wait(
        self, timeout: float | None, batch: int | None = None, reserve: bool = False
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: AsyncWaiter | None = None
        expired = timeout == 0
        mutex = self._mutex
        while True:
            # Explicit acquire/refresh/release: ``with self._guard`` costs a
            # Python-level __enter__/__exit__ pair on every wait.
            mutex.acquire()
            try:
                try:
                    got = self._try_get(waiter, reserve, batch, expired)
                except _TimedOut:
                    raise TimeoutError(f"get timed out after {timeout} seconds") from None
                if got is None:
                    front = waiter is not None
                    waiter = AsyncWaiter(loop, 1, True)
                    if front:
                        self._getters.appendleft(waiter)
                    else:
                        self._getters.append(waiter)
            finally:
                self._refresh()
                mutex.release()
            if got is not None:
                value, wake = got
                self._wake_list(wake)
                return value
            assert waiter is not None
            handle = None if deadline is None else loop.call_at(deadline, expire, waiter.fut)
            try:
                await waiter.fut
            except Expired:
                expired = True
                with self._guard:
                    if not waiter.notified:
                        self._getters.remove(waiter)  # frees nobody: no pass-on
                        raise TimeoutError(f"get timed out after {timeout} seconds") from None
            except BaseException:
                with self._guard:
                    wake = self._abandon(waiter, getter=True)
                self._wake_list(wake)
                raise
            finally:
                if handle is not None:
                    handle.cancel()

    async def _put_wait(self, batch: list[Any], timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: AsyncWaiter | None = None
        never: _NeverFits | None = None
        expired = timeout == 0
        mutex = self._mutex
        while True:
            # Explicit acquire/refresh/release: ``with self._guard`` costs a
            # Python-level __enter__/__exit__ pair on every wait.
            mutex.acquire()
            try:
                try:
                    wake = self._try_put(waiter, batch, expired)
                except _TimedOut:
                    raise TimeoutError(f"put timed out after {timeout} seconds") from None
                except _NeverFits as exc:
                    never, wake = exc, exc.wake  # woken below, with the mutex released
                if wake is None:
                    front = waiter is not None
                    waiter = AsyncWaiter(loop, len(batch), False)
                    if front:
                        self._putters.appendleft(waiter)
                    else:
                        self._putters.append(waiter)
            finally:
                self._refresh()
                mutex.release()
            if wake is not None:
                self._wake_list(wake)
                if never is not None:
                    raise ValueError(*never.args)
                return
            assert waiter is not None
            handle = None if deadline is None else loop.call_at(deadline, expire, waiter.fut)
            try:
                await waiter.fut
            except Expired:
                expired = True
                with self._guard:
                    wake = None if waiter.notified else self._abandon(waiter, getter=False)
                if wake is not None:
                    self._wake_list(wake)
                    raise TimeoutError(f"put timed out after {timeout} seconds") from None
            except BaseException:
                with self._guard:
                    wake = self._abandon(waiter, getter=False)
                self._wake_list(wake)
                raise
            finally:
                if handle is not None:
                    handle.cancel()

    # -- blocking forms for plain threads (used by SyncQueue) ----------------

    def _blocking(
        self,
        attempt: Callable[[Waiter | None, bool], Any],
        need: int,
        getter: bool,
        timeout: float | None,
        what: str,
    ) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter: SyncWaiter | None = None
        expired = timeout == 0
        waiters = self._getters if getter else self._putters
        mutex = self._mutex
        while True:
            mutex.acquire()
            try:
                got = attempt(waiter, expired)
                if got is None:
                    if waiter is None:
                        check_not_on_loop(what)
                    front = waiter is not None
                    waiter = SyncWaiter(need, getter)
                    if front:
                        waiters.appendleft(waiter)
                    else:
                        waiters.append(waiter)
            finally:
                self._refresh()
                mutex.release()
            if got is not None:
                return got
            assert waiter is not None
            try:
                while True:
                    if deadline is None:
                        woken = waiter.lock.acquire()
                        break
                    # Locks refuse waits beyond TIMEOUT_MAX: wait in slices.
                    remaining = max(0.0, deadline - time.monotonic())
                    woken = waiter.lock.acquire(True, min(remaining, threading.TIMEOUT_MAX))
                    if woken or remaining <= threading.TIMEOUT_MAX:
                        break
            except BaseException:
                with self._guard:
                    wake = self._abandon(waiter, getter)
                self._wake_list(wake)
                raise
            if not woken:
                expired = True
                gave_up: list[Waiter] | None = None
                with self._guard:
                    if not waiter.notified:
                        gave_up = self._abandon(waiter, getter)
                if gave_up is not None:
                    self._wake_list(gave_up)
                    raise _TimedOut

    def _get_blocking(
        self,
        block: bool,
        timeout: float | None,
        batch: int | None = None,
        reserve: bool = False,
    ) -> Any:
        if timeout is not None:
            timeout = check_timeout(timeout)
        if not block:
            timeout = 0
        try:
            value, wake = self._blocking(
                lambda prev, expired: self._try_get(prev, reserve, batch, expired),
                1,
                True,
                timeout,
                "a blocking get",
            )
        except _TimedOut:
            raise QueueEmpty(
                "queue is empty" if not timeout else f"get timed out after {timeout} seconds"
            ) from None
        self._wake_list(wake)
        return value

    def _put_blocking(self, batch: list[Any], block: bool, timeout: float | None) -> None:
        if timeout is not None:
            timeout = check_timeout(timeout)
        if not block:
            timeout = 0
        if self._maxsize and len(batch) > self._maxsize:
            raise ValueError(
                f"a batch of {len(batch)} items can never fit a queue of maxsize {self._maxsize}"
            )
        try:
            wake = self._blocking(
                lambda prev, expired: self._try_put(prev, batch, expired),
                len(batch),
                False,
                timeout,
                "a blocking put",
            )
        except _NeverFits as exc:
            self._wake_list(exc.wake)
            raise ValueError(*exc.args) from None
        except _TimedOut:
            raise QueueFull(
                f"queue is full (maxsize={self._maxsize})"
                if not timeout
                else f"put timed out after {timeout} seconds"
            ) from None
        self._wake_list(wake)

    def _join_blocking(self) -> None:
        with self._guard:
            if not self._unfinished:
                return
            check_not_on_loop("a blocking join")
            waiter = SyncWaiter(0, None)
            self._joiners.append(waiter)
        try:
            waiter.lock.acquire()
        finally:
            with self._guard:
                if waiter in self._joiners:
                    self._joiners.remove(waiter)

    # -- settling reserved items (called by MemoryJob) -------------------------

    def _settle(
        self, job: MemoryJob[T], ok: bool, delay: float | None, error: BaseException | None
    ) -> None:
        # Formatting a traceback takes no lock: done before taking it.
        info = ErrorInfo.of(error) if error is not None else None
        with self._guard:
            if job._settled:
                raise JobSettledError("this job was already acknowledged or given back")
            # After shutdown(immediate=True) nothing goes back into the queue:
            # an item given back joins the dead letters, where it can be
            # collected, instead of being stranded where no get can reach it.
            dead = not ok and (
                self._closed == _IMMEDIATE
                or (self._max_deliveries is not None and job.deliveries >= self._max_deliveries)
            )
            if (ok or dead) and self._unfinished < 1:
                raise ValueError(
                    "task_done() was already called for this item; settle a job "
                    "with ack()/nack() instead of task_done()"
                )
            job._settled = True
            if info is not None:
                job._error = info  # the last error: kept if it fails again without one
            info = job._error
            wake: list[Waiter] = []
            if ok or dead:
                self._in_flight -= 1
                if dead:
                    job._outcome = "dead"
                    self._dead.append(_dead_letter(job.item, job.deliveries, info))
                else:
                    job._outcome = "acked"
                wake = self._finish(1)
            elif delay:
                job._outcome = "retried"
                self._delayed[job] = (job.item, job.deliveries, info)
                # A timer of the queue's own, not the caller's loop: the item
                # must come back even if that loop has ended by then.
                timer = threading.Timer(delay, self._undelay, (job,))
                timer.daemon = True
                timer.start()
            else:
                job._outcome = "retried"
                self._in_flight -= 1
                w = self._give_back(job.item, job.deliveries, info)
                if w is not None:
                    wake = [w]
        self._wake_list(wake)

    def _undelay(self, key: MemoryJob[T]) -> None:
        with self._guard:
            entry = self._delayed.pop(key, None)
            if entry is None:  # taken by shutdown(immediate=True) meanwhile
                return
            self._in_flight -= 1
            w = self._give_back(*entry)
        if w is not None:
            self._wake(w)


def _dead_letter(item: Any, deliveries: int, error: ErrorInfo | None) -> DeadLetter[Any]:
    if error is None:
        return DeadLetter(item, deliveries, time.time(), "failed")
    return DeadLetter(
        item, deliveries, time.time(), "failed", error.type, error.message, error.traceback
    )


_NO_WAITER: Any = object()
_NO_WAKE: list[Waiter] = []  # shared, never mutated: "nobody to wake"
_HUGE = sys.maxsize


class _Guard:
    """``with queue._guard:`` holds the mutex and refreshes the fast-path
    thresholds on the way out, so no slow path can forget to."""

    __slots__ = ("_queue",)

    def __init__(self, queue: Queue[Any]) -> None:
        self._queue = queue

    def __enter__(self) -> None:
        self._queue._mutex.acquire()

    def __exit__(self, *exc: object) -> None:
        q = self._queue
        try:
            q._refresh()
        finally:
            q._mutex.release()


class _Stack(deque[Any]):
    """LIFO store: its "left" end, where gets take from, is the top."""

    __slots__ = ()
    popleft = deque.pop
    appendleft = deque.append


class _Heap(list[Any]):
    """Priority store: a binary heap, lowest item first.

    Its own sift loops compare before they move anything and undo their moves
    if a comparison raises (items that cannot be ordered, such as ``(1, {})``
    against ``(1, {})``): the queue is left as it was, and the error reaches
    the caller. ``heapq`` would leave the heap changed.
    """

    __slots__ = ()

    def append(self, item: Any) -> None:
        list.append(self, item)
        pos = len(self) - 1
        path = [pos]
        try:
            while pos > 0:
                parent = (pos - 1) >> 1
                if item < self[parent]:
                    self[pos] = self[parent]
                    pos = parent
                    path.append(pos)
                else:
                    break
        except BaseException:
            # Each move copied self[path[i+1]] down to path[i]; undo from the
            # top of the path, then drop the new slot.
            for i in range(len(path) - 2, 0, -1):
                self[path[i]] = self[path[i - 1]]
            list.pop(self)
            raise
        self[pos] = item

    def popleft(self) -> Any:
        last = list.pop(self)
        if not self:
            return last
        top = self[0]
        n = len(self)
        pos = 0
        path = [0]
        try:
            while True:
                child = 2 * pos + 1
                if child >= n:
                    break
                right = child + 1
                if right < n and not self[child] < self[right]:
                    child = right
                if self[child] < last:
                    self[pos] = self[child]
                    pos = child
                    path.append(pos)
                else:
                    break
        except BaseException:
            # Each move copied self[path[k+1]] up to path[k]; undo from the
            # bottom, then put the top and the last item back.
            for k in range(len(path) - 1, 0, -1):
                self[path[k]] = self[path[k - 1]]
            self[0] = top
            list.append(self, last)
            raise
        self[pos] = last
        return top

    appendleft = append


class LifoQueue(Queue[T]):
    """A last-in, first-out queue; a failed reservation's item goes back on top."""

    __slots__ = ()

    def _init_store(self) -> None:
        self._items = _Stack()


class PriorityQueue(Queue[T]):
    """Lowest item first (``heapq`` order); typical items are ``(priority, data)``.

    An item given back by a failed reservation takes its place by priority.
    """

    __slots__ = ()

    def _init_store(self) -> None:
        self._items = _Heap()


class MemoryJob(JobBase[T]):
    """An item handed out by ``reserve()``; settle it with ack() or nack()."""

    __slots__ = ("_error", "_queue")

    def __init__(
        self, queue: Queue[T], item: T, deliveries: int, error: ErrorInfo | None = None
    ) -> None:
        super().__init__(item, deliveries)
        self._queue = queue
        self._error = error  # the error of the item's last failed delivery

    def ack(self) -> None:
        """The item is done: it counts as ``task_done()`` for ``join()``."""
        self._queue._settle(self, True, None, None)

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        """Give the item back (after ``delay`` seconds), or dead-letter it.

        It goes to the front of the queue unless it has been delivered
        ``max_deliveries`` times, in which case it joins the dead letters.
        ``error`` (the exception it failed with) is kept with the item and
        shown by ``dead_letters()`` if it dies.
        """
        if delay is not None:
            delay = check_delay(delay)
        self._queue._settle(self, False, delay, error)


class Reservation(ReservationBase[T]):
    """``async with queue.reserve() as job`` (or ``job = await queue.reserve()``)."""

    __slots__ = ()
    _queue: Queue[T]

    def __await__(self) -> Any:
        return self._queue._get_wait(self._timeout, reserve=True).__await__()

    async def __aenter__(self) -> MemoryJob[T]:
        job: MemoryJob[T] = await self._queue._get_wait(self._timeout, reserve=True)
        self._job = job
        return job


class SyncReservation(SyncReservationBase[T]):
    """``with queue.sync.reserve() as job`` for plain threads."""

    __slots__ = ()
    _queue: Queue[T]

    def __enter__(self) -> MemoryJob[T]:
        job: MemoryJob[T] = self._queue._get_blocking(self._block, self._timeout, reserve=True)
        self._job = job
        return job


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

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item``; ``QueueFull`` if not done within ``timeout`` (not enqueued)."""
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
                    return
                wake = q._claim_getter()
                if wake is None:
                    return
            else:
                wake = _NO_WAITER
        finally:
            mutex.release()
        if wake is _NO_WAITER:
            q._put_blocking([item], block, timeout)
        else:
            q._wake(wake)

    def put_nowait(self, item: T) -> None:
        self._q.put_nowait(item)

    def put_batch(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        """Put all ``items`` at once, or none (``QueueFull`` on timeout)."""
        self._q._put_blocking(list(items), block, timeout)

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
                w = _NO_WAITER
        finally:
            mutex.release()
        if w is _NO_WAITER:
            return q._get_blocking(block, timeout)  # type: ignore[no-any-return]
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
            block, timeout, batch=max_items
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
