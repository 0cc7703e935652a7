"""Every error chute raises, built on the standard library's own.

Existing ``except asyncio.QueueEmpty`` / ``except queue.Empty`` clauses (and
``asyncio.QueueShutDown`` / ``queue.ShutDown`` on Python 3.13+) keep working
when a program switches to chute.
"""

from __future__ import annotations

import asyncio
import queue
import sys
from typing import Any

__all__ = [
    "ChuteError",
    "JobSettledError",
    "LeaseLost",
    "QueueEmpty",
    "QueueFull",
    "QueueNotFound",
    "QueueShutDown",
]

_NO_ITEM: Any = object()


class ChuteError(Exception):
    """Base class of every error raised by chute itself."""


class QueueEmpty(ChuteError, asyncio.QueueEmpty, queue.Empty):
    """A non-blocking get found the queue empty (or a sync get timed out)."""


class QueueFull(ChuteError, asyncio.QueueFull, queue.Full):
    """A non-blocking put found the queue full (or a sync put timed out).

    The item was not enqueued.
    """


if sys.version_info >= (3, 13):

    class _ShutDownBase(asyncio.QueueShutDown, queue.ShutDown):
        pass

else:  # pragma: no cover - exercised on 3.11 and 3.12

    class _ShutDownBase(Exception):
        pass


class QueueShutDown(ChuteError, _ShutDownBase):
    """The queue was shut down.

    Raised by puts after ``shutdown()``, and by gets once the queue is shut
    down and drained (at once after ``shutdown(immediate=True)``). A put that
    was refused carries what it tried to enqueue in :attr:`item` (a single
    put) or :attr:`items` (a batch), so nothing is lost without a trace.
    """

    def __init__(
        self,
        message: str = "queue is shut down",
        *,
        item: Any = _NO_ITEM,
        items: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.item: Any = item if item is not _NO_ITEM else None
        self.items: list[Any] = (
            items if items is not None else ([item] if item is not _NO_ITEM else [])
        )


class JobSettledError(ChuteError, RuntimeError):
    """``ack()`` or ``nack()`` called on a job that was already settled."""


class LeaseLost(ChuteError):
    """A job's lease ran out and its item was delivered again: settling or
    extending the job is refused (its fencing token no longer holds), and
    whoever holds the item now settles it."""


class QueueNotFound(ChuteError, LookupError):
    """Looking at a queue, a file or a server (``chute.open(...,
    create=False)``, the ``chute`` command) that has no such queue: nothing
    was created. The message names what is missing and what is there."""
