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
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import inspect
import itertools
import math
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._exceptions import ChuteError, QueueShutDown

T = TypeVar("T")

#: Looks in a row that must find idle workers and no backlog before shrinking.
QUIET_LOOKS = 3
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
    """A snapshot of a pool. Latencies are seconds spent in the handler,
    over the last 1024 items handled (``None`` before the first)."""

    processed: int
    failed: int
    retried: int
    in_flight: int
    workers: int
    throughput: float
    latency_p50: float | None
    latency_p95: float | None


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


async def _settle(job: Any, how: str, delay: float | None = None) -> None:
    """Settle ``job`` without blocking the loop where the transport can."""
    settle_async = getattr(job, "_settle_async", None)
    if settle_async is not None:
        await settle_async(how, delay)
    elif how == "ack":
        job.ack()
    else:
        job.nack(delay)


class Workers(Generic[T]):
    """Consumers of ``queue`` calling ``handler(item)`` for each item.

    ``async with Workers(q, handle):`` runs them until the block ends (then
    stops gracefully); ``await Workers(q, handle).run()`` until the queue is
    shut down and drained, ``shutdown()`` is called, or SIGINT/SIGTERM
    arrives (where ``run()`` is called from the main thread).
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
    ) -> None:
        for label, value, low in (("min_workers", min_workers, 0), ("max_workers", max_workers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{label} must be an int >= {low}, not {value!r}")
        if min_workers > max_workers:
            raise ValueError(f"min_workers ({min_workers}) is above max_workers ({max_workers})")
        for label, number in (
            ("retry_delay", retry_delay),
            ("max_retry_delay", max_retry_delay),
            ("grace", grace),
        ):
            if isinstance(number, bool) or not isinstance(number, int | float) or not number >= 0:
                raise ValueError(f"{label} must be a number of seconds >= 0, not {number!r}")
        if scale_every is not None and not (
            isinstance(scale_every, int | float) and scale_every > 0
        ):
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
        self._waiting: dict[asyncio.Task[None], None] = {}  # workers in reserve()
        self._tasks: dict[asyncio.Task[None], None] = {}  # every worker
        self._stopping = False
        self._drained = False
        self._started = False
        self._done: asyncio.Event | None = None  # every worker has ended
        self._stop: asyncio.Event | None = None  # shutdown() was called
        self._supervisor: asyncio.Task[None] | None = None
        self._quiet = 0
        #: The last error from the queue that a worker retried after.
        self.last_error: BaseException | None = None
        self._seen = 0  # processed at the last look
        self._processed = 0
        self._failed = 0
        self._retried = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        #: (when, processed) now and then, for the throughput.
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    # -- the pool ------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return len(self._tasks)

    def _busy(self) -> list[asyncio.Task[None]]:
        """The workers handling an item now."""
        return [task for task in self._tasks if task not in self._waiting]

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

    def _grow(self, n: int) -> None:
        for _ in range(n):
            task = asyncio.ensure_future(self._work())
            self._tasks[task] = None
            self._waiting[task] = None
            task.add_done_callback(self._gone)

    def _gone(self, task: asyncio.Task[None]) -> None:
        self._waiting.pop(task, None)
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            self.last_error = task.exception()
            if not self._stopping:  # a bug of ours: another worker takes its place
                self._grow(1)
                return
        if self.workers == 0 and (self._stopping or self._drained) and self._done is not None:
            self._done.set()

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        reserve, handler, is_async = self._queue.reserve, self._handler, self._async
        waiting, latencies = self._waiting, self._latencies
        clock = time.monotonic
        while not self._stopping:
            try:
                job = await reserve()
            except QueueShutDown:
                if self._out_there():
                    # Shut down, but items given back for a retry (or held
                    # by other consumers) may return: look again shortly.
                    await asyncio.sleep(DRAIN_POLL)
                    continue
                self._drained = True
                waiting.pop(me, None)
                self.shutdown()  # every other worker ends too
                return
            except Exception as exc:
                if getattr(self._queue, "_closed", False):
                    waiting.pop(me, None)
                    self.shutdown()  # the queue was closed under the pool: it ends
                    return
                self.last_error = exc  # the transport is away: look again shortly
                await asyncio.sleep(RETRY_PAUSE)
                continue
            waiting.pop(me, None)
            t0 = clock()
            try:
                if is_async:
                    await handler(job.item)
                elif self._pool is not None:
                    await self._pool.run(job.item)
                else:
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(self._executor, handler, job.item)
            except asyncio.CancelledError:
                if me.cancelling():
                    # The pool is stopping past its grace period: someone else's now.
                    await asyncio.shield(_settle(job, "nack"))
                    raise
                # The handler's own cancellation (not ours): a failure like any.
                self._failed += 1
                await self._retry(job)
            except Exception:
                self._failed += 1
                await self._retry(job)
            except BaseException:
                # SystemExit, KeyboardInterrupt from the handler: the item
                # goes back before that goes on.
                await asyncio.shield(_settle(job, "nack"))
                raise
            else:
                latencies.append(clock() - t0)
                try:
                    if hasattr(job, "_settle_async"):  # settled off the loop's thread
                        await job._settle_async("ack", None)
                    else:
                        job.ack()
                except asyncio.CancelledError:
                    self._processed += 1  # the acknowledgement was sent: it stands
                    raise
                except ChuteError:
                    # Its lease ran out before the handler was done: the
                    # item was delivered again and is someone else's now.
                    self._failed += 1
                else:
                    self._processed += 1
            waiting[me] = None

    async def _retry(self, job: Any) -> None:
        try:
            await _settle(job, "nack", self._backoff(job.deliveries))
        except ChuteError:
            pass  # its lease ran out: it went back on its own
        else:
            self._retried += 1

    def _out_there(self) -> bool:
        """Items of a shut-down queue that may yet come back to it."""
        try:
            return bool(self._queue.statistics().in_flight)
        except Exception:  # closed or unreachable: nothing will come back
            return False

    def _backoff(self, deliveries: int) -> float:
        return min(self._max_retry_delay, self._retry_delay * 2.0 ** max(0, deliveries - 1))

    # -- autoscaling ---------------------------------------------------------------------

    async def _supervise(self, every: float) -> None:
        while not self._stopping:
            await asyncio.sleep(every)
            self.rescale()

    def rescale(self) -> int:
        """One look at the backlog: grow or shrink the pool as the policy
        in the module docstring says. Returns the number of workers now."""
        if self._stopping or not self._started:
            return self.workers
        try:
            depth = self._queue.qsize()
        except Exception:  # the queue is unreachable or closed: keep the pool
            return self.workers
        n, idle = self.workers, len(self._waiting)
        look = self._scale_every or 0.5
        backlog = depth > 0 and idle == 0
        pace = self._pace()
        stuck = self._processed == self._seen  # nothing finished since the last look
        self._seen = self._processed
        slow = n == 0 or stuck or pace is None or depth * pace / n > look
        if backlog and slow:
            self._quiet = 0
            grow = min(self.max_workers - n, max(1, min(n, depth)))
            if grow > 0:
                self._grow(grow)
        elif idle > 0 and depth == 0:
            self._quiet += 1
            if self._quiet >= QUIET_LOOKS:
                self._quiet = 0
                shrink = min(n - self.min_workers, max(1, idle // 2))
                for task in list(self._waiting)[: max(0, shrink)]:
                    task.cancel()  # idle in reserve(): cancelling takes nothing
                    del self._waiting[task]
                    del self._tasks[task]
        else:
            self._quiet = 0
        return self.workers

    def _pace(self) -> float | None:
        """The mean handling time of the last items (up to 64)."""
        recent = list(itertools.islice(reversed(self._latencies), 64))
        return sum(recent) / len(recent) if recent else None

    # -- stopping ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop taking items; items being handled get ``grace`` seconds to
        finish, then are given back to the queue. Safe from a signal handler."""
        self._stopping = True
        if self._stop is not None:
            self._stop.set()
        for task in list(self._waiting):
            if not task.cancelling():
                task.cancel()  # waiting in reserve(): takes nothing
        if self._supervisor is not None:
            self._supervisor.cancel()
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
        deadline = asyncio.get_running_loop().time() + self._grace
        busy = self._busy()
        if busy:
            _, late = await asyncio.wait(busy, timeout=self._grace)
            for task in late:
                task.cancel()  # their items are given back
            if late:
                await asyncio.wait(late)
        waiting = list(self._waiting)
        for task in waiting:
            if not task.cancelling():  # once is enough: it is on its way out
                task.cancel()
        if waiting:
            await asyncio.wait(waiting)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._executor is not None:
            # Threads still running a handler past the grace period are not
            # waited for: their items were given back already.
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            await self._pool.close(deadline)

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
        if self._stopping:
            self._grace = 0.0  # the second time: give back at once
            for task in self._busy():
                task.cancel()
        self.shutdown()

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
            in_flight=len(self._tasks) - len(self._waiting),
            workers=self.workers,
            throughput=(self._processed - then) / (now - since) if now > since else 0.0,
            latency_p50=_percentile(lat, 0.50),
            latency_p95=_percentile(lat, 0.95),
        )

    def __repr__(self) -> str:
        busy = len(self._tasks) - len(self._waiting)
        return f"<chute.Workers {self.workers} workers ({busy} busy), {self._processed} processed>"


class HandlerFailed(Exception):
    """A handler running in another process raised (its text, as it was)."""


def _serve(handler: Callable[[Any], Any], feed: Any, results: Any) -> None:
    """A worker process: handle what the feed brings until it is shut down."""
    # Ctrl-C reaches the whole process group: the parent stops the pool;
    # a handler here finishes its item (or is terminated past the grace).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid = os.getpid()
    try:
        for token, item in feed.sync:
            results.sync.put((token, pid, "start"))
            try:
                handler(item)
            except BaseException as exc:  # reported, not raised: the pool decides
                results.sync.put((token, pid, f"{type(exc).__name__}: {exc}"))
            else:
                results.sync.put((token, pid, None))
    finally:
        feed.close()
        results.close()


class _ProcessPool:
    """``processes`` worker processes fed through a ProcessQueue; the
    answers come back through another, read by one task, which also
    replaces a process that died (failing the item it held)."""

    def __init__(self, handler: Callable[[Any], Any], n: int) -> None:
        import multiprocessing

        from ._process import ProcessQueue

        self._handler = handler
        self._feed: ProcessQueue[Any] = ProcessQueue()
        self._results: ProcessQueue[Any] = ProcessQueue()
        self._ctx = multiprocessing.get_context("spawn")  # a clean process: no threads, no loop
        self._procs = [self._spawn() for _ in range(n)]
        self._tokens = itertools.count()
        self._pending: dict[int, asyncio.Future[str | None]] = {}
        self._holding: dict[int, int] = {}  # pid -> the token it is handling
        self._closed = False
        self._reader = asyncio.ensure_future(self._read())
        self._watcher = asyncio.ensure_future(self._watch())

    def _spawn(self) -> Any:
        proc = self._ctx.Process(
            target=_serve, args=(self._handler, self._feed, self._results), daemon=True
        )
        proc.start()
        return proc

    async def _read(self) -> None:
        async for token, pid, outcome in self._results:
            if outcome == "start":
                self._holding[pid] = token
                continue
            self._holding.pop(pid, None)
            self._answer(token, outcome)

    def _answer(self, token: int, outcome: str | None) -> None:
        fut = self._pending.pop(token, None)
        if fut is not None and not fut.done():  # else: its caller gave up
            fut.set_result(outcome)

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(0.2)
            for i, proc in enumerate(self._procs):
                if proc.exitcode is not None and not self._closed:
                    token = self._holding.pop(proc.pid, None)
                    if token is not None:
                        self._answer(token, f"the worker process died (exit code {proc.exitcode})")
                    self._procs[i] = self._spawn()

    async def run(self, item: Any) -> None:
        token = next(self._tokens)
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        try:
            await self._feed.put((token, item))
            error = await fut
        finally:
            self._pending.pop(token, None)
        if error is not None:
            raise HandlerFailed(error)

    async def close(self, deadline: float) -> None:
        """Stop the processes: they finish what they hold until ``deadline``
        (the loop's clock), then are terminated (those items were given back)."""
        if self._closed:
            return
        self._closed = True
        self._watcher.cancel()
        # What is still in the feed belongs to jobs already given back.
        self._feed.shutdown(immediate=True)
        loop = asyncio.get_running_loop()
        for proc in self._procs:
            await loop.run_in_executor(None, proc.join, max(0.0, deadline - loop.time()))
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(None, proc.join, 5)
        self._results.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._feed.close()
        self._results.close()


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


__all__ = ["WorkerStatistics", "Workers"]
