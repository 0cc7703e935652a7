"""How chute's cost grows: with more consumers, and with more items stored.

Two tables, a row per transport (in-process, SQLite, Redis, PostgreSQL):

- **consumers**: N items stored before the clock starts, then taken by 1,
  4, 16 or 64 consumer tasks on one loop, each ``async with q.reserve()``
  (get and acknowledge) one item at a time until all are taken.
- **stored**: the same four consumers taking N items from a queue that
  holds 10^3, 10^5 or 10^6 items besides them (put in batches before the
  clock; those stay): a queue of a million must not make each get slower.

Every item taken is checked to be taken once. The (Nx) of a column is the
first column's rate / its own: how many times slower than with one
consumer, or than with a thousand items stored.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

from .memory import _check
from .options import store_url

DEFAULT_ITEMS = 2_000
CONSUMERS = 4
#: Items put a batch while filling a queue.
FILL_BATCH = 5_000

_names = itertools.count()
#: (transport, stored): the queue filled once and reused by every run (each
#: run puts its own N items in front of the clock and takes N back).
_filled: dict[tuple[str, int], Any] = {}


@dataclass(frozen=True)
class Way:
    """A column: ``consumers`` tasks, over a queue holding ``stored`` more."""

    name: str
    consumers: int = CONSUMERS
    stored: int = 0
    module: str = "chute"
    note: str = ""
    versus: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    transport: str
    table: str  # "consumers" or "stored"

    def supports(self, way: Way) -> bool:
        return (way.stored == 0) == (self.table == "consumers")


TRANSPORTS = ("memory", "sqlite", "redis", "postgres")
SCENARIOS = tuple(
    Scenario(f"scaling, {t}, {table}", t, table)
    for table in ("consumers", "stored")
    for t in TRANSPORTS
)

SUBJECT = Way("1 consumer", consumers=1, note="N consumers: tasks on one loop, each reserving.")
PEERS = (
    Way("4 consumers", consumers=4, versus="1 consumer"),
    Way("16 consumers", consumers=16, versus="1 consumer"),
    Way("64 consumers", consumers=64, versus="1 consumer"),
    Way("10^3 stored", stored=10**3, versus=None),
    Way("10^5 stored", stored=10**5, versus="10^3 stored"),
    Way(
        "10^6 stored",
        stored=10**6,
        versus="10^3 stored",
        note="10^k stored: four consumers, with 10^k items in the queue besides the N taken.",
    ),
)
NOTES = (
    "A run: N items put (in batches, before the clock), then taken one at a time with "
    "`async with q.reserve()` by the column's consumers; items/s from the first reserve "
    "to the last acknowledgement. (Nx): the row's first column's rate / this one's "
    "(1.00x: no slower). SQLite in a temporary file; Redis and PostgreSQL on servers the "
    "benchmark starts on loopback. The 10^k-stored queues are filled once (in batches of "
    f"{FILL_BATCH:,}) and kept for every run.",
)


async def _open(transport: str) -> Any:
    import chute

    if transport == "memory":
        return chute.Queue()
    name = f"scaling-{os.getpid()}-{next(_names)}"
    return await chute.open(store_url(transport), name)


async def _queue(transport: str, stored: int, n: int) -> Any:
    """A queue holding ``stored + n`` items, kept across runs (stored > 0),
    or a new empty one."""
    if not stored:
        return await _open(transport)
    key = (transport, stored)
    q = _filled.get(key)
    if q is None:
        q = await _open(transport)
        filler = iter(range(stored + n))
        while chunk := list(itertools.islice(filler, FILL_BATCH)):
            await q.put_batch(chunk)
        _filled[key] = q
    return q


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    q = await _queue(sc.transport, way.stored, n)
    try:
        if not way.stored:
            for lo in range(0, n, 1_000):
                await q.put_batch(range(lo, min(lo + 1_000, n)))
        outs: list[list[int]] = [[] for _ in range(way.consumers)]
        left = [n]

        async def consume(out: list[int]) -> None:
            while left[0] > 0:
                left[0] -= 1
                async with q.reserve(timeout=timeout) as job:
                    out.append(job.item)

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(consume(out) for out in outs)), timeout)
        elapsed = time.perf_counter() - t0
        taken = [x for out in outs for x in out]
        if way.stored:
            # N taken from the front of stored + N: each once, and back at
            # the end (not timed), so that the next run finds stored + N.
            if len(taken) != n or len(set(taken)) != n:
                raise AssertionError(f"{n} asked, {len(taken)} taken, {len(set(taken))} distinct")
            await q.put_batch(taken)
        else:
            _check(outs, n, ordered=False)
    finally:
        if not way.stored:
            close = getattr(q, "aclose", None)
            if close is not None:
                await close()
    return n / elapsed
