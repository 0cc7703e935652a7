"""The memory queue's state and how items and promises move, mutex held.

``QueueState`` holds the fields every part reads (one object, one mutex) and
the moves made under that mutex: store and take items, *claim* (notify) the
first waiter whom a change lets through, take a promise back from a waiter
that gave up, settle a reserved item. The wait loops (``waits.py``) and the
public face (``queue.py``) are built on it as subclasses, not as objects of
their own: the fast paths read these fields straight from ``self``, and an
extra object hop on each of them is measurable.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._contract import DeadLetter, ErrorInfo, check_max_deliveries, check_maxsize
from .._exceptions import JobSettledError, QueueShutDown
from .._waiters import GET, JOIN, Waiter, WaitKind
from . import alarms
from .job import MemoryJob
from .stores import Ranked, Returned

if TYPE_CHECKING:
    from .sync import SyncQueue

__all__ = [
    "HUGE",
    "IMMEDIATE",
    "NO_WAITER",
    "NO_WAKE",
    "OPEN",
    "SHUTDOWN",
    "KeyTaken",
    "NeverFits",
    "QueueState",
    "Refused",
    "TimedOut",
]

T = TypeVar("T")

# The queue's state: open, shut down (gets drain what is left), or shut down
# at once (stored items removed, gets raise).
OPEN, SHUTDOWN, IMMEDIATE = 0, 1, 2

NO_WAITER: Any = object()  # the fast path did not apply: take the general one
NO_WAKE: list[Waiter] = []  # shared, never mutated: "nobody to wake"
HUGE = sys.maxsize


class TimedOut(Exception):
    """Internal: the caller's deadline passed while nothing was possible."""


class NeverFits(ValueError):
    """Internal: a waiting batch is larger than the bound lowered meanwhile;
    ``wake``: the putters behind it that the room it gives up lets in."""

    def __init__(self, message: str, wake: list[Waiter]) -> None:
        super().__init__(message)
        self.wake = wake


class Refused(Exception):
    """Internal: the store refused an item of a put (``error``, for the
    caller); ``wake``: the putters that the room it gives up lets in."""

    def __init__(self, error: Exception, wake: list[Waiter]) -> None:
        super().__init__()
        self.error = error
        self.wake = wake


class KeyTaken(Exception):
    """Internal: a keyed put found its key in the queue and stored nothing;
    ``wake``: the putters behind it that the room it gives up lets in."""

    def __init__(self, wake: list[Waiter]) -> None:
        super().__init__()
        self.wake = wake


#: A memory put's options, checked: (delay or None, priority, key or None).
PutOptions = tuple[float | None, int, str | None]


class QueueState(Generic[T]):
    """The fields of a memory queue and the moves made on them, mutex held."""

    # "__dict__": queues take attributes as the stdlib's do (tests set
    # ``q.Empty = ...``, ``mock.patch.object(q, "get")``). The fields below
    # stay slots, so the hot paths read them as fast as before.
    __slots__ = (
        "__dict__",
        "__weakref__",
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
        "_keys",
        "_max_deliveries",
        "_maxsize",
        "_mutex",
        "_n_removed",
        "_n_returns",
        "_n_scheduled",
        "_nreturned",
        "_peak",
        "_put_ceiling",
        "_put_promised",
        "_putters",
        "_scheduled",
        "_state",
        "_sync",
        "_unfinished",
    )

    def __init__(self, maxsize: int = 0, *, max_deliveries: int | None = None) -> None:
        self._maxsize = check_maxsize(maxsize)
        self._max_deliveries = check_max_deliveries(max_deliveries)
        self._mutex = threading.Lock()
        self._guard = Guard(self)
        self._init_store()
        self._getters: deque[Waiter] = deque()
        self._putters: deque[Waiter] = deque()
        self._joiners: list[Waiter] = []
        self._get_promised = 0
        # Room that is not free though no item is stored in it: promised to
        # notified putters, or held by scheduled items (``_n_scheduled``).
        self._put_promised = 0
        self._unfinished = 0
        self._done = 0
        self._nreturned = 0
        self._n_returns = 0
        self._n_removed = 0
        self._in_flight = 0
        # Items put with a delay, until an alarm stores them (by batch; they
        # count toward the bound from the put on), and the keys of the items
        # in the queue (stored, scheduled or reserved).
        self._scheduled: dict[object, list[Any]] = {}
        self._n_scheduled = 0
        self._keys: set[str] = set()
        # The peak is recorded when items leave (a size's local maximum is
        # always followed by a removal, or is the size now): a put that
        # grows the queue pays nothing for it, which is measurable.
        self._peak = 0
        self._state = OPEN
        self._get_floor = 0
        self._put_ceiling = 0
        self._refresh()
        self._dead: list[DeadLetter[T]] = []
        # Items nacked with a delay, until their alarm gives them back.
        self._delayed: dict[object, Returned] = {}
        self._sync: SyncQueue[T] | None = None

    # -- storage hooks (overridden by LifoQueue and PriorityQueue) -----------

    def _init_store(self) -> None:
        # Every store answers append (put), popleft (next to get) and
        # appendleft (give back in front). The hot paths call them directly
        # on ``self._items``: a method call on a C type is cheaper than one
        # through a stored bound method, and that is measurable here.
        self._items: Any = deque()

    # -- internals, all called with the mutex held unless said otherwise ------

    def _refresh(self) -> None:
        """Recompute the fast paths' thresholds after any change of state."""
        closed = self._state
        # The general path while wrapped items are stored (it unwraps them)
        # or scheduled ones wait (it counts them in the peak size).
        wrapped = self._nreturned or self._n_scheduled
        self._get_floor = HUGE if closed or wrapped else self._get_promised
        maxsize = self._maxsize
        if closed or (maxsize and self._putters):
            self._put_ceiling = -1
        elif maxsize:
            self._put_ceiling = maxsize - self._put_promised
        else:
            self._put_ceiling = HUGE

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
        # Heaps are restored from a copy; deques drop what was appended.
        snapshot = list(items) if not isinstance(items, deque) and len(batch) > 1 else None
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

    def _store_with(
        self, batch: list[Any], delay: float | None, priority: int, key: str | None
    ) -> list[Waiter]:
        """Store ``batch`` (room checked) as ``put(delay=, priority=, key=)``
        asked: wrapped if it carries a key or a priority, scheduled if delayed."""
        if key is not None or priority:
            batch = [Returned(x, 0, None, key, priority) for x in batch]
        if delay is not None:
            token = object()
            # First: if the alarm cannot be set, nothing has changed yet.
            alarms.call_later(delay, _come_due, weakref.ref(self), token)
            self._scheduled[token] = batch
            self._n_scheduled += len(batch)
            self._put_promised += len(batch)  # the room it holds until due
            wake = NO_WAKE
            self._unfinished += len(batch)
        else:
            self._push_into_store(batch)
            wake = self._stored(len(batch))
        if key is not None:
            self._keys.add(key)
        return wake

    def _push_into_store(self, batch: list[Any]) -> None:
        """Push items that may be wrapped (counted: gets take them on the
        general path), ranking a FIFO at its first priority."""
        wrapped = 0
        for x in batch:
            if type(x) is Returned:
                wrapped += 1
                if x.priority and type(self._items) is deque:
                    self._items = Ranked.of(self._items)
        self._push_all(batch)
        self._nreturned += wrapped

    def _come_due(self, token: object) -> None:
        """A delayed put's time has come: store its items, feed the getters."""
        with self._guard:
            batch = self._scheduled.pop(token, None)
            if batch is None:  # removed by shutdown(immediate=True) meanwhile
                return
            self._n_scheduled -= len(batch)
            self._put_promised -= len(batch)
            try:
                self._push_into_store(batch)
            except Exception as exc:
                # A priority queue's item that cannot be ordered against
                # those stored: nobody waits on the put any more to be told,
                # so it goes to the dead letters, with why (never dropped).
                info = ErrorInfo.of(exc)
                for x in batch:
                    if type(x) is Returned and x.key is not None:
                        self._keys.discard(x.key)
                    item = x.item if type(x) is Returned else x
                    self._dead.append(dead_letter(item, 0, info))
                self._n_removed += len(batch)  # counted in the size, never got
                wake = self._finish(len(batch))
                if self._putters:  # the room it held is free
                    wake += self._claim_putters()
            else:
                self._unfinished -= len(batch)  # counted at the put already
                wake = self._stored(len(batch))
        self._wake_list(wake)

    def _claim_getter(self) -> Waiter | None:
        if len(self._items) > self._get_promised:
            w = self._getters.popleft()
            w.notified = True
            self._get_promised += 1
            # Only the get floor depends on what changed (a full _refresh()
            # is measurable here: this runs once per wake-up).
            if not self._state and not self._nreturned and not self._n_scheduled:
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
                if self._state or putters
                else (maxsize - self._put_promised if maxsize else HUGE)
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

    def _release_all(self, waiters: deque[Waiter], kind: WaitKind) -> list[Waiter]:
        """Notify every waiter of ``kind`` (shutdown: they all find it closed)."""
        out = list(waiters)
        waiters.clear()
        for w in out:
            w.notified = True
            if kind is GET:
                self._get_promised += 1
            else:
                self._put_promised += w.need
        return out

    def _take(self, *, reserve: bool, batch: int | None) -> tuple[Any, list[Waiter]]:
        """Pop one item (or up to ``batch``); claim putters for the room made."""
        items = self._items
        if len(items) + self._n_scheduled > self._peak:
            self._peak = len(items) + self._n_scheduled
        pop = items.popleft
        out: list[Any] = []
        deliveries = 0
        error = None
        key = None
        priority = 0
        max_items = 1 if batch is None else batch
        while items and len(out) < max_items:
            try:
                x = pop()
            except Exception:
                if not out:
                    raise  # the store is unchanged: nothing was taken
                break  # deliver what was taken; the next get meets the error

            if type(x) is Returned:
                self._nreturned -= 1
                deliveries = x.deliveries
                error = x.error
                key = x.key
                priority = x.priority
                if key is not None and not reserve:
                    self._keys.discard(key)  # taken for good: the key is free
                x = x.item
            out.append(x)
        value: Any
        if reserve:
            self._in_flight += 1
            value = MemoryJob(self, out[0], deliveries + 1, error, key, priority)
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

    def _give_back(self, returned: Returned) -> list[Waiter]:
        """Return a reserved item to the store (front by the queue's order).

        One the store cannot order (a ``PriorityQueue`` item that no longer
        compares with those stored) goes to the dead letters with that
        error, rather than being lost: it is settled, nobody is left to tell.
        """
        try:
            self._items.appendleft(returned)
        except Exception as exc:
            if returned.key is not None:
                self._keys.discard(returned.key)
            self._dead.append(dead_letter(returned.item, returned.deliveries, ErrorInfo.of(exc)))
            return self._finish(1)
        self._nreturned += 1
        self._n_returns += 1
        if self._getters:
            w = self._claim_getter()
            return [w] if w is not None else []
        return []

    def _try_get(
        self, prev: Waiter | None, *, reserve: bool, batch: int | None, expired: bool
    ) -> tuple[Any, list[Waiter]] | None:
        """One attempt of a blocking get; None means: enqueue a waiter and sleep."""
        if prev is not None and prev.notified:
            self._get_promised -= 1
            prev.notified = False
        closed = self._state
        if closed == IMMEDIATE:
            raise QueueShutDown()
        # Items promised to notified waiters are theirs; once shut down
        # nobody waits any more, so whoever comes takes what is left.
        items = self._items
        n = len(items)
        if n > self._get_promised or (closed and n):
            if batch is None and not reserve and not self._nreturned:
                # The common case, kept short: one plain item.
                if n + self._n_scheduled > self._peak:
                    self._peak = n + self._n_scheduled
                return items.popleft(), (self._claim_putters() if self._putters else NO_WAKE)
            if batch is not None and not closed:
                batch = min(batch, n - self._get_promised)  # leave the promised items
            return self._take(reserve=reserve, batch=batch)
        if closed:
            raise QueueShutDown()
        if expired:
            raise TimedOut
        return None

    def _try_put(
        self,
        prev: Waiter | None,
        batch: list[Any],
        *,
        expired: bool,
        options: PutOptions | None = None,
    ) -> list[Waiter] | None:
        """One attempt of a blocking put; None means: enqueue a waiter and
        sleep. Raises ``KeyTaken`` if its key is in the queue (nothing stored)."""
        if prev is not None and prev.notified:
            self._put_promised -= prev.need
            prev.notified = False
        if self._state:
            if len(batch) == 1:
                raise QueueShutDown(item=batch[0])
            raise QueueShutDown(items=batch)
        if not batch:
            return []  # an empty batch needs no room, even over a lowered bound
        if options is not None and options[2] in self._keys:
            # Answered before any wait for room: the key's item is in the
            # queue. A putter woken for room passes that room on.
            raise KeyTaken(self._claim_putters() if prev is not None and self._putters else [])
        maxsize = self._maxsize
        # Room promised to notified putters is theirs, and a newcomer queues
        # behind the putters already waiting: one fair order.
        room = maxsize - len(self._items) - self._put_promised
        if not maxsize or (len(batch) <= room and (prev is not None or not self._putters)):
            try:
                if options is not None:
                    return self._store_with(batch, *options)
                self._push_all(batch)
            except Exception as exc:
                # The store refused an item (a priority it cannot order):
                # nothing stored, and the room this putter was promised
                # goes to those behind it.
                raise Refused(exc, self._claim_putters() if self._putters else []) from None
            return self._stored(len(batch))
        if len(batch) > maxsize:  # the bound was lowered while it waited
            raise NeverFits(
                f"a batch of {len(batch)} items can never fit a queue of maxsize {maxsize}",
                self._claim_putters() if self._putters else [],
            )
        if expired:
            raise TimedOut
        return None

    def _abandon(self, waiter: Waiter) -> list[Waiter]:
        """A getter or putter gives up (cancelled, timed out, interrupted).

        If it was already notified, pass the notification on so that the
        item (or the room) it was promised is not stranded.
        """
        getter = waiter.kind is GET
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
        if w.kind is JOIN:  # nothing was promised to a joiner
            return
        with self._guard:
            wake = self._abandon(w)
        self._wake_list(wake)

    # -- settling reserved items (called by MemoryJob) -------------------------

    def _settle(
        self,
        job: MemoryJob[T],
        *,
        ok: bool,
        delay: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Acknowledge (``ok``) or give back one reserved item; a given-back
        item waits ``delay`` seconds first, or dies after max_deliveries."""
        # Formatting a traceback takes no lock: done before taking it.
        info = ErrorInfo.of(error) if error is not None else None
        with self._guard:
            if job._settled:
                raise JobSettledError("this job was already acknowledged or given back")
            # After shutdown(immediate=True) nothing goes back into the queue:
            # an item given back joins the dead letters, where it can be
            # collected, instead of being stranded where no get can reach it.
            dead = not ok and (
                self._state == IMMEDIATE
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
                if job._key is not None:
                    self._keys.discard(job._key)
                if dead:
                    job._outcome = "dead"
                    self._dead.append(dead_letter(job.item, job.deliveries, info))
                else:
                    job._outcome = "acked"
                wake = self._finish(1)
            elif delay:
                job._outcome = "retried"
                token = object()
                # The process's alarm thread, not the caller's loop: the item
                # must come back even if that loop has ended by then.
                alarms.call_later(delay, _undelay, weakref.ref(self), token)
                self._delayed[token] = job._returned(info)
            else:
                job._outcome = "retried"
                self._in_flight -= 1
                wake = self._give_back(job._returned(info))
        self._wake_list(wake)

    def _undelay(self, token: object) -> None:
        with self._guard:
            entry = self._delayed.pop(token, None)
            if entry is None:  # taken by shutdown(immediate=True) meanwhile
                return
            self._in_flight -= 1
            wake = self._give_back(entry)
        self._wake_list(wake)


# The alarm thread holds a queue only weakly: a queue nobody uses any more
# is not kept alive by an item it would have handed out in a day.


def _come_due(ref: weakref.ref[QueueState[Any]], token: object) -> None:
    queue = ref()
    if queue is not None:
        queue._come_due(token)


def _undelay(ref: weakref.ref[QueueState[Any]], token: object) -> None:
    queue = ref()
    if queue is not None:
        queue._undelay(token)


def dead_letter(item: Any, deliveries: int, error: ErrorInfo | None) -> DeadLetter[Any]:
    if error is None:
        return DeadLetter(item, deliveries, time.time(), "failed")
    return DeadLetter(
        item, deliveries, time.time(), "failed", error.type, error.message, error.traceback
    )


class Guard:
    """``with queue._guard:`` holds the mutex and refreshes the fast-path
    thresholds on the way out, so no slow path can forget to."""

    __slots__ = ("_queue",)

    def __init__(self, queue: QueueState[Any]) -> None:
        self._queue = queue

    def __enter__(self) -> None:
        self._queue._mutex.acquire()

    def __exit__(self, *exc: object) -> None:
        q = self._queue
        try:
            q._refresh()
        finally:
            q._mutex.release()
