"""The SQLite scenarios: chute's durable queue next to persist-queue and litequeue.

Every run opens a new queue in a new file of a new temporary folder, moves
small ints through it as the scenario says, and checks that each one came
out exactly once (in order where one task puts and one takes). Setup — the
file, the items a drain starts with, reading back what a put-only run stored
— happens before or after the clock.

A column is a *way*: a library and how the event loop reaches it. chute is
asyncio-native (``await q.put()``, ``async with q.reserve() as job``). The
peers are synchronous, so an asyncio program has two choices, one column
each: ``await asyncio.to_thread(fn, ...)`` per library call (the loop stays
free), or calling them directly on the loop ("direct": it blocks the loop
for each SQLite transaction, their best case and not something a program
serving other work should do).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .memory import _check, _split

BATCH = 100  # items per put_batch / get_batch
CONSUMERS = 4  # consumer tasks in the end-to-end scenarios
POLL = 0.001  # seconds a peer's consumer sleeps when it finds its queue empty
#: Items per run unless --items says otherwise; slow ways move fewer (the budget).
DEFAULT_ITEMS = 30_000
QUEUE_NAME = "bench"

# How the loop reaches a library.
ASYNC, THREAD, DIRECT = "async", "to_thread", "direct"

# Scenario kinds.
PUT, DRAIN, E2E, E2E_BATCH = "put", "drain", "e2e", "e2e batch"

#: ``call(fn, *args)``: one call of a synchronous library, from the loop.
Call = Callable[..., Awaitable[Any]]


async def _via_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def _direct(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    # Yield once, as an awaited call would: without it a producer task would
    # put all its items before any consumer task ran.
    await asyncio.sleep(0)
    return result


#: chute (ASYNC) is awaited as it is: its session ignores the ``call``.
CALLS: dict[str, Call] = {ASYNC: _direct, THREAD: _via_thread, DIRECT: _direct}


def _version(dist: str) -> tuple[int, ...]:
    try:
        text = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


# -- one session per library: an open queue, as the scenarios drive it ------------------


class Session:
    """An open queue, its faces looked up before the clock starts.

    ``take()`` is one get + ack and returns the item, or ``None`` if the queue
    was empty just then (a synchronous peer cannot wait for an item on the
    loop's behalf: its consumer sleeps ``POLL`` and looks again).
    ``put_batch``/``take_batch`` are ``None`` for a library without them.
    """

    put: Callable[[int], Awaitable[None]]
    take: Callable[[], Awaitable[int | None]]
    put_batch: Callable[[list[int]], Awaitable[None]] | None = None
    take_batch: Callable[[int], Awaitable[list[int]]] | None = None
    #: False: its calls must not run in several threads at once.
    concurrent: bool = True

    async def prefill(self, items: range) -> None:
        """Store ``items`` before the clock starts (whichever way is fastest)."""
        raise NotImplementedError

    async def contents(self) -> list[int]:
        """Take out, after the clock stopped, every item stored."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class ChuteSession(Session):
    def __init__(self, q: Any) -> None:
        self.q = q
        self.put = q.put
        self.take = self._take
        self.put_batch = q.put_batch
        self.take_batch = q.get_batch

    async def _take(self) -> int:
        async with self.q.reserve() as job:
            return job.item  # type: ignore[no-any-return]

    async def prefill(self, items: range) -> None:
        for lo in range(items.start, items.stop, 1_000):
            await self.q.put_batch(range(lo, min(lo + 1_000, items.stop)))

    async def contents(self) -> list[int]:
        out: list[int] = []
        while True:
            try:
                out.extend(await self.q.get_batch(1_000, timeout=0))
            except TimeoutError:
                return out

    async def close(self) -> None:
        self.q.close()


async def _open_chute(mod: Any, folder: str, _call: Call) -> Session:
    q = await mod.open(f"sqlite:///{os.path.join(folder, 'chute.db')}", QUEUE_NAME)
    return ChuteSession(q)


class PersistQueueSession(Session):
    """``persistqueue.SQLiteAckQueue``: ``put``; ``get(raw=True)`` + ``ack(id=)``."""

    def __init__(self, mod: Any, q: Any, call: Call) -> None:
        self.q, self.call, self.mod = q, call, mod
        self.put = self._put
        self.take = self._take

    def _get(self) -> dict[str, Any] | None:
        try:
            return self.q.get(block=False, raw=True)  # type: ignore[no-any-return]
        except self.mod.Empty:
            return None

    def _ack(self, raw: dict[str, Any]) -> None:
        self.q.ack(id=raw["pqid"])

    async def _put(self, item: int) -> None:
        await self.call(self.q.put, item)

    async def _take(self) -> int | None:
        raw = await self.call(self._get)
        if raw is None:
            return None
        await self.call(self._ack, raw)
        return raw["data"]  # type: ignore[no-any-return]

    async def prefill(self, items: range) -> None:
        put = self.q.put
        for i in items:
            put(i)

    async def contents(self) -> list[int]:
        status = self.mod.AckStatus
        ready = (int(status.inited), int(status.ready))
        return [row["data"] for row in self.q.queue() if int(row["status"]) in ready]

    async def close(self) -> None:
        self.q.close()


async def _open_persist_queue(mod: Any, folder: str, call: Call) -> Session:
    import persistqueue.serializers.json

    q = mod.SQLiteAckQueue(
        os.path.join(folder, "persist-queue"),  # a folder: it makes data.db in it
        multithreading=True,  # its own locks, and a connection usable from any thread
        serializer=persistqueue.serializers.json,
        auto_resume=False,
    )
    return PersistQueueSession(mod, q, call)


class LiteQueueSession(Session):
    """``litequeue.LiteQueue``: ``put(str)``; ``pop()`` + ``done(message_id)``
    (with ``claim_id=`` where the version asks for it). Items go in as JSON text."""

    def __init__(self, q: Any, call: Call, concurrent: bool) -> None:
        self.q, self.call, self.concurrent = q, call, concurrent
        self.put = self._put
        self.take = self._take

    def _done(self, message: Any) -> None:
        claim_id = getattr(message, "claim_id", None)  # newer versions fence claims
        if claim_id is None:
            self.q.done(message.message_id)
        else:
            self.q.done(message.message_id, claim_id=claim_id)

    async def _put(self, item: int) -> None:
        await self.call(self.q.put, json.dumps(item))

    async def _take(self) -> int | None:
        message = await self.call(self.q.pop)
        if message is None:
            return None
        await self.call(self._done, message)
        return json.loads(message.data)  # type: ignore[no-any-return]

    async def prefill(self, items: range) -> None:
        put = self.q.put
        with self.q.transaction():  # one commit for them all
            for i in items:
                put(json.dumps(i))

    async def contents(self) -> list[int]:
        out = []
        while (message := self.q.pop()) is not None:
            out.append(json.loads(message.data))
        return out

    async def close(self) -> None:
        self.q.close()


#: litequeue 0.14 says one instance may be shared between threads (a lock
#: around its writes); before, it is one connection and no lock at all.
LITEQUEUE_THREADSAFE = _version("litequeue") >= (0, 14)


async def _open_litequeue(mod: Any, folder: str, call: Call) -> Session:
    q = mod.LiteQueue(os.path.join(folder, "litequeue.db"))
    return LiteQueueSession(q, call, concurrent=LITEQUEUE_THREADSAFE or call is not _via_thread)


@dataclass(frozen=True)
class Library:
    name: str
    #: The module to import (its distribution, or its ``__version__``, is reported).
    module: str
    #: ``open(module, folder, call)``: a session on a new queue in ``folder``.
    open: Callable[[Any, str, Call], Awaitable[Session]]
    batched: bool = False


CHUTE = Library("chute", "chute", _open_chute, batched=True)
PERSIST_QUEUE = Library("persist-queue", "persistqueue", _open_persist_queue)
LITEQUEUE = Library("litequeue", "litequeue", _open_litequeue)


# -- the columns ---------------------------------------------------------------------


@dataclass(frozen=True)
class Way:
    """One column: a library, reached from the loop in one way."""

    name: str
    library: Library
    how: str  # ASYNC, THREAD or DIRECT
    note: str = ""
    #: The column whose rate is divided by this one's in the tables.
    versus: str | None = "chute"

    @property
    def module(self) -> str:
        return self.library.module


SUBJECT = Way("chute", CHUTE, ASYNC)

_SEQUENTIAL = (
    " Its end-to-end 1→4 row is sequential in this column (each item `put` → `pop` → "
    "`done`, one to_thread call each): before 0.14 one LiteQueue is a single connection "
    "with no lock, unsafe to call from several threads at once."
)

PEERS: tuple[Way, ...] = (
    Way(
        "persist-queue",
        PERSIST_QUEUE,
        THREAD,
        note=(
            "persist-queue: `SQLiteAckQueue(path, multithreading=True, serializer=json)`; "
            "`put(i)`, then `get(block=False, raw=True)` + `ack(id=...)`, each call "
            "`await asyncio.to_thread(...)`. It has no batch put or get ('-'). It leaves "
            "SQLite's default `synchronous=FULL` (WAL): an fsync per commit, where chute "
            "(`durability='crash'`, its default) and litequeue use `synchronous=NORMAL`."
        ),
    ),
    Way(
        "persist-queue direct",
        PERSIST_QUEUE,
        DIRECT,
        note=(
            "persist-queue direct: the same calls made on the event loop itself, "
            "blocking it for each one (its best case)."
        ),
    ),
    Way(
        "litequeue",
        LITEQUEUE,
        THREAD,
        note=(
            "litequeue: `LiteQueue(path)`; `put(json.dumps(i))`, then `pop()` + "
            "`done(message_id)` (with `claim_id=` where its version asks for one), each call "
            "`await asyncio.to_thread(...)`. No batch API ('-')."
            + ("" if LITEQUEUE_THREADSAFE else _SEQUENTIAL)
        ),
    ),
    Way(
        "litequeue direct",
        LITEQUEUE,
        DIRECT,
        note=(
            "litequeue direct: the same calls made on the event loop itself, "
            "blocking it for each one (its best case)."
        ),
    ),
)

NOTES = (
    "Each run opens a new queue in a new file of a new temporary folder "
    f"({tempfile.gettempdir()}); items are the ints 0..N-1, JSON-encoded by every "
    "library (chute's default codec; persist-queue's json serializer; litequeue "
    "stores the text it is given).",
    "chute: `await chute.open('sqlite:///…/chute.db', name)`; `await q.put(i)`; "
    "get + ack is `async with q.reserve() as job` (acknowledged on exit); "
    f"batched: `await q.put_batch()` of {BATCH} and `await q.get_batch({BATCH})` "
    "(a plain get: no reservation). Every (Nx) is chute's rate / that column's.",
    "put: N single puts. get + ack: N items stored before the clock starts, then "
    "taken and acknowledged one at a time by one task. 1→4: one producer task puts "
    f"while {CONSUMERS} consumer tasks take + ack, each a fixed share of N; batched: "
    f"batches of {BATCH} both ways.",
    "The peers cannot wait for an item on the loop's behalf: their consumers look "
    f"without blocking and sleep {POLL * 1e3:g} ms when the queue is empty. "
    "Direct columns yield to the loop once after each call (`await asyncio.sleep(0)`), "
    "as an awaited call would.",
)


# -- scenarios ---------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # PUT, DRAIN, E2E or E2E_BATCH

    def supports(self, way: Way) -> bool:
        return self.kind != E2E_BATCH or way.library.batched


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("sqlite, put", PUT),
    Scenario("sqlite, get + ack", DRAIN),
    Scenario(f"sqlite, 1→{CONSUMERS}, put → get + ack", E2E),
    Scenario(f"sqlite, 1→{CONSUMERS}, batches of {BATCH}", E2E_BATCH),
)


# -- workers -----------------------------------------------------------------------


async def _produce(s: Session, items: range) -> None:
    put = s.put
    for i in items:
        await put(i)


async def _produce_batches(s: Session, items: range) -> None:
    assert s.put_batch is not None
    put_batch = s.put_batch
    for lo in range(items.start, items.stop, BATCH):
        await put_batch(list(range(lo, min(lo + BATCH, items.stop))))


async def _consume(s: Session, count: int, out: list[int]) -> None:
    take, append = s.take, out.append
    while len(out) < count:
        item = await take()
        if item is None:
            await asyncio.sleep(POLL)
        else:
            append(item)


async def _consume_batches(s: Session, count: int, out: list[int]) -> None:
    assert s.take_batch is not None
    take_batch, extend = s.take_batch, out.extend
    while len(out) < count:
        # Never more than this consumer's share: the others must get theirs.
        extend(await take_batch(min(BATCH, count - len(out))))


async def _sequential(s: Session, n: int, out: list[int]) -> None:
    """Put one, take it: for a library whose calls must not overlap."""
    for i in range(n):
        await s.put(i)
        item = await s.take()
        if item is None:
            raise AssertionError(f"item {i} was put but not found")
        out.append(item)


# -- one timed run -------------------------------------------------------------------


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    """Move ``n`` ints through a new queue in a new file as ``sc`` says; items/s."""
    with tempfile.TemporaryDirectory(prefix="chute-bench-") as folder:
        s = await way.library.open(module, folder, CALLS[way.how])
        try:
            if sc.kind == DRAIN:
                await s.prefill(range(n))
            outs: list[list[int]] = [[]]
            if sc.kind == PUT:
                work: Awaitable[Any] = _produce(s, range(n))
            elif sc.kind == DRAIN:
                work = _consume(s, n, outs[0])
            elif sc.kind == E2E and not s.concurrent:
                work = _sequential(s, n, outs[0])
            else:
                batched = sc.kind == E2E_BATCH
                consume = _consume_batches if batched else _consume
                produce = _produce_batches if batched else _produce
                outs = [[] for _ in range(CONSUMERS)]
                work = asyncio.gather(
                    *(
                        consume(s, count, out)
                        for count, out in zip(_split(n, CONSUMERS), outs, strict=True)
                    ),
                    produce(s, range(n)),
                )

            t0 = time.perf_counter()
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    await work
            except TimeoutError:
                if not deadline.expired():  # raised by the library itself
                    raise
                raise TimeoutError(f"{n:,} items not through after {timeout:g} s") from None
            elapsed = time.perf_counter() - t0

            if sc.kind == PUT:
                outs = [await s.contents()]
        finally:
            await s.close()

    _check(outs, n, ordered=sc.kind in (PUT, DRAIN) or not s.concurrent)
    return n / elapsed
