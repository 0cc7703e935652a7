"""How a ProcessQueue's callers wait: one attempt under the lock, a short
spin watching the header, then sleep on this loop's (or thread's) bell.

Items move only inside the attempt, under the lock, in the caller: a wait
that is cancelled or times out has changed nothing. A waiter that was rung
but gives up passes the ring on. A getter waiting while items are held by
other processes looks for dead holders every ``RECOVERY_INTERVAL`` seconds
(nobody rings for a death).
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .._waiters import GET, PUT, Expired, WaitKind, check_not_on_loop, expire
from .held import RECOVERY_INTERVAL, Held
from .layout import H_IN_FLIGHT, H_MAXSIZE, H_STATE, H_UNFINISHED, stored

__all__ = ["DeadlinePassed", "Waits"]

T = TypeVar("T")

SYNC_SPIN = 2000  # looks at the header before a blocked thread sleeps (~50 us)
ASYNC_SPIN = 200  # the same for a task: short, it holds up its event loop
YIELD_EVERY = 15  # spins give up the CPU once in 16 looks (a mask)


class DeadlinePassed(Exception):
    """Internal: a blocking call's deadline passed (its caller says what to raise)."""


class Waits(Held[T]):
    """The wait loops, async and blocking, shared by every kind of wait."""

    async def _wait(
        self, kind: WaitKind, attempt: Callable[[], Any], deadline: float | None, need: int = 1
    ) -> Any:
        """Run ``attempt`` under the lock until it answers, sleeping on our bell.

        Items move only inside ``attempt``, under the lock, in this task: a
        wait that is cancelled or times out has changed nothing.
        """
        loop = asyncio.get_running_loop()
        lb = self._loop_bell(loop)
        epoch = -1
        spin = ASYNC_SPIN
        while True:
            self._lock()
            try:
                rung = False
                if epoch >= 0:
                    rung = self._unregister(lb.bell, kind, epoch, need)
                    epoch = -1
                got = attempt()
                if got is None:
                    if deadline is not None and loop.time() >= deadline:
                        if rung:
                            self._pass_on(kind)
                        raise TimeoutError("timed out")
                    if not spin:
                        epoch = self._register(lb.bell, kind, need)
            finally:
                self._unlock()
            if got is None and spin:
                spin = self._spin(kind, spin)
                continue
            if got is not None:
                return got
            fut = loop.create_future()
            lb.add(fut)
            handle = None if deadline is None else loop.call_at(deadline, expire, fut)
            # Items out with other processes: look again now and then, in
            # case their holder died (nobody rings for that).
            poll = (
                loop.call_later(RECOVERY_INTERVAL, wake_future, fut)
                if kind is GET and self._h[H_IN_FLIGHT] > 0
                else None
            )
            try:
                await fut
            except Expired:
                pass  # one more attempt, then TimeoutError
            except BaseException:
                if not self._closed:
                    with self._locked():
                        if self._unregister(lb.bell, kind, epoch, need):
                            self._pass_on(kind)
                raise
            finally:
                lb.discard(fut)
                if handle is not None:
                    handle.cancel()
                if poll is not None:
                    poll.cancel()

    def _worth_again(self, kind: WaitKind, budget: int) -> bool:
        """A single put or get that found no room or no item: watch the
        header (no lock) before the general path, whose every look takes
        both locks and so holds up the other side's single calls (a producer
        spent 7% of its time waiting for a consumer's looks). True if the
        single call is worth another try. A put on an unbounded queue waits
        for bytes, which the header does not show: no watch."""
        if kind is PUT and not self._h[H_MAXSIZE]:
            return False
        return self._spin(kind, budget) > 0

    def _spin(self, kind: WaitKind, budget: int) -> int:
        """Watch the header (no lock) briefly before sleeping: the other side
        is often a few microseconds from making progress, and a sleep and a
        ring cost far more. Returns 0 (go to sleep next) or the budget left."""
        h, yield_cpu = self._h, os.sched_yield
        for i in range(budget):
            if not i & YIELD_EVERY:
                # Let a process that would make progress (perhaps the one
                # we wait for) have this CPU: with more busy processes than
                # CPUs, a spin that only looks steals from the other side.
                yield_cpu()
            if kind is GET:
                if stored(h) or h[H_STATE]:
                    return budget - i - 1  # worth another try (0: then sleep)
            elif kind is PUT:
                maxsize = h[H_MAXSIZE]
                if h[H_STATE] or (maxsize and stored(h) < maxsize):
                    return budget - i - 1
            elif h[H_UNFINISHED] == 0:
                return budget - i - 1
        return 0

    def _wait_blocking(
        self,
        kind: WaitKind,
        attempt: Callable[[], Any],
        deadline: float | None,
        what: str,
        need: int = 1,
    ) -> Any:
        bell = self._thread_bell()
        epoch = -1
        spin = SYNC_SPIN
        while True:
            self._lock()
            try:
                rung = False
                if epoch >= 0:
                    rung = self._unregister(bell, kind, epoch, need)
                    epoch = -1
                got = attempt()
                if got is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        if rung:
                            self._pass_on(kind)
                        raise DeadlinePassed
                    check_not_on_loop(what)
                    if not spin:
                        epoch = self._register(bell, kind, need)
            finally:
                self._unlock()
            if got is None and spin:
                spin = self._spin(kind, spin)
                continue
            if got is not None:
                return got
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if kind is GET and self._h[H_IN_FLIGHT] > 0:  # see _wait
                    remaining = (
                        RECOVERY_INTERVAL
                        if remaining is None
                        else min(RECOVERY_INTERVAL, remaining)
                    )
                select.select([bell.fd], [], [], remaining)
                bell.drain()
            except BaseException:
                with self._locked():
                    if self._unregister(bell, kind, epoch, need):
                        self._pass_on(kind)
                raise


def wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
