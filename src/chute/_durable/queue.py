"""One durable queue over any backend: what every stored queue does alike.

Argument checks, codecs, the async face and ``q.sync`` (one set of steps,
two drivers: see ``steps.py``), deadlines and wake-ups, cancellation that
completes or leaves the queue unchanged, decode-and-bury, statistics,
iteration and ``join`` live here, once; the dead-letter calls in
``dead_letters.py`` (a base of the queue). A transport is a backend
(``_backends/``) plus a few lines that build it.

Every blocking wait follows one pattern: look (one backend call); if the
answer is "not now", get in line in the backend's hub and look once more
(a change may have come between the look and getting in line); then sleep
until rung, the deadline, the moment a lease or delay runs out, or the
backend's poll interval, and look again, keeping one's place in line.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .._codecs import Codec, encode_item, get_codec, undecodable
from .._contract import (
    UNSET,
    ErrorInfo,
    QueueStatistics,
    Unset,
    check_max_deliveries,
    check_max_items,
    check_maxsize,
    check_put_options,
    check_timeout,
)
from .._exceptions import ChuteError, QueueEmpty, QueueFull, QueueShutDown
from .._waiters import check_not_on_loop
from .backend import (
    DUPLICATE,
    PLAIN,
    Backend,
    Claimed,
    Counts,
    PutOptions,
    QueueState,
    Record,
    Unreachable,
)
from .dead_letters import DeadLetterMixin
from .job import DurableJob, DurableReservation
from .steps import Run, Sleep, Steps, drive, drive_blocking
from .waiting import Wait, Waiter

if TYPE_CHECKING:
    from .sync import DurableSyncQueue

__all__ = ["DurableQueue"]

T = TypeVar("T")

#: The longest a get waits on the store in one go (a backend with
#: ``blocking_wait``): then it looks again, for leases that ran out and for
#: a shutdown made elsewhere.
BLOCK_SLICE = 0.25


def check_visibility(visibility_timeout: object) -> float:
    vt = check_timeout(visibility_timeout)
    if vt is None or vt <= 0:
        raise ValueError(
            f"visibility_timeout must be a finite number of seconds > 0, not {visibility_timeout!r}"
        )
    return vt


def stored_bounds(maxsize: int | Unset | None, max_deliveries: object) -> dict[str, Any]:
    """The bounds passed, checked, as ``configure`` takes them (UNSET: keep)."""
    return {
        "maxsize": UNSET if maxsize is None or maxsize is UNSET else check_maxsize(maxsize),
        "max_deliveries": (
            UNSET if max_deliveries is UNSET else check_max_deliveries(max_deliveries)
        ),
    }


def checked_opening(
    name: object,
    maxsize: int | Unset | None,
    max_deliveries: object,
    codec: object,
    visibility_timeout: object,
) -> dict[str, Any]:
    """A stored queue's arguments, checked before the store is touched
    (wrong arguments open no file and connect to nothing): its bounds, as
    the backend takes them."""
    if not isinstance(name, str) or not name:
        raise ValueError("a queue name must be a non-empty string")
    bounds = stored_bounds(maxsize, max_deliveries)
    check_visibility(visibility_timeout)
    get_codec(codec)
    return bounds


def _shut(items: list[Any], single: bool) -> QueueShutDown:
    return QueueShutDown(item=items[0]) if single else QueueShutDown(items=items)


class DurableQueue(DeadLetterMixin[T]):
    """A named queue in a store; made by ``chute.open(url, name)``.

    The contract of ``chute.Queue``, durable: an item is stored when
    ``put()`` returns. The synchronous calls (``qsize()``, ``statistics()``,
    the ``nowait`` forms, ``task_done()``, ``ack()``) make one round trip to
    the store and wait for it; on an event loop, prefer their async forms
    (``aqsize()``, ``astatistics()``, ``aack()``...).
    """

    def __init__(
        self, backend: Backend, *, codec: object = "json", visibility_timeout: float = 30.0
    ) -> None:
        self._backend = backend
        self._hub = backend.hub
        self._name = backend.name
        self._codec: Codec = get_codec(codec)
        self._visibility = check_visibility(visibility_timeout)
        self._closed = False
        self._getters = 0
        self._putters = 0
        self._face: DurableSyncQueue[T] | None = None
        #: What undoes a store or a claim whose caller was cancelled.
        self._undo_store = _take_back(backend)
        self._undo_claim = {lease: _give_back(backend, leased=lease) for lease in (False, True)}

    # -- lifecycle ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def closed(self) -> bool:
        """True once ``close()`` or ``aclose()`` was called."""
        return self._closed

    @property
    def visibility_timeout(self) -> float:
        """Seconds a reservation's lease lasts (``job.extend()`` renews it)."""
        return self._visibility

    def close(self) -> None:
        """Let go of the store (the items stay in it). Idempotent."""
        if not self._closed:
            self._closed = True
            self._backend.close()

    async def aclose(self) -> None:
        """Close without blocking the loop."""
        if not self._closed:
            self._closed = True
            await self._backend.aclose()

    async def __aenter__(self) -> DurableQueue[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<chute.{type(self).__name__} {self._name!r} in {self._backend.where!r}>"

    def _check_open(self) -> None:
        if self._closed:
            raise ChuteError(f"queue {self._name!r} was closed in this process")

    # -- counts --------------------------------------------------------------------

    def _counts(self, *, oldest: bool = False) -> Counts:
        self._check_open()
        return self._backend.run_sync(self._backend.counts(oldest=oldest))

    async def _acounts(self, *, oldest: bool = False) -> Counts:
        self._check_open()
        return await self._backend.run(self._backend.counts(oldest=oldest))

    @property
    def maxsize(self) -> int:
        """The bound stored with the queue (0: unbounded), as every client
        sees it now. Assigning it is ``configure(maxsize=...)``."""
        return self._counts().maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.configure(maxsize=value)

    @property
    def unfinished_tasks(self) -> int:
        """Items put (by any client) and not yet marked done: what ``join()`` waits on."""
        return self._counts().unfinished

    @property
    def is_shutdown(self) -> bool:
        return self._counts().state is not QueueState.OPEN

    def qsize(self) -> int:
        """Items stored and claimable now (not those out on a lease or a delay)."""
        return self._counts().ready

    async def aqsize(self) -> int:
        """``qsize()`` without blocking the loop."""
        return (await self._acounts()).ready

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        c = self._counts()
        return 0 < c.maxsize <= c.ready

    def statistics(self) -> QueueStatistics:
        """Counts from the store (getters and putters waiting: in this
        process), and how long the oldest ready item has waited."""
        return self._statistics(self._counts(oldest=True))

    async def astatistics(self) -> QueueStatistics:
        """``statistics()`` without blocking the loop."""
        return self._statistics(await self._acounts(oldest=True))

    def _statistics(self, c: Counts) -> QueueStatistics:
        return QueueStatistics(
            size=c.ready,
            maxsize=c.maxsize,
            getters_waiting=self._getters,
            putters_waiting=self._putters,
            in_flight=c.in_flight,
            total_put=c.total_put,
            total_got=c.total_got,
            peak_size=c.peak,
            dead_lettered=c.dead,
            unfinished_tasks=c.unfinished,
            shutdown=c.state is not QueueState.OPEN,
            delayed=c.delayed,
            scheduled=c.scheduled,
            oldest_ready_age=c.oldest_ready_age,
        )

    def configure(
        self, *, maxsize: int | Unset = UNSET, max_deliveries: int | Unset | None = UNSET
    ) -> None:
        """Change the queue's stored bounds, for every client (``max_deliveries=None``:
        no limit). A larger ``maxsize`` lets putters waiting here in at once,
        elsewhere on their next look; a smaller one keeps the items."""
        bounds = stored_bounds(maxsize, max_deliveries)
        self._check_open()
        if bounds["maxsize"] is not UNSET or bounds["max_deliveries"] is not UNSET:
            self._backend.run_sync(self._backend.configure(**bounds))

    # -- put -------------------------------------------------------------------------

    def _records(self, items: Iterable[T]) -> tuple[list[T], list[bytes]]:
        """A batch and its records, checked: every item encodable, or none stored."""
        self._check_open()
        batch = list(items)
        return batch, [encode_item(self._codec, item) for item in batch]

    def _storing(
        self,
        items: Iterable[T],
        timeout: float | None,
        options: PutOptions,
        *,
        single: bool,
        block: bool,
        in_thread: bool,
    ) -> Steps[bool]:
        """A put's steps, for every face: its items encoded first (one that
        cannot be: nothing stored), then stored as ``options`` say."""
        batch, records = self._records(items)
        return self._put_steps(
            records,
            batch,
            timeout,
            single=single,
            block=block,
            in_thread=in_thread,
            options=options,
        )

    def _options(self, delay: object, priority: object, key: object) -> PutOptions:
        """``put(delay=, priority=, key=)`` checked, and refused where the
        transport cannot keep them (never emulated)."""
        if delay is None and key is None and type(priority) is int and priority == 0:
            return PLAIN
        delay, priority, key = check_put_options(delay, priority, key)
        caps = self._backend.capabilities
        for asked, able, what in (
            (delay is not None, caps.delayed_puts, "put(delay=)"),
            (priority != 0, caps.prioritised_puts, "put(priority=)"),
            (key is not None, caps.keyed_puts, "put(key=)"),
        ):
            if asked and not able:
                raise ValueError(f"{type(self).__name__} cannot keep {what}: not stored")
        return PutOptions(delay, priority, key)

    def _put_steps(
        self,
        records: list[bytes],
        items: list[T],
        timeout: float | None,
        *,
        single: bool,
        block: bool,
        in_thread: bool,
        options: PutOptions = PLAIN,
    ) -> Steps[bool]:
        """Store; False if the key was in the queue already, or the schedule's
        slot was put already (nothing stored)."""
        backend = self._backend
        if timeout is not None:
            timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not records:
            # Nothing to store, but a put after shutdown is refused all the
            # same (as by every transport): one look at the state.
            counts: Counts = yield Run(backend.counts())
            if counts.state is not QueueState.OPEN:
                raise _shut(items, single)
            return True
        store = backend.store(records, options)
        waiter: Waiter | None = None
        try:
            while True:
                self._check_open()
                try:
                    # Cancelled after it stored: taken back before the
                    # cancellation goes on (the queue left unchanged). Not
                    # a schedule's slot: its mark moved with it, and the
                    # slot would be lost; that put completes instead.
                    undo = None if options.mark else self._undo_store
                    receipt = yield Run(store, undo)
                except QueueShutDown:
                    raise _shut(items, single) from None
                if receipt is DUPLICATE:
                    return False
                if receipt is not None:
                    return True
                if not block:
                    raise QueueFull()
                if deadline is not None and time.monotonic() >= deadline:
                    raise QueueFull() if in_thread else TimeoutError("timed out")
                if waiter is None:
                    if in_thread:
                        check_not_on_loop("a blocking put")
                    self._putters += 1
                    waiter = self._hub.add(Wait.PUT, in_thread=in_thread)
                    continue  # look once more now that a change would ring us
                if (subscribe := self._backend.subscribe()) is not None:
                    yield Run(subscribe)
                    continue  # look again: what changed before it rang no one here
                yield Sleep(waiter, self._delay(deadline, None))
                self._hub.rearm(waiter)
        finally:
            if waiter is not None:
                self._putters -= 1
                self._hub.remove(waiter)

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

    async def put(
        self,
        item: T,
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
        key: str | None = None,
    ) -> bool | None:
        """Store ``item``, waiting while full; ``TimeoutError`` after ``timeout``
        seconds, the item not stored. Cancelled, it either completed or
        stored nothing.

        ``delay``: no get takes it for that many seconds (it counts toward
        ``maxsize`` meanwhile). ``priority``: lower numbers are taken first,
        equal ones in the order they were put. ``key``: while an item put
        with that key is in the queue (waiting, delayed or out on a lease),
        another put with it stores nothing and returns False (with a key,
        True when stored): a put that is safe to retry."""
        options = self._options(delay, priority, key)
        steps = self._storing((item,), timeout, options, single=True, block=True, in_thread=False)
        stored = await drive(self._backend, steps)
        return stored if key is not None else None

    async def _put_slot(self, item: T, *, schedule: str, slot: float, delay: float) -> bool:
        """Put ``item`` as ``schedule``'s slot at ``slot`` (Unix time), due
        ``delay`` seconds from now; False if that slot was put already (by
        any scheduler). See ``chute._schedules``."""
        options = PutOptions(
            delay=delay if delay > 0 else None, mark=(schedule, round(slot * 1000))
        )
        steps = self._storing((item,), None, options, single=True, block=True, in_thread=False)
        return await drive(self._backend, steps)

    async def put_batch(
        self,
        items: Iterable[T],
        timeout: float | None = None,
        *,
        delay: float | None = None,
        priority: int = 0,
    ) -> None:
        """Store all ``items`` at once, or none of them (each with ``delay``
        and ``priority`` as for ``put``)."""
        options = self._options(delay, priority, None)
        steps = self._storing(items, timeout, options, single=False, block=True, in_thread=False)
        await drive(self._backend, steps)

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
        """Store ``item`` now or raise ``QueueFull`` (one round trip, waited for)."""
        return self.sync.put(item, block=False, delay=delay, priority=priority, key=key)

    # -- get -------------------------------------------------------------------------

    def _delay(
        self, deadline: float | None, due: float | None, *, poll: bool = True, getter: bool = False
    ) -> float | None:
        """How long to sleep: until the deadline (monotonic), the moment a
        lease or delay runs out (``due``, wall clock), or (``poll``) the
        backend's next poll (a getter's: ``idle_poll_interval``)."""
        delay = None if deadline is None else max(0.0, deadline - time.monotonic())
        if due is not None:
            until_due = max(0.0, due - time.time())
            delay = until_due if delay is None else min(delay, until_due)
        backend = self._backend
        interval = backend.idle_poll_interval if getter else backend.poll_interval
        if not poll:
            interval = None
        if interval is not None:
            delay = interval if delay is None else min(delay, interval)
        return delay

    def _getter_sleep(self, waiter: Waiter, deadline: float | None) -> Steps[None]:
        """A getter's sleep: until rung, its deadline, its next look, or
        the moment a lease or delay runs out (``waiter.due``: from its look,
        or from one that left meanwhile: ``Hub.hold``)."""
        yield Sleep(waiter, self._delay(deadline, waiter.due, getter=True))
        while self._hub.hold(waiter):
            yield Sleep(waiter, self._delay(deadline, waiter.due, getter=True))

    def _take_steps(
        self,
        max_items: int,
        timeout: float | None,
        *,
        lease: bool,
        block: bool,
        in_thread: bool,
    ) -> Steps[list[Record]]:
        backend = self._backend
        if timeout is not None:
            timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        on_store = backend.capabilities.blocking_wait
        vt = self._visibility if lease else None
        give_back = self._undo_claim[lease]
        waiter: Waiter | None = None
        counted = False
        claimed: Claimed | None = None
        timer = False  # this getter is (also) the one to wake when a lease or delay runs out
        wait = 0.0
        try:
            if block and on_store and backend.looked_lately():
                # Nothing is there but what the wait sees: wait at once (the
                # look would cost a round trip an item, finding nothing).
                delay = self._delay(deadline, None, poll=False)
                if delay is None or delay > 0:
                    if in_thread:
                        check_not_on_loop("a blocking get")
                    counted = True
                    self._getters += 1
                    wait = BLOCK_SLICE if delay is None else min(delay, BLOCK_SLICE)
            if block and not on_store and self._hub.idle(Wait.GET):
                # Others here wait, unrung since they found nothing: nothing
                # is there to take (a put anywhere would have rung one of
                # them). Get in line behind them instead of looking in vain.
                if in_thread:
                    check_not_on_loop("a blocking get")
                counted = True
                self._getters += 1
                waiter = self._hub.add(Wait.GET, in_thread=in_thread)
                yield from self._getter_sleep(waiter, deadline)
                timer = self._hub.rearm(waiter) or timer
            while True:
                self._check_open()
                try:
                    claimed = yield Run(backend.claim(max_items, lease=vt, wait=wait), give_back)
                except Unreachable:
                    if waiter is None:
                        raise
                    # Already waiting: the store being away (a restart) is
                    # not an answer. Look again at the next poll, or sooner
                    # if rung (a ring meanwhile is kept for this sleep).
                    yield Sleep(waiter, self._delay(deadline, None))
                    timer = self._hub.rearm(waiter) or timer
                    if deadline is not None and time.monotonic() >= deadline:
                        raise QueueEmpty() if in_thread else TimeoutError("timed out") from None
                    continue
                if claimed.records:
                    return claimed.records
                # Saw a lease or delay that will run out: if it leaves, someone
                # must look then (even if it leaves now, at its deadline).
                timer = timer or claimed.due is not None
                if not block:
                    raise QueueEmpty()
                if deadline is not None and time.monotonic() >= deadline:
                    raise QueueEmpty() if in_thread else TimeoutError("timed out")
                if not counted:
                    if in_thread:
                        check_not_on_loop("a blocking get")
                    counted = True
                    self._getters += 1
                if on_store:
                    # The next claim waits on the store itself, which sees
                    # other clients' puts: no poll interval (a Redis queue's
                    # 20 ms made an idle getter look 2.4 times as often as
                    # BLOCK_SLICE does), only the deadline and the next due.
                    delay = self._delay(deadline, claimed.due, poll=False)
                    wait = BLOCK_SLICE if delay is None else min(delay, BLOCK_SLICE)
                    continue
                if waiter is None:
                    waiter = self._hub.add(Wait.GET, in_thread=in_thread)
                    waiter.due = claimed.due  # (handed on if it leaves)
                    if claimed.seq is None or backend.seq != claimed.seq:
                        continue  # something changed since that look: look again
                if (subscribe := backend.subscribe()) is not None:
                    try:
                        yield Run(subscribe)
                    except Unreachable:  # waiting already: as for a look, above
                        yield Sleep(waiter, self._delay(deadline, None))
                        timer = self._hub.rearm(waiter) or timer
                    continue  # look again: what changed before it rang no one here
                waiter.due = claimed.due
                yield from self._getter_sleep(waiter, deadline)
                timer = self._hub.rearm(waiter) or timer
        finally:
            if counted:
                self._getters -= 1
            if waiter is not None:
                self._hub.remove(waiter, timer=timer)

    def _decode_steps(self, records: list[Record], *, lease: bool) -> Steps[list[T]]:
        """Decode what a get took. An item that cannot be decoded goes to the
        dead letters, the others taken with it go back, and this raises."""
        out: list[T] = []
        bad: list[tuple[Record, ErrorInfo]] = []
        error: Exception | None = None
        decode = self._codec.decode
        for record in records:
            try:
                out.append(decode(record.data))
            except Exception as exc:
                bad.append((record, ErrorInfo.of(exc)))
                error = error or exc
        if not bad:
            return out
        backend = self._backend
        buried = {id(record) for record, _ in bad}
        good = [r for r in records if id(r) not in buried]
        # Made before the burial is sent: a backend that deletes a plain
        # get's records later (Redis) keeps these from then on.
        give_back = backend.give_back(good, leased=lease) if good else None
        yield Run(backend.bury(bad, leased=lease))
        if give_back is not None:
            yield Run(give_back)
        raise undecodable(self._name, self._codec, error) from error

    def _get_steps(
        self, max_items: int, timeout: float | None, *, block: bool, in_thread: bool
    ) -> Steps[list[T]]:
        records = yield from self._take_steps(
            max_items, timeout, lease=False, block=block, in_thread=in_thread
        )
        return (yield from self._decode_steps(records, lease=False))

    async def get(self, timeout: float | None = None) -> T:
        """Take the oldest item for good, waiting while empty; ``TimeoutError``
        after ``timeout`` seconds. Cancelled, it either returned the item or
        left it in place."""
        self._check_open()
        steps = self._get_steps(1, timeout, block=True, in_thread=False)
        return (await drive(self._backend, steps))[0]

    async def get_batch(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Take up to ``max_items`` at once, waiting only while empty."""
        max_items = check_max_items(max_items)
        self._check_open()
        return await drive(
            self._backend, self._get_steps(max_items, timeout, block=True, in_thread=False)
        )

    def get_nowait(self) -> T:
        """Take the oldest item now or raise ``QueueEmpty`` (one round trip, waited for)."""
        self._check_open()
        steps = self._get_steps(1, None, block=False, in_thread=True)
        return drive_blocking(self._backend, steps)[0]

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except QueueShutDown:
                return
            yield item

    @property
    def sync(self) -> DurableSyncQueue[T]:
        """The ``queue.Queue`` face, for plain threads and worker processes
        (one per queue: what is set on it stays)."""
        face = self._face
        if face is None:
            from .sync import DurableSyncQueue

            face = self._face = DurableSyncQueue(self)
        return face

    # -- task_done, join, shutdown -------------------------------------------------

    def task_done(self) -> None:
        self._check_open()
        self._backend.run_sync(self._backend.task_done())

    def _join_steps(self, *, in_thread: bool) -> Steps[None]:
        backend = self._backend
        waiter: Waiter | None = None
        try:
            while True:
                self._check_open()
                counts: Counts = yield Run(backend.counts())
                # After an immediate shutdown nothing more will be taken, and
                # the stored items stay unfinished (a durable queue keeps
                # them): as with the stdlib's, join() waits only for what is
                # still in hand (reserved, or got and not yet marked done).
                in_hand = counts.unfinished - counts.ready - counts.delayed
                if counts.unfinished == 0 or (
                    counts.state is QueueState.IMMEDIATE and in_hand <= 0
                ):
                    return
                if waiter is None:
                    if in_thread:
                        check_not_on_loop("join()")
                    waiter = self._hub.add(Wait.JOIN, in_thread=in_thread)
                    continue
                if (subscribe := backend.subscribe()) is not None:
                    yield Run(subscribe)
                    continue  # look again: what changed before it rang no one here
                yield Sleep(waiter, backend.poll_interval)
                self._hub.rearm(waiter)
        finally:
            if waiter is not None:
                self._hub.remove(waiter)

    async def join(self) -> None:
        """Until every item put (by any client) is marked done."""
        self._check_open()
        await drive(self._backend, self._join_steps(in_thread=False))

    def shutdown(self, immediate: bool = False) -> list[T]:
        """Shut the queue down for every client: puts raise ``QueueShutDown``;
        gets go on until it is drained (with ``immediate=True``, they raise at
        once). A durable queue never deletes stored items on shutdown: they
        stay, and this returns ``[]``. :meth:`reopen` undoes it."""
        self._check_open()
        self._backend.run_sync(self._backend.shutdown(immediate=immediate))
        return []

    def reopen(self) -> None:
        """Undo :meth:`shutdown`: puts and gets work again, for every client."""
        self._check_open()
        self._backend.run_sync(self._backend.reopen())

    # -- reservations (dead letters: see dead_letters.py) --------------------------

    def reserve(self, timeout: float | None = None) -> DurableReservation[T]:
        """``async with q.reserve() as job``: at-least-once delivery with a lease."""
        return DurableReservation(self, timeout)

    def _reserve_steps(
        self, timeout: float | None, *, block: bool, in_thread: bool
    ) -> Steps[DurableJob[T]]:
        records = yield from self._take_steps(
            1, timeout, lease=True, block=block, in_thread=in_thread
        )
        item = (yield from self._decode_steps(records, lease=True))[0]
        return DurableJob(self, item, records[0])

    async def _reserve(self, timeout: float | None) -> DurableJob[T]:
        self._check_open()
        return await drive(self._backend, self._reserve_steps(timeout, block=True, in_thread=False))


def _take_back(backend: Backend) -> Any:
    take_back = backend.take_back

    def undo(receipt: Any) -> Any:
        return None if receipt is None or receipt is DUPLICATE else take_back(receipt)

    return undo


def _give_back(backend: Backend, *, leased: bool) -> Any:
    give_back = backend.give_back

    def undo(claimed: Claimed) -> Any:
        return give_back(claimed.records, leased=leased) if claimed.records else None

    return undo
