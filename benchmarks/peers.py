"""One small adapter per library: a factory and the faces a scenario may use.

Each face is a function of the queue that returns a *bound* callable, looked
up once before the clock starts, so the hot loops only pay for the call:

- ``async_put(q)(item)`` / ``async_get(q)()``: awaited on the event loop;
- ``sync_put(q)(item)`` / ``sync_get(q)()``: called from a plain thread.

A face left as ``None`` means the library has no such side; the scenarios
that need it skip the library. Every adapter uses the fastest documented
entry point the library offers for that side (for culsans the mixed queue's
own ``async_put``/``sync_put`` rather than its ``async_q``/``sync_q`` proxies,
which only add a call layer).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

AsyncPut = Callable[[int], Awaitable[None]]
AsyncGet = Callable[[], Awaitable[int]]
SyncPut = Callable[[int], None]
SyncGet = Callable[[], int]


@dataclass(frozen=True)
class Peer:
    name: str
    #: The module to import (``None``: the standard library). The distribution
    #: of that name gives the version shown in the report.
    module: str | None
    #: ``make(module, maxsize)``, called inside the running loop; 0 = unbounded.
    make: Callable[[Any, int], Any]
    async_put: Callable[[Any], AsyncPut] | None = None
    async_get: Callable[[Any], AsyncGet] | None = None
    sync_put: Callable[[Any], SyncPut] | None = None
    sync_get: Callable[[Any], SyncGet] | None = None
    #: Awaited after the clock stops, to release what the queue holds.
    close: Callable[[Any], Awaitable[None]] | None = None
    #: Said under the table: what this column actually measures.
    note: str = ""
    #: Only measured where a plain thread is one end (its loop face is a bridge).
    threads_only: bool = False


# -- queue.Queue: the stdlib way to reach a thread from the loop ----------------


def _executor_get(q: queue.Queue[int]) -> AsyncGet:
    loop, get = asyncio.get_running_loop(), q.get

    async def async_get() -> int:
        return await loop.run_in_executor(None, get)

    return async_get


def _executor_put(q: queue.Queue[int]) -> AsyncPut:
    if q.maxsize <= 0:  # never blocks, so the loop may call it directly
        put_nowait = q.put_nowait

        async def async_put(item: int) -> None:
            put_nowait(item)

        return async_put

    loop, put = asyncio.get_running_loop(), q.put

    async def async_put_blocking(item: int) -> None:
        await loop.run_in_executor(None, put, item)

    return async_put_blocking


async def _janus_close(q: Any) -> None:
    await q.aclose()


def _make_aiologic(mod: ModuleType, maxsize: int) -> Any:
    return mod.Queue(maxsize or None)  # aiologic spells "unbounded" as None


CHUTE = Peer(
    "chute",
    "chute",
    make=lambda mod, maxsize: mod.Queue(maxsize),
    async_put=lambda q: q.put,
    async_get=lambda q: q.get,
    sync_put=lambda q: q.sync.put,
    sync_get=lambda q: q.sync.get,
)

PEERS: tuple[Peer, ...] = (
    Peer(
        "asyncio.Queue",
        None,
        make=lambda _, maxsize: asyncio.Queue(maxsize),
        async_put=lambda q: q.put,
        async_get=lambda q: q.get,
    ),
    Peer(
        "queue.Queue",
        None,
        make=lambda _, maxsize: queue.Queue(maxsize),
        async_put=_executor_put,
        async_get=_executor_get,
        sync_put=lambda q: q.put,
        sync_get=lambda q: q.get,
        threads_only=True,
        note=(
            "queue.Queue: the thread calls it directly; the loop side goes through "
            "`loop.run_in_executor(None, q.get / q.put)`, except loop→thread unbounded, "
            "where the loop calls `q.put_nowait` (it can never block)."
        ),
    ),
    Peer(
        "janus",
        "janus",
        make=lambda mod, maxsize: mod.Queue(maxsize),
        async_put=lambda q: q.async_q.put,
        async_get=lambda q: q.async_q.get,
        sync_put=lambda q: q.sync_q.put,
        sync_get=lambda q: q.sync_q.get,
        close=_janus_close,
        note="janus: `async_q.put/get` on the loop, `sync_q.put/get` in threads.",
    ),
    Peer(
        "culsans",
        "culsans",
        make=lambda mod, maxsize: mod.Queue(maxsize),
        async_put=lambda q: q.async_put,
        async_get=lambda q: q.async_get,
        sync_put=lambda q: q.sync_put,
        sync_get=lambda q: q.sync_get,
        note=(
            "culsans: `Queue.async_put/async_get` and `sync_put/sync_get` "
            "(what its `async_q`/`sync_q` proxies call)."
        ),
    ),
    Peer(
        "aiologic",
        "aiologic",
        make=_make_aiologic,
        async_put=lambda q: q.async_put,
        async_get=lambda q: q.async_get,
        sync_put=lambda q: q.green_put,
        sync_get=lambda q: q.green_get,
        note="aiologic: `Queue.async_put/async_get` and, in threads, `green_put/green_get`.",
    ),
)
