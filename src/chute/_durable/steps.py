"""The async face and the blocking face, written once.

Each operation of the durable queue that may wait (a put, a get, a join)
is a generator of *steps*: it yields :class:`Run` (run this backend call,
send me its answer) or :class:`Sleep` (wait for a ring, at most this long)
and returns the operation's result. Two small drivers run the same
generator: :func:`drive` in a task (``await backend.run``, the waiter's
future) and :func:`drive_blocking` in a plain thread (``backend.run_sync``,
the waiter's event). An exception a step raises — a cancellation included —
is thrown into the generator at the ``yield``, so its ``finally`` blocks
(leaving the line of waiters) run in both faces alike.

Why generators rather than generating the sync code from the async one
(as httpcore does with unasync): the two faces differ only in how a call
is run and how a waiter sleeps, two lines in each driver; everything else
— deadlines, re-arming, the counts of waiters, decode-and-bury — exists
once in the source, with nothing generated to keep in step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, TypeVar

from .backend import Backend, Call
from .waiting import Waiter

R = TypeVar("R")


class Run(NamedTuple):
    """Run ``call``; if the caller is cancelled after it took effect, run
    ``undo(result)`` first (see ``Backend.run``)."""

    call: Call[Any]
    undo: Callable[[Any], Call[Any] | None] | None = None


class Sleep(NamedTuple):
    """Wait in line until rung, or ``delay`` seconds (None: no limit)."""

    waiter: Waiter
    delay: float | None


Steps = Generator[Run | Sleep, Any, R]


async def drive(backend: Backend, steps: Steps[R]) -> R:
    """Run ``steps`` in the calling task."""
    send: Callable[[Any], Run | Sleep] = steps.send
    value: Any = None
    run = backend.run
    while True:
        try:
            step = send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            if type(step) is Run:
                value = await run(step.call, undo=step.undo)
            else:
                await step.waiter.sleep(step.delay)  # type: ignore[union-attr]
                value = None
            send = steps.send
        except BaseException as exc:  # a cancellation too: into the steps' finally
            value, send = exc, steps.throw


def drive_blocking(backend: Backend, steps: Steps[R]) -> R:
    """Run ``steps`` in the calling thread, blocking it."""
    send: Callable[[Any], Run | Sleep] = steps.send
    value: Any = None
    run = backend.run_sync
    while True:
        try:
            step = send(value)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            if type(step) is Run:
                value = run(step.call, undo=step.undo)
            else:
                step.waiter.block(step.delay)  # type: ignore[union-attr]
                value = None
            send = steps.send
        except BaseException as exc:  # Ctrl-C too: into the steps' finally
            value, send = exc, steps.throw


# -- running a call to its end (the network backends' cancellation) ---------------


def drop_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: whoever awaited it has its own copy


async def finish_quietly(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end even if the caller is cancelled meanwhile."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)


async def see_through(aw: Any) -> None:
    """Run ``aw`` to its end whatever happens to the caller; its failure is
    dropped (an undo that cannot reach the server leaves the lease to expire)."""
    task = asyncio.ensure_future(aw)
    task.add_done_callback(drop_outcome)
    await finish_quietly(task)


def answer(task: asyncio.Future[Any]) -> tuple[bool, Any]:
    """Whether a finished ``task`` answered (neither cancelled nor failed), and what."""
    if task.cancelled() or task.exception() is not None:
        return False, None
    return True, task.result()


async def shielded(aw: Awaitable[R], on_cancel: Callable[[asyncio.Future[R]], Any]) -> R:
    """Await ``aw`` in a task of its own, so that a call that was sent is
    seen through. If the caller is cancelled meanwhile: wait for that task
    to end, then run ``on_cancel(task)`` — an awaitable that undoes what the
    call did, or None — to its end, before the cancellation goes on."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await finish_quietly(task)
        back = on_cancel(task)
        if back is not None:
            await see_through(back)
        raise
