"""What ``chute.Workers`` costs over a pool written by hand.

The same queue, the same items (stored and the queue shut down before the
clock starts), the same no-op ``async def`` handler, the same number of
consumers (4): ``Workers(q, handle, min_workers=4, max_workers=4).run()``
against four tasks that each loop ``async with q.reserve() as job: await
handle(job.item)`` until the queue is drained. Both acknowledge every item;
the run checks that each was handled exactly once.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from .memory import _check

CONSUMERS = 4
DEFAULT_ITEMS = 100_000


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

    def supports(self, way: Way) -> bool:
        return True


SCENARIOS = (
    Scenario(f"workers, memory queue, {CONSUMERS} consumers", "memory"),
    Scenario(f"workers, sqlite queue, {CONSUMERS} consumers", "sqlite"),
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
)
NOTES = (
    "The items are stored and the queue shut down before the clock starts; the clock "
    "stops when the queue is drained. chute.Workers: "
    f"`Workers(q, handle, min_workers={CONSUMERS}, max_workers={CONSUMERS}).run()`. "
    "Here (Nx) is the hand-written pool's rate / chute.Workers': the time Workers takes "
    "for the same items, relative to the pool by hand (1.0: no overhead; the target is at "
    "most 1.2).",
)


async def _handle(item: int, out: list[int]) -> None:
    out.append(item)


async def _by_hand(q: Any, out: list[int]) -> None:
    import chute

    async def consume() -> None:
        while True:
            try:
                async with q.reserve() as job:
                    await _handle(job.item, out)
            except chute.QueueShutDown:
                return

    await asyncio.gather(*(consume() for _ in range(CONSUMERS)))


async def _workers(q: Any, out: list[int]) -> None:
    import chute

    async def handle(item: int) -> None:
        await _handle(item, out)

    await chute.Workers(q, handle, min_workers=CONSUMERS, max_workers=CONSUMERS).run()


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    import chute

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
            run = _workers if way.name == SUBJECT.name else _by_hand
            t0 = time.perf_counter()
            await asyncio.wait_for(run(q, out), timeout)
            elapsed = time.perf_counter() - t0
        finally:
            aclose = getattr(q, "aclose", None)
            if aclose is not None:
                await aclose()
    _check([out], n, ordered=False)
    return n / elapsed
