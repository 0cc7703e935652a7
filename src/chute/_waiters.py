"""Wake-up primitives bound to the waiter, never to the queue.

A waiter is created by the task or thread that is about to sleep and is woken
on its own event loop (or its own thread). The queue keeps no loop reference,
so one queue serves any number of loops and plain threads at once.
"""

from __future__ import annotations

import asyncio
import enum
import threading

__all__ = [
    "GET",
    "JOIN",
    "PUT",
    "AsyncWaiter",
    "Expired",
    "SyncWaiter",
    "WaitKind",
    "Waiter",
    "check_not_on_loop",
    "expire",
]

_get_running_loop = asyncio._get_running_loop


class WaitKind(enum.IntEnum):
    """What a waiter waits for: an item (a getter), room (a putter), or every
    item done (a joiner). The same three kinds on every transport.

    An IntEnum, numbered from 0: ProcessQueue's bell table keeps one column
    per kind, at ``first column + kind``.
    """

    GET = 0
    PUT = 1
    JOIN = 2


# Bound once at import: on 3.11 reading a member through its class
# (``WaitKind.GET``) costs about 60 ns, measurable on the wake-up paths.
GET, PUT, JOIN = WaitKind.GET, WaitKind.PUT, WaitKind.JOIN


class Expired(Exception):
    """Set on a waiter's future when the waiter's own ``timeout=`` passes.

    An exception on the future (rather than cancelling the task) keeps the
    native timeout apart from the caller's own cancellation.
    """


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(Expired())


class AsyncWaiter:
    """A task waiting on its own loop.

    ``notified`` and ``need`` are read and written under the queue's lock
    only; ``wake()`` is called after that lock is released.
    """

    __slots__ = ("fut", "kind", "loop", "need", "notified")

    def __init__(self, loop: asyncio.AbstractEventLoop, need: int, kind: WaitKind) -> None:
        self.loop = loop
        self.fut: asyncio.Future[None] = loop.create_future()
        self.need = need  # items (getter) or free slots (putter) it waits for
        self.kind = kind
        self.notified = False

    def wake(self) -> bool:
        """Wake the waiter; False if it can never run again (its loop closed)."""
        loop = self.loop
        if _get_running_loop() is loop:
            # Same loop, same thread: no self-pipe write, no extra callback.
            fut = self.fut
            if not fut.done():
                fut.set_result(None)
            return True
        try:
            loop.call_soon_threadsafe(_resolve, self.fut)
        except RuntimeError:
            return False
        return True


class SyncWaiter:
    """A plain thread blocked on a lock that the waker releases."""

    __slots__ = ("kind", "lock", "need", "notified")

    def __init__(self, need: int, kind: WaitKind) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.need = need
        self.kind = kind
        self.notified = False

    def wake(self) -> bool:
        self.lock.release()
        return True


Waiter = AsyncWaiter | SyncWaiter


def check_not_on_loop(what: str) -> None:
    """Refuse to block a thread that runs an event loop: it would stall the loop."""
    if _get_running_loop() is not None:
        raise RuntimeError(
            f"{what} would block the running event loop; use the async face "
            "(await queue.get()/put()) on a loop thread, or the *_nowait forms"
        )
