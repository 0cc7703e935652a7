"""What a delay, a priority and a key cost on each stored queue (and on the
in-process ``chute.Queue``), next to a plain put, in the same run.

Each run opens a new queue, puts the ints 0..N-1 one ``await q.put()`` at a
time (with ``delay=1e-6`` -- stored as a delayed item, due at once --,
``priority=i % 10``, or ``key=f"k{i}"``), then takes them all with
``get_batch(100)`` until it has N, each checked to come out exactly once.
The clock runs from the first put to the last item taken. A transport
that does not keep an option refuses it at the call: no column there.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from .memory import _check

DEFAULT_ITEMS = 5_000
BATCH = 100

_files = tempfile.TemporaryDirectory(prefix="chute-bench-options-")
_names = itertools.count()


@dataclass(frozen=True)
class Way:
    """One column: ``put()`` with one option (or none)."""

    name: str
    option: str | None
    note: str = ""
    module: str = "chute"
    versus: str | None = "plain"


@dataclass(frozen=True)
class Scenario:
    name: str
    transport: str

    def supports(self, way: Way) -> bool:
        if way.option is None:
            return True
        import chute

        caps = _QUEUE_CLASSES[self.transport](chute).capabilities
        return bool(getattr(caps, _CAPABILITY[way.option]))


_CAPABILITY = {"delay": "delayed_puts", "priority": "prioritised_puts", "key": "keyed_puts"}


def _sqlite_class(chute: Any) -> Any:
    from chute._backends.sqlite import SqliteQueue

    return SqliteQueue


def _redis_class(chute: Any) -> Any:
    from chute._backends.redis import RedisQueue

    return RedisQueue


def _postgres_class(chute: Any) -> Any:
    from chute._backends.postgres import PostgresQueue

    return PostgresQueue


_QUEUE_CLASSES = {
    "memory": lambda chute: chute.Queue,
    "sqlite": _sqlite_class,
    "redis": _redis_class,
    "postgres": _postgres_class,
}
#: An in-process put is some hundred times faster: runs of as many items
#: would be too short to time.
_MEMORY_SCALE = 20

SCENARIOS = (
    Scenario("options, memory: put one at a time, then take all", "memory"),
    Scenario("options, sqlite: put one at a time, then take all", "sqlite"),
    Scenario("options, redis: put one at a time, then take all", "redis"),
    Scenario("options, postgres: put one at a time, then take all", "postgres"),
)

SUBJECT = Way("plain", None, note="plain: `await q.put(i)`.", versus=None)
PEERS = (
    Way("delay", "delay", note="delay: `await q.put(i, delay=1e-6)` (delayed, due at once)."),
    Way("priority", "priority", note="priority: `await q.put(i, priority=i % 10)`."),
    Way("key", "key", note='key: `await q.put(i, key=f"k{i}")` (every key new).'),
)

NOTES = (
    "Each (Nx) is the plain put's rate / that column's: how many times the option slows "
    "the run (1.00x: free). A run: a new queue, N single puts, then get_batch(100) until "
    "all N are taken (each checked once). SQLite in a temporary file (durability 'crash'); "
    "Redis and PostgreSQL on a server the benchmark starts on loopback (PostgreSQL with "
    "its durable defaults). The in-process chute.Queue moves 20x as many items a run.",
)


def store_url(transport: str) -> str:
    """Where a queue of ``transport`` goes: a new SQLite file in a temporary
    folder, or the benchmark's own Redis or PostgreSQL server."""
    if transport == "sqlite":
        return f"sqlite:///{os.path.join(_files.name, f'q{next(_names)}.db')}"
    if transport == "redis":
        from .redis import server_url as redis_url

        return redis_url()
    from .postgres import server_url as postgres_url

    return postgres_url()


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    import asyncio
    import time

    chute = module
    name = f"options-{os.getpid()}-{next(_names)}"
    if sc.transport == "memory":
        n *= _MEMORY_SCALE
        opened: Any = contextlib.nullcontext(chute.Queue())
    else:
        opened = chute.open(store_url(sc.transport), name)
    async with opened as q:
        option = way.option
        t0 = time.perf_counter()
        async with asyncio.timeout(timeout):
            if option is None:
                for i in range(n):
                    await q.put(i)
            elif option == "delay":
                for i in range(n):
                    await q.put(i, delay=1e-6)
            elif option == "priority":
                for i in range(n):
                    await q.put(i, priority=i % 10)
            else:
                for i in range(n):
                    await q.put(i, key=f"k{i}")
            got: list[int] = []
            while len(got) < n:
                got += await q.get_batch(BATCH, timeout=timeout)
        elapsed = time.perf_counter() - t0
    _check([got], n, ordered=False)
    return n / elapsed
