"""A call for a SQLite file's connection, as ``sqlite_db.Database`` runs it,
and the mailbox through which the database thread answers an event loop's
calls and wakes its waiters."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .._durable.waiting import EVERYONE, Rings, wake

__all__ = ["WITHDRAWN", "Answer", "DbCall", "Mailbox", "Withdrawn"]


class DbCall:
    """One call for the database thread. Its answer goes to a concurrent
    future (sync callers) or, in one batch per loop, to an asyncio future."""

    __slots__ = (
        "abandoned",
        "finished",
        "fn",
        "future",
        "loop",
        "outcome",
        "taken",
        "touches",
        "wakes",
        "write",
    )

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        touches: str | None,
        wakes: Rings | None,
        write: bool,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fn = fn
        self.touches = touches  # the queue whose waiters to ring after commit
        self.wakes = EVERYONE if wakes is None else wakes
        self.write = write
        self.loop = loop
        self.future: Any = concurrent.futures.Future() if loop is None else loop.create_future()
        self.taken = False  # the thread has it (under the database's lock)
        self.abandoned = False  # its caller left before the thread took it
        self.outcome: tuple[Any, BaseException | None] | None = None
        self.finished: asyncio.Future[None] | None = None  # for a caller that left

    def settle(self, value: Any, exc: BaseException | None) -> None:
        """On the database thread (sync callers) or the caller's loop."""
        self.outcome = (value, exc)
        if self.loop is None:
            if not self.future.done():  # a waiter may have cancelled it
                if exc is None:
                    self.future.set_result(value)
                else:
                    self.future.set_exception(exc)
            return
        if self.finished is not None and not self.finished.done():
            self.finished.set_result(None)
        if not self.future.done():
            if exc is None:
                self.future.set_result(value)
            else:
                self.future.set_exception(exc)


class Withdrawn(Exception):
    """A call rolled back because its caller had been cancelled."""


WITHDRAWN = Withdrawn()


Answer = tuple[DbCall, Any, BaseException | None]


class Mailbox:
    """What the database thread owes one event loop: answers, and waiters
    to wake. The first post since the loop last emptied it wakes the loop
    (``call_soon_threadsafe``, a write to its self-pipe); what is posted
    before the loop gets to it rides along. A profile of one producer and
    four consumers showed the loop woken 4.3 times per item, one wake-up
    for each group's answers and one for its rings, each costing the loop
    more than the Python it then ran."""

    __slots__ = ("_answers", "_futures", "_lock", "_posted")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._futures: list[asyncio.Future[None]] = []
        self._posted = False

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        answers: list[Answer],
        futures: list[asyncio.Future[None]],
    ) -> None:
        """From the database thread, or another loop's group (the box keeps
        no reference to its loop: boxes are kept by loop, weakly)."""
        with self._lock:
            self._answers += answers
            self._futures += futures
            if self._posted:
                return
            self._posted = True
        try:
            loop.call_soon_threadsafe(self._open)
        except RuntimeError:  # its loop is closed: no one is left to answer
            with self._lock:
                self._posted = False
                self._answers.clear()
                self._futures.clear()

    def _open(self) -> None:
        """On the loop."""
        with self._lock:
            answers, futures = self._answers, self._futures
            self._answers, self._futures = [], []
            self._posted = False
        for call, value, exc in answers:
            call.settle(value, exc)
        for future in futures:
            wake(future)
