"""What ``chute.Workers`` costs over a pool written by hand.

The same queue, the same items (stored and the queue shut down before the
clock starts), the same no-op ``async def`` handler, the same number of
consumers (4): ``Workers(q, handle, min_workers=4, max_workers=4).run()``
against four tasks that each loop ``async with q.reserve() as job: await
handle(job.item)`` until the queue is drained. Both acknowledge every item;
the run checks that each was handled exactly once.

A third column is the same ``Workers`` with ``chute.metrics`` watching the
queue and the pool, scraped by a thread every ``SCRAPE_EVERY`` seconds
(some 300 times as often as Prometheus's usual 15 s): what metrics cost.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .memory import _check

CONSUMERS = 4
DEFAULT_ITEMS = 100_000
SCRAPE_EVERY = 0.05


@dataclass(frozen=True)
class Way:
    name: str
    module: str = "chute"
    note: str = ""
    #: Here the ratio is the other way round: by hand / Workers (its time, relative).
    versus: str | None = "by hand"


@dataclass(frozen=True)
class Scenario:
    name: str
    transport: str
    #: The clock: "wall" (``time.perf_counter``) or "cpu" (this process's
    #: CPU time, ``time.process_time``: what the pool itself spends, which
    #: a shared machine's stolen time does not move).
    clock: str = "wall"

    def supports(self, way: Way) -> bool:
        return True


SCENARIOS = (
    Scenario(f"workers, memory queue, {CONSUMERS} consumers", "memory"),
    Scenario(f"workers, sqlite queue, {CONSUMERS} consumers", "sqlite"),
    Scenario(f"workers, memory queue, {CONSUMERS} consumers, CPU time", "memory", clock="cpu"),
)

SUBJECT = Way("chute.Workers")
PEERS = (
    Way(
        "by hand",
        versus=None,
        note=(
            f"by hand: {CONSUMERS} tasks, each looping `async with q.reserve() as job: "
            "await handle(job.item)` until `QueueShutDown`."
        ),
    ),
    Way(
        "scraped",
        versus="chute.Workers",
        note=(
            "scraped: the same Workers with chute.metrics watching the queue and the pool, "
            f"scraped (`generate_latest`) by a thread every {SCRAPE_EVERY * 1000:g} ms; its "
            "(Nx) is chute.Workers' rate / its own (1.00x: metrics cost nothing)."
        ),
    ),
)
NOTES = (
    "The items are stored and the queue shut down before the clock starts; the clock "
    "stops when the queue is drained. chute.Workers: "
    f"`Workers(q, handle, min_workers={CONSUMERS}, max_workers={CONSUMERS}).run()`. "
    "Here (Nx) is the hand-written pool's rate / chute.Workers': the time Workers takes "
    "for the same items, relative to the pool by hand (1.0: no overhead; the target is at "
    "most 1.1). The CPU time row: the same runs timed by this process's CPU time "
    "(`time.process_time`) instead of the wall clock, items per CPU second: on a shared "
    "machine, time stolen by other tenants lands on one side or the other of a wall-clock "
    "ratio, not in this one.",
)


def _handler(out: list[int]) -> Callable[[int], Awaitable[None]]:
    """The one no-op handler both pools call: the same frames per item."""

    async def handle(item: int) -> None:
        out.append(item)

    return handle


async def _by_hand(q: Any, out: list[int]) -> None:
    import chute

    handle = _handler(out)

    async def consume() -> None:
        while True:
            try:
                async with q.reserve() as job:
                    await handle(job.item)
            except chute.QueueShutDown:
                return

    await asyncio.gather(*(consume() for _ in range(CONSUMERS)))


async def _workers(q: Any, out: list[int], *, scraped: bool = False) -> None:
    import chute

    workers = chute.Workers(q, _handler(out), min_workers=CONSUMERS, max_workers=CONSUMERS)
    if not scraped:
        await workers.run()
        return
    import threading

    from prometheus_client import CollectorRegistry, generate_latest

    import chute.metrics

    registry = CollectorRegistry()
    collector = chute.metrics.ChuteCollector()
    collector.watch(q, name="w")
    collector.watch(workers, name="w")
    registry.register(collector)
    done = threading.Event()
    scrapes = []

    def scrape() -> None:
        while not done.wait(SCRAPE_EVERY):
            scrapes.append(generate_latest(registry))

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        await workers.run()
    finally:
        done.set()
        scraper.join()


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    import chute

    if way.name == "scraped":
        import chute.metrics  # imported before the clock starts, not in the first run

    with tempfile.TemporaryDirectory(prefix="chute-bench-") as folder:
        if sc.transport == "memory":
            q: Any = chute.Queue()
        else:
            q = await chute.open(f"sqlite:///{os.path.join(folder, 'w.db')}", "w")
        try:
            for lo in range(0, n, 1_000):
                await q.put_batch(range(lo, min(lo + 1_000, n)))
            q.shutdown()
            out: list[int] = []
            clock = time.process_time if sc.clock == "cpu" else time.perf_counter
            t0 = clock()
            if way.name == "by hand":
                await asyncio.wait_for(_by_hand(q, out), timeout)
            else:
                await asyncio.wait_for(_workers(q, out, scraped=way.name == "scraped"), timeout)
            elapsed = clock() - t0
        finally:
            aclose = getattr(q, "aclose", None)
            if aclose is not None:
                await aclose()
    _check([out], n, ordered=False)
    return n / elapsed
