"""``Workers``: a pool of consumers on any chute queue, sized by its backlog.

Each worker is a task that reserves an item (``await queue.reserve()``),
hands it to the handler, and settles it: acknowledged on success, given
back with a growing delay on failure (the queue moves it to its dead
letters after its ``max_deliveries``), given back at once if the pool stops
before the handler is done. An ``async def`` handler runs in the worker's
task; a plain function runs in a thread of the pool's own.

Autoscaling, every ``scale_every`` seconds (or on ``rescale()``): grow when
there is a backlog no idle worker can take and that would not be drained
before the next look at the current pace — doubling, never beyond the
backlog or ``max_workers``; shrink only after three looks in a row that
found idle workers and an empty queue, by half of the idle ones, never
below ``min_workers``. Growing is quick and shrinking slow, so the pool does
not flap.

Logging goes to the ``chute.workers`` logger (standard ``logging``; chute
adds no handler, so the application decides where records go; with none
configured, Python's last-resort handler prints warnings and errors to
stderr). A handler's exception is logged at ERROR with its traceback the
first time each kind of failure is seen; the same kind again within
``REPEAT_EVERY`` seconds is only counted, and the count is logged as one
line at most every ``REPEAT_EVERY`` seconds and when the pool stops. The
pool's life (started, stopping with the jobs in hand, stopped) is logged at
INFO, its scaling at DEBUG.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import inspect
import itertools
import logging
import math
import pickle
import signal
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from .._exceptions import ChuteError, QueueShutDown
from .._schedules import Schedule, Scheduler
from .failures import _count, _FailureLog, _message, _name_of, _short, logger
from .histogram import BUCKETS, HandlingTimes, HistogramSnapshot
from .leases import LeaseKeeper
from .processes import _ProcessPool
from .scaling import plan

T = TypeVar("T")

#: Handling times kept for the latency percentiles.
LATENCY_WINDOW = 1024
#: Seconds a worker waits before it tries a queue that failed it again.
RETRY_PAUSE = 0.5
#: How often a worker looks again at a shut-down queue with items out.
DRAIN_POLL = 0.05
#: Seconds over which ``throughput`` is measured.
RATE_WINDOW = 5.0


@dataclass(frozen=True)
class WorkerStatistics:
    """A snapshot of a pool.

    ``processed``: items handled and acknowledged. ``failed``: handler
    failures (and items whose lease ran out before their handler was done).
    Of the failed, ``retried`` were given back to be tried again and
    ``dead`` were moved to the queue's dead letters by this pool.
    ``in_flight``: the jobs in hand now (reserved, being handled or settled);
    while the pool stops, the jobs it is waiting for. Latencies are seconds
    spent in the handler, over the last 1024 items handled (``None`` before
    the first).
    """

    processed: int
    failed: int
    retried: int
    in_flight: int
    workers: int
    throughput: float
    latency_p50: float | None
    latency_p95: float | None
    dead: int = 0


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


async def _settle(
    job: Any, how: str, delay: float | None = None, error: BaseException | None = None
) -> None:
    """Settle ``job`` without blocking the loop (a stored queue's settle is
    a round trip); a nack keeps ``error`` as the item's last error (its
    dead letter's why)."""
    if how == "ack":
        await job.aack()
    else:
        await job.anack(delay, error=error)


def _check_arguments(
    queue: Any,
    handler: Callable[..., Any],
    *,
    workers: tuple[int, int],
    seconds: dict[str, float],
    scale_every: float | None,
    processes: int,
) -> None:
    """Every argument of ``Workers`` checked at the call: a clear error
    naming it, and nothing started."""
    min_workers, max_workers = workers
    for label, value, low in (("min_workers", min_workers, 0), ("max_workers", max_workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, not {value!r}")
    if min_workers > max_workers:
        raise ValueError(f"min_workers ({min_workers}) is above max_workers ({max_workers})")
    for label, number in seconds.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or not number >= 0:
            raise ValueError(f"{label} must be a number of seconds >= 0, not {number!r}")
    if scale_every is not None and not (isinstance(scale_every, int | float) and scale_every > 0):
        raise ValueError(f"scale_every must be seconds > 0 or None, not {scale_every!r}")
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {type(handler).__name__}")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
        raise ValueError(f"processes must be an int >= 0, not {processes!r}")
    if processes and _is_async(handler):
        raise ValueError("processes=N runs a plain function in other processes, not async def")
    if processes:
        try:
            pickle.dumps(handler)
        except Exception as exc:
            raise ValueError(
                "processes=N needs a handler other processes can import: a function "
                f"defined at the top level of a module ({exc})"
            ) from None
    if not callable(getattr(queue, "reserve", None)):
        raise TypeError(f"{type(queue).__name__} has no reserve(): not a chute queue")


class Workers(Generic[T]):
    """Consumers of ``queue`` calling ``handler(item)`` for each item.

    ``async with Workers(q, handle):`` runs them until the block ends (then
    stops gracefully); ``await Workers(q, handle).run()`` until the queue is
    shut down and drained, ``shutdown()`` is called, or SIGINT/SIGTERM
    arrives (where ``run()`` is called from the main thread).

    A failed item is given back with its exception (``nack(error=exc)``),
    so its dead letter, if it comes to that, says why it died.
    """

    def __init__(
        self,
        queue: Any,
        handler: Callable[[T], Any],
        *,
        min_workers: int = 1,
        max_workers: int = 16,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        grace: float = 30.0,
        scale_every: float | None = 0.5,
        processes: int = 0,
        schedules: Sequence[Schedule] = (),
    ) -> None:
        _check_arguments(
            queue,
            handler,
            workers=(min_workers, max_workers),
            seconds={
                "retry_delay": retry_delay,
                "max_retry_delay": max_retry_delay,
                "grace": grace,
            },
            scale_every=scale_every,
            processes=processes,
        )
        self._queue = queue
        self._handler = handler
        self._async = _is_async(handler)
        self.min_workers = min_workers
        self.max_workers = max_workers
        self._retry_delay = float(retry_delay)
        self._max_retry_delay = float(max_retry_delay)
        self._grace = float(grace)
        self._scale_every = scale_every
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._processes = processes
        if processes:  # a worker more than the processes would only hold an item waiting
            self.max_workers = min(self.max_workers, processes)
            self.min_workers = min(self.min_workers, self.max_workers)
        self._pool: _ProcessPool | None = None
        #: Every worker, and whether it waits in reserve() now (a flag each
        #: worker flips itself: two dict updates a job were measurable).
        self._tasks: dict[asyncio.Task[None], _Slot] = {}
        self._stopping = False
        self._closed_log = False  # "stopped" was logged
        self._immediate = False  # shutdown(immediate=True): no grace left
        self._drained = False
        self._started = False
        self._done: asyncio.Event | None = None  # every worker has ended
        self._stop: asyncio.Event | None = None  # shutdown() was called
        self._supervisor: asyncio.Task[None] | None = None
        #: Puts the schedules' slots while the pool runs (checked here: a
        #: queue that cannot keep them is refused at the call).
        self._scheduler = Scheduler(queue, schedules) if schedules else None
        self._scheduling: asyncio.Task[None] | None = None
        self._quiet = 0
        #: The last error from the queue that a worker retried after.
        self.last_error: BaseException | None = None
        self._seen = 0  # processed at the last look
        self._processed = 0
        self._failed = 0
        self._retried = 0
        self._dead = 0
        self._failures = _FailureLog(logger)
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        #: How long the handlers take, from when chute.metrics watches the
        #: pool (counting costs a little on every job: only when asked).
        self._handling: HandlingTimes | None = None
        #: (when, processed) now and then, for the throughput.
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    # -- the pool ------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return len(self._tasks)

    @property
    def queue(self) -> Any:
        """The queue the pool takes its items from."""
        return self._queue

    @property
    def grace(self) -> float:
        """Seconds the jobs in hand get to finish once the pool stops."""
        return self._grace

    @property
    def stopping(self) -> bool:
        """``shutdown()`` was called (or the queue drained): no item is taken any more."""
        return self._stopping

    def _busy(self) -> list[asyncio.Task[None]]:
        """The workers handling an item now."""
        return [task for task, slot in self._tasks.items() if not slot.waiting]

    def busy_count(self) -> int:
        """How many workers handle an item now (safe from another thread:
        the workers are copied in one step before they are counted)."""
        return sum(1 for slot in list(self._tasks.values()) if not slot.waiting)

    def _idle(self) -> list[asyncio.Task[None]]:
        """The workers waiting in reserve() now."""
        return [task for task, slot in self._tasks.items() if slot.waiting]

    def start(self) -> None:
        """Start ``min_workers`` workers (at least one) and the autoscaler."""
        if self._started:
            raise RuntimeError("these Workers were already started")
        self._started = True
        self._marks.append((time.monotonic(), 0))
        self._done = asyncio.Event()
        self._stop = asyncio.Event()
        if self._processes:
            self._pool = _ProcessPool(self._handler, self._processes)
        elif not self._async:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.max_workers, thread_name_prefix="chute-worker"
            )
        self._grow(max(1, self.min_workers))
        if self._scale_every is not None:
            self._supervisor = asyncio.ensure_future(self._supervise(self._scale_every))
        if self._scheduler is not None:
            self._scheduling = asyncio.ensure_future(self._scheduler.run())
        logger.info(
            "started on %r: %s (min %d, max %d%s), handler %s",
            self._queue,
            _count(self.workers, "worker"),
            self.min_workers,
            self.max_workers,
            f", in {_count(self._processes, 'process', 'processes')}" if self._processes else "",
            _name_of(self._handler),
        )

    def _grow(self, n: int) -> None:
        for _ in range(n):
            task = asyncio.ensure_future(self._work())
            self._tasks[task] = _Slot()
            task.add_done_callback(self._gone)

    def _gone(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.last_error = error
            if not self._stopping:  # a bug of ours: another worker takes its place
                self._failures.failed(
                    logging.ERROR,
                    error,
                    "a worker ended on an unexpected error (a bug in chute: please report "
                    "it); another takes its place",
                )
                self._grow(1)
                return
        if self.workers == 0 and (self._stopping or self._drained) and self._done is not None:
            self._done.set()

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        reserve, handler, is_async = self._queue.reserve, self._handler, self._async
        slot, latencies = self._tasks[me], self._latencies
        bounds = BUCKETS
        first = bounds[0]
        lease = LeaseKeeper.lease_of(self._queue)  # None: no leases to keep
        clock = time.monotonic
        looked_again = False  # a delay ran out between a reserve and the look after it
        at_once: bool | None = None  # the queue's jobs settle without I/O (asked once)
        # `while True`, not `while not self._stopping`: 3.11 specializes a
        # function's bytecode after a few unconditional backward jumps, and
        # the loop's conditional one does not count (measured: this loop
        # ran unspecialized, 8% slower, until the eighth pool was started).
        while True:
            if self._stopping:
                return
            try:
                job = await reserve()
            except QueueShutDown:
                left = await self._left()
                if left == "out":
                    # Shut down, but items given back for a retry (or held
                    # by other consumers) may return: look again shortly.
                    looked_again = False
                    await asyncio.sleep(DRAIN_POLL)
                    continue
                if left == "waiting" and not looked_again:
                    # Claimable now (a delay ran out since the reserve): one
                    # more reserve. Not more: after an immediate shutdown a
                    # stored queue keeps items that no reserve will take.
                    looked_again = True
                    continue
                slot.waiting = False
                if not self._stopping:
                    logger.info("the queue is shut down and drained: stopping")
                self._drained = True
                self.shutdown()  # every other worker ends too
                return
            except Exception as exc:
                # Closed, not shut down: is_shutdown is another state (and
                # on a closed stored queue it raises).
                if self._queue.closed:
                    slot.waiting = False
                    if not self._stopping:
                        logger.warning("the queue was closed under the pool: stopping")
                    self.shutdown()  # the queue was closed under the pool: it ends
                    return
                self.last_error = exc  # the transport is away: look again shortly
                self._failures.failed(
                    logging.WARNING,
                    exc,
                    "could not take an item from the queue (%s); trying again in %g s",
                    _message(exc),
                    RETRY_PAUSE,
                )
                await asyncio.sleep(RETRY_PAUSE)
                continue
            looked_again = False
            slot.waiting = False
            t0 = clock()
            keeper = None if lease is None else LeaseKeeper(job, lease, me)
            try:
                try:
                    if is_async:
                        await handler(job.item)
                    elif self._pool is not None:
                        await self._pool.run(job.item)
                    else:
                        loop = asyncio.get_running_loop()
                        await loop.run_in_executor(self._executor, handler, job.item)
                finally:
                    took = clock() - t0
                    times = self._handling
                    if times is not None:
                        # Bumped inline, the usual bucket first: a method
                        # call per job is measurable here (benchmarks, workers).
                        cells = times.cells
                        if took <= first:
                            cells[0] += 1
                        else:
                            cells[bisect_left(bounds, took)] += 1
                        cells[-1] += took
                    if keeper is not None:
                        keeper.stop()
            except asyncio.CancelledError as exc:
                if keeper is not None and keeper.lost is not None:
                    me.uncancel()  # the keeper's cancellation: the lease is gone
                    if me.cancelling():
                        raise  # and the pool is stopping past its grace
                    self._lease_lost(job, keeper.lost)
                    slot.waiting = True
                    continue
                if me.cancelling():
                    # The pool is stopping past its grace period: someone else's now.
                    await asyncio.shield(_settle(job, "nack"))
                    raise
                # The handler's own cancellation (not ours): a failure like any.
                await self._retry(job, exc)
            except Exception as exc:
                await self._retry(job, exc)
            except BaseException as exc:
                # SystemExit, KeyboardInterrupt from the handler: the item
                # goes back before that goes on.
                await asyncio.shield(_settle(job, "nack", error=exc))
                raise
            else:
                latencies.append(took)
                try:
                    if at_once is None:
                        at_once = bool(getattr(job, "settles_at_once", False))
                    if at_once:
                        job.ack()  # no I/O: a coroutine here costs a measurable part
                    else:
                        await job.aack()  # settled off the loop's thread
                except asyncio.CancelledError:
                    self._processed += 1  # the acknowledgement was sent: it stands
                    raise
                except ChuteError as exc:
                    # Its lease ran out before the handler was done: the
                    # item was delivered again and is someone else's now.
                    self._failed += 1
                    self._failures.failed(
                        logging.WARNING,
                        exc,
                        "an item was handled after its lease ran out, and was delivered "
                        "again: keep handlers within the queue's visibility timeout",
                    )
                else:
                    self._processed += 1
            slot.waiting = True

    def _lease_lost(self, job: Any, exc: BaseException) -> None:
        self._failed += 1
        self._failures.failed(
            logging.WARNING,
            exc,
            "the lease of an item being handled by %s was lost (%s): its handler was "
            "cancelled (a thread or process runs on, unheeded); the item is delivered "
            "again, to be handled once more",
            _name_of(self._handler),
            _message(exc),
        )

    async def _retry(self, job: Any, exc: BaseException) -> None:
        """Give back the item of a failed handler, with its exception."""
        self._failed += 1
        delay = self._backoff(job.deliveries)
        try:
            await _settle(job, "nack", delay, error=exc)
        except ChuteError:
            what = "its lease had run out: it was given back by the queue"
        else:
            # The transport says whether it went to the dead letters; one
            # that does not say (outcome None) gave it back.
            if getattr(job, "outcome", None) == "dead":
                self._dead += 1
                what = "moved to the dead letters"
            else:
                self._retried += 1
                what = f"given back, tried again in {delay:g} s"
        self._failures.failed(
            logging.ERROR,
            exc,
            "handler %s failed on %s (delivery %d; %s): %s",
            _name_of(self._handler),
            _short.repr(job.item),
            job.deliveries,
            what,
            _message(exc),
        )

    async def _left(self) -> Literal["out", "waiting"] | None:
        """What a shut-down queue still holds: items out that may come back
        (on a lease, or given back with a delay), items waiting, or none."""
        try:
            s = await self._queue.astatistics()
        except Exception:  # closed or unreachable: nothing will come back
            return None
        # Delayed items are counted apart by some stores.
        if s.in_flight or getattr(s, "delayed", 0):
            return "out"
        return "waiting" if s.size else None

    def _backoff(self, deliveries: int) -> float:
        return min(self._max_retry_delay, self._retry_delay * 2.0 ** max(0, deliveries - 1))

    # -- autoscaling ---------------------------------------------------------------------

    async def _supervise(self, every: float) -> None:
        while not self._stopping:
            await asyncio.sleep(every)
            try:
                # A stored queue's size is a round trip: never made
                # synchronously on the loop the workers share.
                depth = await self._queue.aqsize()
            except Exception:  # the queue is unreachable or closed: keep the pool
                continue
            self.rescale(depth)

    def rescale(self, depth: int | None = None) -> int:
        """One look at the backlog (``depth``, or ``qsize()`` now: one round
        trip on a stored queue): grow or shrink the pool as the policy in
        the module docstring says. Returns the number of workers now."""
        if self._stopping or not self._started:
            return self.workers
        if depth is None:
            try:
                depth = self._queue.qsize()
            except Exception:  # the queue is unreachable or closed: keep the pool
                return self.workers
        n, idle = self.workers, len(self._idle())
        stuck = self._processed == self._seen  # nothing finished since the last look
        self._seen = self._processed
        change, self._quiet = plan(
            workers=n,
            idle=idle,
            depth=depth,
            pace=self._pace(),
            stuck=stuck,
            look=self._scale_every or 0.5,
            quiet=self._quiet,
            bounds=(self.min_workers, self.max_workers),
        )
        if change > 0:
            self._grow(change)
            logger.debug(
                "scaled up from %s to %d (%s waiting)",
                _count(n, "worker"),
                self.workers,
                _count(depth, "item"),
            )
        elif change < 0:
            for task in self._idle()[:-change]:
                task.cancel()  # idle in reserve(): cancelling takes nothing
                del self._tasks[task]
            logger.debug(
                "scaled down from %s to %d (%d idle)", _count(n, "worker"), self.workers, idle
            )
        return self.workers

    def _pace(self) -> float | None:
        """The mean handling time of the last items (up to 64)."""
        recent = list(itertools.islice(reversed(self._latencies), 64))
        return sum(recent) / len(recent) if recent else None

    # -- stopping ------------------------------------------------------------------------

    def shutdown(self, immediate: bool = False) -> None:
        """Stop taking items; the jobs in hand get ``grace`` seconds to
        finish, then are given back to the queue. ``immediate=True`` (also
        after a first call) gives them back now. Safe from a signal handler."""
        in_hand = len(self._busy())
        if not self._stopping:
            self._stopping = True
            if self._started:
                logger.info(
                    "stopping: %s in hand (grace %g s)", _count(in_hand, "job"), self._grace
                )
        if immediate and not self._immediate:
            self._immediate = True
            if self._started:
                logger.warning("stopping now: giving back %s in hand", _count(in_hand, "job"))
            for task in self._busy():
                task.cancel()  # their items are given back
        if self._stop is not None:
            self._stop.set()
        for task in self._idle():
            if not task.cancelling():
                task.cancel()  # waiting in reserve(): takes nothing
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self._scheduling is not None:
            self._scheduling.cancel()  # a slot being put is put first (see _schedules)
        if self.workers == 0 and self._done is not None:
            self._done.set()

    async def wait(self) -> WorkerStatistics:
        """Until the pool has stopped (the queue shut down and drained, or
        ``shutdown()``); the rest of the items stay in the queue."""
        if not self._started:
            raise RuntimeError("these Workers were not started")
        assert self._done is not None
        stop_requested = asyncio.ensure_future(self._wait_stopping())
        try:
            await self._done.wait()
        except asyncio.CancelledError:
            self.shutdown()
            await asyncio.shield(self._finish())
            raise
        finally:
            stop_requested.cancel()
        await self._finish()
        return self.statistics()

    async def _wait_stopping(self) -> None:
        """Once stopping, give the handlers their grace, then cancel them."""
        assert self._stop is not None
        await self._stop.wait()
        await self._finish()

    async def _finish(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self._grace

        def deadline() -> float:
            return loop.time() if self._immediate else end

        busy = self._busy()
        if busy:
            _, late = await asyncio.wait(busy, timeout=self._grace)
            over = [task for task in late if not task.cancelling()]  # else: given back already
            if over:
                logger.warning(
                    "grace of %g s over: giving back %s still in hand",
                    self._grace,
                    _count(len(over), "job"),
                )
            for task in over:
                task.cancel()  # their items are given back
            if late:
                await asyncio.wait(late)
        waiting = self._idle()
        for task in waiting:
            if not task.cancelling():  # once is enough: it is on its way out
                task.cancel()
        if waiting:
            await asyncio.wait(waiting)
        for helper in (self._supervisor, self._scheduling):
            if helper is not None:
                helper.cancel()
                await asyncio.gather(helper, return_exceptions=True)
        if self._executor is not None:
            # Threads still running a handler past the grace period are not
            # waited for: their items were given back already.
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            await self._pool.close(deadline)
        if not self._closed_log:
            self._closed_log = True
            self._failures.flush()
            logger.info(
                "stopped: %d processed, %d failed (%d retried, %d dead)",
                self._processed,
                self._failed,
                self._retried,
                self._dead,
            )

    async def run(self) -> WorkerStatistics:
        """Start, and wait until stopped; SIGINT/SIGTERM stop gracefully
        (a second one gives back what is being handled at once)."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._on_signal)
                    installed.append(sig)
        try:
            self.start()
            return await self.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        self.shutdown(immediate=self._stopping)  # the second time: give back at once

    async def __aenter__(self) -> Workers[T]:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()
        await self.wait()

    # -- numbers -------------------------------------------------------------------------

    def statistics(self) -> WorkerStatistics:
        now = time.monotonic()
        marks = self._marks
        marks.append((now, self._processed))
        while len(marks) > 2 and marks[1][0] <= now - RATE_WINDOW:
            marks.popleft()  # keep one mark at or before the window's start
        since, then = marks[0]
        lat = sorted(self._latencies)
        return WorkerStatistics(
            processed=self._processed,
            failed=self._failed,
            retried=self._retried,
            dead=self._dead,
            in_flight=self.busy_count(),
            workers=self.workers,
            throughput=(self._processed - then) / (now - since) if now > since else 0.0,
            latency_p50=_percentile(lat, 0.50),
            latency_p95=_percentile(lat, 0.95),
        )

    def handling_times(self) -> HistogramSnapshot | None:
        """How long the handlers took (failures too), as cumulative counts
        per bucket of seconds: a Prometheus histogram. Counted from the
        first ``time_handlers()`` on (``chute.metrics`` calls it); None before."""
        return None if self._handling is None else self._handling.snapshot()

    def time_handlers(self) -> None:
        """Start counting handling times for ``handling_times()`` (idempotent)."""
        if self._handling is None:
            self._handling = HandlingTimes()

    def __repr__(self) -> str:
        busy = self.busy_count()
        return f"<chute.Workers {self.workers} workers ({busy} busy), {self._processed} processed>"


class _Slot:
    """A worker's flag: waiting in reserve() (True) or handling an item."""

    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting = True


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]
