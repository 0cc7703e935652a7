"""The process scenarios: producers in child processes, one consumer here.

Each column of the table is a *way* to consume: a library (one adapter per
library, below) and a consumer style, asyncio or blocking, one item at a time
or batched. Producers always use the library's blocking put (batched: its
batched put), so the columns differ only in the library and in how the
benchmark's own process takes the items out.

Producer processes are started before the clock and wait on an event; the
clock starts as the event is set and stops when the consumer has every item,
so process start-up counts for no library. ``run_once`` then checks that
every item arrived exactly once (and, with one producer, in order).
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import accumulate, pairwise
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .memory import _check, _in_thread, _split

#: "fork" starts a producer in about a millisecond; every queue below also
#: pickles to a "spawn" or "forkserver" child, so nothing depends on it.
START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
MAXSIZE = 1_000  # items, for every queue
CAPACITY = 2 << 20  # bytes: chute's ring and faster-fifo's buffer hold MAXSIZE 1 KiB items
BATCH = 100  # items per put_batch/get_batch (put_many/get_many)
KIB = 1_024
_PAD = bytes(KIB - 8)  # a 1 KiB item: its index in 8 bytes, then zeros
_first_word = struct.Struct("<Q").unpack_from
#: For the libraries whose blocking calls take no ``None`` timeout.
_FOREVER = 3_600.0

INTS, KIB_BYTES = "ints", "1 KiB bytes"

# Consumer styles.
ASYNC, SYNC, ASYNC_BATCH, SYNC_BATCH = "async", "sync", "async batch", "sync batch"


# -- one adapter per library -----------------------------------------------------

Put = Callable[[Any], None]
PutBatch = Callable[[list[Any]], None]
Get = Callable[[], Any]
GetBatch = Callable[[int], list[Any]]
AsyncGet = Callable[[], Awaitable[Any]]
AsyncGetBatch = Callable[[int], Awaitable[list[Any]]]


@dataclass(frozen=True)
class Library:
    """How to make a library's queue and reach it from either end.

    Each face takes the queue and returns a bound callable, looked up before
    the clock starts. ``put``/``put_batch`` run in producer processes and
    block; ``get``/``get_batch`` block a thread of the benchmark's process;
    ``async_get``/``async_get_batch`` are awaited on its event loop. ``None``:
    the library has no such face.
    """

    name: str
    #: The module to import (``None``: the standard library).
    module: str | None
    #: ``make(module, ctx)``: a queue bounded at MAXSIZE items.
    make: Callable[[Any, BaseContext], Any]
    put: Callable[[Any], Put]
    put_batch: Callable[[Any], PutBatch] | None = None
    get: Callable[[Any], Get] | None = None
    get_batch: Callable[[Any], GetBatch] | None = None
    async_get: Callable[[Any], AsyncGet] | None = None
    async_get_batch: Callable[[Any], AsyncGetBatch] | None = None
    #: Called after the producers are gone, to release what the queue holds.
    close: Callable[[Any], None] | None = None


def _executor_get(q: Any) -> AsyncGet:
    loop, get = asyncio.get_running_loop(), q.get

    async def async_get() -> Any:
        return await loop.run_in_executor(None, get)

    return async_get


def _make_faster_fifo(mod: Any, ctx: BaseContext) -> Any:
    import faster_fifo_reduction  # noqa: F401  (lets the queue pickle to spawn children)

    return mod.Queue(max_size_bytes=CAPACITY, maxsize=MAXSIZE)


def _close_aioprocessing(q: Any) -> None:
    q.close()
    executor = vars(q).get("_executor")  # its own thread pool for coro_get
    if executor is not None:
        executor.shutdown(wait=True)


def _ff_get_batch(q: Any) -> GetBatch:
    get_many = q.get_many

    def get_batch(n: int) -> list[Any]:
        return get_many(timeout=_FOREVER, max_messages_to_get=n)  # type: ignore[no-any-return]

    return get_batch


CHUTE = Library(
    "chute",
    "chute",
    make=lambda mod, _ctx: mod.ProcessQueue(MAXSIZE, capacity=CAPACITY),
    put=lambda q: q.sync.put,
    put_batch=lambda q: q.sync.put_batch,
    get=lambda q: q.sync.get,
    get_batch=lambda q: q.sync.get_batch,
    async_get=lambda q: q.get,
    async_get_batch=lambda q: q.get_batch,
    close=lambda q: q.close(),
)
MP_QUEUE = Library(
    "mp.Queue",
    None,
    make=lambda _mod, ctx: ctx.Queue(MAXSIZE),
    put=lambda q: q.put,
    get=lambda q: q.get,
    async_get=_executor_get,
    close=lambda q: q.close(),
)
AIOPROCESSING = Library(
    "aioprocessing",
    "aioprocessing",
    make=lambda mod, ctx: mod.AioQueue(MAXSIZE, context=ctx),
    put=lambda q: q.put,
    async_get=lambda q: q.coro_get,
    close=_close_aioprocessing,
)
FASTER_FIFO = Library(
    "faster-fifo",
    "faster_fifo",
    make=_make_faster_fifo,
    put=lambda q: functools.partial(q.put, timeout=_FOREVER),
    put_batch=lambda q: functools.partial(q.put_many, timeout=_FOREVER),
    get=lambda q: functools.partial(q.get, timeout=_FOREVER),
    get_batch=_ff_get_batch,
)

#: By name: a producer process finds its library's faces here (nothing but
#: the name and the queue itself is sent to it).
LIBRARIES = {lib.name: lib for lib in (CHUTE, MP_QUEUE, AIOPROCESSING, FASTER_FIFO)}


# -- the columns -------------------------------------------------------------------


@dataclass(frozen=True)
class Way:
    """One column: a library consumed in one style."""

    name: str
    library: Library
    consumer: str  # ASYNC, SYNC, ASYNC_BATCH or SYNC_BATCH
    #: The column whose rate is divided by this one's in the tables (None: none).
    versus: str | None = "chute"
    note: str = ""

    @property
    def module(self) -> str | None:
        return self.library.module

    @property
    def batched(self) -> bool:
        return self.consumer in (ASYNC_BATCH, SYNC_BATCH)


SUBJECT = Way("chute", CHUTE, ASYNC)

PEERS: tuple[Way, ...] = (
    Way(
        "chute sync",
        CHUTE,
        SYNC,
        versus=None,
        note="chute sync: the same queue, consumed by `q.sync.get()` in a thread.",
    ),
    Way(
        "chute batched",
        CHUTE,
        ASYNC_BATCH,
        versus=None,
        note=(
            f"chute batched: producers call `q.sync.put_batch()` with {BATCH} items, "
            f"the loop `await q.get_batch({BATCH})`."
        ),
    ),
    Way(
        "mp.Queue",
        MP_QUEUE,
        SYNC,
        note="mp.Queue: `multiprocessing.Queue`, `q.put()` in producers, `q.get()` in a thread.",
    ),
    Way(
        "mp.Queue executor",
        MP_QUEUE,
        ASYNC,
        note=(
            "mp.Queue executor: the same queue read from the loop, "
            "`await loop.run_in_executor(None, q.get)` per item."
        ),
    ),
    Way(
        "aioprocessing",
        AIOPROCESSING,
        ASYNC,
        note=(
            "aioprocessing: `AioQueue`, `q.put()` in producers, `await q.coro_get()` "
            "on the loop (a thread pool of its own)."
        ),
    ),
    Way(
        "faster-fifo",
        FASTER_FIFO,
        SYNC,
        note="faster-fifo: `q.put()` in producers, `q.get()` in a thread.",
    ),
    Way(
        "faster-fifo batched",
        FASTER_FIFO,
        SYNC_BATCH,
        versus="chute batched",
        note=(
            f"faster-fifo batched: `q.put_many()` with {BATCH} items, "
            f"`q.get_many(max_messages_to_get={BATCH})` in a thread; its (Nx) is "
            "chute batched's rate / its rate."
        ),
    ),
)

NOTES = (
    f"Producers are child processes ({START_METHOD!r} start method), started and "
    "ready before the clock starts; the clock stops when the consumer, in the "
    "benchmark's process, has every item. Every queue holds at most "
    f"{MAXSIZE:,} items (chute's ring and faster-fifo's buffer: {CAPACITY >> 20} MiB, "
    "room for all of them). Producers use the blocking put of each library.",
    f"Items: ints 0..N-1, or {KIB:,}-byte bytes (the index in 8 bytes, then zeros), "
    "made in the producer. The consumer keeps every int; a 1 KiB item it checks "
    "(its zeros) and drops as it arrives, keeping its index, as a consumer that "
    "handles items does: kept whole, the items grew the heap by about 200 MB a run, "
    "and its page faults (0.28 an item) took a third of the fastest consumer's time, "
    "the same for every library.",
    "chute: `ProcessQueue`, `q.sync.put()` in producers, `await q.get()` on the "
    "loop. Every (Nx) but faster-fifo batched's is this column's rate / that "
    "column's; chute sync and chute batched show none.",
)


# -- scenarios -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    producers: int
    item: str  # INTS or KIB_BYTES

    def supports(self, way: Way) -> bool:
        lib = way.library
        put = lib.put_batch if way.batched else lib.put
        get = {
            ASYNC: lib.async_get,
            SYNC: lib.get,
            ASYNC_BATCH: lib.async_get_batch,
            SYNC_BATCH: lib.get_batch,
        }[way.consumer]
        return put is not None and get is not None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("processes, 1→1, ints", 1, INTS),
    Scenario("processes, 4→1, ints", 4, INTS),
    Scenario("processes, 1→1, 1 KiB bytes", 1, KIB_BYTES),
    Scenario("processes, 4→1, 1 KiB bytes", 4, KIB_BYTES),
)


class ProducerError(RuntimeError):
    """A producer process failed: the run does not count."""


# -- producers (in child processes) --------------------------------------------------


def _produce(
    library: str, q: Any, lo: int, hi: int, item: str, batched: bool, ready: Any, go: Any
) -> None:
    """Put ``range(lo, hi)`` as ``item``s once ``go`` is set."""
    lib = LIBRARIES[library]
    if batched:
        assert lib.put_batch is not None
        put_batch = lib.put_batch(q)
    else:
        put = lib.put(q)
    ready.release()
    if not go.wait(_FOREVER):
        raise TimeoutError("never told to start")
    pad = _PAD
    if batched and item == INTS:
        for start in range(lo, hi, BATCH):
            put_batch(list(range(start, min(start + BATCH, hi))))
    elif batched:
        for start in range(lo, hi, BATCH):
            put_batch([i.to_bytes(8, "little") + pad for i in range(start, min(start + BATCH, hi))])
    elif item == INTS:
        for i in range(lo, hi):
            put(i)
    else:
        for i in range(lo, hi):
            put(i.to_bytes(8, "little") + pad)


# -- the consumer (in this process) --------------------------------------------------


Keep = Callable[[Any], Any] | None


async def _consume_async(get: AsyncGet, count: int, out: list[Any], keep: Keep) -> None:
    append = out.append
    if keep is None:
        for _ in range(count):
            append(await get())
    else:
        for _ in range(count):
            append(keep(await get()))


async def _consume_async_batch(
    get_batch: AsyncGetBatch, count: int, out: list[Any], keep: Keep
) -> None:
    extend = out.extend
    while len(out) < count:
        got = await get_batch(BATCH)
        extend(got if keep is None else map(keep, got))


def _consume_sync(get: Get, count: int, out: list[Any], keep: Keep) -> None:
    append = out.append
    if keep is None:
        for _ in range(count):
            append(get())
    else:
        for _ in range(count):
            append(keep(get()))


def _consume_sync_batch(get_batch: GetBatch, count: int, out: list[Any], keep: Keep) -> None:
    extend = out.extend
    while len(out) < count:
        got = get_batch(BATCH)
        extend(got if keep is None else map(keep, got))


def _consumer(way: Way, q: Any, count: int, out: list[Any], keep: Keep) -> asyncio.Future[None]:
    """Start consuming ``count`` items into ``out`` (what ``keep`` keeps of
    each, or the item): a task, or a thread's future."""
    lib = way.library
    if way.consumer == ASYNC:
        assert lib.async_get is not None
        return asyncio.ensure_future(_consume_async(lib.async_get(q), count, out, keep))
    if way.consumer == ASYNC_BATCH:
        assert lib.async_get_batch is not None
        return asyncio.ensure_future(_consume_async_batch(lib.async_get_batch(q), count, out, keep))
    if way.consumer == SYNC:
        assert lib.get is not None
        return _in_thread(_consume_sync, lib.get(q), count, out, keep)
    assert lib.get_batch is not None
    return _in_thread(_consume_sync_batch, lib.get_batch(q), count, out, keep)


async def _until_consumed(consumer: asyncio.Future[None], procs: list[BaseProcess]) -> None:
    """Wait for the consumer; fail at once if a producer process fails."""
    loop = asyncio.get_running_loop()
    failed: asyncio.Future[None] = loop.create_future()

    def exited(p: BaseProcess) -> None:
        loop.remove_reader(p.sentinel)
        p.join(1.0)  # it has ended: this only collects its exit code
        if p.exitcode != 0 and not failed.done():
            failed.set_exception(ProducerError(f"a producer exited with code {p.exitcode}"))

    for p in procs:
        loop.add_reader(p.sentinel, exited, p)
    try:
        await asyncio.wait([consumer, failed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for p in procs:
            loop.remove_reader(p.sentinel)
        if not consumer.done():
            consumer.cancel()  # a thread's future: the daemon thread is abandoned
    if failed.done():
        failed.result()
    consumer.result()


def _await_ready(ready: Any, procs: list[BaseProcess], timeout: float) -> None:
    """Until every producer is ready to go (before the clock starts)."""
    deadline = time.monotonic() + timeout
    for _ in procs:
        while not ready.acquire(timeout=0.05):
            if any(p.exitcode is not None for p in procs):
                raise ProducerError("a producer ended before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"producers not ready after {timeout:g} s")


def _stop(procs: list[BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5.0)
        if p.is_alive():
            p.kill()
            p.join()


# -- one timed run -------------------------------------------------------------------


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    """Move ``n`` items from ``sc.producers`` processes to this one; items/s."""
    ctx = multiprocessing.get_context(START_METHOD)
    lib = way.library
    q = lib.make(module, ctx)
    procs: list[BaseProcess] = []
    out: list[Any] = []
    try:
        ready, go = ctx.Semaphore(0), ctx.Event()
        bounds = list(accumulate(_split(n, sc.producers), initial=0))
        for lo, hi in pairwise(bounds):
            args = (lib.name, q, lo, hi, sc.item, way.batched, ready, go)
            p = ctx.Process(target=_produce, args=args, daemon=True)
            p.start()
            procs.append(p)
        _await_ready(ready, procs, timeout)

        # A 1 KiB item is checked and dropped as it arrives, its index kept:
        # see NOTES.
        consumer = _consumer(way, q, n, out, _index if sc.item == KIB_BYTES else None)
        t0 = time.perf_counter()
        go.set()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await _until_consumed(consumer, procs)
        except TimeoutError:
            if not deadline.expired():  # raised by the library itself
                raise
            raise TimeoutError(f"{n:,} items not through after {timeout:g} s") from None
        elapsed = time.perf_counter() - t0

        for p in procs:
            p.join(timeout)
            if p.exitcode != 0:
                raise ProducerError(f"a producer exited with code {p.exitcode}")
    finally:
        _stop(procs)
        if lib.close is not None:
            lib.close(q)

    _check([out], n, ordered=sc.producers == 1)
    return n / elapsed


def _index(item: Any) -> int:
    """The index a 1 KiB item carries; -1 (foreign) for anything else."""
    if type(item) is bytes and len(item) == KIB and item.endswith(_PAD):
        return int(_first_word(item)[0])
    return -1
