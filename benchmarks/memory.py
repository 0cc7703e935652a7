"""The in-process scenarios: tasks on one loop, and a thread on either end.

A scenario is data (who produces, who consumes, how bounded); ``run_once``
runs any of them for any library and checks that every item arrived exactly
once (and, with one producer and one consumer, in order).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any

from .peers import Peer

LOOP, THREAD = "loop", "thread"
#: The adapter faces a side uses to put and to get.
_FACES = {LOOP: ("async_put", "async_get"), THREAD: ("sync_put", "sync_get")}


@dataclass(frozen=True)
class Scenario:
    name: str
    producer_side: str
    consumer_side: str
    maxsize: int = 0
    producers: int = 1
    consumers: int = 1

    def supports(self, peer: Peer) -> bool:
        if peer.threads_only and THREAD not in (self.producer_side, self.consumer_side):
            return False
        put_face, get_face = _FACES[self.producer_side][0], _FACES[self.consumer_side][1]
        return getattr(peer, put_face) is not None and getattr(peer, get_face) is not None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("one loop, 1→1, unbounded", LOOP, LOOP),
    Scenario("one loop, 1→1, maxsize 64", LOOP, LOOP, maxsize=64),
    Scenario("one loop, 4→4, maxsize 64", LOOP, LOOP, maxsize=64, producers=4, consumers=4),
    Scenario("thread→loop, maxsize 64", THREAD, LOOP, maxsize=64),
    Scenario("thread→loop, unbounded", THREAD, LOOP),
    Scenario("loop→thread, maxsize 64", LOOP, THREAD, maxsize=64),
    Scenario("loop→thread, unbounded", LOOP, THREAD),
)


class DeliveryError(AssertionError):
    """Items were lost, duplicated or reordered: the result does not count."""


# -- the four workers ----------------------------------------------------------


async def _produce_async(put: Callable[[int], Any], items: range) -> None:
    for i in items:
        await put(i)


async def _consume_async(get: Callable[[], Any], count: int, out: list[int]) -> None:
    append = out.append
    for _ in range(count):
        append(await get())


def _produce_sync(put: Callable[[int], None], items: range) -> None:
    for i in items:
        put(i)


def _consume_sync(get: Callable[[], int], count: int, out: list[int]) -> None:
    append = out.append
    for _ in range(count):
        append(get())


def _in_thread(fn: Callable[..., None], *args: Any) -> asyncio.Future[None]:
    """Run ``fn(*args)`` in a new daemon thread; the future settles when it ends."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.done():  # cancelled by a timeout
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def main() -> None:
        exc = None
        try:
            fn(*args)
        except BaseException as e:
            exc = e
        try:
            loop.call_soon_threadsafe(settle, exc)
        except RuntimeError:  # the loop is gone: the run already timed out
            pass

    # Daemon: a thread stuck on a broken peer must not keep the process alive.
    threading.Thread(target=main, daemon=True).start()
    return done


_WORKERS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    LOOP: (_produce_async, _consume_async),
    THREAD: (_produce_sync, _consume_sync),
}


def _launch(side: str, worker: Callable[..., Any], *args: Any) -> Any:
    """A coroutine on the loop side, a thread's completion future on the thread side."""
    return worker(*args) if side == LOOP else _in_thread(worker, *args)


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (k < n % parts) for k in range(parts)]


# -- one timed run -------------------------------------------------------------


async def run_once(sc: Scenario, peer: Peer, module: Any, n: int, timeout: float) -> float:
    """Move ``n`` ints through a new queue as ``sc`` says; return items/s."""
    q = peer.make(module, sc.maxsize)
    put = getattr(peer, _FACES[sc.producer_side][0])(q)
    get = getattr(peer, _FACES[sc.consumer_side][1])(q)
    produce, consume = _WORKERS[sc.producer_side][0], _WORKERS[sc.consumer_side][1]

    outs: list[list[int]] = [[] for _ in range(sc.consumers)]
    bounds = list(accumulate(_split(n, sc.producers), initial=0))

    t0 = time.perf_counter()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            await asyncio.gather(
                *(
                    _launch(sc.consumer_side, consume, get, count, out)
                    for count, out in zip(_split(n, sc.consumers), outs, strict=True)
                ),
                *(
                    _launch(sc.producer_side, produce, put, range(lo, hi))
                    for lo, hi in pairwise(bounds)
                ),
            )
    except TimeoutError:
        if not deadline.expired():  # raised by the library itself
            raise
        raise TimeoutError(f"{n:,} items not through after {timeout:g} s") from None
    elapsed = time.perf_counter() - t0

    if peer.close is not None:
        await peer.close(q)
    _check(outs, n, ordered=sc.producers == sc.consumers == 1)
    return n / elapsed


def _check(outs: list[list[int]], n: int, *, ordered: bool) -> None:
    got = [item for out in outs for item in out]
    if (got if ordered else sorted(got)) == list(range(n)):
        return
    counts = Counter(got)
    lost = n - sum(1 for i in range(n) if i in counts)
    dups = sum(c - 1 for c in counts.values() if c > 1)
    alien = sum(1 for item in counts if not (isinstance(item, int) and 0 <= item < n))
    raise DeliveryError(
        f"{len(got)} items for {n} sent: {lost} lost, {dups} duplicated, {alien} foreign"
        + ("; out of order" if ordered and not (lost or dups or alien) else "")
    )
